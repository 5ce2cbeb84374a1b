package broker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// remoteManifest reads partition 0's manifest of topic from the bucket.
func remoteManifest(t *testing.T, bucket objectstore.Bucket, adm *kadm.Client, topic string) *tiering.Manifest {
	t.Helper()
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	m, err := tiering.NewManifestStore(bucket, tiering.Layout{}.ManifestKey(part), nil).Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// segmentObjects lists the segment and companion objects of topic's
// partition 0 in the bucket (all but the manifest and the sweep note), and
// the object IDs the manifest (with its spilled parts) names.
func segmentObjects(t *testing.T, bucket objectstore.Bucket, adm *kadm.Client, topic string) (objects []string, named map[string]bool, m *tiering.Manifest) {
	t.Helper()
	m = remoteManifest(t, bucket, adm, topic)
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	named = map[string]bool{}
	if err := tiering.WalkSegments(testCtx(t), tiering.BucketSpills{Bucket: bucket}, part, m, 0, nil, func(s tiering.Segment) bool {
		named[tiering.Layout{}.SegmentKey(part, s.BaseOffset, s.ID)] = true
		named[tiering.Layout{}.CompanionKey(part, s.BaseOffset, s.ID)] = true
		return true
	}); err != nil {
		t.Fatal(err)
	}
	prefix := tiering.Layout{}.PartitionPrefix(part)
	for _, k := range listBucket(t, bucket, "") {
		if strings.HasPrefix(k, prefix) && !strings.HasSuffix(k, "/manifest") && !strings.HasSuffix(k, "/swept.json") {
			objects = append(objects, k)
		}
	}
	return objects, named, m
}

// produceTieredPast600 creates topic (one partition, replication factor
// rf, 64 KiB segments, one byte kept locally, no total retention),
// produces records 0-999 to it and waits until the manifest in bucket
// names the segments past offset 600.
func produceTieredPast600(t *testing.T, c *brokertest.Cluster, bucket objectstore.Bucket, topic string, rf int16) *kadm.Client {
	t.Helper()
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	if _, err := c.Admin().CreateTopic(ctx, 1, rf, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(c, topic)
	produceTieredValues(t, cl, 0, 1000, 50)
	adm := c.Admin()
	brokertest.WaitFor(t, 30*time.Second, "uploads past offset 600", func() (bool, string) {
		_, _, m := segmentObjects(t, bucket, adm, topic)
		return m.End() > 600, fmt.Sprintf("manifest ends at %d", m.End())
	})
	return adm
}

// startSweepingCluster starts 3 brokers tiering to bucket, with a short
// orphan grace (500 ms) and frequent retention checks.
func startSweepingCluster(t *testing.T, bucket objectstore.Bucket) *brokertest.Cluster {
	return brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			OrphanGrace: 500 * time.Millisecond}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
		cfg.ReplicaLagTimeMax = 15 * time.Second
	})
}

