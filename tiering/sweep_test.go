package tiering

import (
	"bytes"
	"context"
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
// until a full sweep, asked for (SweepFully: until one could delete what
// was written before the request) or due (FullSweepEvery). A year of
// history is hundreds of LIST pages a full sweep.
func TestTailSweepListsWhereTheLeadersOrphansCanBe(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 120)
	segs := log.Segments()
	if len(segs) < 20 {
		t.Fatalf("%d segments", len(segs))
	}
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	counting := &listCounting{Bucket: fb}
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(counting, l.ManifestKey(testPartition), nil)
	if _, err := ms.Load(ctx); err != nil {
		t.Fatal(err)
	}
	const grace = time.Millisecond
	a := NewArchiver(ArchiverConfig{Bucket: counting, Layout: l, Partition: testPartition, Manifest: ms, Source: log, Logger: quietLogger(),
		SweepEvery: time.Hour, FullSweepEvery: time.Hour, OrphanGrace: grace, Spills: BucketSpills{counting, l}, MaxBatch: 1})
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
	// sweep runs one sweep now, once the objects are past the grace, and
	// returns how many objects it listed.
	sweep := func() int64 {
		t.Helper()
		time.Sleep(5 * grace)
		a.nextSweep = time.Time{}
		before := counting.listed.Load()
		if err := a.maybeSweep(ctx, 1, nil); err != nil {
			t.Fatal(err)
		}
		a.waitSweep()
		return counting.listed.Load() - before
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
	// The failed upload is swept: the next tail is the manifest alone.
	if listed := sweep(); listed != 1 {
		t.Fatalf("the second tail sweep listed %d objects", listed)
	}

	// Asked for, a full sweep lists everything and deletes the late write.
	a.SweepFully()
	if listed := sweep(); listed < total-3 || exists(late) {
		t.Fatalf("the full sweep listed %d of %d objects; late write left: %v", listed, total, exists(late))
	}
	if listed := sweep(); listed != 1 {
		t.Fatalf("the tail sweep after the full one listed %d objects", listed)
	}
	// Asked for while the object is younger than the grace, the request
	// stands until a full sweep could delete it.
	p(late)
	a.cfg.OrphanGrace = time.Hour
	a.SweepFully()
	for range 2 {
		if listed := sweep(); listed < total-3 || !exists(late) {
			t.Fatalf("the full sweep listed %d of %d objects; young late write deleted: %v", listed, total, !exists(late))
		}
	}
	a.cfg.OrphanGrace = grace
	if listed := sweep(); listed < total-3 || exists(late) {
		t.Fatalf("the full sweep listed %d of %d objects; late write left: %v", listed, total, exists(late))
	}
	if listed := sweep(); listed != 1 {
		t.Fatalf("the tail sweep after the full one listed %d objects", listed)
	}
	// Due, the same.
	p(late)
	a.nextFullSweep = time.Now()
	if listed := sweep(); listed < total-3 || exists(late) {
		t.Fatalf("the due full sweep listed %d of %d objects; late write left: %v", listed, total, exists(late))
	}
	if !a.nextFullSweep.After(time.Now().Add(time.Hour / 2)) {
		t.Fatalf("next full sweep at %v", a.nextFullSweep)
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
