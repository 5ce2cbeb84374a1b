package tiering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// Writes whose outcome is unknown: each test loses the response of a write
// that took effect (faulty's LoseResponse) and checks that the partition
// ends with no gap, no duplicate, no object a manifest names missing, and
// no orphan the next sweep would not find.

// requireNamedObjectsExist fails t unless every segment the manifest at key
// names (spilled parts included) has its segment and companion objects,
// and every spilled part it names reads.
func requireNamedObjectsExist(t *testing.T, b objectstore.Bucket, l Layout, key string) *Manifest {
	t.Helper()
	ctx := context.Background()
	m, err := NewManifestStore(b, key, nil).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = WalkSegments(ctx, BucketSpills{b, l}, testPartition, m, -1, nil, func(s Segment) bool {
		for _, k := range []string{l.SegmentKey(testPartition, s.BaseOffset, s.ID), l.CompanionKey(testPartition, s.BaseOffset, s.ID)} {
			if _, err := b.Head(ctx, k); err != nil {
				t.Errorf("the manifest names %s: %v", k, err)
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("walking the stored manifest: %v", err)
	}
	return m
}

// newerLeaderCommits is a Meanwhile hook: a leader of epoch reads the
// manifest at key (the lost write's, which took effect) and commits on top
// of it.
func newerLeaderCommits(t *testing.T, b objectstore.Bucket, key string, epoch int32) func(string) {
	return func(string) {
		ctx := context.Background()
		nw := NewManifestStore(b, key, nil)
		if _, err := nw.Load(ctx); err != nil {
			t.Error(err)
			return
		}
		if _, err := nw.Commit(ctx, epoch, func(*Manifest) error { return nil }); err != nil {
			t.Error(err)
		}
	}
}

// requireNoOrphans fails t when b holds objects of the test partition that
// m does not name (a sweep an hour from now, with no grace, would delete
// them).
func requireNoOrphans(t *testing.T, b objectstore.Bucket, l Layout, m *Manifest) {
	t.Helper()
	if orphans := PlanOrphans(m, nil, listAttrs(t, b, l.PartitionPrefix(testPartition)), time.Now().Add(time.Hour), 0); len(orphans) != 0 {
		t.Fatalf("objects no manifest names: %v", orphans)
	}
}

// faultyArchiver is where the outcome tests start: a log of 20 batches in
// segments of 2000 bytes, archived into a memory bucket the test injects
// faults into.
func faultyArchiver(t *testing.T) (*localseg.Log, *faulty.Bucket, *Archiver, *ManifestStore) {
	t.Helper()
	log, _ := testLog(t, 2000, 20)
	fb := faulty.New(objectstore.NewMem())
	a, ms := newTestArchiver(t, fb, log)
	return log, fb, a, ms
}

// Regression: a commit whose write took effect but whose response was lost
// read back a newer leader's manifest, built on its own, and so was
// fenced; the fenced leader then deleted the objects it had uploaded,
// which the newer leader's manifest named.
func TestAFencedCommitThatLandedKeepsTheObjectsTheNewerManifestNames(t *testing.T) {
	ctx := context.Background()
	log, fb, old, _ := faultyArchiver(t)
	l := old.cfg.Layout
	key := l.ManifestKey(testPartition)
	lost := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true, Meanwhile: newerLeaderCommits(t, fb.Inner(), key, 2)})
	if _, err := old.UploadNext(ctx, 1, log.LogEndOffset()); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old leader: %v", err)
	}
	if lost.Fired() != 1 {
		t.Fatal("the commit's response was not lost")
	}
	m := requireNamedObjectsExist(t, fb.Inner(), l, key)
	if m.LeaderEpoch != 2 || len(m.Segments) == 0 {
		t.Fatalf("stored manifest at epoch %d with %d segments", m.LeaderEpoch, len(m.Segments))
	}
	// Nothing else is left: the old leader's objects are the ones named.
	requireNoOrphans(t, fb, l, m)
}

