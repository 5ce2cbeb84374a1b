package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs/crashfs"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func createTopic(t *testing.T, adm *kadm.Client, name string, partitions int32, configs map[string]*string) kadm.CreateTopicResponse {
	t.Helper()
	resp, err := adm.CreateTopic(testCtx(t), partitions, 1, configs, name)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Err != nil {
		t.Fatalf("create %s: %v", name, resp.Err)
	}
	return resp
}

// produceSync produces records and fails the test on any error.
func produceSync(t *testing.T, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// consumeN reads n records from the start of topic.
func consumeN(t *testing.T, b *brokertest.Broker, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := b.Client(append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	ctx := testCtx(t)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before the deadline", len(out), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func TestProduceConsumeRoundTrip(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "orders", 3, nil)
	cl := b.Client(kgo.DefaultProduceTopic("orders"))
	var recs []*kgo.Record
	for i := 0; i < 300; i++ {
		recs = append(recs, &kgo.Record{
			Key:     []byte("k" + strconv.Itoa(i%7)),
			Value:   []byte("value-" + strconv.Itoa(i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{byte(i)}}},
		})
	}
	produceSync(t, cl, recs...)
	got := consumeN(t, b, "orders", 300)
	// Per key, values come back in the order produced.
	last := map[string]int{}
	for _, r := range got {
		i, err := strconv.Atoi(string(bytes.TrimPrefix(r.Value, []byte("value-"))))
		if err != nil {
			t.Fatalf("value %q", r.Value)
		}
		if prev, ok := last[string(r.Key)]; ok && prev >= i {
			t.Fatalf("key %s: %d after %d", r.Key, i, prev)
		}
		last[string(r.Key)] = i
		if len(r.Headers) != 1 || r.Headers[0].Value[0] != byte(i) {
			t.Fatalf("headers of %d: %+v", i, r.Headers)
		}
	}
}

func TestEveryCompressionCodecPassesThrough(t *testing.T) {
	b := brokertest.Start(t)
	codecs := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			topic := "codec-" + name
			createTopic(t, b.Admin(), topic, 1, nil)
			cl := b.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(codec))
			var recs []*kgo.Record
			for i := 0; i < 50; i++ {
				recs = append(recs, &kgo.Record{Value: bytes.Repeat([]byte{byte('a' + i%26)}, 200)})
			}
			produceSync(t, cl, recs...)
			got := consumeN(t, b, topic, 50)
			for i, r := range got {
				if !bytes.Equal(r.Value, recs[i].Value) || r.Offset != int64(i) {
					t.Fatalf("record %d: offset %d value %q", i, r.Offset, r.Value)
				}
			}
		})
	}
}

// acks=0, 1 and all are each answered (or not) as Kafka does, and they
// differ in what a machine crash keeps: acks=all records are fsynced
// before the answer (the leader is the only in-sync replica), acks=1
// records are left to the page cache.
func TestAcksZeroOneAll(t *testing.T) {
	root := t.TempDir()
	cfs := newCrashFS(t, brokertest.LogDir(root))
	b := brokertest.StartOn(t, root, cfs)
	adm := b.Admin()
	createTopic(t, adm, "acks", 1, nil)
	produce := func(acks kgo.Acks, name string, from int64) {
		t.Helper()
		opts := []kgo.Opt{kgo.DefaultProduceTopic("acks"), kgo.RequiredAcks(acks)}
		if acks != kgo.AllISRAcks() {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
		// Closed before the restart: the broker's shutdown waits for
		// its clients.
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(b.Addr))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := 0; i < 10; i++ {
			produceSync(t, cl, &kgo.Record{Value: []byte(name + strconv.Itoa(i))})
		}
		waitEndOffset(t, adm, "acks", from+10)
	}
	produce(kgo.NoAck(), "none", 0)
	produce(kgo.AllISRAcks(), "all", 10)
	produce(kgo.LeaderAck(), "leader", 20)
	adm.Close()
	if err := cfs.Crash(nil); err != nil {
		t.Fatal(err)
	}
	b.RestartOn(nil)
	waitEndOffset(t, b.Admin(), "acks", 20)
	recs := consumeN(t, b, "acks", 20)
	for i, r := range recs {
		want := "none" + strconv.Itoa(i)
		if i >= 10 {
			want = "all" + strconv.Itoa(i-10)
		}
		if string(r.Value) != want || r.Offset != int64(i) {
			t.Fatalf("record %d after the crash: %q at %d, want %q", i, r.Value, r.Offset, want)
		}
	}
}

func newCrashFS(t *testing.T, root string) *crashfs.FS {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	return cfs
}

