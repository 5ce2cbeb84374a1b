package tiering

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

func TestPlanRetention(t *testing.T) {
	seg := func(base, next, size, ts int64) Segment {
		return Segment{BaseOffset: base, NextOffset: next, Size: size, MaxTimestamp: ts}
	}
	m := &Manifest{Segments: []Segment{seg(0, 10, 100, 1000), seg(10, 20, 100, 2000), seg(20, 30, 100, 3000)}}
	for _, tc := range []struct {
		name       string
		pol        RetentionPolicy
		now, local int64
		logStart   int64
		wantN      int
		wantStart  int64
	}{
		{"forever", RetentionPolicy{-1, -1}, 1e9, 0, 0, 0, 0},
		{"by time", RetentionPolicy{1500, -1}, 3600, 0, 0, 2, 20},
		{"by time, nothing old enough", RetentionPolicy{5000, -1}, 3600, 0, 0, 0, 0},
		{"by size counts local bytes", RetentionPolicy{-1, 150}, 0, 100, 0, 2, 20},
		{"by size, remote only", RetentionPolicy{-1, 150}, 0, 0, 0, 1, 10},
		{"by size, within the limit", RetentionPolicy{-1, 250}, 0, 0, 0, 0, 0},
		{"below the log start", RetentionPolicy{-1, -1}, 0, 0, 12, 1, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mm := m.Clone()
			mm.LogStartOffset = tc.logStart
			plan, err := PlanRetention(context.Background(), BucketSpills{}, testPartition, mm, tc.pol, tc.now, tc.local)
			if err != nil || plan.DropSegments != tc.wantN || plan.LogStart != tc.wantStart {
				t.Fatalf("got %d segments, start %d (%v); want %d, %d", plan.DropSegments, plan.LogStart, err, tc.wantN, tc.wantStart)
			}
		})
	}
}

// A plan drops at most retentionBatch segments, the oldest, counting a
// spilled part's segments, but always the first expired part however
// large.
func TestPlanRetentionDropsABoundedBatch(t *testing.T) {
	defer func(n int) { retentionBatch = n }(retentionBatch)
	retentionBatch = 3
	seg := func(base int64) Segment {
		return Segment{BaseOffset: base, NextOffset: base + 10, Size: 100, MaxTimestamp: 1000}
	}
	spill := func(base int64, count uint32) Spill {
		return Spill{BaseOffset: base, NextOffset: base + 10*int64(count), Count: count, Bytes: 100 * int64(count), MaxTimestamp: 1000}
	}
	old := RetentionPolicy{RetentionMs: 500, RetentionBytes: -1} // everything expired at 2000
	for _, tc := range []struct {
		name                 string
		m                    *Manifest
		wantSpills, wantSegs int
		wantStart            int64
	}{
		{"segments", &Manifest{Segments: []Segment{seg(0), seg(10), seg(20), seg(30), seg(40)}}, 0, 3, 30},
		{"parts and segments", &Manifest{Spills: []Spill{spill(0, 2)}, Segments: []Segment{seg(20), seg(30), seg(40)}}, 1, 1, 30},
		{"parts up to the bound", &Manifest{Spills: []Spill{spill(0, 2), spill(20, 2)}, Segments: []Segment{seg(40)}}, 1, 0, 20},
		{"a part past the bound alone", &Manifest{Spills: []Spill{spill(0, 5), spill(50, 1)}, Segments: []Segment{seg(60)}}, 1, 0, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A spilled part it would have to read is not in this (nil)
			// bucket: the plan must not need it.
			plan, err := PlanRetention(context.Background(), BucketSpills{}, testPartition, tc.m, old, 2000, 0)
			if err != nil || plan.DropSpills != tc.wantSpills || plan.DropSegments != tc.wantSegs || plan.Trim != nil || plan.LogStart != tc.wantStart {
				t.Fatalf("got %+v (%v); want %d parts, %d segments, start %d", plan, err, tc.wantSpills, tc.wantSegs, tc.wantStart)
			}
		})
	}
}

