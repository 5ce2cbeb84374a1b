package tiering

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// ckv is one record of a keyed batch: a nil value is a tombstone.
type ckv struct {
	key string
	val []byte
}

// crec is one record, as written or read back.
type crec struct {
	offset int64
	key    string
	val    string
	tomb   bool
}

// keyedBatch builds a non-idempotent batch of keyed records stamped ts.
func keyedBatch(t testing.TB, ts int64, recs ...ckv) localseg.Batch {
	t.Helper()
	rs := make([]recordbatch.Record, len(recs))
	for i, r := range recs {
		rs[i] = recordbatch.Record{Key: []byte(r.key), Value: r.val}
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: ts}, rs)
	if err != nil {
		t.Fatal(err)
	}
	return localseg.Batch(b)
}

// compactEnv is a local log of keyed records archived into a bucket, and
// what a remote compaction pass over it needs.
type compactEnv struct {
	t       *testing.T
	log     *localseg.Log
	b       objectstore.Bucket // what the archiver, the passes and the reader use
	a       *Archiver
	ms      *ManifestStore
	l       Layout
	r       *Reader
	scratch string
	written []crec
	ts      int64
}

// newCompactEnv opens a local log of segments of segmentBytes, archived
// into b (a memory bucket when nil).
func newCompactEnv(t *testing.T, segmentBytes int64, b objectstore.Bucket) *compactEnv {
	t.Helper()
	if b == nil {
		b = &faultyBucket{Bucket: objectstore.NewMem()}
	}
	log, err := localseg.Open(t.TempDir(), localseg.Config{SegmentBytes: segmentBytes, IndexIntervalBytes: 1, RetentionMs: -1, FileDeleteDelayMs: 1},
		localseg.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	a, ms := newTestArchiver(t, b, log)
	return &compactEnv{t: t, log: log, b: b, a: a, ms: ms, l: a.cfg.Layout, r: newTestReader(t, b, 4096), scratch: t.TempDir(),
		ts: 1_700_000_000_000}
}

// append appends one batch of recs and notes them as written.
func (e *compactEnv) append(recs ...ckv) {
	e.t.Helper()
	e.ts++
	res, err := e.log.AppendAsLeader(keyedBatch(e.t, e.ts, recs...), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	for i, r := range recs {
		e.written = append(e.written, crec{offset: res.FirstOffset + int64(i), key: r.key, val: string(r.val), tomb: r.val == nil})
	}
}

// upload seals the active segment and uploads every sealed segment.
func (e *compactEnv) upload() int {
	e.t.Helper()
	if err := e.log.Roll(); err != nil {
		e.t.Fatal(err)
	}
	return uploadAll(e.t, e.a, 0, e.log.LogEndOffset())
}

// config is a pass as leader of epoch 0 at now, in groups of segmentBytes.
func (e *compactEnv) config(now time.Time, segmentBytes int64) CompactConfig {
	return CompactConfig{
		Bucket: e.b, Layout: e.l, Partition: testPartition, Store: e.ms, Reader: e.r, Epoch: 0,
		Options:          localseg.CompactOptions{Now: now, HighWatermark: math.MaxInt64, DeleteRetentionMs: 1000},
		SegmentBytes:     segmentBytes,
		IndexInterval:    4096,
		LastBatches:      e.log.LastBatches(),
		LocalAbortedTxns: e.log.AbortedTxns,
		ScratchDir:       e.scratch,
		CallTimeout:      10 * time.Second,
	}
}

// compact runs a pass that must succeed, and checks it left no scratch
// file.
func (e *compactEnv) compact(cfg CompactConfig) CompactResult {
	e.t.Helper()
	res, err := CompactRemote(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("compact: %v", err)
	}
	e.requireNoScratch()
	return res
}

func (e *compactEnv) requireNoScratch() {
	e.t.Helper()
	if ents, err := os.ReadDir(e.scratch); err != nil || len(ents) != 0 {
		e.t.Fatalf("%d scratch files left (%v)", len(ents), err)
	}
}

// note is the partition's cleaner note.
func (e *compactEnv) note() *CleanerNote {
	e.t.Helper()
	n, err := ReadCleanerNote(context.Background(), e.b, e.l, testPartition)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// cleanable is RemoteCleanable of cfg.
func (e *compactEnv) cleanable(cfg CompactConfig) localseg.Cleanable {
	e.t.Helper()
	c, err := RemoteCleanable(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// stored is the manifest the bucket holds, read afresh.
func (e *compactEnv) stored() *Manifest {
	e.t.Helper()
	m, err := LoadManifest(context.Background(), e.b, e.l, testPartition)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// readRemote reads every record of m from its start through r (a new
// reader when nil), checking that batches come in ascending offsets and
// that each record is the one written at its offset, unchanged.
func (e *compactEnv) readRemote(r *Reader, m *Manifest) []crec {
	e.t.Helper()
	if r == nil {
		r = newTestReader(e.t, e.b, 4096)
	}
	byOffset := make(map[int64]crec, len(e.written))
	for _, w := range e.written {
		byOffset[w.offset] = w
	}
	var out []crec
	last := int64(-1)
	ctx := context.Background()
	err := ReadBatches(ctx, r, testPartition, m, 0, func(b recordbatch.Batch) error {
		if b.BaseOffset() <= last {
			return fmt.Errorf("batch at %d after one ending at %d", b.BaseOffset(), last)
		}
		last = b.LastOffset()
		if b.Control() {
			return nil
		}
		return recordbatch.Records(ctx, b, recordbatch.ValidateOptions{}, func(rec recordbatch.Record) error {
			got := crec{offset: rec.Offset, key: string(rec.Key), val: string(rec.Value), tomb: rec.Value == nil}
			if w, ok := byOffset[rec.Offset]; !ok || w != got {
				return fmt.Errorf("read %+v, written %+v", got, w)
			}
			out = append(out, got)
			return nil
		})
	})
	if err != nil {
		e.t.Fatalf("reading the remote log: %v", err)
	}
	return out
}

// lastOfEachKey is what a whole compaction leaves of recs: the last record
// of each key (tombstones included), at its offset.
func lastOfEachKey(recs []crec) map[string]crec {
	m := map[string]crec{}
	for _, r := range recs {
		m[r.key] = r
	}
	return m
}

// requireCompacted fails t unless got is want's records, each once, in
// ascending offsets.
func requireCompacted(t *testing.T, got []crec, want map[string]crec) {
	t.Helper()
	seen := map[string]bool{}
	for i, r := range got {
		if w, ok := want[r.key]; !ok || w != r {
			t.Fatalf("record %+v left, want %+v", r, w)
		}
		if seen[r.key] {
			t.Fatalf("key %q twice", r.key)
		}
		seen[r.key] = true
		if i > 0 && r.offset <= got[i-1].offset {
			t.Fatalf("offset %d after %d", r.offset, got[i-1].offset)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d keys left, want %d", len(seen), len(want))
	}
}

// requireLastOfEachKeyKept fails t unless every key's last record is in
// got (a log compacted in part: older ones may be left too).
func requireLastOfEachKeyKept(t *testing.T, got []crec, want map[string]crec) {
	t.Helper()
	have := map[crec]bool{}
	for _, r := range got {
		have[r] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Fatalf("the last record of %q, %+v, is gone", w.key, w)
		}
	}
}

// namedKeys are the keys of the objects m names: the segments and
// companions of its entries, spilled ones included, and its spilled parts.
func namedKeys(t *testing.T, b objectstore.Bucket, l Layout, m *Manifest) map[string]bool {
	t.Helper()
	named := map[string]bool{}
	for _, s := range m.Spills {
		named[l.SpillKey(testPartition, s.BaseOffset, s.ID)] = true
	}
	err := WalkSegments(context.Background(), BucketSpills{b, l}, testPartition, m, -1, nil, func(s Segment) bool {
		named[l.SegmentKey(testPartition, s.BaseOffset, s.ID)] = true
		named[l.CompanionKey(testPartition, s.BaseOffset, s.ID)] = true
		return true
	})
	if err != nil {
		t.Fatalf("walking the manifest: %v", err)
	}
	return named
}

// requireBucketIsTheManifest fails t unless the partition's segment,
// companion and spill objects are exactly those m names.
func requireBucketIsTheManifest(t *testing.T, b objectstore.Bucket, l Layout, m *Manifest) {
	t.Helper()
	named := namedKeys(t, b, l, m)
	listing := listAttrs(t, b, l.PartitionPrefix(testPartition))
	have := map[string]bool{}
	for _, a := range listing {
		have[a.Key] = true
		if strings.HasSuffix(a.Key, ".log") || strings.HasSuffix(a.Key, ".indexes") || strings.HasSuffix(a.Key, ".manifest") {
			if !named[a.Key] {
				t.Errorf("%s is not named by the manifest", a.Key)
			}
		}
	}
	for k := range named {
		if !have[k] {
			t.Errorf("the manifest names %s, missing", k)
		}
	}
	parts := make([]*Manifest, 0, len(m.Spills))
	for _, s := range m.Spills {
		part, err := (BucketSpills{b, l}).LoadSpill(context.Background(), testPartition, s)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, part)
	}
	if o := PlanOrphans(m, parts, listing, time.Now().Add(time.Hour), 0); len(o) != 0 {
		t.Errorf("orphans: %v", o)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// walked is every entry of m, spilled ones included, in order.
func walked(t *testing.T, l SpillLoader, m *Manifest) []Segment {
	t.Helper()
	var out []Segment
	if err := WalkSegments(context.Background(), l, testPartition, m, -1, nil, func(s Segment) bool {
		out = append(out, s)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// requireContiguous fails t unless segs cover [from, to) without a gap or
// an overlap.
func requireContiguous(t *testing.T, segs []Segment, from, to int64) {
	t.Helper()
	next := from
	for _, s := range segs {
		if s.BaseOffset != next || s.NextOffset <= s.BaseOffset {
			t.Fatalf("entry [%d, %d) where %d was expected", s.BaseOffset, s.NextOffset, next)
		}
		next = s.NextOffset
	}
	if next != to {
		t.Fatalf("entries end at %d, want %d", next, to)
	}
}

func requireExist(t *testing.T, b objectstore.Bucket, keys []string, exist bool) {
	t.Helper()
	for _, k := range keys {
		_, err := b.Head(context.Background(), k)
		switch {
		case exist && err != nil:
			t.Fatalf("%s: %v", k, err)
		case !exist && !errors.Is(err, objectstore.ErrNotFound):
			t.Fatalf("%s still there (%v)", k, err)
		}
	}
}

// keyedWorkload appends n batches over keys distinct keys: one record
// each, every fourth batch a second one of another key.
func keyedWorkload(e *compactEnv, n, keys int, pad int) {
	e.t.Helper()
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("v%04d-%s", i, strings.Repeat("x", pad))
		recs := []ckv{{fmt.Sprintf("k%02d", i%keys), []byte(v)}}
		if i%4 == 0 {
			recs = append(recs, ckv{fmt.Sprintf("k%02d", (i*7+3)%keys), []byte(v + "b")})
		}
		e.append(recs...)
	}
}

func TestCompactRemoteKeepsLastOfEachKey(t *testing.T) {
	ctx := context.Background()
	e := newCompactEnv(t, 1024, nil)
	keyedWorkload(e, 300, 17, 20)
	if n := e.upload(); n < 10 {
		t.Fatalf("uploaded %d segments", n)
	}
	m0 := e.ms.Current()
	if m0.End() != e.log.LogEndOffset() || len(m0.Spills) != 0 {
		t.Fatalf("manifest [%d, %d), %d parts; log end %d", m0.Start(), m0.End(), len(m0.Spills), e.log.LogEndOffset())
	}
	now := time.Now()
	cfg := e.config(now, 4096)
	c := e.cleanable(cfg)
	if c.FirstDirty != 0 || c.End != m0.End() || c.CleanBytes != 0 || c.DirtyBytes != m0.Bytes() || c.DirtyTimestamp != m0.Segments[0].MaxTimestamp || c.HorizonDue {
		t.Fatalf("cleanable before the first pass: %+v", c)
	}

	res := e.compact(cfg)
	total := int64(len(e.written))
	if res.Uploaded == 0 || res.Uploaded != res.Groups || res.Segments > len(m0.Segments) || res.Segments < len(m0.Segments)-1 ||
		res.Records != total || res.RemovedRecords != total-17 || res.Keys != 17 || res.CleanedTo != m0.End() ||
		len(res.Replaced) != 2*res.Segments || res.WrittenBytes >= res.ReadBytes {
		t.Fatalf("result %+v of %d segments, %d records", res.CompactStats, len(m0.Segments), total)
	}
	m1 := e.ms.Current()
	if s := e.stored(); s.CommitID != m1.CommitID {
		t.Fatal("the store's manifest is not the bucket's")
	}
	if m1.Start() != m0.Start() || m1.End() != m0.End() || m1.LogStartOffset != m0.LogStartOffset || m1.Bytes() >= m0.Bytes() ||
		m1.SegmentCount() >= m0.SegmentCount() {
		t.Fatalf("manifest [%d, %d) of %d bytes in %d segments, was [%d, %d) of %d in %d",
			m1.Start(), m1.End(), m1.Bytes(), m1.SegmentCount(), m0.Start(), m0.End(), m0.Bytes(), m0.SegmentCount())
	}
	requireContiguous(t, m1.Segments, m0.Segments[0].BaseOffset, m0.End())
	for _, s := range m1.Segments {
		if s.UploadEpoch != 0 || len(s.Epochs) == 0 || s.Size <= 0 || s.CompanionSize <= 0 {
			t.Fatalf("new entry %+v", s)
		}
	}
	want := lastOfEachKey(e.written)
	requireCompacted(t, e.readRemote(e.r, m1), want)

	// The replaced objects stay until DeleteReplaced: a read begun on the
	// old manifest finishes.
	requireExist(t, e.b, res.Replaced, true)
	if got := e.readRemote(nil, m0); len(got) != len(e.written) {
		t.Fatalf("read %d records of the old manifest, %d written", len(got), len(e.written))
	}
	for _, k := range res.Replaced {
		id, ok := parseObjectID(k)
		if !ok {
			t.Fatalf("replaced %s", k)
		}
		for _, s := range m1.Segments {
			if s.ID == id {
				t.Fatalf("replaced %s is named by the new manifest", k)
			}
		}
	}
	if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
		t.Fatal(err)
	}
	requireExist(t, e.b, res.Replaced, false)
	requireBucketIsTheManifest(t, e.b, e.l, m1)
	requireCompacted(t, e.readRemote(nil, m1), want)

	n := e.note()
	if n == nil || n.FirstDirty != m1.End() || n.LeaderEpoch != 0 || n.Horizon != -1 || !n.CleanedAt.Equal(now) {
		t.Fatalf("cleaner note %+v, want first dirty %d", n, m1.End())
	}
	c = e.cleanable(cfg)
	if c.DirtyBytes != 0 || c.FirstDirty != m1.End() || c.End != m1.End() || c.CleanBytes != m1.Bytes() || c.HorizonDue || c.DirtyRatio() != 0 {
		t.Fatalf("cleanable after the pass: %+v", c)
	}

	// Right after, a pass has nothing to do.
	res2 := e.compact(cfg)
	if res2.Uploaded != 0 || len(res2.Replaced) != 0 || res2.Groups != 0 || e.ms.Current().CommitID != m1.CommitID {
		t.Fatalf("a second pass: %+v", res2)
	}

	// New uploads are dirty; the next pass cleans them with the rest.
	for i := 0; i < 60; i++ {
		e.append(ckv{fmt.Sprintf("k%02d", i%5), []byte(fmt.Sprintf("w%03d", i))})
	}
	e.upload()
	m2 := e.ms.Current()
	c = e.cleanable(cfg)
	if c.FirstDirty != m1.End() || c.End != m2.End() || c.CleanBytes != m1.Bytes() || c.DirtyBytes != m2.Bytes()-m1.Bytes() {
		t.Fatalf("cleanable with new uploads: %+v", c)
	}
	res3 := e.compact(cfg)
	if res3.Uploaded == 0 || res3.CleanedTo != m2.End() || res3.Keys != 5 {
		t.Fatalf("third pass %+v", res3.CompactStats)
	}
	m3 := e.ms.Current()
	if err := DeleteReplaced(ctx, e.b, res3.Replaced, nil); err != nil {
		t.Fatal(err)
	}
	requireBucketIsTheManifest(t, e.b, e.l, m3)
	requireCompacted(t, e.readRemote(nil, m3), lastOfEachKey(e.written))
	if n := e.note(); n == nil || n.FirstDirty != m3.End() {
		t.Fatalf("cleaner note %+v after the third pass", n)
	}
}

// setSmallSpills makes manifests spill at 4 KiB for the test.
func setSmallSpills(t *testing.T) {
	th, keep := spillThreshold, spillKeep
	t.Cleanup(func() { spillThreshold, spillKeep = th, keep })
	spillThreshold, spillKeep = 4<<10, 1<<10
}

func TestCompactRemoteAcrossSpilledParts(t *testing.T) {
	for _, tc := range []struct {
		name         string
		segmentBytes int64
	}{
		{"groups of a few segments", 600},
		{"one group", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setSmallSpills(t)
			ctx := context.Background()
			e := newCompactEnv(t, 300, nil)
			for i := 0; i < 200; i++ {
				e.append(ckv{fmt.Sprintf("k%02d", i%13), []byte(fmt.Sprintf("v%03d-%s", i, strings.Repeat("y", 100)))})
			}
			if n := e.upload(); n < 150 {
				t.Fatalf("uploaded %d segments", n)
			}
			m0 := e.ms.Current()
			if len(m0.Spills) < 3 {
				t.Fatalf("%d spilled parts", len(m0.Spills))
			}
			old := walked(t, BucketSpills{e.b, e.l}, m0)
			oldIDs := map[[16]byte]bool{}
			for _, s := range old {
				oldIDs[s.ID] = true
			}

			res := e.compact(e.config(time.Now(), tc.segmentBytes))
			m1 := e.ms.Current()
			if res.Uploaded == 0 || res.CleanedTo != m0.End() || res.RemovedRecords != int64(len(e.written))-13 {
				t.Fatalf("result %+v", res.CompactStats)
			}
			if s := e.stored(); s.CommitID != m1.CommitID {
				t.Fatal("the store's manifest is not the bucket's")
			}
			// Every part the manifest names reads from the bucket and
			// matches its reference; the entries are the new ones in
			// place of the groups.
			for _, s := range m1.Spills {
				part, err := readSpill(ctx, e.b, e.l.SpillKey(testPartition, s.BaseOffset, s.ID), s)
				if err != nil {
					t.Fatalf("part [%d, %d): %v", s.BaseOffset, s.NextOffset, err)
				}
				if err := part.check(true); err != nil {
					t.Fatal(err)
				}
			}
			segs := walked(t, BucketSpills{e.b, e.l}, m1)
			if len(segs) != m1.SegmentCount() {
				t.Fatalf("walked %d entries, the manifest counts %d", len(segs), m1.SegmentCount())
			}
			requireContiguous(t, segs, m0.Start(), m0.End())
			fresh := 0
			for _, s := range segs {
				if !oldIDs[s.ID] {
					fresh++
				}
			}
			if fresh != res.Uploaded || len(segs) != len(old)-res.Segments+res.Groups {
				t.Fatalf("%d new entries of %d, %d uploaded; %d segments into %d groups of %d", fresh, len(segs), res.Uploaded, res.Segments, res.Groups, len(old))
			}
			if tc.segmentBytes > 1<<10 && (len(segs) != 1 || len(m1.Spills) != 0) {
				t.Fatalf("one group made %d entries in %d parts", len(segs), len(m1.Spills))
			}
			if tc.segmentBytes < 1<<10 && len(m1.Spills) == 0 {
				t.Fatal("no spilled part left")
			}

			// The old parts are replaced, or still named as they were.
			replaced := map[string]bool{}
			for _, k := range res.Replaced {
				replaced[k] = true
			}
			named := map[string]bool{}
			for _, s := range m1.Spills {
				named[e.l.SpillKey(testPartition, s.BaseOffset, s.ID)] = true
			}
			gone := 0
			for _, s := range m0.Spills {
				k := e.l.SpillKey(testPartition, s.BaseOffset, s.ID)
				switch {
				case replaced[k] && named[k]:
					t.Fatalf("part %s replaced and still named", k)
				case replaced[k]:
					gone++
				case !named[k]:
					t.Fatalf("old part %s neither replaced nor named", k)
				}
			}
			if gone == 0 {
				t.Fatal("no old part replaced")
			}
			requireCompacted(t, e.readRemote(e.r, m1), lastOfEachKey(e.written))
			if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
				t.Fatal(err)
			}
			requireBucketIsTheManifest(t, e.b, e.l, m1)
			requireCompacted(t, e.readRemote(nil, e.stored()), lastOfEachKey(e.written))
			if c := e.cleanable(e.config(time.Now(), tc.segmentBytes)); c.DirtyBytes != 0 || c.FirstDirty != m1.End() {
				t.Fatalf("cleanable after the pass: %+v", c)
			}
		})
	}
}

// synthRun is a new entry in place of the synthetic entries [from, to].
func synthRun(from, to int) Segment {
	s := Segment{BaseOffset: synthSegment(from).BaseOffset, NextOffset: synthSegment(to).NextOffset, Size: 7, CompanionSize: 5, MaxTimestamp: -1,
		Epochs: synthSegment(from).Epochs}
	binary.BigEndian.PutUint64(s.ID[8:], uint64(from)<<32|uint64(to)|1<<63)
	return s
}

// synthSpilled is a manifest of synthetic entries 0-9, 10-19 and 20-29
// in three spilled parts (pending: read through BucketSpills{}), and
// 30-34 its own.
func synthSpilled(t *testing.T) *Manifest {
	t.Helper()
	var segs []Segment
	for i := 0; i < 35; i++ {
		segs = append(segs, synthSegment(i))
	}
	m := &Manifest{Segments: segs[30:]}
	for _, r := range [][2]int{{0, 10}, {10, 20}, {20, 30}} {
		s, err := newSpill(append([]Segment(nil), segs[r[0]:r[1]]...), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		m.Spills = append(m.Spills, s)
	}
	return m
}

func TestReplaceRunWithinAndAcrossSpilledParts(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		from, to   int   // old entries, inclusive
		wantParts  []int // the entries of each part after
		wantDrop   []int // parts dropped (indexes in the old manifest)
		wantOwnLen int
	}{
		{"inside a part", 2, 4, []int{8, 10, 10}, []int{0}, 5},
		{"at a part's end", 7, 9, []int{8, 10, 10}, []int{0}, 5},
		{"at a part's start", 10, 12, []int{10, 8, 10}, []int{1}, 5},
		{"across two parts", 8, 12, []int{16, 10}, []int{0, 1}, 5},
		{"a part whole", 10, 19, []int{10, 1, 10}, []int{1}, 5},
		// A run that ends in the last part, or reaches the manifest's own
		// entries, takes the parts from the one it starts in back among
		// them (the commit spills them again).
		{"inside the last part", 22, 24, []int{10, 10}, []int{2}, 8 + 5},
		{"into the manifest's own", 28, 31, []int{10, 10}, []int{2}, 8 + 1 + 3},
		{"the last part whole", 20, 29, []int{10, 10}, []int{2}, 1 + 5},
		{"the manifest's own", 31, 33, []int{10, 10, 10}, nil, 3},
		{"everything", 0, 34, nil, []int{0, 1, 2}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := synthSpilled(t)
			before := m.Clone()
			var old []Segment
			for i := tc.from; i <= tc.to; i++ {
				old = append(old, synthSegment(i))
			}
			ns := synthRun(tc.from, tc.to)
			dropped, err := replaceRun(ctx, BucketSpills{}, testPartition, m, old, ns, 3, 1234)
			if err != nil {
				t.Fatal(err)
			}
			if len(dropped) != len(tc.wantDrop) {
				t.Fatalf("dropped %d parts, want %v", len(dropped), tc.wantDrop)
			}
			for i, d := range tc.wantDrop {
				if dropped[i].ID != before.Spills[d].ID {
					t.Fatalf("dropped %+v, want part %d", dropped[i], d)
				}
			}
			if len(m.Spills) != len(tc.wantParts) || len(m.Segments) != tc.wantOwnLen {
				t.Fatalf("%d parts, %d own entries; want %v, %d", len(m.Spills), len(m.Segments), tc.wantParts, tc.wantOwnLen)
			}
			for i, s := range m.Spills {
				if int(s.Count) != tc.wantParts[i] {
					t.Fatalf("part %d holds %d entries, want %d", i, s.Count, tc.wantParts[i])
				}
				part, err := (BucketSpills{}).LoadSpill(ctx, testPartition, s)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.matches(part); err != nil {
					t.Fatal(err)
				}
				if err := part.check(true); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.check(false); err != nil {
				t.Fatal(err)
			}
			var want []Segment
			for i := 0; i < 35; i++ {
				switch {
				case i == tc.from:
					want = append(want, ns)
				case i < tc.from || i > tc.to:
					want = append(want, synthSegment(i))
				}
			}
			if got := walked(t, BucketSpills{}, m); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("entries\n%v\nwant\n%v", got, want)
			}
			// The manifest it started from is unchanged: a commit works
			// on a copy.
			if fmt.Sprint(walked(t, BucketSpills{}, before)) != fmt.Sprint(walked(t, BucketSpills{}, synthSpilled(t))) {
				t.Fatal("the manifest the run was replaced in changed")
			}
		})
	}
}

func TestReplaceRunRefusesEntriesNoLongerThere(t *testing.T) {
	ctx := context.Background()
	run := func(from, to int) []Segment {
		var old []Segment
		for i := from; i <= to; i++ {
			old = append(old, synthSegment(i))
		}
		return old
	}
	for _, tc := range []struct {
		name   string
		old    []Segment
		mutate func(m *Manifest)
	}{
		{"the first entry dropped by retention", run(30, 32), func(m *Manifest) {
			m.Spills = nil
			m.Segments = m.Segments[1:]
			m.LogStartOffset = 310
		}},
		{"the first part dropped by retention", run(0, 3), func(m *Manifest) {
			m.Spills = m.Spills[1:]
			m.LogStartOffset = 100
		}},
		{"an entry replaced", run(31, 33), func(m *Manifest) {
			m.Segments[2] = synthRun(32, 32)
		}},
		{"an entry's range changed", run(31, 33), func(m *Manifest) {
			m.Segments[2].NextOffset--
			m.Segments[3].BaseOffset--
		}},
		{"past the end", append(run(33, 34), synthSegment(35)), func(*Manifest) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := synthSpilled(t)
			tc.mutate(m)
			if _, err := replaceRun(ctx, BucketSpills{}, testPartition, m, tc.old, synthRun(0, 0), 0, 0); !errors.Is(err, ErrCompactionRaced) {
				t.Fatalf("replaceRun: %v", err)
			}
		})
	}
}

func TestCompactRemoteRacesRetention(t *testing.T) {
	ctx := context.Background()
	mem := objectstore.NewMem()
	fb := &faultyBucket{Bucket: mem}
	e := newCompactEnv(t, 1024, fb)
	keyedWorkload(e, 200, 11, 20)
	e.upload()
	m0 := e.ms.Current()
	objects := len(listKeys(t, mem, ".log"))
	key := e.l.ManifestKey(testPartition)

	// Between the pass's uploads and its commit, remote retention drops
	// the first segment (a store of its own: the pass holds its commit).
	var retained *Manifest
	var once sync.Once
	uploads := 0
	fb.putGate = func(k string) {
		if strings.HasSuffix(k, ".log") {
			uploads++
		}
		if k != key {
			return
		}
		once.Do(func() {
			rs := NewManifestStore(mem, key, nil)
			cur, err := rs.Load(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if got := len(listKeys(t, mem, ".log")); got != objects+uploads || uploads == 0 {
				t.Errorf("%d segment objects at the commit, %d before the pass, %d uploads", got, objects, uploads)
			}
			pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: cur.Bytes() - cur.Segments[0].Size}
			retained, err = ApplyRetention(ctx, mem, e.l, testPartition, rs, BucketSpills{mem, e.l}, 0, pol, time.Now(), 0, nil)
			if err != nil || retained == nil || len(retained.Segments) != len(cur.Segments)-1 {
				t.Errorf("retention: %v, %+v", err, retained)
			}
		})
	}
	cfg := e.config(time.Now(), 4096)
	res, err := CompactRemote(ctx, cfg)
	fb.putGate = nil
	if !errors.Is(err, ErrCompactionRaced) {
		t.Fatalf("compact: %+v, %v", res, err)
	}
	if t.Failed() {
		t.FailNow()
	}
	e.requireNoScratch()
	stored := e.stored()
	if retained == nil || stored.CommitID != retained.CommitID || e.ms.Current().CommitID != retained.CommitID {
		t.Fatal("the stored manifest is not retention's")
	}
	if stored.LogStartOffset != m0.Segments[0].NextOffset || len(stored.Segments) != len(m0.Segments)-1 {
		t.Fatalf("stored manifest from %d with %d entries", stored.LogStartOffset, len(stored.Segments))
	}
	// The pass's uploads are gone: every object left is named.
	requireBucketIsTheManifest(t, mem, e.l, stored)
	if n := e.note(); n != nil {
		t.Fatalf("a raced pass wrote the cleaner note %+v", n)
	}
	// Nothing is lost: the next pass starts again, on retention's
	// manifest.
	res = e.compact(cfg)
	if res.Uploaded == 0 || res.CleanedTo != m0.End() {
		t.Fatalf("the next pass: %+v", res.CompactStats)
	}
	m := e.ms.Current()
	if m.LogStartOffset != stored.LogStartOffset || m.Start() != stored.LogStartOffset {
		t.Fatalf("log start %d, start %d after the pass", m.LogStartOffset, m.Start())
	}
	if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
		t.Fatal(err)
	}
	requireBucketIsTheManifest(t, mem, e.l, m)
	var left []crec
	for _, w := range e.written {
		if w.offset >= m.LogStartOffset {
			left = append(left, w)
		}
	}
	requireCompacted(t, e.readRemote(nil, m), lastOfEachKey(left))
}

func TestCompactRemoteFenced(t *testing.T) {
	for _, when := range []string{"before the pass", "between its uploads and its commit"} {
		t.Run(when, func(t *testing.T) {
			ctx := context.Background()
			mem := objectstore.NewMem()
			fb := &faultyBucket{Bucket: mem}
			e := newCompactEnv(t, 1024, fb)
			keyedWorkload(e, 200, 11, 20)
			e.upload()
			m0 := e.ms.Current()
			key := e.l.ManifestKey(testPartition)
			fence := func() {
				nw := NewManifestStore(mem, key, nil)
				if _, err := nw.Load(ctx); err != nil {
					t.Error(err)
					return
				}
				if _, err := nw.Fence(ctx, 1); err != nil {
					t.Error(err)
				}
			}
			if when == "before the pass" {
				fence()
			} else {
				var once sync.Once
				fb.putGate = func(k string) {
					if k == key {
						once.Do(fence)
					}
				}
			}
			_, err := CompactRemote(ctx, e.config(time.Now(), 4096))
			fb.putGate = nil
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("compact: %v", err)
			}
			e.requireNoScratch()
			stored := e.stored()
			if stored.LeaderEpoch != 1 || e.ms.Current().LeaderEpoch != 1 || len(stored.Segments) != len(m0.Segments) {
				t.Fatalf("stored manifest at epoch %d with %d entries", stored.LeaderEpoch, len(stored.Segments))
			}
			// The uploads are deleted; the old segments untouched.
			requireBucketIsTheManifest(t, mem, e.l, stored)
			if n := e.note(); n != nil {
				t.Fatalf("a fenced pass wrote the cleaner note %+v", n)
			}
			got := e.readRemote(nil, stored)
			if len(got) != len(e.written) {
				t.Fatalf("read %d records, %d written", len(got), len(e.written))
			}
		})
	}
}

// A pass whose commit took effect but whose response was lost, and which
// then reads back a newer leader's manifest built on its own (so is
// fenced), must keep the objects that manifest names: its new segments.
// The archiver does (deleteUnnamed, and the regression test
// TestAFencedCommitThatLandedKeepsTheObjectsTheNewerManifestNames);
// CompactRemote deletes every upload on ErrFenced.
func TestCompactRemoteFencedAfterItsCommitLandedKeepsTheNamedObjects(t *testing.T) {
	ctx := context.Background()
	mem := objectstore.NewMem()
	fb := faulty.New(mem)
	e := newCompactEnv(t, 1024, fb)
	keyedWorkload(e, 200, 11, 20)
	e.upload()
	key := e.l.ManifestKey(testPartition)
	lost := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true, Meanwhile: newerLeaderCommits(t, mem, key, 1)})
	_, err := CompactRemote(ctx, e.config(time.Now(), 4096))
	if !errors.Is(err, ErrFenced) || lost.Fired() != 1 {
		t.Fatalf("compact: %v (%d lost)", err, lost.Fired())
	}
	m := requireNamedObjectsExist(t, mem, e.l, key)
	if m.LeaderEpoch != 1 {
		t.Fatalf("stored manifest at epoch %d", m.LeaderEpoch)
	}
	requireCompacted(t, e.readRemote(nil, m), lastOfEachKey(e.written))
}

