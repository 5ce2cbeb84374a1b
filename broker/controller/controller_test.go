package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

func snapshot(brokers []metadata.Broker, configs map[string]string, parts ...metadata.Partition) *metadata.Snapshot {
	ts := &metadata.TopicState{Topic: metadata.Topic{Name: "t", Configs: configs}}
	for i := range parts {
		parts[i].Topic, parts[i].Index = "t", int32(i)
		ts.Partitions = append(ts.Partitions, parts[i])
	}
	return &metadata.Snapshot{Brokers: brokers, Topics: map[string]*metadata.TopicState{"t": ts}}
}

func brokers(ids ...int32) []metadata.Broker {
	var out []metadata.Broker
	for _, id := range ids {
		out = append(out, metadata.Broker{ID: id})
	}
	return out
}

// unclean marks an expected partition as led by an unclean election.
func unclean(p metadata.Partition) metadata.Partition {
	p.UncleanEpoch = p.LeaderEpoch
	return p
}

func TestPlan(t *testing.T) {
	p := func(leader, epoch int32, isr ...int32) metadata.Partition {
		return metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: epoch, ISR: isr, PartitionEpoch: 7}
	}
	for _, tc := range []struct {
		name      string
		snap      *metadata.Snapshot
		restarted map[int32]bool
		want      []metadata.Partition // Next of each change, in order
	}{
		{"all live: nothing", snapshot(brokers(1, 2, 3), nil, p(1, 0, 1, 2, 3)), nil, nil},
		{"a live non-preferred leader stays", snapshot(brokers(1, 2, 3), nil, p(2, 4, 1, 2, 3)), nil, nil},
		{"dead follower leaves the ISR, epoch kept", snapshot(brokers(1, 2), nil, p(1, 0, 1, 2, 3)), nil, []metadata.Partition{p(1, 0, 1, 2)}},
		{"dead leader: next ISR member, epoch bumped", snapshot(brokers(2, 3), nil, p(1, 3, 1, 2, 3)), nil, []metadata.Partition{p(2, 4, 2, 3)}},
		{"a replica outside the ISR is not elected", snapshot(brokers(2, 3), nil, p(1, 3, 1, 3)), nil, []metadata.Partition{p(3, 4, 3)}},
		{"no live ISR member: offline, ISR kept", snapshot(brokers(2, 3), nil, p(1, 3, 1)), nil, []metadata.Partition{p(-1, 4, 1)}},
		{"offline stays offline without change", snapshot(brokers(2, 3), nil, p(-1, 4, 1)), nil, nil},
		{"the last ISR member returns and leads", snapshot(brokers(1, 2, 3), nil, p(-1, 4, 1)), nil, []metadata.Partition{p(1, 5, 1)}},
		{"unclean election when the topic allows it", snapshot(brokers(2, 3), map[string]string{UncleanElectionConfig: "true"}, p(1, 3, 1)), nil, []metadata.Partition{unclean(p(2, 4, 2))}},
		{"a restarted leader loses leadership and the ISR", snapshot(brokers(1, 2, 3), nil, p(1, 3, 1, 2, 3)), map[int32]bool{1: true}, []metadata.Partition{p(2, 4, 2, 3)}},
		{"a restarted leader that is the only live ISR member leads again at a new epoch",
			snapshot(brokers(1, 2, 3), nil, p(1, 3, 1)), map[int32]bool{1: true}, []metadata.Partition{p(1, 4, 1)}},
		{"a restarted follower leaves the ISR", snapshot(brokers(1, 2, 3), nil, p(1, 3, 1, 2, 3)), map[int32]bool{3: true}, []metadata.Partition{p(1, 3, 1, 2)}},
		{"a clean ISR member is chosen over an unclean one",
			snapshot([]metadata.Broker{{ID: 2, UncleanShutdown: true}, {ID: 3}}, nil, p(1, 3, 1, 2, 3)), nil, []metadata.Partition{p(3, 4, 2, 3)}},
		{"a leader shutting down hands over to the next ISR member and leaves the ISR",
			snapshot([]metadata.Broker{{ID: 1, ShuttingDown: true}, {ID: 2}, {ID: 3}}, nil, p(1, 3, 1, 2, 3)), nil, []metadata.Partition{p(2, 4, 2, 3)}},
		{"a follower shutting down leaves the ISR",
			snapshot([]metadata.Broker{{ID: 1}, {ID: 2}, {ID: 3, ShuttingDown: true}}, nil, p(1, 3, 1, 2, 3)), nil, []metadata.Partition{p(1, 3, 1, 2)}},
		{"a leader shutting down that is the only ISR member keeps leading",
			snapshot([]metadata.Broker{{ID: 1, ShuttingDown: true}, {ID: 2}, {ID: 3}}, nil, p(1, 3, 1)), nil, nil},
		{"a dead leader's successor is one not shutting down",
			snapshot([]metadata.Broker{{ID: 2, ShuttingDown: true}, {ID: 3}}, nil, p(1, 3, 1, 2, 3)), nil, []metadata.Partition{p(3, 4, 3)}},
		{"a replica shutting down leads when it is the only live ISR member",
			snapshot([]metadata.Broker{{ID: 2, ShuttingDown: true}, {ID: 3}}, nil, p(1, 3, 1, 2)), nil, []metadata.Partition{p(2, 4, 2)}},
		{"all shutting down: the leader stays, nobody leaves the ISR",
			snapshot([]metadata.Broker{{ID: 1, ShuttingDown: true}, {ID: 2, ShuttingDown: true}, {ID: 3, ShuttingDown: true}}, nil, p(1, 3, 1, 2, 3)), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.snap, tc.restarted, nil, nil, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("Plan = %+v, want %+v", got, tc.want)
			}
			for i, ch := range got {
				w := tc.want[i]
				n := ch.Next
				if n.Leader != w.Leader || n.LeaderEpoch != w.LeaderEpoch || !slices.Equal(n.ISR, w.ISR) || n.UncleanEpoch != w.UncleanEpoch || ch.Expected != 7 {
					t.Fatalf("change %d = %+v (expected %d), want %+v", i, n, ch.Expected, w)
				}
			}
		})
	}
}