// The same with a spilled part: the lost commit's manifest named a part
// it had just written, and the newer leader's manifest names it too.
func TestAFencedCommitThatLandedKeepsTheSpilledPartTheNewerManifestNames(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(objectstore.NewMem())
	ms, l, key := nearSpill(t, fb)
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true, Meanwhile: newerLeaderCommits(t, fb.Inner(), key, 5)})
	_, err := ms.Commit(ctx, 0, addSynth(880, 890))
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("commit: %v", err)
	}
	m, err := NewManifestStore(fb.Inner(), key, nil).Load(ctx)
	if err != nil || len(m.Spills) != 1 || m.SegmentCount() != 890 {
		t.Fatalf("stored: %d spills, %d segments (%v)", len(m.Spills), m.SegmentCount(), err)
	}
	if _, err := (BucketSpills{fb.Inner(), l}).LoadSpill(ctx, testPartition, m.Spills[0]); err != nil {
		t.Fatalf("the newer manifest's spilled part: %v", err)
	}
}

// A commit whose write failed with its outcome unknown and whose re-read
// failed too, and which did land, is settled before the next upload: the
// segments it committed are not uploaded again.
func TestAnUnsettledCommitIsReadBackBeforeTheNextUpload(t *testing.T) {
	ctx := context.Background()
	log, fb, a, ms := faultyArchiver(t)
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	first := log.Segments()[0]
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Head, KeyPrefix: key, Times: 1, Fail: true})
	if _, err := a.UploadNext(ctx, 0, first.NextOffset); err == nil || errors.Is(err, ErrFenced) {
		t.Fatalf("upload: %v", err)
	}
	if ms.Current().End() != 0 {
		t.Fatal("the manifest in memory moved without a known outcome")
	}
	// The next call reads the manifest (which took the commit) and has
	// nothing to upload below the limit.
	again := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(testPartition) + fmt.Sprintf("%020d", first.BaseOffset)})
	if n, err := a.UploadNext(ctx, 0, first.NextOffset); err != nil || n != 0 {
		t.Fatalf("upload again: %d, %v", n, err)
	}
	if again.Fired() != 0 || ms.Current().End() != first.NextOffset {
		t.Fatalf("the committed segment was uploaded again (%d puts); manifest ends at %d", again.Fired(), ms.Current().End())
	}
	requireNamedObjectsExist(t, fb.Inner(), l, key)
	m := ms.Current()
	requireNoOrphans(t, fb, l, m)
}

// Lost responses on every kind of upload write (segment, companion,
// manifest) cost a retry at most: the manifest ends as the local log, each
// segment once, and no object is left that it does not name.
func TestLostUploadResponsesLeaveNoGapNoDuplicateNoOrphan(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 40)
	fb := faulty.New(objectstore.NewMem())
	a, ms := newTestArchiver(t, fb, log)
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	segs := log.Segments()
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(testPartition) + fmt.Sprintf("%020d", segs[1].BaseOffset), Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(testPartition) + fmt.Sprintf("%020d", segs[3].BaseOffset), Times: 2, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 3, LoseResponse: true})
	failures := 0
	for ms.Current().End() < segs[len(segs)-2].NextOffset {
		if _, err := a.UploadNext(ctx, 0, log.LogEndOffset()); err != nil {
			if failures++; failures > 5 || errors.Is(err, ErrFenced) {
				t.Fatalf("upload failure %d: %v", failures, err)
			}
		}
	}
	m := requireNamedObjectsExist(t, fb.Inner(), l, key)
	requireManifestIsTheLog(t, m, segs, fb.Inner(), len(segs)-1)
	requireNoOrphans(t, fb, l, m)
}

// The orphan sweep after a commit whose outcome is unknown (it landed;
// neither its response nor the re-read came back) keeps what the stored
// manifest names, though the copy in memory does not name it.
func TestOrphanSweepAfterAnUnknownCommitKeepsWhatItCommitted(t *testing.T) {
	ctx := context.Background()
	log, fb, a, _ := faultyArchiver(t)
	a.cfg.SweepEvery, a.cfg.OrphanGrace, a.cfg.Spills = time.Hour, 0, BucketSpills{fb, a.cfg.Layout}
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Head, KeyPrefix: key, Times: 1, Fail: true})
	if _, err := a.UploadNext(ctx, 0, log.LogEndOffset()); err == nil {
		t.Fatal("the commit's outcome was known")
	}
	a.nextSweep = time.Time{}
	time.Sleep(time.Millisecond) // the objects are older than the sweep's now
	if err := a.maybeSweep(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	a.waitSweep()
	if m := requireNamedObjectsExist(t, fb.Inner(), l, key); len(m.Segments) == 0 {
		t.Fatal("the commit did not land")
	}
}