func TestCompactRemoteMaxKeys(t *testing.T) {
	ctx := context.Background()
	e := newCompactEnv(t, 1024, nil)
	keyedWorkload(e, 400, 40, 20)
	if n := e.upload(); n < 10 {
		t.Fatalf("uploaded %d segments", n)
	}
	end := e.ms.Current().End()
	want := lastOfEachKey(e.written)
	cfg := e.config(time.Now(), 4096)
	cfg.Options.MaxKeys = 15
	passes := 0
	prev := int64(0)
	for {
		res := e.compact(cfg)
		passes++
		m := e.ms.Current()
		n := e.note()
		if n == nil || n.FirstDirty != res.CleanedTo || res.CleanedTo <= prev {
			t.Fatalf("pass %d: cleaned to %d after %d, note %+v", passes, res.CleanedTo, prev, n)
		}
		prev = res.CleanedTo
		if res.Keys < cfg.Options.MaxKeys && res.CleanedTo < end {
			t.Fatalf("pass %d stopped at %d with %d keys mapped", passes, res.CleanedTo, res.Keys)
		}
		if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
			t.Fatal(err)
		}
		requireBucketIsTheManifest(t, e.b, e.l, m)
		got := e.readRemote(e.r, m)
		requireLastOfEachKeyKept(t, got, want)
		c := e.cleanable(cfg)
		if c.FirstDirty != res.CleanedTo || c.End != end {
			t.Fatalf("pass %d: cleanable %+v", passes, c)
		}
		if res.CleanedTo == end {
			if c.DirtyBytes != 0 {
				t.Fatalf("cleanable at the end: %+v", c)
			}
			requireCompacted(t, got, want)
			break
		}
		// Stopped early: the rest is dirty.
		if c.DirtyBytes == 0 || c.CleanBytes == 0 {
			t.Fatalf("pass %d: cleanable %+v", passes, c)
		}
		if passes > 50 {
			t.Fatal("no end")
		}
	}
	if passes < 3 {
		t.Fatalf("%d passes", passes)
	}
	if res := e.compact(cfg); res.Uploaded != 0 {
		t.Fatalf("a pass after the end: %+v", res)
	}
}