// TestPlanRecovering: ISR members back from a machine crash
// (Partition.Recovering) lead nothing while a member that kept its log can
// lead; when none can, the partition waits for every member, and the
// longest recovered log leads alone.
func TestPlanRecovering(t *testing.T) {
	r := func(id int32, logEnd int64) metadata.RecoveringReplica {
		return metadata.RecoveringReplica{ID: id, LogEnd: logEnd}
	}
	p := func(leader, epoch int32, isr []int32, recovering ...metadata.RecoveringReplica) metadata.Partition {
		return metadata.Partition{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: epoch, ISR: isr, PartitionEpoch: 7, Recovering: recovering}
	}
	all := []int32{1, 2, 3}
	for _, tc := range []struct {
		name      string
		snap      *metadata.Snapshot
		restarted map[int32]bool
		want      []metadata.Partition // nil: no change
	}{
		{"a live leader that kept its log stays; the recovering follower leaves the ISR",
			snapshot(brokers(1, 2, 3), nil, p(1, 3, all, r(3, 10))), nil, []metadata.Partition{p(1, 3, []int32{1, 2})}},
		{"a recovering leader hands over to a member that kept its log",
			snapshot(brokers(1, 2, 3), nil, p(1, 3, all, r(1, -1))), nil, []metadata.Partition{p(2, 4, []int32{2, 3})}},
		{"no member that kept its log is up: offline until all are back",
			snapshot(brokers(1, 2), nil, p(1, 3, all, r(1, 50), r(2, 40))), nil, []metadata.Partition{p(-1, 4, all, r(1, 50), r(2, 40))}},
		{"offline and waiting: no change", snapshot(brokers(1, 2), nil, p(-1, 4, all, r(1, 50), r(2, 40))), nil, nil},
		{"the member that did not crash leads once back, the others leave the ISR",
			snapshot(brokers(1, 2, 3), nil, p(-1, 4, all, r(1, 50), r(2, 40))), nil, []metadata.Partition{p(3, 5, []int32{3})}},
		{"all recovering, one end not reported: offline",
			snapshot(brokers(1, 2, 3), nil, p(-1, 4, all, r(1, 50), r(2, 40), r(3, -1))), nil, nil},
		{"all recovering, one just restarted: offline",
			snapshot(brokers(1, 2, 3), nil, p(-1, 4, all, r(1, 50), r(2, 40), r(3, 70))), map[int32]bool{3: true}, nil},
		{"all recovering and reported: the longest log leads alone",
			snapshot(brokers(1, 2, 3), nil, p(-1, 4, all, r(1, 50), r(2, 70), r(3, 60))), nil, []metadata.Partition{p(2, 5, []int32{2})}},
		{"among equal ends, replica order",
			snapshot(brokers(1, 2, 3), nil, p(-1, 4, all, r(1, 50), r(2, 70), r(3, 70))), nil, []metadata.Partition{p(2, 5, []int32{2})}},
		{"a topic that allows unclean election does not wait: the longest reported log among the live leads",
			snapshot(brokers(1, 2), map[string]string{UncleanElectionConfig: "true"}, p(-1, 4, all, r(1, 50), r(2, 60))), nil, []metadata.Partition{unclean(p(2, 5, []int32{2}))}},
		{"a topic that allows unclean election, no end reported: the first live replica",
			snapshot(brokers(1, 2), map[string]string{UncleanElectionConfig: "true"}, p(-1, 4, all, r(1, -1), r(2, -1))), nil, []metadata.Partition{unclean(p(1, 5, []int32{1}))}},
		{"a recovering member out of the ISR is forgotten",
			snapshot(brokers(1, 2, 3), nil, p(1, 3, []int32{1, 2}, r(3, 10))), nil, []metadata.Partition{p(1, 3, []int32{1, 2})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.snap, tc.restarted, nil, nil, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("Plan = %+v, want %+v", got, tc.want)
			}
			for i, ch := range got {
				w, n := tc.want[i], ch.Next
				if n.Leader != w.Leader || n.LeaderEpoch != w.LeaderEpoch || !slices.Equal(n.ISR, w.ISR) || !slices.Equal(n.Recovering, w.Recovering) || n.UncleanEpoch != w.UncleanEpoch || ch.Expected != 7 {
					t.Fatalf("change %d = %+v, want %+v", i, n, w)
				}
			}
		})
	}
	// Neither the preferred election nor the automatic rebalance picks a
	// recovering replica.
	if _, err := ElectPreferred(snapshot(brokers(1, 2, 3), nil, p(2, 3, all, r(1, 10))), p(2, 3, all, r(1, 10))); !errors.Is(err, ErrPreferredNotAvailable) {
		t.Fatalf("ElectPreferred of a recovering replica: %v", err)
	}
}

