package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTxnMetricsScraped: a transactional producer's transactions show on
// the broker's registry: the open one as an unstable partition and an
// Ongoing id, the ended ones by result, with their markers.
func TestTxnMetricsScraped(t *testing.T) {
	b := txnBroker(t, nil)
	ctx := context.Background()
	const topic = "txn-metrics"
	if _, err := b.Admin().CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	p := b.Client(kgo.TransactionalID("tx-metrics"))
	defer p.Close()
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	s := gather(t, b.Registry)
	if v, _ := s.get("shale_partitions_unstable", ""); v != 1 {
		t.Errorf("shale_partitions_unstable %v with a transaction open, want 1", v)
	}
	if v, _ := s.get("shale_transactional_ids", "state=Ongoing"); v != 1 {
		t.Errorf("shale_transactional_ids{state=Ongoing} %v, want 1", v)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	transact(t, p, topic, false, "aborted")

	// The markers and Complete records follow the EndTxn answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s = gather(t, b.Registry)
		unstable, _ := s.get("shale_partitions_unstable", "")
		done, _ := s.get("shale_transactional_ids", "state=CompleteAbort")
		if unstable == 0 && done == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after commit and abort: unstable %v, CompleteAbort ids %v", unstable, done)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for labels, want := range map[string]float64{"result=commit": 1, "result=abort": 1, "result=timeout": 0} {
		if v, ok := s.get("shale_transactions_total", labels); !ok || v != want {
			t.Errorf("shale_transactions_total{%s} %v, want %v", labels, v, want)
		}
	}
	if v, _ := s.get("shale_transaction_markers_written_total", ""); v != 2 {
		t.Errorf("shale_transaction_markers_written_total %v, want 2", v)
	}
	if v, _ := s.get("shale_transaction_completion_seconds", ""); v != 2 {
		t.Errorf("shale_transaction_completion_seconds count %v, want 2", v)
	}
	if _, ok := s.get("shale_transaction_marker_retries_total", ""); !ok {
		t.Error("no shale_transaction_marker_retries_total")
	}
}
