package broker_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/vfs/errorfs"
)

// openGateFS holds the opens of one topic's partition logs (their first
// step on the disk, creating the directory) until released, a slow disk
// under a wide topic's creation, and records the order in which the opens
// of every partition log began.
type openGateFS struct {
	localseg.FS
	topic string

	mu       sync.Mutex
	open     chan struct{}
	held     int
	released bool
	began    []string // partition directory names
}

func newOpenGateFS(topic string) *openGateFS {
	return &openGateFS{FS: localseg.OSFS{}, topic: topic, open: make(chan struct{})}
}

func (g *openGateFS) MkdirAll(dir string) error {
	name := filepath.Base(dir)
	g.mu.Lock()
	g.began = append(g.began, name)
	ch := g.open
	hold := strings.HasPrefix(name, g.topic+"-")
	if hold {
		g.held++
	}
	g.mu.Unlock()
	if hold {
		<-ch
	}
	return g.FS.MkdirAll(dir)
}

func (g *openGateFS) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.released {
		g.released = true
		close(g.open)
	}
}

func (g *openGateFS) heldCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// position is where the open of the partition directory name began among
// those since the first held one (-1: not begun).
func (g *openGateFS) position(name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	first := slices.IndexFunc(g.began, func(n string) bool { return strings.HasPrefix(n, g.topic+"-") })
	if i := slices.Index(g.began, name); i >= 0 && first >= 0 {
		return i - first
	}
	return -1
}

