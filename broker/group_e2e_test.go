package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// groupBroker starts a broker whose group coordinator allows short
// sessions, so that a dead member is noticed within a test's patience.
func groupBroker(t testing.TB, configs map[string]string, opts ...brokertest.Option) *brokertest.Broker {
	t.Helper()
	gc := map[string]string{
		"group.min.session.timeout.ms":         "500",
		"group.consumer.heartbeat.interval.ms": "250",
		"group.consumer.session.timeout.ms":    "2000",
	}
	for k, v := range configs {
		gc[k] = v
	}
	return brokertest.Start(t, append([]brokertest.Option{func(c *broker.Config) {
		c.GroupConfigs = gc
		c.OffsetsTopicPartitions = 4 // fewer partitions to load: faster tests
	}}, opts...)...)
}

// killSwitch is a dialer whose connections can all be cut at once: a
// client behind it dies as a crashed process does, without leaving its
// group.
type killSwitch struct {
	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (k *killSwitch) dial(ctx context.Context, network, host string) (net.Conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return nil, errors.New("killed")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, host)
	if err == nil {
		k.conns = append(k.conns, c)
	}
	return c, err
}

func (k *killSwitch) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = true
	for _, c := range k.conns {
		c.Close()
	}
}

// groupMember is one consumer of the test group.
type groupMember struct {
	cl       *kgo.Client
	ks       *killSwitch
	stop     chan struct{}
	done     chan struct{}
	consumed atomic.Int64
	assigned atomic.Value // map[int32]bool of the topic's partitions
	// assignments counts the partition assignments it was given.
	assignments atomic.Int64
}

// consumed is the set of record values seen by every member.
type consumedSet struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *consumedSet) add(v string) {
	c.mu.Lock()
	c.seen[v]++
	c.mu.Unlock()
}

func (c *consumedSet) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func startMember(t *testing.T, b *brokertest.Broker, group, topic string, set *consumedSet, opts ...kgo.Opt) *groupMember {
	t.Helper()
	m := &groupMember{ks: &killSwitch{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.assigned.Store(map[int32]bool{})
	// track applies an assignment change (added or removed partitions)
	// to the member's view of what it owns.
	var trackMu sync.Mutex
	track := func(change map[string][]int32, add bool) {
		trackMu.Lock()
		defer trackMu.Unlock()
		owned := map[int32]bool{}
		for p := range m.owns() {
			owned[p] = true
		}
		for _, p := range change[topic] {
			if add {
				owned[p] = true
			} else {
				delete(owned, p)
			}
		}
		m.assigned.Store(owned)
	}
	base := []kgo.Opt{
		kgo.Dialer(m.ks.dial),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(2 * time.Second),
		kgo.HeartbeatInterval(200 * time.Millisecond),
		kgo.RebalanceTimeout(10 * time.Second),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.assignments.Add(1)
			track(a, true)
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
			cl.CommitUncommittedOffsets(ctx)
			track(r, false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) { track(l, false) }),
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, base...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.cl = cl
	go func() {
		defer close(m.done)
		for {
			select {
			case <-m.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			fs := cl.PollFetches(ctx)
			cancel()
			select {
			case <-m.stop:
				return // records polled after the kill are not processed
			default:
			}
			fs.EachRecord(func(r *kgo.Record) {
				set.add(string(r.Value))
				m.consumed.Add(1)
			})
			if fs.NumRecords() > 0 {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				cl.CommitUncommittedOffsets(cctx)
				cancel()
			}
		}
	}()
	return m
}

// crash makes the member vanish without leaving the group.
func (m *groupMember) crash() {
	m.ks.kill()
	close(m.stop)
	<-m.done
	go m.cl.Close()
}

// close stops the member cleanly (it leaves the group).
func (m *groupMember) close() {
	close(m.stop)
	<-m.done
	m.cl.Close()
}

func (m *groupMember) owns() map[int32]bool { return m.assigned.Load().(map[int32]bool) }

func produceValues(t *testing.T, cl *kgo.Client, topic string, from, to int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte("v-" + strconv.Itoa(i))})
	}
	if err := cl.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committedAtEnd reports whether the group's committed offsets equal the
// topic's end offsets on every partition.
func committedAtEnd(t *testing.T, adm *kadm.Client, group, topic string) (bool, string) {
	ctx := testCtx(t)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, err.Error()
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, err.Error()
	}
	ok := true
	var b strings.Builder
	ends.Each(func(o kadm.ListedOffset) {
		c, found := committed.Lookup(topic, o.Partition)
		at := int64(-1)
		if found {
			at = c.At
		}
		fmt.Fprintf(&b, "p%d %d/%d ", o.Partition, at, o.Offset)
		if at != o.Offset {
			ok = false
		}
	})
	return ok, b.String()
}