// TestPlanRecoveringCountsOnlyOnMembersThatAnswer: a registered in-sync
// replica that does not answer Kafka requests may be a crashed broker
// whose registration has not lapsed yet, or its machine, booted again,
// starting it: a partition whose other members are back from a machine
// crash does not count on it as one that kept its log. Counted on, it
// stayed leader and the recovering members, whose logs may be the
// longest left, left the ISR.
func TestPlanRecoveringCountsOnlyOnMembersThatAnswer(t *testing.T) {
	r := func(id int32, logEnd int64) metadata.RecoveringReplica {
		return metadata.RecoveringReplica{ID: id, LogEnd: logEnd}
	}
	all := []int32{1, 2, 3}
	p := metadata.Partition{Replicas: all, Leader: 3, LeaderEpoch: 4, ISR: all, PartitionEpoch: 7, Recovering: metadata.Recovering{r(1, 50), r(2, 40)}}
	snap := snapshot(brokers(1, 2, 3), nil, p)
	if got := Plan(snap, nil, nil, nil, nil); len(got) != 1 || got[0].Next.Leader != 3 || !slices.Equal(got[0].Next.ISR, []int32{3}) {
		t.Fatalf("a leader that answers, Plan = %+v, want it kept, alone in the ISR", got)
	}
	if got := Plan(snap, nil, map[int32]bool{3: true}, nil, nil); len(got) != 0 {
		t.Fatalf("a silent leader: Plan = %+v, want no change until it answers or its registration lapses", got)
	}
	// Its registration lapsed: offline, every member kept, waiting.
	got := Plan(snapshot(brokers(1, 2), nil, p), nil, nil, nil, nil)
	if len(got) != 1 {
		t.Fatalf("Plan = %+v, want one change", got)
	}
	n := got[0].Next
	if n.Leader != -1 || n.LeaderEpoch != 5 || !slices.Equal(n.ISR, all) || !slices.Equal(n.Recovering, p.Recovering) {
		t.Fatalf("a lapsed leader: %+v, want the partition offline at epoch 5, every member in the ISR, the recovering ones kept", n)
	}
	// A silent member that is not the leader is not elected.
	if got := Plan(snapshot(brokers(1, 2, 3), nil, n), nil, map[int32]bool{3: true}, nil, nil); len(got) != 0 {
		t.Fatalf("offline with a silent member: Plan = %+v, want no change", got)
	}
	// Back (answering) and recovering too, reported: the longest leads.
	back := n
	back.Recovering = append(slices.Clone(n.Recovering), r(3, 45))
	got = Plan(snapshot(brokers(1, 2, 3), nil, back), nil, nil, nil, nil)
	if len(got) != 1 || got[0].Next.Leader != 1 || !slices.Equal(got[0].Next.ISR, []int32{1}) {
		t.Fatalf("every member back and reported, Plan = %+v, want broker 1 (the longest) alone", got)
	}
}