// Remote retention whose manifest commit and object deletes lose their
// responses: the commit is settled, every expired object goes (a lost
// delete does not stop the others), nothing named goes.
func TestRemoteRetentionWithLostResponsesDeletesEveryExpiredObject(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 40)
	fb := faulty.New(objectstore.NewMem())
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	before := ms.Current()
	keep := before.Segments[len(before.Segments)-2].BaseOffset
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true})
	lostDelete := fb.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: l.PartitionPrefix(testPartition), Times: 1, LoseResponse: true})
	var err error
	for try := 0; try < 3; try++ {
		// DeleteRecords moved the log start; retention drops what is below it.
		if _, err = ms.Commit(ctx, 0, func(m *Manifest) error { m.LogStartOffset = keep; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err = ApplyRetention(ctx, fb, l, testPartition, ms, BucketSpills{fb, l}, 0, RetentionPolicy{RetentionMs: -1, RetentionBytes: -1}, time.Now(), 0, nil); err == nil {
			break
		}
	}
	if lostDelete.Fired() != 1 {
		t.Fatal("no delete lost its response")
	}
	m := requireNamedObjectsExist(t, fb.Inner(), l, key)
	if m.Start() != keep || len(m.Segments) != 2 {
		t.Fatalf("manifest from %d with %d segments", m.Start(), len(m.Segments))
	}
	requireNoOrphans(t, fb, l, m)
}

// Topic deletion whose writes lose their responses (the marker, an object
// delete, the marker's delete) finishes when run again, as the broker does
// until it succeeds.
func TestDeleteTopicWithLostResponsesFinishesWhenRunAgain(t *testing.T) {
	ctx := context.Background()
	log, fb, a, _ := faultyArchiver(t)
	uploadAll(t, a, 0, log.LogEndOffset())
	l := a.cfg.Layout
	p := testPartition
	if err := PutTopic(ctx, fb, l, TopicDescriptor{Name: p.Topic, ID: TopicDir(p.Topic, p.TopicID)[len(p.Topic)+1:], Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	marker := l.DeletedKey(p.Topic, p.TopicID)
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: marker, Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: l.PartitionPrefix(p), Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: marker, Times: 1, LoseResponse: true})
	runs := 0
	for {
		runs++
		if err := DeleteTopic(ctx, fb, l, p.Topic, p.TopicID, time.Now(), nil); err == nil {
			break
		} else if runs > 4 {
			t.Fatalf("run %d: %v", runs, err)
		}
	}
	if left := listAttrs(t, fb.Inner(), l.TopicPrefix(p.Topic, p.TopicID)); len(left) != 1 || left[0].Key != marker {
		t.Fatalf("left %v, want the deletion marker alone", left)
	}
	if pending, err := PendingDeletions(ctx, fb.Inner(), l); err != nil || len(pending) != 0 {
		t.Fatalf("pending %v (%v)", pending, err)
	}
}

// The bucket's descriptors: a write that lost its response is in the
// bucket, and writing it again is no error.
func TestDescriptorsWithLostResponses(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(objectstore.NewMem())
	l := Layout{Prefix: "archive"}
	fb.Add(faulty.Rule{Op: faulty.Put, Times: 2, LoseResponse: true})
	if err := EnsureArchive(ctx, fb, l, time.Now()); err != nil {
		t.Fatalf("the archive descriptor whose write landed: %v", err)
	}
	p := testPartition
	d := TopicDescriptor{Name: p.Topic, ID: TopicDir(p.Topic, p.TopicID)[len(p.Topic)+1:], Partitions: 3}
	if err := PutTopic(ctx, fb, l, d); err != nil {
		t.Fatalf("the topic descriptor whose write landed: %v", err)
	}
	if err := EnsureArchive(ctx, fb, l, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTopic(ctx, fb, l, p.Topic, p.TopicID)
	if err != nil || got.Partitions != 3 {
		t.Fatalf("topic descriptor %+v, %v", got, err)
	}
}

// retryFailsItsCondition is a store whose Put of key, once, takes effect
// and then answers as the store's own retry of it would: with a failed
// precondition against the object it wrote.
type retryFailsItsCondition struct {
	objectstore.Bucket
	key   string
	fired int
}

func (b *retryFailsItsCondition) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) (objectstore.Attrs, error) {
	a, err := b.Bucket.Put(ctx, key, r, size, opts)
	if err == nil && key == b.key && b.fired == 0 {
		b.fired++
		return objectstore.Attrs{}, fmt.Errorf("%w: the retry of a put whose response was lost", objectstore.ErrPreconditionFailed)
	}
	return a, err
}

// A manifest commit whose write took effect and whose retry then failed
// its condition against that very write is a success: not a lost
// leadership, not a re-upload, no orphan, and the next commit goes on.
func TestACommitWhoseRetryFailsItsConditionOnItsOwnWriteSucceeds(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 20)
	l := Layout{Prefix: "archive"}
	rb := &retryFailsItsCondition{Bucket: objectstore.NewMem(), key: l.ManifestKey(testPartition)}
	a, ms := newTestArchiver(t, rb, log)
	segs := log.Segments()
	if n, err := a.UploadNext(ctx, 3, segs[0].NextOffset); err != nil || n != 1 || rb.fired != 1 {
		t.Fatalf("upload: %d, %v (condition failed %d times)", n, err, rb.fired)
	}
	if ms.Current().End() != segs[0].NextOffset || ms.Current().LeaderEpoch != 3 {
		t.Fatalf("manifest ends at %d, epoch %d", ms.Current().End(), ms.Current().LeaderEpoch)
	}
	uploadAll(t, a, 3, log.LogEndOffset())
	m := requireNamedObjectsExist(t, rb, l, l.ManifestKey(testPartition))
	requireManifestIsTheLog(t, m, segs, rb, len(segs)-1)
	requireNoOrphans(t, rb, l, m)
}

