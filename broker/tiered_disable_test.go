package broker_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// alterTopicConfigs applies configs to topic in one
// IncrementalAlterConfigs (a nil value deletes the config, back to its
// default), and returns the error the broker answered and its message.
func alterTopicConfigs(t *testing.T, adm *kadm.Client, topic string, configs map[string]*string) (string, error) {
	t.Helper()
	var ops []kadm.AlterConfig
	for name, v := range configs {
		op := kadm.AlterConfig{Op: kadm.SetConfig, Name: name, Value: v}
		if v == nil {
			op.Op = kadm.DeleteConfig
		}
		ops = append(ops, op)
	}
	rs, err := adm.AlterTopicConfigs(testCtx(t), ops, topic)
	if err != nil {
		t.Fatal(err)
	}
	return rs[0].ErrMessage, rs[0].Err
}

// TestRemoteLogCopyDisable (KIP-950): with remote.log.copy.disable a tiered
// topic uploads nothing more, and what the bucket holds stays readable;
// its local log keeps the total retention and, once that deletes segments
// the bucket never got, the log starts past the remote log, which is
// deleted. Turning copying on again uploads from there. A local retention
// set on the topic other than the total is refused with copying disabled,
// as Kafka refuses it.
func TestRemoteLogCopyDisable(t *testing.T) {
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	ctx := testCtx(t)
	adm := b.Admin()
	str := func(s string) *string { return &s }
	const topic = "readonly"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(b, topic)
	produceTieredValues(t, cl, 0, 400, 50)
	waitFor(t, "uploads", 30*time.Second, func() bool { return remoteManifest(t, bucket, adm, topic).End() > 250 })

	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.copy.disable": str("true")}); !errors.Is(err, kerr.InvalidConfig) || !strings.Contains(msg, "local.retention.bytes") {
		t.Fatalf("copy disabled beside local.retention.bytes=1: %v (%s), want INVALID_CONFIG naming local.retention.bytes", err, msg)
	}
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.copy.disable": str("true"), "local.retention.bytes": nil}); err != nil {
		t.Fatalf("disabling copy: %v (%s)", err, msg)
	}
	// What was uploading when copying stopped commits; nothing after.
	time.Sleep(300 * time.Millisecond)
	end := remoteManifest(t, bucket, adm, topic).End()
	objects := len(listBucket(t, bucket, ".log"))
	produceTieredValues(t, cl, 400, 800, 50)
	time.Sleep(500 * time.Millisecond) // ten upload intervals, five retention checks
	if m := remoteManifest(t, bucket, adm, topic); m.End() != end || len(listBucket(t, bucket, ".log")) != objects {
		t.Fatalf("with copying disabled the manifest moved from end %d to %d, segment objects from %d to %d", end, m.End(), objects, len(listBucket(t, bucket, ".log")))
	}
	// The local log keeps all the bucket lacks. (How many segments that
	// is depends on how far uploads and local retention had come when
	// copying stopped: they may have caught up to the active segment.)
	if localStart := listOffset(t, cl, topic, -4); localStart > end {
		t.Fatalf("the local log starts at %d, past the remote log's end %d: the local log should keep what is not uploaded", localStart, end)
	}
	requireTieredRecords(ctx, t, b, topic, 0, 800)
	if st := b.B.TierStatus(topic); len(st) != 1 || !st[0].UploadsStopped || st[0].Deleting {
		t.Fatalf("tier status %+v: want uploads stopped", st)
	}
	// ListOffsets' earliest pending upload (KIP-1023) stays where the
	// uploads stopped.
	if got := listOffset(t, cl, topic, -6); got != end {
		t.Fatalf("earliest pending upload %d, want the remote log's end %d", got, end)
	}

	// The total retention deletes local segments the bucket lacks: the
	// remote log, older, goes too.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"retention.bytes": str("120000")}); err != nil {
		t.Fatalf("retention.bytes: %v (%s)", err, msg)
	}
	var start int64
	waitFor(t, "the remote log to go once local retention passed it", 30*time.Second, func() bool {
		m := remoteManifest(t, bucket, adm, topic)
		start = listOffset(t, cl, topic, -2)
		return m.SegmentCount() == 0 && len(listBucket(t, bucket, ".log")) == 0 && start > end && start == listOffset(t, cl, topic, -4)
	})
	requireTieredRecords(ctx, t, b, topic, int(start), 800-int(start))

	// Copying on again: uploads go on from where the local log is.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.copy.disable": nil, "retention.bytes": nil}); err != nil {
		t.Fatalf("enabling copy: %v (%s)", err, msg)
	}
	produceTieredValues(t, cl, 800, 1000, 50)
	waitFor(t, "uploads to go on", 30*time.Second, func() bool { return remoteManifest(t, bucket, adm, topic).End() > 800 })
	if got := listOffset(t, cl, topic, -2); got != start {
		t.Fatalf("log start %d after copying resumed, want %d", got, start)
	}
	requireTieredRecords(ctx, t, b, topic, int(start), 1000-int(start))
}

