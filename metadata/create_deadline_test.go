package metadata

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// stallingEtcd is an etcd client whose requests stall from the commit of
// a topic record on (a put or delete of key) until lifted: each then waits for
// its context to end, and fails as a request to an unresponsive etcd does.
// With landed, the commit is applied and only its answer stalls (lost).
// The first skip commits that put or delete key go through untouched.
type stallingEtcd struct {
	clientv3.KV
	clientv3.Lease
	key    string
	landed bool

	mu      sync.Mutex
	skip    int
	stalled bool
	lifted  chan struct{}
}

func newStallingStore(t *testing.T, e *Embedded, key string, landed bool) (*Store, *stallingEtcd) {
	t.Helper()
	cli := ownClient(t, e)
	se := &stallingEtcd{KV: cli.KV, Lease: cli.Lease, key: key, landed: landed, lifted: make(chan struct{})}
	cli.KV, cli.Lease = se, se
	return NewStore(cli, ""), se
}

// wait stalls while the stall is on: it reports whether ctx ended first.
func (se *stallingEtcd) wait(ctx context.Context) error {
	se.mu.Lock()
	stalled := se.stalled
	se.mu.Unlock()
	if !stalled {
		return nil
	}
	select {
	case <-se.lifted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (se *stallingEtcd) lift() { close(se.lifted) }

func (se *stallingEtcd) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := se.wait(ctx); err != nil {
		return nil, err
	}
	return se.KV.Get(ctx, key, opts...)
}

func (se *stallingEtcd) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	if err := se.wait(ctx); err != nil {
		return nil, err
	}
	return se.Lease.Revoke(ctx, id)
}

func (se *stallingEtcd) Txn(ctx context.Context) clientv3.Txn {
	return &stallingTxn{Txn: se.KV.Txn(context.WithoutCancel(ctx)), se: se, ctx: ctx}
}

// Close is the KV's and the Lease's: the client closes both.
func (se *stallingEtcd) Close() error { return se.Lease.Close() }

type stallingTxn struct {
	clientv3.Txn
	se     *stallingEtcd
	ctx    context.Context
	commit bool // puts or deletes the topic record
}

func (t *stallingTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *stallingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}
func (t *stallingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		if (op.IsPut() || op.IsDelete()) && string(op.KeyBytes()) == t.se.key {
			t.commit = true
		}
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *stallingTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.commit {
		t.se.mu.Lock()
		if t.se.skip > 0 {
			t.se.skip--
			t.commit = false
		}
		t.se.mu.Unlock()
	}
	if t.commit && t.se.landed {
		// Applied, and its answer lost: only this request stalls.
		t.Txn.Commit()
		select {
		case <-t.se.lifted:
		case <-t.ctx.Done():
		}
		return nil, context.DeadlineExceeded
	}
	if t.commit {
		t.se.mu.Lock()
		t.se.stalled = true
		t.se.mu.Unlock()
	}
	if err := t.se.wait(t.ctx); err != nil {
		return nil, err
	}
	return t.Txn.Commit()
}

// The deadline the tests below give a call whose commit stalls, and how
// late past it an answer may come. The settle gets an eighth of the
// deadline (at most maxSettleRoom/2): 4 s leaves it 500 ms, room for a
// fence's transaction on a loaded machine under the race detector (with
// 2 s, 250 ms was missed there once).
const (
	deadlineTimeout = 4 * time.Second
	deadlineMargin  = 300 * time.Millisecond
)

// eachOutcome runs f as the subtest "stalled", where the stalled commit
// does not land, and as "landed", where it lands and only its answer is
// lost.
func eachOutcome(t *testing.T, f func(t *testing.T, name string, landed bool)) {
	for _, landed := range []bool{false, true} {
		name := "stalled"
		if landed {
			name = "landed"
		}
		t.Run(name, func(t *testing.T) { f(t, name, landed) })
	}
}

// answerByDeadline makes call with a context that ends after
// deadlineTimeout, lifts se's stall once it returns, and fails t if it
// returned more than deadlineMargin after the deadline.
func answerByDeadline(t *testing.T, se *stallingEtcd, call func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	call(ctx)
	late := time.Since(deadline)
	se.lift()
	if late > deadlineMargin {
		t.Errorf("answered %v after the deadline", late)
	}
}

