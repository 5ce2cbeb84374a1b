package controller

import (
	"slices"
	"testing"

	"github.com/shale-log/shale/metadata"
)

// The ISR's members that the controller takes out of it while it has
// fewer than min.insync.replicas members become its eligible leader
// replicas (KIP-966): the leader's high watermark holds still while the
// ISR is that small, so every record below it is on them. When the ISR's
// last member is gone a live one leads, cleanly, and that member becomes
// eligible in its place; with unclean election enabled a live one leads
// before any other replica from outside the ISR, and eligible replicas
// left over from a larger min.insync.replicas are not elected cleanly.
// The topic's min.insync.replicas, else the brokers' default, decides.
func TestMembersLeavingAnISRBelowMinInsyncReplicasAreEligible(t *testing.T) {
	min2 := map[string]string{MinInsyncReplicasConfig: "2"}
	only := func(changes []Change) metadata.Partition {
		t.Helper()
		if len(changes) != 1 {
			t.Fatalf("%d changes, want 1: %+v", len(changes), changes)
		}
		return changes[0].Next
	}

	// The leader of ISR [1 2] dies: 2 leads alone, 1 is eligible.
	p := metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 4, ISR: []int32{1, 2}}
	next := only(Plan(snapshot(brokers(2, 3), min2, p), nil, nil, nil, nil))
	if next.Leader != 2 || !slices.Equal(next.ISR, []int32{2}) || !slices.Equal(next.Eligible, []int32{1}) {
		t.Fatalf("after the leader died: %+v, want leader 2, ISR [2], eligible [1]", next)
	}
	// The same from the brokers' default, and none with min.insync.replicas=1.
	if got := only(Plan(snapshot(brokers(2, 3), nil, p), nil, nil, min2, nil)); !slices.Equal(got.Eligible, []int32{1}) {
		t.Fatalf("min.insync.replicas=2 by default: eligible %v, want [1]", got.Eligible)
	}
	if got := only(Plan(snapshot(brokers(2, 3), nil, p), nil, nil, nil, nil)); got.Eligible != nil {
		t.Fatalf("min.insync.replicas=1: eligible %v, want none", got.Eligible)
	}

	// Then 2 dies too: offline, its ISR and the eligible kept.
	p = next
	next = only(Plan(snapshot(brokers(3), min2, p), nil, nil, nil, nil))
	if next.Leader != -1 || !slices.Equal(next.ISR, []int32{2}) || !slices.Equal(next.Eligible, []int32{1}) {
		t.Fatalf("after the last member died: %+v, want offline, ISR [2], eligible [1]", next)
	}

	// 1 comes back: it leads, cleanly, and 2 is eligible in its place.
	p = next
	next = only(Plan(snapshot(brokers(1, 3), min2, p), nil, nil, nil, nil))
	if next.Leader != 1 || next.LeaderEpoch != p.LeaderEpoch+1 || !slices.Equal(next.ISR, []int32{1}) || !slices.Equal(next.Eligible, []int32{2}) || next.UncleanEpoch != 0 {
		t.Fatalf("an eligible replica back while the ISR's last member is away: %+v, want leader 1 at a new epoch, ISR [1], eligible [2], clean", next)
	}
	// Not while the ISR's last member, its leader, restarted and can
	// lead again.
	led := p
	led.Leader = 2
	if got := only(Plan(snapshot(brokers(1, 2, 3), min2, led), map[int32]bool{2: true}, nil, nil, nil)); got.Leader != 2 || !slices.Equal(got.ISR, []int32{2}) || !slices.Equal(got.Eligible, []int32{1}) {
		t.Fatalf("the ISR's last member restarted, an eligible replica live: %+v, want leader 2 again, eligible [1]", got)
	}
	// Nor once min.insync.replicas is down to the ISR's size: the high
	// watermark may have passed what 1 holds since.
	if got := Plan(snapshot(brokers(1, 3), nil, p), nil, nil, nil, nil); len(got) != 1 || got[0].Next.Leader != -1 || got[0].Next.Eligible != nil {
		t.Fatalf("an eligible replica left over from min.insync.replicas=2, now 1: %+v, want offline, eligible forgotten", got)
	}
	// With unclean election allowed it leads then, before 3 (first in
	// replica order here), and the election counts as unclean.
	p.Replicas = []int32{3, 1, 2}
	uncleanMin1 := map[string]string{UncleanElectionConfig: "true"}
	next = only(Plan(snapshot(brokers(1, 3), uncleanMin1, p), nil, nil, nil, nil))
	if next.Leader != 1 || !slices.Equal(next.ISR, []int32{1}) || next.Eligible != nil || next.UncleanEpoch != next.LeaderEpoch {
		t.Fatalf("unclean election with a left-over eligible replica live: %+v, want leader 1 alone, unclean", next)
	}
	// With none eligible live, unclean election takes the first live
	// replica.
	p.Eligible = []int32{2}
	p.ISR = []int32{1}
	next = only(Plan(snapshot(brokers(3), map[string]string{MinInsyncReplicasConfig: "2", UncleanElectionConfig: "true"}, p), nil, nil, nil, nil))
	if next.Leader != 3 || !slices.Equal(next.ISR, []int32{3}) || next.Eligible != nil || next.UncleanEpoch != next.LeaderEpoch {
		t.Fatalf("unclean election with no eligible replica live: %+v, want leader 3 alone, unclean", next)
	}

	// An eligible replica left over in an ISR at min.insync.replicas
	// (min.insync.replicas came down since it left) is forgotten when
	// the ISR changes: the high watermark may have moved past it. A
	// member that leaves the ISR then is eligible.
	p = metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: 2, LeaderEpoch: 4, ISR: []int32{2, 3}, Eligible: []int32{1}}
	next = only(Plan(snapshot(brokers(1, 2), min2, p), nil, nil, nil, nil))
	if !slices.Equal(next.ISR, []int32{2}) || !slices.Equal(next.Eligible, []int32{3}) {
		t.Fatalf("a member of an ISR at min.insync.replicas dies: %+v, want ISR [2], eligible [3]", next)
	}
}

