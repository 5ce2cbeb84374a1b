package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
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
