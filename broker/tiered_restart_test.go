package broker_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/vfs"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// produceUploaded creates the tiered topic, produces n records to it, and
// waits until every sealed segment is in the bucket and off the local disk.
func produceUploaded(t *testing.T, b *brokertest.Broker, topic string, n int) {
	t.Helper()
	createTieredTopic(t, b, topic)
	produceTieredValues(t, tieredProducer(b, topic), 0, n, 50)
	cl := b.Client()
	waitFor(t, "the sealed segments uploaded", 30*time.Second, func() bool {
		return localSegments(t, b, topic) == 1 && listOffset(t, cl, topic, -4) > 0
	})
}

// A broker restarted while the object store is down, after a clean
// shutdown or a crash of the machine (what was not fsynced is gone), takes
// acks=all produce at once and serves its local log to consumers, while
// reads below it get a retriable error. Once the store is back, the
// manifest is read, the uploads catch up, and every record reads from
// offset 0, once, in order.
func TestBrokerRestartedWhileTheStoreIsDownTakesProduce(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "clean shutdown"
		if crash {
			name = "machine crash"
		}
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			cfs := newCrashFS(t, brokertest.LogDir(root))
			fb := faulty.New(objectstore.NewMem())
			b := startTieredOn(t, root, cfs, fb)
			const topic, n = "restarted", 600
			cl := b.Client()
			produceUploaded(t, b, topic, n)
			localStart := listOffset(t, cl, topic, -4)

			down := fb.Add(faulty.Rule{Op: faulty.Any, Fail: true})
			if crash {
				if err := cfs.Crash(nil); err != nil {
					t.Fatal(err)
				}
				b.RestartOn(nil)
			} else {
				b.Restart()
			}
			p := tieredProducer(b, topic, kgo.RecordDeliveryTimeout(30*time.Second))
			produceTieredValues(t, p, n, n+300, 50)
			cons := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(localStart)}}),
				kgo.FetchMaxPartitionBytes(30000))
			for next := localStart; next < n+300; {
				fs := cons.PollFetches(testCtx(t))
				if err := testCtx(t).Err(); err != nil {
					t.Fatalf("consumed up to %d of the local log during the outage: %v", next, err)
				}
				for _, r := range fs.Records() {
					if r.Offset != next || !bytes.Equal(r.Value, tieredValue(int(next))) {
						t.Fatalf("record at %d during the outage, want %d", r.Offset, next)
					}
					next++
				}
			}
			cons.Close()
			// A fetch below the local log and ListOffsets earliest need
			// the bucket; the latest offset and the local log's start
			// are the log's.
			_, node, id := partitionMetadata(t, cl, topic)
			requireRetriableReads(t, cl, node, topic, id)
			if got := listOffset(t, cl, topic, -1); got != n+300 {
				t.Fatalf("latest offset during the outage: %d, want %d", got, n+300)
			}
			if got := listOffset(t, cl, topic, -4); got != localStart {
				t.Fatalf("earliest local offset during the outage: %d, want %d", got, localStart)
			}
			if down.Fired() == 0 {
				t.Fatal("the restarted broker never asked the store")
			}

			down.Remove()
			waitFor(t, "the uploads to catch up", 45*time.Second, func() bool {
				return localSegments(t, b, topic) <= 2
			})
			requireTieredRecords(testCtx(t), t, b, topic, 0, n+300)
		})
	}
}

// A leader whose log directory was lost (the metadata kept) must continue
// where the bucket ends: restarted while the store is down, it takes no
// produce (a retriable error, nothing appended) until the store is back,
// then appends at the remote end.
func TestLeaderThatLostItsLogWaitsForTheBucketToProduce(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startTiered(t, fb)
	const topic, n = "lostdisk", 600
	cl := b.Client()
	produceUploaded(t, b, topic, n)
	remoteEnd := listOffset(t, cl, topic, -5) + 1

	loseLogWhileStoreDown(t, b, fb, topic).Remove()
	// (The active segment's records went with the disk.)
	requireContinuesAtRemoteEnd(t, b, topic, remoteEnd)
}

