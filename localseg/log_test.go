package localseg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type harness struct {
	t     *testing.T
	dir   string
	cfg   Config
	opts  Options
	clock *clock
	log   *Log
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), cfg: cfg, clock: &clock{now: time.UnixMilli(1_700_000_000_000)}}
	h.opts = Options{Now: h.clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h.open()
	t.Cleanup(func() {
		if h.log != nil {
			h.log.Close()
		}
	})
	return h
}

func (h *harness) open() {
	h.t.Helper()
	l, err := Open(h.dir, h.cfg, h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.log = l
}

// crash abandons the log without a clean close (as kill -9 would) and
// reopens it.
func (h *harness) crash() {
	h.t.Helper()
	h.log.flushes.Wait()
	h.log.retireAll()
	h.log.zeroers.Wait()
	h.log = nil
	h.open()
}

func (h *harness) restart() {
	h.t.Helper()
	if err := h.log.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// batch builds a plain batch of n records of size bytes each, with
// timestamps ts, ts+1, ...
func batch(n, size int, ts int64) Batch {
	recs := make([]recordbatch.Record, n)
	for i := range recs {
		recs[i] = recordbatch.Record{TimestampDelta: int64(i), Value: bytes.Repeat([]byte{'x'}, size)}
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: ts}, recs)
	if err != nil {
		panic(err)
	}
	return Batch(b)
}

func idemBatch(pid int64, epoch int16, seq int32, n int) Batch {
	recs := make([]recordbatch.Record, n)
	for i := range recs {
		recs[i].Value = []byte(fmt.Sprint(seq + int32(i)))
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq, BaseTimestamp: 1}, recs)
	if err != nil {
		panic(err)
	}
	return Batch(b)
}

func (h *harness) append(b Batch) AppendResult {
	h.t.Helper()
	res, err := h.log.AppendAsLeader(b, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// readAll returns every batch from offset to the log end, through Read.
func (h *harness) readAll(from int64) []recordbatch.Batch {
	h.t.Helper()
	var out []recordbatch.Batch
	for off := from; off < h.log.LogEndOffset(); {
		r, err := h.log.Read(off, 1<<20, math.MaxInt64, true)
		if err != nil {
			h.t.Fatalf("read at %d: %v", off, err)
		}
		buf, err := r.Bytes()
		r.Release()
		if err != nil {
			h.t.Fatal(err)
		}
		if len(buf) == 0 {
			h.t.Fatalf("empty read at %d below the log end %d", off, h.log.LogEndOffset())
		}
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // partial last batch
			}
			if err := recordbatch.Check(b); err != nil {
				h.t.Fatalf("batch at %d: %v", b.BaseOffset(), err)
			}
			if b.LastOffset() >= off {
				out = append(out, b)
				off = b.NextOffset()
			}
			buf = rest
		}
	}
	return out
}

func TestAppendAssignsOffsetsAndReadsBack(t *testing.T) {
	h := newHarness(t, Config{})
	for i := 0; i < 10; i++ {
		res := h.append(batch(3, 10, 100))
		if res.FirstOffset != int64(i*3) || res.LastOffset != int64(i*3+2) {
			t.Fatalf("append %d: %+v", i, res)
		}
	}
	if h.log.LogEndOffset() != 30 {
		t.Fatalf("log end %d", h.log.LogEndOffset())
	}
	got := h.readAll(0)
	if len(got) != 10 || got[9].BaseOffset() != 27 {
		t.Fatalf("read %d batches", len(got))
	}
	// A read from the middle of a batch starts at that batch.
	r, err := h.log.Read(4, 1<<20, math.MaxInt64, false)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := r.Bytes()
	r.Release()
	if recordbatch.Batch(buf).BaseOffset() != 3 {
		t.Fatalf("read at 4 starts at %d", recordbatch.Batch(buf).BaseOffset())
	}
}

func TestReadBoundaries(t *testing.T) {
	h := newHarness(t, Config{})
	var sizes []int64
	for i := 0; i < 5; i++ {
		b := batch(2, 100, 100)
		sizes = append(sizes, int64(len(b)))
		h.append(b)
	}
	cases := []struct {
		name      string
		offset    int64
		maxBytes  int
		maxOffset int64
		minOne    bool
		wantLen   int64
		wantErr   error
	}{
		{"all", 0, 1 << 20, math.MaxInt64, false, sizes[0] * 5, nil},
		{"cut at high watermark 4", 0, 1 << 20, 4, false, sizes[0] * 2, nil},
		{"high watermark mid-batch excludes it", 0, 1 << 20, 5, false, sizes[0] * 2, nil},
		{"maxBytes cuts mid-batch", 0, 150, math.MaxInt64, false, 150, nil},
		{"minOneBatch returns the first whole", 0, 10, math.MaxInt64, true, sizes[0], nil},
		{"at the high watermark", 4, 1 << 20, 4, false, 0, nil},
		{"at the log end", 10, 1 << 20, math.MaxInt64, false, 0, nil},
		{"past the log end", 11, 1 << 20, math.MaxInt64, false, 0, ErrOffsetOutOfRange},
		{"negative", -1, 1 << 20, math.MaxInt64, false, 0, ErrOffsetOutOfRange},
	}
	for _, c := range cases {
		r, err := h.log.Read(c.offset, c.maxBytes, c.maxOffset, c.minOne)
		if !errors.Is(err, c.wantErr) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.wantErr)
			continue
		}
		if r.Len() != c.wantLen {
			t.Errorf("%s: %d bytes, want %d", c.name, r.Len(), c.wantLen)
		}
		r.Release()
	}
}