// TestRemoteRetentionAndTopicDeletionFinishUnderANewLeader: the leader's
// remote retention commits the manifest without the expired segments but
// cannot delete their objects (the store refuses deletes), then stops; the
// next leader finds the objects no manifest entry names and deletes them,
// leaving the bucket holding exactly what the manifest names, and the
// records from the new log start read back. Then the topic is deleted while
// deletes still fail and every broker stops before it could finish; a
// broker started again resumes the deletion from its marker and leaves
// nothing of the topic in the bucket but its deletion marker.
func TestRemoteRetentionAndTopicDeletionFinishUnderANewLeader(t *testing.T) {
	bucket := faulty.New(objectstore.NewMem())
	c := startSweepingCluster(t, bucket)
	ctx := testCtx(t)
	const topic = "expiring"
	adm := produceTieredPast600(t, c, bucket, topic, 3)
	// Every replica at the end, the leader's high watermark too (one
	// that took over meanwhile would refuse offsets past its own).
	waitReplicated(t, c, topic, 1000)

	// Retention under a store that refuses deletes: the manifest moves,
	// the objects stay.
	noDeletes := bucket.Add(faulty.Rule{Op: faulty.Delete, Fail: true})
	before, _, _ := segmentObjects(t, bucket, adm, topic)
	dr, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: 500}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	var orphans []string
	brokertest.WaitFor(t, 30*time.Second, "remote retention committing the manifest without the expired segments", func() (bool, string) {
		objs, named, m := segmentObjects(t, bucket, adm, topic)
		orphans = orphans[:0]
		for _, k := range objs {
			if !named[k] {
				orphans = append(orphans, k)
			}
		}
		return m.LogStartOffset == 500 && m.Start() >= 400 && len(orphans) > 0 && noDeletes.Fired() > 0,
			fmt.Sprintf("manifest from %d (log start %d), %d objects not named, %d deletes refused", m.Start(), m.LogStartOffset, len(orphans), noDeletes.Fired())
	})
	for _, k := range orphans {
		if !slices.Contains(before, k) {
			t.Fatalf("object %s not named by the manifest was not there before retention", k)
		}
	}

	// The leader stops; the next one cleans up what its predecessor left,
	// once the objects are older than the orphan grace (an upload in
	// flight is younger): the sweep runs as a leader's term starts.
	time.Sleep(time.Second)
	leader, epoch, _ := storedState(t, c, topic)
	noDeletes.Remove()
	c.Stop(leader)
	brokertest.WaitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	brokertest.WaitFor(t, 30*time.Second, "the new leader deleting the objects the manifest does not name", func() (bool, string) {
		objs, named, _ := segmentObjects(t, bucket, adm, topic)
		var left []string
		for _, k := range objs {
			if !named[k] {
				left = append(left, k)
			}
		}
		return len(left) == 0 && len(objs) > 0, fmt.Sprintf("%d objects, not named: %v", len(objs), left)
	})
	requireTieredRecords(ctx, t, c, topic, 500, 500)

	// Topic deletion that cannot finish before every broker stops, then
	// resumes on one broker's start.
	c.Start(leader)
	noDeletes = bucket.Add(faulty.Rule{Op: faulty.Delete, Fail: true})
	if _, err := adm.DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	topicKeys := func() []string {
		var out []string
		for _, k := range listBucket(t, bucket, "") {
			if strings.HasPrefix(k, topic+"-") {
				out = append(out, k)
			}
		}
		return out
	}
	brokertest.WaitFor(t, 30*time.Second, "the deletion marker written and deletes refused", func() (bool, string) {
		keys := topicKeys()
		marked := slices.ContainsFunc(keys, func(k string) bool { return strings.HasSuffix(k, "/deleted.json") })
		return marked && noDeletes.Fired() > 0, fmt.Sprintf("topic keys %d, deletes refused %d", len(keys), noDeletes.Fired())
	})
	for id := range c.Brokers {
		c.Stop(int32(id))
	}
	noDeletes.Remove()
	if len(topicKeys()) == 0 {
		t.Fatal("the topic's objects went while deletes failed")
	}
	c.Start(leader)
	brokertest.WaitFor(t, 30*time.Second, "the restarted broker finishing the deletion", func() (bool, string) {
		keys := topicKeys()
		return len(keys) == 1 && strings.HasSuffix(keys[0], "/deleted.json"), fmt.Sprintf("left: %v (the marker stays)", keys)
	})
}

// TestPeriodicOrphanSweepDeletesWhatRetentionLeftWithoutALeaderChange:
// remote retention cannot delete the expired objects (the store refuses
// deletes); once the store accepts deletes again, the same leader, in the
// same epoch, deletes them at its next periodic sweep (not only as a
// leader's term starts).
func TestPeriodicOrphanSweepDeletesWhatRetentionLeftWithoutALeaderChange(t *testing.T) {
	bucket := faulty.New(objectstore.NewMem())
	c := brokertest.StartCluster(t, 1, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			OrphanGrace: 300 * time.Millisecond}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	ctx := testCtx(t)
	const topic = "swept"
	adm := produceTieredPast600(t, c, bucket, topic, 1)
	leader, epoch, _ := storedState(t, c, topic)

	noDeletes := bucket.Add(faulty.Rule{Op: faulty.Delete, Fail: true})
	dr, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: 500}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	brokertest.WaitFor(t, 30*time.Second, "remote retention leaving objects the manifest does not name", func() (bool, string) {
		objs, named, m := segmentObjects(t, bucket, adm, topic)
		n := 0
		for _, k := range objs {
			if !named[k] {
				n++
			}
		}
		return m.LogStartOffset == 500 && n > 0 && noDeletes.Fired() > 0,
			fmt.Sprintf("log start %d, %d objects not named, %d deletes refused", m.LogStartOffset, n, noDeletes.Fired())
	})
	noDeletes.Remove()
	brokertest.WaitFor(t, 30*time.Second, "the leader's periodic sweep deleting the objects the manifest does not name", func() (bool, string) {
		objs, named, _ := segmentObjects(t, bucket, adm, topic)
		var left []string
		for _, k := range objs {
			if !named[k] {
				left = append(left, k)
			}
		}
		return len(left) == 0 && len(objs) > 0, fmt.Sprintf("%d objects, not named: %v", len(objs), left)
	})
	if l, e, _ := storedState(t, c, topic); l != leader || e != epoch {
		t.Fatalf("leader changed from %d (epoch %d) to %d (epoch %d): the sweep at a term's start did the work", leader, epoch, l, e)
	}
	// Everything the manifest names is still there: the records from
	// the new log start read back.
	requireTieredRecords(ctx, t, c, topic, 500, 500)
}
