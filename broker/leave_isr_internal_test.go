package broker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/shale-log/shale/metadata"
)

// leaveISR decides on the stored partition, not on the caller's view: a
// broker whose log may have lost its tail leaves the ISR only to a member
// that kept its log. When every other member is recovering from a machine
// crash too (marked after the caller's view was taken, as brokers that
// all rebooted at once do), leaving would let the controller elect a
// shorter log over this one: it stays in the ISR as recovering instead,
// leading nothing. So does it when the only members not marked are ones
// the caller did not find up.
func TestLeavingTheISRLeavesItOnlyToAMemberThatKeptItsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	store := metadata.NewStore(e.Client(), "")
	parts := []metadata.Partition{
		// Broker 2 kept its log.
		{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 5, ISR: []int32{1, 2, 3}, Recovering: metadata.Recovering{{ID: 3, LogEnd: 40}}},
		// Brokers 2 and 3 are back from a machine crash too.
		{Index: 1, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 5, ISR: []int32{1, 2, 3}, Recovering: metadata.Recovering{{ID: 2, LogEnd: -1}, {ID: 3, LogEnd: 40}}},
		// Broker 2, found up, is back from a machine crash too; broker 3
		// is not marked, but was not found up: it may be starting, its
		// own marks not yet written.
		{Index: 2, Replicas: []int32{1, 2, 3}, Leader: 2, LeaderEpoch: 5, ISR: []int32{1, 2, 3}, Recovering: metadata.Recovering{{ID: 2, LogEnd: -1}}},
	}
	if _, err := store.CreateTopic(ctx, metadata.Topic{Name: "t", ID: metadata.UUID{7}}, parts); err != nil {
		t.Fatal(err)
	}
	m := &etcdMeta{store: store}

	if exit, err := m.leaveISR(ctx, "t", 0, 1, nil, 2); err != nil || exit != isrLeft {
		t.Fatalf("leaving to a member that kept its log: %v, err %v", exit, err)
	}
	p, err := store.Partition(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.ISR, []int32{2, 3}) || p.Leader != -1 || p.LeaderEpoch != 6 {
		t.Fatalf("after leaving: %+v, want ISR [2 3], no leader, epoch 6", p)
	}

	for range 2 {
		if exit, err := m.leaveISR(ctx, "t", 1, 1, nil, 2); err != nil || exit != isrRecovering {
			t.Fatalf("leaving to members that are all recovering: %v, err %v", exit, err)
		}
	}
	p, err = store.Partition(ctx, "t", 1)
	if err != nil {
		t.Fatal(err)
	}
	if end, ok := p.Recovering.End(1); !ok || end != -1 || !slices.Equal(p.ISR, []int32{1, 2, 3}) || p.Leader != -1 || p.LeaderEpoch != 6 || len(p.Recovering) != 3 {
		t.Fatalf("after staying: %+v, want ISR [1 2 3] all recovering, no leader, epoch 6", p)
	}

	if exit, err := m.leaveISR(ctx, "t", 2, 1, []int32{2}, 2); err != nil || exit != isrRecovering {
		t.Fatalf("leaving to the one member found up, recovering: %v, err %v", exit, err)
	}
	p, err = store.Partition(ctx, "t", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Recovering.End(1); !ok || !slices.Equal(p.ISR, []int32{1, 2, 3}) {
		t.Fatalf("after staying: %+v, want ISR [1 2 3] with broker 1 recovering", p)
	}
}

