package broker_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// startWatchingDeletions starts a tiered broker over fb with a short
// orphan grace (the cadence of a deleted topic's watch) and the given
// watch.
func startWatchingDeletions(t *testing.T, fb objectstore.Bucket, watch time.Duration) *brokertest.Broker {
	t.Helper()
	return brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: fb, UploadInterval: 50 * time.Millisecond,
			OrphanGrace: 100 * time.Millisecond, DeletedTopicWatch: watch}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
}

// deletedTopicPrefix creates topic, waits for its objects to be in the bucket,
// and returns its directory's prefix.
func deletedTopicPrefix(t *testing.T, b *brokertest.Broker, fb objectstore.Bucket, topic string) string {
	t.Helper()
	createTieredTopic(t, b, topic)
	prefix := tiering.Layout{}.TopicPrefix(topic, topicIDOf(t, b.Client(), topic))
	waitFor(t, "the topic's objects", 30*time.Second, func() bool { return holds(t, fb, prefix) > 0 })
	return prefix
}

// holds counts the objects under prefix other than a deletion marker.
func holds(t *testing.T, b objectstore.Bucket, prefix string) int {
	t.Helper()
	n := 0
	for _, k := range listBucket(t, b, "") {
		if strings.HasPrefix(k, prefix) && !strings.HasSuffix(k, "/deleted.json") {
			n++
		}
	}
	return n
}

// Regression: a write on its way under a topic when the topic was deleted
// (an upload of a leader that stalled, a request the store acts on late)
// that landed later than the deletion's second pass, one grace after the
// deletion, stayed in the bucket until the broker's next start. Now the
// broker keeps looking at the deleted topic's directory about once per
// grace and deletes what lands there.
func TestAWriteLandingUnderADeletedTopicAfterItsSecondPassIsDeleted(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startWatchingDeletions(t, fb, time.Minute)
	prefix := deletedTopicPrefix(t, b, fb, "doomed")

	// A write on its way, held until the test lands it.
	land := make(chan struct{})
	lateKey := prefix + "0/00000000000000000000-late.log"
	late := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: lateKey, Times: 1, Late: land})
	go fb.Put(context.Background(), lateKey, bytes.NewReader([]byte("late")), 4, objectstore.PutOptions{})
	waitFor(t, "the late write to be on its way", 30*time.Second, func() bool { return late.Fired() == 1 })

	if _, err := b.Admin().DeleteTopic(testCtx(t), "doomed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deletion to leave the marker alone", 30*time.Second, func() bool { return holds(t, fb, prefix) == 0 })
	// The directory is looked at again (the deletion's second pass),
	// and holds the marker alone.
	passes := fb.Add(faulty.Rule{Op: faulty.List, KeyPrefix: prefix})
	waitFor(t, "a pass after the deletion", 30*time.Second, func() bool { return passes.Fired() >= 1 })

	close(land)
	waitFor(t, "the late write to land", 30*time.Second, func() bool { return late.Landed() == 1 })
	waitFor(t, "the late object to be deleted", 30*time.Second, func() bool { return holds(t, fb, prefix) == 0 })
	if _, err := fb.Inner().Head(testCtx(t), prefix+"deleted.json"); err != nil {
		t.Fatalf("the deletion marker: %v", err)
	}
}

// A deleted topic's directory that holds its marker alone is looked at
// no more once the watch has passed: the broker does not LIST every
// deleted topic forever.
func TestADeletedTopicsWatchEnds(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startWatchingDeletions(t, fb, 300*time.Millisecond)
	prefix := deletedTopicPrefix(t, b, fb, "quiet")
	if _, err := b.Admin().DeleteTopic(testCtx(t), "quiet"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deletion to leave the marker alone", 30*time.Second, func() bool { return holds(t, fb, prefix) == 0 })
	waitFor(t, "the deleted topic's watch to end", 30*time.Second, func() bool { return b.B.DeletionsRunning() == 0 })
	passes := fb.Add(faulty.Rule{Op: faulty.List, KeyPrefix: prefix})
	// Another topic's deletion runs its passes meanwhile, so the broker
	// has had as many chances to look at the first as it takes.
	other := deletedTopicPrefix(t, b, fb, "later")
	if _, err := b.Admin().DeleteTopic(testCtx(t), "later"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other deletion's watch to end", 30*time.Second, func() bool {
		return holds(t, fb, other) == 0 && b.B.DeletionsRunning() == 0
	})
	if n := passes.Fired(); n != 0 {
		t.Fatalf("the first deleted topic's directory was listed %d times after its watch ended", n)
	}
}