// While a wide topic's logs open (here the disk holds them), the broker
// goes on applying the metadata of the other partitions: a topic deleted
// after it is gone at once, and the log of a topic created after it opens
// in its turn among the wide topic's, not after all of them. The logs
// used to open one at a time inside the apply of the metadata, so every
// later change waited for the whole wide topic.
func TestWideCreateDoesNotHoldUpOtherTopics(t *testing.T) {
	const wide, parts = "wide", 64
	gate := newOpenGateFS(wide)
	b := brokertest.StartOn(t, t.TempDir(), gate)
	t.Cleanup(gate.release)
	createTopic(t, b.Admin(), "before", 1, nil)
	cl := b.Client()

	create := func(topic string, parts int32) {
		t.Helper()
		req := createTopicsRequest(false, topicReq(topic, parts))
		req.TimeoutMillis = 2000 // answered (the write stands) while logs are held
		if code := createTopicsCodes(t, cl, req)[topic]; code != 0 {
			t.Fatalf("creating %s: error code %d", topic, code)
		}
	}
	create(wide, parts)
	brokertest.WaitFor(t, 30*time.Second, "the wide topic's opens to reach the disk", func() (bool, string) {
		return gate.heldCalls() > 0, "no open held yet"
	})

	if code := deleteTopicCode(t, cl, "before", 5*time.Second); code != 0 {
		t.Fatalf("deleting a topic while a wide one's logs open: error code %d", code)
	}
	if err := produceErr(t, b.Client(kgo.DefaultProduceTopic("before"), kgo.RecordRetries(0), kgo.UnknownTopicRetries(0)), "x"); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("produce to the deleted topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	create("after", 1) // applied (its open queued) when answered
	if n := gate.heldCalls(); n >= parts {
		t.Fatalf("%d of %d opens in flight at once: the opens are not bounded", n, parts)
	}

	gate.release()
	produceToEach(t, b, "after", 1, 3, "after")
	if got := consumeN(t, b, "after", 3); len(got) != 3 {
		t.Fatalf("%d records of the topic created after the wide one", len(got))
	}
	if pos := gate.position("after-0"); pos < 0 || pos >= parts/2 {
		t.Errorf("the open of after-0 began at position %d among the %d of %s: it waited for the wide topic", pos, parts, wide)
	}
	produceToEach(t, b, wide, parts, 1, "wide")
	if got := consumeN(t, b, wide, parts); len(got) != parts {
		t.Fatalf("%d records of the wide topic, want %d", len(got), parts)
	}
}

// A re-created partition whose directory still holds the deleted topic's
// log, and whose removal fails, is offline where it shows: produce answers
// KAFKA_STORAGE_ERROR, Metadata lists this broker among its offline
// replicas, shale_offline_partitions counts it and the broker is not
// ready. Once the removal succeeds it opens empty and serves again. (It
// used to be simply absent: NOT_LEADER_OR_FOLLOWER to clients, nothing in
// the metrics or the health check.)
func TestRecreatedPartitionWaitingOnAFailingRemovalIsOffline(t *testing.T) {
	const topic = "stuck"
	fsys := errorfs.New(nil)
	b := brokertest.StartOn(t, t.TempDir(), fsys)
	createTopic(t, b.Admin(), topic, 1, nil)
	produceToEach(t, b, topic, 1, 3, "old")
	fsys.Inject(errorfs.Fault{Op: errorfs.OpRemove, PathContains: "/" + topic + "-0", Times: -1, Err: syscall.EIO})
	if code := deleteTopicCode(t, b.Client(), topic, 5*time.Second); code != 0 {
		t.Fatalf("delete: error code %d", code)
	}
	createTopic(t, b.Admin(), topic, 1, nil)

	cl := b.Client(kgo.DefaultProduceTopic(topic), kgo.RecordRetries(0))
	eventually(t, "produce to the partition waiting on the failing removal", func() error {
		if err := produceErr(t, cl, "new"); !errors.Is(err, kerr.KafkaStorageError) {
			return fmt.Errorf("%s, want KAFKA_STORAGE_ERROR", errString(err))
		}
		return nil
	})
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	mresp, err := mreq.RequestWith(testCtx(t), b.Client())
	if err != nil {
		t.Fatal(err)
	}
	if p := mresp.Topics[0].Partitions[0]; !slices.Contains(p.OfflineReplicas, p.Leader) {
		t.Errorf("Metadata: offline replicas %v, want the leader %d among them", p.OfflineReplicas, p.Leader)
	}
	if v, _ := gather(t, b.Registry).get("shale_offline_partitions", ""); v != 1 {
		t.Errorf("shale_offline_partitions = %v, want 1", v)
	}
	if err := b.B.Ready(); err == nil || !strings.Contains(err.Error(), "cannot be removed") {
		t.Errorf("Ready: %v, want the partition offline for its failing removal", err)
	}

	fsys.Clear()
	eventually(t, "produce once the removal succeeded", func() error { return produceErr(t, cl, "new") })
	eventually(t, "ready once the removal succeeded", b.B.Ready)
	for _, r := range consumeN(t, b, topic, 1) {
		if string(r.Value) != "new" || r.Offset != 0 {
			t.Errorf("offset %d holds %q: the re-created partition shows the deleted one's data", r.Offset, r.Value)
		}
	}
}

// TestWideCreateDoesNotDelayALeaderMove: on three brokers whose disks
// hold the opens of a wide topic's logs (every broker has a replica of
// each of its partitions, and at most 8 opens are in flight on each), a
// preferred leader election of another partition completes while the
// wide topic is still being created: the new leader is recorded, takes an
// acks=all write (its followers follow it) and is named by Metadata,
// though none of the wide topic's logs has opened. Were a leadership
// change applied only after the wide topic's logs, it would wait for
// opens that are never let through, and the test fails at its bound
// saying so.
func TestWideCreateDoesNotDelayALeaderMove(t *testing.T) {
	const wide, parts = "wide", 48
	gates := []*openGateFS{newOpenGateFS(wide), newOpenGateFS(wide), newOpenGateFS(wide)}
	c := brokertest.StartClusterOn(t, 3, func(id int32) localseg.FS { return gates[id] },
		func(cfg *broker.Config) { cfg.LeaderImbalanceCheckInterval = -1 })
	for _, g := range gates {
		t.Cleanup(g.release)
	}
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "moving"); err != nil {
		t.Fatal(err)
	}
	pref := preferredAway(t, c, adm, "moving")
	before, epoch, _ := storedState(t, c, "moving")

	req := createTopicsRequest(false, topicReq(wide, parts))
	req.Topics[0].ReplicationFactor = 3
	req.TimeoutMillis = 2000 // answered (the write stands) while logs are held
	if code := createTopicsCodes(t, c.Client(), req)[wide]; code != 0 {
		t.Fatalf("creating %s: error code %d", wide, code)
	}
	brokertest.WaitFor(t, 30*time.Second, "every broker's disk holds opens of the wide topic", func() (bool, string) {
		held := []int{gates[0].heldCalls(), gates[1].heldCalls(), gates[2].heldCalls()}
		return !slices.Contains(held, 0), fmt.Sprintf("opens held by broker: %v", held)
	})

	start := time.Now()
	set := kadm.TopicsSet{}
	set.Add("moving", 0)
	res, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, set)
	if err != nil {
		t.Fatal(err)
	}
	if err := res["moving"][0].Err; err != nil {
		t.Fatalf("preferred election of moving/0 (led by %d at epoch %d, preferred %d): %v", before, epoch, pref, err)
	}
	// The bound is generous: the move takes well under a second, and
	// waiting for the wide topic means waiting for ever.
	const bound = 20 * time.Second
	brokertest.WaitFor(t, bound, "the leader move to complete while the wide topic's logs are held (a move that waits for the wide create never completes)", func() (bool, string) {
		l, e, isr := storedState(t, c, "moving")
		return l == pref && e > epoch && len(isr) == 3, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	pctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	prod := c.Client(kgo.DefaultProduceTopic("moving"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := prod.ProduceSync(pctx, &kgo.Record{Value: []byte("moved")}).FirstErr(); err != nil {
		t.Fatalf("an acks=all write to moving/0 after its leader moved to %d, with the wide topic's logs held: %v (the brokers have not applied the move: it waits for the wide create)", pref, err)
	}
	view := kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	if l, _, _ := partitionReplicas(t, view, "moving"); l != pref {
		t.Fatalf("Metadata names %d as the leader of moving/0, want %d", l, pref)
	}
	for id, g := range gates {
		if n := g.heldCalls(); n >= parts {
			t.Fatalf("broker %d holds %d of %d opens at once: not bounded", id, n, parts)
		}
	}
	t.Logf("leadership of moving/0 moved from %d to %d and took a write in %s, with %d, %d and %d opens of %s held", before, pref,
		time.Since(start).Round(time.Millisecond), gates[0].heldCalls(), gates[1].heldCalls(), gates[2].heldCalls(), wide)

	for _, g := range gates {
		g.release()
	}
	wp := c.Client(kgo.DefaultProduceTopic(wide), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := int32(0); p < parts; p += parts / 4 {
		if err := wp.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte("wide")}).FirstErr(); err != nil {
			t.Fatalf("producing to %s/%d once its logs opened: %v", wide, p, err)
		}
	}
}
