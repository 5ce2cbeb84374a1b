package tiering

import (
	"bytes"
	"context"
	"errors"
	"math"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

func newTestReader(t testing.TB, b objectstore.Bucket, chunk int64) *Reader {
	t.Helper()
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunk, CacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// readRemoteAll reads every batch from offset from through r.
func readRemoteAll(t testing.TB, r *Reader, m *Manifest, from int64, maxBytes int) [][]byte {
	t.Helper()
	var out [][]byte
	for off := from; off < m.End(); {
		parts, err := r.Read(context.Background(), testPartition, m, off, maxBytes, math.MaxInt64, true)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if parts == nil {
			t.Fatalf("nothing at %d below the end %d", off, m.End())
		}
		buf := bytes.Join(parts, nil)
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("batch at %d: %v", b.BaseOffset(), err)
			}
			if b.LastOffset() >= off {
				out = append(out, append([]byte(nil), b...))
				off = b.NextOffset()
			}
			buf = rest
		}
	}
	return out
}

func TestReaderReturnsTheUploadedBatchesByteForByte(t *testing.T) {
	log, batches := testLog(t, 3000, 60)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, fb, 1024) // chunks smaller than a segment and unaligned to batches
	for _, maxBytes := range []int{1, 700, 5000} {
		got := readRemoteAll(t, r, m, 0, maxBytes)
		var want [][]byte
		for _, b := range batches {
			if recordbatch.Batch(b).NextOffset() <= m.End() {
				want = append(want, b)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("maxBytes %d: %d batches, want %d", maxBytes, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("maxBytes %d: batch %d differs", maxBytes, i)
			}
		}
	}
	// Everything is cached now: reading again costs no GET.
	r.Wait()
	before := fb.getCount()
	readRemoteAll(t, r, m, 0, 5000)
	if n := fb.getCount() - before; n != 0 {
		t.Fatalf("a warm replay made %d GETs", n)
	}
}

func TestReaderStopsAtMaxOffsetAndMidSegmentOffsets(t *testing.T) {
	log, batches := testLog(t, 3000, 30)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, b, 4<<20)
	// An offset inside a batch starts at that batch.
	target := recordbatch.Batch(batches[4])
	parts, err := r.Read(context.Background(), testPartition, m, target.LastOffset(), 1<<20, math.MaxInt64, true)
	if err != nil || !bytes.HasPrefix(bytes.Join(parts, nil), batches[4]) {
		t.Fatalf("read inside a batch: %v", err)
	}
	// maxOffset excludes the batch reaching it.
	parts, err = r.Read(context.Background(), testPartition, m, target.BaseOffset(), 1<<20, target.NextOffset(), true)
	if err != nil || !bytes.Equal(bytes.Join(parts, nil), batches[4]) {
		t.Fatalf("bounded read returned %d bytes (%v)", len(bytes.Join(parts, nil)), err)
	}
	// Past the end: nothing (the local log has it).
	if parts, err := r.Read(context.Background(), testPartition, m, m.End(), 1<<20, math.MaxInt64, true); parts != nil || err != nil {
		t.Fatalf("past the end: %v %v", parts, err)
	}
	mm := m.Clone()
	mm.LogStartOffset = m.Segments[1].BaseOffset
	if _, err := r.Read(context.Background(), testPartition, mm, 0, 1<<20, math.MaxInt64, true); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("below the log start: %v", err)
	}
}

func TestReaderReportsAnUnavailableStore(t *testing.T) {
	log, _ := testLog(t, 3000, 30)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	r := newTestReader(t, fb, 4<<20)
	fb.add(&fault{op: "get", n: 1})
	if _, err := r.Read(context.Background(), testPartition, ms.Current(), 0, 1<<20, math.MaxInt64, true); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store down: %v", err)
	}
	// And recovers when it is back.
	if parts, err := r.Read(context.Background(), testPartition, ms.Current(), 0, 1<<20, math.MaxInt64, true); err != nil || parts == nil {
		t.Fatalf("store back: %v", err)
	}
}

func TestReaderReadsAheadForSequentialReplays(t *testing.T) {
	log, _ := testLog(t, 64<<10, 400)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, fb, 4096)
	ctx := context.Background()
	// Two reads in a row inside the first chunk make the stream
	// sequential; the following chunks are then fetched ahead.
	for off := int64(0); off < 6; {
		parts, err := r.Read(ctx, testPartition, m, off, 600, math.MaxInt64, true)
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := recordbatch.Next(bytes.Join(parts, nil))
		off = b.NextOffset()
	}
	r.wg.Wait()
	r.Wait()
	seg := m.Segments[0]
	key := r.cfg.Layout.SegmentKey(testPartition, seg.BaseOffset, seg.ID)
	r.mu.Lock()
	_, ahead := r.mu.recent[chunkKey(key, 2)]
	r.mu.Unlock()
	if !ahead {
		t.Fatal("chunk 2 was not read ahead")
	}
}
