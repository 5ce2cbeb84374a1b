package broker_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// restoreTopic asks b to create topic again from its bucket under id, with
// partitions partitions and configs.
func restoreTopic(t *testing.T, b *brokertest.Broker, topic string, id [16]byte, partitions int32, configs map[string]*string) (kadm.CreateTopicResponse, error) {
	t.Helper()
	sid := tiering.TopicDir(topic, id)[len(topic)+1:]
	cfg := map[string]*string{"shale.restore.topic.id": &sid}
	maps.Copy(cfg, configs)
	resp, err := b.Admin().CreateTopic(testCtx(t), partitions, 1, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	return resp, err
}

// readFromStart reads topic's partition 0 through a client of c from offset
// 0 until it has n records, and fails t unless they come in order, each
// starting with want(its offset).
func readFromStart(t *testing.T, c clientMaker, topic string, n int64, want func(off int64) string) {
	t.Helper()
	cons := c.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	for next := int64(0); next < n; {
		fs := cons.PollFetches(testCtx(t))
		if err := testCtx(t).Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", next, n, err)
		}
		for _, r := range fs.Records() {
			if w := want(r.Offset); r.Offset != next || !strings.HasPrefix(string(r.Value), w) {
				t.Fatalf("offset %d (want %d): %.12q, want %.12q", r.Offset, next, r.Value, w)
			}
			next++
		}
	}
}

