package broker

import (
	"context"
	"sync"
)

// byteBudget bounds the bytes of requests being read at once across all
// connections (queued.max.request.bytes): a frame waits for budget before
// its buffer is allocated, so many clients sending large frames cannot
// exhaust memory. A single frame larger than the whole budget is admitted
// alone.
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

// acquire waits until n bytes fit (or nothing else is held), or ctx ends.
// The returned func gives the bytes back.
func (b *byteBudget) acquire(ctx context.Context, n int64) (func(), error) {
	if b.limit <= 0 {
		return func() {}, nil
	}
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.limit {
		if err := ctx.Err(); err != nil {
			b.mu.Unlock()
			return nil, err
		}
		b.cond.Wait()
	}
	b.used += n
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.cond.Broadcast()
			b.mu.Unlock()
		})
	}, nil
}