// TestGroupConsumersTakeOverFromACrashedMember runs three franz-go group
// consumers on a six-partition topic with each classic balancer: one
// member crashes mid-stream, the others take its partitions over, every
// record is consumed, the committed offsets reach the end, and a broker
// restart keeps them.
func TestGroupConsumersTakeOverFromACrashedMember(t *testing.T) {
	b := groupBroker(t, nil)
	// Clients closed before the restart (the broker's Close waits for
	// connected clients to go).
	producer, err := kgo.NewClient(kgo.SeedBrokers(b.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	adm := kadm.NewClient(producer)
	for _, tc := range []struct {
		name     string
		balancer kgo.GroupBalancer
	}{
		{"range", kgo.RangeBalancer()},
		{"roundrobin", kgo.RoundRobinBalancer()},
		{"cooperative-sticky", kgo.CooperativeStickyBalancer()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, group := "takeover-"+tc.name, "g-"+tc.name
			createTopic(t, adm, topic, 6, nil)
			produceValues(t, producer, topic, 0, 600)
			set := &consumedSet{seen: map[string]int{}}
			var members []*groupMember
			for i := 0; i < 3; i++ {
				members = append(members, startMember(t, b, group, topic, set, kgo.Balancers(tc.balancer)))
			}
			waitFor(t, "three members to share the partitions", 30*time.Second, func() bool {
				n := 0
				for _, m := range members {
					if len(m.owns()) == 0 {
						return false
					}
					n += len(m.owns())
				}
				return n == 6
			})
			// More records once all three share the partitions, so
			// that each has some to consume.
			produceValues(t, producer, topic, 600, 900)
			// The first member may have drained the records produced so far
			// before the others joined; records produced now land on every
			// partition, so each member has something of its own to consume.
			produceValues(t, producer, topic, 150, 300)
			waitFor(t, "every member to consume", 30*time.Second, func() bool {
				return members[0].consumed.Load() > 0 && members[1].consumed.Load() > 0 && members[2].consumed.Load() > 0
			})
			victim := members[2]
			victim.crash()
			killed := time.Now()
			produceValues(t, producer, topic, 900, 1200)
			survivors := members[:2]
			waitFor(t, "the survivors to own every partition", 30*time.Second, func() bool {
				return len(survivors[0].owns())+len(survivors[1].owns()) == 6
			})
			took := time.Since(killed)
			t.Logf("%s: survivors own all partitions %v after the crash (session timeout 2s)", tc.name, took.Round(time.Millisecond))
			fmt.Printf("group rebalance after a member crash (%s): %v, session timeout 2s\n", tc.name, took.Round(time.Millisecond))
			waitFor(t, "every record to be consumed", 60*time.Second, func() bool { return set.len() == 1200 })
			var state string
			waitFor(t, "the committed offsets to reach the end", 60*time.Second, func() bool {
				ok, s := committedAtEnd(t, adm, group, topic)
				state = s
				return ok
			})
			t.Logf("committed: %s", state)
			for _, m := range survivors {
				m.close()
			}
		})
	}
	// A broker restart keeps every group's offsets.
	producer.Close()
	b.Restart()
	adm = b.Admin()
	for _, name := range []string{"range", "roundrobin", "cooperative-sticky"} {
		var state string
		waitFor(t, "offsets after the restart", 30*time.Second, func() bool {
			ok, s := committedAtEnd(t, adm, "g-"+name, "takeover-"+name)
			state = s
			return ok
		})
		t.Logf("after restart %s: %s", name, state)
	}
}

// TestStaticMemberRestartsWithoutRebalance: a static member (KIP-345)
// restarts within its session timeout and gets its partitions back; the
// other member sees no rebalance.
func TestStaticMemberRestartsWithoutRebalance(t *testing.T) {
	b := groupBroker(t, nil)
	adm := b.Admin()
	createTopic(t, adm, "static", 4, nil)
	set := &consumedSet{seen: map[string]int{}}
	other := startMember(t, b, "sg", "static", set, kgo.InstanceID("other"), kgo.SessionTimeout(10*time.Second))
	waitFor(t, "the first member to own everything", 30*time.Second, func() bool { return len(other.owns()) == 4 })
	static := startMember(t, b, "sg", "static", set, kgo.InstanceID("restarting"), kgo.SessionTimeout(10*time.Second))
	waitFor(t, "two members to share the partitions", 30*time.Second, func() bool {
		return len(static.owns()) > 0 && len(other.owns())+len(static.owns()) == 4
	})
	describe := func() kadm.DescribedGroup {
		d, err := adm.DescribeGroups(testCtx(t), "sg")
		if err != nil {
			t.Fatal(err)
		}
		return d["sg"]
	}
	// The join's rounds are over once the group is stable and the other
	// member's count of assignments stops moving: with cooperative
	// rebalancing the other member may be told of the join's last round
	// after the new member is.
	var rounds int64
	waitFor(t, "the join's rebalance to settle", 30*time.Second, func() bool {
		n := other.assignments.Load()
		time.Sleep(500 * time.Millisecond)
		rounds = other.assignments.Load()
		return n == rounds && describe().State == "Stable"
	})
	before := static.owns()
	if d := describe(); d.State != "Stable" || len(d.Members) != 2 {
		t.Fatalf("group: %s with %d members", d.State, len(d.Members))
	}
	// The static member's process stops (a static member does not
	// leave) and starts again with the same group.instance.id.
	static.close()
	restarted := startMember(t, b, "sg", "static", set, kgo.InstanceID("restarting"), kgo.SessionTimeout(10*time.Second))
	waitFor(t, "the restarted member to get its partitions back", 30*time.Second, func() bool { return len(restarted.owns()) == len(before) })
	for p := range before {
		if !restarted.owns()[p] {
			t.Fatalf("restarted member owns %v, before %v", restarted.owns(), before)
		}
	}
	time.Sleep(time.Second) // a rebalance, if one were coming, would start now
	if n := other.assignments.Load(); n != rounds {
		t.Fatalf("the other member was assigned %d more times: a rebalance happened", n-rounds)
	}
	if d := describe(); d.State != "Stable" || len(d.Members) != 2 {
		t.Fatalf("group after the restart: %s with %d members", d.State, len(d.Members))
	}
	restarted.close()
	other.close()
}

// TestOffsetsExpireWithShortRetention: once a group is empty, its offsets
// go after offsets.retention.minutes (here a second), and then the group.
func TestOffsetsExpireWithShortRetention(t *testing.T) {
	b := groupBroker(t, map[string]string{"offsets.retention.check.interval.ms": "100"}, func(c *broker.Config) {
		c.OffsetsRetention = time.Second
	})
	adm := b.Admin()
	created := createTopic(t, adm, "expiring", 2, nil)
	produceValues(t, b.Client(), "expiring", 0, 10)
	set := &consumedSet{seen: map[string]int{}}
	m := startMember(t, b, "eg", "expiring", set)
	waitFor(t, "the member to consume and commit", 30*time.Second, func() bool {
		ok, _ := committedAtEnd(t, adm, "eg", "expiring")
		return ok
	})
	// A simple (memberless) commit to another group, as kcat -C does.
	cl := b.Client()
	oc := kmsg.NewPtrOffsetCommitRequest()
	oc.Group, oc.Generation = "simple-eg", -1
	oc.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "expiring", TopicID: created.ID, Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 3}}}}
	if resp, err := oc.RequestWith(testCtx(t), cl); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("simple commit: %v %+v", err, resp)
	}
	// Live group: the offsets stay past the retention.
	time.Sleep(1500 * time.Millisecond)
	if ok, s := committedAtEnd(t, adm, "eg", "expiring"); !ok {
		t.Fatalf("offsets of a live group expired: %s", s)
	}
	m.close()
	waitFor(t, "the offsets to expire", 30*time.Second, func() bool {
		offs, err := adm.FetchOffsets(testCtx(t), "eg")
		return err == nil && len(offs) == 0
	})
	waitFor(t, "the groups to be deleted", 30*time.Second, func() bool {
		groups, err := adm.ListGroups(testCtx(t))
		return err == nil && len(groups) == 0
	})
}

