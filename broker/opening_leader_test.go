package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/metadata"
)

// heldOpeningTopic starts a cluster of n brokers whose disks hold the
// opens of topic's partition logs until the returned release is called,
// and creates topic (one partition, n replicas): its leader is named by
// the metadata while its log is still opening. It returns once the
// leader's open reached the disk, with the leader's id.
func heldOpeningTopic(t *testing.T, n int, topic string) (c *brokertest.Cluster, leader int32, release func()) {
	t.Helper()
	gates := make([]*openGateFS, n)
	for i := range gates {
		gates[i] = newOpenGateFS(topic)
	}
	c = brokertest.StartClusterOn(t, n, func(id int32) localseg.FS { return gates[id] },
		func(cfg *broker.Config) { cfg.LeaderImbalanceCheckInterval = -1 })
	release = func() {
		for _, g := range gates {
			g.release()
		}
	}
	t.Cleanup(release)
	req := createTopicsRequest(false, topicReq(topic, 1))
	req.Topics[0].ReplicationFactor = int16(n)
	req.TimeoutMillis = 2000 // answered (the write stands) while the logs are held
	if code := createTopicsCodes(t, c.Client(), req)[topic]; code != 0 {
		t.Fatalf("creating %s: error code %d", topic, code)
	}
	leader, _, _ = storedState(t, c, topic)
	brokertest.WaitFor(t, 30*time.Second, "the leader's open of the log to reach its disk", func() (bool, string) {
		return gates[leader].heldCalls() > 0, "not yet"
	})
	return c, leader, release
}

// Regression: a broker that the metadata names the leader of a partition
// whose log it is still opening (here a new topic's, on a disk that holds
// the open) had no partition to take a produce with and answered
// NOT_LEADER_OR_FOLLOWER; an acks=0 producer's records were lost (Kafka's
// answer to an acks=0 error is a closed connection, and the client drops
// what it sent). Now the produce waits for the log, as one to a tiered
// leader reading its manifest does: franz-go producers with acks=0 and
// acks=1, started while the log is held, and raw produce requests sent
// to the leader, all land, each record once. The reads a leader cannot
// answer yet are refused with retriable errors meanwhile.
func TestProduceToALeaderWhoseLogIsStillOpening(t *testing.T) {
	const topic = "opening"
	c, leader, release := heldOpeningTopic(t, 3, topic)
	lb := c.Brokers[leader]
	cl := c.Client()
	if got, _, _ := partitionReplicas(t, kadm.NewClient(cl), topic); got != leader {
		t.Fatalf("Metadata names %d as the leader, want %d", got, leader)
	}
	id := topicIDOf(t, cl, topic)

	requireRetriableReads(t, cl, leader, topic, id)
	want := produceWhileParked(t, c, leader, topic, id, lb.B.ParkedProduces, release)
	requireValues(t, c, topic, want)
}

// A produce parked for a log that opens is appended only if the broker
// still leads the partition at the leader epoch the metadata named when
// the request was read: here the epoch moves on (same leader) while the
// log is held, and the parked request is refused with the retriable
// NOT_LEADER_OR_FOLLOWER, not appended. One whose wait ends before the
// log opens is refused the same way. Produce goes through once the log is
// open.
func TestProduceParkedForAnOpeningLogIsRevalidated(t *testing.T) {
	const topic = "reopened"
	c, leader, release := heldOpeningTopic(t, 1, topic)
	lb := c.Brokers[leader]
	cl := c.Client(kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	id := topicIDOf(t, cl, topic)
	ctx := testCtx(t)

	refused := func(what string, sp kmsg.ProduceResponseTopicPartition) {
		t.Helper()
		if sp.ErrorCode != kerr.NotLeaderForPartition.Code {
			t.Fatalf("%s: error %v, want NOT_LEADER_OR_FOLLOWER", what, kerr.ErrorForCode(sp.ErrorCode))
		}
	}
	resp, err := cl.Broker(int(leader)).Request(ctx, produceRequest(topic, id, 1, 200*time.Millisecond, "timed-out"))
	if err != nil {
		t.Fatal(err)
	}
	refused("a produce whose wait for the log ended", resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0])

	parked := lb.B.ParkedProduces()
	answer := make(chan kmsg.ProduceResponseTopicPartition, 1)
	go func() {
		resp, err := cl.Broker(int(leader)).Request(ctx, produceRequest(topic, id, 1, 30*time.Second, "stale"))
		if err != nil {
			t.Error(err)
			close(answer)
			return
		}
		answer <- resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	}()
	waitFor(t, "the produce to wait for the log", 30*time.Second, func() bool { return lb.B.ParkedProduces() > parked })
	store := metadata.NewStore(c.Etcd().Client(), "")
	cur, err := store.Partition(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := cur
	next.LeaderEpoch++
	if _, _, err := store.UpdatePartition(ctx, next, cur.PartitionEpoch); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 30*time.Second, "the broker to see the new leader epoch", func() (bool, string) {
		td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		e := td[topic].Partitions[0].LeaderEpoch
		return e == next.LeaderEpoch, fmt.Sprintf("epoch %d", e)
	})
	release()
	sp, ok := <-answer
	if !ok {
		return
	}
	refused("a produce read under an earlier leader epoch", sp)

	produceSync(t, c.Client(kgo.DefaultProduceTopic(topic)), &kgo.Record{Value: []byte("after")})
	requireValues(t, c, topic, map[string]bool{"after": true})
}
