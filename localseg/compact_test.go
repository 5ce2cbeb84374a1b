package localseg

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs/crashfs"
	"github.com/shale-log/shale/localseg/vfs/errorfs"
)

// kv is one record of a keyed batch: a nil value is a tombstone.
type kv struct {
	key string
	val []byte
}

func val(s string) []byte { return []byte(s) }

// keyedBatch builds a batch of keyed records with timestamp ts.
func keyedBatch(opts recordbatch.BuildOptions, ts int64, recs ...kv) Batch {
	rs := make([]recordbatch.Record, len(recs))
	for i, r := range recs {
		rs[i] = recordbatch.Record{Key: []byte(r.key), Value: r.val}
	}
	if opts.ProducerID == 0 && !opts.Transactional {
		opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence = -1, -1, -1
	}
	opts.BaseTimestamp = ts
	b, err := recordbatch.Build(nil, opts, rs)
	if err != nil {
		panic(err)
	}
	return Batch(b)
}

// record is one record read back.
type record struct {
	offset int64
	key    string
	val    string
	tomb   bool
}

// readRecords reads every record of the log through Read.
func (h *harness) readRecords() []record {
	h.t.Helper()
	var out []record
	for _, b := range h.readAll(h.log.LogStartOffset()) {
		if b.Control() {
			continue
		}
		err := recordbatch.Records(context.Background(), b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
			out = append(out, record{offset: r.Offset, key: string(r.Key), val: string(r.Value), tomb: r.Value == nil})
			return nil
		})
		if err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

// compact runs a pass with the whole log below its end cleanable.
func (h *harness) compact(opts CompactOptions) CompactStats {
	h.t.Helper()
	if err := h.log.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.log.flushes.Wait()
	if opts.Now.IsZero() {
		opts.Now = h.clock.Now()
	}
	if opts.HighWatermark == 0 {
		opts.HighWatermark = h.log.LogEndOffset()
	}
	st, err := h.log.Compact(context.Background(), opts)
	if err != nil {
		h.t.Fatalf("compact: %v", err)
	}
	return st
}

// lastOfEachKey is what compaction must leave of writes: the last record
// of every key, at its offset.
func lastOfEachKey(recs []record) map[string]record {
	m := map[string]record{}
	for _, r := range recs {
		m[r.key] = r
	}
	return m
}

func requireRecords(t *testing.T, got []record, want map[string]record) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range got {
		w, ok := want[r.key]
		if !ok || w != r {
			t.Fatalf("record %+v left, want %+v", r, w)
		}
		if seen[r.key] {
			t.Fatalf("key %q twice", r.key)
		}
		seen[r.key] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("%d keys left, want %d", len(seen), len(want))
	}
}

