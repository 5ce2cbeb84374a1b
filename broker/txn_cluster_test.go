package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestTransactionsSurviveTheCoordinatorsLoss: on three brokers, a
// transaction spans partitions led by every broker (markers go to the
// other leaders by WriteTxnMarkers); then the transaction coordinator dies
// with a transaction open. The producer's next instance, at the new
// coordinator, has it aborted on every partition and commits its own: a
// read_committed consumer sees exactly the committed records.
func TestTransactionsSurviveTheCoordinatorsLoss(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.OffsetsTopicPartitions = 3
		cfg.TransactionTopicPartitions = 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic, id = "txn-cluster", "tx-cluster"
	if _, err := c.Admin().CreateTopic(ctx, 3, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	values := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	p := c.Client(kgo.TransactionalID(id), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	defer p.Close()
	transact(t, p, topic, true, values("c", 9)...)
	transact(t, p, topic, false, values("a", 6)...)

	// The coordinator dies with a transaction open on every partition.
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType, req.CoordinatorKey = 1, id
	resp, err := req.RequestWith(ctx, p)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("finding the coordinator: %v %v", err, resp)
	}
	coordinator := resp.NodeID
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, v := range values("open", 3) {
		if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	c.Stop(coordinator)

	// Clients of the cluster seed the running brokers.
	next := c.Client(kgo.TransactionalID(id), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	defer next.Close()
	transact(t, next, topic, true, values("n", 3)...)

	got := consumeAll(t, c.Client, topic, true, 12)
	slices.Sort(got)
	want := append(values("c", 9), values("n", 3)...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("read_committed consumed %v, want %v", got, want)
	}
}

// TestTransactionsSurviveAPartitionLeadersLoss: a partition's leader (not
// the coordinator) dies in the middle of a transaction that wrote to it;
// the producer goes on with the new leader, and the commit's marker goes
// there. Every committed record reads once, nothing of a later abort does.
func TestTransactionsSurviveAPartitionLeadersLoss(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.OffsetsTopicPartitions = 3
		cfg.TransactionTopicPartitions = 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic, id = "txn-leader-loss", "tx-leader-loss"
	if _, err := c.Admin().CreateTopic(ctx, 3, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	p := c.Client(kgo.TransactionalID(id), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer p.Close()
	transact(t, p, topic, true) // finds the coordinator, loads its partition
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType, req.CoordinatorKey = 1, id
	resp, err := req.RequestWith(ctx, p)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("finding the coordinator: %v %v", err, resp)
	}
	leaders, err := c.Admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	victim, part := int32(-1), int32(-1)
	for _, pd := range leaders[topic].Partitions {
		if pd.Leader != resp.NodeID {
			victim, part = pd.Leader, pd.Partition
			break
		}
	}
	if victim < 0 {
		t.Fatalf("every partition is led by the coordinator %d", resp.NodeID)
	}
	produce := func(v string) {
		t.Helper()
		if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: part, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("producing %s: %v", v, err)
		}
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce("before")
	c.Stop(victim)
	produce("after")
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce("aborted")
	if err := p.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	transact(t, p, topic, true) // an empty one: the abort is complete
	got := consumeAll(t, c.Client, topic, true, 2)
	slices.Sort(got)
	if !slices.Equal(got, []string{"after", "before"}) {
		t.Fatalf("read_committed consumed %v, want [after before]", got)
	}
}
