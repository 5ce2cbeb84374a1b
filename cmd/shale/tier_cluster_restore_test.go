package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestAThreeBrokerClusterIsRebuiltFromItsBucket: three `shale broker`
// processes tier a topic with three replicas to MinIO, under a prefix,
// and a group commits an offset. Then the whole cluster is lost: every
// broker killed, its etcd and its data directories gone. Three new
// brokers on a new etcd and the same bucket, and `shale topic restore -r
// 3`: the topic is back under its id with three replicas in the ISR,
// every uploaded record reads from offset 0 as it was produced, acks=all
// produce continues at the bucket's end, and the group has its offset.
func TestAThreeBrokerClusterIsRebuiltFromItsBucket(t *testing.T) {
	srv := miniotest.Start(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v) // for the bucket and the command, in this process
	}
	store := srv.URL("rebuilt", "cluster-a")
	setup := func(p *brokerProc) {
		p.objectStore = store + "&create_bucket=true"
		p.env = append(miniotest.Env(), "SHALE_TEST_GROUP_OFFSETS_INTERVAL=200ms")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const topic = "ledger"
	value := func(i int64) string { return fmt.Sprintf("%05d-%s", i, strings.Repeat("l", 300)) }
	procs, seeds := startBrokerProcs(t, startTestEtcd(t, ctx), 3, setup)
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	seg := "16384"
	if resp, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"segment.bytes": &seg}, topic); err != nil || resp.Err != nil {
		t.Fatalf("create: %v %v", err, resp.Err)
	}
	for i := int64(0); i < 300; i += 10 {
		var recs []*kgo.Record
		for j := i; j < i+10; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(value(j))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: topic, Partition: 0, At: 120, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "auditors", commit); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}
	bucket, err := objectstore.Open(ctx, store, objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	id := tds[topic].ID
	manifest := tiering.NewManifestStore(bucket, tiering.Layout{}.ManifestKey(tiering.Partition{Topic: topic, TopicID: id}), nil)
	waitUntil(t, "uploads, the topic's descriptor and the group's offsets in the bucket", func() bool {
		m, err := manifest.Load(ctx)
		if err != nil || m.End() < 100 {
			return false
		}
		if _, err := tiering.ReadTopic(ctx, bucket, tiering.Layout{}, topic, id); err != nil {
			return false
		}
		return groupInBucket(ctx, bucket, "auditors") != nil
	})

	// The cluster is lost.
	for _, p := range procs {
		p.kill(syscall.SIGKILL)
	}
	cl.Close()
	m, err := manifest.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	end := m.End()
	t.Logf("the bucket ends at offset %d of 300", end)

	_, seeds = startBrokerProcs(t, startTestEtcd(t, ctx), 3, setup)
	var got restoreReport
	cliJSON(t, &got, "topic", "restore", "--brokers", strings.Join(seeds, ","), "--object-store", store, "-r", "3")
	if len(got.Topics) != 1 || got.Topics[0].ReplicationFactor != 3 || got.Topics[0].Result != "restored" ||
		len(got.Groups) != 1 || got.Groups[0] != (restoredGroup{Group: "auditors", Partitions: 1, Result: "restored"}) {
		t.Fatalf("restore: %+v", got)
	}
	cl2, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	adm = kadm.NewClient(cl2)
	waitUntil(t, "the restored topic's three replicas in the ISR", func() bool {
		tds, err := adm.ListTopics(ctx, topic)
		return err == nil && tds[topic].ID == id && len(tds[topic].Partitions[0].ISR) == 3
	})
	res, err := cl2.ProduceSync(ctx, &kgo.Record{Value: []byte(value(end))}).First()
	if err != nil || res.Offset != end {
		t.Fatalf("acks=all produce after the restore: offset %d, %v; want %d", res.Offset, err, end)
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for next := int64(0); next <= end; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", next, end+1, ctx.Err())
		}
		for _, r := range fs.Records() {
			if r.Offset != next || string(r.Value) != value(next) {
				t.Fatalf("offset %d (want %d): %.12q", r.Offset, next, r.Value)
			}
			next++
		}
	}
	offs, err := adm.FetchOffsets(ctx, "auditors")
	if o, ok := offs.Lookup(topic, 0); err != nil || !ok || o.At != 120 {
		t.Fatalf("auditors' offset after the restore: %+v %v", o, err)
	}
}
