package broker

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shale-log/shale/metadata"
)

// markArchiving clears a partition's unarchived mark only as the leader of
// the epoch the stored partition names: a leader an election replaced
// (its view behind etcd) is refused and leaves the mark, which the new
// leader's term relies on. The write bumps the partition epoch and keeps
// the rest of the record; clearing it again is no error.
func TestMarkArchivingOnlyAsTheCurrentLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	store := metadata.NewStore(e.Client(), "")
	parts := []metadata.Partition{{Index: 0, Replicas: []int32{1, 2}, Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}, Unarchived: true}}
	if _, err := store.CreateTopic(ctx, metadata.Topic{Name: "fresh", ID: metadata.UUID{9}}, parts); err != nil {
		t.Fatal(err)
	}
	m := &etcdMeta{store: store}
	// An election moved the leadership on: broker 1 at epoch 3 is stale.
	p, err := store.Partition(ctx, "fresh", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Leader, p.LeaderEpoch = 2, 4
	if _, _, err := store.UpdatePartition(ctx, p, p.PartitionEpoch); err != nil {
		t.Fatal(err)
	}
	if err := m.markArchiving(ctx, "fresh", 0, 1, 3); !errors.Is(err, errMetaConflict) {
		t.Fatalf("a replaced leader marking: %v, want a conflict", err)
	}
	before, err := store.Partition(ctx, "fresh", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !before.Unarchived {
		t.Fatal("a replaced leader cleared the mark")
	}
	for range 2 {
		if err := m.markArchiving(ctx, "fresh", 0, 2, 4); err != nil {
			t.Fatal(err)
		}
	}
	after, err := store.Partition(ctx, "fresh", 0)
	if err != nil {
		t.Fatal(err)
	}
	if after.Unarchived || after.PartitionEpoch != before.PartitionEpoch+1 || after.Leader != 2 || after.LeaderEpoch != 4 || !slices.Equal(after.ISR, before.ISR) {
		t.Fatalf("the partition before %+v, after %+v", before, after)
	}
}
