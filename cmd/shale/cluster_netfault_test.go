package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// Network faults between `shale broker` processes, with no test-only flag:
// each broker is given its own proxy as its --etcd endpoint, and advertises
// a proxy in front of its Kafka listener (--advertised-addr), which other
// brokers' replica fetchers dial like clients do. The Kafka proxy tells
// the fetchers of broker N by the client id they present (broker-N), so
// one follower can be cut from its leader alone.

// directClient reaches only the broker listening at addr, whatever the
// metadata advertises.
func directClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.MetadataMinAge(10 * time.Millisecond),
		kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// partitionSeenBy is partition 0 of "acked" as broker p's own metadata has
// it (leader -1 when it does not answer).
func partitionSeenBy(ctx context.Context, adm *kadm.Client) (leader, epoch int32, isr []int32) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, "acked")
	if err != nil || td["acked"].Err != nil || len(td["acked"].Partitions) == 0 {
		return -1, -1, nil
	}
	pd := td["acked"].Partitions[0]
	isr = slices.Clone(pd.ISR)
	slices.Sort(isr)
	return pd.Leader, pd.LeaderEpoch, isr
}

// waitForAnotherLeader waits until broker view's metadata names a leader
// other than old at an epoch past epoch, and returns it.
func waitForAnotherLeader(t *testing.T, c *testCluster, view *kadm.Client, old, epoch int32) int32 {
	t.Helper()
	start := time.Now()
	var leader int32
	brokertest.WaitFor(t, 20*time.Second, "another leader elected", func() (bool, string) {
		l, e, isr := partitionSeenBy(c.ctx, view)
		leader = l
		return l >= 0 && l != old && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	t.Logf("broker %d leads in place of broker %d after %s", leader, old, time.Since(start).Round(time.Millisecond))
	return leader
}

// requireNoAcknowledgement sends three writes with acks to the replaced
// leader old alone and fails the test if it acknowledges any; why says
// how it was replaced.
func requireNoAcknowledgement(t *testing.T, c *testCluster, old int32, acks kgo.Acks, why string) {
	t.Helper()
	zombie := directClient(t, c.procs[old].kafkaAddr, kgo.DefaultProduceTopic("acked"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(acks), kgo.ProduceRequestTimeout(2*time.Second),
		kgo.RecordDeliveryTimeout(4*time.Second), kgo.RecordRetries(1))
	for i := range 3 {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		// A value past any the producer sends: were it kept, the
		// read-back would find it out of order.
		err := zombie.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(1<<40 + i))}).FirstErr()
		cancel()
		if err == nil {
			t.Fatalf("broker %d, %s, acknowledged a write", old, why)
		}
	}
}

// waitRejoinedAsFollower waits until broker old's own metadata names
// leader as the leader with all three replicas in the ISR.
func waitRejoinedAsFollower(t *testing.T, c *testCluster, old, leader int32) {
	t.Helper()
	start := time.Now()
	rejoined := kadm.NewClient(directClient(t, c.procs[old].kafkaAddr))
	brokertest.WaitFor(t, 30*time.Second, "the old leader rejoins the ISR as a follower", func() (bool, string) {
		l, _, isr := partitionSeenBy(c.ctx, rejoined)
		return l == leader && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
	})
	t.Logf("links healed; broker %d back in the ISR after %s", old, time.Since(start).Round(time.Millisecond))
}

// TestLeaderProcessCutFromEtcdIsFenced: the leader's link to etcd is cut
// (its clients and followers still reach it). Its lease ends, another
// in-sync replica is elected with a newer epoch, and from then on the old
// leader, still serving clients, acknowledges no acks=all write. Once the
// link heals it follows the new leader and rejoins the ISR. Twice, under
// an idempotent acks=all producer; every acknowledged record is read back
// once, in order.
func TestLeaderProcessCutFromEtcdIsFenced(t *testing.T) {
	etcdLinks := map[int]*brokertest.Proxy{}
	setup := func(p *brokerProc) {
		etcdLinks[p.id] = brokertest.NewProxy(t, p.etcd)
		p.etcd = etcdLinks[p.id].Addr()
	}
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		old := c.leader()
		other := (old + 1) % 3
		view := kadm.NewClient(directClient(t, c.procs[other].kafkaAddr))
		_, epoch, _ := partitionSeenBy(c.ctx, view)
		etcdLinks[int(old)].Cut()
		leader := waitForAnotherLeader(t, c, view, old, epoch)
		t.Logf("round %d: leader %d cut from etcd; broker %d leads", round, old, leader)
		// The old leader's lease has ended: it still answers clients, and
		// acknowledges none of their acks=all writes.
		requireNoAcknowledgement(t, c, old, kgo.AllISRAcks(), fmt.Sprintf("cut from etcd and replaced by broker %d", leader))
		c.waitAcked(c.ackedCount() + 100)
		etcdLinks[int(old)].Heal()
		waitRejoinedAsFollower(t, c, old, leader)
	})
}

