package broker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shale-log/shale/metadata"
)

// refusingKV is an etcd KV that refuses the next `refuse` transactions,
// as an etcd that lost its quorum for a moment does.
type refusingKV struct {
	clientv3.KV
	refuse atomic.Int32
}

func (kv *refusingKV) Txn(ctx context.Context) clientv3.Txn {
	return &hookedTxn{Txn: kv.KV.Txn(ctx), commit: func(txn clientv3.Txn) (*clientv3.TxnResponse, error) {
		if kv.refuse.Add(-1) >= 0 {
			return nil, status.Error(codes.Unavailable, "etcdserver: no leader")
		}
		return txn.Commit()
	}}
}

// A broker back from a machine crash records, before it registers, that
// its logs the ISR counts on may lack their tails. Writes etcd refuses
// for a moment are retried; when they are refused for longer, the start
// fails and the boot is not recorded, so the next start marks again. It
// logged the refusal and registered: it then answered as a member that
// kept its log, and the others, back from the same crash, left the ISR to
// it.
func TestMarksBeforeRegisteringAreWrittenOrTheStartFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	direct := metadata.NewStore(e.Client(), "")
	parts := []metadata.Partition{
		{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 2, LeaderEpoch: 4, ISR: []int32{1, 2, 3}},
		{Index: 1, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 4, ISR: []int32{1, 2, 3}},
	}
	if _, err := direct.CreateTopic(ctx, metadata.Topic{Name: "t", ID: metadata.UUID{9}}, parts); err != nil {
		t.Fatal(err)
	}
	cache, err := metadata.NewCache(ctx, direct, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	rev, err := direct.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	kv := &refusingKV{KV: cli.KV}
	cli.KV = kv
	ms := &etcdMeta{store: metadata.NewStore(cli, ""), cache: cache}
	root := t.TempDir()
	for i := range int32(2) {
		dir := partitionDir(root, "t", i)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writePartitionMetadata(dir, [16]byte{9}); err != nil {
			t.Fatal(err)
		}
	}
	b := &Broker{cfg: Config{NodeID: 1}, log: slog.New(slog.DiscardHandler), replicas: &replicaManager{dir: root}}

	// Refused for longer than the retries: the start fails.
	defer func(d time.Duration) { markRetryFor = d }(markRetryFor)
	markRetryFor = 500 * time.Millisecond
	kv.refuse.Store(1 << 20)
	if err := b.leaveLostISRs(ctx, ms, true); err == nil {
		t.Fatal("marks etcd refused throughout: the start went on")
	}
	// Refused a few times: retried, and written.
	markRetryFor = 30 * time.Second
	kv.refuse.Store(3)
	if err := b.leaveLostISRs(ctx, ms, true); err != nil {
		t.Fatal(err)
	}
	for i := range int32(2) {
		p, err := direct.Partition(ctx, "t", i)
		if err != nil {
			t.Fatal(err)
		}
		// No other member answers: the log stays in the ISR,
		// recovering, and leads nothing.
		if _, recovering := p.Recovering.End(1); !recovering || p.Leader == 1 {
			t.Fatalf("partition %d after the marks: %+v, want broker 1 recovering and not leading", i, p)
		}
		if _, err := os.Stat(filepath.Join(partitionDir(root, "t", i), lostLogFile)); err != nil {
			t.Fatalf("partition %d: the lost-log mark: %v", i, err)
		}
	}
}
