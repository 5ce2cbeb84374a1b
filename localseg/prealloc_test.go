package localseg

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// smallZeros makes preallocation zero 64 KiB ahead, 16 KiB at a time, for
// the test.
func smallZeros(t *testing.T) {
	t.Helper()
	ahead, piece := zeroAhead, zeroPiece
	zeroAhead, zeroPiece = 64<<10, 16<<10
	t.Cleanup(func() { zeroAhead, zeroPiece = ahead, piece })
}

// appendSynced appends b and waits until it is durable: preallocation
// zeros only for logs that the group commit syncs.
func (h *harness) appendSynced(b Batch) {
	h.t.Helper()
	res := h.append(b)
	if err := waitDurable(h.log, res.LastOffset+1); err != nil {
		h.t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// checkReadsEndAtTheBatches reads every offset of the log and checks that
// no read reaches past the batches into the zeros after them.
func checkReadsEndAtTheBatches(t *testing.T, l *Log) {
	t.Helper()
	segs := l.Segments()
	for off := l.LogStartOffset(); off < l.LogEndOffset(); off++ {
		r, err := l.Read(off, 1<<30, math.MaxInt64, true)
		if err != nil {
			t.Fatal(err)
		}
		buf, err := r.Bytes()
		end := r.Offset() + r.Len()
		r.Release()
		if err != nil {
			t.Fatal(err)
		}
		var size int64 = -1
		for _, s := range segs {
			if off >= s.BaseOffset && off < s.NextOffset {
				size = s.Size
			}
		}
		if end > size {
			t.Fatalf("a read at %d ends at %d, past the segment's %d bytes of batches", off, end, size)
		}
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				t.Fatalf("a read at %d returned bytes that are not whole batches: %v", off, err)
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("a read at %d: %v", off, err)
			}
			buf = rest
		}
	}
}

func TestPreallocatedSegmentIsCutToItsBatchesOnRollAndClose(t *testing.T) {
	smallZeros(t)
	one := int64(len(batch(1, 100, 0)))
	h := newHarness(t, Config{Preallocate: true, SegmentBytes: one * 50})
	for i := 0; i < 20; i++ {
		h.appendSynced(batch(1, 100, int64(i)))
	}
	h.log.zeroers.Wait()
	act := h.log.active()
	if got, want := fileSize(t, act.path(".log")), min(act.size.Load()+zeroAhead, one*50); got != want {
		t.Fatalf("the active segment's file has %d bytes, want %d (its batches and zeros ahead, up to segment.bytes)", got, want)
	}
	if h.log.Size() != 20*one {
		t.Fatalf("the log's size is %d, want its batches' %d", h.log.Size(), 20*one)
	}
	checkReadsEndAtTheBatches(t, h.log)

	if err := h.log.Roll(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		h.appendSynced(batch(1, 100, int64(100+i)))
	}
	h.log.zeroers.Wait()
	segs := h.log.Segments()
	if n := fileSize(t, segs[0].Path); n != segs[0].Size || n != 20*one {
		t.Fatalf("the rolled segment's file has %d bytes, its batches %d (want %d)", n, segs[0].Size, 20*one)
	}
	// A roll on segment.bytes cuts the zeros too.
	for i := 0; i < 50; i++ {
		h.appendSynced(batch(1, 100, int64(200+i)))
	}
	segs = h.log.Segments()
	if len(segs) != 3 {
		t.Fatalf("%d segments, want 3", len(segs))
	}
	for _, s := range segs[:2] {
		if n := fileSize(t, s.Path); n != s.Size {
			t.Fatalf("the sealed segment %d has %d bytes in its file, %d of batches", s.BaseOffset, n, s.Size)
		}
	}
	checkReadsEndAtTheBatches(t, h.log)

	end := h.log.LogEndOffset()
	h.restart()
	act = h.log.active()
	if n := fileSize(t, act.path(".log")); n != act.size.Load() {
		t.Fatalf("after Close the active segment's file has %d bytes, %d of batches", n, act.size.Load())
	}
	if h.log.LogEndOffset() != end {
		t.Fatalf("log end %d after a clean restart, want %d", h.log.LogEndOffset(), end)
	}
	if got := len(h.readAll(0)); got != int(end) {
		t.Fatalf("read %d batches back, want %d", got, end)
	}
}

// Appends that nobody waits to be durable for (acks=0 and acks=1, with no
// flush.messages or flush.ms) get no zeros: preallocation would double
// their writes and save no fsync.
func TestPreallocationZerosOnlyForLogsTheGroupCommitSyncs(t *testing.T) {
	smallZeros(t)
	h := newHarness(t, Config{Preallocate: true})
	for i := 0; i < 20; i++ {
		h.append(batch(1, 100, int64(i)))
	}
	h.log.zeroers.Wait()
	act := h.log.active()
	if n := fileSize(t, act.path(".log")); n != act.size.Load() {
		t.Fatalf("the active segment's file has %d bytes, %d of batches: zeros without a sync asked", n, act.size.Load())
	}
	h.appendSynced(batch(1, 100, 20))
	h.append(batch(1, 100, 21)) // the next append after a sync was asked starts the zeros
	h.log.zeroers.Wait()
	if n := fileSize(t, act.path(".log")); n <= act.size.Load() {
		t.Fatalf("the active segment's file has %d bytes, %d of batches: no zeros once syncs are asked", n, act.size.Load())
	}
}