// A spilled part whose write lost its response fails the commit before
// the manifest is written: the part is deleted with the commit's others,
// not left for the sweep.
func TestASpilledPartWhoseResponseWasLostIsNotLeft(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(objectstore.NewMem())
	ms, l, _ := nearSpill(t, fb)
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(testPartition) + "spill-", Times: 1, LoseResponse: true})
	_, err := ms.Commit(ctx, 0, addSynth(880, 890))
	if !errors.Is(err, faulty.ErrLostResponse) {
		t.Fatalf("commit: %v", err)
	}
	if left := listKeys(t, fb, ".manifest"); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
	// The retry spills and commits.
	commitSynth(t, ms, 880, 890, 10)
	if m := ms.Current(); len(m.Spills) != 1 || m.SegmentCount() != 890 {
		t.Fatalf("%d spills, %d segments", len(m.Spills), m.SegmentCount())
	}
}

// DeleteRecords' commit of a new log start, which landed with its outcome
// unknown (response and re-read lost), is seen by the next retention run:
// the segments below the start go without waiting for another commit.
func TestRetentionReadsBackALogStartOfUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 40)
	fb := faulty.New(objectstore.NewMem())
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	start := ms.Current().Segments[2].BaseOffset
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Head, KeyPrefix: key, Times: 1, Fail: true})
	if _, err := ms.Commit(ctx, 0, func(m *Manifest) error { m.LogStartOffset = start; return nil }); err == nil {
		t.Fatal("the commit's outcome was known")
	}
	m, err := ApplyRetention(ctx, fb, l, testPartition, ms, BucketSpills{fb, l}, 0, RetentionPolicy{RetentionMs: -1, RetentionBytes: -1}, time.Now(), 0, nil)
	if err != nil || m == nil || m.Start() != start {
		t.Fatalf("retention: %v, manifest %+v", err, m)
	}
	m = requireNamedObjectsExist(t, fb.Inner(), l, key)
	requireNoOrphans(t, fb, l, m)
}