// An operator's unclean election (ElectLeaders) takes a live eligible
// leader replica before any other replica from outside the ISR. It is
// marked unclean all the same: the replica may lack acks=1 records.
func TestAnUncleanElectionTakesAnEligibleReplicaFirst(t *testing.T) {
	p := metadata.Partition{Topic: "t", Replicas: []int32{3, 1, 2}, Leader: -1, LeaderEpoch: 4, ISR: []int32{2}, Eligible: []int32{1}}
	next, err := ElectUnclean(snapshot(brokers(1, 3), nil, p), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.Leader != 1 || !slices.Equal(next.ISR, []int32{1}) || next.Eligible != nil || next.UncleanEpoch != next.LeaderEpoch {
		t.Fatalf("%+v, want leader 1, ISR [1], no eligible, unclean", next)
	}
}

// Every member of an ISR below min.insync.replicas is back from a machine
// crash, their unflushed tails maybe gone: a live eligible leader replica
// that kept its log leads, cleanly, rather than the longest recovered
// log, and the recovering members are not eligible (their logs may lack
// what it holds). With min.insync.replicas down to the ISR's size the
// eligible replica is left over: the logs are compared as before.
func TestAnEligibleReplicaThatKeptItsLogLeadsBeforeRecoveredLogs(t *testing.T) {
	min3 := map[string]string{MinInsyncReplicasConfig: "3"}
	p := metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: -1, LeaderEpoch: 4, ISR: []int32{1, 2}, Eligible: []int32{3},
		Recovering: metadata.Recovering{{ID: 1, LogEnd: 90}, {ID: 2, LogEnd: -1}}}
	changes := Plan(snapshot(brokers(1, 2, 3), min3, p), nil, nil, nil, nil)
	if len(changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(changes), changes)
	}
	next := changes[0].Next
	if next.Leader != 3 || next.LeaderEpoch != 5 || !slices.Equal(next.ISR, []int32{3}) || next.Eligible != nil || next.Recovering != nil || next.UncleanEpoch != 0 {
		t.Fatalf("%+v, want leader 3 at epoch 5 alone in the ISR, none eligible or recovering, a clean election", next)
	}
	// Not a silent one: it may be starting after a crash of its own.
	if got := Plan(snapshot(brokers(1, 2, 3), min3, p), nil, map[int32]bool{3: true}, nil, nil); len(got) != 0 && got[0].Next.Leader == 3 {
		t.Fatalf("a silent eligible replica elected: %+v", got[0].Next)
	}
	min2 := map[string]string{MinInsyncReplicasConfig: "2"}
	if got := Plan(snapshot(brokers(1, 2, 3), min2, p), nil, nil, nil, nil); len(got) != 0 && got[0].Next.Leader == 3 {
		t.Fatalf("an eligible replica left over from a larger min.insync.replicas elected: %+v", got[0].Next)
	}
}

