package broker_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

// TestTieredClusterFollowersTrimAndANewLeaderContinues: three brokers
// share a bucket. Followers learn from the manifest what the leader
// uploaded and trim their local logs too; after the leader stops, the new
// leader continues the manifest (a higher epoch) and every record reads
// from offset 0. The old leader, restarted, catches up and the replicas'
// local logs agree.
func TestTieredClusterFollowersTrimAndANewLeaderContinues(t *testing.T) {
	bucket := objectstore.NewMem()
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	ctx := testCtx(t)
	adm := c.Admin()
	str := func(s string) *string { return &s }
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, "shared"); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(c, "shared")
	produce := func(from, to int) {
		produceTieredValues(t, cl, from, to, 50)
	}
	produce(0, 800)
	segments := func(nd *brokertest.Node) int {
		files, _ := filepath.Glob(filepath.Join(nd.Dir, "shared-0", "*.log"))
		return len(files)
	}
	brokertest.WaitFor(t, 30*time.Second, "every replica trims its uploaded segments", func() (bool, string) {
		var counts []int
		ok := true
		for _, nd := range c.Brokers {
			n := segments(nd)
			counts = append(counts, n)
			ok = ok && n <= 2
		}
		return ok, fmt.Sprintf("local segments per broker %v", counts)
	})

	leader, epoch, _ := partitionState(t, adm, "shared")
	before := len(listBucket(t, bucket, ".log"))
	c.Stop(leader)
	adm2 := c.Admin()
	brokertest.WaitFor(t, 15*time.Second, "a new leader", func() (bool, string) {
		l, e, _ := partitionState(t, adm2, "shared")
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d", l, e)
	})
	cl = tieredProducer(c, "shared")
	produce(800, 1600)
	brokertest.WaitFor(t, 30*time.Second, "the new leader uploads", func() (bool, string) {
		n := len(listBucket(t, bucket, ".log"))
		return n > before+3, fmt.Sprintf("%d segments in the bucket, %d before", n, before)
	})
	requireTieredRecords(ctx, t, c, "shared", 0, 1600)
	// The old leader comes back behind the new leader's local log, starts
	// where the bucket ends and catches up; the three local logs, which
	// start where each trimmed its own, agree from there.
	c.Start(leader)
	waitReplicated(t, c, "shared", 1600)
	c.CheckReplicasAgree(t, "shared", 0, 1, 2)
}
