package broker_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// storedState reads topic's partition 0 from etcd: leader and ISR (sorted).
// (A client's metadata may be cached for a moment.)
func storedState(t *testing.T, c *brokertest.Cluster, topic string) (leader int32, epoch int32, isr []int32) {
	t.Helper()
	p, err := metadata.NewStore(c.Etcd().Client(), "").Partition(testCtx(t), topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	isr = slices.Clone(p.ISR)
	slices.Sort(isr)
	return p.Leader, p.LeaderEpoch, isr
}

// preferredAway stops the preferred replica of topic's partition 0 (its
// leader, which hands over) and starts it again, then waits until it is
// back in the ISR, led by another broker. It returns the preferred
// replica.
func preferredAway(t *testing.T, c *brokertest.Cluster, adm *kadm.Client, topic string) int32 {
	t.Helper()
	ctx := testCtx(t)
	// A topic just created may be listed before its partitions are.
	var pref int32
	brokertest.WaitFor(t, 10*time.Second, "the topic's partition listed with its replicas", func() (bool, string) {
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		if p, ok := td[topic].Partitions[0]; ok && len(p.Replicas) > 0 {
			pref = p.Replicas[0]
			return true, ""
		}
		return false, fmt.Sprint(td[topic].Partitions)
	})
	brokertest.WaitFor(t, 10*time.Second, "the preferred replica leads with three in sync", func() (bool, string) {
		l, _, isr := storedState(t, c, topic)
		return l == pref && len(isr) == 3, fmt.Sprint(l, isr)
	})
	c.Stop(pref)
	c.Start(pref)
	brokertest.WaitFor(t, 15*time.Second, "the preferred replica back in the ISR", func() (bool, string) {
		l, _, isr := storedState(t, c, topic)
		return l >= 0 && len(isr) == 3, fmt.Sprint(l, isr)
	})
	return pref
}

// TestAutoLeaderRebalanceReturnsLeadershipToThePreferredReplica: with
// auto.leader.rebalance.enable, a preferred replica that restarted and
// caught up leads again after leader.imbalance.check.interval.
func TestAutoLeaderRebalanceReturnsLeadershipToThePreferredReplica(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.LeaderImbalanceCheckInterval = 500 * time.Millisecond })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "rebalanced"); err != nil {
		t.Fatal(err)
	}
	pref := preferredAway(t, c, adm, "rebalanced")
	brokertest.WaitFor(t, 15*time.Second, "the preferred replica leads again", func() (bool, string) {
		l, _, isr := storedState(t, c, "rebalanced")
		return l == pref && len(isr) == 3, fmt.Sprint(l, isr)
	})
}