func TestCompactRemoteTombstoneHorizon(t *testing.T) {
	ctx := context.Background()
	e := newCompactEnv(t, 512, nil)
	for i := 0; i < 60; i++ {
		e.append(ckv{fmt.Sprintf("k%d", i%6), []byte(fmt.Sprintf("v%03d", i))})
	}
	e.append(ckv{"k1", nil})
	e.append(ckv{"k4", nil}, ckv{"k5", []byte("last")})
	for i := 0; i < 20; i++ {
		e.append(ckv{fmt.Sprintf("k%d", []int{0, 2, 3}[i%3]), []byte(fmt.Sprintf("w%03d", i))})
	}
	if n := e.upload(); n < 4 {
		t.Fatalf("uploaded %d segments", n)
	}
	t0 := time.UnixMilli(1_800_000_000_000)
	at := func(d time.Duration) CompactConfig {
		cfg := e.config(t0.Add(d), 1<<20)
		cfg.Options.DeleteRetentionMs = 1000
		return cfg
	}

	// The first pass keeps the tombstones, stamped with their horizon.
	res := e.compact(at(0))
	if res.Uploaded == 0 {
		t.Fatalf("first pass %+v", res)
	}
	if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
		t.Fatal(err)
	}
	m1 := e.ms.Current()
	want := lastOfEachKey(e.written)
	requireCompacted(t, e.readRemote(e.r, m1), want)
	horizon := t0.UnixMilli() + 1000
	stamped := 0
	if err := ReadBatches(ctx, e.r, testPartition, m1, 0, func(b recordbatch.Batch) error {
		hasTomb := false
		if err := recordbatch.Records(ctx, b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
			hasTomb = hasTomb || r.Value == nil
			return nil
		}); err != nil {
			return err
		}
		if hz, ok := b.DeleteHorizon(); hasTomb != ok || (ok && hz != horizon) {
			return fmt.Errorf("batch at %d: tombstone %v, horizon %d %v", b.BaseOffset(), hasTomb, hz, ok)
		}
		if hasTomb {
			stamped++
		}
		return nil
	}); err != nil || stamped != 2 {
		t.Fatalf("%d batches stamped (%v)", stamped, err)
	}
	if n := e.note(); n == nil || n.Horizon != horizon || n.FirstDirty != m1.End() {
		t.Fatalf("cleaner note %+v, want horizon %d", n, horizon)
	}

	// Before the horizon: nothing due, a pass does nothing.
	if c := e.cleanable(at(500 * time.Millisecond)); c.HorizonDue || c.DirtyBytes != 0 {
		t.Fatalf("cleanable before the horizon: %+v", c)
	}
	if res := e.compact(at(500 * time.Millisecond)); res.Uploaded != 0 || e.ms.Current().CommitID != m1.CommitID {
		t.Fatalf("a pass before the horizon: %+v", res)
	}

	// Past it: due with nothing dirty, and the pass drops them.
	if c := e.cleanable(at(1500 * time.Millisecond)); !c.HorizonDue || c.DirtyBytes != 0 {
		t.Fatalf("cleanable past the horizon: %+v", c)
	}
	res = e.compact(at(1500 * time.Millisecond))
	if res.Uploaded == 0 || res.RemovedRecords != 2 || res.CleanedTo != m1.End() {
		t.Fatalf("the horizon pass: %+v", res.CompactStats)
	}
	if err := DeleteReplaced(ctx, e.b, res.Replaced, nil); err != nil {
		t.Fatal(err)
	}
	m2 := e.ms.Current()
	requireBucketIsTheManifest(t, e.b, e.l, m2)
	delete(want, "k1")
	delete(want, "k4")
	requireCompacted(t, e.readRemote(e.r, m2), want)
	if n := e.note(); n == nil || n.Horizon != -1 || n.FirstDirty != m2.End() {
		t.Fatalf("cleaner note %+v after the horizon pass", n)
	}
	if c := e.cleanable(at(1500 * time.Millisecond)); c.HorizonDue || c.DirtyBytes != 0 {
		t.Fatalf("cleanable after the horizon pass: %+v", c)
	}
	if res := e.compact(at(time.Hour)); res.Uploaded != 0 {
		t.Fatalf("a pass after the horizon pass: %+v", res)
	}
}

