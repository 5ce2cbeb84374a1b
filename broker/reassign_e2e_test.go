package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// producerLoop produces numbered records with acks=all (idempotent) to
// partition 0 of topic until stopped, and returns the acknowledged ones.
type producerLoop struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	errs  int
}

func startProducer(t *testing.T, c *brokertest.Cluster, topic string) *producerLoop {
	t.Helper()
	cl := c.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(1000), kgo.RecordDeliveryTimeout(30*time.Second))
	return runProducerLoop(cl, 30*time.Second)
}

// runProducerLoop produces numbered records through cl, one at a time and
// each within timeout, until finished, keeping those acknowledged.
func runProducerLoop(cl *kgo.Client, timeout time.Duration) *producerLoop {
	pl := &producerLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pl.done)
		for i := 0; ; i++ {
			select {
			case <-pl.stop:
				return
			default:
			}
			v := strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr()
			cancel()
			pl.mu.Lock()
			if err == nil {
				pl.acked = append(pl.acked, v)
			} else {
				pl.errs++
			}
			pl.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return pl
}

func (pl *producerLoop) count() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.acked)
}

func (pl *producerLoop) finish() []string {
	close(pl.stop)
	<-pl.done
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return slices.Clone(pl.acked)
}

// checkAllRead reads topic's partition 0 from the start and checks that
// every acknowledged record is there, once, in order.
func checkAllRead(t *testing.T, c *brokertest.Cluster, topic string, acked []string) {
	t.Helper()
	checkAcknowledgedRead(t, c.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}})), acked)
}

// checkAcknowledgedRead consumes through cons until every acknowledged
// record has been read, and checks that no record is read twice and that
// the acknowledged ones come in production order (unacknowledged ones may
// sit between them).
func checkAcknowledgedRead(t *testing.T, cons *kgo.Client, acked []string) {
	t.Helper()
	ctx := testCtx(t)
	seen := map[string]bool{}
	var got []string
	want := map[string]bool{}
	for _, v := range acked {
		want[v] = true
	}
	for missing := len(want); missing > 0; {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d records, %d acknowledged ones missing: %v", len(got), missing, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if seen[v] {
				t.Fatalf("record %q read twice", v)
			}
			seen[v] = true
			got = append(got, v)
			if want[v] {
				missing--
			}
		})
	}
	i := 0
	for _, v := range got {
		if i < len(acked) && v == acked[i] {
			i++
		}
	}
	if i != len(acked) {
		t.Fatalf("acknowledged record %q missing or out of order", acked[i])
	}
}

func partitionReplicas(t *testing.T, adm *kadm.Client, topic string) (leader int32, replicas, isr []int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return -1, nil, nil
	}
	p := td[topic].Partitions[0]
	return p.Leader, slices.Clone(p.Replicas), slices.Clone(p.ISR)
}

func sorted(ids []int32) []int32 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func logDirExists(nd *brokertest.Node, topic string) bool {
	_, err := os.Stat(filepath.Join(nd.Dir, topic+"-0"))
	return err == nil
}

