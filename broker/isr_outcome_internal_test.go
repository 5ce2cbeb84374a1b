package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
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

// startEtcd starts an embedded etcd on a free loopback port for the
// test, closed when it ends.
func startEtcd(ctx context.Context, t *testing.T) *metadata.Embedded {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// lostAnswerKV is an etcd KV whose first transaction loses its answer: the
// commit applies (or, without apply, is never sent), the caller gets a
// lost connection, and from then on reads fail too while down is set: a
// write whose outcome is unknown, and an etcd that cannot say for a
// while.
type lostAnswerKV struct {
	clientv3.KV
	apply bool
	down  atomic.Bool
	lost  atomic.Bool  // the first transaction's answer was lost
	reads atomic.Int32 // reads refused while down
}

func (kv *lostAnswerKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if kv.down.Load() {
		kv.reads.Add(1)
		return nil, status.Error(codes.Unavailable, "etcd unreachable")
	}
	return kv.KV.Get(ctx, key, opts...)
}

func (kv *lostAnswerKV) Txn(ctx context.Context) clientv3.Txn {
	return &hookedTxn{Txn: kv.KV.Txn(ctx), commit: kv.commit}
}

func (kv *lostAnswerKV) commit(txn clientv3.Txn) (*clientv3.TxnResponse, error) {
	if kv.lost.Swap(true) {
		return txn.Commit() // only the first answer is lost
	}
	if kv.apply {
		if _, err := txn.Commit(); err != nil {
			return nil, err
		}
	}
	kv.down.Store(true)
	return nil, status.Error(codes.Unavailable, "error reading from server: connection reset")
}

// hookedTxn is an etcd transaction whose Commit is commit's (a fault
// injected around the real one).
type hookedTxn struct {
	clientv3.Txn
	commit func(clientv3.Txn) (*clientv3.TxnResponse, error)
}

func (t *hookedTxn) If(cs ...clientv3.Cmp) clientv3.Txn     { t.Txn = t.Txn.If(cs...); return t }
func (t *hookedTxn) Then(ops ...clientv3.Op) clientv3.Txn   { t.Txn = t.Txn.Then(ops...); return t }
func (t *hookedTxn) Else(ops ...clientv3.Op) clientv3.Txn   { t.Txn = t.Txn.Else(ops...); return t }
func (t *hookedTxn) Commit() (*clientv3.TxnResponse, error) { return t.commit(t.Txn) }

// An ISR change whose write's outcome is unknown stays pending (its
// members stay in the ISR the high watermark waits for) until a re-read
// tells: an expansion that landed, dropped as failed, let the high
// watermark pass records the new member lacks, which then may become
// leader. Once etcd answers again: a change that landed stays pending
// until the metadata brings it; one that did not is dropped, and decided
// again.
func TestISRChangeOfUnknownOutcomeStaysPendingUntilReRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	for i, apply := range []bool{true, false} {
		name := "landed"
		if !apply {
			name = "lost"
		}
		t.Run(name, func(t *testing.T) {
			p, _ := leaderOfThree(t, time.Now().Add(time.Hour))
			p.topic = p.topic + name
			direct := metadata.NewStore(e.Client(), "")
			tp := metadata.Topic{Name: p.topic, ID: metadata.UUID{byte(i + 1)}}
			parts := []metadata.Partition{{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}}}
			if _, err := direct.CreateTopic(ctx, tp, parts); err != nil {
				t.Fatal(err)
			}
			cur, err := direct.Partition(ctx, p.topic, 0)
			if err != nil {
				t.Fatal(err)
			}
			cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			kv := &lostAnswerKV{KV: cli.KV, apply: apply}
			cli.KV = kv
			bctx, bcancel := context.WithCancel(context.Background())
			b := &Broker{cfg: Config{NodeID: 1}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ctx: bctx,
				meta: &etcdMeta{store: metadata.NewStore(cli, "")}}
			t.Cleanup(func() { bcancel(); b.wg.Wait() })

			// The expansion, sent as sendISRLocked does.
			s := p.state.Load()
			p.repl.Lock()
			p.repl.partitionEpoch = cur.PartitionEpoch
			p.repl.pendingISR, p.repl.pendingFrom = []int32{1, 2, 3}, cur.PartitionEpoch
			p.repl.Unlock()
			b.alterISR(p, []int32{1, 2, 3}, s.leaderEpoch, cur.PartitionEpoch)
			pending := func() bool {
				p.repl.Lock()
				defer p.repl.Unlock()
				return p.repl.pendingISR != nil
			}
			// Several re-reads refused: still pending.
			for kv.reads.Load() < 3 && pending() {
				time.Sleep(10 * time.Millisecond)
			}
			if !pending() {
				t.Fatal("an ISR change of unknown outcome was dropped before a re-read told")
			}
			kv.down.Store(false)
			b.wg.Wait()
			got, err := direct.Partition(ctx, p.topic, 0)
			if err != nil {
				t.Fatal(err)
			}
			if landed := got.PartitionEpoch > cur.PartitionEpoch; landed != apply {
				t.Fatalf("partition after the write: %+v", got)
			}
			if pending() != apply {
				t.Fatalf("pending after the re-read: %v, want %v (the write landed: %v)", pending(), apply, apply)
			}
		})
	}
}
