package broker

import (
	"context"
	"math/bits"
	"sync"
	"time"
	"unsafe"
)

// byteBudget bounds the bytes of requests held at once across all
// connections (queued.max.request.bytes). A frame reserves its bytes as
// they arrive, not the size it declares, so a client that declares a large
// frame and sends nothing holds nothing; the bytes are given back once the
// request is answered. A single frame larger than the whole budget is
// admitted alone.
type byteBudget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	limit int64
	used  int64
}

func newByteBudget(limit int64) *byteBudget {
	b := &byteBudget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// tryAcquire takes n bytes if they fit now (or nothing else is held).
func (b *byteBudget) tryAcquire(n int64) bool {
	if b.limit <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// acquire waits until n bytes fit (or nothing else is held), ctx ends or
// the deadline passes (a zero deadline: none). Give the bytes back with
// release.
func (b *byteBudget) acquire(ctx context.Context, n int64, deadline time.Time) error {
	if b.tryAcquire(n) {
		return nil
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.used > 0 && b.used+n > b.limit {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.cond.Wait()
	}
	b.used += n
	return nil
}

// charge takes n bytes without waiting, even past the limit: memory
// already allocated that must be accounted for (encoded responses). Callers
// stop producing more while full reports true.
func (b *byteBudget) charge(n int64) {
	if b.limit <= 0 || n == 0 {
		return
	}
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

// full reports whether the budget is spent.
func (b *byteBudget) full() bool {
	if b.limit <= 0 {
		return false
	}
	return b.inUse() >= b.limit
}

// release gives back n bytes taken with acquire or tryAcquire.
func (b *byteBudget) release(n int64) {
	if b.limit <= 0 || n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.cond.Broadcast()
	b.mu.Unlock()
}

// inUse is the number of bytes held.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Buffer pools by size class: class c holds buffers of capacity 1<<c bytes,
// from 4 KiB to 128 MiB. A buffer goes back to the class its capacity
// fills, so a pool never hands out a buffer smaller than its class.
const (
	minBufClass = 12
	maxBufClass = 27
)

var bufPools [maxBufClass + 1]sync.Pool

// bufClass is the smallest class holding n bytes, or -1 beyond the largest.
func bufClass(n int) int {
	if n <= 1<<minBufClass {
		return minBufClass
	}
	c := bits.Len(uint(n - 1))
	if c > maxBufClass {
		return -1
	}
	return c
}

// bufCap is the capacity of the buffer getBuf(n) returns.
func bufCap(n int) int {
	if c := bufClass(n); c >= 0 {
		return 1 << c
	}
	return n
}

// getBuf returns a buffer of length n, from its class's pool when it has
// one.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c < 0 {
		return make([]byte, n)
	}
	if v := bufPools[c].Get(); v != nil {
		return unsafe.Slice(v.(*byte), 1<<c)[:n]
	}
	return make([]byte, n, 1<<c)
}

// putBuf gives a buffer back for reuse. The caller must not use it, or
// anything sliced from it, afterwards.
func putBuf(b []byte) {
	c := bits.Len(uint(cap(b))) - 1 // the class its capacity fills
	if c < minBufClass || c > maxBufClass {
		return
	}
	if poisonBuffers {
		b = b[:cap(b)]
		for i := range b {
			b[i] = 0xdb
		}
	}
	// The pool holds the first byte's pointer, which an interface holds
	// without allocating (a *[]byte would be an allocation per Put), and
	// which keeps the whole buffer alive.
	bufPools[c].Put(unsafe.SliceData(b))
}

// poisonBuffers overwrites buffers as they return to the pools, so that a
// use after return shows as corrupt data. The tests set it.
var poisonBuffers = false
