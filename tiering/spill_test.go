package tiering

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

// synthSegment is the i-th entry of a synthetic partition: ten offsets,
// 1000 bytes, one second apart.
func synthSegment(i int) Segment {
	s := Segment{BaseOffset: int64(i) * 10, NextOffset: int64(i)*10 + 10, Size: 1000, CompanionSize: 100,
		MaxTimestamp: 1_700_000_000_000 + int64(i)*1000, UploadEpoch: int32(i / 1000),
		Epochs: []localseg.EpochEntry{{Epoch: int32(i / 1000), StartOffset: int64(i) * 10}}}
	binary.BigEndian.PutUint64(s.ID[:], uint64(i)+1)
	return s
}

// nearSpill returns the store of the test partition's manifest in b (its
// layout, and its key), loaded and holding 880 synthetic segments: just
// under the spill threshold, so that ten more (addSynth(880, 890)) make
// the next commit write a spilled part.
func nearSpill(t testing.TB, b objectstore.Bucket) (*ManifestStore, Layout, string) {
	t.Helper()
	ms, l := loadedStore(t, b)
	commitSynth(t, ms, 0, 880, 880)
	if len(ms.Current().Spills) != 0 {
		t.Fatal("880 entries spilled")
	}
	return ms, l, l.ManifestKey(testPartition)
}

// addSynth is a commit's mutation adding the synthetic segments from to to.
func addSynth(from, to int) func(*Manifest) error {
	return func(m *Manifest) error {
		for i := from; i < to; i++ {
			m.Segments = append(m.Segments, synthSegment(i))
		}
		return nil
	}
}

