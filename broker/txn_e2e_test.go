package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// txnBroker starts a broker with few internal partitions (faster loads)
// and the given transaction coordinator settings.
func txnBroker(t testing.TB, txnConfigs map[string]string, opts ...brokertest.Option) *brokertest.Broker {
	t.Helper()
	return brokertest.Start(t, append([]brokertest.Option{func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4
		c.TransactionTopicPartitions = 4
		c.TransactionConfigs = txnConfigs
	}}, opts...)...)
}

// transact runs one transaction of the producer: values produced to topic,
// then committed or aborted.
func transact(t testing.TB, cl *kgo.Client, topic string, commit bool, values ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("producing %q: %v", v, err)
		}
	}
	end := kgo.TryAbort
	if commit {
		end = kgo.TryCommit
	}
	if err := cl.EndTransaction(ctx, end); err != nil {
		t.Fatalf("ending the transaction (commit %v): %v", commit, err)
	}
}

// consumeAll reads topic from the start until it has read want values,
// then for a moment more (a value past them fails the caller's check),
// and returns the values in the order of each partition.
func consumeAll(t testing.TB, client func(...kgo.Opt) *kgo.Client, topic string, committed bool, want int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl := client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(iso))
	defer cl.Close()
	var out []string
	poll := func(ctx context.Context) {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	for len(out) < want {
		if err := ctx.Err(); err != nil {
			t.Fatalf("consuming %s (read_committed %v): %v; got %d values of %d: %v", topic, committed, err, len(out), want, out)
		}
		poll(ctx)
	}
	extra, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for extra.Err() == nil {
		poll(extra)
	}
	return out
}