// TestKcatGroupConsumer consumes through a group with kcat (librdkafka's
// balanced consumer), a second client implementation, and checks that a
// second run continues from the committed offsets.
func TestKcatGroupConsumer(t *testing.T) {
	brokertest.KcatPath(t)
	b := groupBroker(t, nil)
	adm := b.Admin()
	createTopic(t, adm, "kcat-g", 3, nil)
	producer := b.Client()
	produceValues(t, producer, "kcat-g", 0, 30)
	run := func(n int) []string {
		out := brokertest.Kcat(t, "", "-b", b.Addr, "-G", "kcat-group", "-c", strconv.Itoa(n), "-f", "%s\n",
			"-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000", "-X", "topic.metadata.refresh.interval.ms=500", "kcat-g")
		return strings.Fields(out)
	}
	first := run(30)
	if len(first) != 30 {
		t.Fatalf("first run consumed %d records", len(first))
	}
	waitFor(t, "kcat's commits", 30*time.Second, func() bool {
		ok, _ := committedAtEnd(t, adm, "kcat-group", "kcat-g")
		return ok
	})
	produceValues(t, producer, "kcat-g", 30, 35)
	second := run(5)
	seen := map[string]bool{}
	for _, v := range second {
		seen[v] = true
	}
	for i := 30; i < 35; i++ {
		if !seen["v-"+strconv.Itoa(i)] {
			t.Fatalf("second run got %v, want v-30..v-34", second)
		}
	}
	d, err := adm.DescribeGroups(testCtx(t), "kcat-group")
	if err != nil || d["kcat-group"].State != "Empty" {
		t.Fatalf("group after kcat left: %+v %v", d, err)
	}
}

