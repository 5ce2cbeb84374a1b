package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shale-log/shale/objectstore"
)

// listKeys returns the keys under prefix with the given suffix.
func listKeys(t *testing.T, b objectstore.Bucket, suffix string) []string {
	t.Helper()
	var out []string
	b.List(context.Background(), "", func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, suffix) {
			out = append(out, a.Key)
		}
		return nil
	})
	return out
}

func TestArchiverUploadsSealedSegmentsBelowTheLimitOnce(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	segs := log.Segments()
	if len(segs) < 4 {
		t.Fatalf("only %d segments", len(segs))
	}
	// Only segments ending at or below the limit go.
	limit := segs[1].NextOffset
	if n := uploadAll(t, a, 0, limit); n != 2 {
		t.Fatalf("uploaded %d below the limit", n)
	}
	if ms.Current().End() != limit {
		t.Fatalf("manifest ends at %d", ms.Current().End())
	}
	n := uploadAll(t, a, 0, log.LogEndOffset())
	if n != len(segs)-3 {
		t.Fatalf("uploaded %d more of %d sealed", n, len(segs)-1)
	}
	m := ms.Current()
	if m.End() != segs[len(segs)-2].NextOffset || len(listKeys(t, b, ".log")) != len(segs)-1 || len(listKeys(t, b, ".indexes")) != len(segs)-1 {
		t.Fatalf("manifest %+v, objects %v", m, listKeys(t, b, ""))
	}
	// Each object is the local segment byte for byte.
	for i, s := range m.Segments {
		ss, err := log.OpenSealed(s.BaseOffset)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, ss.Size)
		ss.ReadAt(want, 0)
		ss.Close()
		got, err := objectstore.ReadAll(context.Background(), b, a.cfg.Layout.SegmentKey(testPartition, s.BaseOffset, s.ID), 1<<30)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %d differs (%v)", i, err)
		}
		comp, _ := objectstore.ReadAll(context.Background(), b, a.cfg.Layout.CompanionKey(testPartition, s.BaseOffset, s.ID), 1<<30)
		if _, err := DecodeCompanion(comp, &s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestArchiverFencedLeaderDeletesItsUploadAndStops(t *testing.T) {
	log, _ := testLog(t, 2000, 20)
	b := objectstore.NewMem()
	old, _ := newTestArchiver(t, b, log)
	nw, _ := newTestArchiver(t, b, log)
	if n := uploadAll(t, nw, 5, log.Segments()[0].NextOffset); n != 1 {
		t.Fatalf("new leader uploaded %d", n)
	}
	before := len(listKeys(t, b, ""))
	// The old leader (epoch 4) still sees an empty manifest and tries.
	_, err := old.UploadNext(context.Background(), 4, log.LogEndOffset())
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("old leader: %v", err)
	}
	if after := len(listKeys(t, b, "")); after != before {
		t.Fatalf("fenced upload left %d objects", after-before)
	}
}

func TestArchiverKilledBeforeCommitLeavesAnOrphanNotAGap(t *testing.T) {
	log, _ := testLog(t, 2000, 20)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	// The manifest PUT fails: segment and companion were written.
	fb.add(&fault{op: "put", match: "/manifest", n: 1})
	if _, err := a.UploadNext(context.Background(), 0, log.LogEndOffset()); !errors.Is(err, errInjected) {
		t.Fatalf("upload: %v", err)
	}
	if ms.Current().End() != 0 {
		t.Fatal("manifest moved")
	}
	// A fresh archiver (the broker restarted) uploads the segment again
	// under a new name; the first copy is an orphan.
	a2, ms2 := newTestArchiver(t, fb, log)
	uploadAll(t, a2, 0, log.Segments()[0].NextOffset)
	m := ms2.Current()
	if len(m.Segments) != 1 || m.End() != log.Segments()[0].NextOffset {
		t.Fatalf("manifest %+v", m)
	}
	// The failed commit named a batch of segments: each left two
	// objects.
	orphans := PlanOrphans(m, nil, listAttrs(t, fb, a2.cfg.Layout.PartitionPrefix(testPartition)), time.Now().Add(time.Hour), time.Minute)
	if batch := min(a.cfg.MaxBatch, len(log.Segments())-1); len(orphans) != 2*batch {
		t.Fatalf("orphans %v", orphans)
	}
	for _, k := range orphans {
		if strings.Contains(k, "manifest") || m.Segments[0].ID == mustID(t, k) {
			t.Fatalf("would delete a committed object %s", k)
		}
	}
}

func mustID(t *testing.T, key string) [16]byte {
	id, ok := parseObjectID(key)
	if !ok {
		t.Fatalf("no id in %s", key)
	}
	return id
}

