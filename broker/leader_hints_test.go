package broker_test

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestNotLeaderAnswersNameTheLeader (KIP-951): a Produce sent to a follower
// or to a broker that holds no replica, and a Fetch sent to the latter, are
// answered with NOT_LEADER_OR_FOLLOWER, the partition's current leader and
// epoch, and the leader's endpoint.
func TestNotLeaderAnswersNameTheLeader(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 2, nil, "hinted"); err != nil {
		t.Fatal(err)
	}
	var leader, epoch, follower, outsider int32
	var topicID [16]byte
	brokertest.WaitFor(t, 10*time.Second, "two in-sync replicas", func() (bool, string) {
		td, err := adm.ListTopics(ctx, "hinted")
		if err != nil {
			return false, err.Error()
		}
		p := td["hinted"].Partitions[0]
		topicID = td["hinted"].ID
		leader, epoch = p.Leader, p.LeaderEpoch
		for id := int32(0); id < 3; id++ {
			switch {
			case !slices.Contains(p.Replicas, id):
				outsider = id
			case id != leader:
				follower = id
			}
		}
		return len(p.ISR) == 2, fmt.Sprint(p)
	})
	leaderAddr := c.Brokers[leader].Addr
	cl := c.Client()
	if err := cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The broker asked above knew the partition; the others learn of it
	// through their own etcd watch, each in its own time, and a broker that
	// does not know a topic yet rightly answers UNKNOWN_TOPIC_ID.
	for id := int32(0); id < 3; id++ {
		brokertest.WaitFor(t, 10*time.Second, fmt.Sprintf("broker %d knowing leader %d epoch %d", id, leader, epoch), func() (bool, string) {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr("hinted")
			req.Topics = append(req.Topics, rt)
			kresp, err := cl.Broker(int(id)).Request(ctx, req)
			if err != nil {
				return false, err.Error()
			}
			mt := kresp.(*kmsg.MetadataResponse).Topics[0]
			if mt.ErrorCode != 0 || len(mt.Partitions) != 1 {
				return false, fmt.Sprintf("error %d, %d partitions", mt.ErrorCode, len(mt.Partitions))
			}
			p := mt.Partitions[0]
			return p.Leader == leader && p.LeaderEpoch == epoch, fmt.Sprintf("leader %d epoch %d", p.Leader, p.LeaderEpoch)
		})
	}
	checkEndpoint := func(what string, id int32, host string, port int32) {
		t.Helper()
		if id != leader || net.JoinHostPort(host, strconv.Itoa(int(port))) != leaderAddr {
			t.Fatalf("%s: node endpoint %d %s:%d, want %d %s", what, id, host, port, leader, leaderAddr)
		}
	}
	for _, to := range []int32{follower, outsider} {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "hinted", topicID
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = idempotentBatch(-1, -1, -1, 1)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kresp, err := cl.Broker(int(to)).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		resp := kresp.(*kmsg.ProduceResponse)
		what := fmt.Sprintf("produce v%d to broker %d", resp.Version, to)
		sp := resp.Topics[0].Partitions[0]
		if sp.ErrorCode != kerr.NotLeaderForPartition.Code || sp.CurrentLeader.LeaderID != leader || sp.CurrentLeader.LeaderEpoch != epoch {
			t.Fatalf("%s: error %d, current leader %+v; want NOT_LEADER_OR_FOLLOWER and leader %d epoch %d", what, sp.ErrorCode, sp.CurrentLeader, leader, epoch)
		}
		if len(resp.Brokers) != 1 {
			t.Fatalf("%s: node endpoints %+v", what, resp.Brokers)
		}
		checkEndpoint(what, resp.Brokers[0].NodeID, resp.Brokers[0].Host, resp.Brokers[0].Port)
	}

	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.ReplicaState.ID = -1
	req.MaxWaitMillis = 10
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = "hinted", topicID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := cl.Broker(int(outsider)).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	what := fmt.Sprintf("fetch v%d to broker %d", resp.Version, outsider)
	if resp.Version < 16 {
		t.Fatalf("%s: want v16 or later", what)
	}
	fp := resp.Topics[0].Partitions[0]
	if fp.ErrorCode != kerr.NotLeaderForPartition.Code || fp.CurrentLeader.LeaderID != leader || fp.CurrentLeader.LeaderEpoch != epoch {
		t.Fatalf("%s: error %d, current leader %+v; want NOT_LEADER_OR_FOLLOWER and leader %d epoch %d", what, fp.ErrorCode, fp.CurrentLeader, leader, epoch)
	}
	if len(resp.Brokers) != 1 {
		t.Fatalf("%s: node endpoints %+v", what, resp.Brokers)
	}
	checkEndpoint(what, resp.Brokers[0].NodeID, resp.Brokers[0].Host, resp.Brokers[0].Port)
}
