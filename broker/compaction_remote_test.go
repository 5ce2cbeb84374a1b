package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// TestTieredCompactedTopic: a compacted topic with remote.storage.enable=true
// tiers its segments as any topic does, and its leader compacts the
// remote log: once local retention has moved the old segments to the
// bucket alone, consumers from the start (franz-go and kcat) read each key
// once, with its last value (a tombstone, within delete.retention.ms,
// as a null value), at its original offset; the remote log holds fewer
// bytes than were uploaded; the objects the compaction replaced are
// deleted, leaving none the manifest does not name; and the cleaner note
// says where the next pass starts, as the tier status does. A restart of
// the broker (a new leader term) changes none of it, and records produced
// since are compacted in turn.
func TestTieredCompactedTopic(t *testing.T) {
	bucket := objectstore.NewMem()
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			ReplacedDeleteDelay: 100 * time.Millisecond}
		c.LogCleanerBackoff = 50 * time.Millisecond
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	const topic = "tiered-compacted"
	adm := b.Admin()
	str := kadm.StringPtr
	createTopic(t, adm, topic, 1, map[string]*string{
		"cleanup.policy":            str("compact"),
		"remote.storage.enable":     str("true"),
		"segment.bytes":             str("4096"),
		"local.retention.bytes":     str("1"),
		"min.cleanable.dirty.ratio": str("0.01"),
		"file.delete.delay.ms":      str("1"),
	})
	waitFor(t, "the partition open, tiered", 10*time.Second, func() bool {
		st := b.B.TierStatus(topic)
		return len(st) == 1 && st[0].Tiered && st[0].Leader && !st[0].Loading
	})
	cl := b.Client(kgo.DefaultProduceTopic(topic))
	last := map[string]string{}
	var produced int64
	produce := func(key, value string, tombstone bool) {
		t.Helper()
		r := &kgo.Record{Key: []byte(key)}
		if !tombstone {
			r.Value = []byte(value)
		}
		if err := cl.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		last[key] = value
		if tombstone {
			last[key] = "<tombstone>"
		}
		produced++
	}
	// round writes 40 keys n times over, then unique fillers that seal
	// the segments holding them.
	round := func(name string, n int) {
		for i := 0; i < n; i++ {
			for k := 0; k < 40; k++ {
				produce(fmt.Sprintf("k%02d", k), fmt.Sprintf("%s-%d-%s", name, i, strings.Repeat("v", 60)), false)
			}
		}
		produce("k07", "", true)
		for i := 0; i < 80; i++ {
			produce(fmt.Sprintf("filler-%s-%03d", name, i), strings.Repeat("f", 60), false)
		}
	}
	round("a", 6)
	end := produced

	// check reads the topic from the start: each key once, with its last
	// value, offsets ascending.
	check := func(end int64) (bool, string) {
		recs, err := consumeTo(t, b, topic, end)
		if err != nil {
			return false, err.Error()
		}
		seen := map[string]int{}
		for _, r := range recs {
			seen[string(r.Key)]++
			v := string(r.Value)
			if r.Value == nil {
				v = "<tombstone>"
			}
			if last[string(r.Key)] != v {
				return false, fmt.Sprintf("key %s at offset %d: %.20q, not its last value %.20q", r.Key, r.Offset, v, last[string(r.Key)])
			}
		}
		for k := range last {
			if seen[k] != 1 {
				return false, fmt.Sprintf("key %s read %d times in %d records", k, seen[k], len(recs))
			}
		}
		return true, ""
	}
	brokertest.WaitFor(t, 60*time.Second, "the remote log compacted and the local log past it", func() (bool, string) {
		st := b.B.TierStatus(topic)[0]
		if st.LocalStartOffset < end-80 {
			return false, fmt.Sprintf("local log from %d", st.LocalStartOffset)
		}
		return check(end)
	})

	// kcat (librdkafka) reads the same from the bucket, and so do fetches
	// of one batch at a time (each asks again inside the gaps compaction
	// left in the remote segments).
	requireKcatReadsLast(t, b, topic, last)
	whole, err := consumeTo(t, b, topic, end)
	if err != nil {
		t.Fatal(err)
	}
	small, err := consumeTo(t, b, topic, end, kgo.FetchMaxPartitionBytes(1))
	if err != nil {
		t.Fatalf("fetches of one batch: %v", err)
	}
	if diff := diffRecords(keptRecords(small), keptRecords(whole)); diff != "" {
		t.Fatalf("fetches of one batch: %s", diff)
	}

	// The bucket: fewer bytes than were produced, every object named by
	// the manifest once the replaced ones are deleted, and the cleaner
	// note.
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	layout := tiering.Layout{}
	brokertest.WaitFor(t, 30*time.Second, "the replaced objects deleted", func() (bool, string) {
		m := remoteManifest(t, bucket, adm, topic)
		named := map[string]bool{}
		if err := tiering.WalkSegments(testCtx(t), tiering.BucketSpills{Bucket: bucket}, part, m, 0, nil, func(s tiering.Segment) bool {
			named[layout.SegmentKey(part, s.BaseOffset, s.ID)] = true
			named[layout.CompanionKey(part, s.BaseOffset, s.ID)] = true
			return true
		}); err != nil {
			return false, err.Error()
		}
		var unnamed []string
		err := bucket.List(testCtx(t), layout.PartitionPrefix(part), func(a objectstore.Attrs) error {
			if (strings.HasSuffix(a.Key, ".log") || strings.HasSuffix(a.Key, ".indexes")) && !named[a.Key] {
				unnamed = append(unnamed, a.Key)
			}
			return nil
		})
		if err != nil {
			return false, err.Error()
		}
		return len(unnamed) == 0, fmt.Sprintf("objects no manifest entry names: %v", unnamed)
	})
	m := remoteManifest(t, bucket, adm, topic)
	if produced := int64(6*40+81) * 70; m.Bytes() >= produced {
		t.Errorf("the remote log holds %d bytes after compaction, %d were produced", m.Bytes(), produced)
	}
	note, err := tiering.ReadCleanerNote(testCtx(t), bucket, layout, part)
	if err != nil || note == nil || note.FirstDirty <= 0 || note.FirstDirty > m.End() {
		t.Fatalf("cleaner note %+v (%v), remote log ends at %d", note, err, m.End())
	}
	t.Logf("remote log: %d segments, %d bytes, [%d, %d); cleaner note: first dirty %d", m.SegmentCount(), m.Bytes(), m.Start(), m.End(), note.FirstDirty)
	// The leader reports where its passes left off (`shale tier status`).
	brokertest.WaitFor(t, 10*time.Second, "the tier status to report the cleaner note", func() (bool, string) {
		st := b.B.TierStatus(topic)[0]
		return st.RemoteCleanedTo == note.FirstDirty && !st.RemoteCleanedAt.IsZero(), fmt.Sprintf("status: cleaned to %d at %v", st.RemoteCleanedTo, st.RemoteCleanedAt)
	})

	// A new leader term, then a second round: compacted in turn.
	b.Restart()
	waitFor(t, "the partition open again, tiered", 20*time.Second, func() bool {
		st := b.B.TierStatus(topic)
		return len(st) == 1 && st[0].Tiered && st[0].Leader && !st[0].Loading
	})
	cl = b.Client(kgo.DefaultProduceTopic(topic))
	round("b", 3)
	end = produced
	brokertest.WaitFor(t, 60*time.Second, "the second round compacted", func() (bool, string) {
		st := b.B.TierStatus(topic)[0]
		if st.LocalStartOffset < end-80 {
			return false, fmt.Sprintf("local log from %d", st.LocalStartOffset)
		}
		return check(end)
	})
}