// waitEndOffset waits until the partition 0 of topic ends at end.
func waitEndOffset(t *testing.T, adm *kadm.Client, topic string, end int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(testCtx(t), topic)
		if err == nil {
			if o, _ := ends.Lookup(topic, 0); o.Err == nil && o.Offset == end {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("%s ends at %+v, want %d", topic, o, end)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLongPollWakesOnAppend(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "poll", 1, nil)
	cl := b.Client(kgo.ConsumeTopics("poll"), kgo.FetchMaxWait(20*time.Second))
	got := make(chan time.Time, 1)
	go func() {
		fs := cl.PollFetches(testCtx(t))
		if fs.NumRecords() > 0 {
			got <- time.Now()
		}
	}()
	time.Sleep(500 * time.Millisecond) // let the fetch park
	sent := time.Now()
	produceSync(t, b.Client(kgo.DefaultProduceTopic("poll")), &kgo.Record{Value: []byte("wake")})
	select {
	case at := <-got:
		// A timer-driven broker would answer after MaxWait (20s).
		if at.Sub(sent) > 10*time.Second {
			t.Fatalf("fetch answered %s after the append", at.Sub(sent))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the parked fetch was not woken by the append")
	}
}

func TestListOffsets(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	createTopic(t, adm, "lo", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("lo"))
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i := 0; i < 10; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte("v"), Timestamp: base.Add(time.Duration(i) * time.Minute)})
	}
	ctx := testCtx(t)
	start, err := adm.ListStartOffsets(ctx, "lo")
	if err != nil {
		t.Fatal(err)
	}
	end, err := adm.ListEndOffsets(ctx, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := start.Lookup("lo", 0); o.Offset != 0 {
		t.Fatalf("earliest %+v", o)
	}
	if o, _ := end.Lookup("lo", 0); o.Offset != 10 {
		t.Fatalf("latest %+v", o)
	}
	byTime, err := adm.ListOffsetsAfterMilli(ctx, base.Add(150*time.Second).UnixMilli(), "lo")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := byTime.Lookup("lo", 0); o.Offset != 3 {
		t.Fatalf("first record at or after +2.5min: %+v", o)
	}
	// MAX_TIMESTAMP (-3).
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "lo"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = -3
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.Offset != 9 || p.Timestamp != base.Add(9*time.Minute).UnixMilli() {
		t.Fatalf("max timestamp: %+v", p)
	}
}

func TestDeleteRecordsMovesLogStart(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	createTopic(t, adm, "dr", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("dr"))
	for i := 0; i < 20; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	ctx := testCtx(t)
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "dr", Partition: 0, At: 12})
	resp, err := adm.DeleteRecords(ctx, offsets)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := resp.Lookup("dr", 0); r.Err != nil || r.LowWatermark != 12 {
		t.Fatalf("delete records: %+v", r)
	}
	start, _ := adm.ListStartOffsets(ctx, "dr")
	if o, _ := start.Lookup("dr", 0); o.Offset != 12 {
		t.Fatalf("earliest after delete: %+v", o)
	}
	got := consumeN(t, b, "dr", 8)
	if got[0].Offset != 12 || string(got[0].Value) != "12" {
		t.Fatalf("first record after delete: offset %d value %s", got[0].Offset, got[0].Value)
	}
	// Deleting past the high watermark is refused.
	offsets = kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "dr", Partition: 0, At: 100})
	resp, _ = adm.DeleteRecords(ctx, offsets)
	if r, _ := resp.Lookup("dr", 0); !errors.Is(r.Err, kerr.OffsetOutOfRange) {
		t.Fatalf("delete past the end: %v", r.Err)
	}
}