// An aborted transaction whose records were uploaded and whose ABORT
// marker is still only in the local log (LocalAbortedTxns) is aborted for
// the pass: its records supersede no committed record of their keys.
func TestCompactRemoteKnowsTransactionsAbortedInTheLocalLog(t *testing.T) {
	e := newCompactEnv(t, 1<<20, nil)
	for i := 0; i < 10; i++ {
		e.append(ckv{fmt.Sprintf("k%d", i%3), []byte(fmt.Sprintf("v%d", i))})
	}
	want := lastOfEachKey(e.written)
	// Producer 500 writes k0 in a transaction it aborts.
	tb, err := recordbatch.Build(nil, recordbatch.BuildOptions{Transactional: true, ProducerID: 500, ProducerEpoch: 0, BaseSequence: 0, BaseTimestamp: e.ts + 1},
		[]recordbatch.Record{{Key: []byte("k0"), Value: []byte("aborted")}})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := e.log.AppendAsLeader(tb, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.written = append(e.written, crec{offset: tr.FirstOffset, key: "k0", val: "aborted"})
	e.upload()
	m0 := e.ms.Current()
	if m0.End() != tr.LastOffset+1 {
		t.Fatalf("uploaded to %d", m0.End())
	}
	if _, err := e.log.AppendMarker(localseg.Marker{ProducerID: 500, Commit: false, Timestamp: e.ts + 2}, 0); err != nil {
		t.Fatal(err)
	}
	if got := e.log.AbortedTxns(m0.End(), m0.End()); len(got) != 1 {
		t.Fatalf("the local log's aborted transactions: %+v", got)
	}
	cfg := e.config(time.Now(), 1<<20)
	cfg.Options.HighWatermark = e.log.LogEndOffset()
	e.compact(cfg)
	have := map[crec]bool{}
	for _, r := range e.readRemote(nil, e.ms.Current()) {
		have[r] = true
	}
	if w := want["k0"]; !have[w] {
		t.Fatalf("k0's last committed record %+v is gone", w)
	}
}