// TestARestoredTopicContinuesWhereItsBucketEnds: a topic one broker tiered
// is restored on a new broker (its own etcd and disk) on the same bucket.
// While the new leader's manifest read is held, a produce waits: it would
// otherwise land at offset 0, over the records the bucket holds, and be
// lost when the log moves to the bucket's end. Once the manifest is read
// it lands at the bucket's end, and the history reads back from offset 0
// under the topic's old id. The broker refuses a restore under another
// partition count, of a topic with a deletion marker, and of one the
// cluster has.
func TestARestoredTopicContinuesWhereItsBucketEnds(t *testing.T) {
	const topic = "orders"
	fb := faulty.New(objectstore.NewMem())
	old := startTiered(t, fb)
	seg := "16384"
	created := createTopic(t, old.Admin(), topic, 1, map[string]*string{"segment.bytes": &seg})
	part := tiering.Partition{Topic: topic, TopicID: created.ID}
	manifest := tiering.NewManifestStore(fb, tiering.Layout{}.ManifestKey(part), nil)
	prod := old.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	var values []string
	for i := 0; i < 200; i += 20 {
		var recs []*kgo.Record
		for j := i; j < i+20; j++ {
			v := fmt.Sprintf("%05d-%s", j, strings.Repeat("v", 300))
			values = append(values, v)
			recs = append(recs, &kgo.Record{Value: []byte(v)})
		}
		if err := prod.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var end int64
	waitFor(t, "segments uploaded and the topic described in the bucket", 30*time.Second, func() bool {
		m, err := manifest.Load(testCtx(t))
		if err != nil {
			return false
		}
		end = m.End()
		_, err = tiering.ReadTopic(testCtx(t), fb, tiering.Layout{}, topic, created.ID)
		return end >= 100 && err == nil
	})
	old.Stop()
	// The lost cluster's last leader was of epoch 7: its manifest is
	// fenced so.
	m, err := manifest.Fence(testCtx(t), 7)
	if err != nil {
		t.Fatal(err)
	}
	end = m.End()

	nb := startTiered(t, fb)
	empty := ""
	if resp, err := nb.Admin().CreateTopic(testCtx(t), 1, 1, map[string]*string{"shale.restore.topic.id": &empty}, topic); err == nil && !errors.Is(resp.Err, kerr.InvalidConfig) {
		t.Fatalf("restore with an empty id: %v", resp.Err)
	}
	if _, err := restoreTopic(t, nb, topic, created.ID, 2, nil); !errors.Is(err, kerr.InvalidPartitions) {
		t.Fatalf("restore with 2 partitions of a 1-partition topic: %v", err)
	}
	// Its leader would delete the history, as for a topic whose remote
	// storage was turned off.
	off := "false"
	if _, err := restoreTopic(t, nb, topic, created.ID, 1, map[string]*string{"remote.storage.enable": &off}); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("restore with remote.storage.enable=false: %v", err)
	}
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	// The restore reads the manifest's epoch first (a Head, a Get and a
	// Head); the leader's read after it is held.
	held := fb.Add(faulty.Rule{Op: faulty.Get | faulty.Head, KeyPrefix: tiering.Layout{}.PartitionPrefix(part), After: 3, Hold: hold})
	resp, err := restoreTopic(t, nb, topic, created.ID, 1, map[string]*string{"segment.bytes": &seg})
	if err != nil || resp.ID != created.ID {
		t.Fatalf("restore: id %x, %v; want %x", resp.ID, err, created.ID)
	}
	waitFor(t, "the new leader's manifest read to reach the store", 30*time.Second, func() bool { return held.Fired() > 0 })

	before := nb.B.ParkedProduces()
	answered := make(chan kmsg.ProduceResponseTopicPartition, 1)
	go func() {
		cl := nb.Client(kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
		r, err := cl.Request(testCtx(t), produceRequest(topic, created.ID, 1, 30*time.Second, "early"))
		if err != nil {
			t.Error(err)
			close(answered)
			return
		}
		answered <- r.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	}()
	waitFor(t, "the produce to wait for the manifest", 30*time.Second, func() bool { return nb.B.ParkedProduces() > before })
	select {
	case sp := <-answered:
		t.Fatalf("a produce answered before the manifest was read: offset %d, error %d", sp.BaseOffset, sp.ErrorCode)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if sp, ok := <-answered; !ok || sp.ErrorCode != 0 || sp.BaseOffset != end {
		t.Fatalf("the produce that waited: offset %d, error %d; want offset %d, the bucket's end", sp.BaseOffset, sp.ErrorCode, end)
	}

	readFromStart(t, nb, topic, end+1, func(off int64) string {
		if off < end {
			return values[off]
		}
		return "early"
	})

	// The new leader is of a later epoch than the lost one, and uploads.
	if mp, _, _ := partitionMetadata(t, nb.Client(), topic); mp.LeaderEpoch != 8 {
		t.Errorf("the restored partition's leader epoch: %d, want 8, above the manifest's", mp.LeaderEpoch)
	}
	prod = nb.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := 0; i < 100; i += 20 {
		var recs []*kgo.Record
		for j := i; j < i+20; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(strings.Repeat("w", 300))})
		}
		if err := prod.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the restored partition's leader to upload", 30*time.Second, func() bool {
		m, err := manifest.Load(testCtx(t))
		return err == nil && m.End() > end+1 && m.LeaderEpoch == 8
	})

	if _, err := restoreTopic(t, nb, topic, created.ID, 1, nil); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("restoring a topic the cluster has: %v", err)
	}
	goneID := [16]byte{7}
	if _, err := fb.Put(testCtx(t), tiering.Layout{}.DeletedKey("gone", goneID), strings.NewReader("{}"), 2, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tiering.PutTopic(testCtx(t), fb, tiering.Layout{}, tiering.TopicDescriptor{Name: "gone", ID: tiering.TopicDir("gone", goneID)[5:], Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreTopic(t, nb, "gone", goneID, 1, nil); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("restoring a deleted topic: %v", err)
	}
}

// TestARestoredTopicIsReplicatedAgain: a topic one broker tiered is
// restored with three replicas on a new three-broker cluster on the same
// bucket: every replica joins the ISR (the followers, their logs empty,
// start at the bucket's end), the history reads from offset 0, and acks=all
// produce continues the offsets.
func TestARestoredTopicIsReplicatedAgain(t *testing.T) {
	const topic = "orders"
	fb := faulty.New(objectstore.NewMem())
	old := startTiered(t, fb)
	seg := "16384"
	created := createTopic(t, old.Admin(), topic, 1, map[string]*string{"segment.bytes": &seg})
	manifest := tiering.NewManifestStore(fb, tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: created.ID}), nil)
	prod := old.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := 0; i < 150; i += 10 { // batches well under a segment
		var recs []*kgo.Record
		for j := i; j < i+10; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(fmt.Sprintf("%05d-%s", j, strings.Repeat("v", 300)))})
		}
		if err := prod.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "segments uploaded and the topic described", 30*time.Second, func() bool {
		m, err := manifest.Load(testCtx(t))
		_, derr := tiering.ReadTopic(testCtx(t), fb, tiering.Layout{}, topic, created.ID)
		return err == nil && m.End() >= 40 && derr == nil
	})
	old.Stop()
	m, err := manifest.Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	end := m.End()

	c := startTieredCluster(t, fb, 10*time.Second)
	sid := tiering.TopicDir(topic, created.ID)[len(topic)+1:]
	resp, err := c.Admin().CreateTopic(testCtx(t), 1, 3, map[string]*string{"shale.restore.topic.id": &sid, "segment.bytes": &seg}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil || resp.ID != created.ID {
		t.Fatalf("restore with three replicas: %v", err)
	}
	cl := c.Client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic(topic))
	adm := c.Admin()
	waitFor(t, "every replica in the ISR", 30*time.Second, func() bool {
		tds, err := adm.ListTopics(testCtx(t), topic)
		return err == nil && len(tds[topic].Partitions[0].ISR) == 3
	})
	res, err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("after")}).First()
	if err != nil || res.Offset != end {
		t.Fatalf("acks=all produce after the restore: offset %d, %v; want %d", res.Offset, err, end)
	}
	readFromStart(t, c, topic, end+1, func(off int64) string {
		if off < end {
			return fmt.Sprintf("%05d-", off)
		}
		return "after"
	})
}