// TestRemoteStorageDisableDeletesTheRemoteLog (KIP-950): turning
// remote.storage.enable off is refused unless remote.log.delete.on.disable
// is set with it, as Kafka refuses it. With it, the leader empties the
// manifest and deletes every object of the partition (an orphan no
// manifest named too, once the orphan grace passed), leaves the manifest
// empty as if never archived, marks the partition unarchived, and every
// replica goes on without tiered storage: the log starts at the local
// log's start, produce and fetch go on. Turned on again, the topic uploads
// from there.
func TestRemoteStorageDisableDeletesTheRemoteLog(t *testing.T) {
	bucket := objectstore.NewMem()
	c := startSweepingCluster(t, bucket)
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	const topic = "untiered"
	// The local logs keep about the last 200 kB, uploaded or not: the
	// first of them are in the bucket too, and stay local when it goes.
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("200000"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	produceTieredValues(t, tieredProducer(c, topic), 0, 1000, 50)
	waitFor(t, "uploads past offset 600, and local retention past offset 0", 30*time.Second, func() bool {
		return remoteManifest(t, bucket, adm, topic).End() > 600 && listOffset(t, c.Client(), topic, -4) > 0
	})
	waitReplicated(t, c, topic, 1000)
	store := metadata.NewStore(c.Etcd().Client(), "")
	waitArchiving(t, c.Etcd().Client(), topic)

	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("false")}); !errors.Is(err, kerr.InvalidConfig) || !strings.Contains(msg, "remote.log.delete.on.disable=true") {
		t.Fatalf("turning remote storage off alone: %v (%s), want INVALID_CONFIG naming remote.log.delete.on.disable", err, msg)
	}

	// An object no manifest names, as a failed upload leaves: young, so
	// only the drain's second sweep, past the grace, may delete it.
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	var id [16]byte
	rand.Read(id[:])
	orphan := tiering.Layout{}.SegmentKey(part, 2000, id)
	if _, err := bucket.Put(ctx, orphan, bytes.NewReader([]byte("failed upload")), 13, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	end := remoteManifest(t, bucket, adm, topic).End()

	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("false"), "remote.log.delete.on.disable": str("true")}); err != nil {
		t.Fatalf("turning remote storage off: %v (%s)", err, msg)
	}
	prefix := tiering.Layout{}.PartitionPrefix(part)
	brokertest.WaitFor(t, 30*time.Second, "the remote log deleted and the partition unarchived", func() (bool, string) {
		var left []string
		for _, k := range listBucket(t, bucket, "") {
			if strings.HasPrefix(k, prefix) && k != prefix+"manifest" {
				left = append(left, k)
			}
		}
		p, err := store.Partition(ctx, topic, 0)
		m := remoteManifest(t, bucket, adm, topic)
		return len(left) == 0 && err == nil && p.Unarchived && m.SegmentCount() == 0 && len(m.Spills) == 0,
			fmt.Sprintf("objects left %v, unarchived %v (%v), manifest of %d segments from %d", left, p.Unarchived, err, m.SegmentCount(), m.LogStartOffset)
	})
	if m := remoteManifest(t, bucket, adm, topic); m.LogStartOffset != 0 {
		t.Fatalf("the emptied manifest's log start is %d, want 0: as if never archived", m.LogStartOffset)
	}

	cl := tieredProducer(c, topic)
	start := listOffset(t, cl, topic, -2)
	if start == 0 || start >= end || start != listOffset(t, cl, topic, -4) {
		t.Fatalf("log start %d (local %d): want the local log's start, which kept records the bucket had too (below %d)", start, listOffset(t, cl, topic, -4), end)
	}
	if got := listOffset(t, cl, topic, -6); got != -1 {
		t.Fatalf("earliest pending upload %d of a topic that does not tier, want -1", got)
	}
	produceTieredValues(t, cl, 1000, 1100, 50)
	requireTieredRecords(ctx, t, c, topic, int(start), 1100-int(start))
	time.Sleep(300 * time.Millisecond)
	if n := len(listBucket(t, bucket, ".log")); n != 0 {
		t.Fatalf("%d segment objects in the bucket with remote storage off", n)
	}

	// On again: the partition is archived again, and uploads go on from
	// the local log.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("true")}); err != nil {
		t.Fatalf("turning remote storage on again: %v (%s)", err, msg)
	}
	produceTieredValues(t, cl, 1100, 1400, 50)
	waitFor(t, "uploads after remote storage is on again", 30*time.Second, func() bool {
		return remoteManifest(t, bucket, adm, topic).End() > 1100
	})
	if got, m := listOffset(t, cl, topic, -6), remoteManifest(t, bucket, adm, topic); got < m.End() || got > 1400 {
		t.Fatalf("earliest pending upload %d, want from the remote end %d to the log end", got, m.End())
	}
	waitArchiving(t, c.Etcd().Client(), topic)
	requireTieredRecords(ctx, t, c, topic, int(start), 1400-int(start))
}