// TestReassignmentMovesLeaderWhileProducing moves a partition of three
// replicas off its leader onto a fourth broker while a producer runs with
// acks=all: the new replica joins as a follower, catches up and enters the
// ISR, the controller then drops the old leader and moves leadership;
// ListPartitionReassignments shows the move while it runs. Nothing
// acknowledged is lost, the new replicas hold every record and their logs
// agree, and the removed broker deleted its log.
func TestReassignmentMovesLeaderWhileProducing(t *testing.T) {
	c := brokertest.StartCluster(t, 4, func(cfg *broker.Config) { cfg.ReplicaLagTimeMax = 3 * time.Second })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "moving"); err != nil {
		t.Fatal(err)
	}
	pl := startProducer(t, c, "moving")
	brokertest.WaitFor(t, 10*time.Second, "records acknowledged", func() (bool, string) { return pl.count() > 50, fmt.Sprint(pl.count()) })

	leader, replicas, _ := partitionReplicas(t, adm, "moving")
	var spare int32
	for id := int32(0); id < 4; id++ {
		if !slices.Contains(replicas, id) {
			spare = id
		}
	}
	target := []int32{spare}
	for _, id := range replicas {
		if id != leader {
			target = append(target, id)
		}
	}
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign("moving", 0, target)
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp["moving"][0].Err; err != nil {
		t.Fatalf("reassigning to %v: %v", target, err)
	}
	// Until it completes, the move is listed with its adding and removing
	// replicas (it may complete before the listing).
	if l, err := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{"moving": {0: {}}}); err != nil {
		t.Fatal(err)
	} else if r, ok := l["moving"][0]; ok {
		if !slices.Equal(r.AddingReplicas, []int32{spare}) || !slices.Equal(r.RemovingReplicas, []int32{leader}) || !slices.Equal(sorted(r.Replicas), []int32{0, 1, 2, 3}) {
			t.Fatalf("listed %+v, want adding [%d] removing [%d] over all four brokers", r, spare, leader)
		}
	}
	brokertest.WaitFor(t, 20*time.Second, "the reassignment completes", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, "moving")
		listed, _ := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{"moving": {0: {}}})
		return slices.Equal(reps, target) && slices.Equal(sorted(isr), sorted(target)) && l != leader && l >= 0 && len(listed["moving"]) == 0,
			fmt.Sprintf("leader %d replicas %v isr %v listed %v", l, reps, isr, listed)
	})
	// Keep producing on the new leader for a moment.
	n := pl.count()
	brokertest.WaitFor(t, 10*time.Second, "records acknowledged by the new leader", func() (bool, string) { return pl.count() > n+20, fmt.Sprint(pl.count()) })
	acked := pl.finish()
	checkAllRead(t, c, "moving", acked)
	end, _, _ := c.Brokers[target[0]].B.ReplicaOffsets("moving", 0)
	brokertest.WaitFor(t, 10*time.Second, "every new replica holds every record", func() (bool, string) {
		state := ""
		ok := true
		for _, id := range target {
			leo, hw, hosted := c.Brokers[id].B.ReplicaOffsets("moving", 0)
			state += fmt.Sprintf("broker %d: leo %d hw %d %v; ", id, leo, hw, hosted)
			ok = ok && hosted && leo == end && hw == end
		}
		return ok, state
	})
	old := c.Brokers[leader]
	if _, _, ok := old.B.ReplicaOffsets("moving", 0); ok {
		t.Fatalf("broker %d still hosts the partition it was moved off", leader)
	}
	brokertest.WaitFor(t, 5*time.Second, "the removed broker deletes its log", func() (bool, string) {
		return !logDirExists(old, "moving"), old.Dir
	})
	c.CheckReplicasAgree(t, "moving", target...)
}

// TestReassignmentCancelAndErrors: a reassignment onto a broker that
// cannot reach the leader stays in progress (listed), and cancelling it
// (null replicas) returns the partition to its replicas, the added broker
// deleting its partial copy; a target naming an unknown broker is
// INVALID_REPLICA_ASSIGNMENT, a cancellation with nothing in progress
// NO_REASSIGNMENT_IN_PROGRESS, and kadm's replication-factor guard
// (KIP-860) INVALID_REPLICATION_FACTOR.
func TestReassignmentCancelAndErrors(t *testing.T) {
	var blocked atomic.Bool
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		if cfg.NodeID == 2 {
			cfg.DialPeer = dialUnlessCut(&blocked)
		}
	})
	ctx := testCtx(t)
	adm := c.Admin()
	// Partition 0 on brokers 0 and 1 only.
	createAssigned(t, c.Client(), "stay", []int32{0, 1})
	prod := c.Client(kgo.DefaultProduceTopic("stay"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 20; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	blocked.Store(true)
	alter := func(build func(*kadm.AlterPartitionAssignmentsReq)) error {
		return alterAssignment(t, ctx, adm, "stay", build)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.CancelAssign("stay", 0) }); !errors.Is(err, kerr.NoReassignmentInProgress) {
		t.Fatalf("cancel with nothing in progress: %v", err)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("stay", 0, []int32{0, 99}) }); !errors.Is(err, kerr.InvalidReplicaAssignment) {
		t.Fatalf("unknown broker: %v", err)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("stay", 0, []int32{0, 0}) }); !errors.Is(err, kerr.InvalidReplicaAssignment) {
		t.Fatalf("duplicate broker: %v", err)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("stay", 0, []int32{0, 1, 2}) }); err != nil {
		t.Fatal(err)
	}
	l, err := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{"stay": {0: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := l["stay"][0]; !slices.Equal(r.Replicas, []int32{0, 1, 2}) || !slices.Equal(r.AddingReplicas, []int32{2}) || len(r.RemovingReplicas) != 0 {
		t.Fatalf("listed %+v, want replicas [0 1 2] adding [2]", l["stay"])
	}
	brokertest.WaitFor(t, 10*time.Second, "the added broker opens the partition", func() (bool, string) {
		return logDirExists(c.Brokers[2], "stay"), ""
	})
	time.Sleep(500 * time.Millisecond)
	if _, reps, isr := partitionReplicas(t, adm, "stay"); !slices.Equal(sorted(isr), []int32{0, 1}) || len(reps) != 3 {
		t.Fatalf("a broker cut from the leader must not join the ISR: replicas %v isr %v", reps, isr)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.CancelAssign("stay", 0) }); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	brokertest.WaitFor(t, 10*time.Second, "the cancelled replica leaves and deletes its copy", func() (bool, string) {
		_, reps, _ := partitionReplicas(t, adm, "stay")
		listed, _ := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{"stay": {0: {}}})
		return slices.Equal(reps, []int32{0, 1}) && len(listed["stay"]) == 0 && !logDirExists(c.Brokers[2], "stay"),
			fmt.Sprintf("replicas %v listed %v", reps, listed)
	})
	// KIP-860: kadm can forbid a change of the replication factor.
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign("stay", 0, []int32{0, 1, 2})
	resp, err := adm.AlterPartitionAssignments(kadm.ForbidAlterRf(ctx), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp["stay"][0].Err; !errors.Is(err, kerr.InvalidReplicationFactor) {
		t.Fatalf("replication factor change refused: %v", err)
	}
}