// An orphan sweep whose delete loses its response (a batch, here of
// every orphan: none is known deleted) has deleted them all the same: one
// pass leaves no orphan.
func TestOrphanSweepWithALostDeleteDeletesEveryOrphan(t *testing.T) {
	ctx := context.Background()
	log, fb, a, _ := faultyArchiver(t)
	l := a.cfg.Layout
	// A commit that failed before its write leaves its batch's objects.
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.ManifestKey(testPartition), Times: 1, Fail: true})
	if _, err := a.UploadNext(ctx, 0, log.LogEndOffset()); err == nil {
		t.Fatal("the commit succeeded")
	}
	m, err := NewManifestStore(fb, l.ManifestKey(testPartition), nil).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	left := PlanOrphans(m, nil, listAttrs(t, fb, l.PartitionPrefix(testPartition)), time.Now().Add(time.Hour), 0)
	if len(left) < 2 {
		t.Fatalf("orphans %v", left)
	}
	lost := fb.Add(faulty.Rule{Op: faulty.Delete, Times: 1, LoseResponse: true})
	n, err := CleanOrphans(ctx, fb, l, testPartition, m, BucketSpills{fb, l}, time.Now().Add(time.Hour), 0, nil)
	if !errors.Is(err, faulty.ErrLostResponse) || lost.Fired() != 1 || n != 0 {
		t.Fatalf("cleaned %d of %d: %v", n, len(left), err)
	}
	if got := listAttrs(t, fb, l.PartitionPrefix(testPartition)); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

// A segment or companion PUT that took effect and lost its response is
// settled by looking at its key: the batch commits at once, nothing goes
// up twice.
func TestALostUploadResponseIsSettledWithoutAReUpload(t *testing.T) {
	ctx := context.Background()
	log, fb, a, ms := faultyArchiver(t)
	l := a.cfg.Layout
	segs := log.Segments()
	prefix := l.PartitionPrefix(testPartition) + fmt.Sprintf("%020d", segs[0].BaseOffset)
	lost := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: prefix, Times: 2, LoseResponse: true}) // the segment and its companion
	n, err := a.UploadNext(ctx, 0, segs[0].NextOffset)
	if err != nil || n != 1 || lost.Fired() != 2 {
		t.Fatalf("upload: %d, %v (lost %d)", n, err, lost.Fired())
	}
	if puts := fb.Calls(faulty.Put); puts != 3 { // segment, companion, manifest
		t.Fatalf("%d puts", puts)
	}
	m := requireNamedObjectsExist(t, fb.Inner(), l, l.ManifestKey(testPartition))
	if m.End() != segs[0].NextOffset || ms.Current().End() != m.End() {
		t.Fatalf("manifest ends at %d", m.End())
	}
	requireNoOrphans(t, fb, l, m)
}

// Writes that land late: the store acts on a request after its writer
// gave up on it (faulty's Late), after a newer leader took over and its
// orphan sweep ran past the grace. Each test checks that the partition
// ends with no object a manifest names missing, and no orphan a later
// sweep would not find.

// waitLanded waits until the writes f held have reached the store.
func waitLanded(t *testing.T, f *faulty.Fault, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); f.Landed() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d held writes landed", f.Landed(), n)
		}
	}
}

