package controller

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// With the replicas' log ends, the controller's unclean election takes
// the live replica whose log holds the latest history, once every replica
// has said where its log ends or the partition has waited long enough;
// without them (none asked), the first live replica, as Kafka elects.
func TestAnUncleanElectionOfThePlanTakesTheLongestLog(t *testing.T) {
	uncleanTopic := map[string]string{UncleanElectionConfig: "true"}
	// The ISR's only member, 1, is gone; 2 and 3 are live.
	p := metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 4, ISR: []int32{1}}
	snap := snapshot(brokers(2, 3), uncleanTopic, p)
	ref := PartitionRef{"t", 0}
	end := func(epoch int32, offset int64) replication.LogEnd {
		return replication.LogEnd{Epoch: epoch, Offset: offset}
	}
	plan := func(r *UncleanRecovery) metadata.Partition {
		t.Helper()
		got := Plan(snap, nil, nil, nil, r)
		if len(got) != 1 {
			t.Fatalf("%d changes, want 1: %+v", len(got), got)
		}
		return got[0].Next
	}
	elected := func(what string, next metadata.Partition, leader int32) {
		t.Helper()
		if next.Leader != leader || !slices.Equal(next.ISR, []int32{leader}) || next.LeaderEpoch != 5 || next.UncleanEpoch != 5 {
			t.Fatalf("%s: %+v, want leader %d alone at epoch 5, unclean", what, next, leader)
		}
	}
	elected("no log ends asked", plan(nil), 2)
	if got := uncleanElections(snap, Plan(snap, nil, nil, nil, nil)); len(got) != 1 || Ref(got[0]) != ref {
		t.Fatalf("the unclean elections of the plan: %+v, want t-0", got)
	}

	longer := ReplicaLogs{ref: {2: end(4, 100), 3: end(4, 150)}}
	// 1, down, has not said: it may hold more. The partition waits,
	// offline, unless it has waited long enough.
	next := plan(&UncleanRecovery{Logs: longer})
	if next.Leader != -1 || next.LeaderEpoch != 5 || !slices.Equal(next.ISR, []int32{1}) || next.UncleanEpoch != 0 {
		t.Fatalf("a replica has not said where its log ends: %+v, want offline at epoch 5, the ISR kept", next)
	}
	elected("the longer log, the wait over", plan(&UncleanRecovery{Logs: longer, Waited: map[PartitionRef]bool{ref: true}}), 3)
	later := ReplicaLogs{ref: {2: end(5, 100), 3: end(4, 150)}}
	elected("a later last epoch, the wait over", plan(&UncleanRecovery{Logs: later, Waited: map[PartitionRef]bool{ref: true}}), 2)
	elected("none said, the wait over", plan(&UncleanRecovery{Waited: map[PartitionRef]bool{ref: true}}), 2)

	// Every replica said (1 as well, back on an empty disk outside the
	// ISR, say; the ISR's member is no replica any more): no wait.
	p.ISR = []int32{5}
	snap = snapshot(brokers(1, 2, 3), uncleanTopic, p)
	all := ReplicaLogs{ref: {1: end(replication.NoEpoch, 0), 2: end(4, 100), 3: end(4, 150)}}
	elected("every replica said", plan(&UncleanRecovery{Logs: all}), 3)

	// A topic that does not allow it elects nobody, whatever the logs.
	snap = snapshot(brokers(2, 3), nil, metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: -1, LeaderEpoch: 4, ISR: []int32{1}})
	if got := Plan(snap, nil, nil, nil, &UncleanRecovery{Logs: longer, Waited: map[PartitionRef]bool{ref: true}}); len(got) != 0 {
		t.Fatalf("unclean election not allowed: %+v, want no change", got)
	}
}