func TestRemoteRetentionCommitsTheManifestBeforeDeletingObjects(t *testing.T) {
	log, _ := testLog(t, 2000, 30)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m0 := ms.Current()
	// The first object delete fails: the manifest has already dropped
	// the segment, so nothing points at a missing object.
	fb.add(&fault{op: "delete", n: 1})
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: m0.Bytes() - m0.Segments[0].Size}
	m, err := ApplyRetention(context.Background(), fb, a.cfg.Layout, testPartition, ms, BucketSpills{fb, a.cfg.Layout}, 0, pol, time.Now(), 0, nil)
	if !errors.Is(err, errInjected) || m == nil || len(m.Segments) != len(m0.Segments)-1 || m.LogStartOffset != m0.Segments[0].NextOffset {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	// Orphan cleanup finishes the job: the object whose delete failed
	// (the others were deleted all the same).
	n, err := CleanOrphans(context.Background(), fb, a.cfg.Layout, testPartition, m, BucketSpills{fb, a.cfg.Layout}, time.Now().Add(time.Hour), time.Minute, nil)
	if err != nil || n != 1 {
		t.Fatalf("cleaned %d (%v)", n, err)
	}
	if got := len(listKeys(t, fb, ".log")); got != len(m.Segments) {
		t.Fatalf("%d segment objects for %d entries", got, len(m.Segments))
	}
}

// deleteCounting counts the calls of Delete and DeleteMany.
type deleteCounting struct {
	objectstore.Bucket
	deletes, batches, most atomic.Int64
}

func (b *deleteCounting) Delete(ctx context.Context, key string) error {
	b.deletes.Add(1)
	return b.Bucket.Delete(ctx, key)
}

func (b *deleteCounting) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	b.batches.Add(1)
	if n := int64(len(keys)); n > b.most.Load() {
		b.most.Store(n)
	}
	return b.Bucket.DeleteMany(ctx, keys)
}