// TestTransactionsCommitAndAbort: what a transaction commits a
// read_committed consumer (franz-go and kcat, librdkafka's default) sees;
// what it aborts only a read_uncommitted one sees.
func TestTransactionsCommitAndAbort(t *testing.T) {
	b := txnBroker(t, nil)
	ctx := context.Background()
	const topic = "txn-commit-abort"
	if _, err := b.Admin().CreateTopic(ctx, 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	p := b.Client(kgo.TransactionalID("tx-commit-abort"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	defer p.Close()
	transact(t, p, topic, true, "c1", "c2", "c3", "c4")
	transact(t, p, topic, false, "a1", "a2", "a3")
	transact(t, p, topic, true, "c5", "c6")

	got := consumeAll(t, b.Client, topic, true, 6)
	slices.Sort(got)
	if want := []string{"c1", "c2", "c3", "c4", "c5", "c6"}; !slices.Equal(got, want) {
		t.Fatalf("read_committed consumed %v, want %v", got, want)
	}
	all := consumeAll(t, b.Client, topic, false, 9)
	slices.Sort(all)
	if want := []string{"a1", "a2", "a3", "c1", "c2", "c3", "c4", "c5", "c6"}; !slices.Equal(all, want) {
		t.Fatalf("read_uncommitted consumed %v, want %v", all, want)
	}

	out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n")
	kc := strings.Fields(out)
	slices.Sort(kc)
	if want := []string{"c1", "c2", "c3", "c4", "c5", "c6"}; !slices.Equal(kc, want) {
		t.Fatalf("kcat (read_committed) consumed %v, want %v", kc, want)
	}

	d, err := b.Admin().DescribeTransactions(ctx, "tx-commit-abort")
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := d["tx-commit-abort"]; !ok || s.State != "CompleteCommit" || s.Err != nil {
		t.Fatalf("described %+v, want CompleteCommit", d)
	}
	l, err := b.Admin().ListTransactions(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l["tx-commit-abort"]; !ok {
		t.Fatalf("listed %+v, want tx-commit-abort", l)
	}
}

// TestTransactionOpenHoldsLastStableOffset: the records of an open
// transaction, and every record after them, stay unread by read_committed
// consumers until it ends; the end offsets they are told stop there.
func TestTransactionOpenHoldsLastStableOffset(t *testing.T) {
	b := txnBroker(t, nil)
	ctx := context.Background()
	const topic = "txn-lso"
	if _, err := b.Admin().CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	plain := b.Client()
	defer plain.Close()
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p := b.Client(kgo.TransactionalID("tx-lso"))
	defer p.Close()
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stable, err := b.Admin().ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := b.Admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if s, e := stable[topic][0].Offset, ends[topic][0].Offset; s != 1 || e != 3 {
		t.Fatalf("last stable offset %d, end %d; want 1 (the open transaction's first offset) and 3", s, e)
	}
	if got := consumeAll(t, b.Client, topic, true, 1); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("read_committed consumed %v with the transaction open, want [before]", got)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if got := consumeAll(t, b.Client, topic, true, 3); !slices.Equal(got, []string{"before", "open", "after"}) {
		t.Fatalf("read_committed consumed %v after the commit, want [before open after]", got)
	}
}

// TestTransactionalProducerFenced: a second producer with the same
// transactional id fences the first, whose open transaction is aborted.
func TestTransactionalProducerFenced(t *testing.T) {
	b := txnBroker(t, nil)
	ctx := context.Background()
	const topic = "txn-fenced"
	if _, err := b.Admin().CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	old := b.Client(kgo.TransactionalID("tx-fenced"))
	defer old.Close()
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("zombie")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	next := b.Client(kgo.TransactionalID("tx-fenced"))
	defer next.Close()
	transact(t, next, topic, true, "fresh")

	err := old.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("late")}).FirstErr()
	if err == nil {
		err = old.EndTransaction(ctx, kgo.TryCommit)
	}
	if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) && !errors.Is(err, kerr.InvalidProducerIDMapping) {
		t.Fatalf("the fenced producer's write or commit: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	if got := consumeAll(t, b.Client, topic, true, 1); !slices.Equal(got, []string{"fresh"}) {
		t.Fatalf("read_committed consumed %v, want [fresh] (the fenced producer's transaction aborted)", got)
	}
}

// TestTransactionTimeoutAborts: a transaction left open past its timeout
// is aborted by the coordinator, which releases the last stable offset and
// fences the producer.
func TestTransactionTimeoutAborts(t *testing.T) {
	b := txnBroker(t, map[string]string{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"})
	ctx := context.Background()
	const topic = "txn-timeout"
	if _, err := b.Admin().CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	p := b.Client(kgo.TransactionalID("tx-timeout"), kgo.TransactionTimeout(time.Second))
	defer p.Close()
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("abandoned")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 20*time.Second, "the timed-out transaction to be aborted", func() (bool, string) {
		stable, err := b.Admin().ListCommittedOffsets(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		// The record, and the abort marker after it.
		return stable[topic][0].Offset == 2, fmt.Sprintf("last stable offset %d", stable[topic][0].Offset)
	})
	if got := consumeAll(t, b.Client, topic, true, 0); len(got) != 0 {
		t.Fatalf("read_committed consumed %v, want nothing", got)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("the producer whose transaction timed out committed it")
	}
}

// TestTransactionsExactlyOnce: a consume-transform-produce loop
// (GroupTransactSession) copies every input record exactly once and
// commits its group's offsets with its output.
func TestTransactionsExactlyOnce(t *testing.T) {
	b := txnBroker(t, nil)
	ctx := context.Background()
	const in, out, n = "eos-in", "eos-out", 200
	if _, err := b.Admin().CreateTopics(ctx, 2, 1, nil, in, out); err != nil {
		t.Fatal(err)
	}
	plain := b.Client()
	defer plain.Close()
	for i := range n {
		plain.Produce(ctx, &kgo.Record{Topic: in, Value: []byte(fmt.Sprint(i))}, nil)
	}
	if err := plain.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := kgo.NewGroupTransactSession(append(brokertest.ClientAuth(),
		kgo.SeedBrokers(b.Addr),
		kgo.TransactionalID("eos"),
		kgo.ConsumerGroup("eos-group"),
		kgo.ConsumeTopics(in),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DefaultProduceTopic(out),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	copied := 0
	deadline := time.Now().Add(60 * time.Second)
	for copied < n && time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fs := s.PollRecords(pctx, 30) // several transactions
		cancel()
		if err := s.Begin(); err != nil {
			t.Fatal(err)
		}
		var records []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) { records = append(records, &kgo.Record{Value: r.Value}) })
		if len(records) > 0 {
			if err := s.ProduceSync(ctx, records...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		committed, err := s.End(ctx, kgo.TryCommit)
		if err != nil {
			t.Fatal(err)
		}
		if committed {
			copied += len(records)
		}
	}
	if copied != n {
		t.Fatalf("copied %d records, want %d", copied, n)
	}
	got := consumeAll(t, b.Client, out, true, n)
	if len(got) != n {
		t.Fatalf("the output holds %d records, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for _, v := range got {
		if seen[v] {
			t.Fatalf("record %s copied twice", v)
		}
		seen[v] = true
	}
	// The markers follow the last commit's answer: its offsets become
	// the group's a moment later.
	brokertest.WaitFor(t, 10*time.Second, "the group's offsets committed", func() (bool, string) {
		offs, err := b.Admin().FetchOffsets(ctx, "eos-group")
		if err != nil {
			return false, err.Error()
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum == n, fmt.Sprintf("offsets summing to %d, want %d", sum, n)
	})
}
