package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// compactedLedger is what a compacted partition must read as: the last
// value acknowledged of every key (nil: a tombstone).
type compactedLedger map[string][]byte

// check reports whether recs, a partition read from its start, hold every
// key of l exactly once with its last value, no key l does not know, at
// strictly increasing offsets.
func (l compactedLedger) check(recs []*kgo.Record) (bool, string) {
	seen := map[string]int{}
	prev := int64(-1)
	for _, r := range recs {
		if r.Offset <= prev {
			return false, fmt.Sprintf("offset %d read after %d", r.Offset, prev)
		}
		prev = r.Offset
		k := string(r.Key)
		want, ok := l[k]
		if !ok {
			return false, fmt.Sprintf("key %q at offset %d was never produced", k, r.Offset)
		}
		seen[k]++
		if (r.Value == nil) != (want == nil) || !bytes.Equal(r.Value, want) {
			return false, fmt.Sprintf("key %s reads %s at offset %d, want only its last %s", k, showValue(r.Value), r.Offset, showValue(want))
		}
	}
	var bad []string
	for k := range l {
		if seen[k] != 1 {
			bad = append(bad, fmt.Sprintf("%s read %d times", k, seen[k]))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("and %d more", len(bad)-10))
		}
		return false, fmt.Sprintf("%d records read: %s", len(recs), strings.Join(bad, ", "))
	}
	return true, ""
}

func showValue(v []byte) string {
	if v == nil {
		return "<tombstone>"
	}
	return fmt.Sprintf("%q", v)
}

// readFromLeader reads partition 0 of topic from its start to offset end
// (exclusive) with a fresh consumer, which reads from the leader. A read
// that does not get there within 10 s returns false.
func readFromLeader(t *testing.T, c *brokertest.Cluster, topic string, end int64) ([]*kgo.Record, bool) {
	t.Helper()
	cons := c.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	defer cons.Close()
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, false
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			done = done || r.Offset >= end-1
		})
		if done {
			return out, true
		}
	}
}

// readReplica reads partition 0 of topic from its start to offset end
// (exclusive) from broker id's replica itself, leader or follower (a
// follower serves Fetch v11+ up to the high watermark its leader sent it,
// KIP-392), through cl, a client pinned to that broker. ok is false while
// the replica's high watermark is short of end.
func readReplica(ctx context.Context, cl *kgo.Client, topic string, end int64) ([]*kgo.Record, bool, string) {
	var out []*kgo.Record
	for offset := int64(0); offset < end; {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 12
		req.ReplicaID = -1
		req.ReplicaState.ID = -1
		req.MaxWaitMillis = 10
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset = offset
		rp.CurrentLeaderEpoch = -1
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return nil, false, err.Error()
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, false, fmt.Sprintf("fetch answered %d topics", len(resp.Topics))
		}
		p := &resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 {
			return nil, false, fmt.Sprintf("fetch at %d: error %d", offset, p.ErrorCode)
		}
		if p.HighWatermark < end {
			return nil, false, fmt.Sprintf("high watermark %d of %d", p.HighWatermark, end)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offset, Topic: topic}, p, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return nil, false, fmt.Sprintf("fetch at %d: %v", offset, fp.Err)
		}
		if next <= offset {
			return nil, false, fmt.Sprintf("fetch at %d: no batch (%d bytes)", offset, len(p.RecordBatches))
		}
		for _, r := range fp.Records {
			if r.Offset < end {
				out = append(out, r)
			}
		}
		offset = next
	}
	return out, true, ""
}

// cleanerPasses sums the compaction passes broker nd ran, by result.
func cleanerPasses(nd *brokertest.Node) string {
	if nd.B == nil || nd.Registry == nil {
		return "stopped"
	}
	mfs, err := nd.Registry.Gather()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, mf := range mfs {
		if mf.GetName() != "shale_log_cleaner_passes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				parts = append(parts, fmt.Sprintf("%s=%v", lp.GetValue(), m.GetCounter().GetValue()))
			}
		}
	}
	sort.Strings(parts)
	return "passes " + strings.Join(parts, " ")
}

