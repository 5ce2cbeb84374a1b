package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// partitionState reads a partition's leader and ISR through the Kafka
// metadata API: leader -1 while the answering broker does not know the
// partition (kadm's map would otherwise yield a zero value: leader 0).
func partitionState(t *testing.T, adm *kadm.Client, topic string) (leader int32, epoch int32, isr []int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil || td[topic].Err != nil {
		return -1, -1, nil
	}
	p, ok := td[topic].Partitions[0]
	if !ok || p.Err != nil {
		return -1, -1, nil
	}
	isr = slices.Clone(p.ISR)
	slices.Sort(isr)
	return p.Leader, p.LeaderEpoch, isr
}

// TestPartitionStateOfAnUnknownTopicNamesNoLeader: a broker that does not
// know the topic yet (just created, its metadata not applied) must not read
// as "broker 0 leads at epoch 0": a test that picked its follower from
// that stopped the real leader instead.
func TestPartitionStateOfAnUnknownTopicNamesNoLeader(t *testing.T) {
	b := brokertest.Start(t)
	if l, e, isr := partitionState(t, b.Admin(), "nowhere"); l != -1 || e != -1 || isr != nil {
		t.Fatalf("leader %d epoch %d isr %v; want -1 -1 []", l, e, isr)
	}
}

func waitReplicated(t *testing.T, c *brokertest.Cluster, topic string, end int64) {
	t.Helper()
	brokertest.WaitFor(t, 15*time.Second, "every replica holds the records", func() (bool, string) {
		state := ""
		for _, nd := range c.Brokers {
			if nd.B == nil {
				continue
			}
			leo, hw, ok := nd.B.ReplicaOffsets(topic, 0)
			state += fmt.Sprintf("broker %d: leo %d hw %d %v; ", nd.ID, leo, hw, ok)
			if !ok || leo != end || hw != end {
				return false, state
			}
		}
		return true, state
	})
}

func TestReplicationAcksAllFailoverAndRejoin(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "replicated"); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(kgo.DefaultProduceTopic("replicated"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 50; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// acks=all was answered: every in-sync replica has the records.
	waitReplicated(t, c, "replicated", 50)
	leader, epoch, isr := partitionState(t, adm, "replicated")
	if !slices.Equal(isr, []int32{0, 1, 2}) {
		t.Fatalf("ISR %v, want all three", isr)
	}
	c.Stop(leader)
	var newLeader int32
	adm2 := c.Admin()
	brokertest.WaitFor(t, 15*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := partitionState(t, adm2, "replicated")
		newLeader = l
		return l >= 0 && l != leader && e > epoch && len(isr) == 2, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	cl2 := c.Client(kgo.DefaultProduceTopic("replicated"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 50; i < 60; i++ {
		if err := cl2.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cons := c.Client(kgo.ConsumeTopics("replicated"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	for len(got) < 60 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of 60: %v", len(got), err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	for i, v := range got {
		if v != strconv.Itoa(i) {
			t.Fatalf("record %d is %q", i, v)
		}
	}
	// The old leader comes back as a follower, catches up and rejoins
	// the ISR.
	c.Start(leader)
	brokertest.WaitFor(t, 20*time.Second, "the old leader rejoins the ISR", func() (bool, string) {
		l, _, isr := partitionState(t, adm2, "replicated")
		return l == newLeader && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
	})
	waitReplicated(t, c, "replicated", 60)
	c.CheckReplicasAgree(t, "replicated", 0, 1, 2)
}

// TestClientPosingAsFollowerIsRefused: a Fetch carrying a replica id from a
// connection that did not authenticate as that broker must not read past
// the high watermark or move the ISR (Kafka's CVE-2018-1288).
func TestClientPosingAsFollowerIsRefused(t *testing.T) {
	b := brokertest.Start(t)
	ctx := testCtx(t)
	createTopic(t, b.Admin(), "guarded", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("guarded"))
	produceSync(t, cl, &kgo.Record{Value: []byte("x")})
	for _, version := range []int16{12, 15} {
		req := kmsg.NewPtrFetchRequest()
		req.Version = version
		req.ReplicaID = 0
		req.ReplicaState.ID = 0
		req.MaxWaitMillis = 10
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "guarded"
		if version >= 13 {
			td, err := b.Admin().ListTopics(ctx, "guarded")
			if err != nil {
				t.Fatal(err)
			}
			rt.TopicID = td["guarded"].ID
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		raw, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		p := raw.Topics[0].Partitions[0]
		if p.ErrorCode != kerr.TopicAuthorizationFailed.Code || len(p.RecordBatches) != 0 {
			t.Fatalf("v%d: a client posing as broker 0 got error %d and %d bytes", version, p.ErrorCode, len(p.RecordBatches))
		}
	}
}

// TestDeletedTopicIsFetchedNoMore: deleting a topic stops the followers'
// fetchers for its partitions (they kept fetching a closed log).
func TestDeletedTopicIsFetchedNoMore(t *testing.T) {
	c := brokertest.StartCluster(t, 2)
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 2, 2, nil, "doomed"); err != nil {
		t.Fatal(err)
	}
	followed := func() int { return c.Brokers[0].B.FollowedPartitions() + c.Brokers[1].B.FollowedPartitions() }
	brokertest.WaitFor(t, 10*time.Second, "followers fetch both partitions", func() (bool, string) {
		return followed() == 2, fmt.Sprint(followed())
	})
	if _, err := adm.DeleteTopics(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, "no partition of the deleted topic is fetched", func() (bool, string) {
		return followed() == 0, fmt.Sprint(followed())
	})
}
