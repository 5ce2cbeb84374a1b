package broker_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

// TestTransactionsReplayFromTheBucket: a tiered topic written by
// transactions, a third of them aborted, small segments so that
// transactions straddle them; once its history is in the bucket and off
// the local disk, read_committed consumers (franz-go in small fetches,
// kcat) replaying it from offset 0 read exactly the committed records, in
// order: the aborted transactions come from the segments' companions.
func TestTransactionsReplayFromTheBucket(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.StartOn(t, t.TempDir(), nil, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
		c.OffsetsTopicPartitions = 4
		c.TransactionTopicPartitions = 4
	})
	const topic = "txn-history"
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), topic, 1, map[string]*string{
		"segment.bytes":         str("65536"),
		"local.retention.bytes": str("100000"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
	p := tieredProducer(b, topic, kgo.TransactionalID("tx-history"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var committed []int
	const txns, per = 30, 50
	for i := range txns {
		if err := p.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := i * per; j < (i+1)*per; j += 10 {
			var recs []*kgo.Record
			for k := j; k < j+10; k++ {
				recs = append(recs, &kgo.Record{Value: tieredValue(k)})
			}
			if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		commit := i%3 != 1
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
			for k := i * per; k < (i+1)*per; k++ {
				committed = append(committed, k)
			}
		}
		if err := p.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	cl := b.Client()
	waitFor(t, "uploads and local retention", 60*time.Second, func() bool {
		return localSegments(t, b, topic) <= 3 && listOffset(t, cl, topic, -4) > 0
	})

	cons := b.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxPartitionBytes(20000))
	defer cons.Close()
	var got []*kgo.Record
	for len(got) < len(committed) {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d committed records: %v", len(got), len(committed), err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		got = append(got, fs.Records()...)
	}
	for i, r := range got {
		if i >= len(committed) || !bytes.Equal(r.Value, tieredValue(committed[i])) {
			t.Fatalf("read_committed record %d (offset %d): %.20q, want record %d", i, r.Offset, r.Value, committed[min(i, len(committed)-1)])
		}
	}

	out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(committed) {
		t.Fatalf("kcat (read_committed) read %d records, want %d", len(lines), len(committed))
	}
	for i, l := range lines {
		if l != string(tieredValue(committed[i])) {
			t.Fatalf("kcat record %d: %.20q, want record %d", i, l, committed[i])
		}
	}
}