// commitSynth appends synthetic segments [from, to) in commits of batch.
func commitSynth(t testing.TB, ms *ManifestStore, from, to, batch int) {
	t.Helper()
	for i := from; i < to; i += batch {
		if _, err := ms.Commit(context.Background(), int32(i/1000), addSynth(i, min(i+batch, to))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestManifestSpillsOverAndStaysBoundedAt100kSegments(t *testing.T) {
	ctx := context.Background()
	const total = 100_000
	b := objectstore.NewMem()
	l := Layout{Prefix: "archive"}
	key := l.ManifestKey(testPartition)
	ms := NewManifestStore(b, key, nil)
	if _, err := ms.Load(ctx); err != nil {
		t.Fatal(err)
	}
	commitSynth(t, ms, 0, total, 400)

	// The manifest itself stays small; the rest sits in spilled parts.
	a, err := b.Head(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManifestStore(b, key, nil).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if limit := int64(spillThreshold + spillRefSize*len(m.Spills)); a.Size > limit {
		t.Fatalf("manifest of %d bytes, past %d", a.Size, limit)
	}
	if m.SegmentCount() != total || m.Start() != 0 || m.End() != total*10 || len(m.Spills) < 100 {
		t.Fatalf("%d segments in %d parts, [%d, %d)", m.SegmentCount(), len(m.Spills), m.Start(), m.End())
	}
	if parts := listKeys(t, b, ".manifest"); len(parts) != len(m.Spills) {
		t.Fatalf("%d part objects for %d references", len(parts), len(m.Spills))
	}

	// Every entry is found and walked, in order, spilled or not.
	loader := BucketSpills{b, l}
	for _, i := range []int{0, 1, 599, 600, 12345, 54321, total - 200, total - 1} {
		seg, ok, err := FindSegment(ctx, loader, testPartition, m, int64(i)*10+3)
		if err != nil || !ok || seg.ID != synthSegment(i).ID {
			t.Fatalf("offset %d: %+v %v %v", i*10+3, seg, ok, err)
		}
	}
	if _, ok, _ := FindSegment(ctx, loader, testPartition, m, total*10); ok {
		t.Fatal("found a segment past the end")
	}
	n := 0
	if err := WalkSegments(ctx, loader, testPartition, m, 0, nil, func(s Segment) bool {
		if s.ID != synthSegment(n).ID {
			t.Fatalf("entry %d is %d", n, s.BaseOffset)
		}
		n++
		return true
	}); err != nil || n != total {
		t.Fatalf("walked %d of %d (%v)", n, total, err)
	}
	if got := m.MaxTimestamp(); got != synthSegment(total-1).MaxTimestamp {
		t.Fatalf("max timestamp %d", got)
	}

	// Orphan planning sees the spilled entries as live.
	var listing []objectstore.Attrs
	for i := 0; i < total; i += 997 {
		s := synthSegment(i)
		listing = append(listing, objectstore.Attrs{Key: l.SegmentKey(testPartition, s.BaseOffset, s.ID)})
	}
	listing = append(listing, listAttrs(t, b, l.PartitionPrefix(testPartition))...)
	parts := make([]*Manifest, 0, len(m.Spills))
	for _, s := range m.Spills {
		p, err := loader.LoadSpill(ctx, testPartition, s)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if o := PlanOrphans(m, parts, listing, time.Now().Add(time.Hour), time.Minute); len(o) != 0 {
		t.Fatalf("live objects planned as orphans: %v", o[:min(len(o), 3)])
	}
}

func TestRemoteRetentionDropsAndTrimsSpilledParts(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	ms, l := loadedStore(t, b)
	const total = 3000
	commitSynth(t, ms, 0, total, 300)
	m0 := ms.Current()
	if len(m0.Spills) < 2 {
		t.Fatalf("%d spilled parts", len(m0.Spills))
	}
	loader := BucketSpills{b, l}
	// Expire up to the middle of the second part: the first goes whole,
	// the second is replaced by a part holding its newer half.
	first, second := m0.Spills[0], m0.Spills[1]
	cut := int(second.BaseOffset/10) + int(second.Count)/2
	now := time.UnixMilli(synthSegment(cut).MaxTimestamp + 60_000)
	pol := RetentionPolicy{RetentionMs: 60_000, RetentionBytes: -1}
	m, err := ApplyRetention(ctx, b, l, testPartition, ms, loader, 3, pol, now, 0, nil)
	if err != nil || m == nil {
		t.Fatal(m, err)
	}
	if m.LogStartOffset != int64(cut)*10 || m.Start() != int64(cut)*10 || m.SegmentCount() != total-cut {
		t.Fatalf("log start %d, start %d, %d segments; want %d, %d", m.LogStartOffset, m.Start(), m.SegmentCount(), cut*10, total-cut)
	}
	if m.Spills[0].ID == second.ID || m.Spills[0].BaseOffset != int64(cut)*10 {
		t.Fatalf("first part %+v", m.Spills[0])
	}
	for _, gone := range []Spill{first, second} {
		if _, err := b.Head(ctx, l.SpillKey(testPartition, gone.BaseOffset, gone.ID)); !errors.Is(err, objectstore.ErrNotFound) {
			t.Fatalf("dropped part %d still stored (%v)", gone.BaseOffset, err)
		}
	}
	// The manifest as stored reads back whole from a fresh store.
	again, err := NewManifestStore(b, l.ManifestKey(testPartition), nil).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := WalkSegments(ctx, loader, testPartition, again, 0, nil, func(s Segment) bool {
		if s.ID != synthSegment(cut+n).ID {
			t.Fatalf("entry %d is %d", n, s.BaseOffset)
		}
		n++
		return true
	}); err != nil || n != total-cut {
		t.Fatalf("walked %d (%v)", n, err)
	}
	// Retention by size down to the manifest's own entries drops every
	// part.
	pol = RetentionPolicy{RetentionMs: -1, RetentionBytes: int64(len(again.Segments)) * 1000}
	m, err = ApplyRetention(ctx, b, l, testPartition, ms, loader, 3, pol, now, 0, nil)
	if err != nil || len(m.Spills) != 0 || len(m.Segments) != len(again.Segments) {
		t.Fatalf("%+v %v", m, err)
	}
	if parts := listKeys(t, b, ".manifest"); len(parts) != 0 {
		t.Fatalf("parts left: %v", parts)
	}
}

func TestACommitThatFailsLeavesItsSpilledPartAnOrphan(t *testing.T) {
	ctx := context.Background()
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	ms, l, _ := nearSpill(t, fb)
	// The part is written, then the manifest PUT fails before it lands
	// and the re-read fails too (a broker that dies here).
	fb.add(&fault{op: "put", match: "/manifest", n: 1})
	fb.add(&fault{op: "head", match: "/manifest", n: 1})
	if _, err := ms.Commit(ctx, 0, addSynth(880, 890)); err == nil {
		t.Fatal("the commit succeeded")
	}
	if len(listKeys(t, fb, ".manifest")) != 1 {
		t.Fatal("no spilled part was written before the manifest")
	}
	m, err := NewManifestStore(fb, l.ManifestKey(testPartition), nil).Load(ctx)
	if err != nil || len(m.Spills) != 0 || m.SegmentCount() != 880 {
		t.Fatalf("%d spills, %d segments (%v)", len(m.Spills), m.SegmentCount(), err)
	}
	n, err := CleanOrphans(ctx, fb, l, testPartition, m, BucketSpills{fb, l}, time.Now().Add(time.Hour), time.Minute, nil)
	if err != nil || n != 1 || len(listKeys(t, fb, ".manifest")) != 0 {
		t.Fatalf("cleaned %d (%v)", n, err)
	}
}

func TestReaderReadsRecordsThroughSpilledParts(t *testing.T) {
	// One batch per segment; small parts so that 150 segments spill.
	defer func(th, keep int) { spillThreshold, spillKeep = th, keep }(spillThreshold, spillKeep)
	spillThreshold, spillKeep = 4<<10, 1<<10
	log, batches := testLog(t, 300, 150)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	if n := uploadAll(t, a, 0, log.LogEndOffset()); n < 140 {
		t.Fatalf("uploaded %d segments", n)
	}
	m := ms.Current()
	if len(m.Spills) < 3 {
		t.Fatalf("%d segments and no spilled part", len(m.Segments))
	}
	r := newTestReader(t, b, 4096)
	got := readRemoteAll(t, r, m, 0, 1<<20)
	if len(got) != len(batches)-1 { // the active segment stays local
		t.Fatalf("read %d batches of %d", len(got), len(batches))
	}
	for i := range got {
		if !bytes.Equal(got[i], batches[i]) {
			t.Fatalf("batch %d differs", i)
		}
	}
	// By timestamp, in a spilled part.
	ts := int64(1_700_000_000_000 + 10)
	off, _, _, ok, err := r.OffsetForTimestamp(context.Background(), testPartition, m, ts)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	seg, _, err := FindSegment(context.Background(), r, testPartition, m, off)
	if err != nil || off >= m.Spills[0].NextOffset || seg.MaxTimestamp < ts {
		t.Fatalf("offset %d for ts %d (%v)", off, ts, err)
	}
	// A missing part is an error, never a skip.
	sp := m.Spills[len(m.Spills)-1]
	if err := b.Delete(context.Background(), a.cfg.Layout.SpillKey(testPartition, sp.BaseOffset, sp.ID)); err != nil {
		t.Fatal(err)
	}
	r2 := newTestReader(t, b, 4096)
	if _, err := r2.Read(context.Background(), testPartition, m, sp.BaseOffset, 1<<20, math.MaxInt64, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read in a missing part: %v", err)
	}
}

func TestSpilledPartMustMatchItsReference(t *testing.T) {
	segs := []Segment{synthSegment(0), synthSegment(1)}
	s, err := newSpill(segs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Spill){
		func(s *Spill) { s.Count = 3 },
		func(s *Spill) { s.Bytes++ },
		func(s *Spill) { s.BaseOffset = 1 },
		func(s *Spill) { s.NextOffset = 30 },
	} {
		c := s
		bad(&c)
		if err := c.matches(s.part); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	if err := s.matches(s.part); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(spillKeyFor(Layout{}.ManifestKey(testPartition), 5, s.ID), Layout{}.SpillKey(testPartition, 5, s.ID)) {
		t.Fatal("spill keys disagree")
	}
}

// spillCounter counts the GETs of spilled manifest parts.
type spillCounter struct {
	objectstore.Bucket
	mu sync.Mutex
	n  int
}

func (s *spillCounter) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if strings.Contains(key, "/spill-") {
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
	}
	return s.Bucket.Get(ctx, key, off, n)
}

func TestAReplayReadsEachSpilledPartOnce(t *testing.T) {
	defer func(th, keep int) { spillThreshold, spillKeep = th, keep }(spillThreshold, spillKeep)
	spillThreshold, spillKeep = 4<<10, 1<<10
	log, _ := testLog(t, 300, 150)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	if len(m.Spills) < 3 {
		t.Fatalf("%d segments and no spilled part", len(m.Segments))
	}
	sc := &spillCounter{Bucket: b}
	r := newTestReader(t, sc, 4096)
	readRemoteAll(t, r, m, 0, 1<<20)
	r.Wait()
	if sc.n != len(m.Spills) {
		t.Fatalf("a replay read %d spilled parts %d times", len(m.Spills), sc.n)
	}
}

// loadCounter counts the spilled parts read through it.
type loadCounter struct {
	SpillLoader
	n int
}

func (c *loadCounter) LoadSpill(ctx context.Context, p Partition, s Spill) (*Manifest, error) {
	c.n++
	return c.SpillLoader.LoadSpill(ctx, p, s)
}

// walkedEpochs is the remote log's epoch history read by walking every
// segment of m, the reference EpochHistory must agree with.
func walkedEpochs(t *testing.T, l SpillLoader, m *Manifest) []localseg.EpochEntry {
	t.Helper()
	var out []localseg.EpochEntry
	if err := WalkSegments(context.Background(), l, testPartition, m, 0, nil, func(s Segment) bool {
		out = appendEpochs(out, s.Epochs)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEpochHistoryReadsOnlyTheSpilledPartsItHasNotSeen(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	ms, l := loadedStore(t, b)
	// A new epoch every 700 segments, so that epochs start inside parts
	// and span parts.
	addEpochs := func(from, to int) func(*Manifest) error {
		return func(m *Manifest) error {
			for i := from; i < to; i++ {
				s := synthSegment(i)
				s.Epochs = []localseg.EpochEntry{{Epoch: int32(i / 700), StartOffset: s.BaseOffset}}
				m.Segments = append(m.Segments, s)
			}
			return nil
		}
	}
	commit := func(from, to int) *Manifest {
		for i := from; i < to; i += 300 {
			if _, err := ms.Commit(ctx, int32(i/700), addEpochs(i, min(i+300, to))); err != nil {
				t.Fatal(err)
			}
		}
		return ms.Current()
	}
	loader := &loadCounter{SpillLoader: BucketSpills{b, l}}
	var h EpochHistory
	check := func(m *Manifest, wantLoads int) {
		t.Helper()
		loader.n = 0
		got, err := h.Of(ctx, loader, testPartition, m)
		if err != nil {
			t.Fatal(err)
		}
		if loader.n != wantLoads {
			t.Fatalf("%d parts read, want %d", loader.n, wantLoads)
		}
		if want := walkedEpochs(t, BucketSpills{b, l}, m); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("epochs %v, want %v", got, want)
		}
	}

	m := commit(0, 3000)
	if len(m.Spills) < 2 {
		t.Fatalf("%d spilled parts", len(m.Spills))
	}
	check(m, len(m.Spills))
	check(m, 0)

	// Commits that spill one more part: only it is read.
	before, next := len(m.Spills), 3000
	for len(m.Spills) == before {
		m = commit(next, next+300)
		next += 300
	}
	check(m, len(m.Spills)-before)

	// Retention into the middle of the first part replaces it with a part
	// of its newer half: only that one is read.
	first := m.Spills[0]
	cut := int(first.BaseOffset/10) + int(first.Count)/2
	pol := RetentionPolicy{RetentionMs: 60_000, RetentionBytes: -1}
	now := time.UnixMilli(synthSegment(cut).MaxTimestamp + 60_000)
	if m, err := ApplyRetention(ctx, b, l, testPartition, ms, BucketSpills{b, l}, m.LeaderEpoch, pol, now, 0, nil); err != nil || m == nil {
		t.Fatal(m, err)
	}
	m = ms.Current()
	if m.Spills[0].ID == first.ID {
		t.Fatal("the first part was not replaced")
	}
	check(m, 1)
}
