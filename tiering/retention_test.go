package tiering

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// pairedDeletes is a bucket whose deletes each wait (up to a second) for
// another delete to be in flight, and which records the most in flight.
type pairedDeletes struct {
	objectstore.Bucket
	mu       sync.Mutex
	inFlight int
	most     int
	closed   bool
	paired   chan struct{}
}

func (b *pairedDeletes) Delete(ctx context.Context, key string) error {
	b.mu.Lock()
	b.inFlight++
	b.most = max(b.most, b.inFlight)
	if b.inFlight == 2 && !b.closed {
		b.closed = true
		close(b.paired)
	}
	b.mu.Unlock()
	select {
	case <-b.paired:
	case <-time.After(time.Second):
	}
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	return b.Bucket.Delete(ctx, key)
}

// TestRemoteRetentionDeletesSeveralObjectsAtOnce: the objects a retention
// pass drops are deleted several at a time. One at a time, a pass that
// dropped many segments held the archive loop, which runs it between
// uploads, while the bucket answered each delete (the tier soak's upload
// lag grew to a dozen segments under retention.bytes).
func TestRemoteRetentionDeletesSeveralObjectsAtOnce(t *testing.T) {
	log, _ := testLog(t, 2000, 30)
	pb := &pairedDeletes{Bucket: objectstore.NewMem(), paired: make(chan struct{})}
	a, ms := newTestArchiver(t, pb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m0 := ms.Current()
	if len(m0.Segments) < 3 {
		t.Fatalf("%d segments uploaded; the test needs 3", len(m0.Segments))
	}
	last := m0.Segments[len(m0.Segments)-1]
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: last.Size}
	m, err := ApplyRetention(context.Background(), pb, a.cfg.Layout, testPartition, ms, BucketSpills{pb, a.cfg.Layout}, 0, pol, time.Now(), 0, nil)
	if err != nil || m == nil || len(m.Segments) != 1 {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	if pb.most < 2 {
		t.Fatalf("at most %d delete in flight at once", pb.most)
	}
	if got := len(listKeys(t, pb, ".log")); got != 1 {
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