func TestRollsOnSegmentBytesAndReadsNeverSpanSegments(t *testing.T) {
	b := batch(1, 200, 100)
	h := newHarness(t, Config{SegmentBytes: int64(len(b)) * 3})
	for i := 0; i < 10; i++ {
		h.append(batch(1, 200, 100))
	}
	segs := h.log.Segments()
	if len(segs) != 4 {
		t.Fatalf("%d segments, want 4: %+v", len(segs), segs)
	}
	for i, s := range segs[:3] {
		if s.BaseOffset != int64(i*3) || s.NextOffset != int64(i*3+3) || s.Active {
			t.Fatalf("segment %d: %+v", i, s)
		}
	}
	// A read at a segment's last batch returns only that batch.
	r, _ := h.log.Read(2, 1<<20, math.MaxInt64, false)
	if r.Len() != int64(len(b)) {
		t.Fatalf("read across a segment boundary: %d bytes", r.Len())
	}
	r.Release()
	if got := h.readAll(0); len(got) != 10 {
		t.Fatalf("%d batches", len(got))
	}
	h.log.waitRollFiles() // written by the rolls' background flushes
	for _, ext := range []string{".index", ".timeindex"} {
		if _, err := os.Stat(filepath.Join(h.dir, segmentName(0, ext))); err != nil {
			t.Fatalf("sealed segment has no %s: %v", ext, err)
		}
	}
}

func TestRollsOnSegmentMs(t *testing.T) {
	// On append, segment.ms compares the new batch's timestamp with the
	// segment's first (Kafka's rule), whatever the wall clock says.
	t.Run("by record timestamps on append", func(t *testing.T) {
		h := newHarness(t, Config{SegmentMs: 1000, RetentionMs: -1})
		h.append(batch(1, 10, 5000))
		h.append(batch(1, 10, 5900))
		h.append(batch(1, 10, 6000)) // exactly segment.ms: no roll yet
		if n := len(h.log.Segments()); n != 1 {
			t.Fatalf("%d segments within segment.ms", n)
		}
		h.append(batch(1, 10, 6001))
		if n := len(h.log.Segments()); n != 2 {
			t.Fatalf("%d segments after segment.ms", n)
		}
		if s := h.log.Segments()[1]; s.BaseOffset != 3 {
			t.Fatalf("new segment at %d", s.BaseOffset)
		}
	})
	// Without timestamps, the wall clock since the first append counts.
	t.Run("by wall clock without timestamps", func(t *testing.T) {
		h := newHarness(t, Config{SegmentMs: 1000, RetentionMs: -1})
		h.append(batch(1, 10, -1))
		h.clock.advance(900 * time.Millisecond)
		h.append(batch(1, 10, -1))
		if n := len(h.log.Segments()); n != 1 {
			t.Fatalf("%d segments within segment.ms", n)
		}
		h.clock.advance(200 * time.Millisecond)
		h.append(batch(1, 10, -1))
		if n := len(h.log.Segments()); n != 2 {
			t.Fatalf("%d segments after segment.ms", n)
		}
	})
	// An idle active segment rolls in the retention pass, by wall clock
	// since its first append.
	t.Run("idle segment in ApplyRetention", func(t *testing.T) {
		h := newHarness(t, Config{SegmentMs: 1000, RetentionMs: -1})
		h.append(batch(1, 10, 100))
		h.clock.advance(900 * time.Millisecond)
		h.log.ApplyRetention(h.clock.Now())
		if n := len(h.log.Segments()); n != 1 {
			t.Fatalf("%d segments before segment.ms", n)
		}
		h.clock.advance(200 * time.Millisecond)
		if _, err := h.log.ApplyRetention(h.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if n := len(h.log.Segments()); n != 2 {
			t.Fatalf("%d segments after an idle segment.ms", n)
		}
		// An empty active segment never rolls.
		h.clock.advance(time.Hour)
		h.log.ApplyRetention(h.clock.Now())
		if n := len(h.log.Segments()); n != 2 {
			t.Fatalf("%d segments after rolling an empty one", n)
		}
	})
}

func TestRollsWhenTheIndexIsFull(t *testing.T) {
	h := newHarness(t, Config{IndexIntervalBytes: 1, SegmentIndexBytes: 3 * indexEntrySize})
	for i := 0; i < 8; i++ {
		h.append(batch(1, 10, 100))
	}
	if n := len(h.log.Segments()); n < 2 {
		t.Fatalf("index of 3 entries never filled: %d segments", n)
	}
}

func TestIndexLookupInSealedSegments(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 50_000, IndexIntervalBytes: 500})
	for i := 0; i < 300; i++ {
		h.append(batch(2, 100, int64(1000+i)))
	}
	h.restart() // sealed indexes come from their files
	for _, off := range []int64{0, 1, 77, 150, 299, 300, 451, 598, 599} {
		r, err := h.log.Read(off, 1<<20, math.MaxInt64, false)
		if err != nil {
			t.Fatal(err)
		}
		buf, _ := r.Bytes()
		r.Release()
		b := recordbatch.Batch(buf)
		if b.BaseOffset() > off || b.LastOffset() < off {
			t.Fatalf("read at %d returned batch %d..%d", off, b.BaseOffset(), b.LastOffset())
		}
	}
}