func TestCompactionKeepsTheLastRecordOfEachKey(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 2048, IndexIntervalBytes: 128})
	var all []record
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("k%02d", i%17), fmt.Sprintf("v%03d", i)
		res := h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, val(v)}))
		all = append(all, record{offset: res.FirstOffset, key: k, val: v})
	}
	if err := h.log.Roll(); err != nil {
		t.Fatal(err)
	}
	before := len(h.log.Segments())
	h.log.Flush()
	h.log.flushes.Wait()
	c := h.log.Cleanable(CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()})
	if c.FirstDirty != 0 || c.CleanBytes != 0 || c.DirtyBytes == 0 || c.DirtyRatio() != 1 {
		t.Fatalf("cleanable before the first pass: %+v", c)
	}
	st := h.compact(CompactOptions{})
	want := lastOfEachKey(all)
	requireRecords(t, h.readRecords(), want)
	if st.Records != 300 || st.RemovedRecords != 300-17 || st.Keys != 17 || st.CleanedTo != 300 {
		t.Fatalf("stats %+v", st)
	}
	if after := len(h.log.Segments()); after != before || st.Groups != st.Segments {
		t.Fatalf("%d segments before, %d after, stats %+v: groups are made by the sizes read", before, after, st)
	}
	if h.log.LogStartOffset() != 0 || h.log.LogEndOffset() != 300 {
		t.Fatalf("log [%d, %d), want [0, 300)", h.log.LogStartOffset(), h.log.LogEndOffset())
	}
	c = h.log.Cleanable(CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()})
	if c.FirstDirty != 300 || c.DirtyBytes != 0 || c.CleanBytes == 0 {
		t.Fatalf("cleanable after the pass: %+v", c)
	}
	// Every offset reads, the gaps included: a consumer at any offset
	// gets the next record kept.
	for off := int64(0); off < 300; off++ {
		r, err := h.log.Read(off, 1<<20, math.MaxInt64, true)
		if err != nil {
			t.Fatal(err)
		}
		if r.Len() == 0 {
			t.Fatalf("nothing read at %d", off)
		}
		r.Release()
	}
	// A second pass with new writes cleans the old part again.
	for i := 300; i < 340; i++ {
		k, v := fmt.Sprintf("k%02d", i%5), fmt.Sprintf("v%03d", i)
		res := h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, val(v)}))
		all = append(all, record{offset: res.FirstOffset, key: k, val: v})
	}
	h.log.Roll()
	st = h.compact(CompactOptions{})
	want = lastOfEachKey(all)
	requireRecords(t, h.readRecords(), want)
	// The small segments the first pass left are merged.
	if st.Groups >= st.Segments || len(h.log.Segments()) >= before {
		t.Fatalf("second pass %+v left %d segments", st, len(h.log.Segments()))
	}
	h.restart()
	requireRecords(t, h.readRecords(), want)
	h.crash()
	requireRecords(t, h.readRecords(), want)
	// The first record kept is the first at or after timestamp 0.
	if got, _, _, ok, err := h.log.OffsetForTimestamp(context.Background(), 0); err != nil || !ok || got != h.readRecords()[0].offset {
		t.Fatalf("offset for timestamp 0: %d %v %v", got, ok, err)
	}
}

func TestCompactionRemovesTombstonesAfterTheirHorizon(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024})
	h.append(keyedBatch(recordbatch.BuildOptions{}, 1, kv{"a", val("1")}, kv{"b", val("1")}))
	h.append(keyedBatch(recordbatch.BuildOptions{}, 2, kv{"a", nil}))
	h.log.Roll()
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	got := h.readRecords()
	if len(got) != 2 || got[0].key != "b" || !got[1].tomb || got[1].key != "a" {
		t.Fatalf("after the first pass: %+v", got)
	}
	// The tombstone's batch carries its delete horizon.
	bs := h.readAll(0)
	hz, ok := bs[len(bs)-1].DeleteHorizon()
	if !ok || hz != h.clock.Now().UnixMilli()+1000 {
		t.Fatalf("delete horizon %d %v", hz, ok)
	}
	// Before the horizon a pass keeps it; after, it goes.
	h.clock.advance(500 * time.Millisecond)
	h.append(keyedBatch(recordbatch.BuildOptions{}, 3, kv{"c", val("1")}))
	h.log.Roll()
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	if got := h.readRecords(); len(got) != 3 || !got[1].tomb {
		t.Fatalf("before the horizon: %+v", got)
	}
	h.clock.advance(time.Second)
	h.append(keyedBatch(recordbatch.BuildOptions{}, 4, kv{"d", val("1")}))
	h.log.Roll()
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	got = h.readRecords()
	if len(got) != 3 || got[0].key != "b" || got[1].key != "c" || got[2].key != "d" {
		t.Fatalf("after the horizon: %+v", got)
	}
}

func TestCompactionPassIsDueWhenAHorizonPasses(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024})
	h.append(keyedBatch(recordbatch.BuildOptions{}, 1, kv{"a", val("1")}))
	h.append(keyedBatch(recordbatch.BuildOptions{}, 2, kv{"a", nil}, kv{"b", val("2")}))
	h.log.Roll()
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	opts := CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset(), DeleteRetentionMs: 1000}
	if c := h.log.Cleanable(opts); c.DirtyBytes != 0 || c.HorizonDue {
		t.Fatalf("right after a pass: %+v", c)
	}
	h.clock.advance(2 * time.Second)
	opts.Now = h.clock.Now()
	if c := h.log.Cleanable(opts); c.DirtyBytes != 0 || !c.HorizonDue {
		t.Fatalf("once the tombstone's horizon passed: %+v", c)
	}
	h.compact(opts)
	if got := h.readRecords(); len(got) != 1 || got[0].key != "b" {
		t.Fatalf("records %+v", got)
	}
	if c := h.log.Cleanable(opts); c.HorizonDue {
		t.Fatalf("after the horizon pass: %+v", c)
	}
}