// replicaDebug describes broker nd's replica of topic-0: its offsets and,
// on disk, its segments and checkpoints.
func replicaDebug(nd *brokertest.Node, topic string) string {
	dir := filepath.Join(nd.Dir, topic+"-0")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var parts []string
	if nd.B != nil {
		leo, hw, _ := nd.B.ReplicaOffsets(topic, 0)
		parts = append(parts, fmt.Sprintf("leo %d hw %d", leo, hw))
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // gone: a compaction swapped it out meanwhile
		}
		name := e.Name()
		if strings.HasSuffix(name, ".log") {
			base, _ := strconv.ParseInt(strings.TrimSuffix(name, ".log"), 10, 64)
			parts = append(parts, fmt.Sprintf("segment %d: %d bytes", base, fi.Size()))
		}
		if strings.Contains(name, "checkpoint") || strings.Contains(name, "recovery") {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			parts = append(parts, fmt.Sprintf("%s=%q", name, b))
		}
	}
	return strings.Join(parts, " ")
}

// TestCompactedTopicSurvivesLosingItsLeader: every replica of a compacted
// topic compacts its own log (the log cleaner runs on every broker, on
// followers too), so that when the leader goes, the new leader's log reads
// compacted as well: each key once, with its last acknowledged value, no
// acknowledged key missing and none read stale, tombstones included. The
// records produced under the new leader supersede the old ones on its log
// and on the old leader's once it is back in the ISR, and every replica,
// read directly, converges to the same view.
func TestCompactedTopicSurvivesLosingItsLeader(t *testing.T) {
	start := time.Now()
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.LogCleanerBackoff = 50 * time.Millisecond })
	ctx := testCtx(t)
	// Admin and producer clients that refresh their metadata at once
	// when asked (by default a client's metadata answers are as old as
	// five seconds): the ISR and the leader change are seen as they
	// happen.
	admin := func() *kadm.Client { return kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond))) }
	adm := admin()
	const topic = "compacted-replicated"
	resp, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{
		"cleanup.policy":            kadm.StringPtr("compact"),
		"segment.bytes":             kadm.StringPtr("4096"),
		"min.cleanable.dirty.ratio": kadm.StringPtr("0.01"),
		"delete.retention.ms":       kadm.StringPtr("3600000"),
		"min.insync.replicas":       kadm.StringPtr("2"),
	}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, resp.Err)
	}
	var leader, epoch int32
	brokertest.WaitFor(t, 15*time.Second, "three in-sync replicas", func() (bool, string) {
		var isr []int32
		leader, epoch, isr = partitionState(t, adm, topic)
		return leader >= 0 && len(isr) == 3, fmt.Sprintf("leader %d isr %v", leader, isr)
	})

	// acks=all (the default), idempotent.
	prod := c.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.MetadataMinAge(50*time.Millisecond))
	last := compactedLedger{}
	produced := 0
	// produce sends recs in one ProduceSync (one batch or a few) and
	// notes their values once acknowledged.
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("producing %d records after %d: %v", len(recs), produced, err)
		}
		for _, r := range recs {
			last[string(r.Key)] = r.Value
		}
		produced += len(recs)
	}
	keyed := func(key string, value []byte) *kgo.Record { return &kgo.Record{Key: []byte(key), Value: value} }
	// fill produces n records of keys written once, enough to fill the
	// active segment, so that everything before is sealed and cleanable.
	// Their values are random: the producer compresses its batches
	// (snappy, franz-go's default), and ten records of one repeated byte
	// came to so little that the active segment never rolled.
	rnd := rand.New(rand.NewSource(1))
	fill := func(prefix string, n int) {
		for i := 0; i < n; i += 10 {
			var recs []*kgo.Record
			for j := i; j < i+10 && j < n; j++ {
				v := make([]byte, 60)
				rnd.Read(v)
				recs = append(recs, keyed(fmt.Sprintf("%s%03d", prefix, j), v))
			}
			produce(recs...)
		}
	}
	// 1500 records over 40 keys, ten to a ProduceSync (ten different
	// keys), then tombstones for k00 to k04.
	for i := 0; i < 1500; i += 10 {
		var recs []*kgo.Record
		for j := i; j < i+10; j++ {
			recs = append(recs, keyed(fmt.Sprintf("k%02d", j%40), []byte(fmt.Sprintf("v%04d", j))))
		}
		produce(recs...)
	}
	for i := 0; i < 5; i++ {
		produce(keyed(fmt.Sprintf("k%02d", i), nil))
	}
	fill("filler", 100)
	end := endOffset(t, adm, topic)
	if end != int64(produced) {
		t.Fatalf("log end offset %d after %d records acknowledged", end, produced)
	}
	t.Logf("%d records produced in %s (since start)", produced, time.Since(start).Round(time.Millisecond))

	// describe says, once a wait has lasted (it is not cheap), what each
	// of nodes' replicas holds and how many passes its cleaner ran.
	describe := func(began time.Time, nodes ...*brokertest.Node) string {
		if time.Since(began) < 5*time.Second {
			return ""
		}
		var s string
		for _, nd := range nodes {
			s += fmt.Sprintf("\nbroker %d: %s; %s", nd.ID, cleanerPasses(nd), replicaDebug(nd, topic))
		}
		return s
	}
	// check waits until a fresh consumer (reading from the leader) reads
	// the ledger from the partition's start.
	check := func(what string) {
		t.Helper()
		began := time.Now()
		brokertest.WaitFor(t, 45*time.Second, what, func() (bool, string) {
			recs, ok := readFromLeader(t, c, topic, end)
			why := fmt.Sprintf("read %d records before the deadline", len(recs))
			if ok {
				ok, why = last.check(recs)
			}
			if !ok {
				why += describe(began, c.Brokers...)
			}
			return ok, why
		})
	}
	check("the leader's log compacted")
	t.Logf("leader %d compacted at %s", leader, time.Since(start).Round(time.Millisecond))

	// The leader goes (a clean stop: leadership moves first); its
	// successor's log, compacted by its own cleaner, must read the same.
	c.Stop(leader)
	adm = admin()
	var newLeader int32
	brokertest.WaitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := partitionState(t, adm, topic)
		newLeader = l
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	// More records under the new leader, acknowledged by two replicas
	// (min.insync.replicas=2): new values for k05 to k19, a value again
	// for k00 (a tombstone before), a tombstone for k20, a new key, and
	// fillers again so that they are sealed.
	var recs []*kgo.Record
	for i := 5; i < 20; i++ {
		recs = append(recs, keyed(fmt.Sprintf("k%02d", i), []byte(fmt.Sprintf("w%04d", i))))
	}
	recs = append(recs, keyed("k00", []byte("revived")), keyed("k20", nil), keyed("late", []byte("new key")))
	for _, r := range recs {
		produce(r)
	}
	fill("gfiller", 100)
	end = endOffset(t, adm, topic)
	if end != int64(produced) {
		t.Fatalf("log end offset %d under the new leader after %d records acknowledged", end, produced)
	}
	check(fmt.Sprintf("the new leader %d's log compacted", newLeader))
	t.Logf("new leader %d compacted at %s", newLeader, time.Since(start).Round(time.Millisecond))

	// The old leader back: it follows, rejoins the ISR, and its log (its
	// own compaction and what it copied from the new leader) converges
	// too, as does every replica's, each read directly.
	c.Start(leader)
	adm = admin()
	brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("broker %d back in the ISR", leader), func() (bool, string) {
		_, _, isr := partitionState(t, adm, topic)
		return len(isr) == 3 && slices.Contains(isr, leader), fmt.Sprintf("isr %v", isr)
	})
	check("the leader's log compacted, every broker up")
	for _, nd := range c.Brokers {
		cl := directClient(t, nd.Addr, 12)
		began := time.Now()
		brokertest.WaitFor(t, 45*time.Second, fmt.Sprintf("broker %d's replica compacted", nd.ID), func() (bool, string) {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			recs, ok, why := readReplica(rctx, cl, topic, end)
			if ok {
				ok, why = last.check(recs)
			}
			if !ok {
				why += describe(began, nd)
			}
			return ok, why
		})
	}
	t.Logf("every replica compacted at %s", time.Since(start).Round(time.Millisecond))
}
