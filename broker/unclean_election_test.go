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
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestAnUncleanElectionTakesTheLongestLog: when the ISR's only member is
// gone, an unclean election (the controller's, where the topic allows it,
// or one an operator asks for) takes the live replica whose log holds the
// latest history, as KIP-966's unclean recovery does, not the first live
// one in replica order, which Kafka takes: the records the election loses
// are only those the ISR's member alone held.
//
// Replicas [0 1 2], 0 leads. Broker 1 stops after three records, broker 2
// after six, broker 0 after seven: 1 comes first in replica order, 2 holds
// the longer log. Both come back, and 2 leads; 0, back too, cuts the
// seventh record and follows.
func TestAnUncleanElectionTakesTheLongestLog(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.LeaderImbalanceCheckInterval = -1 })
	ctx := testCtx(t)
	cl := c.Client(kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)
	// auto: the controller elects (once the topic allows it); asked: an
	// operator does.
	topics := []string{"auto", "asked"}
	for _, name := range topics {
		createAssigned(t, cl, name, []int32{0, 1, 2})
	}
	isrIs := func(want ...int32) {
		t.Helper()
		for _, name := range topics {
			brokertest.WaitFor(t, 15*time.Second, fmt.Sprintf("%s's ISR %v", name, want), func() (bool, string) {
				l, _, isr := storedState(t, c, name)
				return l == 0 && slices.Equal(isr, want), fmt.Sprint(l, isr)
			})
		}
	}
	produce := func(values ...string) {
		t.Helper()
		for _, name := range topics {
			for _, v := range values {
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: name, Value: []byte(v)}).FirstErr(); err != nil {
					t.Fatalf("producing %s to %s: %v", v, name, err)
				}
			}
		}
	}
	holds := func(id int32, end int64) {
		t.Helper()
		for _, name := range topics {
			brokertest.WaitFor(t, 10*time.Second, fmt.Sprintf("broker %d holds %d records of %s", id, end, name), func() (bool, string) {
				leo, _, _ := c.Brokers[id].B.ReplicaOffsets(name, 0)
				return leo == end, fmt.Sprint("log end ", leo)
			})
		}
	}
	isrIs(0, 1, 2)
	produce("a0", "a1", "a2")
	holds(1, 3)
	c.Stop(1)
	isrIs(0, 2)
	produce("b3", "b4", "b5")
	holds(2, 6)
	c.Stop(2)
	isrIs(0)
	produce("lost6")
	c.Stop(0)

	// Both followers back: neither topic allows an unclean election yet,
	// so both partitions wait, offline, for broker 0.
	c.Start(1)
	c.Start(2)
	for _, name := range topics {
		brokertest.WaitFor(t, 15*time.Second, name+" offline", func() (bool, string) {
			l, _, isr := storedState(t, c, name)
			return l == -1 && slices.Equal(isr, []int32{0}), fmt.Sprint(l, isr)
		})
	}
	// Any replica says where its log ends to the debugging replica id
	// (what the elections ask), leader or not; to a client it is no
	// leader.
	for id, want := range map[int32]int64{1: 3, 2: 6} {
		one := c.Client(kgo.SeedBrokers(c.Brokers[id].Addr))
		for _, replica := range []int32{-2, -1} {
			lo := kmsg.NewPtrListOffsetsRequest()
			lo.ReplicaID = replica
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = "asked"
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Timestamp = -1
			rt.Partitions = append(rt.Partitions, rp)
			lo.Topics = append(lo.Topics, rt)
			resp, err := one.SeedBrokers()[0].Request(ctx, lo) // that broker, not the leader
			if err != nil {
				t.Fatal(err)
			}
			got := resp.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0]
			err = kerr.ErrorForCode(got.ErrorCode)
			if replica == -2 && (err != nil || got.Offset != want || got.LeaderEpoch != 0) {
				t.Fatalf("broker %d's log end, asked by the debugging replica id: %+v (%v), want %d at epoch 0", id, got, err, want)
			}
			if replica == -1 && !errors.Is(err, kerr.NotLeaderForPartition) {
				t.Fatalf("broker %d's log end, asked by a client: %+v (%v), want NOT_LEADER_OR_FOLLOWER", id, got, err)
			}
		}
	}
	adm = c.Admin()
	// The operator's election, with both live: the longer log leads.
	set := kadm.TopicsSet{}
	set.Add("asked", 0)
	res, err := adm.ElectLeaders(ctx, kadm.ElectLiveReplica, set)
	if err != nil {
		t.Fatal(err)
	}
	if r := res["asked"][0]; r.Err != nil {
		t.Fatalf("unclean election asked for: %v", r.Err)
	}
	// The controller's, once the topic allows it.
	ar, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "unclean.leader.election.enable", Value: kadm.StringPtr("true")}}, "auto")
	if err == nil {
		err = errors.Join(ar[0].Err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics {
		brokertest.WaitFor(t, 20*time.Second, name+" led by broker 2, the longer log", func() (bool, string) {
			l, _, isr := storedState(t, c, name)
			return l == 2 && slices.Contains(isr, 2) && !slices.Contains(isr, 0), fmt.Sprint(l, isr)
		})
	}

	// One unclean election each, counted by who asked.
	var byController, byOperator float64
	for _, id := range []int32{1, 2} {
		s := gather(t, c.Brokers[id].Registry)
		byController += s.sum("shale_unclean_leader_elections_total", "by=controller")
		byOperator += s.sum("shale_unclean_leader_elections_total", "by=operator")
	}
	if byController != 1 || byOperator != 1 {
		t.Fatalf("shale_unclean_leader_elections_total: %v by the controller, %v by an operator; want 1 each", byController, byOperator)
	}

	// Broker 0 back: it cuts what only it held and follows; every
	// replica holds the six records.
	c.Start(0)
	for _, name := range topics {
		brokertest.WaitFor(t, 20*time.Second, name+"'s ISR whole again", func() (bool, string) {
			l, _, isr := storedState(t, c, name)
			return l == 2 && slices.Equal(isr, []int32{0, 1, 2}), fmt.Sprint(l, isr)
		})
		for id := range int32(3) {
			if leo, _, _ := c.Brokers[id].B.ReplicaOffsets(name, 0); leo != 6 {
				t.Fatalf("%s: broker %d's log ends at %d, want 6", name, id, leo)
			}
		}
	}
	for _, name := range topics {
		c.CheckReplicasAgree(t, name, 0, 1, 2) // stops the brokers
	}
}
