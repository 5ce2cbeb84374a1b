package metadata

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// holdingEtcd is an etcd client that holds back the first commit writing
// key: its caller sees the request fail when its context ends, as with an
// etcd that lost its quorum, while the transaction itself is kept, not yet
// applied, to be released later (as that etcd applies it once it has its
// quorum again). Every other request goes through.
type holdingEtcd struct {
	clientv3.KV
	key string

	// skip: the first skip commits writing key go through untouched.
	skip int
	// landsFirst: the held commit applies just before the next commit
	// writing landsBefore (key when empty): it lands between the
	// settle's re-read and its fence.
	landsFirst  bool
	landsBefore string

	mu   sync.Mutex
	held clientv3.Txn // the held commit, built on a context that does not end
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
	writes bool // writes key
	fences bool // writes landsBefore
}

func (t *holdingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn, t.bg = t.Txn.If(cs...), t.bg.If(cs...)
	return t
}

func (t *holdingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		if !op.IsPut() && !op.IsDelete() {
			continue
		}
		before := t.he.landsBefore
		if before == "" {
			before = t.he.key
		}
		t.writes = t.writes || string(op.KeyBytes()) == t.he.key
		t.fences = t.fences || string(op.KeyBytes()) == before
	}
	t.Txn, t.bg = t.Txn.Then(ops...), t.bg.Then(ops...)
	return t
}

func (t *holdingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn, t.bg = t.Txn.Else(ops...), t.bg.Else(ops...)
	return t
}

func (t *holdingTxn) Commit() (*clientv3.TxnResponse, error) {
	t.he.mu.Lock()
	if t.writes && t.he.skip > 0 {
		t.he.skip--
		t.writes = false
	}
	held := t.he.held != nil
	first := t.writes && !held
	if first {
		t.he.held = t.bg
	}
	landsNow := held && t.fences && t.he.landsFirst
	if landsNow {
		t.he.landsFirst = false
	}
	t.he.mu.Unlock()
	if first {
		<-t.ctx.Done()
		return nil, t.ctx.Err()
	}
	if landsNow {
		if resp, err := t.he.release(); err != nil || !resp.Succeeded {
			return nil, fmt.Errorf("the held commit, applied before the next: %v, %v", resp, err)
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

// refusingLease is an etcd lease client that refuses every revocation, as
// an etcd that cannot apply one in time: a creation's marker stays until
// its lease runs out.
type refusingLease struct{ clientv3.Lease }

func (refusingLease) Revoke(context.Context, clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	return nil, status.Error(codes.Unavailable, "etcd unable to apply the revocation")
}

// A creation, or an addition of partitions, whose commit is cut off by
// its deadline while etcd still holds it is settled with a fence, not a
// re-read alone: the caller is told it did not land, and the held commit,
// applied after that answer, fails its guard, also when the release of
// the creation's marker did not go through (before, that release was what
// stopped it, and a held commit applied after a refused one created the
// topic the caller was told was not created). When the held commit applies
// between the settle's start and its fence, the creation is found landed.
func TestCreationOfUnknownOutcomeIsFenced(t *testing.T) {
	e := startStockEtcd(t)
	for _, tc := range []struct {
		name       string
		add        bool // an addition of partitions, not a creation
		landsFirst bool
	}{
		{"creation", false, false},
		{"addition", true, false},
		{"creation-lands-before-fence", false, true},
		{"addition-lands-before-fence", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.name
			direct := NewStore(e.Client(), "")
			topic, parts := testTopic(name, 5)
			if tc.add {
				if _, err := direct.CreateTopic(ctxT(t), topic, parts[:2]); err != nil {
					t.Fatal(err)
				}
			}
			s, he := newHoldingStore(t, e, direct.topicKey(name))
			s.cli.Lease = refusingLease{s.cli.Lease}
			he.landsFirst, he.landsBefore = tc.landsFirst, direct.creatingKey(name)
			ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
			var err error
			if tc.add {
				// The first write of the topic record (the count made
				// explicit, with the marker) goes through.
				he.skip = 1
				_, err = s.CreatePartitions(ctx, name, 2, parts[2:])
			} else {
				_, err = s.CreateTopic(ctx, topic, parts)
			}
			cancel()
			want := int32(len(parts))
			if tc.landsFirst {
				if err != nil {
					t.Fatalf("a commit that landed before its fence: %v", err)
				}
			} else {
				if err == nil || errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("a commit held past its deadline returned %v, want a deadline error saying it did not land", err)
				}
				// etcd applies the held commit now, after the answer.
				resp, err := he.release()
				if err != nil {
					t.Fatal(err)
				}
				if resp.Succeeded {
					t.Fatal("the held commit applied after the caller was told it did not land")
				}
				want = 0
				if tc.add {
					want = 2
				}
			}
			got, _, err := direct.topicKV(ctxT(t), name)
			switch {
			case want == 0 && !errors.Is(err, ErrUnknownTopic):
				t.Fatalf("the topic after a creation that did not land: %+v, %v", got, err)
			case want > 0 && (err != nil || got.PartitionCount != want):
				t.Fatalf("the topic: %+v, %v; want %d partitions", got, err, want)
			}
		})
	}
}

// A deletion of a topic whose commit is cut off by its deadline while
// etcd still holds it is settled with a fence, not a re-read alone: the
// caller is told it did not land, and the held deletion, applied after
// that answer, fails its guard, so the topic the caller was told is still
// there stays. When the held deletion applies just before the fence, it
// is found landed.
func TestDeleteTopicOfUnknownOutcomeIsFenced(t *testing.T) {
	e := startStockEtcd(t)
	for _, landsFirst := range []bool{false, true} {
		name := "deletion-held"
		if landsFirst {
			name = "deletion-lands-before-fence"
		}
		t.Run(name, func(t *testing.T) {
			direct := NewStore(e.Client(), "")
			topic, parts := testTopic(name, 2)
			if _, err := direct.CreateTopic(ctxT(t), topic, parts); err != nil {
				t.Fatal(err)
			}
			s, he := newHoldingStore(t, e, direct.topicKey(name))
			he.landsFirst = landsFirst
			ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
			_, err := s.DeleteTopic(ctx, name)
			cancel()
			if landsFirst {
				if err != nil {
					t.Fatalf("a deletion that landed before its fence: %v", err)
				}
				if _, err := direct.topic(ctxT(t), name); !errors.Is(err, ErrUnknownTopic) {
					t.Fatalf("the deleted topic: %v", err)
				}
				return
			}
			if err == nil || errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a deletion held past its deadline returned %v, want a deadline error saying it did not land", err)
			}
			resp, err := he.release()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Succeeded {
				t.Fatal("the held deletion applied after the caller was told it did not land")
			}
			if got, err := direct.topic(ctxT(t), name); err != nil || got.ID != topic.ID {
				t.Fatalf("the topic after a deletion that did not land: %+v, %v", got, err)
			}
		})
	}
}
