package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// Between full sweeps the leader's orphan sweep lists only the tail of the
// partition's objects, where its own uploads can have left orphans: an
// upload that failed and could not delete its segment object is deleted
// by the next sweep though its base offset was uploaded again and
// committed, and so is a spilled part no manifest names; an orphan far
// below the manifest's end (an older leader's late write) is not listed
// until a full sweep is due (FullSweepEvery). A year of history is
// hundreds of LIST pages a full sweep.
func TestTailSweepListsWhereTheLeadersOrphansCanBe(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 120)
	segs := log.Segments()
	if len(segs) < 20 {
		t.Fatalf("%d segments", len(segs))
	}
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	s, ms := newSweeper(t, fb, log, 1, false)
	a, l, grace, sweep := s.a, s.a.cfg.Layout, s.grace, s.sweep
	p := func(key string) {
		t.Helper()
		if _, err := fb.Bucket.Put(ctx, key, bytes.NewReader([]byte("x")), 1, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(key string) bool {
		_, err := fb.Bucket.Head(ctx, key)
		return err == nil
	}

	// Most segments go up; then an older leader's write lands far
	// below the end, and a spilled part no manifest names.
	failing := segs[len(segs)*3/4]
	uploadAll(t, a, 1, failing.BaseOffset)
	late := l.SegmentKey(testPartition, segs[2].BaseOffset, [16]byte{0xee})
	p(late)
	spill := l.SpillKey(testPartition, 0, [16]byte{0xdd})
	p(spill)

	// The next upload fails (its companion), and its segment object
	// cannot be deleted; the segment goes up again under a new name.
	fb.add(&fault{op: "put", match: ".indexes", n: 1})
	fb.add(&fault{op: "delete", match: ".log", n: 1})
	if _, err := a.UploadNext(ctx, 1, segs[len(segs)-1].BaseOffset); err == nil {
		t.Fatal("the upload did not fail")
	}
	failed := slices.DeleteFunc(listKeys(t, fb, ".log"), func(k string) bool {
		return !strings.Contains(k, fmt.Sprintf("/%020d-", failing.BaseOffset))
	})
	if len(failed) != 1 {
		t.Fatalf("the failed upload's segment object: %v", failed)
	}
	uploadAll(t, a, 1, segs[len(segs)-1].BaseOffset)
	m := ms.Current()
	total := int64(len(listAttrs(t, fb, "")))

	// A tail sweep: from the failed upload's base offset, the manifest,
	// the spilled part.
	listed := sweep()
	if exists(failed[0]) || exists(spill) {
		t.Fatalf("the failed upload's object or the unnamed spilled part is left")
	}
	if !exists(late) {
		t.Fatal("the tail sweep reached the late write far below the end")
	}
	above := int64(0)
	for _, s := range m.Segments {
		if s.BaseOffset >= failing.BaseOffset {
			above += 2
		}
	}
	if listed > above+3 || listed >= total/2 {
		t.Fatalf("the tail sweep listed %d objects of %d (%d segment objects at or above the failed upload)", listed, total, above)
	}
	// The failed upload is swept: the next tail is the manifest and the
	// sweep note the first sweep wrote.
	if listed := sweep(); listed != 2 {
		t.Fatalf("the second tail sweep listed %d objects", listed)
	}

	// Due, a full sweep lists everything and deletes the late write.
	a.nextFullSweep = time.Now()
	if listed := sweep(); listed < total-3 || exists(late) {
		t.Fatalf("the due full sweep listed %d of %d objects; late write left: %v", listed, total, exists(late))
	}
	if !a.nextFullSweep.After(time.Now().Add(time.Hour / 2)) {
		t.Fatalf("next full sweep at %v", a.nextFullSweep)
	}
	if listed := sweep(); listed != 2 {
		t.Fatalf("the tail sweep after the full one listed %d objects", listed)
	}
	// Younger than the grace, it is passed over, and waits for the next.
	p(late)
	a.cfg.OrphanGrace = time.Hour
	a.nextFullSweep = time.Now()
	if listed := sweep(); listed < total-3 || !exists(late) {
		t.Fatalf("the full sweep listed %d of %d objects; young late write deleted: %v", listed, total, !exists(late))
	}
	a.cfg.OrphanGrace = grace
	a.nextFullSweep = time.Now()
	if listed := sweep(); listed < total-3 || exists(late) {
		t.Fatalf("the full sweep listed %d of %d objects; late write left: %v", listed, total, exists(late))
	}
	// Every object the manifest names is still there.
	requireManifestIsTheLog(t, ms.Current(), log.Segments(), fb, len(ms.Current().Segments))
}

// heldListing holds every listing until released (or its ctx ends).
type heldListing struct {
	objectstore.Bucket
	entered chan struct{} // closed at the first listing
	once    sync.Once
	release chan struct{}
	active  atomic.Int32 // listings in flight
}

func (h *heldListing) ListAfter(ctx context.Context, prefix, after string, fn func(objectstore.Attrs) error) error {
	h.active.Add(1)
	defer h.active.Add(-1)
	h.once.Do(func() { close(h.entered) })
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Bucket.ListAfter(ctx, prefix, after, fn)
}

// A sweep runs beside the uploads, not between them: a full listing of a
// year of history takes a minute, and the term's first sweep starts with
// its first uploads. While the sweep's listing is held, every sealed
// segment is uploaded and committed; Run, stopped, waits for the sweep.
func TestASweepDoesNotHoldTheUploadsBack(t *testing.T) {
	log, _ := testLog(t, 2000, 60)
	segs := log.Segments()
	held := &heldListing{Bucket: objectstore.NewMem(), entered: make(chan struct{}), release: make(chan struct{})}
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(held, l.ManifestKey(testPartition), nil)
	a := NewArchiver(ArchiverConfig{Bucket: held, Layout: l, Partition: testPartition, Manifest: ms, Source: log, Logger: quietLogger(),
		SweepEvery: time.Millisecond, FullSweepEvery: time.Hour, SweepAtStart: true, OrphanGrace: time.Millisecond, Spills: BucketSpills{held, l},
		MaxBatch: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx, 0, RunHooks{Limit: log.LogEndOffset, Wake: make(chan struct{}), Idle: time.Millisecond})
	}()
	select {
	case <-held.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no sweep started")
	}
	if ms.Current().End() >= segs[len(segs)-2].NextOffset {
		t.Fatal("everything was committed before the sweep started: nothing shown")
	}
	stopOnceCommitted(t, ms, segs[len(segs)-2].NextOffset, time.Now().Add(10*time.Second), cancel, done)
	if n := held.active.Load(); n != 0 {
		t.Fatalf("Run returned with %d sweep listings in flight", n)
	}
}

// sweeper drives one archiver's sweeps for a test, counting what they
// list.
type sweeper struct {
	t        *testing.T
	a        *Archiver
	counting *listCounting
	epoch    int32
	grace    time.Duration
}

func newSweeper(t *testing.T, b objectstore.Bucket, src Source, epoch int32, atStart bool) (*sweeper, *ManifestStore) {
	t.Helper()
	counting := &listCounting{Bucket: b}
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(counting, l.ManifestKey(testPartition), nil)
	if _, err := ms.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	const grace = time.Millisecond
	a := NewArchiver(ArchiverConfig{Bucket: counting, Layout: l, Partition: testPartition, Manifest: ms, Source: src, Logger: quietLogger(),
		SweepEvery: time.Hour, FullSweepEvery: time.Hour, SweepAtStart: atStart, OrphanGrace: grace, Spills: BucketSpills{counting, l}, MaxBatch: 1})
	return &sweeper{t: t, a: a, counting: counting, epoch: epoch, grace: grace}, ms
}

// sweep runs one sweep now, once the objects are past the grace, and
// returns how many objects it listed.
func (s *sweeper) sweep() int64 {
	s.t.Helper()
	time.Sleep(5 * s.grace)
	s.a.nextSweep = time.Time{}
	before := s.counting.listed.Load()
	if err := s.a.maybeSweep(context.Background(), s.epoch, nil); err != nil {
		s.t.Fatal(err)
	}
	s.a.waitSweep()
	return s.counting.listed.Load() - before
}

// Remote retention drops segments from the manifest, then deletes their
// objects: the deletes that fail leave orphans below the manifest's first
// segment, far below the tail. Every sweep lists from where the sweeps
// before looked to that first segment, a page when nothing is there, and
// nothing at all when retention dropped nothing since.
func TestSweepsFindWhatRemoteRetentionCouldNotDelete(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 120)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	s, ms := newSweeper(t, fb, log, 1, false)
	uploadAll(t, s.a, 1, log.LogEndOffset())
	m0 := ms.Current()
	if len(m0.Segments) < 20 {
		t.Fatalf("%d segments", len(m0.Segments))
	}
	s.sweep()
	if listed := s.sweep(); listed != 2 {
		t.Fatalf("a tail sweep listed %d objects, want the manifest and the note", listed)
	}

	// Retention drops ten segments; three of their objects stay.
	fb.add(&fault{op: "delete", match: ".log", n: 3})
	var drop int64
	for _, seg := range m0.Segments[:10] {
		drop += seg.Size
	}
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: m0.Bytes() - drop}
	m, err := ApplyRetention(ctx, s.a.cfg.Bucket, s.a.cfg.Layout, testPartition, ms, s.a.cfg.Spills, 1, pol, time.Now(), 0, nil)
	if !errors.Is(err, errInjected) || m == nil || m.Segments[0].BaseOffset != m0.Segments[10].BaseOffset {
		t.Fatalf("retention: %v, manifest from %d", err, m.firstBase())
	}
	left := func() int {
		n := 0
		for _, k := range listKeys(t, fb, ".log") {
			if b, _ := keyBase(k); b < m.firstBase() {
				n++
			}
		}
		return n
	}
	if left() != 3 {
		t.Fatalf("%d segment objects below the manifest, want 3", left())
	}
	// The next sweep lists them, and the first segment's objects (where
	// the range ends), the manifest and the note: no full listing.
	if listed := s.sweep(); listed > 3+1+2 || left() != 0 {
		t.Fatalf("the sweep listed %d objects and left %d below the manifest", listed, left())
	}
	if listed := s.sweep(); listed != 2 {
		t.Fatalf("the sweep after listed %d objects, want the manifest and the note", listed)
	}
	requireManifestIsTheLog(t, ms.Current(), log.Segments()[10:], fb, len(ms.Current().Segments))
}