func TestOffsetForTimestampAndMaxTimestamp(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 2000, IndexIntervalBytes: 200})
	// Batch i holds records at 1000+10i and 1000+10i+1; batch 7 has the
	// largest timestamps.
	for i := 0; i < 20; i++ {
		ts := int64(1000 + 10*i)
		if i == 7 {
			ts = 9000
		}
		h.append(batch(2, 50, ts))
	}
	for _, c := range []struct {
		ts     int64
		offset int64
		found  bool
	}{
		{0, 0, true}, {1000, 0, true}, {1001, 1, true}, {1002, 2, true},
		{1051, 11, true}, {1065, 14, true}, {1190, 14, true}, {8000, 14, true}, {9001, 15, true}, {9002, 0, false},
	} {
		off, _, _, ok, err := h.log.OffsetForTimestamp(context.Background(), c.ts)
		if err != nil || ok != c.found || (ok && off != c.offset) {
			t.Errorf("timestamp %d: offset %d found %v (%v), want %d %v", c.ts, off, ok, err, c.offset, c.found)
		}
	}
	off, ts, _, ok, err := h.log.MaxTimestamp(context.Background())
	if err != nil || !ok || off != 15 || ts != 9001 {
		t.Fatalf("max timestamp: %d %d %v %v", off, ts, ok, err)
	}
}

func TestRecoveryTruncatesTornTail(t *testing.T) {
	h := newHarness(t, Config{})
	for i := 0; i < 10; i++ {
		h.append(batch(1, 100, 100))
	}
	size := h.log.Size()
	seg := filepath.Join(h.dir, segmentName(0, ".log"))
	h.log.flushes.Wait()
	h.log.retireAll()
	h.log = nil
	// Half of a last batch reached the disk.
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(batch(1, 100, 100)[:70])
	f.Close()
	var logged bytes.Buffer
	h.opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	h.open()
	if h.log.LogEndOffset() != 10 || h.log.Size() != size {
		t.Fatalf("after recovery: log end %d size %d, want 10 %d", h.log.LogEndOffset(), h.log.Size(), size)
	}
	// One summary line says what recovery cut.
	if n := strings.Count(logged.String(), `msg="log recovered"`); n != 1 ||
		!strings.Contains(logged.String(), "level=WARN msg=\"log recovered\"") || !strings.Contains(logged.String(), "truncated_bytes=70 ") ||
		!strings.Contains(logged.String(), "log_end_offset=10 ") {
		t.Fatalf("recovery summary missing or wrong:\n%s", logged.String())
	}
	if _, err := os.Stat(seg + ".broken"); err != nil {
		t.Fatalf("cut bytes not kept: %v", err)
	}
	// The log takes appends where it left off.
	if res := h.append(batch(1, 100, 100)); res.FirstOffset != 10 {
		t.Fatalf("append after recovery at %d", res.FirstOffset)
	}
	if got := h.readAll(0); len(got) != 11 {
		t.Fatalf("%d batches", len(got))
	}
}

func TestRecoveryCutsAtACorruptBatch(t *testing.T) {
	one := batch(1, 100, 100)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 4})
	for i := 0; i < 10; i++ {
		h.append(batch(1, 100, 100))
	}
	h.log.flushes.Wait()
	h.log.retireAll()
	h.log = nil
	// Flip a byte in the payload of offset 5 (segment 4, second batch),
	// and drop the recovery point so that segment is checked.
	os.Remove(filepath.Join(h.dir, recoveryPointFile))
	seg := filepath.Join(h.dir, segmentName(4, ".log"))
	data, _ := os.ReadFile(seg)
	data[len(one)+len(one)-3] ^= 0xff
	os.WriteFile(seg, data, 0o644)
	h.open()
	if h.log.LogEndOffset() != 5 {
		t.Fatalf("log end %d after a corrupt batch at 5", h.log.LogEndOffset())
	}
	if _, err := os.Stat(filepath.Join(h.dir, segmentName(8, ".log"))); !os.IsNotExist(err) {
		t.Fatal("the segment after the corruption survived")
	}
	if got := h.readAll(0); len(got) != 5 {
		t.Fatalf("%d batches after recovery", len(got))
	}
}

