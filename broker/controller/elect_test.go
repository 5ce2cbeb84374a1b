package controller

import (
	"errors"
	"testing"

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
	}{
		{"preferred in sync takes over", brokers(1, 2, 3), p(2, 1, 2, 3), false, 1, nil, 0},
		{"preferred leads already", brokers(1, 2, 3), p(1, 1, 2, 3), false, 1, ErrElectionNotNeeded, 0},
		{"preferred out of the ISR", brokers(1, 2, 3), p(2, 2, 3), false, 2, ErrPreferredNotAvailable, 0},
		{"preferred dead", brokers(2, 3), p(2, 1, 2, 3), false, 2, ErrPreferredNotAvailable, 0},
		{"preferred shutting down", []metadata.Broker{{ID: 1, ShuttingDown: true}, {ID: 2}}, p(2, 1, 2), false, 2, ErrPreferredNotAvailable, 0},
		{"unclean: a live leader needs none", brokers(1, 2, 3), p(2, 2), true, 2, ErrElectionNotNeeded, 0},
		{"unclean: a live replica outside the ISR", brokers(3), p(-1, 1), true, 3, nil, 5},
		{"unclean: a live ISR member first", brokers(2, 3), p(1, 1, 3), true, 3, nil, 0},
		{"unclean: nobody live", brokers(4), p(-1, 1), true, -1, ErrEligibleNotAvailable, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapshot(tc.brokers, nil, tc.p)
			elect := ElectPreferred
			if tc.unclean {
				elect = ElectUnclean
			}
			next, err := elect(snap, snap.Topics["t"].Partitions[0])
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