// A store that answers for a while that an archived partition's manifest
// is missing (one starting up, or eventually consistent) is not taken for
// an empty bucket: a leader whose log was lost takes no produce (a
// retriable error) until the manifest reads, then appends at the remote
// end. Taken for empty, its log took produce at offset 0, where the
// bucket holds other records.
func TestAManifestAnsweredMissingIsNotTakenForAnEmptyBucket(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startTiered(t, fb)
	const topic, n = "answeredmissing", 600
	cl := b.Client()
	produceUploaded(t, b, topic, n)
	remoteEnd := listOffset(t, cl, topic, -5) + 1
	_, _, id := partitionMetadata(t, cl, topic)
	key := tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: id, Index: 0})
	missing := loseLogUnder(t, b, fb, topic, faulty.Rule{Op: faulty.Head | faulty.Get, KeyPrefix: key, Fail: true, Err: objectstore.ErrNotFound})
	if missing.Fired() == 0 {
		t.Fatal("the restarted broker never asked for the manifest")
	}
	missing.Remove()
	requireContinuesAtRemoteEnd(t, b, topic, remoteEnd)
}

// A leader whose load of the manifest returned an older version than the
// store holds (a store that served a stale read: eventually consistent,
// or a cache in front of it) takes produce at offsets the bucket holds
// other records at. Its fence, a conditional write, finds the newer
// manifest: the log then moves to the remote end, the records the term
// appended are lost (logged as an error) rather than served at offsets
// where readers get the bucket's, and the offsets go on after the bucket.
func TestAFenceThatFindsANewerManifestMovesTheLogToTheRemoteEnd(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startTiered(t, fb)
	const topic, n = "stalemanifest", 600
	cl := b.Client()
	createTieredTopic(t, b, topic)
	_, _, id := partitionMetadata(t, cl, topic)
	key := tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: id, Index: 0})
	manifestBytes := func() []byte {
		data, err := objectstore.ReadAll(testCtx(t), fb.Inner(), key, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	putManifest := func(data []byte) {
		if _, err := fb.Inner().Put(testCtx(t), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the first fence's manifest", 30*time.Second, func() bool {
		_, err := fb.Inner().Head(testCtx(t), key)
		return err == nil
	})
	empty := manifestBytes()
	produceTieredValues(t, tieredProducer(b, topic), 0, n, 50)
	waitFor(t, "the sealed segments uploaded", 30*time.Second, func() bool {
		return localSegments(t, b, topic) == 1 && listOffset(t, cl, topic, -4) > 0
	})
	remoteEnd := listOffset(t, cl, topic, -5) + 1
	current := manifestBytes()

	// The log is lost and the store serves the first, empty manifest:
	// the restarted leader takes produce at offset 0.
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	var fence *faulty.Fault
	restartWithLostLog(t, b, topic, func() {
		putManifest(empty)
		fence = fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Hold: hold})
	})
	raw := b.Client()
	_, node, id := partitionMetadata(t, raw, topic)
	waitFor(t, "the fence's write", 30*time.Second, func() bool { return fence.Fired() > 0 })
	resp, err := raw.Broker(int(node)).Request(testCtx(t), produceRequest(topic, id, 1, 10*time.Second, "early"))
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]; p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("the produce on the older manifest: error %d at offset %d, want it appended at 0", p.ErrorCode, p.BaseOffset)
	}

	// The store serves the current manifest again; the fence fails its
	// condition and reads it.
	putManifest(current)
	release()
	waitFor(t, "the log moved to the remote end", 30*time.Second, func() bool {
		return listOffset(t, raw, topic, -1) >= remoteEnd
	})
	requireContinuesAtRemoteEnd(t, b, topic, remoteEnd)
}

