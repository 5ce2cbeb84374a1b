package localseg

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/shale-log/shale/localseg/vfs"
	"github.com/shale-log/shale/localseg/vfs/errorfs"
)

// countingFS counts the writes to segment files, vectored or not, and the
// batches they carried.
type countingFS struct {
	vfs.FS
	mu              sync.Mutex
	writes, vectors int
}

func (c *countingFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return openSegment(c.FS, name, flag, perm, func(f vfs.File) vfs.File { return &countingFile{File: f, c: c} })
}

type countingFile struct {
	vfs.File
	c *countingFS
}

func (f *countingFile) WriteAt(p []byte, off int64) (int, error) {
	f.c.mu.Lock()
	f.c.writes++
	f.c.mu.Unlock()
	return f.File.WriteAt(p, off)
}

func (f *countingFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	f.c.mu.Lock()
	f.c.writes++
	f.c.vectors++
	f.c.mu.Unlock()
	return vfs.WriteVAt(f.File, bufs, off)
}

// Batches appended together get what one-by-one appends get: the same
// offsets, duplicates, sequence errors, rolls and bytes, whatever way they
// are grouped.
func TestAppendBatchesMatchesOneByOne(t *testing.T) {
	cfg := Config{SegmentBytes: 4 << 10}
	one := newHarness(t, cfg)
	many := newHarness(t, cfg)
	rng := rand.New(rand.NewPCG(1, 2))
	// The same batches for both logs: plain ones of random sizes and an
	// idempotent producer's, with retries (duplicates), gaps and a stale
	// epoch among them.
	var script []func() Batch
	seq := int32(0)
	for i := 0; i < 300; i++ {
		switch k := rng.IntN(10); {
		case k < 5:
			n, size := 1+rng.IntN(5), 10+rng.IntN(300)
			script = append(script, func() Batch { return batch(n, size, 1000) })
		case k < 8:
			s, n := seq, 1+rng.IntN(4)
			seq += int32(n)
			script = append(script, func() Batch { return idemBatch(5, 1, s, n) })
		case k == 8 && seq > 3:
			s := seq - 2 // not one of the batches sent: an out-of-order one
			script = append(script, func() Batch { return idemBatch(5, 1, s, 1) })
		default:
			s := seq + 3 // a gap
			script = append(script, func() Batch { return idemBatch(5, 1, s, 1) })
		}
	}
	// Retries of whole earlier batches.
	for i := 0; i < 20; i++ {
		j := rng.IntN(len(script))
		script = append(script[:j+1], script[j:]...)
	}
	for i := 0; i < len(script); {
		n := min(len(script)-i, 1+rng.IntN(9))
		bs := make([]Batch, n)
		res, errs := make([]AppendResult, n), make([]error, n)
		for k := range bs {
			bs[k] = script[i+k]()
		}
		many.log.AppendBatchesAsLeader(bs, 3, res, errs)
		for k := range bs {
			want, werr := one.log.AppendAsLeader(script[i+k](), 3)
			if (werr == nil) != (errs[k] == nil) || (werr != nil && !errors.Is(errs[k], errors.Unwrap(werr)) && werr.Error() != errs[k].Error()) {
				t.Fatalf("batch %d: error %v, one by one %v", i+k, errs[k], werr)
			}
			if res[k] != want {
				t.Fatalf("batch %d: %+v, one by one %+v", i+k, res[k], want)
			}
		}
		i += n
	}
	if one.log.LogEndOffset() != many.log.LogEndOffset() || len(one.log.segments()) != len(many.log.segments()) {
		t.Fatalf("log end %d with %d segments, one by one %d with %d", many.log.LogEndOffset(), len(many.log.segments()),
			one.log.LogEndOffset(), len(one.log.segments()))
	}
	if len(many.log.segments()) < 5 {
		t.Fatalf("only %d segments: the runs met no roll", len(many.log.segments()))
	}
	a, b := one.readAll(0), many.readAll(0)
	if len(a) != len(b) {
		t.Fatalf("%d batches, one by one %d", len(b), len(a))
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("batch %d differs", i)
		}
	}
	// And they survive a crash the same way (recovery re-validates them).
	many.crash()
	if got := many.readAll(0); len(got) != len(a) {
		t.Fatalf("%d batches after a crash, want %d", len(got), len(a))
	}
}

// Batches reserved together are written with one vectored write.
func TestAppendBatchesWritesARunWithOneWrite(t *testing.T) {
	cfs := &countingFS{FS: vfs.OSFS{}}
	h := newHarness(t, Config{})
	h.opts.FS = cfs
	h.restart()
	bs := []Batch{batch(2, 100, 1), batch(3, 100, 1), batch(1, 100, 1), batch(4, 100, 1)}
	res, errs := make([]AppendResult, len(bs)), make([]error, len(bs))
	h.log.AppendBatchesAsLeader(bs[:1], 0, res, errs) // the first batch of a log rolls nothing, but is alone
	h.log.AppendBatchesAsLeader(bs[1:], 0, res, errs)
	for i, err := range errs[:3] {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if res[0].FirstOffset != 2 || res[1].FirstOffset != 5 || res[2].FirstOffset != 6 {
		t.Fatalf("offsets %+v", res[:3])
	}
	if cfs.writes != 2 || cfs.vectors != 1 {
		t.Fatalf("%d writes (%d vectored), want 2 (1)", cfs.writes, cfs.vectors)
	}
	if got := h.readAll(0); len(got) != 4 {
		t.Fatalf("%d batches", len(got))
	}
}

// A run whose write fails acknowledges none of its batches, even those
// whose bytes reached the file before the failure, and takes the log
// offline; the file is cut where the run began.
func TestFailedRunWriteAcknowledgesNothing(t *testing.T) {
	for _, short := range []bool{false, true} {
		h, ffs := newFaultyHarness(t, Config{})
		h.append(batch(1, 100, 0))
		size := h.log.Size()
		// The second batch of the run fails (the fault FS writes a run one
		// buffer at a time).
		ffs.Inject(errorfs.Fault{Op: errorfs.OpWrite, PathContains: ".log", Skip: 1, Err: syscall.EIO, Short: short})
		bs := []Batch{batch(1, 100, 0), batch(2, 100, 0), batch(1, 100, 0)}
		res, errs := make([]AppendResult, 3), make([]error, 3)
		h.log.AppendBatchesAsLeader(bs, 0, res, errs)
		for i := range bs {
			if !errors.Is(errs[i], syscall.EIO) || !errors.Is(errs[i], ErrOffline) || res[i] != (AppendResult{}) {
				t.Fatalf("short %v: batch %d: %+v %v", short, i, res[i], errs[i])
			}
		}
		if h.log.LogEndOffset() != 1 || !errors.Is(h.log.Offline(), ErrOffline) {
			t.Fatalf("log end %d, offline %v", h.log.LogEndOffset(), h.log.Offline())
		}
		if st, err := os.Stat(filepath.Join(h.dir, segmentName(0, ".log"))); err != nil || st.Size() != size {
			t.Fatalf("segment file %v after the cut, want %d bytes", st, size)
		}
		// A later run is refused whole.
		h.log.AppendBatchesAsLeader(bs[:2], 0, res, errs)
		if !errors.Is(errs[0], ErrOffline) || !errors.Is(errs[1], ErrOffline) {
			t.Fatalf("append to an offline log: %v %v", errs[0], errs[1])
		}
		ffs.Clear()
		h.open()
		if got := h.readAll(0); len(got) != 1 {
			t.Fatalf("%d batches after reopening", len(got))
		}
	}
}