// TestConsumerGroupProtocolWithFranzGo runs KIP-848 consumers
// (group.protocol=consumer: franz-go's ServerSideBalancer) with both
// server-side assignors: three members share six partitions, one crashes,
// the others take over, every record is consumed and committed.
func TestConsumerGroupProtocolWithFranzGo(t *testing.T) {
	b := groupBroker(t, nil)
	adm := b.Admin()
	producer := b.Client()
	for _, tc := range []struct {
		name     string
		balancer kgo.GroupBalancer
	}{
		{"uniform", kgo.StickyBalancer()},
		{"range", kgo.RangeBalancer()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, group := "next-gen-"+tc.name, "ng-"+tc.name
			createTopic(t, adm, topic, 6, nil)
			produceValues(t, producer, topic, 0, 150)
			set := &consumedSet{seen: map[string]int{}}
			var members []*groupMember
			for i := 0; i < 3; i++ {
				members = append(members, startMember(t, b, group, topic, set, kgo.Balancers(tc.balancer), kgo.ServerSideBalancer()))
			}
			waitFor(t, "three members to share the partitions", 30*time.Second, func() bool {
				n := 0
				for _, m := range members {
					if len(m.owns()) == 0 {
						return false
					}
					n += len(m.owns())
				}
				return n == 6
			})
			// The group is a consumer-protocol group.
			lg := kmsg.NewPtrListGroupsRequest()
			lg.TypesFilter = []string{"consumer"}
			resp, err := lg.RequestWith(testCtx(t), producer)
			if err != nil || len(resp.Groups) == 0 {
				t.Fatalf("list consumer groups: %v %+v", err, resp)
			}
			cgd := kmsg.NewPtrConsumerGroupDescribeRequest()
			cgd.Groups = []string{group}
			dresp, err := cgd.RequestWith(testCtx(t), members[0].cl)
			if err != nil || dresp.Groups[0].ErrorCode != 0 || len(dresp.Groups[0].Members) != 3 {
				t.Fatalf("describe: %v %+v", err, dresp)
			}
			// The first member may have drained the records produced so far
			// before the others joined; records produced now land on every
			// partition, so each member has something of its own to consume.
			produceValues(t, producer, topic, 150, 300)
			waitFor(t, "every member to consume", 30*time.Second, func() bool {
				return members[0].consumed.Load() > 0 && members[1].consumed.Load() > 0 && members[2].consumed.Load() > 0
			})
			members[2].crash()
			killed := time.Now()
			produceValues(t, producer, topic, 300, 600)
			waitFor(t, "the survivors to own every partition", 30*time.Second, func() bool {
				return len(members[0].owns())+len(members[1].owns()) == 6
			})
			t.Logf("%s: survivors own all partitions %v after the crash (group.consumer.session.timeout.ms 2000)", tc.name, time.Since(killed).Round(time.Millisecond))
			waitFor(t, "every record to be consumed", 60*time.Second, func() bool { return set.len() == 600 })
			waitFor(t, "the committed offsets to reach the end", 60*time.Second, func() bool {
				ok, _ := committedAtEnd(t, adm, group, topic)
				return ok
			})
			members[0].close()
			members[1].close()
		})
	}
}

// TestPipelinedCommitsApplyInOrder: OffsetCommit requests pipelined on one
// connection apply in the order they were sent, as Kafka applies a
// connection's requests, so the last offset sent is the one committed.
func TestPipelinedCommitsApplyInOrder(t *testing.T) {
	b := groupBroker(t, nil)
	adm := b.Admin()
	createTopic(t, adm, "pipelined-commits", 1, nil)
	c, err := dialRaw(b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.member, c.gen = "", -1 // a group without members: commits as an admin tool makes them
	// Clients find the coordinator first; that also creates and loads
	// the group's __consumer_offsets partition.
	waitFor(t, "the group's coordinator", 30*time.Second, func() bool {
		_, err := adm.FetchOffsets(testCtx(t), "bench")
		return err == nil
	})
	for round := int64(0); round < 20; round++ {
		first := round*64 + 1
		if err := c.commitWindow("pipelined-commits", 0, first, 64); err != nil {
			t.Fatal(err)
		}
		offs, err := adm.FetchOffsets(testCtx(t), "bench")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := offs.Lookup("pipelined-commits", 0)
		if want := first + 63; got.At != want {
			t.Fatalf("round %d: committed %d, want the last offset sent, %d", round, got.At, want)
		}
	}
}
