package recordbatch

import (
	"context"
	"fmt"
	"sync"
)

// DefaultBudgetBytes is the size of the scan budget a broker shares between
// everything that looks inside batches (produce validation, ListOffsets by
// timestamp, the group coordinator's load).
const DefaultBudgetBytes = 128 << 20

// Budget bounds the memory that looks inside batches at once. A scan takes
// the bytes it may allocate (decoder windows, a raw snappy block, a batch
// read from disk) before allocating them and gives them back when done, so
// any number of concurrent decompression bombs costs at most the budget.
// Takers wait in turn; a request larger than the whole budget fails at once.
// A nil *Budget is unlimited (tests and tools).
type Budget struct {
	total int64

	mu struct {
		sync.Mutex
		used    int64
		waiters []*budgetWaiter // FIFO: a large taker is not starved by small ones
	}
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are granted
}

// NewBudget returns a budget of total bytes.
func NewBudget(total int64) *Budget {
	return &Budget{total: total}
}

// Total is the budget's size (0 for a nil, unlimited budget).
func (b *Budget) Total() int64 {
	if b == nil {
		return 0
	}
	return b.total
}

// InUse is the number of bytes taken now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.used
}

// Acquire takes n bytes, waiting until they are free or ctx ends. It
// returns ErrDecompressTooLarge when n exceeds the whole budget. Every
// successful Acquire must be matched by a Release of the same n.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if n > b.total {
		return fmt.Errorf("%w: a scan needs %d bytes, the budget is %d", ErrDecompressTooLarge, n, b.total)
	}
	b.mu.Lock()
	if len(b.mu.waiters) == 0 && b.mu.used+n <= b.total {
		b.mu.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.mu.waiters = append(b.mu.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted while we gave up: hand the bytes back.
			b.mu.Unlock()
			b.Release(n)
			return ctx.Err()
		default:
		}
		for i, x := range b.mu.waiters {
			if x == w {
				b.mu.waiters = append(b.mu.waiters[:i], b.mu.waiters[i+1:]...)
				break
			}
		}
		// Our leaving may let the waiters behind us in.
		b.grantLocked()
		b.mu.Unlock()
		return ctx.Err()
	}
}

// TryAcquire takes n bytes if they are free now, without waiting. A
// holder of budget bytes that needs more takes them with TryAcquire and,
// when that fails, releases what it holds and waits for the whole amount
// with Acquire: waiting while holding could deadlock.
func (b *Budget) TryAcquire(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.mu.waiters) == 0 && b.mu.used+n <= b.total {
		b.mu.used += n
		return true
	}
	return false
}

// Release gives back n bytes taken by Acquire or TryAcquire.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.mu.used -= n
	if b.mu.used < 0 {
		b.mu.Unlock()
		panic("recordbatch: budget released more than was acquired")
	}
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked admits waiters in order while they fit. Requires mu.
func (b *Budget) grantLocked() {
	for len(b.mu.waiters) > 0 {
		w := b.mu.waiters[0]
		if b.mu.used+w.n > b.total {
			return
		}
		b.mu.used += w.n
		b.mu.waiters = b.mu.waiters[1:]
		close(w.ready)
	}
}
