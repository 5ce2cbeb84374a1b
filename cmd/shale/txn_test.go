package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestTxnCommands: with one franz-go transactional producer's transaction
// open and another's committed, shale txn list shows both (filtered by
// --state and --producer-id), and shale txn describe their producer,
// timeout, start and the open one's partitions. Unknown ids and states
// are one-line errors.
func TestTxnCommands(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4
		c.TransactionTopicPartitions = 4
	})
	cli := func(args ...string) (string, error) {
		return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "20s")...)
	}
	const topic = "txn-cli"
	mustAdmin(t, cli, "topic", "create", topic, "-p", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	done := b.Client(kgo.TransactionalID("cli-done"), kgo.TransactionTimeout(30*time.Second))
	if err := done.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := done.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := done.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	open := b.Client(kgo.TransactionalID("cli-open"), kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second).UnixMilli()
	for _, p := range []int32{0, 1} {
		if err := open.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("y")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	defer open.EndTransaction(context.Background(), kgo.TryAbort)

	// The commit's markers follow its EndTxn answer.
	var txns []txnInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		adminJSON(t, cli, &txns, "txn", "list")
		if len(txns) == 2 && txns[0].State == "CompleteCommit" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("txn list: %+v", txns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d, o := txns[0], txns[1]
	if d.TransactionalID != "cli-done" || d.ProducerEpoch != 0 || d.TimeoutMs != 30_000 || len(d.Partitions) != 0 || d.StartTimestamp < before {
		t.Errorf("listed cli-done: %+v", d)
	}
	if o.TransactionalID != "cli-open" || o.State != "Ongoing" || o.TimeoutMs != 60_000 || o.StartTimestamp < before ||
		len(o.Partitions[topic]) != 2 || o.ProducerID == d.ProducerID {
		t.Errorf("listed cli-open: %+v", o)
	}

	// --state (any case) and --producer-id filter on the brokers.
	out := mustAdmin(t, cli, "txn", "list", "--state", "ongoing")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^TRANSACTIONAL-ID +COORDINATOR +STATE +PRODUCER-ID +EPOCH +TIMEOUT +START +AGE +PARTITIONS$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^cli-open +0 +Ongoing +\d+ +0 +1m0s +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +\d+s +2$`).MatchString(lines[1]) {
		t.Fatalf("txn list --state ongoing printed:\n%s", out)
	}
	adminJSON(t, cli, &txns, "txn", "list", "--producer-id", strconv.FormatInt(d.ProducerID, 10))
	if len(txns) != 1 || txns[0].TransactionalID != "cli-done" {
		t.Fatalf("txn list --producer-id %d: %+v", d.ProducerID, txns)
	}
	adminJSON(t, cli, &txns, "txn", "list", "--state", "PrepareAbort", "--state", "Empty")
	if len(txns) != 0 {
		t.Fatalf("txn list --state PrepareAbort --state Empty: %+v", txns)
	}

	// describe: the open transaction's partitions in full; no AGE for
	// one that ended.
	out = mustAdmin(t, cli, "txn", "describe", "cli-open", "cli-done")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TRANSACTIONAL-ID") ||
		!regexp.MustCompile(`^cli-done +0 +CompleteCommit +\d+ +0 +30s +\S+Z +- +-$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^cli-open +0 +Ongoing +\d+ +0 +1m0s +\S+Z +\d+s +`+topic+`:0,1$`).MatchString(lines[2]) {
		t.Fatalf("txn describe printed:\n%s", out)
	}
	var described []txnInfo
	adminJSON(t, cli, &described, "txn", "describe", "cli-open")
	if len(described) != 1 || described[0].ProducerID != o.ProducerID || len(described[0].Partitions[topic]) != 2 {
		t.Fatalf("txn describe cli-open -o json: %+v", described)
	}

	// An id no coordinator holds is an error; the others still print.
	out, err := cli("txn", "describe", "cli-done", "cli-nope")
	wantErr(t, err, `transactional id "cli-nope"`, "TRANSACTIONAL_ID_NOT_FOUND")
	if !strings.Contains(out, "cli-done") {
		t.Fatalf("txn describe with an unknown id printed:\n%s", out)
	}
	_, err = cli("txn", "list", "--state", "Running")
	wantErr(t, err, `--state "Running"`, "Ongoing")
	_, err = cli("txn", "describe")
	wantErr(t, err, "missing transactional id")
}

// TestTxnHangingAndAbort: a transactional batch written outside any
// transaction a coordinator knows of (a raw Produce with a transactional
// id, by an idempotent producer id) hangs: its partition's last stable
// offset stays at the batch. shale txn hanging finds it, and not a
// franz-go producer's transaction that its coordinator holds open, even
// with --max-transaction-timeout 0s; shale txn list knows nothing of it.
// shale txn abort ends it, with the epochs from the partition's leader or
// given: the last stable offset reaches the end, read_committed
// consumers skip the batch, and hanging finds none. Aborting a
// transaction its coordinator holds, or none, is refused.
func TestTxnHangingAndAbort(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4
		c.TransactionTopicPartitions = 4
	})
	cli := func(args ...string) (string, error) {
		return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "20s")...)
	}
	const topic, quiet = "txn-hang", "txn-quiet"
	mustAdmin(t, cli, "topic", "create", topic, "-p", "2")
	mustAdmin(t, cli, "topic", "create", quiet, "-p", "1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A transaction open on its coordinator, on partition 1.
	live := b.Client(kgo.TransactionalID("hang-live"), kgo.TransactionTimeout(5*time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := live.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := live.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("live")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	defer live.EndTransaction(context.Background(), kgo.TryAbort)

	// Partition 0: two plain records, an hour-old batch of three outside
	// any transaction, one more plain record.
	plain := b.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(vals ...string) {
		t.Helper()
		for _, v := range vals {
			if err := plain.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce("p0", "p1")
	raw := b.Client()
	init, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, raw)
	if err != nil || init.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v, error code %d", err, init.ErrorCode)
	}
	pid, pidArg := init.ProducerID, strconv.FormatInt(init.ProducerID, 10)
	old := time.Now().Add(-time.Hour).UnixMilli()
	start := produceOutsideTxn(t, ctx, raw, topic, pid, init.ProducerEpoch, 0, old)
	produce("after")
	if start != 2 {
		t.Fatalf("the batch outside any transaction went to offset %d, want 2", start)
	}
	stable := func() (lso, end int64) {
		t.Helper()
		adm := b.Admin()
		c, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		e, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		lo, _ := c.Lookup(topic, 0)
		eo, _ := e.Lookup(topic, 0)
		return lo.Offset, eo.Offset
	}
	if lso, end := stable(); lso != start || end != 6 {
		t.Fatalf("partition 0: last stable offset %d, end %d; want %d and 6", lso, end, start)
	}

	// Found with the default timeout (an hour old; the live transaction
	// is too recent to be a candidate), and with 0s (the live one is,
	// but its coordinator holds it).
	tds, err := b.Admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := hangingTxn{Topic: topic, Partition: 0, Leader: tds[topic].Partitions[0].Leader, ProducerID: pid, ProducerEpoch: init.ProducerEpoch,
		CoordinatorEpoch: -1, StartOffset: start, LastTimestamp: old}
	var found []hangingTxn
	for _, args := range [][]string{{"txn", "hanging"}, {"txn", "hanging", "--max-transaction-timeout", "0s"}, {"txn", "find-hanging", "--topic", topic}} {
		adminJSON(t, cli, &found, args...)
		if len(found) != 1 || found[0] != want {
			t.Fatalf("shale %s: %+v, want %+v", strings.Join(args, " "), found, want)
		}
	}
	out := mustAdmin(t, cli, "txn", "hanging", "--max-transaction-timeout", "0s")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^TOPIC +PARTITION +PRODUCER-ID +EPOCH +COORDINATOR-EPOCH +START-OFFSET +LAST-TIMESTAMP +AGE +TRANSACTIONAL-ID$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^`+topic+` +0 +`+pidArg+` +0 +-1 +2 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +1h0m\d+s +-$`).MatchString(lines[1]) {
		t.Fatalf("txn hanging printed:\n%s", out)
	}
	if out := mustAdmin(t, cli, "txn", "hanging", "--topic", quiet, "--max-transaction-timeout", "0s"); out != "no hanging transactions in 1 partition(s) (max transaction timeout 0s)\n" {
		t.Fatalf("txn hanging --topic %s printed %q", quiet, out)
	}
	// No coordinator knows the producer id.
	var txns []txnInfo
	adminJSON(t, cli, &txns, "txn", "list", "--producer-id", pidArg)
	if len(txns) != 0 {
		t.Fatalf("txn list --producer-id %s: %+v", pidArg, txns)
	}

	// The live transaction is its coordinator's to end.
	adminJSON(t, cli, &txns, "txn", "list", "--state", "Ongoing")
	if len(txns) != 1 || txns[0].TransactionalID != "hang-live" {
		t.Fatalf("txn list --state Ongoing: %+v", txns)
	}
	liveTxn := txns[0]
	_, err = cli("txn", "abort", "--topic", topic, "--partition", "1", "--producer-id", strconv.FormatInt(liveTxn.ProducerID, 10))
	wantErr(t, err, `topic "txn-hang" partition 1`, `transactional id "hang-live", Ongoing`, "not hanging", "--force")

	// Aborted, the epochs from the leader.
	out = mustAdmin(t, cli, "txn", "abort", "--topic", topic, "--partition", "0", "--producer-id", pidArg)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^TOPIC +PARTITION +PRODUCER-ID +EPOCH +COORDINATOR-EPOCH +START-OFFSET +RESULT$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^`+topic+` +0 +`+pidArg+` +0 +0 +2 +aborted$`).MatchString(lines[1]) {
		t.Fatalf("txn abort printed:\n%s", out)
	}
	if lso, end := stable(); lso != end || end != 7 {
		t.Fatalf("after the abort: last stable offset %d, end %d; want 7 for both", lso, end)
	}
	if out := mustAdmin(t, cli, "txn", "hanging", "--max-transaction-timeout", "0s"); !strings.HasPrefix(out, "no hanging transactions in ") {
		t.Fatalf("txn hanging after the abort printed:\n%s", out)
	}
	_, err = cli("txn", "abort", "--topic", topic, "--partition", "0", "--producer-id", pidArg)
	wantErr(t, err, `topic "txn-hang" partition 0: producer `+pidArg+` has no open transaction there`)

	// Again, the producer's next sequence: aborted with the epochs given
	// (the coordinator epoch of the last marker is now 0). The marker's
	// timestamp is the producer's last.
	start = produceOutsideTxn(t, ctx, raw, topic, pid, init.ProducerEpoch, 3, old)
	produce("after2")
	adminJSON(t, cli, &found, "txn", "hanging")
	if len(found) != 0 {
		t.Fatalf("txn hanging, the second batch after the abort marker: %+v, want none", found)
	}
	adminJSON(t, cli, &found, "txn", "hanging", "--max-transaction-timeout", "0s")
	want.CoordinatorEpoch, want.StartOffset = 0, start
	if len(found) == 1 && found[0].LastTimestamp > old {
		want.LastTimestamp = found[0].LastTimestamp
	}
	if len(found) != 1 || found[0] != want {
		t.Fatalf("txn hanging, the second batch: %+v, want %+v", found, want)
	}
	var aborted []abortedTxn
	adminJSON(t, cli, &aborted, "txn", "abort", "--topic", topic, "--partition", "0", "--producer-id", pidArg, "--producer-epoch", "0", "--coordinator-epoch", "0")
	if w := (abortedTxn{Topic: topic, Partition: 0, ProducerID: pid, StartOffset: -1, Result: "aborted"}); len(aborted) != 1 || aborted[0] != w {
		t.Fatalf("txn abort with the epochs given: %+v, want %+v", aborted, w)
	}
	if lso, end := stable(); lso != end || end != 12 {
		t.Fatalf("after the second abort: last stable offset %d, end %d; want 12 for both", lso, end)
	}

	// read_committed skips the aborted batches.
	rc := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var got []string
	for !slices.Contains(got, "after2") {
		fs := rc.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("read_committed consumer: %v, after %q", err, got)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if want := []string{"p0", "p1", "after", "after2"}; !slices.Equal(got, want) {
		t.Fatalf("read_committed consumer read %q, want %q", got, want)
	}

	// A zombie: a batch of the live producer's id and epoch on a
	// partition its transaction does not have. Its coordinator holds the
	// transaction, but not there: it hangs, and abort ends it.
	produceOutsideTxn(t, ctx, raw, quiet, liveTxn.ProducerID, liveTxn.ProducerEpoch, 0, old)
	adminJSON(t, cli, &found, "txn", "hanging", "--topic", quiet)
	if len(found) != 1 || found[0].ProducerID != liveTxn.ProducerID || found[0].TransactionalID != "hang-live" || found[0].StartOffset != 0 {
		t.Fatalf("txn hanging --topic %s, the zombie's batch: %+v", quiet, found)
	}
	mustAdmin(t, cli, "txn", "abort", "--topic", quiet, "--partition", "0", "--producer-id", strconv.FormatInt(liveTxn.ProducerID, 10))
	if out := mustAdmin(t, cli, "txn", "hanging", "--topic", quiet); !strings.HasPrefix(out, "no hanging transactions in 1 partition(s)") {
		t.Fatalf("txn hanging --topic %s after the abort printed:\n%s", quiet, out)
	}
	adminJSON(t, cli, &txns, "txn", "describe", "hang-live")
	if len(txns) != 1 || txns[0].State != "Ongoing" || len(txns[0].Partitions[topic]) != 1 {
		t.Fatalf("the live transaction after its zombie's abort: %+v", txns)
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"abort", "--partition", "0", "--producer-id", "1"}, []string{"--topic"}},
		{[]string{"abort", "--topic", topic, "--producer-id", "1"}, []string{"--partition"}},
		{[]string{"abort", "--topic", topic, "--partition", "0"}, []string{"--producer-id"}},
		{[]string{"abort", "--topic", topic, "--partition", "0", "--producer-id", "1", "--producer-epoch", "0"}, []string{"--coordinator-epoch together"}},
		{[]string{"abort", "--topic", topic, "--partition", "9", "--producer-id", "1"}, []string{`topic "txn-hang" partition 9`, "UNKNOWN_TOPIC_OR_PARTITION", "partitions 0 to 1"}},
		{[]string{"abort", "--topic", "txn-nope", "--partition", "0", "--producer-id", "1"}, []string{`topic "txn-nope"`, "UNKNOWN_TOPIC_OR_PARTITION"}},
		{[]string{"hanging", "--topic", "txn-nope"}, []string{`topic "txn-nope"`, "UNKNOWN_TOPIC_OR_PARTITION"}},
		{[]string{"hanging", "--max-transaction-timeout", "-1s"}, []string{"--max-transaction-timeout -1s: want 0 or more"}},
	} {
		_, err := cli(append([]string{"txn"}, tc.args...)...)
		wantErr(t, err, tc.want...)
	}
}

// produceOutsideTxn writes a transactional batch of three records at seq,
// timestamped ts, to partition 0 of topic with a raw Produce: with a
// transactional id, but in no transaction its coordinator knows of. It
// returns the batch's first offset.
func produceOutsideTxn(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, pid int64, epoch int16, seq int32, ts int64) int64 {
	t.Helper()
	var recs []recordbatch.Record
	for i := range 3 {
		recs = append(recs, recordbatch.Record{Value: []byte(fmt.Sprintf("hanging-%d", seq+int32(i)))})
	}
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{Transactional: true, ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq, BaseTimestamp: ts}, recs)
	if err != nil {
		t.Fatal(err)
	}
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	td := tds[topic]
	txnID := "hang-zombie"
	req := kmsg.NewPtrProduceRequest()
	req.TransactionID, req.Acks, req.TimeoutMillis = &txnID, -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, [16]byte(td.ID)
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = 0, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := cl.Broker(int(td.Partitions[0].Leader)).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	if sp.ErrorCode != 0 {
		t.Fatalf("produce outside a transaction: error code %d: %v", sp.ErrorCode, sp.ErrorMessage)
	}
	return sp.BaseOffset
}

// TestTxnHangingDecision: an open transaction is a candidate once its
// producer wrote last more than the max transaction timeout ago, and
// hangs unless its producer's transaction is open on the coordinator with
// the partition in it.
func TestTxnHangingDecision(t *testing.T) {
	const now = 1_000_000
	producers := kadm.DescribedProducers{
		1: {ProducerID: 1, CurrentTxnStartOffset: -1, LastTimestamp: 0},   // no open transaction
		2: {ProducerID: 2, CurrentTxnStartOffset: 10, LastTimestamp: now}, // too recent
		3: {ProducerID: 3, CurrentTxnStartOffset: 11, LastTimestamp: now - 60_000},
		4: {ProducerID: 4, CurrentTxnStartOffset: 12, LastTimestamp: now - 60_001},
		5: {ProducerID: 5, CurrentTxnStartOffset: 13, LastTimestamp: 0},
		6: {ProducerID: 6, CurrentTxnStartOffset: 14, LastTimestamp: 0},
		7: {ProducerID: 7, CurrentTxnStartOffset: 15, LastTimestamp: 0},
	}
	cands := hangingCandidates([]kadm.DescribedProducersPartition{{Topic: "t", Partition: 2, Leader: 1, ActiveProducers: producers}}, now, time.Minute)
	var pids []int64
	for _, c := range cands {
		pids = append(pids, c.ProducerID)
	}
	if !slices.Equal(pids, []int64{4, 5, 6, 7}) {
		t.Fatalf("candidates %v, want producers 4 to 7 (older than a minute, a transaction open)", pids)
	}
	var here, other kadm.TopicsSet
	here.Add("t", 2)
	other.Add("t", 3)
	txns := map[int64]kadm.DescribedTransaction{
		5: {TxnID: "holds-it", State: "PrepareCommit", Topics: here},
		6: {TxnID: "other-partition", State: "Ongoing", Topics: other},
		7: {TxnID: "ended", State: "CompleteAbort"},
	}
	var got []string
	for _, h := range stillHanging(cands, txns) {
		got = append(got, fmt.Sprintf("%d:%s", h.ProducerID, h.TransactionalID))
	}
	if want := []string{"4:", "6:other-partition", "7:ended"}; !slices.Equal(got, want) {
		t.Fatalf("hanging %q, want %q", got, want)
	}
}
