package broker_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

// localBases lists the base offsets of a broker's local segments of
// shared-0, ascending.
func localBases(t *testing.T, nd *brokertest.Node, topic string) []int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(nd.Dir, topic+"-0", "*.log"))
	var out []int64
	for _, f := range files {
		if n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64); err == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestFollowerBehindTheLocalLogRestartsFromTheBucket: a follower is down
// while the leader uploads and deletes its local segments. Back, it is
// answered OFFSET_MOVED_TO_TIERED_STORAGE, restarts its log where the
// remote log ends (epochs and producer state from the bucket) instead of
// copying the history, and rejoins the ISR. Alone, it leads, takes
// records after the remote end, answers where the history's leader epoch
// ended (from the epochs restored from the bucket), and every
// record reads from offset 0 once.
func TestFollowerBehindTheLocalLogRestartsFromTheBucket(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
		// Stopped brokers leave the ISR through their controlled shutdown;
		// the lag time only has to keep the live follower in.
		cfg.ReplicaLagTimeMax = 15 * time.Second
	})
	ctx := testCtx(t)
	adm := c.Admin()
	str := func(s string) *string { return &s }
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, "restore"); err != nil {
		t.Fatal(err)
	}
	// The leader as etcd holds it, once every replica is in sync: a
	// client's metadata may come from a broker that does not know the
	// topic yet.
	var leader, epoch int32
	brokertest.WaitFor(t, 30*time.Second, "the partition led with three in sync", func() (bool, string) {
		l, e, isr := storedState(t, c, "restore")
		leader, epoch = l, e
		return l >= 0 && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
	})
	follower := (leader + 1) % 3
	c.Stop(follower)

	cl := c.Client(kgo.DefaultProduceTopic("restore"), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	produce := func(cl *kgo.Client, from, to int) {
		for i := from; i < to; i += 50 {
			var recs []*kgo.Record
			for j := i; j < i+50; j++ {
				recs = append(recs, &kgo.Record{Value: tieredValue(j)})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("producing %d: %v", i, err)
			}
		}
	}
	produce(cl, 0, 1000)
	// The history was written in one leader epoch (a follower's
	// shutdown moves no leadership).
	if l, e, _ := storedState(t, c, "restore"); l != leader || e != epoch {
		t.Fatalf("leader %d epoch %d after the first records; want %d %d", l, e, leader, epoch)
	}
	brokertest.WaitFor(t, 30*time.Second, "the leader uploads and trims", func() (bool, string) {
		b := localBases(t, c.Brokers[leader], "restore")
		return len(b) > 0 && b[0] > 500, fmt.Sprintf("leader's local segments %v", b)
	})

	c.Start(follower)
	brokertest.WaitFor(t, 30*time.Second, "the follower restarts its log past the history, back in the ISR", func() (bool, string) {
		_, _, isr := partitionState(t, adm, "restore")
		b := localBases(t, c.Brokers[follower], "restore")
		return slices.Contains(isr, follower) && len(b) > 0 && b[0] > 500, fmt.Sprintf("isr %v, follower's segments %v", isr, b)
	})

	// The restored follower leads (a new client: the old one keeps
	// waiting on the stopped brokers).
	// The bystander first, then the leader, which hands over to the
	// restored follower (the ISR as etcd holds it: a client's metadata may
	// be a moment old).
	brokertest.WaitFor(t, 30*time.Second, "the follower in the stored ISR", func() (bool, string) {
		l, _, isr := storedState(t, c, "restore")
		return slices.Contains(isr, follower), fmt.Sprintf("leader %d isr %v", l, isr)
	})
	last, _, _ := storedState(t, c, "restore")
	for _, id := range []int32{0, 1, 2} {
		if id != follower && id != last {
			c.Stop(id)
		}
	}
	if last != follower {
		c.Stop(last)
	}
	adm2 := c.Admin()
	brokertest.WaitFor(t, 30*time.Second, "the restored follower leads", func() (bool, string) {
		l, _, isr := partitionState(t, adm2, "restore")
		return l == follower, fmt.Sprintf("leader %d isr %v", l, isr)
	})
	cl = c.Client(kgo.DefaultProduceTopic("restore"), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	produce(cl, 1000, 1200)

	// The history's epoch ended where the restored follower's leadership
	// began: the answer comes from the epochs restored from the bucket.
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "restore"
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.CurrentLeaderEpoch, rp.LeaderEpoch = -1, epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Topics[0].Partitions[0]; got.ErrorCode != 0 || got.LeaderEpoch != epoch || got.EndOffset != 1000 {
		t.Fatalf("end of epoch %d: epoch %d, offset %d, error %d; want %d, 1000", epoch, got.LeaderEpoch, got.EndOffset, got.ErrorCode, epoch)
	}

	cons := c.Client(kgo.ConsumeTopics("restore"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30000))
	var recs []*kgo.Record
	for len(recs) < 1200 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of 1200: %v", len(recs), err)
		}
		recs = append(recs, fs.Records()...)
	}
	for i, r := range recs {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d", i, r.Offset)
		}
	}
}