func TestCorruptIndexIsRebuilt(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 5000, IndexIntervalBytes: 300})
	for i := 0; i < 100; i++ {
		h.append(batch(1, 100, int64(i)))
	}
	h.restart()
	h.log.Close()
	idx := filepath.Join(h.dir, segmentName(0, ".index"))
	data, _ := os.ReadFile(idx)
	data[3] ^= 0xff
	os.WriteFile(idx, data, 0o644)
	os.WriteFile(filepath.Join(h.dir, segmentName(0, ".timeindex")), []byte("garbage"), 0o644)
	h.log = nil
	h.open()
	for off := int64(0); off < 100; off += 7 {
		r, err := h.log.Read(off, 1<<20, math.MaxInt64, false)
		if err != nil {
			t.Fatal(err)
		}
		buf, _ := r.Bytes()
		r.Release()
		if b := recordbatch.Batch(buf); b.BaseOffset() != off {
			t.Fatalf("read at %d found %d", off, b.BaseOffset())
		}
	}
}

func TestCleanRestartSkipsRecoveryAndKeepsEverything(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 3000})
	for i := 0; i < 50; i++ {
		h.append(batch(2, 50, int64(i)))
	}
	h.restart()
	if _, err := os.Stat(filepath.Join(h.dir, cleanShutdownFile)); !os.IsNotExist(err) {
		t.Fatal("the clean-shutdown marker outlived the open")
	}
	if h.log.LogEndOffset() != 100 || len(h.readAll(0)) != 50 {
		t.Fatalf("log end %d", h.log.LogEndOffset())
	}
	if !h.log.OpenedClean() {
		t.Fatal("a log reopened after Close does not say it was opened clean")
	}
	// A second restart without closing is a crash: recovery runs.
	h.crash()
	if h.log.LogEndOffset() != 100 {
		t.Fatalf("log end %d after crash", h.log.LogEndOffset())
	}
	if h.log.OpenedClean() {
		t.Fatal("a log reopened after a crash says it was opened clean")
	}
}

func TestRetentionByTimeSizeAndStartOffset(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2, RetentionMs: -1})
	now := h.clock.Now().UnixMilli()
	for i := 0; i < 10; i++ {
		h.append(batch(1, 100, now-int64(10-i)*60_000)) // one batch a minute, the last a minute ago
	}
	// 5 segments of 2 batches.
	if n := len(h.log.Segments()); n != 5 {
		t.Fatalf("%d segments", n)
	}
	// Time: keep the last 5 minutes: segments whose newest record is
	// older go (the first two: newest records 9 and 7 minutes old).
	cfg := h.cfg
	cfg.RetentionMs = 5 * 60_000
	cfg.SegmentBytes = int64(len(one)) * 2
	h.log.SetConfig(cfg)
	n, err := h.log.ApplyRetention(h.clock.Now())
	if err != nil || n != 2 {
		t.Fatalf("time retention deleted %d (%v)", n, err)
	}
	if h.log.LogStartOffset() != 4 {
		t.Fatalf("log start %d after time retention", h.log.LogStartOffset())
	}
	// Size: keep at most 3 batches' worth.
	cfg.RetentionMs = -1
	cfg.RetentionBytes = int64(len(one)) * 3
	h.log.SetConfig(cfg)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 1 {
		t.Fatalf("size retention deleted %d (%v)", n, err)
	}
	// Start offset: DeleteRecords past the next segment.
	cfg.RetentionBytes = -1
	h.log.SetConfig(cfg)
	if err := h.log.SetLogStartOffset(9); err != nil {
		t.Fatal(err)
	}
	if _, err := h.log.Read(8, 100, math.MaxInt64, true); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read below the log start: %v", err)
	}
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 1 {
		t.Fatalf("start-offset retention deleted %d (%v)", n, err)
	}
	if h.log.LogStartOffset() != 9 || h.log.LocalLogStartOffset() != 9 {
		t.Fatalf("log start %d local %d", h.log.LogStartOffset(), h.log.LocalLogStartOffset())
	}
	h.restart()
	if h.log.LogStartOffset() != 9 {
		t.Fatalf("log start %d after restart", h.log.LogStartOffset())
	}
	if err := h.log.SetLogStartOffset(3); err != nil || h.log.LogStartOffset() != 9 {
		t.Fatalf("asked to move the log start back to 3: %v, log start %d; want it left at 9", err, h.log.LogStartOffset())
	}
}

