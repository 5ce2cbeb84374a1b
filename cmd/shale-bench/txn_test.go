package main

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestTxnRunAgainstShale runs the txn run, tiny, against a real Shale
// and kfake: its transactions commit and abort, read_committed returns
// the committed records and none of the aborted ones, read_uncommitted
// all of them, and the exactly-once copy commits what it reads, once
// (runTxn checks each and fails otherwise).
func TestTxnRunAgainstShale(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4 // fewer internal partitions to load
		c.TransactionTopicPartitions = 4
	})
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	o := options{recordSize: 100, txn: txnOptions{duration: 50 * time.Millisecond, abortEvery: 3}}
	shale := &target{name: "shale", addr: b.Addr, close: func() {}}
	ceiling := &target{name: "kfake", addr: c.ListenAddrs()[0], close: func() {}}
	if err := runTxn(o, shale, ceiling); err != nil {
		t.Fatal(err)
	}
}

// A read seeks back to the start after each pass until its time has
// passed, and counts every pass's records: read_committed the committed
// ones, read_uncommitted all.
func TestTxnConsumeReadsInPasses(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4
		c.TransactionTopicPartitions = 4
	})
	if err := createTopicNamed(b.Addr, "t", txnPartitions); err != nil {
		t.Fatal(err)
	}
	o := options{recordSize: 10, txn: txnOptions{duration: time.Nanosecond, abortEvery: 2}}
	r, err := txnProduce(b.Addr, "t", 8, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		committed bool
		want      int64
	}{{true, r.committed}, {false, r.records}} {
		tp, passes, leaked, err := txnConsume(b.Addr, "t", c.committed, c.want, 300*time.Millisecond, o)
		if err != nil {
			t.Fatalf("read_committed %v: %v", c.committed, err)
		}
		if passes < 2 || tp.records != int64(passes)*c.want || leaked != 0 || tp.elapsed < 300*time.Millisecond {
			t.Fatalf("read_committed %v: %d records in %d passes of %d, %d leaked, in %s", c.committed, tp.records, passes, c.want, leaked, tp.elapsed)
		}
	}
}

// A transactional run takes at least abortEvery transactions, so that one
// aborts however short its duration, and counts what it wrote.
func TestTxnProduceAbortsEveryNth(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(txnPartitions, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	o := options{recordSize: 10, txn: txnOptions{duration: time.Nanosecond, abortEvery: 4}}
	r, err := txnProduce(c.ListenAddrs()[0], "t", 5, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.txns != 4 || r.aborted != 1 || len(r.commits) != 3 {
		t.Fatalf("%d timed transactions, %d aborted, %d commits timed; want 4, 1, 3", r.txns, r.aborted, len(r.commits))
	}
	// The untimed first transaction commits too.
	if r.records != 25 || r.committed != 20 || r.timed.records != 20 {
		t.Fatalf("%d records in the topic, %d committed, %d timed; want 25, 20, 20", r.records, r.committed, r.timed.records)
	}
}