// dialUnlessCut dials peers until cut is set, then fails every dial: a
// broker whose links to the others are cut.
func dialUnlessCut(cut *atomic.Bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if cut.Load() {
			return nil, errors.New("link cut by the test")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// alterAssignment sends the reassignment build makes and returns the
// answer for partition 0 of topic.
func alterAssignment(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, build func(*kadm.AlterPartitionAssignmentsReq)) error {
	t.Helper()
	var req kadm.AlterPartitionAssignmentsReq
	build(&req)
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp[topic][0].Err
}

// createAssigned creates topic with one partition on the given replicas.
func createAssigned(t *testing.T, cl *kgo.Client, topic string, replicas []int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
	a.Partition, a.Replicas = 0, replicas
	rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("creating %s on %v: %v", topic, replicas, err)
	}
}

// TestReassignmentCancelRefusedWithNoOriginalInSync: a partition moved from
// brokers 0 and 1 to 2 and 3, where 2 caught up and leads after 0 and 1
// stopped while 3 cannot reach it. Cancelling would leave no original
// replica in the ISR and take the partition offline: it is refused with
// INVALID_REPLICA_ASSIGNMENT (as Kafka's controller refuses a revert that
// needs an unclean election) and the partition keeps its leader. Once an
// original replica is back in the ISR the cancellation goes through, and
// every record is still there.
func TestReassignmentCancelRefusedWithNoOriginalInSync(t *testing.T) {
	var blocked atomic.Bool
	c := brokertest.StartCluster(t, 4, func(cfg *broker.Config) {
		if cfg.NodeID == 3 {
			cfg.DialPeer = dialUnlessCut(&blocked)
		}
	})
	ctx := testCtx(t)
	createAssigned(t, c.Client(), "revert", []int32{0, 1})
	prod := c.Client(kgo.DefaultProduceTopic("revert"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 20; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	blocked.Store(true)
	adm := c.Admin()
	alter := func(build func(*kadm.AlterPartitionAssignmentsReq)) error {
		return alterAssignment(t, ctx, adm, "revert", build)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("revert", 0, []int32{2, 3}) }); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 15*time.Second, "broker 2 joins the ISR", func() (bool, string) {
		_, reps, isr := partitionReplicas(t, adm, "revert")
		return slices.Contains(isr, 2), fmt.Sprintf("replicas %v isr %v", reps, isr)
	})
	c.Stop(1)
	c.Stop(0)
	adm = kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	brokertest.WaitFor(t, 15*time.Second, "broker 2 leads alone", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, "revert")
		return l == 2 && slices.Equal(isr, []int32{2}), fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.CancelAssign("revert", 0) })
	if !errors.Is(err, kerr.InvalidReplicaAssignment) {
		t.Fatalf("cancel with no original replica in the ISR: %v, want INVALID_REPLICA_ASSIGNMENT", err)
	}
	if l, reps, _ := partitionReplicas(t, adm, "revert"); l != 2 || len(reps) != 4 {
		t.Fatalf("after the refused cancel: leader %d replicas %v, want leader 2 and the reassignment in progress", l, reps)
	}
	c.Start(0)
	brokertest.WaitFor(t, 20*time.Second, "broker 0 back in the ISR", func() (bool, string) {
		_, reps, isr := partitionReplicas(t, adm, "revert")
		return slices.Contains(isr, 0), fmt.Sprintf("replicas %v isr %v", reps, isr)
	})
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.CancelAssign("revert", 0) }); err != nil {
		t.Fatalf("cancel with an original replica in the ISR: %v", err)
	}
	brokertest.WaitFor(t, 15*time.Second, "the partition is back on its original replicas", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, "revert")
		return l == 0 && slices.Equal(reps, []int32{0, 1}), fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	cons := c.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"revert": {0: kgo.NewOffset().AtStart()}}))
	var got []string
	for len(got) < 20 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 20 records: %v", len(got), err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
}

