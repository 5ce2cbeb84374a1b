package broker_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// consumeCompacted reads a partition from its start to end with a fresh consumer
// and returns its records.
func consumeCompacted(t *testing.T, b *brokertest.Broker, topic string, end int64) []*kgo.Record {
	t.Helper()
	cl := b.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	var out []*kgo.Record
	for {
		fs := cl.PollFetches(testCtx(t))
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			done = done || r.Offset >= end-1
		})
		if done {
			return out
		}
	}
}

// TestCompactedTopicKeepsTheLastRecordOfEachKey: on a topic with
// cleanup.policy=compact, the broker's log cleaner leaves, of the sealed
// segments, the last record of each key (tombstones included while
// delete.retention.ms runs); consumers, franz-go and kcat, read exactly
// that from the start, across the gaps, before and after a restart.
func TestCompactedTopicKeepsTheLastRecordOfEachKey(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.LogCleanerBackoff = 50 * time.Millisecond })
	adm := b.Admin()
	str := func(s string) *string { return &s }
	createTopic(t, adm, "compacted", 1, map[string]*string{
		"cleanup.policy":            str("compact"),
		"segment.bytes":             str("4096"),
		"min.cleanable.dirty.ratio": str("0.01"),
		"delete.retention.ms":       str("3600000"),
	})
	cl := b.Client(kgo.DefaultProduceTopic("compacted"), kgo.ProducerLinger(0))
	defer cl.Close()
	last := map[string]string{}
	produce := func(key string, value []byte) {
		r := &kgo.Record{Key: []byte(key), Value: value}
		if err := cl.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		last[key] = string(value)
	}
	for i := 0; i < 1500; i++ {
		produce(fmt.Sprintf("k%02d", i%40), []byte(fmt.Sprintf("v%04d", i)))
	}
	for i := 0; i < 5; i++ {
		produce(fmt.Sprintf("k%02d", i), nil) // tombstones
		last[fmt.Sprintf("k%02d", i)] = "<tombstone>"
	}
	// Keys written once, enough to fill the active segment, so that
	// everything above is sealed and cleanable.
	for i := 0; i < 100; i++ {
		produce(fmt.Sprintf("filler%03d", i), []byte(strings.Repeat("f", 60)))
	}
	end := int64(1500 + 5 + 100)

	check := func(recs []*kgo.Record) (ok bool, why string) {
		seen := map[string]int{}
		prev := int64(-1)
		for _, r := range recs {
			if r.Offset <= prev {
				return false, fmt.Sprintf("offset %d after %d", r.Offset, prev)
			}
			prev = r.Offset
			seen[string(r.Key)]++
			got := string(r.Value)
			if r.Value == nil {
				got = "<tombstone>"
			}
			if seen[string(r.Key)] == 1 && got != last[string(r.Key)] && !strings.HasPrefix(string(r.Key), "filler") {
				return false, fmt.Sprintf("key %s reads %q first, want only its last %q", r.Key, got, last[string(r.Key)])
			}
		}
		for k := range last {
			if seen[k] != 1 && !strings.HasPrefix(k, "filler") {
				return false, fmt.Sprintf("key %s read %d times", k, seen[k])
			}
		}
		return true, ""
	}
	brokertest.WaitFor(t, 30*time.Second, "the log cleaner to compact the topic", func() (bool, string) {
		return check(consumeCompacted(t, b, "compacted", end))
	})

	// kcat (librdkafka) reads the same, gaps and tombstones included.
	requireKcatReadsLast(t, b, "compacted", last)

	b.Restart()
	if ok, why := check(consumeCompacted(t, b, "compacted", end)); !ok {
		t.Fatalf("after a restart: %s", why)
	}
}

// TestCompactedTopicWithTransactions: a transactional producer's aborted
// records are removed by compaction and never supersede a committed
// record; a read_committed consumer, and a read_uncommitted one once the
// cleaner is done, read each key's last committed value.
func TestCompactedTopicWithTransactions(t *testing.T) {
	b := txnBroker(t, nil, func(c *broker.Config) { c.LogCleanerBackoff = 50 * time.Millisecond })
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "compacted-txn", 1, map[string]*string{
		"cleanup.policy":            str("compact"),
		"segment.bytes":             str("2048"),
		"min.cleanable.dirty.ratio": str("0.01"),
	})
	p := b.Client(kgo.TransactionalID("compactor"), kgo.ProducerLinger(0))
	defer p.Close()
	last := map[string]string{}
	ctx := testCtx(t)
	for n := 0; n < 30; n++ {
		commit := n%3 != 2
		if err := p.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 8; k++ {
			key, value := fmt.Sprintf("k%d", k), fmt.Sprintf("txn%02d", n)
			if err := p.ProduceSync(ctx, &kgo.Record{Topic: "compacted-txn", Key: []byte(key), Value: []byte(value)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if commit {
				last[key] = value
			}
		}
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		if err := p.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	// The last transaction aborted: its records are the last of their
	// keys in the log, and must not win. Then fillers, so that all of it
	// is sealed.
	plain := b.Client(kgo.DefaultProduceTopic("compacted-txn"), kgo.ProducerLinger(0))
	defer plain.Close()
	for i := 0; i < 60; i++ {
		if err := plain.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("filler%02d", i)), Value: []byte(strings.Repeat("f", 60))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(isolation kgo.IsolationLevel) (bool, string) {
		cl := b.Client(kgo.ConsumeTopics("compacted-txn"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(isolation))
		defer cl.Close()
		seen := map[string][]string{}
		fillers := 0
		for fillers < 60 {
			fs := cl.PollFetches(ctx)
			if err := fs.Err(); err != nil {
				t.Fatal(err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if strings.HasPrefix(string(r.Key), "filler") {
					fillers++
					return
				}
				seen[string(r.Key)] = append(seen[string(r.Key)], string(r.Value))
			})
		}
		for k, v := range last {
			if len(seen[k]) != 1 || seen[k][0] != v {
				return false, fmt.Sprintf("key %s reads %v, want only %s", k, seen[k], v)
			}
		}
		return true, ""
	}
	brokertest.WaitFor(t, 30*time.Second, "read_committed to read each key's last committed value once", func() (bool, string) {
		return read(kgo.ReadCommitted())
	})
	if ok, why := read(kgo.ReadUncommitted()); !ok {
		t.Fatalf("read_uncommitted, once compacted: %s", why)
	}
}

// requireKcatReadsLast fails t unless kcat (librdkafka), reading topic
// from its start, reads each key of last but the fillers with its value
// there ("<tombstone>": a null value, which kcat prints empty), once.
func requireKcatReadsLast(t *testing.T, b *brokertest.Broker, topic string, last map[string]string) {
	t.Helper()
	out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k=%s\n")
	var lines, want []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "filler") {
			lines = append(lines, l)
		}
	}
	for k, v := range last {
		if strings.HasPrefix(k, "filler") {
			continue
		}
		if v == "<tombstone>" {
			v = ""
		}
		want = append(want, k+"="+v)
	}
	sort.Strings(lines)
	sort.Strings(want)
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kcat read\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
