package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// restoreRecord is the value of record i of partition p: it says where it
// was produced, and is long enough to roll 16 KiB segments fast.
func restoreRecord(p int32, i int) []byte {
	return []byte(fmt.Sprintf("p%d-%05d-%s", p, i, strings.Repeat("r", 300+i%40)))
}

// groupInBucket is the offsets the bucket holds for group (nil: none, or
// the bucket could not be read).
func groupInBucket(ctx context.Context, bucket objectstore.Bucket, group string) []tiering.GroupOffset {
	shards, _ := tiering.ListGroupShards(ctx, bucket, tiering.Layout{})
	for _, s := range shards {
		for _, g := range s.Groups {
			if g.Group == group {
				return g.Offsets
			}
		}
	}
	return nil
}

// TestTopicRestoreRebuildsALostClusterFromItsBucket: a node tiers a topic,
// then its metadata and disk are lost (killed, a new data directory and a
// new etcd); `shale topic restore` against a new node on the same bucket
// creates the topic again under its id, with its partitions and configs,
// every uploaded record reads back from offset 0 as it was produced, and
// produce continues the offsets where the bucket ends. A group gets its
// committed offsets back, at most the bucket's end. A deleted topic is not
// restored, a second restore changes nothing, and a broker refuses to
// restore a topic its bucket does not hold.
func TestTopicRestoreRebuildsALostClusterFromItsBucket(t *testing.T) {
	storeDir := t.TempDir()
	store := "file://" + storeDir
	env := []string{"SHALE_OBJECT_STORE=" + store, "SHALE_TOPIC_DEFAULT=log.segment.bytes=16384,log.roll.ms=500", "SHALE_TEST_GROUP_OFFSETS_INTERVAL=200ms"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The cluster that is lost: "orders" with two partitions and a
	// config of its own, and "gone", deleted before the loss.
	a := startDev(t, "", env...)
	adm := kadm.NewClient(a.client())
	forever := "-1"
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": &forever}, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "gone"); err != nil {
		t.Fatal(err)
	}
	prod := a.client(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	const perPartition = 200
	for i := 0; i < perPartition; i += 20 {
		var recs []*kgo.Record
		for p := int32(0); p < 2; p++ {
			for j := i; j < i+20; j++ {
				recs = append(recs, &kgo.Record{Topic: "orders", Partition: p, Value: restoreRecord(p, j)})
			}
		}
		recs = append(recs, &kgo.Record{Topic: "gone", Value: []byte("x")})
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// billing committed part of partition 0 and all of partition 1.
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 100, LeaderEpoch: -1})
	commit.Add(kadm.Offset{Topic: "orders", Partition: 1, At: perPartition, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "billing", commit); err != nil || resp.Error() != nil {
		t.Fatalf("committing billing's offsets: %v %v", err, resp.Error())
	}
	bucket, err := objectstore.Open(ctx, store, objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	waitUntil(t, "the topic descriptors of orders and gone in the bucket", func() bool {
		ds, err := tiering.ListTopics(ctx, bucket, tiering.Layout{})
		return err == nil && len(ds) == 2
	})
	if _, err := adm.DeleteTopic(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	var uploaded [2]int64
	waitUntil(t, "half of each partition of orders uploaded", func() bool {
		for _, st := range tierStatus(t, a.httpAddr, "orders") {
			uploaded[st.Partition] = st.RemoteEndOffset
		}
		return uploaded[0] >= perPartition/2 && uploaded[1] >= perPartition/2
	})
	waitUntil(t, "gone deleted in the bucket", func() bool {
		ds, err := tiering.ListTopics(ctx, bucket, tiering.Layout{})
		return err == nil && len(ds) == 1 && ds[0].Name == "orders"
	})
	waitUntil(t, "billing's offsets in the bucket", func() bool { return len(groupInBucket(ctx, bucket, "billing")) == 2 })
	before, err := adm.ListTopics(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	id := kafkaUUID(before["orders"].ID)
	// Read the upload ends again once the node is dead: what the bucket
	// holds is what can come back.
	a.stop(syscall.SIGKILL)
	ds, err := tiering.ListTopics(ctx, bucket, tiering.Layout{})
	if err != nil || len(ds) != 1 {
		t.Fatalf("the bucket's topics: %v %v", ds, err)
	}
	for p := range uploaded {
		m, err := tiering.NewManifestStore(bucket, tiering.Layout{}.ManifestKey(tiering.Partition{Topic: "orders", TopicID: before["orders"].ID, Index: int32(p)}), nil).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		uploaded[p] = m.End()
	}
	t.Logf("uploaded before the loss: %v of %d records a partition", uploaded, perPartition)

	// A new node on the same bucket: no topics, until restored. It
	// writes its own groups' offsets (none yet) under its own cluster id
	// meanwhile, and leaves the lost cluster's alone.
	b := startDev(t, "", env...)
	time.Sleep(time.Second)
	var got restoreReport
	cliJSON(t, &got, "topic", "restore", "--brokers", b.kafkaAddr, "--object-store", store, "--dry-run")
	if len(got.Topics) != 1 || got.Topics[0] != (restoredTopic{Topic: "orders", ID: id, Partitions: 2, ReplicationFactor: 1, Result: "valid"}) || len(got.Groups) != 0 {
		t.Fatalf("restore --dry-run: %+v", got)
	}
	adm = kadm.NewClient(b.client())
	if tds, err := adm.ListTopics(ctx); err != nil || len(tds) != 0 {
		t.Fatalf("topics after a dry run: %v %v", tds.Names(), err)
	}
	cliJSON(t, &got, "topic", "restore", "--brokers", b.kafkaAddr, "--object-store", store)
	if len(got.Topics) != 1 || got.Topics[0] != (restoredTopic{Topic: "orders", ID: id, Partitions: 2, ReplicationFactor: 1, Result: "restored"}) ||
		len(got.Groups) != 1 || got.Groups[0] != (restoredGroup{Group: "billing", Partitions: 2, Result: "restored"}) {
		t.Fatalf("restore: %+v", got)
	}
	// billing reads on where it was, or from the bucket's end where it
	// had read past it.
	committed, err := kadm.NewClient(b.client()).FetchOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]int64{0: 100, 1: uploaded[1]} {
		if o, ok := committed.Lookup("orders", p); !ok || o.At != want {
			t.Errorf("billing's restored offset of partition %d: %+v, want %d", p, o, want)
		}
	}
	cliJSON(t, &got, "topic", "restore", "orders", "--brokers", b.kafkaAddr, "--object-store", store)
	if len(got.Topics) != 1 || got.Topics[0].Result != "exists" || len(got.Groups) != 1 || got.Groups[0].Result != "exists" {
		t.Fatalf("restore again: %+v", got)
	}
	if out, err := runCLI(t, "topic", "restore", "gone", "--brokers", b.kafkaAddr, "--object-store", store); err == nil || !strings.Contains(err.Error(), "holds no topic gone") {
		t.Fatalf("restore of a deleted topic: %v\n%s", err, out)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cfgs.On("orders", nil); err != nil {
		t.Fatalf("configs of orders: %v", err)
	} else {
		found := false
		for _, kv := range c.Configs {
			if kv.Key == "retention.ms" {
				found = kv.MaybeValue() == "-1"
			}
			if kv.Key == "shale.restore.topic.id" {
				t.Errorf("the restore's config is kept among the topic's")
			}
		}
		if !found {
			t.Errorf("retention.ms of the restored topic is not -1: %v", c.Configs)
		}
	}

	// Every uploaded record reads back as produced, from offset 0, and
	// nothing past the bucket's end does.
	cons := b.client(kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := consumeAll(t, cons, int(uploaded[0]+uploaded[1]))
	next := [2]int64{}
	for _, r := range recs {
		if r.Offset != next[r.Partition] {
			t.Fatalf("partition %d: offset %d, want %d", r.Partition, r.Offset, next[r.Partition])
		}
		if want := restoreRecord(r.Partition, int(r.Offset)); string(r.Value) != string(want) {
			t.Fatalf("partition %d offset %d: %.20q, want %.20q", r.Partition, r.Offset, r.Value, want)
		}
		next[r.Partition]++
	}
	if next != uploaded {
		t.Fatalf("read %v records a partition, the bucket held %v", next, uploaded)
	}
	// Produce continues where the bucket ends.
	prod = b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	res, err := prod.ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: 1, Value: []byte("after")}).First()
	if err != nil || res.Offset != uploaded[1] {
		t.Fatalf("produce after the restore: offset %d, %v; want %d", res.Offset, err, uploaded[1])
	}

	// A broker restores only what its bucket holds.
	zero := "AAAAAAAAAAAAAAAAAAAAAA"
	resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"shale.restore.topic.id": &zero}, "invented")
	if err == nil {
		err = resp.Err
	}
	if !errors.Is(err, kerr.InvalidConfig) || !strings.Contains(resp.ErrMessage, "holds no topic") {
		t.Fatalf("restoring a topic the bucket does not hold: %v (%s)", err, resp.ErrMessage)
	}
}

// TestRestoreTakesEachGroupFromTheNewestObjectThatSpeaksForIt: a group
// deleted in the newest cluster that held it is not restored from an older
// cluster's object that still names it (the restore took each group's
// newest object naming it, and brought such a group back); a group the
// newest cluster committed again gets that cluster's offsets; one whose
// partition the newest cluster never wrote comes from the older cluster;
// among objects that do not record their partition count, the newest
// naming the group counts.
func TestRestoreTakesEachGroupFromTheNewestObjectThatSpeaksForIt(t *testing.T) {
	const partitions = 3
	// Three group ids, one on each partition of the newer cluster.
	var ids [partitions]string
	for i := 0; slices.Contains(ids[:], ""); i++ {
		id := fmt.Sprintf("g%d", i)
		if p := group.PartitionFor(id, partitions); ids[p] == "" {
			ids[p] = id
		}
	}
	deleted, again, older := ids[0], ids[1], ids[2]
	at := func(offset int64) []tiering.GroupOffset {
		return []tiering.GroupOffset{{Topic: "orders", TopicID: "AAAAAAAAAAAAAAAAAAAAAA", Partition: 0, Offset: offset}}
	}
	named := func(offsets map[string]int64) []tiering.GroupOffsets {
		out := []tiering.GroupOffsets{}
		for _, g := range slices.Sorted(maps.Keys(offsets)) {
			out = append(out, tiering.GroupOffsets{Group: g, Offsets: at(offsets[g])})
		}
		return out
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	shards := []*tiering.GroupShard{
		// The first cluster, before objects recorded their partition
		// count: one object named them all.
		{Cluster: "first", Partition: 0, Groups: named(map[string]int64{deleted: 5, again: 5, older: 4, "legacy": 1}), UpdatedAt: t0},
		// A later cluster of the same kind named legacy again.
		{Cluster: "second", Partition: 7, Groups: named(map[string]int64{"legacy": 2}), UpdatedAt: t0.Add(time.Hour)},
		// The newest cluster, restored from them: it deleted one group,
		// committed another again, and never wrote the partition of the
		// third.
		{Cluster: "third", Partition: 0, Partitions: partitions, Groups: named(nil), UpdatedAt: t0.Add(2 * time.Hour)},
		{Cluster: "third", Partition: 1, Partitions: partitions, Groups: named(map[string]int64{again: 9}), UpdatedAt: t0.Add(2 * time.Hour)},
	}
	got := groupsToRestore(shards)
	want := map[string][]tiering.GroupOffset{again: at(9), older: at(4), "legacy": at(2)}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("groups to restore: %v, want %v", got, want)
	}
}