// An empty sealed segment (compaction removed all it held) holds back
// no time retention, and goes with the next segment retention deletes,
// not before: the log start does not move over it alone.
func TestRetentionDeletesSegmentsCompactionEmptied(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 40, RetentionMs: 1000})
	now := h.clock.Now().UnixMilli()
	h.append(keyedBatch(recordbatch.BuildOptions{}, now, kv{"a", val("1")}))
	h.log.Roll()
	h.append(keyedBatch(recordbatch.BuildOptions{}, now+1500, kv{"a", val("2")}))
	h.log.Roll()
	h.compact(CompactOptions{})
	if segs := h.log.Segments(); len(segs) != 3 || segs[0].Size != 0 {
		t.Fatalf("segments %+v", segs)
	}
	h.clock.advance(2 * time.Second)
	h.append(keyedBatch(recordbatch.BuildOptions{}, h.clock.Now().UnixMilli(), kv{"b", val("1")}))
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 0 || h.log.LogStartOffset() != 0 {
		t.Fatalf("retention deleted %d (%v) before the records after the empty segment expired; log start %d", n, err, h.log.LogStartOffset())
	}
	h.clock.advance(time.Second)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 || h.log.LogStartOffset() != 2 {
		t.Fatalf("retention deleted %d: %v; log start %d", n, err, h.log.LogStartOffset())
	}
}

func TestCompactionDropsAbortedTransactionsAndKeepsMarkersWhileNeeded(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 4096})
	txn := func(pid int64, seq int32, recs ...kv) Batch {
		return keyedBatch(recordbatch.BuildOptions{Transactional: true, ProducerID: pid, ProducerEpoch: 0, BaseSequence: seq}, 10, recs...)
	}
	h.append(keyedBatch(recordbatch.BuildOptions{}, 1, kv{"a", val("plain")}))
	h.append(txn(1, 0, kv{"a", val("aborted")}, kv{"x", val("aborted")}))
	h.append(txn(2, 0, kv{"b", val("committed")}))
	h.marker(1, 0, false)
	h.marker(2, 0, true)
	h.log.Roll()
	requireUnstable(t, h.log, -1)
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	got := h.readRecords()
	// The aborted records are gone, and they did not supersede "plain".
	if len(got) != 2 || got[0].val != "plain" || got[1].val != "committed" {
		t.Fatalf("records after a pass: %+v", got)
	}
	var markers int
	for _, b := range h.readAll(0) {
		if b.Control() {
			markers++
		}
	}
	// Producer 1's last batch stays, empty (its sequence numbers), and so
	// does its marker.
	if markers != 2 {
		t.Fatalf("%d markers kept, want 2", markers)
	}
	// Once producer 1 has written again and delete.retention.ms has
	// passed, its abort marker goes (nothing of its transaction is
	// left); the commit markers stay: their transactions' records do.
	h.append(txn(1, 2, kv{"z", val("committed")}))
	h.marker(1, 0, true)
	h.clock.advance(time.Hour)
	h.append(keyedBatch(recordbatch.BuildOptions{}, 20, kv{"c", val("1")}))
	h.log.Roll()
	h.compact(CompactOptions{DeleteRetentionMs: 1000})
	var kinds []string
	for _, b := range h.readAll(0) {
		switch {
		case b.Control():
			kinds = append(kinds, fmt.Sprint("marker", b.ProducerID()))
		case b.RecordCount() == 0:
			kinds = append(kinds, fmt.Sprint("empty", b.ProducerID()))
		default:
			kinds = append(kinds, fmt.Sprint("data", b.ProducerID()))
		}
	}
	if want := "data-1 data2 marker2 data1 marker1 data-1"; strings.Join(kinds, " ") != want {
		t.Fatalf("batches %q, want %q", strings.Join(kinds, " "), want)
	}
	requireAborted(t, h.log, 0, h.log.LogEndOffset())
	requireUnstable(t, h.log, -1)
	h.crash()
	requireUnstable(t, h.log, -1)
	if got := h.readRecords(); len(got) != 4 {
		t.Fatalf("after a crash: %+v", got)
	}
}