// TestLeaseExpiryMovesLeadership runs the controller on a real etcd: when
// the leader's registration lapses, the partition gets a new leader from
// the ISR with a bumped epoch.
func TestLeaseExpiryMovesLeadership(t *testing.T) {
	_, store, cache, regs := startThreeBrokers(t, time.Second)
	ctl := Start(store, cache, Config{BrokerID: 2, SessionTTL: time.Second, Logger: testLogger()})
	defer ctl.Close()
	regs[0].Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := cache.Snapshot().Topics["t"].Partitions[0]
		if p.Leader == 2 && p.LeaderEpoch == 1 && slices.Equal(p.ISR, []int32{2, 3}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition after the leader left: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := cache.Snapshot().Controller; c != 2 {
		t.Fatalf("controller = %d, want 2", c)
	}
}

// startThreeBrokers starts an etcd and registers brokers 1 to 3 (their
// directories "dir-1" to "dir-3") under leases of ttl, and creates topic
// "t" with one partition led by broker 1, all three in sync. Everything
// ends with the test.
func startThreeBrokers(t *testing.T, ttl time.Duration) (context.Context, *metadata.Store, *metadata.Cache, []*metadata.Registration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	store := metadata.NewStore(e.Client(), "/ctl/")
	cache, err := metadata.NewCache(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	var regs []*metadata.Registration
	for id := int32(1); id <= 3; id++ {
		r, err := store.RegisterBroker(ctx, metadata.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id, DirectoryID: fmt.Sprint("dir-", id)}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		regs = append(regs, r)
	}
	parts := []metadata.Partition{{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, ISR: []int32{1, 2, 3}}}
	rev, err := store.CreateTopic(ctx, metadata.Topic{Name: "t", ID: metadata.UUID{1}}, parts)
	if err != nil {
		t.Fatal(err)
	}
	// The callers read the topic from the cache at once.
	if err := cache.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	return ctx, store, cache, regs
}

func testLogger() *slog.Logger {
	if os.Getenv("SHALE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestPlanTombstonePrune(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	snap := &metadata.Snapshot{DeletedTopics: map[metadata.UUID]metadata.DeletedTopic{
		{1}: {Name: "old", ID: metadata.UUID{1}, DeletedAt: now.Add(-8 * 24 * time.Hour)},
		{2}: {Name: "recent", ID: metadata.UUID{2}, DeletedAt: now.Add(-time.Hour)},
		{3}: {Name: "just", ID: metadata.UUID{3}, DeletedAt: now.Add(-7 * 24 * time.Hour)},
		{4}: {Name: "future", ID: metadata.UUID{4}, DeletedAt: now.Add(time.Hour)},
	}}
	for _, tc := range []struct {
		retention time.Duration
		want      []metadata.UUID
	}{
		{DefaultDeletedTopicRetention, []metadata.UUID{{1}, {3}}},
		{30 * time.Minute, []metadata.UUID{{1}, {2}, {3}}},
		{30 * 24 * time.Hour, nil},
		{-1, nil},
	} {
		if got := PlanTombstonePrune(snap, now, tc.retention); !slices.Equal(got, tc.want) {
			t.Errorf("retention %v: pruned %v, want %v", tc.retention, got, tc.want)
		}
	}
}

// TestARestartNoControllerSawIsHandledByTheNextOne: broker 1 leads a
// partition and is the controller; it dies and comes back (a new
// registration, on an empty disk) before any other broker is elected
// controller, so the new controller's first snapshot already holds the
// new incarnation. The restart counts all the same (the last controller
// recorded which incarnations it acted on): broker 1 leaves the ISR and
// the leadership, as it would have under a live controller, and does not
// lead on with a log that lost what the ISR acknowledged.
func TestARestartNoControllerSawIsHandledByTheNextOne(t *testing.T) {
	ctx, store, cache, regs := startThreeBrokers(t, 10*time.Second)
	first := Start(store, cache, Config{BrokerID: 1, SessionTTL: 10 * time.Second, Logger: testLogger()})
	for {
		acted, _, err := store.ActedIncarnations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(acted) == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the first controller never recorded the incarnations it acted on")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.Close()
	// Broker 1 comes back on an empty disk: its old registration gone,
	// a new one under a new directory id.
	regs[0].Close()
	again, err := store.RegisterBroker(ctx, metadata.Broker{ID: 1, Host: "127.0.0.1", Port: 9001, DirectoryID: "dir-1-replaced"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := cache.WaitForRevision(ctx, again.Revision()); err != nil {
		t.Fatal(err)
	}
	next := Start(store, cache, Config{BrokerID: 2, SessionTTL: 10 * time.Second, Logger: testLogger()})
	defer next.Close()
	for {
		p := cache.Snapshot().Topics["t"].Partitions[0]
		if p.Leader == 2 && p.LeaderEpoch == 1 && slices.Equal(p.ISR, []int32{2, 3}) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("broker 1's restart was not handled: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A clean failover does not wait while the controller asks brokers
// questions other partitions' changes depend on, which a broker
// registered but hung takes the whole timeout to answer: where the
// replicas of a partition that needs an unclean election end their logs,
// and whether the in-sync replicas of a partition whose other members are
// back from a machine crash answer at all. Broker 1 leads t-0, with 2 and
// 3 in sync, and u-0, alone in sync on a topic allowing unclean election;
// broker 3 leads r-0, whose other member, 1, is back from a machine crash.
// Broker 1 goes; t-0 gets a leader while neither question is answered,
// and u-0 elects the longer log once they are.
func TestACleanFailoverDoesNotWaitForAnswers(t *testing.T) {
	ctx, store, cache, regs := startThreeBrokers(t, time.Second)
	create := func(topic metadata.Topic, p metadata.Partition) {
		t.Helper()
		rev, err := store.CreateTopic(ctx, topic, []metadata.Partition{p})
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	create(metadata.Topic{Name: "u", ID: metadata.UUID{2}, Configs: map[string]string{UncleanElectionConfig: "true"}},
		metadata.Partition{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, ISR: []int32{1}})
	create(metadata.Topic{Name: "r", ID: metadata.UUID{3}},
		metadata.Partition{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 3, ISR: []int32{1, 3}, Recovering: metadata.Recovering{{ID: 1, LogEnd: 50}}})
	asking, answer := make(chan string, 2), make(chan struct{})
	wait := func(ctx context.Context, what string) bool {
		select {
		case asking <- what:
		default:
		}
		select {
		case <-answer:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ask := func(ctx context.Context, b metadata.Broker, refs []PartitionRef) map[PartitionRef]replication.LogEnd {
		if !wait(ctx, "log ends") {
			return nil
		}
		out := map[PartitionRef]replication.LogEnd{}
		for _, ref := range refs {
			out[ref] = replication.LogEnd{Epoch: 0, Offset: 100 * int64(b.ID)}
		}
		return out
	}
	answers := func(ctx context.Context, b metadata.Broker) bool { return wait(ctx, "answers") }
	ctl := Start(store, cache, Config{BrokerID: 2, SessionTTL: time.Second, AskReplicaLogs: ask, Answers: answers,
		UncleanRecoveryWait: 100 * time.Millisecond, Logger: testLogger()})
	defer ctl.Close()
	regs[0].Close()
	select {
	case what := <-asking:
		t.Logf("asked first: %s", what)
	case <-ctx.Done():
		t.Fatal("no broker was asked anything")
	}
	waitFor := func(what, topic string, ok func(metadata.Partition) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			p := cache.Snapshot().Topics[topic].Partitions[0]
			if ok(p) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s-0 is %+v", what, topic, p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("a clean failover while the questions are unanswered", "t", func(p metadata.Partition) bool {
		return p.Leader == 2 && slices.Equal(p.ISR, []int32{2, 3})
	})
	if p := cache.Snapshot().Topics["u"].Partitions[0]; p.Leader >= 0 && p.Leader != 1 {
		t.Fatalf("u-0 elected %d before its replicas answered", p.Leader)
	}
	close(answer)
	waitFor("the unclean election once answered", "u", func(p metadata.Partition) bool {
		return p.Leader == 3 && p.UncleanEpoch == p.LeaderEpoch
	})
}

// The in-sync replicas of partitions recovering from a machine crash are
// asked whether they answer all at once (each may take its whole
// timeout), once each, and those that do not are silent.
func TestSilentKeepersAreAskedAllAtOnce(t *testing.T) {
	r := func(id int32) metadata.RecoveringReplica { return metadata.RecoveringReplica{ID: id, LogEnd: 10} }
	snap := snapshot(brokers(1, 2, 3), nil,
		metadata.Partition{Index: 0, Replicas: []int32{1, 2, 3}, Leader: 2, ISR: []int32{1, 2, 3}, Recovering: metadata.Recovering{r(1)}})
	snap.Topics["u"] = &metadata.TopicState{Topic: metadata.Topic{Name: "u"}, Partitions: []metadata.Partition{
		{Topic: "u", Index: 0, Replicas: []int32{1, 3}, Leader: 3, ISR: []int32{1, 3}, Recovering: metadata.Recovering{r(1)}}}}
	var mu sync.Mutex
	asked := map[int32]int{}
	both := make(chan struct{})
	answers := func(ctx context.Context, b metadata.Broker) bool {
		mu.Lock()
		asked[b.ID]++
		if len(asked) == 2 && asked[b.ID] == 1 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(5 * time.Second):
			t.Errorf("broker %d asked alone", b.ID)
		}
		return b.ID != 3
	}
	c := &Controller{cfg: Config{Answers: answers}, log: testLogger()}
	silent := c.silentKeepers(context.Background(), snap, nil)
	if len(silent) != 1 || !silent[3] {
		t.Fatalf("silent %v, want broker 3", silent)
	}
	if len(asked) != 2 || asked[2] != 1 || asked[3] != 1 {
		t.Fatalf("asked %v, want brokers 2 and 3 once each", asked)
	}
}