// TestFollowerProcessCutFromLeaderLeavesAndRejoinsISR: a follower's
// connections to its leader are cut (its etcd link and the other
// follower's are not). The leader removes it from the ISR after
// replica.lag.time.max.ms and acknowledges with the other two; when the
// link heals the follower catches up and is added back. Twice, under an
// idempotent acks=all producer; every acknowledged record is read back
// once, in order.
func TestFollowerProcessCutFromLeaderLeavesAndRejoinsISR(t *testing.T) {
	listeners := map[int]*brokertest.Proxy{}
	setup := func(p *brokerProc) {
		listeners[p.id] = brokertest.NewKafkaProxy(t, p.kafkaAddr)
		p.extra = []string{"--advertised-addr", listeners[p.id].Addr(), "--replica-lag-time-max", "2s"}
	}
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		leader := c.leader()
		f := (leader + 1) % 3
		view := kadm.NewClient(directClient(t, c.procs[leader].kafkaAddr))
		fetcher := "broker-" + strconv.Itoa(int(f))
		listeners[int(leader)].CutClient(fetcher)
		start := time.Now()
		brokertest.WaitFor(t, 20*time.Second, "the cut follower leaves the ISR", func() (bool, string) {
			l, _, isr := partitionSeenBy(c.ctx, view)
			return l == leader && len(isr) == 2 && !slices.Contains(isr, f), fmt.Sprintf("leader %d isr %v", l, isr)
		})
		t.Logf("round %d: follower %d cut from leader %d; left the ISR after %s", round, f, leader, time.Since(start).Round(time.Millisecond))
		c.waitAcked(c.ackedCount() + 100)
		listeners[int(leader)].HealClient(fetcher)
		start = time.Now()
		brokertest.WaitFor(t, 20*time.Second, "the follower rejoins the ISR", func() (bool, string) {
			l, _, isr := partitionSeenBy(c.ctx, view)
			return l == leader && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
		})
		t.Logf("round %d: link healed; follower %d back in the ISR after %s", round, f, time.Since(start).Round(time.Millisecond))
	})
}

// TestLeaderProcessCutFromEtcdAndFollowersAcknowledgesNothing: the
// leader's links to etcd and to both followers are cut (its followers'
// fetches and its own questions to them), while clients still reach it.
// No follower can tell it of the new leader the controller elects once
// its lease has expired; it must stop acknowledging writes by itself: an
// acks=1 producer talking to it alone gets no acknowledgement, which the
// partition would lose when the old leader comes back as a follower and
// truncates. Once the links heal it rejoins the ISR. Twice, under an
// idempotent acks=all producer; every acknowledged record is read back
// once, in order.
func TestLeaderProcessCutFromEtcdAndFollowersAcknowledgesNothing(t *testing.T) {
	etcdLinks := map[int]*brokertest.Proxy{}
	listeners := map[int]*brokertest.Proxy{}
	setup := func(p *brokerProc) {
		etcdLinks[p.id] = brokertest.NewProxy(t, p.etcd)
		p.etcd = etcdLinks[p.id].Addr()
		listeners[p.id] = brokertest.NewKafkaProxy(t, p.kafkaAddr)
		p.extra = []string{"--advertised-addr", listeners[p.id].Addr()}
	}
	peer := func(id int32) string { return "broker-" + strconv.Itoa(int(id)) }
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		old := c.leader()
		others := []int32{(old + 1) % 3, (old + 2) % 3}
		view := kadm.NewClient(directClient(t, c.procs[others[0]].kafkaAddr))
		_, epoch, _ := partitionSeenBy(c.ctx, view)
		etcdLinks[int(old)].Cut()
		for _, f := range others {
			listeners[int(old)].CutClient(peer(f))
			listeners[int(f)].CutClient(peer(old))
		}
		leader := waitForAnotherLeader(t, c, view, old, epoch)
		t.Logf("round %d: leader %d cut from etcd and its followers; broker %d leads", round, old, leader)
		// Its lease has expired (the controller has elected another),
		// so it cannot prove its leadership: no acks=1 write is
		// acknowledged, though its own metadata still names it leader.
		requireNoAcknowledgement(t, c, old, kgo.LeaderAck(), fmt.Sprintf("cut from etcd and its followers and replaced by broker %d", leader))
		c.waitAcked(c.ackedCount() + 100)
		etcdLinks[int(old)].Heal()
		for _, f := range others {
			listeners[int(old)].HealClient(peer(f))
			listeners[int(f)].HealClient(peer(old))
		}
		waitRejoinedAsFollower(t, c, old, leader)
	})
}
