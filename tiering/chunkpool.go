package tiering

import (
	"sync"
	"sync/atomic"
)

// chunk is one chunk of an object in memory. The chunk cache, the recent
// and read-ahead maps and every Data a read returned hold references to
// it, counted in refs; the last release gives its buffer back to the
// pool, so a replay reuses the same memory instead of faulting in fresh
// pages for each chunk (the runtime returns a freed chunk's pages to the
// system near the memory limit, and a new one is zeroed before the GET
// overwrites it).
//
// A chunk never comes back to life: once its count reaches zero, acquire
// fails, so a pointer taken from the cache as an eviction releases the
// cache's reference cannot get a buffer the pool has handed out again.
// The chunk itself is never reused; only its buffer is.
type chunk struct {
	data []byte
	refs atomic.Int32
	pool *chunkPool // nil: not pooled (a short chunk)
}

// acquire takes a reference unless the chunk is released already.
func (c *chunk) acquire() bool {
	for {
		n := c.refs.Load()
		if n <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ref takes another reference; the caller holds one.
func (c *chunk) ref() *chunk {
	if c.refs.Add(1) <= 1 {
		panic("tiering: a released chunk referenced again")
	}
	return c
}

// release drops a reference; the last one gives the buffer back.
func (c *chunk) release() {
	switch n := c.refs.Add(-1); {
	case n == 0:
		if c.pool != nil {
			c.pool.put(c.data)
		}
	case n < 0:
		panic("tiering: a chunk released more often than referenced")
	}
}

// cacheRef is the chunk cache's reference to a chunk: each Set makes a
// new one, and the cache's exit hook (eviction, rejection, replacement)
// drops it, once however often the hook runs for it.
type cacheRef struct {
	c       *chunk
	dropped atomic.Bool
}

func (cr *cacheRef) drop() {
	if cr != nil && cr.dropped.CompareAndSwap(false, true) {
		cr.c.release()
	}
}

// chunkPool keeps the buffers of released chunks, all of one size, for
// the next GETs. It keeps a released buffer while the buffers alive (in
// use or free) number at most limit, and always while fewer than max are
// free; a buffer released past both goes to the garbage collector.
//
// limit is every buffer the reader's memory bound holds (its cache, its
// read-ahead, its recent reads and max free ones): the chunks in use rise
// and fall by several at a time as a replay goes on (a read taking the
// read-ahead window, the cache evicting, reads released together), and a
// pool that kept only max free ones dropped the buffers of each fall and
// allocated them again at the next rise. On two processors, a replay's
// fresh 4 MiB buffers were most of the broker's allocation and set off a
// garbage collection every second or two, whose pauses and mark work a
// produce beside the replay waited for. Kept, a steady replay allocates
// nothing per chunk; the memory is what the reader's bound allows, and
// only what its chunks in use once reached.
type chunkPool struct {
	size  int64
	max   int
	limit int
	// poison fills a buffer given back with poisonByte, so that a use
	// after release shows in the bytes a test reads (invariants builds
	// and tests).
	poison bool

	mu   sync.Mutex
	free [][]byte
	// made and reused count the buffers allocated and taken from free;
	// alive counts the buffers made and not dropped.
	made, reused int64
	alive        int
}

const poisonByte = 0xdb

// pooled reports whether a chunk of n bytes takes a pool buffer: one at
// least half the pool's size does (a segment's last chunk, usually a
// little short); a smaller one is allocated alone, as a pool buffer would
// waste most of its size.
func (p *chunkPool) pooled(n int64) bool { return p != nil && n <= p.size && 2*n >= p.size }

// newChunk returns a chunk of n bytes with one reference, its contents
// undefined.
func (p *chunkPool) newChunk(n int64) *chunk {
	c := &chunk{}
	c.refs.Store(1)
	if !p.pooled(n) {
		c.data = make([]byte, n)
		prefault(c.data)
		return c
	}
	c.pool = p
	p.mu.Lock()
	if k := len(p.free); k > 0 {
		c.data = p.free[k-1][:n]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
		p.reused++
		p.mu.Unlock()
		return c
	}
	p.made++
	p.alive++
	p.mu.Unlock()
	c.data = make([]byte, n, p.size)
	prefault(c.data[:p.size])
	return c
}

func (p *chunkPool) put(b []byte) {
	b = b[:p.size]
	if p.poison {
		for i := range b {
			b[i] = poisonByte
		}
	}
	p.mu.Lock()
	if len(p.free) < p.max || p.alive <= p.limit {
		p.free = append(p.free, b)
	} else {
		p.alive--
	}
	p.mu.Unlock()
}

// counts returns the buffers allocated, reused and free now.
func (p *chunkPool) counts() (made, reused int64, free int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.made, p.reused, len(p.free)
}
