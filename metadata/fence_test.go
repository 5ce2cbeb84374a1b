package metadata

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// holdingEtcd is an etcd client that holds back the first commit writing
// key: its caller sees the request fail when its context ends, as with an
// etcd that lost its quorum, while the transaction itself is kept, not yet
// applied, to be released later (as that etcd applies it once it has its
// quorum again). Every other request goes through.
type holdingEtcd struct {
	clientv3.KV
	key string

	// landsFirst: the held commit applies just before the next commit
	// writing key (it lands between the settle's re-read and its fence).
	landsFirst bool

	mu   sync.Mutex
	held clientv3.Txn // the held commit, built on a context that does not end
	n    int          // commits that wrote key
}

func newHoldingStore(t *testing.T, e *Embedded, key string) (*Store, *holdingEtcd) {
	t.Helper()
	cli := ownClient(t, e)
	he := &holdingEtcd{KV: cli.KV, key: key}
	cli.KV = he
	return NewStore(cli, ""), he
}

func (he *holdingEtcd) Txn(ctx context.Context) clientv3.Txn {
	return &holdingTxn{Txn: he.KV.Txn(ctx), bg: he.KV.Txn(context.Background()), he: he, ctx: ctx}
}

// release applies the held commit now and returns etcd's answer.
func (he *holdingEtcd) release() (*clientv3.TxnResponse, error) {
	he.mu.Lock()
	held := he.held
	he.mu.Unlock()
	if held == nil {
		return nil, errors.New("no commit was held")
	}
	return held.Commit()
}

type holdingTxn struct {
	clientv3.Txn
	bg     clientv3.Txn // the same transaction, for release
	he     *holdingEtcd
	ctx    context.Context
	writes bool
}

func (t *holdingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn, t.bg = t.Txn.If(cs...), t.bg.If(cs...)
	return t
}

func (t *holdingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		if (op.IsPut() || op.IsDelete()) && string(op.KeyBytes()) == t.he.key {
			t.writes = true
		}
	}
	t.Txn, t.bg = t.Txn.Then(ops...), t.bg.Then(ops...)
	return t
}

func (t *holdingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn, t.bg = t.Txn.Else(ops...), t.bg.Else(ops...)
	return t
}

func (t *holdingTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.writes {
		t.he.mu.Lock()
		t.he.n++
		first := t.he.n == 1
		if first {
			t.he.held = t.bg
		}
		t.he.mu.Unlock()
		if first {
			<-t.ctx.Done()
			return nil, t.ctx.Err()
		}
		if t.he.landsFirst {
			t.he.landsFirst = false
			if resp, err := t.he.release(); err != nil || !resp.Succeeded {
				return nil, fmt.Errorf("the held commit, applied before the next: %v, %v", resp, err)
			}
		}
	}
	return t.Txn.Commit()
}