// TestTheBucketDescribesATopicAsItIs: partitions added to a tiered topic
// and its config changes reach its descriptor in the bucket without a
// change of leader, so that a reader of the bucket alone, or a restore,
// sees the topic as it is.
func TestTheBucketDescribesATopicAsItIs(t *testing.T) {
	const topic = "grows"
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	created := createTopic(t, b.Admin(), topic, 1, nil)
	describes := func(what string, ok func(*tiering.TopicDescriptor) bool) {
		t.Helper()
		var d *tiering.TopicDescriptor
		waitFor(t, what, 30*time.Second, func() bool {
			var err error
			d, err = tiering.ReadTopic(testCtx(t), bucket, tiering.Layout{}, topic, created.ID)
			return err == nil && ok(d)
		})
	}
	describes("the topic described", func(d *tiering.TopicDescriptor) bool { return d.Partitions == 1 })
	adm := b.Admin()
	if _, err := adm.CreatePartitions(testCtx(t), 2, topic); err != nil {
		t.Fatal(err)
	}
	describes("three partitions described", func(d *tiering.TopicDescriptor) bool { return d.Partitions == 3 })
	week := "604800000"
	if _, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &week}}, topic); err != nil {
		t.Fatal(err)
	}
	describes("the new retention described", func(d *tiering.TopicDescriptor) bool { return d.Configs["retention.ms"] == week })
}

