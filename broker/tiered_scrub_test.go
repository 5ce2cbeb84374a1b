package broker_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// scrubbedTopic starts a broker tiering to a memory bucket with the
// remote scrub configured by scrub, and fills topic (one partition) until
// at least segments of it are uploaded. It returns the broker, the bucket,
// the partition and a reader of its scrub note (nil: none).
func scrubbedTopic(t *testing.T, topic string, segments int, scrub func(*broker.Config)) (*brokertest.Broker, objectstore.Bucket, tiering.Partition, func() *tiering.ScrubNote) {
	t.Helper()
	bucket := objectstore.NewMem()
	b := brokertest.StartOn(t, t.TempDir(), nil, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
		scrub(c)
	})
	createTieredTopic(t, b, topic)
	produceTiered(t, b, topic, 1000)
	adm := b.Admin()
	brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d segments uploaded", segments), func() (bool, string) {
		m := remoteManifest(t, bucket, adm, topic)
		return m.SegmentCount() >= segments, fmt.Sprintf("%d segments", m.SegmentCount())
	})
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	note := func() *tiering.ScrubNote {
		n, err := tiering.ReadScrubNote(testCtx(t), bucket, tiering.Layout{}, part)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return b, bucket, part, note
}

// TestTheLeaderScrubsItsRemoteLog: the leader of a tiered partition reads
// its remote segments back (shale_remote_scrubbed_bytes_total) and records
// each complete scrub in the partition's scrub note, with nothing damaged;
// a byte flipped in an uploaded segment under it is found by the next
// scrub (shale_remote_damaged_objects, the note's count), and the
// consumers' reads are not what finds it.
func TestTheLeaderScrubsItsRemoteLog(t *testing.T) {
	const topic = "scrubbedremote"
	b, bucket, part, note := scrubbedTopic(t, topic, 3, func(c *broker.Config) { c.RemoteScrubInterval = 300 * time.Millisecond })
	adm := b.Admin()
	brokertest.WaitFor(t, 30*time.Second, "a complete scrub of the remote log", func() (bool, string) {
		n := note()
		read, _ := gather(t, b.Registry).get("shale_remote_scrubbed_bytes_total", "")
		return n != nil && !n.CompletedAt.IsZero() && n.Next == 0 && read > 0, fmt.Sprintf("note %+v, %v bytes read", n, read)
	})
	if n := note(); n.Damaged != 0 {
		t.Fatalf("a clean remote log's scrub found %d damaged objects", n.Damaged)
	}
	if v, _ := gather(t, b.Registry).get("shale_remote_damaged_objects", ""); v != 0 {
		t.Fatalf("shale_remote_damaged_objects = %v on a clean remote log", v)
	}
	if st := b.B.TierStatus(topic); len(st) != 1 || st[0].RemoteScrubbedAt.IsZero() || st[0].RemoteDamaged != 0 {
		t.Fatalf("tier status after a clean scrub: %+v", st)
	}

	// Flip a byte inside the first batch's records of the first segment.
	m := remoteManifest(t, bucket, adm, topic)
	var first tiering.Segment
	if err := tiering.WalkSegments(testCtx(t), tiering.BucketSpills{Bucket: bucket}, part, m, -1, nil, func(s tiering.Segment) bool {
		first = s
		return false
	}); err != nil {
		t.Fatal(err)
	}
	key := tiering.Layout{}.SegmentKey(part, first.BaseOffset, first.ID)
	data, err := objectstore.ReadAll(testCtx(t), bucket, key, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 0xff
	if _, err := bucket.Put(testCtx(t), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 30*time.Second, "the scrub to find the flipped byte", func() (bool, string) {
		v, _ := gather(t, b.Registry).get("shale_remote_damaged_objects", "")
		n := note()
		return v == 1 && n != nil && n.Damaged == 1, fmt.Sprintf("shale_remote_damaged_objects = %v, note %+v", v, n)
	})
	brokertest.WaitFor(t, 10*time.Second, "the tier status to report the damage", func() (bool, string) {
		st := b.B.TierStatus(topic)
		return len(st) == 1 && st[0].RemoteDamaged == 1, fmt.Sprintf("%+v", st)
	})
}

// TestARemoteScrubGoesOnWhereItsNoteSays: a scrub of the remote log goes a
// step at a time (here about 100 KiB) and records where it is in the
// partition's scrub note; a broker restarted in the middle of it goes on
// from there, the scrub keeping the time it began, rather than starting
// over.
func TestARemoteScrubGoesOnWhereItsNoteSays(t *testing.T) {
	t.Cleanup(broker.SetRemoteScrubStep(100 << 10))
	b, _, _, note := scrubbedTopic(t, "scrubsteps", 8, func(c *broker.Config) {
		// A step every 2 s; a new scrub 2 s after one ends.
		c.RemoteScrubInterval = 2 * time.Second
		c.ScrubBytesPerSecond = 128 << 10 // a step of two 64 KiB segments takes a second
	})
	brokertest.WaitFor(t, 30*time.Second, "a scrub under way", func() (bool, string) {
		n := note()
		return n != nil && n.Next > 0, fmt.Sprintf("note %+v", n)
	})
	b.Stop()
	mid := note()
	if mid.Next == 0 {
		t.Fatalf("the scrub ended before the broker stopped: %+v", mid)
	}
	b.RestartOn(nil)
	brokertest.WaitFor(t, 60*time.Second, "the scrub to end after the restart", func() (bool, string) {
		n := note()
		return n != nil && n.Next == 0 && !n.CompletedAt.IsZero(), fmt.Sprintf("note %+v", n)
	})
	if end := note(); !end.StartedAt.Equal(mid.StartedAt) || end.Damaged != 0 {
		t.Fatalf("the scrub after the restart: %+v; before it: %+v (the same scrub goes on, begun at the same time)", end, mid)
	}
}