func listAttrs(t *testing.T, b objectstore.Bucket, prefix string) []objectstore.Attrs {
	t.Helper()
	var out []objectstore.Attrs
	if err := b.List(context.Background(), prefix, func(a objectstore.Attrs) error { out = append(out, a); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestArchiverBatchCommitsOnlyTheSegmentsBeforeAFailedUpload(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	segs := log.Segments()
	if len(segs) < 5 {
		t.Fatalf("only %d segments", len(segs))
	}
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	// The second segment of the first batch fails: the first alone is
	// committed, and the third and fourth, uploaded, are not named (a
	// manifest with a gap would lose the second's records).
	fb.add(&fault{op: "put", match: fmt.Sprintf("%020d-", segs[1].BaseOffset), n: 1})
	n, err := a.UploadNext(context.Background(), 0, log.LogEndOffset())
	if err != nil || n != 1 {
		t.Fatalf("first batch: %d committed (%v)", n, err)
	}
	if m := ms.Current(); len(m.Segments) != 1 || m.End() != segs[0].NextOffset {
		t.Fatalf("manifest %+v", m)
	}
	if keys := listKeys(t, fb, ".log"); len(keys) != 1 {
		t.Fatalf("objects left by the batch: %v", keys)
	}
	// The next calls upload the rest, in order, with no gap.
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	if len(m.Segments) != len(segs)-1 {
		t.Fatalf("manifest names %d of %d sealed segments", len(m.Segments), len(segs)-1)
	}
	requireManifestIsTheLog(t, m, log.Segments(), fb, len(segs)-1)
}

func TestArchiverRunUploadsSegmentsAsTheyAreSealedWithoutAGap(t *testing.T) {
	log, _ := testLog(t, 2000, 10)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := make(chan struct{}, 1)
	var limit atomic.Int64
	limit.Store(log.LogEndOffset())
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx, 0, RunHooks{Limit: limit.Load, Wake: wake, Idle: time.Hour})
	}()
	// Seal more segments while Run uploads, and fail one upload once:
	// Run stops with the error, and a second Run goes on from the
	// manifest's end.
	for i := 10; i < 60; i++ {
		if _, err := log.AppendAsLeader(testBatch(t, 1+i%3, 200, int64(1_700_000_000_000+i)), 0); err != nil {
			t.Fatal(err)
		}
		limit.Store(log.LogEndOffset())
		select {
		case wake <- struct{}{}:
		default:
		}
		if i == 30 {
			segs := log.Segments()
			fb.add(&fault{op: "put", match: fmt.Sprintf("%020d-", segs[len(segs)-2].BaseOffset), n: 1})
		}
	}
	sealed := log.Segments()[len(log.Segments())-2].NextOffset
	deadline := time.Now().Add(20 * time.Second)
	for ms.Current().End() < sealed {
		select {
		case err := <-done:
			if !errors.Is(err, errInjected) {
				t.Fatalf("Run: %v", err)
			}
			go func() {
				done <- a.Run(ctx, 0, RunHooks{Limit: limit.Load, Wake: wake, Idle: 10 * time.Millisecond})
			}()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the manifest ends at %d, the sealed segments at %d", ms.Current().End(), sealed)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	// Every object in the bucket is named: no upload was left behind.
	m := ms.Current()
	requireManifestIsTheLog(t, m, log.Segments(), fb, len(m.Segments))
}

// TestOrphanSweepKeepsTheObjectsOfUploadsInFlight: the oldest upload of a
// batch stalls for many grace periods while the younger ones are in the
// bucket waiting to be committed with it; the periodic sweeps that run
// meanwhile delete none of them, and every object the manifest names in
// the end is there.
func TestOrphanSweepKeepsTheObjectsOfUploadsInFlight(t *testing.T) {
	log, _ := testLog(t, 2000, 60)
	segs := log.Segments()
	if len(segs) < 5 {
		t.Fatalf("%d segments", len(segs))
	}
	release := make(chan struct{})
	stalled := fmt.Sprintf("%020d-", segs[0].BaseOffset)
	fb := &faultyBucket{Bucket: objectstore.NewMem(), putGate: func(key string) {
		if strings.Contains(key, stalled) && strings.HasSuffix(key, ".log") {
			<-release
		}
	}}
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(fb, l.ManifestKey(testPartition), nil)
	sweeps := 0
	a := NewArchiver(ArchiverConfig{Bucket: fb, Layout: l, Partition: testPartition, Manifest: ms, Source: log, Logger: quietLogger(),
		SweepEvery: 10 * time.Millisecond, OrphanGrace: 10 * time.Millisecond, Spills: BucketSpills{fb, l},
		MaxBatch: 4}) // younger uploads wait for the oldest, whatever the default
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx, 0, RunHooks{Limit: log.LogEndOffset, Wake: make(chan struct{}), Idle: 2 * time.Millisecond,
			Tick: func() bool { sweeps++; return true }})
	}()
	// The younger uploads land and wait for the oldest.
	deadline := time.Now().Add(10 * time.Second)
	for len(listKeys(t, fb, ".log")) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("younger uploads not in the bucket: %v", listKeys(t, fb, ".log"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // 30 grace periods, sweeps due throughout
	close(release)
	sealed := segs[len(segs)-2].NextOffset
	stopOnceCommitted(t, ms, sealed, deadline, cancel, done)
	for _, s := range ms.Current().Segments {
		for _, k := range []string{l.SegmentKey(testPartition, s.BaseOffset, s.ID), l.CompanionKey(testPartition, s.BaseOffset, s.ID)} {
			if _, err := fb.Head(context.Background(), k); err != nil {
				t.Fatalf("named object %s: %v", k, err)
			}
		}
	}
	if sweeps < 10 {
		t.Fatalf("only %d ticks while the upload stalled", sweeps)
	}
}

// TestOrphanSweepStopsForANewerLeader: a sweep that finds the manifest of
// a newer leader epoch stops Run with ErrFenced, deleting nothing.
func TestOrphanSweepStopsForANewerLeader(t *testing.T) {
	log, _ := testLog(t, 2000, 30)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(fb, l.ManifestKey(testPartition), nil)
	a := NewArchiver(ArchiverConfig{Bucket: fb, Layout: l, Partition: testPartition, Manifest: ms, Source: log, Logger: quietLogger(),
		SweepEvery: time.Millisecond, OrphanGrace: time.Millisecond, Spills: BucketSpills{fb, l}})
	uploadAll(t, a, 1, log.LogEndOffset())
	// A newer leader commits: the old leader's next sweep reads its
	// manifest and stops there.
	other := NewManifestStore(fb, l.ManifestKey(testPartition), nil)
	if _, err := other.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Commit(context.Background(), 2, func(m *Manifest) error { return nil }); err != nil {
		t.Fatal(err)
	}
	before := listKeys(t, fb, ".log")
	time.Sleep(5 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.Run(ctx, 1, RunHooks{Limit: log.LogEndOffset, Wake: make(chan struct{}), Idle: time.Millisecond})
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("Run: %v", err)
	}
	if after := listKeys(t, fb, ".log"); len(after) != len(before) {
		t.Fatalf("%d objects before the sweep, %d after", len(before), len(after))
	}
}

// TestArchiverRunStartsUploadsWhileACommitIsSlow: while a manifest commit
// is held in the store, the slots its uploads held take the next sealed
// segments: a slow commit does not hold the next uploads back (Run
// committed on its own goroutine and started nothing until the commit
// returned). Every segment is committed in the end, in order.
func TestArchiverRunStartsUploadsWhileACommitIsSlow(t *testing.T) {
	log, _ := testLog(t, 2000, 60)
	sealed := log.Segments()[len(log.Segments())-2].NextOffset
	var logPuts, manifestPuts atomic.Int32
	release := make(chan struct{})
	fb := &faultyBucket{Bucket: objectstore.NewMem(), putGate: func(key string) {
		switch {
		case strings.HasSuffix(key, ".log"):
			logPuts.Add(1)
		case strings.HasSuffix(key, "/manifest"):
			if manifestPuts.Add(1) == 1 {
				<-release // the first commit is slow
			}
		}
	}}
	a, ms := newTestArchiver(t, fb, log)
	cancel, done := startRun(t, a, log.LogEndOffset)
	deadline := time.Now().Add(20 * time.Second)
	for manifestPuts.Load() == 0 || logPuts.Load() <= int32(a.cfg.MaxBatch) {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("with the first commit held, %d segment uploads started (MaxBatch %d): none after the committing ones", logPuts.Load(), a.cfg.MaxBatch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	stopOnceCommitted(t, ms, sealed, deadline, cancel, done)
	m := ms.Current()
	requireManifestIsTheLog(t, m, log.Segments(), fb, len(m.Segments))
}

// TestArchiverRunStartsUploadsWhileTheOldestIsSlow: while the oldest
// upload is held, a younger upload that ends frees its slot for the next
// sealed segment (the uploads waiting to be committed are bounded at
// twice MaxBatch); nothing is committed before the oldest, and every
// segment is committed in the end, in order.
func TestArchiverRunStartsUploadsWhileTheOldestIsSlow(t *testing.T) {
	log, _ := testLog(t, 2000, 60)
	segs := log.Segments()
	sealed := segs[len(segs)-2].NextOffset
	if len(segs) < 8 {
		t.Fatalf("%d segments", len(segs))
	}
	var logPuts, manifestPuts atomic.Int32
	release := make(chan struct{})
	stalled := fmt.Sprintf("%020d-", segs[0].BaseOffset)
	fb := &faultyBucket{Bucket: objectstore.NewMem(), putGate: func(key string) {
		switch {
		case strings.HasSuffix(key, ".log"):
			logPuts.Add(1)
			if strings.Contains(key, stalled) {
				<-release
			}
		case strings.HasSuffix(key, "/manifest"):
			manifestPuts.Add(1)
		}
	}}
	a, ms := newTestArchiver(t, fb, log)
	a.cfg.MaxBatch = 2
	cancel, done := startRun(t, a, log.LogEndOffset)
	deadline := time.Now().Add(20 * time.Second)
	for logPuts.Load() < 4 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("with the oldest upload held, %d segment uploads started, want 4 (twice MaxBatch)", logPuts.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for len(listKeys(t, fb, ".log")) < 3 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("the younger uploads are not in the bucket: %v", listKeys(t, fb, ".log"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for more than allowed to start
	if n := logPuts.Load(); n != 4 {
		close(release)
		t.Fatalf("%d segment uploads started while the oldest was held, want 4 (twice MaxBatch)", n)
	}
	if n := manifestPuts.Load(); n != 0 {
		close(release)
		t.Fatalf("%d manifest commits before the oldest upload ended", n)
	}
	close(release)
	stopOnceCommitted(t, ms, sealed, deadline, cancel, done)
	m := ms.Current()
	requireManifestIsTheLog(t, m, log.Segments(), fb, len(m.Segments))
}

// TestArchiverRunChargesTheWaitForACommitToQueue: an upload that ends
// while an older one's commit is held waits for that commit before its
// own; the wait is its queue phase (shale_tiering_upload_phase_seconds_total
// {phase="queue"}), not its PUT's or its commit's time.
func TestArchiverRunChargesTheWaitForACommitToQueue(t *testing.T) {
	log, _ := testLog(t, 2000, 60)
	sealed := log.Segments()[len(log.Segments())-2].NextOffset
	const hold = 300 * time.Millisecond
	var manifestPuts atomic.Int32
	release := make(chan struct{})
	fb := &faultyBucket{Bucket: objectstore.NewMem(), putGate: func(key string) {
		if strings.HasSuffix(key, "/manifest") && manifestPuts.Add(1) == 1 {
			<-release // the first commit is held
		}
	}}
	a, ms := newTestArchiver(t, fb, log)
	reg := prometheus.NewRegistry()
	a.cfg.Metrics = NewMetrics(reg)
	cancel, done := startRun(t, a, log.LogEndOffset)
	// Hold the first commit until an upload after the ones it names is
	// in the bucket, and then for hold more.
	deadline := time.Now().Add(20 * time.Second)
	for manifestPuts.Load() == 0 || len(listKeys(t, fb, ".log")) <= a.cfg.MaxBatch {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("with the first commit held, %d segments in the bucket", len(listKeys(t, fb, ".log")))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(hold)
	close(release)
	stopOnceCommitted(t, ms, sealed, deadline, cancel, done)
	phase := func(name string) time.Duration {
		return time.Duration(testutil.ToFloat64(a.cfg.Metrics.uploadPhases.WithLabelValues(name)) * float64(time.Second))
	}
	if q := phase("queue"); q < hold {
		t.Errorf("queue phase %v in all, want at least the %v an upload waited for the held commit", q, hold)
	}
	t.Logf("phases summed: queue %v, commit %v, put %v", phase("queue"), phase("commit"), phase("put"))
}

// startRun runs a's upload loop, up to limit, until the test ends or
// cancel is called; done gets what Run returned.
func startRun(t *testing.T, a *Archiver, limit func() int64) (cancel context.CancelFunc, done chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done = make(chan error, 1)
	go func() {
		done <- a.Run(ctx, 0, RunHooks{Limit: limit, Wake: make(chan struct{}), Idle: time.Hour})
	}()
	return cancel, done
}

// stopOnceCommitted waits, until deadline, for the manifest to reach
// sealed while Run (answering on done) goes on, then stops Run with
// cancel and fails t unless it ended cleanly.
func stopOnceCommitted(t *testing.T, ms *ManifestStore, sealed int64, deadline time.Time, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	for ms.Current().End() < sealed {
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the manifest ends at %d, the sealed segments at %d", ms.Current().End(), sealed)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