func TestRetentionRollsAndDeletesAnExpiredActiveSegment(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: 1000})
	old := h.clock.Now().UnixMilli() - 5000
	h.append(batch(3, 10, old))
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 1 {
		t.Fatalf("deleted %d (%v)", n, err)
	}
	if h.log.LogStartOffset() != 3 || h.log.LogEndOffset() != 3 || h.log.Size() != 0 {
		t.Fatalf("start %d end %d size %d", h.log.LogStartOffset(), h.log.LogEndOffset(), h.log.Size())
	}
	if res := h.append(batch(1, 10, h.clock.Now().UnixMilli())); res.FirstOffset != 3 {
		t.Fatalf("append after expiry at %d", res.FirstOffset)
	}
}

func TestTruncateToAndFully(t *testing.T) {
	one := batch(2, 50, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 3})
	for i := 0; i < 10; i++ {
		b := batch(2, 50, int64(i))
		if _, err := h.log.AppendAsLeader(b, int32(i/4)); err != nil {
			t.Fatal(err)
		}
	}
	// Truncate into the middle of a sealed segment: the batch holding 9
	// (offsets 8-9) goes too.
	if err := h.log.TruncateTo(9); err != nil {
		t.Fatal(err)
	}
	if h.log.LogEndOffset() != 8 {
		t.Fatalf("log end %d after truncating to 9", h.log.LogEndOffset())
	}
	// Epoch 1 started at 8 and epoch 2 at 16: both are gone.
	if eps := h.log.Epochs(); len(eps) != 1 || eps[0] != (EpochEntry{Epoch: 0, StartOffset: 0}) {
		t.Fatalf("epochs after truncation: %+v", eps)
	}
	if res := h.append(batch(1, 50, 0)); res.FirstOffset != 8 {
		t.Fatalf("append after truncation at %d", res.FirstOffset)
	}
	h.restart()
	if h.log.LogEndOffset() != 9 || len(h.readAll(0)) != 5 {
		t.Fatalf("after restart: log end %d", h.log.LogEndOffset())
	}
	if err := h.log.TruncateFullyAndStartAt(100); err != nil {
		t.Fatal(err)
	}
	if h.log.LogStartOffset() != 100 || h.log.LogEndOffset() != 100 || len(h.log.Epochs()) != 0 {
		t.Fatalf("after full truncation: %d %d %v", h.log.LogStartOffset(), h.log.LogEndOffset(), h.log.Epochs())
	}
	if e, ok := h.log.LatestEpoch(); ok {
		t.Fatalf("latest epoch after full truncation: %+v", e)
	}
	if res := h.append(batch(1, 50, 0)); res.FirstOffset != 100 {
		t.Fatalf("append at %d", res.FirstOffset)
	}
	h.crash()
	if h.log.LogStartOffset() != 100 || h.log.LogEndOffset() != 101 {
		t.Fatalf("after crash: %d %d", h.log.LogStartOffset(), h.log.LogEndOffset())
	}
}