// TestTurningRemoteStorageOffFinishesUnderANewLeader: the leader empties
// the manifest but the store refuses every delete, so the partition's
// objects stay and it is not marked unarchived; the leader stops, and the
// next one, its term a drain too, deletes what no manifest names and
// finishes. Meanwhile every record from the local log's start reads back
// and produce goes on.
func TestTurningRemoteStorageOffFinishesUnderANewLeader(t *testing.T) {
	bucket := faulty.New(objectstore.NewMem())
	c := startSweepingCluster(t, bucket)
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	const topic = "halfway"
	adm := produceTieredPast600(t, c, bucket, topic, 3)
	waitReplicated(t, c, topic, 1000)
	store := metadata.NewStore(c.Etcd().Client(), "")
	waitArchiving(t, c.Etcd().Client(), topic)
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	prefix := tiering.Layout{}.PartitionPrefix(tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0})
	left := func() []string {
		var out []string
		for _, k := range listBucket(t, bucket, "") {
			if strings.HasPrefix(k, prefix) && k != prefix+"manifest" {
				out = append(out, k)
			}
		}
		return out
	}

	noDeletes := bucket.Add(faulty.Rule{Op: faulty.Delete, Fail: true})
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("false"), "remote.log.delete.on.disable": str("true")}); err != nil {
		t.Fatalf("turning remote storage off: %v (%s)", err, msg)
	}
	brokertest.WaitFor(t, 30*time.Second, "the manifest emptied and deletes refused", func() (bool, string) {
		m := remoteManifest(t, bucket, adm, topic)
		return m.SegmentCount() == 0 && noDeletes.Fired() > 0, fmt.Sprintf("manifest of %d segments, deletes refused %d", m.SegmentCount(), noDeletes.Fired())
	})
	time.Sleep(time.Second) // past the orphan grace: the drain waits on, its sweeps failing
	if p, err := store.Partition(ctx, topic, 0); err != nil || p.Unarchived || len(left()) == 0 {
		t.Fatalf("with deletes refused: unarchived %v (%v), objects left %d", p.Unarchived, err, len(left()))
	}
	for id, nd := range c.Brokers {
		if st := nd.B.TierStatus(topic); len(st) != 1 || !st[0].Deleting {
			t.Fatalf("broker %d's tier status %+v: want the remote log being deleted", id, st)
		}
	}
	// Dropping remote.log.delete.on.disable now would leave the drain
	// half done: refused.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.delete.on.disable": nil}); !errors.Is(err, kerr.InvalidConfig) || !strings.Contains(msg, "being deleted") {
		t.Fatalf("dropping remote.log.delete.on.disable mid-drain: %v (%s), want INVALID_CONFIG", err, msg)
	}
	cl := tieredProducer(c, topic)
	start := listOffset(t, cl, topic, -2)
	if start != listOffset(t, cl, topic, -4) {
		t.Fatalf("log start %d, local %d: with the manifest emptied the log starts at the local log", start, listOffset(t, cl, topic, -4))
	}
	produceTieredValues(t, cl, 1000, 1050, 50)
	requireTieredRecords(ctx, t, c, topic, int(start), 1050-int(start))

	leader, epoch, _ := storedState(t, c, topic)
	noDeletes.Remove()
	c.Stop(leader)
	brokertest.WaitFor(t, 30*time.Second, "the next leader finishing the deletion", func() (bool, string) {
		p, err := store.Partition(ctx, topic, 0)
		return err == nil && p.Unarchived && p.LeaderEpoch > epoch && len(left()) == 0,
			fmt.Sprintf("leader %d epoch %d unarchived %v (%v), objects left %v", p.Leader, p.LeaderEpoch, p.Unarchived, err, left())
	})
	c.Start(leader)
	produceTieredValues(t, cl, 1050, 1100, 50)
	requireTieredRecords(ctx, t, c, topic, int(start), 1100-int(start))
	// Done: the config may go.
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.delete.on.disable": nil}); err != nil {
		t.Fatalf("dropping remote.log.delete.on.disable once the remote log is gone: %v (%s)", err, msg)
	}
}