// The ISR's only member, its log lost, leaves the ISR to the eligible
// leader replicas (metadata.Partition.Eligible): they hold every
// acknowledged record, and leading from its empty log would cut theirs.
// When none of them is up, and its log may be the longest left (a machine
// crash), it stays, recovering, with them back in the ISR to be compared
// with. An eligible leader replica whose log was lost stops being one.
// A sole member with no eligible replicas is all there is: it stays. So
// does one whose eligible replicas are left over from a larger
// min.insync.replicas: they are not counted on.
func TestTheISRsLastMemberLeavesItToTheEligibleLeaderReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	store := metadata.NewStore(e.Client(), "")
	sole := func(eligible ...int32) metadata.Partition {
		return metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 5, ISR: []int32{1}, Eligible: eligible}
	}
	parts := []metadata.Partition{sole(2), sole(2), sole(2, 3), sole(2), sole(), sole(2), sole(2)}
	for i := range parts {
		parts[i].Index = int32(i)
	}
	if _, err := store.CreateTopic(ctx, metadata.Topic{Name: "t", ID: metadata.UUID{8}}, parts); err != nil {
		t.Fatal(err)
	}
	m := &etcdMeta{store: store}
	read := func(index int32) metadata.Partition {
		t.Helper()
		p, err := store.Partition(ctx, "t", index)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Its disk lost (any member is as long): it leaves to broker 2.
	if exit, err := m.leaveISR(ctx, "t", 0, 1, nil, 2); err != nil || exit != isrLeft {
		t.Fatalf("leaving to an eligible replica: %v, err %v", exit, err)
	}
	if p := read(0); !slices.Equal(p.ISR, []int32{2}) || p.Eligible != nil || p.Leader != -1 || p.LeaderEpoch != 6 {
		t.Fatalf("after leaving: %+v, want ISR [2], none eligible, no leader, epoch 6", p)
	}

	// Back from a machine crash, no eligible replica up: it stays,
	// recovering, with broker 2 back in the ISR.
	if exit, err := m.leaveISR(ctx, "t", 1, 1, []int32{}, 2); err != nil || exit != isrRecovering {
		t.Fatalf("no eligible replica up: %v, err %v", exit, err)
	}
	if p := read(1); !slices.Equal(p.ISR, []int32{1, 2}) || p.Eligible != nil || p.Leader != -1 || len(p.Recovering) != 1 {
		t.Fatalf("after staying: %+v, want ISR [1 2] with 1 recovering, none eligible, no leader", p)
	}

	// An eligible replica's disk lost: it stops being one.
	if exit, err := m.leaveISR(ctx, "t", 2, 3, nil, 2); err != nil || exit != isrLeft {
		t.Fatalf("an eligible replica leaving: %v, err %v", exit, err)
	}
	if p := read(2); !slices.Equal(p.ISR, []int32{1}) || !slices.Equal(p.Eligible, []int32{2}) || p.Leader != 1 || p.LeaderEpoch != 5 {
		t.Fatalf("after an eligible replica left: %+v, want ISR [1], eligible [2], leader 1 at 5", p)
	}

	// Marked recovering outright (no keeper up at its start): the same.
	if err := m.markRecovering(ctx, "t", 3, 1, -1, 2); err != nil {
		t.Fatal(err)
	}
	if p := read(3); !slices.Equal(p.ISR, []int32{1, 2}) || p.Eligible != nil || p.Leader != -1 || len(p.Recovering) != 1 {
		t.Fatalf("after marking recovering: %+v, want ISR [1 2] with 1 recovering, none eligible, no leader", p)
	}

	// No eligible replica: its log is all there is.
	if exit, err := m.leaveISR(ctx, "t", 4, 1, nil, 2); err != nil || exit != isrUnchanged {
		t.Fatalf("the only member: %v, err %v", exit, err)
	}
	if p := read(4); !slices.Equal(p.ISR, []int32{1}) || p.Leader != 1 || p.LeaderEpoch != 5 {
		t.Fatalf("the only member, no eligible replica: %+v, want it unchanged", p)
	}

	// min.insync.replicas down to 1: broker 2 is left over from a larger
	// one (the high watermark may have moved past it since), not a
	// replica that holds every acknowledged record. The ISR's only
	// member neither leaves it to broker 2 nor takes it back in.
	if exit, err := m.leaveISR(ctx, "t", 5, 1, nil, 1); err != nil || exit != isrUnchanged {
		t.Fatalf("a left-over eligible replica: %v, err %v", exit, err)
	}
	if p := read(5); !slices.Equal(p.ISR, []int32{1}) || p.Leader != 1 || p.LeaderEpoch != 5 {
		t.Fatalf("the only member, a left-over eligible replica: %+v, want ISR [1], leader 1 at 5", p)
	}
	if err := m.markRecovering(ctx, "t", 6, 1, -1, 1); err != nil {
		t.Fatal(err)
	}
	if p := read(6); !slices.Equal(p.ISR, []int32{1}) || p.Eligible != nil || p.Leader != -1 || len(p.Recovering) != 1 {
		t.Fatalf("after marking recovering beside a left-over eligible replica: %+v, want ISR [1] recovering, none eligible, no leader", p)
	}
}