func TestFollowerAppendKeepsOffsetsAndEpochs(t *testing.T) {
	leader := newHarness(t, Config{})
	for i := 0; i < 4; i++ {
		if _, err := leader.log.AppendAsLeader(batch(2, 10, 0), int32(3+i/2)); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := leader.log.Read(0, 1<<20, math.MaxInt64, true)
	data, _ := r.Bytes()
	r.Release()
	follower := newHarness(t, Config{})
	res, err := follower.log.AppendAsFollower(data)
	if err != nil || res.FirstOffset != 0 || res.LastOffset != 7 {
		t.Fatalf("follower append: %+v %v", res, err)
	}
	if eps := follower.log.Epochs(); len(eps) != 2 || eps[0] != (EpochEntry{3, 0}) || eps[1] != (EpochEntry{4, 4}) {
		t.Fatalf("follower epochs: %+v", eps)
	}
	if e, ok := follower.log.LatestEpoch(); !ok || e != (EpochEntry{4, 4}) {
		t.Fatalf("follower latest epoch: %+v %v", e, ok)
	}
	if _, err := follower.log.AppendAsFollower(data); !errors.Is(err, ErrOffsetsNotIncreasing) {
		t.Fatalf("appending the same batches again: %v", err)
	}
	if e, end, ok := follower.log.EndOffsetForEpoch(3); !ok || e != 3 || end != 4 {
		t.Fatalf("end of epoch 3: %d %d %v", e, end, ok)
	}
	if e, end, ok := follower.log.EndOffsetForEpoch(4); !ok || e != 4 || end != 8 {
		t.Fatalf("end of epoch 4: %d %d %v", e, end, ok)
	}
	if e, end, ok := follower.log.EndOffsetForEpoch(1); !ok || e != 1 || end != 0 {
		t.Fatalf("end of epoch 1 (before all): %d %d %v", e, end, ok)
	}
	if _, _, ok := follower.log.EndOffsetForEpoch(9); ok {
		t.Fatal("a future epoch was answered")
	}
}

func TestIdempotentSequences(t *testing.T) {
	h := newHarness(t, Config{})
	app := func(b Batch) (AppendResult, error) { return h.log.AppendAsLeader(b, 0) }
	for seq := int32(0); seq < 30; seq += 5 {
		if _, err := app(idemBatch(7, 0, seq, 5)); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	// Each of the last five batches is recognized as a duplicate.
	for i, seq := range []int32{5, 10, 15, 20, 25} {
		res, err := app(idemBatch(7, 0, seq, 5))
		if err != nil || !res.Duplicate || res.FirstOffset != int64(seq) {
			t.Fatalf("duplicate %d: %+v %v", i, res, err)
		}
	}
	// The sixth-newest is too old to be recognized: a sequence error.
	if _, err := app(idemBatch(7, 0, 0, 5)); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("old batch: %v", err)
	}
	if _, err := app(idemBatch(7, 0, 31, 1)); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("gap: %v", err)
	}
	if _, err := app(idemBatch(7, 1, 3, 1)); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("new epoch not at 0: %v", err)
	}
	if _, err := app(idemBatch(7, 1, 0, 1)); err != nil {
		t.Fatalf("new epoch at 0: %v", err)
	}
	if _, err := app(idemBatch(7, 0, 1, 1)); !errors.Is(err, ErrInvalidProducerEpoch) {
		t.Fatalf("fenced epoch: %v", err)
	}
	// An unknown producer may start anywhere.
	if _, err := app(idemBatch(8, 0, 1234, 2)); err != nil {
		t.Fatalf("unknown producer: %v", err)
	}
	// Sequences wrap at MaxInt32.
	if _, err := app(idemBatch(9, 0, math.MaxInt32-1, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := app(idemBatch(9, 0, 0, 1)); err != nil {
		t.Fatalf("after wrap: %v", err)
	}
	end := h.log.LogEndOffset()

	// Producer state survives a clean restart and a crash.
	for _, reopen := range []func(){h.restart, h.crash} {
		reopen()
		if res, err := app(idemBatch(7, 1, 0, 1)); err != nil || !res.Duplicate {
			t.Fatalf("duplicate after reopen: %+v %v", res, err)
		}
		if _, err := app(idemBatch(7, 0, 1, 1)); !errors.Is(err, ErrInvalidProducerEpoch) {
			t.Fatalf("fenced epoch after reopen: %v", err)
		}
	}
	if h.log.LogEndOffset() != end {
		t.Fatalf("duplicates were appended: %d != %d", h.log.LogEndOffset(), end)
	}
}

func TestProducerStateFollowsTruncation(t *testing.T) {
	one := idemBatch(5, 0, 0, 2)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for seq := int32(0); seq < 12; seq += 2 {
		if _, err := h.log.AppendAsLeader(idemBatch(5, 0, seq, 2), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.log.TruncateTo(6); err != nil { // keeps seq 0..5
		t.Fatal(err)
	}
	// Sequence 6 is next again, not 12.
	if _, err := h.log.AppendAsLeader(idemBatch(5, 0, 6, 2), 0); err != nil {
		t.Fatalf("append after truncation: %v", err)
	}
}

func TestProducersExpire(t *testing.T) {
	h := newHarness(t, Config{ProducerIDExpirationMs: 1000})
	b := idemBatch(3, 0, 0, 1)
	b.SetLogAppendTime(h.clock.Now().UnixMilli())
	h.append(b)
	h.clock.advance(2 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	// Expired: any sequence is accepted again.
	if _, err := h.log.AppendAsLeader(idemBatch(3, 0, 77, 1), 0); err != nil {
		t.Fatalf("expired producer: %v", err)
	}
}

func TestDescriptorsStayBounded(t *testing.T) {
	files := NewFileCache(8)
	one := batch(1, 10, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one))})
	h.opts.Files = files
	h.restart()
	for i := 0; i < 100; i++ {
		h.append(batch(1, 10, 0))
	}
	if got := h.readAll(0); len(got) != 100 {
		t.Fatalf("%d batches", len(got))
	}
	// The bound is soft while a segment is in use: the background
	// flushes of the sealed segments fsync through their descriptors.
	h.log.flushes.Wait()
	if open := files.OpenFiles(); open > 8 {
		t.Fatalf("%d descriptors open, bound 8", files.OpenFiles())
	}
}

func TestRangeSurvivesEvictionAndDeletion(t *testing.T) {
	files := NewFileCache(2)
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)), RetentionMs: -1})
	h.opts.Files = files
	h.restart()
	for i := 0; i < 10; i++ {
		h.append(batch(1, 100, 0))
	}
	r, err := h.log.Read(0, 1<<20, math.MaxInt64, true)
	if err != nil {
		t.Fatal(err)
	}
	h.readAll(1) // churn the cache
	if err := h.log.SetLogStartOffset(5); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.log.ApplyRetention(h.clock.Now()); n != 5 {
		t.Fatalf("deleted %d", n)
	}
	buf, err := r.Bytes()
	r.Release()
	if err != nil || !bytes.Equal(buf[recordbatch.HeaderSize:], one[recordbatch.HeaderSize:]) {
		t.Fatalf("range after eviction and deletion: %v", err)
	}
}