// createOnePartition creates the topic name with one partition through
// e's own client and returns a store on that client and the partition.
func createOnePartition(t *testing.T, e *Embedded, name string) (*Store, Partition) {
	t.Helper()
	direct := NewStore(e.Client(), "")
	topic, parts := testTopic(name, 1)
	if _, err := direct.CreateTopic(ctxT(t), topic, parts); err != nil {
		t.Fatal(err)
	}
	cur, err := direct.Partition(ctxT(t), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return direct, cur
}

// A partition update whose commit is cut off by its deadline while etcd
// still holds it is settled with a fence, not a re-read alone: the caller
// is told it did not land, and the held commit, applied after that
// answer, fails its guard, so the partition keeps the state the caller
// was told of. Through the store and through the controller's leadership.
func TestUpdatePartitionOfUnknownOutcomeIsFenced(t *testing.T) {
	e := startStockEtcd(t)
	for _, via := range []string{"store", "controller"} {
		t.Run(via, func(t *testing.T) {
			name := "fenced-" + via
			direct, cur := createOnePartition(t, e, name)
			next := cur
			next.ISR = append(append([]int32(nil), cur.ISR...), 99)
			s, he := newHoldingStore(t, e, direct.partitionKey(name, 0))
			update := s.UpdatePartition
			if via == "controller" {
				lead, err := s.Campaign(ctxT(t), 1, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { lead.Resign(context.Background()) })
				update = lead.UpdatePartition
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
			got, _, err := update(ctx, next, cur.PartitionEpoch)
			cancel()
			if err == nil || errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("an update held past its deadline returned %v, want a deadline error saying it did not land", err)
			}
			if got.PartitionEpoch != cur.PartitionEpoch || !samePartition(got, cur) {
				t.Fatalf("the state returned: %+v, want %+v", got, cur)
			}
			// etcd applies the held commit now, after the answer.
			resp, err := he.release()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded {
				t.Fatalf("the held commit applied after the caller was told it did not land")
			}
			after, err := direct.Partition(ctxT(t), name, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !samePartition(after, cur) {
				t.Fatalf("the partition after the release: %+v, want %+v", after, cur)
			}
		})
	}
}

// When the held commit applies between the settle's re-read and its
// fence, the fence's guard fails and the update is found landed.
func TestUpdatePartitionLandingBeforeItsFenceIsFound(t *testing.T) {
	e := startStockEtcd(t)
	name := "lands-before-fence"
	direct, cur := createOnePartition(t, e, name)
	next := cur
	next.ISR = append(append([]int32(nil), cur.ISR...), 99)
	s, he := newHoldingStore(t, e, direct.partitionKey(name, 0))
	he.landsFirst = true
	ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
	got, rev, err := s.UpdatePartition(ctx, next, cur.PartitionEpoch)
	cancel()
	if err != nil || got.PartitionEpoch != cur.PartitionEpoch+1 || rev == 0 {
		t.Fatalf("an update that landed before its fence: %+v at %d, %v", got, rev, err)
	}
	after, err := direct.Partition(ctxT(t), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !samePartition(after, got) {
		t.Fatalf("the partition: %+v, want %+v", after, got)
	}
}

// FencePartition, at the partition epoch a write of unknown outcome was
// sent against, leaves that write unable to apply after its answer; once
// the partition has moved on, it answers the later epoch and writes
// nothing.
func TestFencePartitionStopsAWriteStillOnItsWay(t *testing.T) {
	e := startStockEtcd(t)
	name := "fence-partition"
	direct, cur := createOnePartition(t, e, name)
	key := direct.partitionKey(name, 0)
	read, err := e.Client().Get(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	// A write guarded as UpdatePartition's are, not yet applied.
	held := e.Client().Txn(ctxT(t)).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", read.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, "the held write"))
	epoch, err := direct.FencePartition(ctxT(t), name, 0, cur.PartitionEpoch)
	if err != nil || epoch != cur.PartitionEpoch {
		t.Fatalf("FencePartition at the current epoch: %d, %v", epoch, err)
	}
	resp, err := held.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded {
		t.Fatal("the held write applied after the fence")
	}
	if after, err := direct.Partition(ctxT(t), name, 0); err != nil || !samePartition(after, cur) {
		t.Fatalf("the partition after the fence: %+v, %v; want %+v", after, err, cur)
	}

	next := cur
	next.ISR = append(append([]int32(nil), cur.ISR...), 99)
	moved, _, err := direct.UpdatePartition(ctxT(t), next, cur.PartitionEpoch)
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.Client().Get(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	epoch, err = direct.FencePartition(ctxT(t), name, 0, cur.PartitionEpoch)
	if err != nil || epoch != moved.PartitionEpoch {
		t.Fatalf("FencePartition after the partition moved on: %d, %v; want %d", epoch, err, moved.PartitionEpoch)
	}
	if again, err := e.Client().Get(ctxT(t), key); err != nil || again.Kvs[0].ModRevision != before.Kvs[0].ModRevision {
		t.Fatalf("FencePartition wrote a partition that had moved on: %v", err)
	}
}