func TestRecoveryCutsAPreallocatedTailAsTheLogEnd(t *testing.T) {
	smallZeros(t)
	h := newHarness(t, Config{Preallocate: true})
	var want [][]byte
	for i := 0; i < 30; i++ {
		b := batch(1+i%3, 100, int64(i))
		h.appendSynced(b)
		want = append(want, append([]byte(nil), b...))
	}
	if err := h.log.Flush(); err != nil {
		t.Fatal(err)
	}
	h.log.zeroers.Wait()
	act := h.log.active()
	path := act.path(".log")
	if fileSize(t, path) <= act.size.Load() {
		t.Fatal("no zeros ahead of the batches")
	}
	end := h.log.LogEndOffset()
	h.crash() // kill -9: the file keeps its zero tail
	if h.log.LogEndOffset() != end {
		t.Fatalf("recovery kept the log up to %d, want %d", h.log.LogEndOffset(), end)
	}
	if h.log.recovered.truncatedBytes != 0 {
		t.Fatalf("recovery counted %d bytes of zeros as a torn tail", h.log.recovered.truncatedBytes)
	}
	if _, err := os.Stat(path + brokenExt); !os.IsNotExist(err) {
		t.Fatalf("recovery kept the zeros as damage: %v", err)
	}
	if n := fileSize(t, path); n != h.log.active().size.Load() {
		t.Fatalf("the recovered segment's file has %d bytes, %d of batches", n, h.log.active().size.Load())
	}
	got := h.readAll(0)
	if len(got) != len(want) {
		t.Fatalf("read %d batches back, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("batch %d differs after recovery", i)
		}
	}
	// The log goes on: appends after the recovered end, preallocated
	// again.
	h.append(batch(1, 100, 99))
	if h.log.LogEndOffset() != end+1 {
		t.Fatalf("log end %d, want %d", h.log.LogEndOffset(), end+1)
	}
}

// A segment sealed just before a crash may keep the zeros its roll cut
// (the cut was not on the disk yet): recovery cuts them and keeps the
// segments after it when the segment ends where the next begins. Zeros
// after a segment that does not (its tail was lost), or bytes other than
// zeros, are a torn tail as before.
func TestRecoveryCutsTheZerosOfASegmentSealedBeforeTheCrash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tail     []byte
		dropLast bool // the first segment loses its last batch
		wantEnd  int64
		broken   bool
	}{
		{name: "zeros", tail: make([]byte, 5000), wantEnd: 8},
		{name: "zeros after a lost batch", tail: make([]byte, 5000), dropLast: true, wantEnd: 3, broken: true},
		{name: "garbage after zeros", tail: append(make([]byte, 5000), 1, 2, 3), wantEnd: 4, broken: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			one := int64(len(batch(1, 100, 0)))
			h := newHarness(t, Config{SegmentBytes: one * 4})
			for i := 0; i < 8; i++ {
				h.append(batch(1, 100, int64(i)))
			}
			h.abandon()
			first := filepath.Join(h.dir, segmentName(0, ".log"))
			data, err := os.ReadFile(first)
			if err != nil {
				t.Fatal(err)
			}
			if tc.dropLast {
				data = data[:len(data)-int(one)]
			}
			writeFile(t, first, append(data, tc.tail...))
			writeFile(t, filepath.Join(h.dir, recoveryPointFile), encodeOffsetCheckpoint("recovery-point", 0))
			h.open()
			if h.log.LogEndOffset() != tc.wantEnd {
				t.Fatalf("recovery kept the log up to %d, want %d", h.log.LogEndOffset(), tc.wantEnd)
			}
			_, err = os.Stat(first + brokenExt)
			if broken := err == nil; broken != tc.broken {
				t.Fatalf("a .broken file: %v, want %v", broken, tc.broken)
			}
			segs := h.log.Segments()
			if n := fileSize(t, segs[0].Path); n != segs[0].Size {
				t.Fatalf("the first segment's file has %d bytes, %d of batches", n, segs[0].Size)
			}
			if got := len(h.readAll(0)); int64(got) != tc.wantEnd {
				t.Fatalf("read %d batches, want %d", got, tc.wantEnd)
			}
		})
	}
}

func TestCrashWithPreallocationLosesNoDurableBatch(t *testing.T) {
	smallZeros(t)
	seeds := 20
	if testing.Short() {
		seeds = 5
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { crashOnce(t, uint64(seed), true) })
	}
}
