package tiering

import (
	"bytes"
	"context"
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

func TestAReleasedChunkIsPoisonedAndCannotBeAcquiredAgain(t *testing.T) {
	p := &chunkPool{size: 1 << 10, max: 2, poison: true}
	c := p.newChunk(1 << 10)
	for i := range c.data {
		c.data[i] = 7
	}
	c.ref()
	if !c.acquire() {
		t.Fatal("a referenced chunk could not be acquired")
	}
	c.release()
	c.release()
	c.release()
	if c.acquire() {
		t.Fatal("a released chunk was acquired again")
	}
	buf := c.data[:cap(c.data)]
	if !bytes.Equal(buf, bytes.Repeat([]byte{poisonByte}, len(buf))) {
		t.Fatal("the released buffer was not poisoned")
	}
	// The next chunk takes the buffer; a short one is allocated alone.
	if n := p.newChunk(1000); &n.data[:1][0] != &buf[0] {
		t.Fatal("the pool did not hand out the released buffer")
	}
	if n := p.newChunk(100); n.pool != nil || len(n.data) != 100 {
		t.Fatal("a short chunk took a pool buffer")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("releasing a chunk once more than referenced did not panic")
		}
	}()
	c.release()
}

// TestSharedReadsKeepTheirBytesWhileTheCacheReusesChunks replays a log
// many times the reader's cache with several readers at once, each holding
// what it read across its next reads before checking it byte for byte and
// releasing it, while evictions give chunk buffers back to the pool and
// later GETs reuse them. Released buffers are poisoned: a buffer reused
// while a read still held it would show as poison or another chunk's bytes.
func TestSharedReadsKeepTheirBytesWhileTheCacheReusesChunks(t *testing.T) {
	log, batches := testLog(t, 128<<10, 12000)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	want := map[int64][]byte{}
	for _, b := range batches {
		want[recordbatch.Batch(b).BaseOffset()] = b
	}
	const chunkBytes = 16 << 10
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunkBytes, CacheBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.pool.poison = true
	check := func(d Data, from int64) int64 {
		buf := bytes.Join(d.Bufs, nil)
		next := from
		for len(buf) > 0 {
			bt, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch
			}
			w, ok := want[bt.BaseOffset()]
			if !ok || !bytes.Equal(bt, w) {
				t.Errorf("read from %d: the batch at %d differs from the one uploaded", from, bt.BaseOffset())
				return -1
			}
			next, buf = bt.NextOffset(), rest
		}
		return next
	}
	var wg sync.WaitGroup
	for i, maxBytes := range []int{5000, 20000, 70000, 1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type held struct {
				d    Data
				from int64
			}
			var hold []held
			keep := 1 + i
			for off := m.Start(); off < m.End(); {
				d, err := r.ReadShared(context.Background(), testPartition, m, off, maxBytes, math.MaxInt64, true)
				if err != nil || d.Bufs == nil {
					t.Errorf("read at %d: %v", off, err)
					return
				}
				// Where the next read starts, read now: the data is
				// checked again when released.
				next := lastWholeBatchEnd(d.Bufs, off)
				if next <= off {
					t.Errorf("no whole batch at %d", off)
					return
				}
				hold = append(hold, held{d, off})
				if len(hold) > keep {
					h := hold[0]
					hold = hold[1:]
					if check(h.d, h.from) < 0 {
						return
					}
					h.d.Release()
				}
				off = next
			}
			for _, h := range hold {
				check(h.d, h.from)
				h.d.Release()
			}
		}()
	}
	wg.Wait()
	r.Wait()
	made, reused, _ := r.pool.counts()
	t.Logf("pool buffers made %d, reused %d", made, reused)
	if reused == 0 {
		t.Fatal("no chunk buffer was reused: the test did not exercise the pool")
	}
}

// TestASteadyReplayAllocatesNoChunkBuffers: a replay going round a
// partition twice the size of the cache, one read of four chunks at a
// time as a consumer asking for 16 MiB of 4 MiB chunks does, on the
// read-ahead of two processors, takes (nearly) every chunk's buffer from
// the pool once it has gone round once: the chunks in use rise and fall by several
// at a time, and a pool that kept only its few free buffers dropped the
// rest at each fall and allocated them again at the next rise (a fifth of
// the chunks read here; in a broker, most of its allocation during a
// replay, and so its garbage collections). What else a read allocates
// stays far below a chunk's size.
func TestASteadyReplayAllocatesNoChunkBuffers(t *testing.T) {
	log, _ := testLog(t, 64<<10, 5000)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	const chunkBytes = 16 << 10
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunkBytes, CacheBytes: 1 << 20,
		ReadAhead: 2, ReadAheadGets: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if m.Bytes() < 2*r.cfg.CacheBytes {
		t.Fatalf("the partition holds %d bytes, not twice the cache's %d", m.Bytes(), r.cfg.CacheBytes)
	}
	off := m.Start()
	replay := func(reads int) {
		for range reads {
			if off >= m.End() {
				off = m.Start()
			}
			d, err := r.ReadShared(context.Background(), testPartition, m, off, 4*chunkBytes, math.MaxInt64, true)
			if err != nil || d.Bufs == nil {
				t.Fatalf("read at %d: %v", off, err)
			}
			off = lastWholeBatchEnd(d.Bufs, off)
			d.Release()
		}
	}
	// Once round, and a bit.
	replay(int(m.Bytes()/(4*chunkBytes)) + 10)
	r.Wait()
	made0, reused0, _ := r.pool.counts()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	replay(int(2 * m.Bytes() / (4 * chunkBytes)))
	runtime.ReadMemStats(&after)
	made, reused, free := r.pool.counts()
	t.Logf("first round: %d buffers made, %d reused; then %d made, %d reused (%d free now); %d bytes allocated per chunk",
		made0, reused0, made-made0, reused-reused0, free, (after.TotalAlloc-before.TotalAlloc)/uint64(max(reused-reused0, 1)))
	// A read-ahead GET that ends late (a loaded machine) can hold one
	// more chunk at a peak than the first round saw, and one more buffer
	// is made: a few are allowed, not the fifth a pool that dropped its
	// buffers at every fall made.
	if reused == reused0 || made-made0 > (reused-reused0)/20 {
		t.Fatalf("after a first round, the replay made %d chunk buffers and reused %d", made-made0, reused-reused0)
	}
	if per := (after.TotalAlloc - before.TotalAlloc) / uint64(reused-reused0); per > chunkBytes/2 {
		t.Fatalf("a steady replay allocated %d bytes per chunk of %d", per, chunkBytes)
	}
}