// TestGroupOffsetsReachTheBucket: the committed offsets of a group reach
// the bucket under the offsets topic's partition of the group, with the
// topic's id; a new commit replaces them, and a deleted group leaves the
// object at the next write.
func TestGroupOffsetsReachTheBucket(t *testing.T) {
	bucket := objectstore.NewMem()
	b := brokertest.StartOn(t, t.TempDir(), nil, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, GroupOffsetsInterval: 50 * time.Millisecond}
	})
	created := createTopic(t, b.Admin(), "orders", 2, nil)
	adm := b.Admin()
	commit := func(group string, p int32, at int64) {
		t.Helper()
		o := kadm.Offsets{}
		o.Add(kadm.Offset{Topic: "orders", Partition: p, At: at, LeaderEpoch: -1})
		if resp, err := adm.CommitOffsets(testCtx(t), group, o); err != nil || resp.Error() != nil {
			t.Fatalf("commit: %v %v", err, resp.Error())
		}
	}
	// in is the offsets the bucket holds for group (nil: none).
	in := func(group string) []tiering.GroupOffset {
		shards, err := tiering.ListGroupShards(testCtx(t), bucket, tiering.Layout{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range shards {
			for _, g := range s.Groups {
				if g.Group == group {
					return g.Offsets
				}
			}
		}
		return nil
	}
	id := tiering.TopicDir("orders", created.ID)[len("orders")+1:]
	commit("billing", 0, 5)
	commit("billing", 1, 7)
	commit("audit", 1, 3)
	waitFor(t, "billing's offsets in the bucket", 30*time.Second, func() bool {
		return slices.Equal(in("billing"), []tiering.GroupOffset{{Topic: "orders", TopicID: id, Partition: 0, Offset: 5}, {Topic: "orders", TopicID: id, Partition: 1, Offset: 7}})
	})
	commit("billing", 0, 9)
	waitFor(t, "billing's new offset in the bucket", 30*time.Second, func() bool {
		o := in("billing")
		return len(o) == 2 && o[0].Offset == 9
	})
	if _, err := adm.DeleteGroup(testCtx(t), "audit"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "audit gone from the bucket", 30*time.Second, func() bool { return in("audit") == nil })
	// Each object records the partition count its groups map by, so a
	// reader knows audit is gone from the object of its partition.
	shards, err := tiering.ListGroupShards(testCtx(t), bucket, tiering.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		if s.Partitions != 50 {
			t.Fatalf("the object of partition %d records %d partitions, want 50", s.Partition, s.Partitions)
		}
	}

	// An object an earlier leader wrote for a partition whose groups are
	// all gone since is emptied by the next broker that leads it.
	ghost := group.PartitionFor("ghost", 50)
	if ghost == group.PartitionFor("billing", 50) {
		t.Fatal("ghost and billing share a partition: pick another name")
	}
	md, err := adm.Metadata(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	stale := tiering.GroupShard{Cluster: md.Cluster, Partition: ghost, Groups: []tiering.GroupOffsets{{Group: "ghost", Offsets: []tiering.GroupOffset{{Topic: "orders", TopicID: id, Offset: 1}}}}}
	b.Stop()
	if err := tiering.PutGroupShard(testCtx(t), bucket, tiering.Layout{}, stale); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	waitFor(t, "the ghost group gone from the bucket", 30*time.Second, func() bool { return in("ghost") == nil })
	if in("billing") == nil {
		t.Fatal("billing gone from the bucket")
	}
}

// TestALeaderFencedByAnEpochTheMetadataNeverReachedRaisesItsOwn: the
// manifest of a partition is fenced at a leader epoch above the one the
// metadata gives its leader (etcd restored from an older copy). The
// leader, refused at its next upload, raises the partition's leader epoch
// above the manifest's, and uploads on; every record reads back.
func TestALeaderFencedByAnEpochTheMetadataNeverReachedRaisesItsOwn(t *testing.T) {
	const topic = "rolled-back"
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	seg := "16384"
	created := createTopic(t, b.Admin(), topic, 1, map[string]*string{"segment.bytes": &seg})
	manifest := tiering.NewManifestStore(bucket, tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: created.ID}), nil)
	prod := b.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	produced := 0
	produce := func(n int) {
		t.Helper()
		for i := 0; i < n; i += 10 {
			var recs []*kgo.Record
			for j := 0; j < 10; j++ {
				recs = append(recs, &kgo.Record{Value: []byte(fmt.Sprintf("%05d-%s", produced, strings.Repeat("v", 300)))})
				produced++
			}
			if err := prod.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(100)
	var end int64
	waitFor(t, "a first upload", 30*time.Second, func() bool {
		m, err := manifest.Load(testCtx(t))
		end = m.End()
		return err == nil && end > 0
	})
	mp, _, _ := partitionMetadata(t, b.Client(), topic)
	if _, err := manifest.Fence(testCtx(t), mp.LeaderEpoch+9); err != nil {
		t.Fatal(err)
	}
	want := mp.LeaderEpoch + 10
	produce(150)
	waitFor(t, "uploads under a raised leader epoch", 30*time.Second, func() bool {
		m, err := manifest.Load(testCtx(t))
		return err == nil && m.End() > end && m.LeaderEpoch == want
	})
	if mp, _, _ := partitionMetadata(t, b.Client(), topic); mp.LeaderEpoch != want || mp.ErrorCode != 0 {
		t.Fatalf("leader epoch %d (error %d), want %d", mp.LeaderEpoch, mp.ErrorCode, want)
	}
	readFromStart(t, b, topic, int64(produced), func(off int64) string { return fmt.Sprintf("%05d-", off) })
}