// A leader's sweeps note where the orphans of failed uploads can be
// (SweepNote), and a new leader's first sweep lists from there, not the
// partition's whole history; without a note it lists everything.
func TestANewLeaderSweepsFromItsPredecessorsNote(t *testing.T) {
	defer func(n int) { notePage = n }(notePage)
	notePage = 1
	ctx := context.Background()
	log, _ := testLog(t, 2000, 120)
	segs := log.Segments()
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	l := Layout{Prefix: "archive"}

	// The first leader: no note to read, so its first sweeps list
	// everything until one has looked at what came before its term.
	s1, _ := newSweeper(t, fb, log, 1, true)
	uploadAll(t, s1.a, 1, segs[len(segs)/2].BaseOffset)
	total := int64(len(listAttrs(t, fb, "")))
	if listed := s1.sweep(); listed < total {
		t.Fatalf("the first leader's first sweep listed %d of %d objects", listed, total)
	}
	// Once a sweep has looked at what came before its term, the next
	// notes where its tail starts: its end.
	s1.sweep()
	s1.sweep()
	n := readNote(t, fb, l)
	if n.LeaderEpoch != 1 || n.UploadsFrom != segs[len(segs)/2].BaseOffset {
		t.Fatalf("note %+v, want epoch 1 from %d", n, segs[len(segs)/2].BaseOffset)
	}
	// Its next upload fails and leaves its segment object; it dies.
	fb.add(&fault{op: "put", match: ".indexes", n: 1})
	fb.add(&fault{op: "delete", match: ".log", n: 1})
	if _, err := s1.a.UploadNext(ctx, 1, segs[len(segs)-1].BaseOffset); err == nil {
		t.Fatal("the upload did not fail")
	}
	orphan := slices.DeleteFunc(listKeys(t, fb, ".log"), func(k string) bool {
		return !strings.Contains(k, fmt.Sprintf("/%020d-", segs[len(segs)/2].BaseOffset))
	})
	if len(orphan) != 1 {
		t.Fatalf("the failed upload's segment object: %v", orphan)
	}

	// The next leader lists from the note: the orphan, the manifest, the
	// note.
	s2, _ := newSweeper(t, fb, log, 2, true)
	if listed := s2.sweep(); listed > 3 {
		t.Fatalf("the new leader's first sweep listed %d objects", listed)
	}
	if _, err := fb.Head(ctx, orphan[0]); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("the predecessor's orphan is left: %v", err)
	}
	if n := readNote(t, fb, l); n.LeaderEpoch != 2 {
		t.Fatalf("note %+v after the new leader's first sweep", n)
	}

	// Without a note, a new leader lists everything.
	if err := fb.Delete(ctx, l.SweepNoteKey(testPartition)); err != nil {
		t.Fatal(err)
	}
	s3, _ := newSweeper(t, fb, log, 3, true)
	total = int64(len(listAttrs(t, fb, "")))
	if listed := s3.sweep(); listed < total {
		t.Fatalf("the first sweep without a note listed %d of %d objects", listed, total)
	}
}

