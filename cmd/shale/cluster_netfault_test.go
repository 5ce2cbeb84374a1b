package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// Network faults between `shale broker` processes, each behind its fault
// proxies (brokerProc.behindProxies).

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

// cutFromPeers cuts broker id's Kafka links with the other brokers of
// procs, both ways (their replica fetchers and questions to it, its own to
// them); clients and etcd still reach it.
func cutFromPeers(procs []*brokerProc, id int32) {
	for _, p := range procs {
		if int32(p.id) != id {
			cutBetween(procs, id, int32(p.id))
		}
	}
}

// healFromPeers heals what cutFromPeers cut.
func healFromPeers(procs []*brokerProc, id int32) {
	for _, p := range procs {
		if int32(p.id) != id {
			healBetween(procs, id, int32(p.id))
		}
	}
}

// thirdBroker is the broker of a three-broker cluster (ids 0, 1, 2) that
// is neither a nor b.
func thirdBroker(a, b int32) int32 { return 0 + 1 + 2 - a - b }

// cutBetween cuts the Kafka links between brokers a and b, both ways.
func cutBetween(procs []*brokerProc, a, b int32) {
	procs[a].listener.CutClient(peerClientID(b))
	procs[b].listener.CutClient(peerClientID(a))
}

// healBetween heals what cutBetween cut.
func healBetween(procs []*brokerProc, a, b int32) {
	procs[a].listener.HealClient(peerClientID(b))
	procs[b].listener.HealClient(peerClientID(a))
}

// peerClientID is the client id broker id presents to other brokers.
func peerClientID(id int32) string { return "broker-" + strconv.Itoa(int(id)) }

// TestLeaderProcessCutFromEtcdIsFenced: the leader's link to etcd is cut
// (its clients and followers still reach it). Its lease ends, another
// in-sync replica is elected with a newer epoch, and from then on the old
// leader, still serving clients, acknowledges no acks=all write. Once the
// link heals it follows the new leader and rejoins the ISR. Twice, under
// an idempotent acks=all producer; every acknowledged record is read back
// once, in order.
func TestLeaderProcessCutFromEtcdIsFenced(t *testing.T) {
	setup := func(p *brokerProc) { p.behindProxies(t) }
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		old := c.leader()
		other := (old + 1) % 3
		view := kadm.NewClient(directClient(t, c.procs[other].kafkaAddr))
		_, epoch, _ := partitionSeenBy(c.ctx, view)
		c.procs[old].etcdLink.Cut()
		leader := waitForAnotherLeader(t, c, view, old, epoch)
		t.Logf("round %d: leader %d cut from etcd; broker %d leads", round, old, leader)
		// The old leader's lease has ended: it still answers clients, and
		// acknowledges none of their acks=all writes.
		requireNoAcknowledgement(t, c, old, kgo.AllISRAcks(), fmt.Sprintf("cut from etcd and replaced by broker %d", leader))
		c.waitAcked(c.ackedCount() + 100)
		c.procs[old].etcdLink.Heal()
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
	setup := func(p *brokerProc) {
		p.extra = []string{"--replica-lag-time-max", "2s"}
		p.behindProxies(t)
	}
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		leader := c.leader()
		f := (leader + 1) % 3
		view := kadm.NewClient(directClient(t, c.procs[leader].kafkaAddr))
		fetcher := peerClientID(f)
		c.procs[leader].listener.CutClient(fetcher)
		start := time.Now()
		brokertest.WaitFor(t, 20*time.Second, "the cut follower leaves the ISR", func() (bool, string) {
			l, _, isr := partitionSeenBy(c.ctx, view)
			return l == leader && len(isr) == 2 && !slices.Contains(isr, f), fmt.Sprintf("leader %d isr %v", l, isr)
		})
		t.Logf("round %d: follower %d cut from leader %d; left the ISR after %s", round, f, leader, time.Since(start).Round(time.Millisecond))
		c.waitAcked(c.ackedCount() + 100)
		c.procs[leader].listener.HealClient(fetcher)
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
// truncates, and its metadata names no leader. Once the links heal it rejoins the ISR. Twice, under an
// idempotent acks=all producer; every acknowledged record is read back
// once, in order.
func TestLeaderProcessCutFromEtcdAndFollowersAcknowledgesNothing(t *testing.T) {
	setup := func(p *brokerProc) { p.behindProxies(t) }
	failoverWorkloadWith(t, setup, func(t *testing.T, c *testCluster, round int) {
		old := c.leader()
		view := kadm.NewClient(directClient(t, c.procs[(old+1)%3].kafkaAddr))
		_, epoch, _ := partitionSeenBy(c.ctx, view)
		c.procs[old].etcdLink.Cut()
		cutFromPeers(c.procs, old)
		leader := waitForAnotherLeader(t, c, view, old, epoch)
		t.Logf("round %d: leader %d cut from etcd and its followers; broker %d leads", round, old, leader)
		// Its lease has expired (the controller has elected another),
		// so it cannot prove its leadership: no acks=1 write is
		// acknowledged, and its metadata, which still has it lead,
		// names no leader, so that clients ask another broker.
		requireNoAcknowledgement(t, c, old, kgo.LeaderAck(), fmt.Sprintf("cut from etcd and its followers and replaced by broker %d", leader))
		oldView := kadm.NewClient(directClient(t, c.procs[old].kafkaAddr))
		brokertest.WaitFor(t, 10*time.Second, "the cut leader's metadata names no leader", func() (bool, string) {
			td, err := oldView.ListTopics(c.ctx, "acked")
			if err != nil || td["acked"].Err != nil {
				return false, fmt.Sprint(err, td["acked"].Err)
			}
			pd := td["acked"].Partitions[0]
			return pd.Leader == -1 && errors.Is(pd.Err, kerr.LeaderNotAvailable), fmt.Sprintf("leader %d, %v", pd.Leader, pd.Err)
		})
		c.waitAcked(c.ackedCount() + 100)
		c.procs[old].etcdLink.Heal()
		healFromPeers(c.procs, old)
		waitRejoinedAsFollower(t, c, old, leader)
	})
}