// The replicated form of the test above: the leader that drops what it
// appended on the older manifest had a follower copy it. Its term ends with
// a raised leader epoch, and the follower, which holds the dropped records
// under the old epoch, cuts them and restarts where the remote log ends:
// once the follower leads, every record reads as the bucket and the
// producers wrote it, none of the dropped ones.
func TestAFollowerCutsWhatALeaderDroppedForANewerManifest(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	c := brokertest.StartCluster(t, 2, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: fb, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
		cfg.ReplicaLagTimeMax = 5 * time.Second
	})
	const topic, n = "dropped-term", 600
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	if _, err := c.Admin().CreateTopic(ctx, 1, 2, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	td, err := c.Admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	key := tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: td[topic].ID, Index: 0})
	manifestBytes := func() []byte {
		data, err := objectstore.ReadAll(ctx, fb.Inner(), key, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	putManifest := func(data []byte) {
		if _, err := fb.Inner().Put(ctx, key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the first fence's manifest", 30*time.Second, func() bool {
		_, err := fb.Inner().Head(ctx, key)
		return err == nil
	})
	empty := manifestBytes()
	produceTieredValues(t, tieredProducer(c, topic), 0, n, 50)
	waitReplicated(t, c, topic, n)
	waitArchiving(t, c.Etcd().Client(), topic)
	leader, _, _ := storedState(t, c, topic)
	follower := 1 - leader
	cl := c.Client()
	brokertest.WaitFor(t, 30*time.Second, "the sealed segments uploaded", func() (bool, string) {
		files, _ := filepath.Glob(filepath.Join(c.Brokers[leader].Dir, topic+"-0", "*.log"))
		local := listOffset(t, cl, topic, -4)
		return len(files) == 1 && local > 0, fmt.Sprintf("%d local segments, local log start %d", len(files), local)
	})
	remoteEnd := listOffset(t, cl, topic, -5) + 1
	current := manifestBytes()
	loseLog := func(id int32) {
		if err := os.RemoveAll(filepath.Join(c.Brokers[id].Dir, topic+"-0")); err != nil {
			t.Fatal(err)
		}
	}

	// Both logs are lost, the follower's first: the leader, the only
	// in-sync replica left, comes back to a store serving an empty
	// manifest and takes produce at offset 0, past the remote end.
	c.Stop(follower)
	brokertest.WaitFor(t, 30*time.Second, "the ISR without the stopped follower", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return l == leader && len(isr) == 1, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	loseLog(follower)
	c.Stop(leader)
	loseLog(leader)
	putManifest(empty)
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	fence := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: key, Hold: hold})
	c.Start(leader)
	var epoch int32
	brokertest.WaitFor(t, 30*time.Second, "the leader back", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		epoch = e
		return l == leader, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	waitFor(t, "the fence's write", 30*time.Second, func() bool { return fence.Fired() > 0 })
	early := int(remoteEnd) + 100
	var recs []*kgo.Record
	for i := range early {
		recs = append(recs, &kgo.Record{Value: []byte(fmt.Sprintf("dropped-%06d", i))})
	}
	res := tieredProducer(c, topic).ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil || res[0].Record.Offset != 0 {
		t.Fatalf("the produce on the empty manifest: %v, first at %d; want it appended at 0", err, res[0].Record.Offset)
	}
	c.Start(follower)
	waitFor(t, "the follower's copy of the records the leader will drop", 30*time.Second, func() bool {
		leo, _, ok := c.Brokers[follower].B.ReplicaOffsets(topic, 0)
		return ok && leo == int64(early)
	})

	// The fence finds the current manifest: the leader drops what it
	// appended, and its term ends.
	putManifest(current)
	release()
	brokertest.WaitFor(t, 30*time.Second, "a raised leader epoch", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return l == leader && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	produceTieredValues(t, tieredProducer(c, topic, kgo.RecordDeliveryTimeout(30*time.Second)), int(remoteEnd), int(remoteEnd)+100, 50)
	waitReplicated(t, c, topic, remoteEnd+100)
	brokertest.WaitFor(t, 30*time.Second, "the follower back in the ISR", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return len(isr) == 2, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	c.Stop(leader)
	brokertest.WaitFor(t, 30*time.Second, "the follower leads", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return l == follower, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	requireTieredRecords(ctx, t, c, topic, 0, int(remoteEnd)+100)
	c.CheckReplicasAgree(t, topic, 0, 1)
}

// A sealed segment is uploaded only once it is on the local disk's stable
// storage: the bucket never holds records a crash of the machine could
// take from the local log, so that a leader restarted after one may take
// produce before it reads its manifest.
func TestASealedSegmentIsUploadedOnlyOnceFsynced(t *testing.T) {
	const topic = "unsynced"
	gfs := &gateFS{FS: vfs.OSFS{}, match: topic + "-0/", syncs: true, every: true}
	bucket := objectstore.NewMem()
	b := startTieredOn(t, t.TempDir(), gfs, bucket)
	createTieredTopic(t, b, topic)
	_, gate := gfs.arm()
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the broker's Close, which fsyncs
	cl := tieredProducer(b, topic, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	produceTieredValues(t, cl, 0, 600, 50)
	if n := localSegments(t, b, topic); n < 3 {
		t.Fatalf("%d local segments: too few sealed", n)
	}
	time.Sleep(time.Second) // many upload intervals
	if keys := listBucket(t, bucket, ".log"); len(keys) > 0 {
		t.Fatalf("uploaded before its fsync ended: %v", keys)
	}
	release()
	waitFor(t, "the uploads once the fsyncs end", 30*time.Second, func() bool {
		return localSegments(t, b, topic) == 1 && len(listBucket(t, bucket, ".log")) > 0
	})
	requireTieredRecords(testCtx(t), t, b, topic, 0, 600)
}

// A tiered topic created while the object store is down takes acks=all
// produce at once, and serves every read from its log (ListOffsets
// earliest included): none of its records is in the bucket, which its
// partition's metadata says (unarchived) until its leader, once the store
// is back, records that it uploads, before the first upload can commit.
// From then on a term whose log lost its records waits for the bucket
// again.
func TestTopicCreatedWhileTheStoreIsDownTakesProduce(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startTiered(t, fb)
	down := fb.Add(faulty.Rule{Op: faulty.Any, Fail: true})
	const topic, n = "born-in-an-outage", 600
	createTieredTopic(t, b, topic)
	produceTieredValues(t, tieredProducer(b, topic, kgo.RecordDeliveryTimeout(30*time.Second)), 0, n, 50)
	requireTieredRecords(testCtx(t), t, b, topic, 0, n)
	cl := b.Client()
	for _, ts := range []int64{-2, -4} {
		if got := listOffset(t, cl, topic, ts); got != 0 {
			t.Fatalf("ListOffsets %d during the outage: %d, want 0", ts, got)
		}
	}
	if got := listOffset(t, cl, topic, -1); got != n {
		t.Fatalf("latest offset during the outage: %d, want %d", got, n)
	}
	store := metadata.NewStore(b.Etcd(), "")
	if p, err := store.Partition(testCtx(t), topic, 0); err != nil || !p.Unarchived {
		t.Fatalf("the partition during the outage: %+v %v; want it unarchived", p, err)
	}
	if down.Fired() == 0 {
		t.Fatal("the leader never asked the store")
	}
	if localSegments(t, b, topic) < 2 {
		t.Fatal("no segment was sealed during the outage")
	}

	down.Remove()
	waitArchiving(t, b.Etcd(), topic)
	waitFor(t, "the sealed segments uploaded", 45*time.Second, func() bool {
		return localSegments(t, b, topic) == 1 && listOffset(t, cl, topic, -4) > 0
	})
	requireTieredRecords(testCtx(t), t, b, topic, 0, n)

	// The log lost, with the store down: the bucket holds records now,
	// so the leader waits to continue where they end.
	loseLogWhileStoreDown(t, b, fb, topic).Remove()
}

// requireContinuesAtRemoteEnd produces 100 records to topic and requires
// the history from the bucket, offsets 0 to remoteEnd, then the new
// records right after it.
func requireContinuesAtRemoteEnd(t *testing.T, b *brokertest.Broker, topic string, remoteEnd int64) {
	t.Helper()
	produceTieredValues(t, tieredProducer(b, topic), int(remoteEnd), int(remoteEnd)+100, 50)
	requireTieredRecords(testCtx(t), t, b, topic, 0, int(remoteEnd)+100)
}

// loseLogWhileStoreDown takes the store down and restarts b with topic's
// log lost (loseLogUnder). It returns the outage's rule.
func loseLogWhileStoreDown(t *testing.T, b *brokertest.Broker, fb *faulty.Bucket, topic string) *faulty.Fault {
	t.Helper()
	return loseLogUnder(t, b, fb, topic, faulty.Rule{Op: faulty.Any, Fail: true})
}

// loseLogUnder adds the store fault r and restarts b with topic's log
// lost (restartWithLostLog): a produce to the leader, which must learn
// where the bucket ends first, gets a retriable error. It returns the
// fault.
func loseLogUnder(t *testing.T, b *brokertest.Broker, fb *faulty.Bucket, topic string, r faulty.Rule) *faulty.Fault {
	t.Helper()
	f := fb.Add(r)
	restartWithLostLog(t, b, topic, nil)
	raw := b.Client()
	_, node, id := partitionMetadata(t, raw, topic)
	resp, err := raw.Broker(int(node)).Request(testCtx(t), produceRequest(topic, id, -1, 300*time.Millisecond, "too early"))
	if err != nil {
		t.Fatal(err)
	}
	requireRetriable(t, "a produce to a leader whose log was lost", resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode)
	return f
}

// restartWithLostLog stops b, removes topic's partition 0 directory (its
// log disk lost, the metadata kept), does meanwhile (when not nil) and
// starts b again.
func restartWithLostLog(t *testing.T, b *brokertest.Broker, topic string, meanwhile func()) {
	t.Helper()
	b.Stop()
	if err := os.RemoveAll(filepath.Join(brokertest.LogDir(b.Dir), topic+"-0")); err != nil {
		t.Fatal(err)
	}
	if meanwhile != nil {
		meanwhile()
	}
	b.RestartOn(nil)
}

// A replica that takes a tiered partition over while the object store is
// down appends before it has read its manifest when its log has lost
// nothing: created by its broker's process with the topic, or opened clean
// after a clean restart. The other in-sync replica follows it: acks=all
// with min.insync.replicas=2 goes on, and the ISR keeps both. Once the
// store is back, every record reads from offset 0 and the three logs
// agree.
func TestReplicasFollowALeaderThatTookOverDuringAStoreOutage(t *testing.T) {
	for _, restarted := range []bool{false, true} {
		name := "running since the topic's creation"
		if restarted {
			name = "restarted cleanly"
		}
		t.Run(name, func(t *testing.T) { takeOverDuringAStoreOutage(t, restarted) })
	}
}

func takeOverDuringAStoreOutage(t *testing.T, restarted bool) {
	fs, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bucket := faulty.New(fs)
	c := startTieredCluster(t, bucket, 5*time.Second)
	const topic = "taken-over"
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	if _, err := c.Admin().CreateTopic(ctx, 1, 3, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"),
		"file.delete.delay.ms": str("1"), "min.insync.replicas": str("2"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		t.Helper()
		produceTieredValues(t, tieredProducer(c, topic, kgo.RecordDeliveryTimeout(30*time.Second)), from, to, 50)
	}
	produce(0, 600)
	waitReplicated(t, c, topic, 600)
	waitArchiving(t, c.Etcd().Client(), topic)
	if restarted {
		// Each broker restarted cleanly, so that each log opens clean.
		for id := range int32(3) {
			c.Stop(id)
			c.Start(id)
			brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("broker %d back in the ISR", id), func() (bool, string) {
				l, _, isr := storedState(t, c, topic)
				return l >= 0 && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
			})
		}
	}

	down := bucket.Add(faulty.Rule{Op: faulty.Any, Fail: true})
	old, _, _ := storedState(t, c, topic)
	c.Stop(old)
	var leader int32
	brokertest.WaitFor(t, 30*time.Second, "another broker leads", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		leader = l
		return l >= 0 && l != old, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	produce(600, 900)
	// Below its local log the new leader needs its manifest: a fetch
	// there gets a retriable error. Served from the copy it kept as a
	// follower, an old one, an offset past that copy's end and below the
	// local log was out of range, and a replaying consumer of the tiered
	// cluster soak went back to offset 0 mid-pass.
	td, err := c.Admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	requireRetriableReads(t, c.Client(), leader, topic, td[topic].ID)
	// Longer than the replica lag time: the follower stays in sync.
	time.Sleep(6 * time.Second)
	produce(900, 1000)
	if l, _, isr := storedState(t, c, topic); l != leader || len(isr) != 2 {
		t.Fatalf("during the outage: leader %d isr %v; want %d and both live replicas", l, isr, leader)
	}
	if down.Fired() == 0 {
		t.Fatal("the new leader never asked the store")
	}

	down.Remove()
	c.Start(old)
	waitReplicated(t, c, topic, 1000)
	requireTieredRecords(ctx, t, c, topic, 0, 1000)
	c.CheckReplicasAgree(t, topic, 0, 1, 2)
}