func TestTopicAdministration(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx := testCtx(t)
	ret := "3600000"
	created := createTopic(t, adm, "admin", 2, map[string]*string{"retention.ms": &ret})
	if created.ID == [16]byte{} {
		t.Fatal("no topic id")
	}

	// Duplicate, invalid names, bad configs, an unknown cleanup policy.
	compact, bad := "compact,bogus", "-5"
	for name, tc := range map[string]struct {
		topic   string
		configs map[string]*string
		want    error
	}{
		"exists":             {"admin", nil, kerr.TopicAlreadyExists},
		"invalid name":       {"bad/name", nil, kerr.InvalidTopicException},
		"unknown cfg":        {"x1", map[string]*string{"no.such.config": &ret}, kerr.InvalidConfig},
		"bad value":          {"x2", map[string]*string{"retention.ms": &bad}, kerr.InvalidConfig},
		"unknown policy":     {"x3", map[string]*string{"cleanup.policy": &compact}, kerr.InvalidConfig},
		"bad format version": {"x5", map[string]*string{"message.format.version": kadm.StringPtr("banana")}, kerr.InvalidConfig},
		// Kafka 3.x configs without effect here, which tools copying a
		// 3.x cluster's topics (MirrorMaker 2) set: accepted.
		"kafka 3 configs": {"x6", map[string]*string{"message.format.version": kadm.StringPtr("2.3-IV1"),
			"message.downconversion.enable": kadm.StringPtr("false")}, nil},
	} {
		resp, err := adm.CreateTopic(ctx, 1, 1, tc.configs, tc.topic)
		if err == nil {
			err = resp.Err
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if resp, _ := adm.CreateTopic(ctx, 1, 3, nil, "x4"); !errors.Is(resp.Err, kerr.InvalidReplicationFactor) {
		t.Errorf("replication factor 3 on one broker: %v", resp.Err)
	}

	// DescribeConfigs shows the override and Kafka's defaults.
	rc, err := adm.DescribeTopicConfigs(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rc.On("admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]kadm.Config{}
	for _, c := range cfg.Configs {
		values[c.Key] = c
	}
	if v := values["retention.ms"]; v.MaybeValue() != "3600000" || v.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms: %+v", v)
	}
	if v := values["max.message.bytes"]; v.MaybeValue() != "1048588" || v.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("max.message.bytes: %+v", v)
	}

	// IncrementalAlterConfigs: set one, delete another.
	seg := "1048576"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "segment.bytes", Value: &seg}, {Op: kadm.DeleteConfig, Name: "retention.ms"}}, "admin"); err != nil {
		t.Fatal(err)
	}
	rc, _ = adm.DescribeTopicConfigs(ctx, "admin")
	cfg, _ = rc.On("admin", nil)
	for _, c := range cfg.Configs {
		switch c.Key {
		case "segment.bytes":
			if c.MaybeValue() != seg {
				t.Fatalf("segment.bytes after alter: %s", c.MaybeValue())
			}
		case "retention.ms":
			if c.Source != kmsg.ConfigSourceDefaultConfig {
				t.Fatalf("retention.ms after delete: %+v", c)
			}
		}
	}
	// Legacy AlterConfigs replaces the whole set.
	if _, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: &ret}}, "admin"); err != nil {
		t.Fatal(err)
	}
	rc, _ = adm.DescribeTopicConfigs(ctx, "admin")
	cfg, _ = rc.On("admin", nil)
	for _, c := range cfg.Configs {
		if c.Key == "segment.bytes" && c.Source != kmsg.ConfigSourceDefaultConfig {
			t.Fatalf("segment.bytes survived a full replace: %+v", c)
		}
	}

	// CreatePartitions grows the topic; shrinking is refused.
	if _, err := adm.UpdatePartitions(ctx, 4, "admin"); err != nil {
		t.Fatal(err)
	}
	td, err := adm.ListTopics(ctx, "admin")
	if err != nil || len(td["admin"].Partitions) != 4 {
		t.Fatalf("partitions after grow: %v %+v", err, td["admin"])
	}
	pr, _ := adm.UpdatePartitions(ctx, 2, "admin")
	if r, _ := pr.On("admin", nil); !errors.Is(r.Err, kerr.InvalidPartitions) {
		t.Fatalf("shrink: %v", r.Err)
	}
	produceSync(t, b.Client(kgo.DefaultProduceTopic("admin"), kgo.RecordPartitioner(kgo.ManualPartitioner())),
		&kgo.Record{Value: []byte("p3"), Partition: 3})

	// DeleteTopics, then a new topic with the same name starts empty.
	if _, err := adm.DeleteTopics(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	td, _ = adm.ListTopics(ctx, "admin")
	if td["admin"].Err == nil {
		t.Fatal("topic still listed after delete")
	}
	recreated := createTopic(t, adm, "admin", 4, nil)
	if recreated.ID == created.ID {
		t.Fatal("recreated topic kept its id")
	}
	end, _ := adm.ListEndOffsets(ctx, "admin")
	if o, _ := end.Lookup("admin", 3); o.Offset != 0 {
		t.Fatalf("recreated topic is not empty: %+v", o)
	}
}

func TestMetadataAutoCreatesTopics(t *testing.T) {
	b := brokertest.Start(t)
	cl := b.Client(kgo.DefaultProduceTopic("auto"), kgo.AllowAutoTopicCreation())
	produceSync(t, cl, &kgo.Record{Value: []byte("first")})
	got := consumeN(t, b, "auto", 1)
	if string(got[0].Value) != "first" {
		t.Fatalf("got %q", got[0].Value)
	}
}

