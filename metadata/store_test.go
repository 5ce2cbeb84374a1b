package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// One embedded etcd serves the package's tests; each test gets its own
// key prefix, so they are independent.
var (
	sharedEtcd *Embedded
	prefixSeq  atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shale-metadata-test-")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	sharedEtcd, err = StartEmbedded(ctx, EmbeddedConfig{Dir: dir})
	cancel()
	if err != nil {
		panic(err)
	}
	code := m.Run()
	sharedEtcd.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	return NewStore(sharedEtcd.Client(), fmt.Sprintf("/test-%d/", prefixSeq.Add(1)))
}

// newTestCache starts a cache of s, closed when the test ends.
func newTestCache(t *testing.T, ctx context.Context, s *Store) *Cache {
	t.Helper()
	cache, err := NewCache(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	return cache
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testTopic(name string, n int) (Topic, []Partition) {
	t := Topic{Name: name, ID: UUID{byte(len(name)), 1, 2, 3}, Configs: map[string]string{"retention.ms": "1000"}}
	var parts []Partition
	for i := 0; i < n; i++ {
		parts = append(parts, Partition{Index: int32(i), Replicas: []int32{1}, Leader: 1, ISR: []int32{1}})
	}
	return t, parts
}

func TestClusterIDIsCreatedOnce(t *testing.T) {
	s := newTestStore(t)
	a, err := s.EnsureClusterID(ctxT(t))
	if err != nil || len(a) != 22 {
		t.Fatalf("cluster id %q: %v", a, err)
	}
	b, err := s.EnsureClusterID(ctxT(t))
	if err != nil || a != b {
		t.Fatalf("second call gave %q, want %q (%v)", b, a, err)
	}
}

func TestTopicLifecycle(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	topic, parts := testTopic("orders", 3)
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTopic(ctx, topic, parts); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("second create: %v", err)
	}
	cache := newTestCache(t, ctx, s)
	ts := cache.Snapshot().Topics["orders"]
	if ts == nil || len(ts.Partitions) != 3 || ts.Configs["retention.ms"] != "1000" || ts.Partitions[2].TopicID != topic.ID {
		t.Fatalf("snapshot: %+v", ts)
	}
	if cache.Snapshot().TopicsByID[topic.ID] != ts {
		t.Fatal("topic not indexed by id")
	}

	// Adding partitions needs the count the caller saw.
	more := []Partition{{Index: 3, Replicas: []int32{1}, Leader: 1, ISR: []int32{1}}}
	if _, err := s.CreatePartitions(ctx, "orders", 2, more); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale count: %v", err)
	}
	rev, err := s.CreatePartitions(ctx, "orders", 3, more)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if n := len(cache.Snapshot().Topics["orders"].Partitions); n != 4 {
		t.Fatalf("%d partitions after adding one", n)
	}

	rev, err = s.UpdateTopicConfigs(ctx, "orders", func(m map[string]string) (map[string]string, error) {
		m["segment.bytes"] = "1024"
		return m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cache.WaitForRevision(ctx, rev)
	if c := cache.Snapshot().Topics["orders"].Configs; c["segment.bytes"] != "1024" || c["retention.ms"] != "1000" {
		t.Fatalf("configs: %v", c)
	}

	rev, err = s.DeleteTopic(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	cache.WaitForRevision(ctx, rev)
	if cache.Snapshot().Topics["orders"] != nil {
		t.Fatal("deleted topic still in the snapshot")
	}
	if d, ok := cache.Snapshot().DeletedTopics[topic.ID]; !ok || d.Name != "orders" {
		t.Fatalf("no tombstone for the deleted topic: %+v", cache.Snapshot().DeletedTopics)
	}
	if _, err := s.DeleteTopic(ctx, "orders"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("second delete: %v", err)
	}
}

// Records that cannot be decoded are reported, not silently dropped, and
// leave the report once they are right; deleting a topic whose record is
// unreadable still records its id (taken from its partitions).
func TestUnreadableRecordsAreReported(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	topic, parts := testTopic("muddled", 2)
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatal(err)
	}
	cache := newTestCache(t, ctx, s)
	put := func(key, val string) {
		t.Helper()
		resp, err := s.Client().Put(ctx, s.Prefix()+key, val)
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	goodPart, _ := json.Marshal(Partition{Topic: "muddled", TopicID: topic.ID, Index: 1, Replicas: []int32{1}, Leader: 1, ISR: []int32{1}})
	put("partitions/muddled/0000000001", "{garbage")
	snap := cache.Snapshot()
	if len(snap.Unreadable) != 1 || snap.Unreadable[0].Topic != "muddled" || snap.Unreadable[0].Partition != 1 {
		t.Fatalf("unreadable: %+v", snap.Unreadable)
	}
	if n := len(snap.Topics["muddled"].Partitions); n != 1 {
		t.Fatalf("%d partitions, want the readable one", n)
	}
	put("partitions/muddled/0000000001", string(goodPart))
	if snap := cache.Snapshot(); len(snap.Unreadable) != 0 || len(snap.Topics["muddled"].Partitions) != 2 {
		t.Fatalf("after repair: %+v", snap.Unreadable)
	}
	put("topics/muddled", "{garbage")
	snap = cache.Snapshot()
	if len(snap.Unreadable) != 1 || snap.Unreadable[0].Partition != -1 || snap.Topics["muddled"] != nil {
		t.Fatalf("unreadable topic: %+v", snap.Unreadable)
	}
	rev, err := s.DeleteTopic(ctx, "muddled")
	if err != nil {
		t.Fatal(err)
	}
	cache.WaitForRevision(ctx, rev)
	snap = cache.Snapshot()
	if _, ok := snap.DeletedTopics[topic.ID]; !ok || len(snap.Unreadable) != 0 {
		t.Fatalf("after delete: tombstones %+v, unreadable %+v", snap.DeletedTopics, snap.Unreadable)
	}
}

func TestUpdatePartitionIsCompareAndSwap(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	topic, parts := testTopic("cas", 1)
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatal(err)
	}
	p := parts[0]
	p.Topic = "cas"
	p.ISR = []int32{1, 2}
	got, _, err := s.UpdatePartition(ctx, p, 0)
	if err != nil || got.PartitionEpoch != 1 {
		t.Fatalf("first update: %+v %v", got, err)
	}
	// A writer that still believes epoch 0 loses, and learns the state.
	p.Leader = 2
	cur, _, err := s.UpdatePartition(ctx, p, 0)
	if !errors.Is(err, ErrConflict) || cur.PartitionEpoch != 1 || cur.Leader != 1 {
		t.Fatalf("stale update: %+v %v", cur, err)
	}
	// Concurrent writers at the same epoch: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			q := p
			q.LeaderEpoch = int32(10 + i)
			if _, _, err := s.UpdatePartition(ctx, q, 1); err == nil {
				wins.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent compare-and-swaps succeeded", wins.Load())
	}
}

func TestProducerIDBlocksNeverOverlap(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				first, err := s.AllocateProducerIDs(ctx, 1000)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[first] {
					t.Errorf("block %d handed out twice", first)
				}
				seen[first] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 50 {
		t.Fatalf("%d blocks", len(seen))
	}
	for first := range seen {
		if first%1000 != 0 {
			t.Fatalf("block %d is not aligned: blocks overlap", first)
		}
	}
}

func TestBrokerRegistrationFollowsTheLease(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	reg, err := s.RegisterBroker(ctx, Broker{ID: 7, Host: "h", Port: 9092}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterBroker(ctx, Broker{ID: 7, Host: "other", Port: 1}, time.Second); !errors.Is(err, ErrBrokerIDInUse) {
		t.Fatalf("duplicate id: %v", err)
	}
	waitFor(t, func() bool { b := cache.Snapshot().Brokers; return len(b) == 1 && b[0].ID == 7 })
	reg.Close()
	waitFor(t, func() bool { return len(cache.Snapshot().Brokers) == 0 })
	if _, err := s.RegisterBroker(ctx, Broker{ID: 7, Host: "h", Port: 9092}, time.Second); err != nil {
		t.Fatalf("re-register after close: %v", err)
	}
}

// The HTTP address a broker registers reads back from the store and the
// cache; a record written before the field existed reads as no address.
func TestBrokerRegistrationKeepsTheHTTPAddress(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	reg, err := s.RegisterBroker(ctx, Broker{ID: 1, Host: "h", Port: 9092, HTTPAddr: "h:9644"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	// An older broker's record, without httpAddr.
	if _, err := s.cli.Put(ctx, s.brokerKey(2), `{"id":2,"host":"old","port":9092,"rack":"r"}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cache.Snapshot().Brokers) == 2 })
	listed, err := s.Brokers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range [][]Broker{listed, cache.Snapshot().Brokers} {
		if len(bs) != 2 || bs[0].HTTPAddr != "h:9644" || bs[1].HTTPAddr != "" || bs[1].Host != "old" || bs[1].Rack != "r" {
			t.Fatalf("brokers %+v", bs)
		}
	}
}

func TestBrokerLeaseExpiresWhenNotKeptAlive(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	// A lease granted without keep-alive stands in for a broker that died.
	lease, err := s.cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, s.brokerKey(3), `{"id":3,"host":"h","port":1}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	cache := newTestCache(t, ctx, s)
	if len(cache.Snapshot().Brokers) != 1 {
		t.Fatal("broker not seen")
	}
	waitFor(t, func() bool { return len(cache.Snapshot().Brokers) == 0 })
}

func TestControllerElectionHandsOver(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	a, err := s.Campaign(ctx, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	won := make(chan *Leadership, 1)
	go func() {
		b, err := s.Campaign(ctx, 2, time.Second)
		if err == nil {
			won <- b
		}
	}()
	waitFor(t, func() bool { return cache.Snapshot().Controller == 1 })
	// Writes fenced on a's leadership work while it leads.
	resp, err := a.Txn(ctx).Then(clientv3.OpPut(s.prefix+"fenced", "a")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("fenced write while leading: %v %v", resp, err)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	var b *Leadership
	select {
	case b = <-won:
	case <-time.After(10 * time.Second):
		t.Fatal("the second candidate was not elected")
	}
	defer b.Resign(ctx)
	waitFor(t, func() bool { return cache.Snapshot().Controller == 2 })
	// The old leader's fenced writes now fail.
	resp, err = a.Txn(ctx).Then(clientv3.OpPut(s.prefix+"fenced", "stale")).Commit()
	if err == nil && resp.Succeeded {
		t.Fatal("a resigned leader's fenced write succeeded")
	}
}

func TestCacheReloadsAfterCompaction(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	// Stop the watcher from seeing events by compacting past them while
	// it is between reads is not deterministic; instead restart the cache
	// from a compacted revision directly.
	topic, parts := testTopic("before", 1)
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatal(err)
	}
	topic2, parts2 := testTopic("after-compaction", 1)
	rev, err := s.CreateTopic(ctx, topic2, parts2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	st := &state{prefix: s.prefix, revision: 1, brokers: map[int32]Broker{}, topics: map[string]Topic{},
		partitions: map[string]map[int32]Partition{}, candidates: map[string]candidate{}}
	c2 := &Cache{store: s, log: cache.log, done: make(chan struct{}), changed: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
	c2.publish(st.snapshot())
	c2.ctx, c2.stop = context.WithCancel(context.Background())
	go c2.run(st) // watching from revision 2 hits the compaction
	defer c2.Close()
	if err := c2.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if c2.Snapshot().Topics["after-compaction"] == nil || c2.Snapshot().Topics["before"] == nil {
		t.Fatalf("reloaded snapshot misses topics: %v", c2.Snapshot().Topics)
	}
}

func TestSubscribeCoalescesAndCloses(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	subCtx, cancel := context.WithCancel(ctx)
	ch := cache.Subscribe(subCtx)
	for i := 0; i < 5; i++ {
		topic, parts := testTopic(fmt.Sprintf("t%d", i), 1)
		if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification")
	}
	cancel()
	waitFor(t, func() bool {
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return true
				}
			default:
				return false
			}
		}
	})
}

func TestEmbeddedRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(e.Client(), "")
	id, err := s.EnsureClusterID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, err = StartEmbedded(ctx, EmbeddedConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	again, err := NewStore(e.Client(), "").EnsureClusterID(ctx)
	if err != nil || again != id {
		t.Fatalf("cluster id after restart %q, want %q (%v)", again, id, err)
	}
}

func TestEmbeddedThreeMemberCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	ctx := ctxT(t)
	members, err := StartEmbeddedCluster(ctx, []string{t.TempDir(), t.TempDir(), t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, m := range members {
			m.Close()
		}
	}()
	a := NewStore(members[0].Client(), "")
	id, err := a.EnsureClusterID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewStore(members[2].Client(), "").EnsureClusterID(ctx)
	if err != nil || got != id {
		t.Fatalf("member 2 sees %q, want %q (%v)", got, id, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A topic record beyond etcd's request limit is refused with ErrTooLarge
// and leaves nothing behind (its partitions, written first, are not
// seen); one at the broker's per-request bound (10,000 partitions) fits,
// as does an addition of as many.
//
// The 10,000 partitions take about 200 etcd transactions, each waiting
// for etcd's fsync: 1 to 4 s in all at a load average of 18 on 2 cores,
// more when other tests sync too; hence two minutes, not ctxT's 20 s. A
// transaction etcd answered with its own timeout (over 5 s to apply one),
// which failed the test at high load, is tried again by the creation
// itself (TestCreationRidesOutEtcdTimeouts).
func TestCreateTopicBeyondEtcdLimitsIsErrTooLarge(t *testing.T) {
	s := newTestStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	big, parts := testTopic("big", 10)
	big.Configs = map[string]string{"huge": strings.Repeat("x", MaxRequestBytes+1)}
	if _, err := s.CreateTopic(ctx, big, parts); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("creating a topic record of %d bytes: %v, want ErrTooLarge", MaxRequestBytes, err)
	}
	if _, err := s.topic(ctx, "big"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("refused topic exists: %v", err)
	}
	fits, parts := testTopic("fits", 10000)
	if _, err := s.CreateTopic(ctx, fits, parts); err != nil {
		t.Fatalf("creating 10,000 partitions: %v", err)
	}
	_, more := testTopic("fits", 20000)
	if _, err := s.CreatePartitions(ctx, "fits", 10000, more[10000:]); err != nil {
		t.Fatalf("adding 10,000 partitions: %v", err)
	}
}

// Regression: a config change beyond etcd's request limit was tried
// again and again (as if its outcome were unknown) until its caller's
// deadline, and answered a timeout instead of the refusal.
func TestConfigsBeyondEtcdLimitsAreErrTooLarge(t *testing.T) {
	s := newTestStore(t)
	topic, parts := testTopic("configs", 1)
	if _, err := s.CreateTopic(ctxT(t), topic, parts); err != nil {
		t.Fatal(err)
	}
	huge := func(map[string]string) (map[string]string, error) {
		return map[string]string{"huge": strings.Repeat("x", MaxRequestBytes+1)}, nil
	}
	if _, err := s.UpdateTopicConfigs(ctxT(t), "configs", huge); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("topic configs of %d bytes: %v, want ErrTooLarge", MaxRequestBytes, err)
	}
	if _, err := s.UpdateBrokerConfigs(ctxT(t), 1, huge); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("broker configs of %d bytes: %v, want ErrTooLarge", MaxRequestBytes, err)
	}
}

func TestClusterSecretIsCreatedOnce(t *testing.T) {
	s := newTestStore(t)
	a, err := s.EnsureClusterSecret(ctxT(t))
	if err != nil || len(a) != 43 {
		t.Fatalf("secret %q: %v", a, err)
	}
	b, err := s.EnsureClusterSecret(ctxT(t))
	if err != nil || a != b {
		t.Fatalf("second call gave another secret (%v)", err)
	}
}

func TestReRegistrationChangesIncarnation(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	cache := newTestCache(t, ctx, s)
	self := Broker{ID: 4, Host: "h", Port: 1, DirectoryID: "dir-a"}
	if _, err := s.RegisterBroker(ctx, self, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cache.Snapshot().Brokers) == 1 })
	first := cache.Snapshot().Brokers[0].Incarnation
	// The same directory takes its key over at once (a restart after a
	// crash): a new incarnation, and the flag it registered with.
	self.UncleanShutdown = true
	if _, err := s.RegisterBroker(ctx, self, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		b := cache.Snapshot().Brokers
		return len(b) == 1 && b[0].Incarnation > first && b[0].UncleanShutdown
	})
}

func TestControllerPartitionWritesAreFenced(t *testing.T) {
	s := newTestStore(t)
	ctx := ctxT(t)
	topic, parts := testTopic("fenced", 1)
	if _, err := s.CreateTopic(ctx, topic, parts); err != nil {
		t.Fatal(err)
	}
	a, err := s.Campaign(ctx, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := parts[0]
	p.Topic, p.TopicID = topic.Name, topic.ID
	p.LeaderEpoch = 1
	got, _, err := a.UpdatePartition(ctx, p, 0)
	if err != nil || got.PartitionEpoch != 1 {
		t.Fatalf("update while controller: %+v %v", got, err)
	}
	if _, _, err := a.UpdatePartition(ctx, p, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale partition epoch: %v", err)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	p.LeaderEpoch = 2
	if _, _, err := a.UpdatePartition(ctx, p, 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("update after resigning: %v", err)
	}
	cur, err := s.Partition(ctx, topic.Name, 0)
	if err != nil || cur.LeaderEpoch != 1 || cur.PartitionEpoch != 1 {
		t.Fatalf("partition after a fenced write: %+v %v", cur, err)
	}
}

// The re-read that resolves an indeterminate write runs even when the
// caller's deadline has passed (that may be why the write failed), within
// a deadline of its own, and returns the write's revision rather than 0.
func TestResolveContextOutlivesTheCallerWithinItsOwnDeadline(t *testing.T) {
	s := newTestStore(t)
	topic, parts := testTopic("resolve", 1)
	if _, err := s.CreateTopic(ctxT(t), topic, parts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rctx, rcancel := resolveContext(ctx)
	defer rcancel()
	if d, ok := rctx.Deadline(); !ok || time.Until(d) > resolveTimeout {
		t.Fatalf("deadline %v %v", d, ok)
	}
	p, rev, err := s.partition(rctx, "resolve", 0)
	if err != nil || rev == 0 || p.Index != 0 {
		t.Fatalf("re-read after the caller's cancellation: %+v rev %d: %v", p, rev, err)
	}
}

// Regression: the embedded etcd listened without authentication on two
// random loopback ports. A single member now has no listener unless a
// client address is chosen.
func TestEmbeddedSingleMemberHasNoListenerUnlessAsked(t *testing.T) {
	ctx := ctxT(t)
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if len(e.etcd.Clients) != 0 || len(e.etcd.Peers) != 0 || len(e.Endpoints()) != 0 {
		t.Fatalf("listeners: %d client, %d peer, endpoints %v", len(e.etcd.Clients), len(e.etcd.Peers), e.Endpoints())
	}
	if _, err := e.Client().Put(ctx, "k", "v"); err != nil {
		t.Fatalf("in-process client: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	exposed, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir(), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer exposed.Close()
	if len(exposed.etcd.Clients) != 1 || len(exposed.etcd.Peers) != 0 {
		t.Fatalf("listeners with a client address: %d client, %d peer", len(exposed.etcd.Clients), len(exposed.etcd.Peers))
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: exposed.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("client on %s: %v", addr, err)
	}
}