// The objects a retention pass drops go in one batch (Bucket.DeleteMany:
// S3's DeleteObjects, a request per 1,000 keys), not a request each. One
// at a time, a pass that dropped many segments held the archive loop
// while the bucket answered each delete (the tier soak's upload lag grew
// to a dozen segments under retention.bytes).
func TestRemoteRetentionDeletesItsObjectsInABatch(t *testing.T) {
	log, _ := testLog(t, 2000, 30)
	db := &deleteCounting{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, db, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m0 := ms.Current()
	if len(m0.Segments) < 3 {
		t.Fatalf("%d segments uploaded; the test needs 3", len(m0.Segments))
	}
	last := m0.Segments[len(m0.Segments)-1]
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: last.Size}
	m, err := ApplyRetention(context.Background(), db, a.cfg.Layout, testPartition, ms, BucketSpills{db, a.cfg.Layout}, 0, pol, time.Now(), 0, nil)
	if err != nil || m == nil || len(m.Segments) != 1 {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	if want := 2 * int64(len(m0.Segments)-1); db.batches.Load() != 1 || db.most.Load() != want || db.deletes.Load() != 0 {
		t.Fatalf("%d batches of at most %d keys and %d single deletes; want one batch of %d", db.batches.Load(), db.most.Load(), db.deletes.Load(), want)
	}
	if got := len(listKeys(t, db, ".log")); got != 1 {
		t.Fatalf("%d segment objects left for 1 entry", got)
	}
}

// A pass of remote retention drops a bounded batch of segments, the
// oldest: lowering the retention of a topic with a year of history
// expires hundreds of thousands at once, and one pass would hold all
// their names and delete for minutes. The caller goes on with passes
// while one dropped some.
func TestRemoteRetentionGoesInPassesOfABoundedBatch(t *testing.T) {
	defer func(n int) { retentionBatch = n }(retentionBatch)
	retentionBatch = 2
	log, _ := testLog(t, 2000, 30)
	db := &deleteCounting{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, db, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m0 := ms.Current()
	n := len(m0.Segments)
	if n < 6 {
		t.Fatalf("%d segments uploaded; the test needs 6", n)
	}
	// Everything but the last segment expires.
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: m0.Segments[n-1].Size}
	passes := 0
	for {
		m, err := ApplyRetention(context.Background(), db, a.cfg.Layout, testPartition, ms, BucketSpills{db, a.cfg.Layout}, 0, pol, time.Now(), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil {
			break
		}
		passes++
		if dropped := n - len(m.Segments); dropped > 2*passes || m.LogStartOffset != m0.Segments[dropped-1].NextOffset {
			t.Fatalf("pass %d: %d segments dropped, log start %d", passes, dropped, m.LogStartOffset)
		}
	}
	if want := (n - 1 + 1) / 2; passes != want || db.most.Load() > 4 {
		t.Fatalf("%d passes deleting at most %d objects each; want %d passes of at most 4", passes, db.most.Load(), want)
	}
	if got := len(listKeys(t, db, ".log")); got != 1 {
		t.Fatalf("%d segment objects left for 1 entry", got)
	}
}

func TestDeleteTopicIsResumable(t *testing.T) {
	ctx := context.Background()
	log, _ := testLog(t, 2000, 20)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, _ := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	l := a.cfg.Layout
	if err := PutTopic(ctx, fb, l, TopicDescriptor{Name: "events", ID: TopicDir("events", testPartition.TopicID)[7:], Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	fb.add(&fault{op: "delete", match: ".log", n: 1})
	if err := DeleteTopic(ctx, fb, l, "events", testPartition.TopicID, time.Now(), nil); !errors.Is(err, errInjected) {
		t.Fatalf("first attempt: %v", err)
	}
	if topics, _ := ListTopics(ctx, fb, l); len(topics) != 0 {
		t.Fatalf("a topic being deleted is listed: %+v", topics)
	}
	pending, err := PendingDeletions(ctx, fb, l)
	if err != nil || len(pending) != 1 || pending[0].Name != "events" {
		t.Fatalf("pending %+v %v", pending, err)
	}
	if err := DeleteTopic(ctx, fb, l, "events", testPartition.TopicID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if left := listKeys(t, fb, ""); len(left) != 1 || left[0] != l.DeletedKey("events", testPartition.TopicID) {
		t.Fatalf("left %v, want the deletion marker alone", left)
	}
	if pending, err := PendingDeletions(ctx, fb, l); err != nil || len(pending) != 0 {
		t.Fatalf("pending after the deletion %+v %v", pending, err)
	}
}

// TestRetentionWithNothingExpiredDoesNotWaitForACommit: remote retention
// that finds nothing expired answers while a manifest commit is held in
// the store (the archive loop runs it between the starts of uploads, and
// waited for an upload's commit on every run); with something expired it
// waits for the commit, and then commits.
func TestRetentionWithNothingExpiredDoesNotWaitForACommit(t *testing.T) {
	log, _ := testLog(t, 2000, 30)
	release := make(chan struct{})
	var hold atomic.Bool
	fb := &faultyBucket{Bucket: objectstore.NewMem(), putGate: func(key string) {
		if strings.HasSuffix(key, "/manifest") && hold.Load() {
			<-release
		}
	}}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m0 := ms.Current()
	hold.Store(true)
	held := make(chan error, 1)
	go func() {
		_, err := ms.Commit(context.Background(), 0, func(m *Manifest) error { return nil })
		held <- err
	}()
	time.Sleep(20 * time.Millisecond) // the commit takes the lock and waits in its PUT
	spills := BucketSpills{fb, a.cfg.Layout}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keep := RetentionPolicy{RetentionMs: -1, RetentionBytes: -1}
	kept := make(chan error, 1)
	go func() {
		m, err := ApplyRetention(ctx, fb, a.cfg.Layout, testPartition, ms, spills, 0, keep, time.Now(), 0, nil)
		if m != nil && err == nil {
			err = fmt.Errorf("committed %+v", m)
		}
		kept <- err
	}()
	select {
	case err := <-kept:
		if err != nil {
			t.Fatalf("nothing expired: %v", err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("retention with nothing expired waited for the commit held in the store")
	}
	expire := RetentionPolicy{RetentionMs: -1, RetentionBytes: m0.Bytes() - m0.Segments[0].Size}
	applied := make(chan error, 1)
	go func() {
		_, err := ApplyRetention(ctx, fb, a.cfg.Layout, testPartition, ms, spills, 0, expire, time.Now(), 0, nil)
		applied <- err
	}()
	select {
	case err := <-applied:
		t.Fatalf("retention with a segment expired answered during the commit: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	hold.Store(false)
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if m := ms.Current(); len(m.Segments) != len(m0.Segments)-1 {
		t.Fatalf("%d segments after retention, want %d", len(m.Segments), len(m0.Segments)-1)
	}
}