func TestCompactionKeepsTheLastBatchOfEachProducer(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024})
	idem := func(seq int32, recs ...kv) Batch {
		return keyedBatch(recordbatch.BuildOptions{ProducerID: 7, ProducerEpoch: 0, BaseSequence: seq}, 1, recs...)
	}
	h.append(idem(0, kv{"x", val("1")}))
	h.append(idem(1, kv{"x", val("2")}, kv{"y", val("2")}))
	h.append(keyedBatch(recordbatch.BuildOptions{}, 2, kv{"x", val("3")}, kv{"y", val("3")}))
	h.log.Roll()
	h.compact(CompactOptions{})
	bs := h.readAll(0)
	if len(bs) != 2 || bs[0].ProducerID() != 7 || bs[0].RecordCount() != 0 || bs[0].BaseSequence() != 1 || bs[0].BaseOffset() != 1 || bs[0].LastOffset() != 2 {
		t.Fatalf("batches after a pass: %d, first %+v", len(bs), bs[0])
	}
	// A retry of the producer's last batch is still a duplicate, after a
	// restart too.
	h.crash()
	res, err := h.log.AppendAsLeader(idem(1, kv{"x", val("2")}, kv{"y", val("2")}), 0)
	if err != nil || !res.Duplicate || res.FirstOffset != 1 {
		t.Fatalf("retry of the last batch: %+v, %v", res, err)
	}
}

func TestCompactionStopsAtItsBounds(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024})
	for i := 0; i < 60; i++ {
		h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i*1000), kv{"k", val(fmt.Sprint(i))}))
	}
	segs := h.log.Segments()
	if len(segs) < 4 {
		t.Fatalf("%d segments", len(segs))
	}
	// Nothing at or past the high watermark is cleaned.
	hw := segs[1].NextOffset
	st := h.compact(CompactOptions{HighWatermark: hw})
	if st.CleanedTo != hw {
		t.Fatalf("cleaned to %d, want the high watermark's segment boundary %d", st.CleanedTo, hw)
	}
	got := h.readRecords()
	if got[0].offset != hw-1 || int64(len(got)) != 1+60-hw {
		t.Fatalf("records after a pass to %d: first %+v, %d of them", hw, got[0], len(got))
	}
	// min.compaction.lag.ms keeps the young segments: those with a
	// record after 45 s.
	lagged := h.compact(CompactOptions{Now: time.UnixMilli(60_000), MinCompactionLagMs: 15_000})
	if lagged.CleanedTo <= hw || lagged.CleanedTo > 46 {
		t.Fatalf("with a lag: cleaned to %d", lagged.CleanedTo)
	}
	// The active segment is never cleaned.
	h.compact(CompactOptions{})
	last := h.log.Segments()
	if act := last[len(last)-1]; act.Size == 0 {
		t.Fatal("the active segment was emptied")
	}
}

func TestCompactionSwapSurvivesACrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		skip int // SyncDir calls of the swap let through
	}{
		{"swap file written, old segments in place", 0},
		{"old segments renamed, swap not yet", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ffs := newFaultyHarness(t, Config{SegmentBytes: 1024})
			var all []record
			for i := 0; i < 80; i++ {
				k, v := fmt.Sprintf("k%d", i%7), fmt.Sprint(i)
				res := h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, val(v)}))
				all = append(all, record{offset: res.FirstOffset, key: k, val: v})
			}
			h.log.Roll()
			h.log.Flush()
			h.log.flushes.Wait()
			ffs.Inject(errorfsFault(tc.skip))
			_, err := h.log.Compact(context.Background(), CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()})
			if err == nil {
				t.Fatal("the pass succeeded over a failing directory sync")
			}
			ffs.Clear()
			h.crash()
			names, _ := os.ReadDir(h.dir)
			for _, n := range names {
				if strings.HasSuffix(n.Name(), swapExt) || strings.HasSuffix(n.Name(), cleanedExt) {
					t.Fatalf("%s left after recovery", n.Name())
				}
			}
			// Whatever the pass reached, every key's last record is there,
			// and nothing twice at one offset.
			got := h.readRecords()
			want := lastOfEachKey(all)
			last := map[string]record{}
			prev := int64(-1)
			for _, r := range got {
				if r.offset <= prev {
					t.Fatalf("offset %d after %d", r.offset, prev)
				}
				prev = r.offset
				last[r.key] = r
			}
			for k, w := range want {
				if last[k] != w {
					t.Fatalf("key %s: last %+v, want %+v", k, last[k], w)
				}
			}
			h.compact(CompactOptions{})
			requireRecords(t, h.readRecords(), want)
		})
	}
}