func TestRestartKeepsTopicsAndRecords(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "durable", 2, nil)
	cl := b.Client(kgo.DefaultProduceTopic("durable"))
	for i := 0; i < 100; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	cl.Close()
	b.Restart()
	got := consumeN(t, b, "durable", 100)
	if len(got) != 100 {
		t.Fatalf("%d records after restart", len(got))
	}
	// Appends continue after the restart.
	produceSync(t, b.Client(kgo.DefaultProduceTopic("durable")), &kgo.Record{Value: []byte("after")})
	consumeN(t, b, "durable", 101)
}

// rawProduce sends one batch to topic/partition 0 with raw kmsg.
func rawProduce(t *testing.T, cl *kgo.Client, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	td, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rt.TopicID = td[topic].ID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0]
}

// idempotentBatch builds a batch as an idempotent producer would (pid -1
// for a plain producer).
func idempotentBatch(pid int64, epoch int16, seq int32, n int) []byte {
	recs := make([]recordbatch.Record, n)
	for i := range recs {
		recs[i].Value = []byte(fmt.Sprintf("seq-%d", seq+int32(i)))
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{
		ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq, BaseTimestamp: time.Now().UnixMilli(),
	}, recs)
	if err != nil {
		panic(err)
	}
	return b
}

func TestIdempotentProducerSequences(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "idem", 1, nil)
	cl := b.Client()
	ctx := testCtx(t)
	init, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, cl)
	if err != nil || init.ErrorCode != 0 {
		t.Fatalf("init producer id: %v %+v", err, init)
	}
	pid, epoch := init.ProducerID, init.ProducerEpoch

	first := rawProduce(t, cl, "idem", idempotentBatch(pid, epoch, 0, 3))
	second := rawProduce(t, cl, "idem", idempotentBatch(pid, epoch, 3, 2))
	if first.ErrorCode != 0 || second.ErrorCode != 0 || first.BaseOffset != 0 || second.BaseOffset != 3 {
		t.Fatalf("in order: %+v %+v", first, second)
	}
	// A retry of either batch is answered with its original offset.
	if dup := rawProduce(t, cl, "idem", idempotentBatch(pid, epoch, 0, 3)); dup.ErrorCode != 0 || dup.BaseOffset != 0 {
		t.Fatalf("duplicate of the first: %+v", dup)
	}
	if dup := rawProduce(t, cl, "idem", idempotentBatch(pid, epoch, 3, 2)); dup.ErrorCode != 0 || dup.BaseOffset != 3 {
		t.Fatalf("duplicate of the second: %+v", dup)
	}
	// A gap is refused.
	if gap := rawProduce(t, cl, "idem", idempotentBatch(pid, epoch, 9, 1)); gap.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap: %+v", gap)
	}
	// Nothing but the two batches was appended.
	end, _ := b.Admin().ListEndOffsets(ctx, "idem")
	if o, _ := end.Lookup("idem", 0); o.Offset != 5 {
		t.Fatalf("log end %d, want 5", o.Offset)
	}
	// franz-go's default producer is idempotent with 5 requests in flight.
	prod := b.Client(kgo.DefaultProduceTopic("idem"), kgo.ProducerLinger(0))
	var recs []*kgo.Record
	for i := 0; i < 2000; i++ {
		recs = append(recs, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	produceSync(t, prod, recs...)
	got := consumeN(t, b, "idem", 2005)
	for i, r := range got[5:] {
		if string(r.Value) != strconv.Itoa(i) {
			t.Fatalf("record %d is %q: reordered or duplicated", i, r.Value)
		}
	}
}

func TestBadBatchesAreRefusedAndNothingIsAppended(t *testing.T) {
	b := brokertest.Start(t)
	small := "2000"
	createTopic(t, b.Admin(), "bad", 1, map[string]*string{"max.message.bytes": &small})
	cl := b.Client()
	good := idempotentBatch(-1, -1, -1, 2)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0xff
	wrongMagic := bytes.Clone(good)
	wrongMagic[16] = 1
	big := idempotentBatch(-1, -1, -1, 300)
	cases := []struct {
		name  string
		batch []byte
		want  int16
	}{
		{"bad crc", flipped, kerr.CorruptMessage.Code},
		{"wrong magic", wrongMagic, kerr.CorruptMessage.Code},
		{"truncated", good[:len(good)-5], kerr.CorruptMessage.Code},
		{"too large", big, kerr.MessageTooLarge.Code},
		{"two batches", append(bytes.Clone(good), good...), kerr.InvalidRecord.Code},
	}
	for _, c := range cases {
		if got := rawProduce(t, cl, "bad", c.batch); got.ErrorCode != c.want {
			t.Errorf("%s: error %d, want %d", c.name, got.ErrorCode, c.want)
		}
	}
	end, _ := b.Admin().ListEndOffsets(testCtx(t), "bad")
	if o, _ := end.Lookup("bad", 0); o.Offset != 0 {
		t.Fatalf("refused batches were appended: log end %d", o.Offset)
	}
	if ok := rawProduce(t, cl, "bad", good); ok.ErrorCode != 0 {
		t.Fatalf("the good batch: %+v", ok)
	}
}

func TestDescribeClusterAndOffsetForLeaderEpoch(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	createTopic(t, adm, "epochs", 1, nil)
	produceSync(t, b.Client(kgo.DefaultProduceTopic("epochs")), &kgo.Record{Value: []byte("a")}, &kgo.Record{Value: []byte("b")})
	ctx := testCtx(t)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil || len(meta.Brokers) != 1 || meta.Cluster == "" {
		t.Fatalf("cluster: %v %+v", err, meta)
	}
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.ReplicaID = -1
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "epochs"
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.CurrentLeaderEpoch = -1
	rp.LeaderEpoch = 0
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, b.Client())
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.LeaderEpoch != 0 || p.EndOffset != 2 {
		t.Fatalf("offset for epoch 0: %+v", p)
	}
}

