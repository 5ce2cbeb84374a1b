package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// keptRecord is what a consumer read of one record.
type keptRecord struct {
	offset     int64
	key, value []byte
	null       bool // a tombstone (null value)
	ts         int64
}

func (r keptRecord) String() string {
	v := fmt.Sprintf("%d bytes", len(r.value))
	if r.null {
		v = "null"
	}
	return fmt.Sprintf("offset %d key %q value %s ts %d", r.offset, r.key, v, r.ts)
}

func keptRecords(recs []*kgo.Record) []keptRecord {
	out := make([]keptRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, keptRecord{offset: r.Offset, key: r.Key, value: r.Value, null: r.Value == nil, ts: r.Timestamp.UnixMilli()})
	}
	return out
}

// consumeTo reads partition 0 of topic from its start with a fresh
// consumer until it has read the record at end-1, and returns its records;
// an error when a fetch fails, the consumer goes back (a reset after
// OFFSET_OUT_OF_RANGE), or it does not get there within 20 s.
func consumeTo(t *testing.T, b *brokertest.Broker, topic string, end int64, opts ...kgo.Opt) ([]*kgo.Record, error) {
	t.Helper()
	cl := b.Client(append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) == 0 || out[len(out)-1].Offset < end-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			if len(out) == 0 {
				return out, fmt.Errorf("read no record in 20 s: not to %d", end-1)
			}
			return out, fmt.Errorf("read %d records, to offset %d, in 20 s: not to %d", len(out), out[len(out)-1].Offset, end-1)
		}
		if err := fs.Err(); err != nil {
			return out, err
		}
		for _, r := range fs.Records() {
			if len(out) > 0 && r.Offset <= out[len(out)-1].Offset {
				return out, fmt.Errorf("the consumer went back from offset %d to %d after %d records (reset to the start)", out[len(out)-1].Offset, r.Offset, len(out))
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// diffRecords describes how got differs from want ("" when it holds
// exactly want, in order).
func diffRecords(got, want []keptRecord) string {
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.offset != w.offset || !bytes.Equal(g.key, w.key) || !bytes.Equal(g.value, w.value) || g.null != w.null || g.ts != w.ts {
			return fmt.Sprintf("record %d is %v, want %v", i, g, w)
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d records, want %d", len(got), len(want))
	}
	return ""
}

// fetchBatches reads partition 0 of topic, from offset from up to end, one
// raw Fetch after another, each with a partition limit of one byte (so
// that every fetch but the first asks at the offset after the batch the
// last one returned: inside the gaps compaction left), and returns the
// batches as the broker sent them; an error when a fetch fails.
func fetchBatches(t *testing.T, cl *kgo.Client, topic string, from, end int64) ([]recordbatch.Batch, error) {
	t.Helper()
	var out []recordbatch.Batch
	deadline := time.Now().Add(30 * time.Second)
	for next := from; next < end; {
		r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{p: 0, offset: next, max: 1})[0]
		if r.code != 0 {
			return out, fmt.Errorf("a fetch at offset %d (log start %d, high watermark %d): %w", next, r.start, r.hw, kerr.ErrorForCode(r.code))
		}
		progressed := false
		for _, b := range r.batches {
			if b.LastOffset() < next {
				continue
			}
			if len(out) > 0 && b.BaseOffset() <= out[len(out)-1].LastOffset() {
				return out, fmt.Errorf("a fetch at offset %d: batch at %d after one ending at %d", next, b.BaseOffset(), out[len(out)-1].LastOffset())
			}
			out = append(out, slices.Clone(b))
			next = b.LastOffset() + 1
			progressed = true
		}
		if !progressed {
			// A remote read still under way answers without records.
			if time.Now().After(deadline) {
				return out, fmt.Errorf("a fetch at offset %d: no batch (%d bytes) in 30 s", next, r.bytes)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out, nil
}

// TestCompactedSegmentsTierAfterTheTopicTurnsToDelete: a compacted topic on
// a broker with an object store (never tiered while compacted) switched
// to cleanup.policy=delete tiers by default: the segments compaction left
// (offset gaps inside batches, between batches and at segment ends, where
// a segment's last batch ends below the next segment's base; segments
// emptied, which are not uploaded) upload as they are, and once local
// retention deleted them, consumers from the start read from the object
// store exactly the records, and the very batches, the compacted log held,
// then those produced since. The log start stays where it was: nothing
// expired (retention.ms=-1).
func TestCompactedSegmentsTierAfterTheTopicTurnsToDelete(t *testing.T) {
	bucket := objectstore.NewMem()
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.LogCleanerBackoff = 50 * time.Millisecond
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	const topic = "compacted-then-tiered"
	adm := b.Admin()
	raw := b.Client()
	str := kadm.StringPtr
	createTopic(t, adm, topic, 1, map[string]*string{
		"cleanup.policy":            str("compact"),
		"segment.bytes":             str("4096"),
		"min.cleanable.dirty.ratio": str("0.01"),
		"file.delete.delay.ms":      str("1"),
	})
	if c := describedConfig(t, adm, topic, "remote.storage.enable"); c.MaybeValue() != "false" {
		t.Fatalf("remote.storage.enable of the compacted topic: %+v", c)
	}

	// Each produce call is one batch (manual flushing). Values are random
	// (incompressible).
	rng := rand.New(rand.NewPCG(7, 11))
	value := func(n int) []byte {
		v := make([]byte, n)
		for i := range v {
			v[i] = byte(rng.Uint32())
		}
		return v
	}
	cl := b.Client(kgo.DefaultProduceTopic(topic), kgo.ManualFlushing())
	last := map[string][]byte{}
	var produced int64
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		errs := make(chan error, len(recs))
		for _, r := range recs {
			cl.Produce(testCtx(t), r, func(_ *kgo.Record, err error) { errs <- err })
		}
		if err := cl.Flush(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		for range recs {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range recs {
			last[string(r.Key)] = r.Value
		}
		produced += int64(len(recs))
	}
	rec := func(key string, size int) *kgo.Record { return &kgo.Record{Key: []byte(key), Value: value(size)} }
	// hot produces n records in batches of 5, keys drawn at random among
	// 40, 100 to 200 bytes each: about 5 batches a segment; compaction
	// keeps each key's last record, anywhere in the last hundreds, and
	// leaves gaps inside and between batches.
	hot := func(n int) {
		for i := 0; i < n; i += 5 {
			var recs []*kgo.Record
			for range 5 {
				recs = append(recs, rec(fmt.Sprintf("k%02d", rng.IntN(40)), 100+rng.IntN(100)))
			}
			produce(recs...)
		}
	}
	// A wall is a record larger than segment.bytes: a segment of its own
	// that compaction never merges with another, so that the segments
	// around it keep their bounds.
	walls := 0
	wall := func() {
		produce(rec(fmt.Sprintf("wall%d", walls), 5000))
		walls++
	}
	// The segments below the first wall end up empty (every key there is
	// written again after it), those of the early hot records between
	// walls too.
	hot(100)
	wall()
	for range 4 {
		hot(350)
		wall()
	}
	produce(&kgo.Record{Key: []byte("k00")}, &kgo.Record{Key: []byte("k01")}) // tombstones
	// A segment that ends below the next one's base: a batch that stays
	// (its x records go: gaps inside it), then one whose records all go,
	// then a wall.
	for j := range 4 {
		produce(rec(fmt.Sprintf("u%d-a", j), 150), rec("x5", 150), rec(fmt.Sprintf("u%d-b", j), 150), rec(fmt.Sprintf("u%d-c", j), 150), rec("x6", 150))
		produce(rec("x0", 150), rec("x1", 150), rec("x2", 150), rec("x3", 150), rec("x4", 150))
		wall()
	}
	produce(rec("x0", 150), rec("x1", 150), rec("x2", 150), rec("x3", 150), rec("x4", 150), rec("x5", 150), rec("x6", 150))
	// Keys written once, enough to seal all of the above.
	for i := 0; i < 100; i += 5 {
		var recs []*kgo.Record
		for j := i; j < i+5; j++ {
			recs = append(recs, rec(fmt.Sprintf("filler%03d", j), 150))
		}
		produce(recs...)
	}
	end := produced

	// compacted reports whether recs read each key once, with its last
	// value.
	compacted := func(recs []keptRecord) (bool, string) {
		seen := map[string]int{}
		for i, r := range recs {
			if i > 0 && r.offset <= recs[i-1].offset {
				return false, fmt.Sprintf("offset %d after %d", r.offset, recs[i-1].offset)
			}
			seen[string(r.key)]++
			if w := last[string(r.key)]; !bytes.Equal(r.value, w) || r.null != (w == nil) {
				return false, fmt.Sprintf("key %s read at %d is not its last value", r.key, r.offset)
			}
		}
		for k := range last {
			if seen[k] != 1 {
				return false, fmt.Sprintf("key %s read %d times", k, seen[k])
			}
		}
		return true, ""
	}
	brokertest.WaitFor(t, 30*time.Second, "the log cleaner to compact the topic", func() (bool, string) {
		return compacted(keptRecords(consumeCompacted(t, b, topic, end)))
	})

	// What the compacted log holds: its records, its batches, its
	// segments (their base offsets), once the cleaner has nothing left to
	// clean (no pass changes them since).
	type layout struct {
		recs    []keptRecord
		batches []recordbatch.Batch
		bases   []int64
	}
	read := func() layout {
		bases, _ := localLog(t, b, topic)
		slices.Sort(bases)
		batches, err := fetchBatches(t, raw, topic, 0, end)
		if err != nil {
			t.Fatalf("reading the compacted log: %v", err)
		}
		return layout{keptRecords(consumeCompacted(t, b, topic, end)), batches, bases}
	}
	sameBatches := func(x, y []recordbatch.Batch) bool {
		return slices.EqualFunc(x, y, func(a, b recordbatch.Batch) bool { return bytes.Equal(a, b) })
	}
	sameLayout := func(x, y layout) bool {
		return slices.EqualFunc(x.recs, y.recs, func(a, b keptRecord) bool {
			return a.offset == b.offset && bytes.Equal(a.key, b.key) && bytes.Equal(a.value, b.value) && a.null == b.null && a.ts == b.ts
		}) && sameBatches(x.batches, y.batches) && slices.Equal(x.bases, y.bases)
	}
	var want layout
	brokertest.WaitFor(t, 30*time.Second, "the log cleaner done", func() (bool, string) {
		if dirty := gather(t, b.Registry).sum("shale_log_cleaner_max_dirty_ratio"); dirty != 0 {
			return false, fmt.Sprintf("max dirty ratio %v", dirty)
		}
		prev := read()
		time.Sleep(200 * time.Millisecond)
		want = read()
		return sameLayout(prev, want), "the log changed between two reads"
	})
	if ok, why := compacted(want.recs); !ok {
		t.Fatalf("the compacted log, read again: %s", why)
	}
	if got := listOffset(t, raw, topic, -2); got != 0 || want.bases[0] != 0 {
		t.Fatalf("the compacted log starts at %d, its first segment at %d, want 0", got, want.bases[0])
	}

	// The segments that hold batches ([base, next); the last is active),
	// the empty ones, and the gaps: inside batches, between batches, at
	// segment ends.
	type span struct{ base, next int64 }
	var full []span
	var empty []int64
	var inside, between, segEnd int
	for i, base := range want.bases[:len(want.bases)-1] {
		next := want.bases[i+1]
		var in []recordbatch.Batch
		for _, bt := range want.batches {
			if bt.BaseOffset() >= base && bt.BaseOffset() < next {
				in = append(in, bt)
			}
		}
		if len(in) == 0 {
			empty = append(empty, base)
			continue
		}
		full = append(full, span{base, next})
		if in[len(in)-1].LastOffset()+1 < next {
			segEnd++
		}
	}
	for i, bt := range want.batches {
		if int64(bt.RecordCount()) < int64(bt.LastOffsetDelta())+1 {
			inside++
		}
		if i > 0 && bt.BaseOffset() > want.batches[i-1].LastOffset()+1 {
			between++
		}
	}
	t.Logf("compacted log: %d records in %d batches from offset %d, segments %v (empty: %v); gaps: %d inside batches, %d between batches, %d at segment ends",
		len(want.recs), len(want.batches), want.batches[0].BaseOffset(), want.bases, empty, inside, between, segEnd)
	if inside == 0 || between == 0 || segEnd < 4 || len(empty) == 0 || empty[0] != 0 {
		t.Fatalf("the compacted log lacks a kind of gap: %d inside batches, %d between, %d at segment ends, empty segments %v", inside, between, segEnd, empty)
	}

	// cleanup.policy=delete, keeping everything (retention.ms=-1): the
	// cleaner leaves the topic alone, and its remote storage, enabled by
	// default on a broker with an object store, turns on (the log reopens
	// with its tier).
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"cleanup.policy": str("delete"), "retention.ms": str("-1")}); err != nil {
		t.Fatalf("alter to delete: %v %s", err, msg)
	}
	if c := describedConfig(t, adm, topic, "remote.storage.enable"); c.MaybeValue() != "true" {
		t.Fatalf("remote.storage.enable of the topic turned to delete: %+v", c)
	}
	waitFor(t, "the partition reopened tiered", 10*time.Second, func() bool {
		st := b.B.TierStatus(topic)
		return len(st) == 1 && st[0].Tiered && st[0].Leader && !st[0].Loading
	})
	// Local retention of one byte: every uploaded segment leaves the disk.
	// More records roll the segment the compacted log ends in.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"local.retention.bytes": str("1")}); err != nil {
		t.Fatalf("alter local.retention.bytes: %v %s", err, msg)
	}
	var later []*kgo.Record
	for i := 0; i < 60; i += 5 {
		var recs []*kgo.Record
		for j := i; j < i+5; j++ {
			recs = append(recs, rec(fmt.Sprintf("later%03d", j), 150))
		}
		produce(recs...)
		later = append(later, recs...)
	}
	brokertest.WaitFor(t, 30*time.Second, "uploads and local retention past the compacted log", func() (bool, string) {
		st := b.B.TierStatus(topic)[0]
		bases, _ := localLog(t, b, topic)
		return st.LocalStartOffset >= end && st.RemoteEndOffset >= end && len(bases) > 0 && slices.Min(bases) >= end,
			fmt.Sprintf("local log from %d (segments %v), remote log [%d, %d), upload lag %d segments", st.LocalStartOffset, bases, st.RemoteStartOffset, st.RemoteEndOffset, st.UploadLagSegments)
	})

	// The remote log: the compacted segments that hold batches, as they
	// were.
	var remote []span
	m := remoteManifest(t, bucket, adm, topic)
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	if err := tiering.WalkSegments(testCtx(t), tiering.BucketSpills{Bucket: bucket}, part, m, 0, nil, func(s tiering.Segment) bool {
		remote = append(remote, span{s.BaseOffset, s.NextOffset})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(remote) < len(full) || !slices.Equal(remote[:len(full)], full) {
		t.Fatalf("the compacted segments holding batches were %v, the remote log holds %v", full, remote)
	}

	// Read back from the object store: the same records, then the later
	// ones, with fetches of every size (small ones ask again inside the
	// gaps), and the same batches, byte for byte.
	wantAll := slices.Clone(want.recs)
	for i, r := range later {
		wantAll = append(wantAll, keptRecord{offset: end + int64(i), key: r.Key, value: r.Value, ts: r.Timestamp.UnixMilli()})
	}
	for _, c := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"default fetches", nil},
		{"fetches of one batch", []kgo.Opt{kgo.FetchMaxPartitionBytes(1)}},
		{"fetches of 3000 bytes", []kgo.Opt{kgo.FetchMaxPartitionBytes(3000), kgo.FetchMaxBytes(3000)}},
	} {
		got, err := consumeTo(t, b, topic, end+int64(len(later)), c.opts...)
		if err != nil {
			t.Errorf("a consumer from the start, %s: %v", c.name, err)
		} else if diff := diffRecords(keptRecords(got), wantAll); diff != "" {
			t.Errorf("a consumer from the start, %s: %s", c.name, diff)
		}
	}
	got, err := fetchBatches(t, raw, topic, listOffset(t, raw, topic, -2), end)
	if err != nil {
		t.Errorf("raw fetches from the log start, after %d of %d batches: %v", len(got), len(want.batches), err)
	} else if !sameBatches(got, want.batches) {
		i := 0
		for i < min(len(got), len(want.batches)) && bytes.Equal(got[i], want.batches[i]) {
			i++
		}
		if i < min(len(got), len(want.batches)) {
			t.Errorf("remote batch %d at %d (last %d, %d records) differs from the local one at %d (last %d, %d records)", i,
				got[i].BaseOffset(), got[i].LastOffset(), got[i].RecordCount(), want.batches[i].BaseOffset(), want.batches[i].LastOffset(), want.batches[i].RecordCount())
		} else {
			t.Errorf("%d remote batches, %d local ones", len(got), len(want.batches))
		}
	}
	if n := gather(t, b.Registry).sum("shale_log_cleaner_passes_total", "result=failed"); n != 0 {
		t.Fatalf("%v failed compaction passes", n)
	}

	// Nothing kept is lost: the log starts at or below the first batch
	// compaction kept, and a fetch at its start reads that batch. (It may
	// start past offsets that held no record: the segments compaction
	// emptied are not uploaded, so the remote log begins at the first
	// that holds a batch, where Kafka's would begin at 0.)
	first := want.batches[0].BaseOffset()
	start := listOffset(t, raw, topic, -2)
	if start > first {
		t.Fatalf("the log starts at %d once tiered, past the first batch compaction kept, at %d", start, first)
	}
	head, err := fetchBatches(t, raw, topic, start, first+1)
	if err != nil || len(head) == 0 || head[0].BaseOffset() != first {
		t.Fatalf("a fetch at the log start %d: %d batches, %v; want the batch at %d", start, len(head), err, first)
	}
}