func TestCompactionLeftoversAreRemovedOnOpen(t *testing.T) {
	h := newHarness(t, Config{})
	h.append(keyedBatch(recordbatch.BuildOptions{}, 1, kv{"a", val("1")}))
	h.log.Close()
	stray := filepath.Join(h.dir, segmentName(0, ".log")+cleanedExt)
	if err := os.WriteFile(stray, []byte("half a segment"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.open()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("a .cleaned file survived the open: %v", err)
	}
	if got := h.readRecords(); len(got) != 1 {
		t.Fatalf("records %+v", got)
	}
}

func TestCompactionBesideAppendsReadsAndRetention(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024, FileDeleteDelayMs: 1, RetentionMs: -1})
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []record
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000 && !stop.Load(); i++ {
			k, v := fmt.Sprintf("k%d", i%23), fmt.Sprint(i)
			res, err := h.log.AppendAsLeader(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, val(v)}), 0)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			all = append(all, record{offset: res.FirstOffset, key: k, val: v})
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for !stop.Load() {
			for off := h.log.LogStartOffset(); off < h.log.LogEndOffset(); {
				r, err := h.log.Read(off, 4096, math.MaxInt64, true)
				if err != nil {
					t.Error(err)
					return
				}
				buf, err := r.Bytes()
				r.Release()
				if err != nil {
					t.Error(err)
					return
				}
				if len(buf) == 0 {
					break
				}
				var next int64
				for len(buf) > 0 {
					b, rest, err := recordbatch.Next(buf)
					if err != nil {
						break
					}
					if err := recordbatch.Check(b); err != nil {
						t.Errorf("batch at %d: %v", b.BaseOffset(), err)
						return
					}
					next = b.NextOffset()
					buf = rest
				}
				if next <= off {
					t.Errorf("read at %d went nowhere", off)
					return
				}
				off = next
			}
		}
	}()
	for i := 0; i < 30; i++ {
		if err := h.log.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.log.Compact(context.Background(), CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()}); err != nil && err != ErrCompactionAborted {
			t.Fatal(err)
		}
		if _, err := h.log.ApplyRetention(h.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	h.log.Roll()
	h.compact(CompactOptions{})
	mu.Lock()
	requireRecords(t, h.readRecords(), lastOfEachKey(all))
	mu.Unlock()
}

// errorfsFault fails the directory sync after skip others.
func errorfsFault(skip int) errorfs.Fault {
	return errorfs.Fault{Op: errorfs.OpSyncDir, Skip: skip, Err: syscall.EIO}
}

// A truncation below the cleaner checkpoint lowers it: what is appended
// again there was never cleaned. (The broker never truncates below what
// was cleaned, which stays below the high watermark; here the truncation
// takes the last records of k0-k2 with it, the older ones compacted.)
func TestTruncationLowersTheCleanerCheckpoint(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024})
	for i := 0; i < 60; i++ {
		h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{fmt.Sprintf("k%d", i%3), val(fmt.Sprint(i))}))
	}
	h.log.Roll()
	st := h.compact(CompactOptions{})
	if st.CleanedTo != 60 {
		t.Fatalf("cleaned to %d", st.CleanedTo)
	}
	if err := h.log.TruncateTo(50); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{"again", val(fmt.Sprint(i))}))
	}
	h.log.Roll()
	h.log.Flush()
	h.log.flushes.Wait()
	c := h.log.Cleanable(CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()})
	if c.FirstDirty > 50 {
		t.Fatalf("first dirty %d after a truncation to 50", c.FirstDirty)
	}
	h.restart()
	if c := h.log.Cleanable(CompactOptions{Now: h.clock.Now(), HighWatermark: h.log.LogEndOffset()}); c.FirstDirty > 50 {
		t.Fatalf("first dirty %d after a restart", c.FirstDirty)
	}
	h.compact(CompactOptions{})
	got := h.readRecords()
	if last := got[len(got)-1]; last.key != "again" || last.val != "39" || len(got) != 1 {
		t.Fatalf("records %+v", got)
	}
}

