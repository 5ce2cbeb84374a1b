package broker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shale-log/shale/metadata"
)

// A reassignment whose start landed while its answer was lost, and etcd
// then could not say (the first attempt: REQUEST_TIMED_OUT), is retried by
// the client: the retry finds the start already there and answers success
// without writing again (no second reassignment, the partition epoch not
// bumped again), at a revision that shows it. A retry after the
// reassignment completed is answered the same way.
func TestRetriedReassignmentWhoseStartLandedIsIdempotent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	direct := metadata.NewStore(e.Client(), "")
	for id := int32(1); id <= 4; id++ {
		reg, err := direct.RegisterBroker(ctx, metadata.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
	parts := []metadata.Partition{{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 1, ISR: []int32{1, 2, 3}}}
	if _, err := direct.CreateTopic(ctx, metadata.Topic{Name: "moved", ID: metadata.UUID{7}}, parts); err != nil {
		t.Fatal(err)
	}
	cache, err := metadata.NewCache(ctx, direct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	kv := &lostAnswerKV{KV: cli.KV, apply: true}
	cli.KV = kv
	m := &etcdMeta{store: metadata.NewStore(cli, ""), cache: cache}
	rev0, err := direct.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitForRevision(ctx, rev0); err != nil {
		t.Fatal(err)
	}
	before, err := direct.Partition(ctx, "moved", 0)
	if err != nil {
		t.Fatal(err)
	}
	target := []int32{4, 2, 3}

	// The first attempt: the start lands, its answer is lost, and the
	// re-read that would tell is refused.
	if _, err := m.reassign(ctx, "moved", 0, target); kafkaError(err) != kerr.RequestTimedOut.Code {
		t.Fatalf("a start of unknown outcome: %v (code %d), want REQUEST_TIMED_OUT", err, kafkaError(err))
	}
	kv.down.Store(false)
	started, err := direct.Partition(ctx, "moved", 0)
	if err != nil {
		t.Fatal(err)
	}
	if started.PartitionEpoch != before.PartitionEpoch+1 || !slices.Equal(started.AddingReplicas, []int32{4}) || !slices.Equal(started.RemovingReplicas, []int32{1}) {
		t.Fatalf("the partition after the first attempt: %+v", started)
	}

	retry := func(want metadata.Partition) {
		t.Helper()
		rev, err := m.reassign(ctx, "moved", 0, target)
		if err != nil || rev == 0 {
			t.Fatalf("the retry: revision %d, %v", rev, err)
		}
		got, gotRev, err := direct.PartitionRevision(ctx, "moved", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.PartitionEpoch != want.PartitionEpoch || gotRev != rev {
			t.Fatalf("the retry wrote again: %+v at revision %d (answered %d), want %+v", got, gotRev, rev, want)
		}
	}
	retry(started)

	// The reassignment completes (as the controller does once the new
	// replica is in sync); a retry then finds the target in place.
	done := started
	done.Replicas, done.ISR = target, target
	done.AddingReplicas, done.RemovingReplicas, done.RetiredReplicas = nil, nil, []int32{1}
	done.Leader, done.LeaderEpoch = 4, started.LeaderEpoch+1
	if _, _, err := direct.UpdatePartition(ctx, done, started.PartitionEpoch); err != nil {
		t.Fatal(err)
	}
	completed, err := direct.Partition(ctx, "moved", 0)
	if err != nil {
		t.Fatal(err)
	}
	retry(completed)
}