// An ISR below min.insync.replicas whose members are all back from machine
// crashes is not compared while an eligible replica is down: it holds every
// acknowledged record, and may hold what both recovered logs lost. Back from
// a crash of its own, it is compared with them (markRecovering takes it into
// the ISR); back with its log, it leads.
func TestRecoveredLogsWaitForADownEligibleReplica(t *testing.T) {
	min3 := map[string]string{MinInsyncReplicasConfig: "3"}
	p := metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: -1, LeaderEpoch: 4, ISR: []int32{1, 2}, Eligible: []int32{3},
		Recovering: metadata.Recovering{{ID: 1, LogEnd: 90}, {ID: 2, LogEnd: 80}}}
	if got := Plan(snapshot(brokers(1, 2), min3, p), nil, nil, nil, nil); len(got) != 0 {
		t.Fatalf("recovered logs compared while the eligible replica is down: %+v", got[0].Next)
	}
	// Registered but silent: it may be starting after a crash of its own.
	if got := Plan(snapshot(brokers(1, 2, 3), min3, p), nil, map[int32]bool{3: true}, nil, nil); len(got) != 0 {
		t.Fatalf("recovered logs compared while the eligible replica is silent: %+v", got[0].Next)
	}
	// Back from a crash of its own, with the longest log.
	back := p
	back.ISR, back.Eligible = []int32{1, 2, 3}, nil
	back.Recovering = append(slices.Clone(p.Recovering), metadata.RecoveringReplica{ID: 3, LogEnd: 100})
	changes := Plan(snapshot(brokers(1, 2, 3), min3, back), nil, nil, nil, nil)
	if len(changes) != 1 {
		t.Fatalf("%d changes, want 1: %+v", len(changes), changes)
	}
	if next := changes[0].Next; next.Leader != 3 || next.LeaderEpoch != 5 || !slices.Equal(next.ISR, []int32{3}) || next.Recovering != nil || next.UncleanEpoch != 0 {
		t.Fatalf("%+v, want the longest recovered log (3) to lead at epoch 5, cleanly", next)
	}
	// With min.insync.replicas down to the ISR's size the eligible
	// replica is left over, and the ISR's logs are compared without it.
	min2 := map[string]string{MinInsyncReplicasConfig: "2"}
	changes = Plan(snapshot(brokers(1, 2), min2, p), nil, nil, nil, nil)
	if len(changes) != 1 || changes[0].Next.Leader != 1 {
		t.Fatalf("%+v, want the longer recovered log (1) to lead", changes)
	}
	// Unclean election enabled: the longest live recovered log leads at
	// once, as an unclean election.
	unclean := map[string]string{MinInsyncReplicasConfig: "3", UncleanElectionConfig: "true"}
	changes = Plan(snapshot(brokers(1, 2), unclean, p), nil, nil, nil, nil)
	// None is eligible after it, as after Plan's unclean elections: the
	// down one, still eligible, would keep 1 (its log marked lost) from
	// leading.
	if len(changes) != 1 || changes[0].Next.Leader != 1 || changes[0].Next.UncleanEpoch != changes[0].Next.LeaderEpoch || changes[0].Next.Eligible != nil {
		t.Fatalf("%+v, want 1 elected uncleanly, none eligible", changes)
	}
}