// TestTurningOffATopicThatNeverUploadedEndsAtOnce: a partition whose
// record predates the unarchived mark (it lacks it, as every record
// written before the mark existed does) of a topic that never tiered is
// left alone while its remote storage is merely off; asked to delete its
// remote log (remote.log.delete.on.disable), its leader finds no manifest,
// marks it unarchived and goes on without tiered storage, rather than
// waiting forever for a manifest an archived partition must have.
func TestTurningOffATopicThatNeverUploadedEndsAtOnce(t *testing.T) {
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	ctx := testCtx(t)
	adm := b.Admin()
	str := func(s string) *string { return &s }
	const topic = "old"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"remote.storage.enable": str("false")}, topic); err != nil {
		t.Fatal(err)
	}
	store := metadata.NewStore(b.Etcd(), "")
	p, err := store.Partition(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Unarchived = false
	if _, _, err := store.UpdatePartition(ctx, p, p.PartitionEpoch); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(b, topic)
	produceTieredValues(t, cl, 0, 100, 50)
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.log.delete.on.disable": str("true")}); err != nil {
		t.Fatalf("%v (%s)", err, msg)
	}
	waitFor(t, "the partition marked unarchived", 30*time.Second, func() bool {
		p, err := store.Partition(ctx, topic, 0)
		return err == nil && p.Unarchived
	})
	produceTieredValues(t, cl, 100, 200, 50)
	requireTieredRecords(ctx, t, b, topic, 0, 200)
	if n := len(listBucket(t, bucket, ".log")); n != 0 {
		t.Fatalf("%d segment objects for a topic that never tiered", n)
	}
}

// TestTurningRemoteStorageOnAgainDuringTheDrain: remote storage is turned
// off, and on again while the drain waits out its orphan grace (an hour
// here). The manifest, its entries gone, starts over at the local log's
// start, uploads go on from there, and every record the local log kept
// reads back: none is lost between the bucket's copies going and the
// local retention coming back.
func TestTurningRemoteStorageOnAgainDuringTheDrain(t *testing.T) {
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	ctx := testCtx(t)
	adm := b.Admin()
	str := func(s string) *string { return &s }
	const topic = "onagain"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("200000"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(b, topic)
	produceTieredValues(t, cl, 0, 1000, 50)
	waitFor(t, "uploads past offset 600, and local retention past offset 0", 30*time.Second, func() bool {
		return remoteManifest(t, bucket, adm, topic).End() > 600 && listOffset(t, cl, topic, -4) > 0
	})
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("false"), "remote.log.delete.on.disable": str("true")}); err != nil {
		t.Fatalf("turning remote storage off: %v (%s)", err, msg)
	}
	waitFor(t, "the manifest's entries gone", 30*time.Second, func() bool {
		m := remoteManifest(t, bucket, adm, topic)
		return m.SegmentCount() == 0 && len(listBucket(t, bucket, ".log")) == 0
	})
	// The log starts at the local log's start, once a local retention
	// pass begun before remote storage was turned off has ended (it
	// publishes its start after writing the checkpoint).
	var start int64
	waitFor(t, "the log start at the local log's", 10*time.Second, func() bool {
		start = listOffset(t, cl, topic, -2)
		return start > 0 && start == listOffset(t, cl, topic, -4)
	})
	if msg, err := alterTopicConfigs(t, adm, topic, map[string]*string{"remote.storage.enable": str("true")}); err != nil {
		t.Fatalf("turning remote storage on again: %v (%s)", err, msg)
	}
	produceTieredValues(t, cl, 1000, 1500, 50)
	waitFor(t, "uploads from the local log's start, and local retention going on", 30*time.Second, func() bool {
		m := remoteManifest(t, bucket, adm, topic)
		return m.Start() == start && m.End() > 1200 && listOffset(t, cl, topic, -4) > start
	})
	if got := listOffset(t, cl, topic, -2); got != start {
		t.Fatalf("log start %d, want %d", got, start)
	}
	requireTieredRecords(ctx, t, b, topic, int(start), 1500-int(start))
}
