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

	if recovering, err := m.leaveISR(ctx, "t", 0, 1, nil); err != nil || recovering {
		t.Fatalf("leaving to a member that kept its log: recovering %v, err %v", recovering, err)
	}
	p, err := store.Partition(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.ISR, []int32{2, 3}) || p.Leader != -1 || p.LeaderEpoch != 6 {
		t.Fatalf("after leaving: %+v, want ISR [2 3], no leader, epoch 6", p)
	}

	for range 2 {
		if recovering, err := m.leaveISR(ctx, "t", 1, 1, nil); err != nil || !recovering {
			t.Fatalf("leaving to members that are all recovering: recovering %v, err %v", recovering, err)
		}
	}
	p, err = store.Partition(ctx, "t", 1)
	if err != nil {
		t.Fatal(err)
	}
	if end, ok := p.Recovering.End(1); !ok || end != -1 || !slices.Equal(p.ISR, []int32{1, 2, 3}) || p.Leader != -1 || p.LeaderEpoch != 6 || len(p.Recovering) != 3 {
		t.Fatalf("after staying: %+v, want ISR [1 2 3] all recovering, no leader, epoch 6", p)
	}

	if recovering, err := m.leaveISR(ctx, "t", 2, 1, []int32{2}); err != nil || !recovering {
		t.Fatalf("leaving to the one member found up, recovering: recovering %v, err %v", recovering, err)
	}
	p, err = store.Partition(ctx, "t", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Recovering.End(1); !ok || !slices.Equal(p.ISR, []int32{1, 2, 3}) {
		t.Fatalf("after staying: %+v, want ISR [1 2 3] with broker 1 recovering", p)
	}
}