func readNote(t *testing.T, b objectstore.Bucket, l Layout) *SweepNote {
	t.Helper()
	n, err := readSweepNote(context.Background(), b, l, testPartition)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A tail sweep reads only the spilled parts that name segments in its
// tail, none at all in a steady state, where a year of history has
// hundreds: the parts cache holds a sixteenth of the cache, and an hourly
// sweep of every partition that read them all would GET them again and
// again. What a part it did not read may name, it keeps.
func TestATailSweepReadsOnlyTheSpilledPartsItsTailNeeds(t *testing.T) {
	defer func(th, keep int) { spillThreshold, spillKeep = th, keep }(spillThreshold, spillKeep)
	spillThreshold, spillKeep = 4<<10, 1<<10
	ctx := context.Background()
	log, _ := testLog(t, 300, 150)
	sc := &spillCounter{Bucket: objectstore.NewMem()}
	s, ms := newSweeper(t, sc, log, 1, false)
	uploadAll(t, s.a, 1, log.LogEndOffset())
	m := ms.Current()
	if len(m.Spills) < 3 {
		t.Fatalf("%d spilled parts", len(m.Spills))
	}
	// A write of an older leader's lands among the spilled segments.
	l := s.a.cfg.Layout
	late := l.SegmentKey(testPartition, m.Spills[1].BaseOffset, [16]byte{0xee})
	if _, err := sc.Bucket.Put(ctx, late, bytes.NewReader([]byte("x")), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	exists := func(key string) bool {
		_, err := sc.Bucket.Head(ctx, key)
		return err == nil
	}
	sc.n = 0
	if s.sweep(); sc.n != 0 || !exists(late) {
		t.Fatalf("the tail sweep read %d spilled parts; late write deleted: %v", sc.n, !exists(late))
	}
	s.a.nextFullSweep = time.Now()
	if s.sweep(); sc.n != len(m.Spills) || exists(late) {
		t.Fatalf("the full sweep read %d of %d spilled parts; late write left: %v", sc.n, len(m.Spills), exists(late))
	}
	if n := len(listKeys(t, sc, ".log")); n != ms.Current().SegmentCount() {
		t.Fatalf("%d segment objects for %d segments named", n, ms.Current().SegmentCount())
	}
}