// TestCompactionSurvivesMachineCrashes cuts the power at a random moment
// of a compaction pass (crashfs: what was not fsynced is lost, renames and
// removals whose directory was not fsynced undone) and reopens: every
// key's last record is there, at its offset, and no offset twice.
func TestCompactionSurvivesMachineCrashes(t *testing.T) {
	passed := 0
	for seed := uint64(1); seed <= 40; seed++ {
		passed += compactionCrashOnce(t, seed)
	}
	t.Logf("%d of 40 passes ended before the crash", passed)
}

func compactionCrashOnce(t *testing.T, seed uint64) (passed int) {
	rng := rand.New(rand.NewPCG(seed, 11))
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	cfg := Config{SegmentBytes: int64(300 + rng.IntN(2000))}
	l, err := Open(dir, cfg, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var all []record
	for i := 0; i < 200+rng.IntN(200); i++ {
		k, v := fmt.Sprintf("k%d", rng.IntN(15)), fmt.Sprint(i)
		var value []byte
		if rng.IntN(10) > 0 {
			value = val(v)
		} else {
			v = ""
		}
		res, err := l.AppendAsLeader(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, value}), 0)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, record{offset: res.FirstOffset, key: k, val: v, tomb: value == nil})
	}
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	l.flushes.Wait()
	done := make(chan error, 1)
	go func() {
		_, err := l.Compact(context.Background(), CompactOptions{Now: time.Now(), HighWatermark: l.LogEndOffset(), DeleteRetentionMs: 3600_000})
		done <- err
	}()
	// A pass here takes a few milliseconds (tens under the race
	// detector, more over crashfs): the crash falls anywhere in it, or
	// after it.
	time.Sleep(time.Duration(rng.IntN(100000)) * time.Microsecond)
	if err := cfs.Crash(rng); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		passed++
	} else if seed < 4 {
		t.Logf("seed %d: %v", seed, err)
	}
	l.Close() // fails: the machine is gone
	l, err = Open(dir, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("seed %d: open after the crash: %v", seed, err)
	}
	defer l.Close()
	h := &harness{t: t, log: l}
	last := map[string]record{}
	prev := int64(-1)
	for _, r := range h.readRecords() {
		if r.offset <= prev {
			t.Fatalf("seed %d: offset %d read after %d", seed, r.offset, prev)
		}
		prev = r.offset
		last[r.key] = r
	}
	for k, w := range lastOfEachKey(all) {
		if last[k] != w {
			t.Fatalf("seed %d: key %s reads %+v last, want %+v", seed, k, last[k], w)
		}
	}
	return passed
}

// A pass maps at most MaxKeys keys (whole segments, at least one): it
// cleans up to what it mapped, and the passes after it go on from there.
func TestCompactionPassesBoundedByTheirKeyMap(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 600})
	var all []record
	for i := 0; i < 400; i++ {
		k, v := fmt.Sprintf("k%03d", i%97), fmt.Sprint(i)
		res := h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{k, val(v)}))
		all = append(all, record{offset: res.FirstOffset, key: k, val: v})
	}
	h.log.Roll()
	end := h.log.LogEndOffset()
	var passes int
	for cleaned := int64(0); cleaned < end; passes++ {
		st := h.compact(CompactOptions{MaxKeys: 20})
		if st.CleanedTo <= cleaned || st.Keys > 20+10 {
			t.Fatalf("pass %d: %+v after cleaning to %d", passes, st, cleaned)
		}
		cleaned = st.CleanedTo
	}
	if passes < 3 {
		t.Fatalf("%d passes with a 20-key map over 97 keys", passes)
	}
	requireRecords(t, h.readRecords(), lastOfEachKey(all))
}