// A partition whose ISR members are back from a machine crash, none of
// them with its log end reported, and the topic allowing unclean
// election: the longest of the live replicas' logs leads, not the first
// live member.
func TestAnUncleanElectionOfRecoveringMembersTakesTheLongestLog(t *testing.T) {
	p := metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: -1, LeaderEpoch: 4, ISR: []int32{1, 2},
		Recovering: metadata.Recovering{{ID: 1, LogEnd: -1}}}
	snap := snapshot(brokers(1, 3), map[string]string{UncleanElectionConfig: "true"}, p)
	got := Plan(snap, nil, nil, nil, nil)
	if len(got) != 1 || got[0].Next.Leader != 1 {
		t.Fatalf("no log ends asked: %+v, want leader 1", got)
	}
	logs := ReplicaLogs{{"t", 0}: {1: {Epoch: 4, Offset: 90}, 3: {Epoch: 4, Offset: 120}}}
	got = Plan(snap, nil, nil, nil, &UncleanRecovery{Logs: logs})
	if len(got) != 1 || got[0].Next.Leader != 3 || !slices.Equal(got[0].Next.ISR, []int32{3}) || got[0].Next.UncleanEpoch != 5 || got[0].Next.Recovering != nil {
		t.Fatalf("log ends asked: %+v, want leader 3 alone, unclean, none recovering", got)
	}
}

// CollectReplicaLogs asks each registered replica once, for all its
// partitions, at the same time, leaves out the brokers it is told to skip
// and the partitions a broker did not answer for.
func TestCollectReplicaLogs(t *testing.T) {
	parts := []metadata.Partition{
		{Topic: "a", Index: 0, Replicas: []int32{1, 2}},
		{Topic: "b", Index: 3, Replicas: []int32{2, 3, 4}},
	}
	snap := &metadata.Snapshot{Brokers: brokers(1, 2, 3)} // 4 is not registered
	var mu sync.Mutex
	asked := map[int32][]PartitionRef{}
	ask := func(_ context.Context, b metadata.Broker, refs []PartitionRef) map[PartitionRef]replication.LogEnd {
		mu.Lock()
		defer mu.Unlock()
		if _, twice := asked[b.ID]; twice {
			t.Errorf("broker %d asked twice", b.ID)
		}
		asked[b.ID] = refs
		out := map[PartitionRef]replication.LogEnd{}
		for _, ref := range refs {
			if b.ID == 2 && ref.Topic == "b" {
				continue // no answer for it
			}
			out[ref] = replication.LogEnd{Epoch: b.ID, Offset: int64(ref.Index)}
		}
		return out
	}
	logs := CollectReplicaLogs(context.Background(), snap, parts, map[int32]bool{3: true}, ask)
	if len(asked) != 2 || len(asked[1]) != 1 || len(asked[2]) != 2 {
		t.Fatalf("asked %v, want broker 1 for a-0, broker 2 for a-0 and b-3", asked)
	}
	want := ReplicaLogs{
		{"a", 0}: {1: {Epoch: 1, Offset: 0}, 2: {Epoch: 2, Offset: 0}},
	}
	if len(logs) != len(want) || len(logs[PartitionRef{"a", 0}]) != 2 || logs[PartitionRef{"a", 0}][2] != want[PartitionRef{"a", 0}][2] {
		t.Fatalf("collected %v, want %v", logs, want)
	}
}

// A partition waits from the first round that finds it waiting; one no
// longer waiting is forgotten, and waits anew.
func TestUncleanWaits(t *testing.T) {
	w := uncleanWaits{}
	p := metadata.Partition{Topic: "t", Index: 0}
	t0 := time.Unix(1000, 0)
	if got := w.waited([]metadata.Partition{p}, t0, 10*time.Second); len(got) != 0 {
		t.Fatalf("first round: %v waited", got)
	}
	if got := w.waited([]metadata.Partition{p}, t0.Add(9*time.Second), 10*time.Second); len(got) != 0 {
		t.Fatalf("9 s in: %v waited", got)
	}
	if got := w.waited([]metadata.Partition{p}, t0.Add(10*time.Second), 10*time.Second); !got[Ref(p)] {
		t.Fatalf("10 s in: %v, want t-0 waited", got)
	}
	w.waited(nil, t0.Add(11*time.Second), 10*time.Second)
	if got := w.waited([]metadata.Partition{p}, t0.Add(12*time.Second), 10*time.Second); len(got) != 0 || !w[Ref(p)].Equal(t0.Add(12*time.Second)) {
		t.Fatalf("waiting anew: %v waited, since %v", got, w[Ref(p)])
	}
}