func TestTopicConfigsApplyToProduce(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	logAppend, two, hour := "LogAppendTime", "2", "3600000"
	createTopic(t, adm, "lat", 1, map[string]*string{"message.timestamp.type": &logAppend})
	createTopic(t, adm, "isr", 1, map[string]*string{"min.insync.replicas": &two})
	createTopic(t, adm, "skew", 1, map[string]*string{"message.timestamp.after.max.ms": &hour})

	// LogAppendTime: the broker's clock replaces the producer's.
	before := time.Now().Add(-time.Second)
	produceSync(t, b.Client(kgo.DefaultProduceTopic("lat")), &kgo.Record{Value: []byte("v"), Timestamp: time.Unix(1000, 0)})
	got := consumeN(t, b, "lat", 1)
	if got[0].Timestamp.Before(before) || got[0].Attrs.TimestampType() != 1 {
		t.Fatalf("LogAppendTime record: timestamp %v, log-append type %v", got[0].Timestamp, got[0].Attrs.TimestampType())
	}

	// min.insync.replicas=2 on one broker: acks=all is refused, acks=1 is not.
	err := b.Client(kgo.DefaultProduceTopic("isr"), kgo.RecordRetries(1)).ProduceSync(testCtx(t), &kgo.Record{Value: []byte("v")}).FirstErr()
	if !errors.Is(err, kerr.NotEnoughReplicas) {
		t.Fatalf("acks=all below min.insync.replicas: %v", err)
	}
	produceSync(t, b.Client(kgo.DefaultProduceTopic("isr"), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()), &kgo.Record{Value: []byte("v")})

	// A timestamp a day in the future is refused.
	err = b.Client(kgo.DefaultProduceTopic("skew"), kgo.RecordRetries(1)).ProduceSync(testCtx(t), &kgo.Record{Value: []byte("v"), Timestamp: time.Now().Add(24 * time.Hour)}).FirstErr()
	if !errors.Is(err, kerr.InvalidTimestamp) {
		t.Fatalf("future timestamp: %v", err)
	}
}

func TestRetentionDeletesOldSegments(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.LogRetentionCheckInterval = 100 * time.Millisecond })
	adm := b.Admin()
	seg, ret := "1024", "60000"
	createTopic(t, adm, "ret", 1, map[string]*string{"segment.bytes": &seg, "retention.ms": &ret})
	cl := b.Client(kgo.DefaultProduceTopic("ret"), kgo.ProducerLinger(0))
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 20; i++ {
		produceSync(t, cl, &kgo.Record{Value: bytes.Repeat([]byte{'o'}, 200), Timestamp: old})
	}
	// Every record is past retention.ms: all segments go, the active one
	// rolled first, and the log starts at its end.
	deadline := time.Now().Add(20 * time.Second)
	for {
		start, err := adm.ListStartOffsets(testCtx(t), "ret")
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := start.Lookup("ret", 0); o.Offset == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired segments were not deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	produceSync(t, cl, &kgo.Record{Value: []byte("new")})
	got := consumeN(t, b, "ret", 1)
	if got[0].Offset != 20 || string(got[0].Value) != "new" {
		t.Fatalf("first record after retention: offset %d %q", got[0].Offset, got[0].Value)
	}
}
