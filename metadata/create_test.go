package metadata

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// startStockEtcd starts an embedded etcd with etcd's default limits (128
// operations per transaction, 1.5 MiB per request), as an external etcd
// run without flags has.
func startStockEtcd(t *testing.T) *Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir(), ClientAddr: freeLoopbackAddr(), MaxTxnOps: 128, MaxRequestBytes: 1536 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func partitionCount(t *testing.T, c *Cache, rev int64, name string) int {
	t.Helper()
	if err := c.WaitForRevision(ctxT(t), rev); err != nil {
		t.Fatal(err)
	}
	ts := c.Snapshot().Topics[name]
	if ts == nil {
		return -1
	}
	for i, p := range ts.Partitions {
		if p.Index != int32(i) {
			t.Fatalf("%s: partition %d at position %d", name, p.Index, i)
		}
	}
	return len(ts.Partitions)
}

func keyCount(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(ctxT(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// A topic of 1,000 partitions, 500 more partitions, a config change and
// the deletion all pass an etcd with its default limits, which refused
// topics of more than 127 partitions written in one transaction.
func TestTopicsBeyondEtcdDefaultLimits(t *testing.T) {
	e := startStockEtcd(t)
	s := NewStore(e.Client(), "")
	ctx := ctxT(t)
	cache, err := NewCache(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	topic, parts := testTopic("wide", 1500)
	// Long replica lists, so that bytes bound the chunks too.
	for i := range parts {
		parts[i].Replicas = make([]int32, 200)
	}
	rev, err := s.CreateTopic(ctx, topic, parts[:1000])
	if err != nil {
		t.Fatalf("creating 1,000 partitions: %v", err)
	}
	if n := partitionCount(t, cache, rev, "wide"); n != 1000 {
		t.Fatalf("%d partitions, want 1000", n)
	}
	if _, err := s.CreateTopic(ctx, topic, parts[:1]); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := s.CreatePartitions(ctx, "wide", 999, parts[1000:]); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale count: %v", err)
	}
	if rev, err = s.CreatePartitions(ctx, "wide", 1000, parts[1000:]); err != nil {
		t.Fatalf("adding 500 partitions: %v", err)
	}
	if n := partitionCount(t, cache, rev, "wide"); n != 1500 {
		t.Fatalf("%d partitions, want 1500", n)
	}
	rev, err = s.UpdateTopicConfigs(ctx, "wide", func(m map[string]string) (map[string]string, error) {
		m["retention.ms"] = "5"
		return m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := partitionCount(t, cache, rev, "wide"); n != 1500 || cache.Snapshot().Topics["wide"].Configs["retention.ms"] != "5" {
		t.Fatalf("after a config change: %d partitions, configs %v", n, cache.Snapshot().Topics["wide"].Configs)
	}
	if rev, err = s.DeleteTopic(ctx, "wide"); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	if n := partitionCount(t, cache, rev, "wide"); n != -1 {
		t.Fatalf("deleted topic has %d partitions", n)
	}
	if n := keyCount(t, e.Client(), s.partitionsPrefix()); n != 0 {
		t.Fatalf("%d partition records left", n)
	}
	if _, err := s.CreateTopic(ctx, topic, parts[:300]); err != nil {
		t.Fatalf("creating it again: %v", err)
	}
}

// ownClient is a client of e of the test's own, closed when the test ends
// (a client the test may wrap or close early without touching e's).
func ownClient(t *testing.T, e *Embedded) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// crashingStore is a store on a client of its own, closed by the test
// between two chunks of a creation: the process stops there, its marker's
// lease is not revoked.
func crashingStore(t *testing.T, e *Embedded, prefix string, atChunk int) *Store {
	t.Helper()
	cli := ownClient(t, e)
	afterChunk = func(i int) error {
		if i == atChunk {
			cli.Close()
			return errors.New("crashed")
		}
		return nil
	}
	t.Cleanup(func() { afterChunk = nil })
	return NewStore(cli, prefix)
}

// A creation that stops between two chunks leaves no topic readers see;
// its leftovers go when its marker's lease expires, at the controller's
// clean-up or the next creation of the name; an addition of partitions
// that stops half-way adds none.
func TestCrashBetweenChunksLeavesNoHalfTopic(t *testing.T) {
	e := startStockEtcd(t)
	old := creatingTTL
	creatingTTL = 2
	defer func() { creatingTTL = old }()
	s := NewStore(e.Client(), "")
	ctx := ctxT(t)
	cache, err := NewCache(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	lead, err := s.Campaign(ctx, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lead.Resign(context.Background())

	topic, parts := testTopic("torn", 1000)
	if _, err := crashingStore(t, e, "", 4).CreateTopic(ctx, topic, parts); err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Fatalf("the crashed creation returned %v", err)
	}
	afterChunk = nil
	if n := keyCount(t, e.Client(), s.partitionPrefix("torn")); n != 400 {
		t.Fatalf("%d partition records written before the crash, want 400", n)
	}
	rev, _ := s.Revision(ctx)
	if n := partitionCount(t, cache, rev, "torn"); n != -1 {
		t.Fatalf("a half-created topic is visible with %d partitions", n)
	}
	// While the marker lives, another creation of the name is refused
	// and the controller leaves the records alone.
	if _, err := s.CreateTopic(ctx, topic, parts[:1]); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("creating during another creation: %v", err)
	}
	if n, err := lead.CleanAbandonedCreations(ctx); err != nil || n != 0 {
		t.Fatalf("cleaned %d (%v) while the creation's marker lives", n, err)
	}
	waitFor(t, func() bool { return keyCount(t, e.Client(), s.creatingPrefix()) == 0 })
	if n, err := lead.CleanAbandonedCreations(ctx); err != nil || n != 1 {
		t.Fatalf("cleaned %d topics (%v), want 1", n, err)
	}
	if n := keyCount(t, e.Client(), s.partitionsPrefix()); n != 0 {
		t.Fatalf("%d partition records left after the clean-up", n)
	}

	// A crashed creation's leftovers are also deleted by the next
	// creation of the name: it has exactly its own partitions.
	crashingStore(t, e, "", 7).CreateTopic(ctx, topic, parts)
	afterChunk = nil
	waitFor(t, func() bool { return keyCount(t, e.Client(), s.creatingPrefix()) == 0 })
	other := topic
	other.ID = UUID{9, 9, 9}
	rev, err = s.CreateTopic(ctx, other, parts[:250])
	if err != nil {
		t.Fatal(err)
	}
	if n := partitionCount(t, cache, rev, "torn"); n != 250 || keyCount(t, e.Client(), s.partitionPrefix("torn")) != 250 {
		t.Fatalf("recreated: %d partitions visible, want 250", n)
	}
	for _, p := range cache.Snapshot().Topics["torn"].Partitions {
		if p.TopicID != other.ID {
			t.Fatalf("partition %d of another topic id", p.Index)
		}
	}

	// An addition that stops half-way adds nothing visible, and the
	// next addition from the same count succeeds.
	_, more := testTopic("torn", 1250)
	if _, err := crashingStore(t, e, "", 3).CreatePartitions(ctx, "torn", 250, more[250:]); err == nil {
		t.Fatal("the crashed addition succeeded")
	}
	afterChunk = nil
	rev, _ = s.Revision(ctx)
	if n := partitionCount(t, cache, rev, "torn"); n != 250 {
		t.Fatalf("after a crashed addition: %d partitions visible, want 250", n)
	}
	waitFor(t, func() bool { return keyCount(t, e.Client(), s.creatingPrefix()) == 0 })
	if n, err := lead.CleanAbandonedCreations(ctx); err != nil || n != 1 || keyCount(t, e.Client(), s.partitionPrefix("torn")) != 250 {
		t.Fatalf("cleaned %d topics (%v)", n, err)
	}
	crashingStore(t, e, "", 2).CreatePartitions(ctx, "torn", 250, more[250:])
	afterChunk = nil
	waitFor(t, func() bool { return keyCount(t, e.Client(), s.creatingPrefix()) == 0 })
	if rev, err = s.CreatePartitions(ctx, "torn", 250, more[250:]); err != nil {
		t.Fatalf("adding after a crashed addition: %v", err)
	}
	if n := partitionCount(t, cache, rev, "torn"); n != 1250 {
		t.Fatalf("%d partitions, want 1250", n)
	}
}

// timingOutEtcd is an etcd client on which the first try of each write of
// a creation but its commit (the marker, each chunk; told apart by their
// first key) fails as an overloaded etcd's does ("etcd request timed
// out"): every other one after applying, the others before.
type timingOutEtcd struct {
	clientv3.KV
	commitKey string

	mu    sync.Mutex
	tried map[string]bool
	fails int
}

func (te *timingOutEtcd) Txn(ctx context.Context) clientv3.Txn {
	return &timingOutTxn{Txn: te.KV.Txn(ctx), te: te}
}

type timingOutTxn struct {
	clientv3.Txn
	te    *timingOutEtcd
	first string
}

func (t *timingOutTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *timingOutTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t *timingOutTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	if len(ops) > 0 && (ops[0].IsPut() || ops[0].IsDelete()) {
		t.first = string(ops[0].KeyBytes())
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *timingOutTxn) Commit() (*clientv3.TxnResponse, error) {
	t.te.mu.Lock()
	fail := t.first != "" && t.first != t.te.commitKey && !t.te.tried[t.first]
	t.te.tried[t.first] = true
	apply := false
	if fail {
		t.te.fails++
		apply = t.te.fails%2 == 1
	}
	t.te.mu.Unlock()
	if !fail {
		return t.Txn.Commit()
	}
	if apply {
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
	}
	return nil, rpctypes.ErrTimeout
}

// Regression: one write of a creation that an overloaded etcd answered
// with its own timeout ("etcd request timed out", seen at high load in a
// creation of 10,000 partitions) failed the whole creation, though the
// caller's deadline was far. The marker and the chunks are tried again
// (they may apply twice; a marker found ours was put by an earlier try),
// and the creation and an addition of partitions complete whole.
func TestCreationRidesOutEtcdTimeouts(t *testing.T) {
	e := startStockEtcd(t)
	direct := NewStore(e.Client(), "")
	cli := ownClient(t, e)
	te := &timingOutEtcd{KV: cli.KV, commitKey: direct.topicKey("slow"), tried: map[string]bool{}}
	cli.KV = te
	s := NewStore(cli, "")
	topic, parts := testTopic("slow", 500)
	if _, err := s.CreateTopic(ctxT(t), topic, parts[:250]); err != nil {
		t.Fatalf("a creation through etcd timeouts: %v", err)
	}
	te.mu.Lock()
	te.tried = map[string]bool{}
	te.mu.Unlock()
	if _, err := s.CreatePartitions(ctxT(t), "slow", 250, parts[250:]); err != nil {
		t.Fatalf("an addition through etcd timeouts: %v", err)
	}
	got, _, err := direct.topicKV(ctxT(t), "slow")
	if err != nil || got.PartitionCount != 500 {
		t.Fatalf("the topic: %+v, %v", got, err)
	}
	if n := keyCount(t, e.Client(), direct.partitionPrefix("slow")); n != 500 {
		t.Fatalf("%d partition records, want 500", n)
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.fails < 8 {
		t.Fatalf("%d writes timed out, want the marker and every chunk of both", te.fails)
	}
}

// A creation renews its marker's lease while it writes: a creation, and
// an addition of partitions, that take longer than the lease complete
// (TestCrashBetweenChunksLeavesNoHalfTopic: a creator that stops renewing
// loses the marker within the lease).
func TestCreationOutlivesItsMarkersLease(t *testing.T) {
	e := startStockEtcd(t)
	old := creatingTTL
	creatingTTL = 1
	defer func() { creatingTTL = old }()
	afterChunk = func(int) error {
		time.Sleep(1500 * time.Millisecond)
		return nil
	}
	defer func() { afterChunk = nil }()
	s := NewStore(e.Client(), "")
	ctx := ctxT(t)
	topic, parts := testTopic("slow", 250) // three chunks
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatalf("a creation slower than its marker's lease: %v", err)
	}
	_, more := testTopic("slow", 350)
	if _, err := s.CreatePartitions(ctx, "slow", 250, more[250:]); err != nil {
		t.Fatalf("an addition slower than its marker's lease: %v", err)
	}
	if n := keyCount(t, e.Client(), s.partitionPrefix("slow")); n != 350 {
		t.Fatalf("%d partition records, want 350", n)
	}
}