// sweepPastGrace deletes the test partition's orphans as a sweep an hour
// from now would, with a grace of a minute.
func sweepPastGrace(t *testing.T, b objectstore.Bucket, l Layout, m *Manifest) int {
	t.Helper()
	n, err := CleanOrphans(context.Background(), b, l, testPartition, m, BucketSpills{b, l}, time.Now().Add(time.Hour), time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Regression: an older leader's manifest commit, held on its way, landed
// after a newer leader had swept the older one's uploads as orphans, and
// nothing had changed the manifest meanwhile, so its condition held: the
// manifest named deleted objects. A newer leader fences the manifest
// before it sweeps.
func TestALateCommitOfAnOlderLeaderCannotNameWhatTheSweepDeleted(t *testing.T) {
	ctx := context.Background()
	log, fb, old, _ := faultyArchiver(t)
	old.cfg.CallTimeout = 100 * time.Millisecond
	l := old.cfg.Layout
	key := l.ManifestKey(testPartition)
	segs := log.Segments()
	uploadAll(t, old, 1, segs[1].NextOffset) // a manifest to build on
	release := make(chan struct{})
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, Late: release})
	if _, err := old.UploadNext(ctx, 1, log.LogEndOffset()); err == nil {
		t.Fatal("the held commit returned")
	}

	// The newer leader's term starts: read, fence, sweep.
	nw := NewManifestStore(fb, key, nil)
	if _, err := nw.Load(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := nw.Fence(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if sweepPastGrace(t, fb, l, m) == 0 {
		t.Fatal("the sweep found none of the older leader's uploads")
	}
	close(release)
	waitLanded(t, late, 1)
	m = requireNamedObjectsExist(t, fb.Inner(), l, key)
	if m.LeaderEpoch != 2 {
		t.Fatalf("stored manifest at epoch %d: the late commit landed", m.LeaderEpoch)
	}
	requireNoOrphans(t, fb, l, m)
}

// The same within one leader's term: its commit of unknown outcome (the
// write held, the read back failing) is fenced when it is settled, so
// the sweep after the segments' second upload may delete the first's.
func TestALateCommitOfUnknownOutcomeIsFencedBeforeTheSweep(t *testing.T) {
	ctx := context.Background()
	log, fb, a, ms := faultyArchiver(t)
	a.cfg.CallTimeout = 100 * time.Millisecond
	a.cfg.SweepEvery, a.cfg.OrphanGrace, a.cfg.Spills = time.Hour, 0, BucketSpills{fb, a.cfg.Layout}
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	segs := log.Segments()
	uploadAll(t, a, 1, segs[1].NextOffset)
	release := make(chan struct{})
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, Late: release})
	if _, err := a.UploadNext(ctx, 1, log.LogEndOffset()); err == nil {
		t.Fatal("the held commit returned")
	}
	// While the write may still land, the sweep waits.
	a.nextSweep = time.Time{}
	if err := a.maybeSweep(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	if !a.nextSweep.IsZero() {
		t.Fatal("the sweep ran with a commit of unknown outcome pending")
	}
	uploadAll(t, a, 1, log.LogEndOffset())
	if ms.hasPending() {
		t.Fatal("still pending after the next commits")
	}
	if sweepPastGrace(t, fb, l, ms.Current()) == 0 {
		t.Fatal("the sweep found none of the first upload's objects")
	}
	close(release)
	waitLanded(t, late, 1)
	m := requireNamedObjectsExist(t, fb.Inner(), l, key)
	requireManifestIsTheLog(t, m, segs, fb.Inner(), len(segs)-1)
	requireNoOrphans(t, fb, l, m)
}

// A segment PUT held on its way lands after its upload was given up and
// its objects deleted, and after the sweep: no manifest names it, and the
// next sweep past the grace deletes it.
func TestALateSegmentWriteIsAnOrphanTheNextSweepDeletes(t *testing.T) {
	ctx := context.Background()
	log, fb, a, ms := faultyArchiver(t)
	a.cfg.CallTimeout = 100 * time.Millisecond
	l := a.cfg.Layout
	key := l.ManifestKey(testPartition)
	segs := log.Segments()
	release := make(chan struct{})
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(testPartition) + fmt.Sprintf("%020d", segs[0].BaseOffset), Times: 1, Late: release})
	if _, err := a.UploadNext(ctx, 1, log.LogEndOffset()); err == nil {
		t.Fatal("the held upload returned")
	}
	uploadAll(t, a, 1, log.LogEndOffset())
	sweepPastGrace(t, fb, l, ms.Current())
	close(release)
	waitLanded(t, late, 1)
	m := requireNamedObjectsExist(t, fb.Inner(), l, key)
	if len(m.Segments) != len(segs)-1 || m.Segments[0].BaseOffset != segs[0].BaseOffset {
		t.Fatalf("the manifest names %d segments, want %d from %d", len(m.Segments), len(segs)-1, segs[0].BaseOffset)
	}
	if sweepPastGrace(t, fb, l, m) != 1 {
		t.Fatal("the next sweep did not delete the late object")
	}
	requireNoOrphans(t, fb, l, m)
}