func TestConcurrentReadersWithAnAppender(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 20})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				rng, err := h.log.Read(off, 1<<16, h.log.LogEndOffset(), true)
				if err != nil {
					t.Error(err)
					return
				}
				buf, _ := rng.Bytes()
				rng.Release()
				for len(buf) > 0 {
					b, rest, err := recordbatch.Next(buf)
					if err != nil {
						break
					}
					if err := recordbatch.Check(b); err != nil {
						t.Errorf("torn read at %d: %v", b.BaseOffset(), err)
						return
					}
					if b.LastOffset() >= off {
						off = b.NextOffset()
					}
					buf = rest
				}
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		h.append(batch(1, 100, 0))
	}
	close(stop)
	wg.Wait()
}

func TestAssignEpochMarksWhereTheOldEpochEnded(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := h.log.AppendAsLeader(batch(3, 10, 0), 2); err != nil {
		t.Fatal(err)
	}
	// A new leader at epoch 5 that has not written yet: epoch 2 (and an
	// epoch 4 it never had) ended at its log end.
	if err := h.log.AssignEpoch(5); err != nil {
		t.Fatal(err)
	}
	if err := h.log.AssignEpoch(4); err != nil {
		t.Fatal(err)
	}
	if e, end, ok := h.log.EndOffsetForEpoch(4); !ok || e != 2 || end != 3 {
		t.Fatalf("end of epoch 4: %d %d %v", e, end, ok)
	}
	if e, end, ok := h.log.EndOffsetForEpoch(5); !ok || e != 5 || end != 3 {
		t.Fatalf("end of epoch 5: %d %d %v", e, end, ok)
	}
	// Recovery drops entries at the log end, as Kafka's does; a leader
	// assigns its epoch again when it takes the role after a restart.
}

