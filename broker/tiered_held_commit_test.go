package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestAHeldManifestCommitWhileLeadershipMovesOnMinIO: three brokers share
// a MinIO bucket. The leader's next manifest commit is held on its way to
// the store while the leader stops and another takes over, whose uploads
// fail for a while: it fences the manifest and sweeps the old leader's
// uploads as orphans (past a short grace). Then the held write lands,
// late: without the fence its condition held, and the manifest named the
// deleted objects. The manifest ends with no gap and names only objects
// the bucket holds, no orphan is left, every record reads once in order
// from offset 0, and the old leader, started again, agrees.
func TestAHeldManifestCommitWhileLeadershipMovesOnMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := faulty.New(srv.NewS3(t, nil))
	c := startSweepingCluster(t, bucket)
	ctx := testCtx(t)
	const topic = "held"
	adm := produceTieredPast600(t, c, bucket, topic, 3) // records 0-999
	produce := func(from, to int) {
		cl := tieredProducer(c, topic)
		defer cl.Close()
		produceTieredValues(t, cl, from, to, 50)
	}
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	leader, epoch, _ := partitionState(t, adm, topic)

	release := make(chan struct{})
	held := bucket.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: tiering.Layout{}.ManifestKey(part), Times: 1, Late: release})
	produce(1000, 1600)
	brokertest.WaitFor(t, 30*time.Second, "the leader's commit held", func() (bool, string) {
		return held.Fired() > 0, "no manifest write yet"
	})
	// The held commit's objects get older than the grace; the new
	// leader's uploads fail until the held write has landed, so nothing
	// but its fence changes the manifest meanwhile.
	time.Sleep(time.Second)
	noUploads := bucket.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: tiering.Layout{}.PartitionPrefix(part) + "0", Fail: true})
	c.Stop(leader)
	adm = c.Admin()
	brokertest.WaitFor(t, 15*time.Second, "a new leader", func() (bool, string) {
		l, e, _ := partitionState(t, adm, topic)
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d", l, e)
	})
	brokertest.WaitFor(t, 30*time.Second, "the new leader's sweep", func() (bool, string) {
		objs, named, m := segmentObjects(t, bucket.Inner(), adm, topic)
		orphans := 0
		for _, k := range objs {
			if !named[k] {
				orphans++
			}
		}
		return orphans == 0, fmt.Sprintf("manifest at epoch %d, %d objects it does not name", m.LeaderEpoch, orphans)
	})
	close(release)
	brokertest.WaitFor(t, 10*time.Second, "the held commit to land", func() (bool, string) {
		return held.Landed() == 1, "held"
	})
	noUploads.Remove()
	produce(1600, 2200)
	brokertest.WaitFor(t, 30*time.Second, "the new leader's uploads past offset 1800", func() (bool, string) {
		_, _, m := segmentObjects(t, bucket.Inner(), adm, topic)
		return m.End() > 1800, fmt.Sprintf("manifest ends at %d", m.End())
	})

	brokertest.WaitFor(t, 30*time.Second, "a bucket holding what the manifest names, no gap", func() (bool, string) {
		objs, named, m := segmentObjects(t, bucket.Inner(), adm, topic)
		have := map[string]bool{}
		var orphans, missing []string
		for _, k := range objs {
			have[k] = true
			if !named[k] {
				orphans = append(orphans, k)
			}
		}
		for k := range named {
			if !have[k] {
				missing = append(missing, k)
			}
		}
		gap := ""
		end := int64(-1)
		for _, s := range m.Segments {
			if end >= 0 && s.BaseOffset > end {
				gap = fmt.Sprintf("[%d, %d)", end, s.BaseOffset)
			}
			end = max(end, s.NextOffset)
		}
		return m.LeaderEpoch > epoch && len(orphans) == 0 && len(missing) == 0 && gap == "",
			fmt.Sprintf("epoch %d, %d segments, not named %v, missing %v, gap %s", m.LeaderEpoch, len(m.Segments), orphans, missing, gap)
	})

	requireTieredRecords(ctx, t, c, topic, 0, 2200)
	c.Start(leader)
	waitReplicated(t, c, topic, 2200)
	c.CheckReplicasAgree(t, topic, 0, 1, 2)
}