// A topic descriptor write held on its way lands after the topic's
// deletion finished: the deletion marker stays, so the bucket reader does
// not list the topic again, and the next deletion pass removes the
// descriptor.
func TestALateTopicDescriptorDoesNotResurrectADeletedTopic(t *testing.T) {
	ctx := context.Background()
	log, fb, a, _ := faultyArchiver(t)
	uploadAll(t, a, 0, log.LogEndOffset())
	l := a.cfg.Layout
	p := testPartition
	d := TopicDescriptor{Name: p.Topic, ID: TopicDir(p.Topic, p.TopicID)[len(p.Topic)+1:], Partitions: 1}
	if err := PutTopic(ctx, fb, l, d); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.TopicKey(p.Topic, p.TopicID), Times: 1, Late: release})
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	d.Configs = map[string]string{"retention.ms": "-1"}
	if err := PutTopic(wctx, fb, l, d); err == nil {
		t.Fatal("the held descriptor write returned")
	}
	cancel()
	if err := DeleteTopic(ctx, fb, l, p.Topic, p.TopicID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if pending, err := PendingDeletions(ctx, fb, l); err != nil || len(pending) != 0 {
		t.Fatalf("pending after the deletion: %v (%v)", pending, err)
	}
	close(release)
	waitLanded(t, late, 1)
	if _, err := fb.Inner().Head(ctx, l.TopicKey(p.Topic, p.TopicID)); err != nil {
		t.Fatalf("the late descriptor did not land: %v", err)
	}
	if topics, err := ListTopics(ctx, fb, l); err != nil || len(topics) != 0 {
		t.Fatalf("the bucket lists %d topics after the deletion (%v)", len(topics), err)
	}
	pending, err := PendingDeletions(ctx, fb, l)
	if err != nil || len(pending) != 1 || pending[0].Name != p.Topic {
		t.Fatalf("pending: %+v (%v)", pending, err)
	}
	if err := DeleteTopic(ctx, fb, l, p.Topic, p.TopicID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if left := listAttrs(t, fb.Inner(), l.TopicPrefix(p.Topic, p.TopicID)); len(left) != 1 || left[0].Key != l.DeletedKey(p.Topic, p.TopicID) {
		t.Fatalf("left %v, want the deletion marker alone", left)
	}
}

// A write held on its way lands under a topic after its deletion
// finished: SweepDeletedTopic finds it with one LIST and deletes it,
// keeping the marker; RecentDeletions names the topic while its marker is
// recent, though its directory holds the marker alone, which
// PendingDeletions does not.
func TestSweepDeletedTopicDeletesALateWrite(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(objectstore.NewMem())
	l := Layout{Prefix: "archive"}
	p := testPartition
	key := l.TopicPrefix(p.Topic, p.TopicID) + "0/late.log"
	release := make(chan struct{})
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Times: 1, Late: release})
	go fb.Put(ctx, key, strings.NewReader("late"), 4, objectstore.PutOptions{})
	waitFor(t, "the late write to be on its way", func() bool { return late.Fired() == 1 })
	before := time.Now()
	if err := DeleteTopic(ctx, fb, l, p.Topic, p.TopicID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if pending, err := PendingDeletions(ctx, fb, l); err != nil || len(pending) != 0 {
		t.Fatalf("pending after the deletion: %+v (%v)", pending, err)
	}
	recent, err := RecentDeletions(ctx, fb, l, before.Add(-time.Minute))
	if err != nil || len(recent) != 1 || recent[0].Name != p.Topic {
		t.Fatalf("recent deletions: %+v (%v)", recent, err)
	}
	if old, err := RecentDeletions(ctx, fb, l, time.Now().Add(time.Minute)); err != nil || len(old) != 0 {
		t.Fatalf("deletions since a minute from now: %+v (%v)", old, err)
	}
	lists := fb.Calls(faulty.List)
	if n, err := SweepDeletedTopic(ctx, fb, l, p.Topic, p.TopicID, nil); n != 0 || err != nil {
		t.Fatalf("a sweep of the marker alone found %d (%v)", n, err)
	}
	if got := fb.Calls(faulty.List) - lists; got != 1 {
		t.Fatalf("a sweep made %d LISTs, want 1", got)
	}
	close(release)
	waitLanded(t, late, 1)
	if n, err := SweepDeletedTopic(ctx, fb, l, p.Topic, p.TopicID, nil); n != 1 || err != nil {
		t.Fatalf("the sweep after the late write found %d (%v)", n, err)
	}
	left := listAttrs(t, fb.Inner(), l.TopicPrefix(p.Topic, p.TopicID))
	if len(left) != 1 || left[0].Key != l.DeletedKey(p.Topic, p.TopicID) {
		t.Fatalf("left %v, want the deletion marker alone", left)
	}
}