// TestElectLeaders: with the automatic rebalance off, kadm's preferred
// election moves leadership back to the preferred replica (and a second
// one is not needed); an unclean election gives a partition whose only
// in-sync replica is gone a leader from outside the ISR, and the old
// leader, back, truncates the records the election lost and follows.
func TestElectLeaders(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.LeaderImbalanceCheckInterval = -1 })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "elected"); err != nil {
		t.Fatal(err)
	}
	pref := preferredAway(t, c, adm, "elected")
	time.Sleep(time.Second)
	if l, _, _ := storedState(t, c, "elected"); l == pref {
		t.Fatal("the preferred replica leads again with the automatic rebalance off")
	}
	elect := func(how kadm.ElectLeadersHow, topic string) error {
		t.Helper()
		set := kadm.TopicsSet{}
		set.Add(topic, 0)
		res, err := adm.ElectLeaders(ctx, how, set)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := res[topic][0]
		if !ok {
			t.Fatalf("no result for %s: %v", topic, res)
		}
		return r.Err
	}
	if err := elect(kadm.ElectPreferredReplica, "elected"); err != nil {
		t.Fatalf("preferred election: %v", err)
	}
	brokertest.WaitFor(t, 10*time.Second, "the preferred replica leads", func() (bool, string) {
		l, _, isr := storedState(t, c, "elected")
		return l == pref && len(isr) == 3, fmt.Sprint(l, isr)
	})
	if err := elect(kadm.ElectPreferredReplica, "elected"); !errors.Is(err, kerr.ElectionNotNeeded) {
		t.Fatalf("second preferred election: %v, want ELECTION_NOT_NEEDED", err)
	}
	if err := elect(kadm.ElectLiveReplica, "elected"); !errors.Is(err, kerr.ElectionNotNeeded) {
		t.Fatalf("unclean election of a led partition: %v, want ELECTION_NOT_NEEDED", err)
	}

	// Unclean: two replicas; the follower leaves the ISR (stopped), the
	// leader stops; the follower returns outside the ISR, and only an
	// unclean election lets it lead.
	if _, err := adm.CreateTopic(ctx, 1, 2, nil, "orphaned"); err != nil {
		t.Fatal(err)
	}
	var leader, follower int32
	brokertest.WaitFor(t, 10*time.Second, "two in-sync replicas", func() (bool, string) {
		td, err := adm.ListTopics(ctx, "orphaned")
		if err != nil {
			return false, err.Error()
		}
		p := td["orphaned"].Partitions[0]
		leader = p.Leader
		for _, r := range p.Replicas {
			if r != leader {
				follower = r
			}
		}
		return leader >= 0 && len(p.ISR) == 2, fmt.Sprint(p)
	})
	// Records both hold, then records the leader alone holds: the tail
	// the unclean election loses.
	produce := func(values ...string) {
		t.Helper()
		cl := c.Client(kgo.DefaultProduceTopic("orphaned"), kgo.ProducerLinger(0))
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("producing %s: %v", v, err)
			}
		}
		cl.Close()
	}
	produce("a0", "a1", "a2", "a3", "a4")
	brokertest.WaitFor(t, 10*time.Second, "the follower holds the first records", func() (bool, string) {
		leo, _, _ := c.Brokers[follower].B.ReplicaOffsets("orphaned", 0)
		return leo == 5, fmt.Sprint("follower's log end ", leo)
	})
	c.Stop(follower)
	brokertest.WaitFor(t, 10*time.Second, "the follower out of the ISR", func() (bool, string) {
		_, _, isr := storedState(t, c, "orphaned")
		return len(isr) == 1, fmt.Sprint(isr)
	})
	produce("lost5", "lost6", "lost7")
	if leo, _, _ := c.Brokers[leader].B.ReplicaOffsets("orphaned", 0); leo != 8 {
		t.Fatalf("the leader's log ends at %d, want 8", leo)
	}
	c.Stop(leader)
	c.Start(follower)
	brokertest.WaitFor(t, 15*time.Second, "the partition offline", func() (bool, string) {
		l, _, isr := storedState(t, c, "orphaned")
		return l == -1 && len(isr) == 1 && isr[0] == leader, fmt.Sprint(l, isr)
	})
	if err := elect(kadm.ElectPreferredReplica, "orphaned"); !errors.Is(err, kerr.PreferredLeaderNotAvailable) && !errors.Is(err, kerr.ElectionNotNeeded) {
		t.Fatalf("preferred election of an offline partition: %v", err)
	}
	if err := elect(kadm.ElectLiveReplica, "orphaned"); err != nil {
		t.Fatalf("unclean election: %v", err)
	}
	brokertest.WaitFor(t, 10*time.Second, "the returned follower leads alone", func() (bool, string) {
		l, _, isr := storedState(t, c, "orphaned")
		return l == follower && len(isr) == 1 && isr[0] == follower, fmt.Sprint(l, isr)
	})
	// The new leader writes other records where the old leader's tail
	// was; the old leader, back, truncates that tail and follows, and the
	// two logs agree.
	produce("b5", "b6", "b7", "b8")
	c.Start(leader)
	brokertest.WaitFor(t, 15*time.Second, "the old leader back in the ISR", func() (bool, string) {
		l, _, isr := storedState(t, c, "orphaned")
		return l == follower && len(isr) == 2, fmt.Sprint(l, isr)
	})
	brokertest.WaitFor(t, 15*time.Second, "both replicas hold the nine records", func() (bool, string) {
		var state []string
		for _, id := range []int32{leader, follower} {
			leo, hw, _ := c.Brokers[id].B.ReplicaOffsets("orphaned", 0)
			state = append(state, fmt.Sprintf("broker %d: leo %d hw %d", id, leo, hw))
			if leo != 9 || hw != 9 {
				return false, fmt.Sprint(state)
			}
		}
		return true, ""
	})
	c.CheckReplicasAgree(t, "orphaned", leader, follower)
}