// TestReassignmentCancelRevertsUncleanly: on a topic that allows unclean
// leader election, a cancellation that leaves no original replica in the
// ISR elects a live original one from outside it. It leads alone, the
// record marks its epoch unclean (a tiered leader reads its manifest
// before it appends), the metric counts the election, and what only the
// added replicas held is gone.
func TestReassignmentCancelRevertsUncleanly(t *testing.T) {
	var blocked atomic.Bool
	c := brokertest.StartCluster(t, 4, func(cfg *broker.Config) {
		if cfg.NodeID == 0 || cfg.NodeID == 3 {
			cfg.DialPeer = dialUnlessCut(&blocked)
		}
	})
	ctx := testCtx(t)
	const topic = "unclean-revert"
	createAssigned(t, c.Client(), topic, []int32{0, 1})
	adm := c.Admin()
	// The broker asked may not have seen the new topic yet.
	brokertest.WaitFor(t, 10*time.Second, "unclean election allowed", func() (bool, string) {
		ar, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "unclean.leader.election.enable", Value: kadm.StringPtr("true")}}, topic)
		if err == nil && errors.Is(ar[0].Err, kerr.UnknownTopicOrPartition) {
			return false, ar[0].Err.Error()
		}
		if err != nil || ar[0].Err != nil {
			t.Fatalf("allowing unclean election: %v %v", err, ar)
		}
		return true, ""
	})
	prod := c.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 20; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	// Broker 0 (the original leader) and the added 3 cannot fetch from
	// another broker from now on.
	blocked.Store(true)
	alter := func(build func(*kadm.AlterPartitionAssignmentsReq)) error {
		return alterAssignment(t, ctx, adm, topic, build)
	}
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign(topic, 0, []int32{2, 3}) }); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 15*time.Second, "broker 2 joins the ISR", func() (bool, string) {
		_, reps, isr := partitionReplicas(t, adm, topic)
		return slices.Contains(isr, 2), fmt.Sprintf("replicas %v isr %v", reps, isr)
	})
	c.Stop(1)
	c.Stop(0)
	adm = kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	brokertest.WaitFor(t, 15*time.Second, "broker 2 leads alone", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, topic)
		return l == 2 && slices.Equal(isr, []int32{2}), fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	prod = c.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 20; i < 25; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))}) // on broker 2 alone
	}
	c.Start(0) // out of the ISR: it cannot fetch from 2
	if err := alter(func(r *kadm.AlterPartitionAssignmentsReq) { r.CancelAssign(topic, 0) }); err != nil {
		t.Fatalf("cancel with no original replica in the ISR, unclean election allowed: %v", err)
	}
	brokertest.WaitFor(t, 15*time.Second, "broker 0 leads the original replicas alone", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, topic)
		return l == 0 && slices.Equal(reps, []int32{0, 1}) && slices.Equal(isr, []int32{0}), fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	p, err := metadata.NewStore(c.Etcd().Client(), "").Partition(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.UncleanEpoch == 0 || p.UncleanEpoch != p.LeaderEpoch {
		t.Fatalf("the record after the unclean revert: unclean epoch %d, leader epoch %d; want the leader's epoch marked unclean", p.UncleanEpoch, p.LeaderEpoch)
	}
	var byOperator float64
	for _, nd := range c.Brokers {
		if nd.B != nil {
			byOperator += gather(t, nd.Registry).sum("shale_unclean_leader_elections_total", "by=operator")
		}
	}
	if byOperator != 1 {
		t.Fatalf("shale_unclean_leader_elections_total{by=operator}: %v, want 1", byOperator)
	}
	brokertest.WaitFor(t, 15*time.Second, "the new leader's high watermark at the 20 records it holds", func() (bool, string) {
		leo, hw, _ := c.Brokers[0].B.ReplicaOffsets(topic, 0)
		return leo == 20 && hw == 20, fmt.Sprintf("log end %d, high watermark %d", leo, hw)
	})
}
