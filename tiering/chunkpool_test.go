package tiering

import (
	"bytes"
	"context"
	"math"
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
