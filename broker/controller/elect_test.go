package controller

import (
	"errors"
	"testing"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

func TestElectPreferredAndUnclean(t *testing.T) {
	p := func(leader int32, isr ...int32) metadata.Partition {
		return metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: 4, ISR: isr, PartitionEpoch: 9}
	}
	for _, tc := range []struct {
		name    string
		brokers []metadata.Broker
		p       metadata.Partition
		unclean bool
		leader  int32
		err     error
		// uncleanEpoch: the election takes a leader from outside the
		// ISR, and records its epoch (5) as unclean.
		uncleanEpoch int32
		// ends: where the live replicas' logs end (unclean elections).
		ends map[int32]replication.LogEnd
	}{
		{"preferred in sync takes over", brokers(1, 2, 3), p(2, 1, 2, 3), false, 1, nil, 0, nil},
		{"preferred leads already", brokers(1, 2, 3), p(1, 1, 2, 3), false, 1, ErrElectionNotNeeded, 0, nil},
		{"preferred out of the ISR", brokers(1, 2, 3), p(2, 2, 3), false, 2, ErrPreferredNotAvailable, 0, nil},
		{"preferred dead", brokers(2, 3), p(2, 1, 2, 3), false, 2, ErrPreferredNotAvailable, 0, nil},
		{"preferred shutting down", []metadata.Broker{{ID: 1, ShuttingDown: true}, {ID: 2}}, p(2, 1, 2), false, 2, ErrPreferredNotAvailable, 0, nil},
		{"unclean: a live leader needs none", brokers(1, 2, 3), p(2, 2), true, 2, ErrElectionNotNeeded, 0, nil},
		{"unclean: a live replica outside the ISR", brokers(3), p(-1, 1), true, 3, nil, 5, nil},
		{"unclean: a live ISR member first", brokers(2, 3), p(1, 1, 3), true, 3, nil, 0, nil},
		{"unclean: nobody live", brokers(4), p(-1, 1), true, -1, ErrEligibleNotAvailable, 0, nil},
		{"unclean: the longest log outside the ISR", brokers(2, 3), p(-1, 1), true, 3, nil, 5,
			map[int32]replication.LogEnd{2: {Epoch: 4, Offset: 100}, 3: {Epoch: 4, Offset: 150}}},
		{"unclean: a later last epoch before a longer log", brokers(2, 3), p(-1, 1), true, 2, nil, 5,
			map[int32]replication.LogEnd{2: {Epoch: 4, Offset: 100}, 3: {Epoch: 3, Offset: 150}}},
		{"unclean: a replica that did not answer is passed over", brokers(2, 3), p(-1, 1), true, 3, nil, 5,
			map[int32]replication.LogEnd{3: {Epoch: 1, Offset: 0}}},
		{"unclean: a live ISR member before any longer log", brokers(2, 3), p(1, 1, 3), true, 3, nil, 0,
			map[int32]replication.LogEnd{2: {Epoch: 9, Offset: 1000}, 3: {Epoch: 4, Offset: 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapshot(tc.brokers, nil, tc.p)
			next, err := ElectPreferred(snap, snap.Topics["t"].Partitions[0])
			if tc.unclean {
				next, err = ElectUnclean(snap, snap.Topics["t"].Partitions[0], tc.ends)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err == nil && (next.Leader != tc.leader || next.LeaderEpoch != 5 || next.UncleanEpoch != tc.uncleanEpoch) {
				t.Fatalf("elected %+v, want leader %d at epoch 5, unclean epoch %d", next, tc.leader, tc.uncleanEpoch)
			}
		})
	}
}

func TestPlanPreferredLeaders(t *testing.T) {
	// Broker 1 prefers all ten partitions; k are led by broker 2.
	plan := func(k int, isr ...int32) []Change {
		ts := &metadata.TopicState{Topic: metadata.Topic{Name: "t"}}
		for i := 0; i < 10; i++ {
			leader := int32(1)
			if i < k {
				leader = 2
			}
			ts.Partitions = append(ts.Partitions, metadata.Partition{Topic: "t", Index: int32(i), Replicas: []int32{1, 2}, Leader: leader, ISR: isr})
		}
		return PlanPreferredLeaders(&metadata.Snapshot{Brokers: brokers(1, 2), Topics: map[string]*metadata.TopicState{"t": ts}})
	}
	if got := plan(1, 1, 2); len(got) != 0 {
		t.Fatalf("10%% imbalance (at the threshold) moved %d partitions", len(got))
	}
	got := plan(2, 1, 2)
	if len(got) != 2 || got[0].Next.Leader != 1 || got[1].Next.Leader != 1 {
		t.Fatalf("20%% imbalance: %+v, want both moved back to broker 1", got)
	}
	if got := plan(5, 2); len(got) != 0 {
		t.Fatalf("preferred replica out of the ISR: moved %d partitions", len(got))
	}
}