// A creation whose commit stalls past the request's deadline answers by
// that deadline, not seconds after it: REQUEST_TIMED_OUT (a deadline
// error) when the commit did not land, the topic when it did; and a retry
// after a failed creation is not refused for long as another creation
// under way (the marker's lease is released even when etcd answers only
// after the deadline).
func TestCreateTopicAnswersByItsDeadline(t *testing.T) {
	e := startStockEtcd(t)
	eachOutcome(t, func(t *testing.T, name string, landed bool) {
		s, se := newStallingStore(t, e, NewStore(e.Client(), "").topicKey(name), landed)
		topic, parts := testTopic(name, 3)
		var err error
		answerByDeadline(t, se, func(ctx context.Context) { _, err = s.CreateTopic(ctx, topic, parts) })
		if landed {
			if err != nil {
				t.Fatalf("a creation whose commit landed: %v", err)
			}
			got, err := NewStore(e.Client(), "").topic(ctxT(t), name)
			if err != nil || got.ID != topic.ID {
				t.Fatalf("the topic: %+v, %v", got, err)
			}
			return
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a creation past its deadline returned %v, want a deadline error", err)
		}
		// The retry: refused only briefly, while the lease's
		// release goes through.
		retryBy := time.Now().Add(2 * time.Second)
		for {
			_, err := NewStore(e.Client(), "").CreateTopic(ctxT(t), topic, parts)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrTopicExists) || time.Now().After(retryBy) {
				t.Fatalf("the retry: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// A deletion whose commit stalls past the request's deadline answers by
// that deadline: a deadline error when the commit did not land, the
// deletion when it did.
func TestDeleteTopicAnswersByItsDeadline(t *testing.T) {
	e := startStockEtcd(t)
	eachOutcome(t, func(t *testing.T, name string, landed bool) {
		direct := NewStore(e.Client(), "")
		topic, parts := testTopic(name, 3)
		if _, err := direct.CreateTopic(ctxT(t), topic, parts); err != nil {
			t.Fatal(err)
		}
		s, se := newStallingStore(t, e, direct.topicKey(name), landed)
		var err error
		answerByDeadline(t, se, func(ctx context.Context) { _, err = s.DeleteTopic(ctx, name) })
		if landed {
			if err != nil {
				t.Fatalf("a deletion whose commit landed: %v", err)
			}
			if _, err := direct.topic(ctxT(t), name); !errors.Is(err, ErrUnknownTopic) {
				t.Fatalf("the deleted topic: %v", err)
			}
			return
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a deletion past its deadline returned %v, want a deadline error", err)
		}
	})
}

// An addition of partitions whose commit (the topic record's new count)
// stalls past the request's deadline answers by that deadline: a deadline
// error when the commit did not land, and a retry then adds the
// partitions; success when it did land, though its answer was lost, so
// that the client is not sent to retry into INVALID_PARTITIONS.
func TestCreatePartitionsAnswersByItsDeadline(t *testing.T) {
	e := startStockEtcd(t)
	eachOutcome(t, func(t *testing.T, name string, landed bool) {
		direct := NewStore(e.Client(), "")
		topic, parts := testTopic(name, 2)
		if _, err := direct.CreateTopic(ctxT(t), topic, parts); err != nil {
			t.Fatal(err)
		}
		_, more := testTopic(name, 5)
		add := more[2:]
		s, se := newStallingStore(t, e, direct.topicKey(name), landed)
		// The first write of the topic record (the count made
		// explicit, with the marker) goes through; the commit
		// stalls.
		se.skip = 1
		var rev int64
		var err error
		answerByDeadline(t, se, func(ctx context.Context) { rev, err = s.CreatePartitions(ctx, name, 2, add) })
		if landed {
			if err != nil {
				t.Fatalf("an addition whose commit landed: %v", err)
			}
			got, mod, err := direct.topicKV(ctxT(t), name)
			if err != nil || got.PartitionCount != 5 || rev < mod {
				t.Fatalf("the topic at revision %d: %+v (modified at %d), %v", rev, got, mod, err)
			}
			return
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("an addition past its deadline returned %v, want a deadline error", err)
		}
		if got, _, err := direct.topicKV(ctxT(t), name); err != nil || got.PartitionCount != 2 {
			t.Fatalf("the topic after a failed addition: %+v, %v", got, err)
		}
		// The retry: refused only briefly, while the marker's
		// release goes through.
		retryBy := time.Now().Add(2 * time.Second)
		for {
			_, err := direct.CreatePartitions(ctxT(t), name, 2, add)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrConflict) || time.Now().After(retryBy) {
				t.Fatalf("the retry: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got, _, err := direct.topicKV(ctxT(t), name); err != nil || got.PartitionCount != 5 {
			t.Fatalf("the topic after the retry: %+v, %v", got, err)
		}
	})
}

// A partition update whose commit stalls past its caller's deadline (an
// ISR change, an election asked for) answers by that deadline: the update
// when it landed; when it cannot tell, a deadline error that says the
// outcome is unknown (ErrIndeterminate), so the caller re-reads before it
// decides again.
func TestUpdatePartitionAnswersByItsDeadline(t *testing.T) {
	e := startStockEtcd(t)
	eachOutcome(t, func(t *testing.T, name string, landed bool) {
		direct, cur := createOnePartition(t, e, name)
		next := cur
		next.ISR = []int32{1, 2}
		next.Replicas = []int32{1, 2}
		s, se := newStallingStore(t, e, direct.partitionKey(name, 0), landed)
		var got Partition
		var err error
		answerByDeadline(t, se, func(ctx context.Context) { got, _, err = s.UpdatePartition(ctx, next, cur.PartitionEpoch) })
		if landed {
			if err != nil || got.PartitionEpoch != cur.PartitionEpoch+1 {
				t.Fatalf("an update whose commit landed: %+v, %v", got, err)
			}
			return
		}
		if !errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("an update past its deadline returned %v, want an indeterminate deadline error", err)
		}
	})
}