// TestTruncatingToTheLogEndDropsAnEpochWithNothingInIt: a broker that led
// at an epoch and appended nothing in it before another leader was
// elected holds that epoch at its log end, and the new leader never saw
// it. Following, it truncates to where the leader says their logs part,
// its log end: no record goes, but that epoch must, or every fetch names
// it, the leader answers each as diverging, and the follower never
// catches up. (Kafka's truncateTo drops it the same way.)
func TestTruncatingToTheLogEndDropsAnEpochWithNothingInIt(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := h.log.AppendAsLeader(batch(3, 10, 0), 2); err != nil {
		t.Fatal(err)
	}
	if err := h.log.AssignEpoch(5); err != nil {
		t.Fatal(err)
	}
	if e, ok := h.log.LatestEpoch(); !ok || e.Epoch != 5 {
		t.Fatalf("latest epoch after assigning 5: %+v %v", e, ok)
	}
	if err := h.log.TruncateTo(h.log.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	if e, ok := h.log.LatestEpoch(); !ok || e.Epoch != 2 || h.log.LogEndOffset() != 3 {
		t.Fatalf("after truncating to the log end: latest epoch %+v %v, log end %d; want epoch 2, the records kept", e, ok, h.log.LogEndOffset())
	}
	h.restart()
	if e, ok := h.log.LatestEpoch(); !ok || e.Epoch != 2 {
		t.Fatalf("after a restart: latest epoch %+v %v, want 2", e, ok)
	}
	// Past the log end, an epoch with records in it stays.
	if err := h.log.TruncateTo(h.log.LogEndOffset() + 10); err != nil {
		t.Fatal(err)
	}
	if e, ok := h.log.LatestEpoch(); !ok || e.Epoch != 2 || h.log.LogEndOffset() != 3 {
		t.Fatalf("after truncating past the log end: %+v %v, log end %d", e, ok, h.log.LogEndOffset())
	}
}

func TestTruncateFullyAndRestoreKeepsProducersAndEpochs(t *testing.T) {
	one := idemBatch(5, 0, 0, 2)
	src := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for seq := int32(0); seq < 8; seq += 2 {
		if _, err := src.log.AppendAsLeader(idemBatch(5, 0, seq, 2), 3); err != nil {
			t.Fatal(err)
		}
	}
	segs := src.log.Segments()
	ss, err := src.log.OpenSealed(segs[len(segs)-2].BaseOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()

	h := newHarness(t, Config{})
	if err := h.log.TruncateFullyAndRestore(ss.NextOffset, []EpochEntry{{Epoch: 3, StartOffset: ss.NextOffset}}, []byte("garbage")); err == nil {
		t.Fatal("a bad snapshot was accepted")
	}
	if len(ss.Epochs) != 1 || ss.Epochs[0].Epoch != 3 {
		t.Fatalf("segment epochs %+v", ss.Epochs)
	}
	if err := h.log.TruncateFullyAndRestore(ss.NextOffset, ss.Epochs, ss.ProducerSnapshot); err != nil {
		t.Fatal(err)
	}
	for _, reopen := range []func(){func() {}, h.restart, h.crash} {
		reopen()
		if h.log.LogStartOffset() != ss.NextOffset || h.log.LogEndOffset() != ss.NextOffset {
			t.Fatalf("log [%d, %d), want it at %d", h.log.LogStartOffset(), h.log.LogEndOffset(), ss.NextOffset)
		}
		if e, end, ok := h.log.EndOffsetForEpoch(3); !ok || e != 3 || end != ss.NextOffset {
			t.Fatalf("end of epoch 3: %d %d %v", e, end, ok)
		}
	}
	// The producer continues its sequence; a replay of an old one is out
	// of order (not accepted as a new producer's first batch).
	next := int32(ss.NextOffset)
	if _, err := h.log.AppendAsLeader(idemBatch(5, 0, next, 2), 3); err != nil {
		t.Fatalf("the next sequence: %v", err)
	}
	if _, err := h.log.AppendAsLeader(idemBatch(5, 0, next+7, 1), 3); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("a gap after the restore: %v", err)
	}
}

// Discard (a deleted topic's log) closes without writing anything: no
// clean-shutdown marker, no sealed indexes; appends and a later Close are
// refused or do nothing, and a reopen recovers what was on disk.
func TestDiscardClosesWithoutWriting(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 3000})
	for i := 0; i < 10; i++ {
		h.append(batch(2, 50, int64(i)))
	}
	h.log.Discard()
	if _, err := os.Stat(filepath.Join(h.dir, cleanShutdownFile)); !os.IsNotExist(err) {
		t.Fatalf("a discarded log wrote its clean-shutdown marker (stat: %v)", err)
	}
	if _, err := h.log.AppendAsLeader(batch(2, 50, 10), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after Discard: %v, want ErrClosed", err)
	}
	if err := h.log.Close(); err != nil {
		t.Fatalf("Close after Discard: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, cleanShutdownFile)); !os.IsNotExist(err) {
		t.Fatal("Close after Discard wrote the clean-shutdown marker")
	}
	h.open()
	if h.log.LogEndOffset() != 20 {
		t.Fatalf("log end %d after reopening a discarded log, want 20", h.log.LogEndOffset())
	}
}

func TestLiveEntriesReadersSeeAWrittenPrefix(t *testing.T) {
	var p atomic.Pointer[liveEntries[indexEntry]]
	p.Store(newLiveEntries([]indexEntry{{rel: 0, pos: 0}}))
	const n = 5000
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for last < n {
				es := p.Load().entries()
				if len(es) < last {
					t.Errorf("entries went from %d to %d", last, len(es))
					return
				}
				for i, e := range es {
					if e.rel != uint32(i) || e.pos != uint32(i*10) {
						t.Errorf("entry %d of %d: %+v", i, len(es), e)
						return
					}
				}
				last = len(es)
			}
		}()
	}
	for i := 1; i < n; i++ {
		b := p.Load()
		if nb := b.add(indexEntry{rel: uint32(i), pos: uint32(i * 10)}); nb != b {
			p.Store(nb)
		}
	}
	wg.Wait()
	if es := p.Load().entries(); cap(es) != len(es) {
		t.Fatalf("entries of cap %d for %d: an append to them would write into the live array", cap(es), len(es))
	}
}

// Readers at every offset, through the live offset index of the active
// segment (an entry per batch) while an appender adds entries to it.
func TestReadsThroughTheLiveIndexWhileAppending(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{IndexIntervalBytes: 1, SegmentBytes: int64(len(one)) * 1500})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(r); ; i += 7 {
				select {
				case <-stop:
					return
				default:
				}
				leo := h.log.LogEndOffset()
				if leo == 0 {
					continue
				}
				off := i % leo
				ts, err := h.log.Read(off, 1<<10, leo, true)
				if err != nil {
					t.Error(err)
					return
				}
				buf, _ := ts.Bytes()
				ts.Release()
				b, _, err := recordbatch.Next(buf)
				if err != nil || b.BaseOffset() > off || b.LastOffset() < off {
					t.Errorf("read at %d (end %d): %v", off, leo, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		h.append(batch(1, 100, 0))
	}
	close(stop)
	wg.Wait()
}
