package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// startTiered starts a broker that tiers to a filesystem bucket, with
// fast upload and retention loops.
func startTiered(t *testing.T, bucket objectstore.Bucket) *brokertest.Broker {
	t.Helper()
	return startTieredOn(t, t.TempDir(), nil, bucket)
}

// startTieredOn is startTiered with the data under dir and the partition
// logs on fs (nil: the operating system's).
func startTieredOn(t *testing.T, dir string, fs localseg.FS, bucket objectstore.Bucket) *brokertest.Broker {
	t.Helper()
	return brokertest.StartOn(t, dir, fs, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
}

// startTieredCluster starts 3 brokers tiering to bucket, as startTiered
// does one, with followers out of the ISR after lagMax.
func startTieredCluster(t *testing.T, bucket objectstore.Bucket, lagMax time.Duration) *brokertest.Cluster {
	t.Helper()
	return brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
		cfg.ReplicaLagTimeMax = lagMax
	})
}

func localSegments(t *testing.T, b *brokertest.Broker, topic string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(brokertest.LogDir(b.Dir), topic+"-0", "*.log"))
	return len(files)
}

// listOffset asks for one special offset (-2 earliest, -4 earliest local,
// -5 latest tiered) of partition 0.
func listOffset(t *testing.T, cl *kgo.Client, topic string, ts int64) int64 {
	t.Helper()
	off, _, _, code := listOffsetP(t, cl, topic, 0, ts, 0)
	if code != 0 {
		t.Fatalf("list offsets %d: error %d", ts, code)
	}
	return off
}

func tieredValue(i int) []byte {
	return []byte(fmt.Sprintf("%06d-%s", i, strings.Repeat("v", 400+i%50)))
}

// tieredProducer is a client that produces to topic uncompressed and
// without lingering: the bytes on disk, and so where segments roll, do
// not depend on how many records the client gathers in a batch (a
// compressed batch of 50 records is a tenth the size of 50 single ones).
func tieredProducer(c interface{ Client(...kgo.Opt) *kgo.Client }, topic string, opts ...kgo.Opt) *kgo.Client {
	return c.Client(append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression())}, opts...)...)
}

// produceTieredValues produces tieredValue(from) to tieredValue(to-1)
// through cl, batch records a request.
func produceTieredValues(t *testing.T, cl *kgo.Client, from, to, batch int) {
	t.Helper()
	for i := from; i < to; i += batch {
		var recs []*kgo.Record
		for j := i; j < min(i+batch, to); j++ {
			recs = append(recs, &kgo.Record{Value: tieredValue(j)})
		}
		produceSync(t, cl, recs...)
	}
}

// requireTieredRecords reads topic from its log start, in fetches small
// enough to cross segments, until it has n records, and fails t unless
// they are offsets from, from+1, ... with tieredValue's values.
func requireTieredRecords(ctx context.Context, t *testing.T, c interface{ Client(...kgo.Opt) *kgo.Client }, topic string, from, n int) {
	t.Helper()
	cons := c.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30000))
	defer cons.Close()
	var got []*kgo.Record
	for len(got) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", len(got), n, err)
		}
		got = append(got, fs.Records()...)
	}
	for i, r := range got[:n] {
		if r.Offset != int64(from+i) || !bytes.Equal(r.Value, tieredValue(from+i)) {
			t.Fatalf("record %d from offset %d: offset %d", i, from, r.Offset)
		}
	}
}

// TestTieredTopicServesHistoryFromTheBucket: produce with small segments
// and a small local retention; once uploaded, the local segments go, and
// franz-go and kcat still read every record from offset 0.
func TestTieredTopicServesHistoryFromTheBucket(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startTiered(t, bucket)
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "history", 1, map[string]*string{
		"segment.bytes":         str("65536"),
		"local.retention.bytes": str("100000"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
	cl := tieredProducer(b, "history")
	const n = 1500
	base := time.Now().Add(-time.Hour).UnixMilli()
	for i := 0; i < n; i += 50 {
		var recs []*kgo.Record
		for j := i; j < i+50; j++ {
			recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(j)), Value: tieredValue(j), Timestamp: time.UnixMilli(base + int64(j))})
		}
		produceSync(t, cl, recs...)
	}
	waitFor(t, "uploads and local retention", 30*time.Second, func() bool {
		return localSegments(t, b, "history") <= 3 && listOffset(t, cl, "history", -4) > 0
	})
	if got := listOffset(t, cl, "history", -2); got != 0 {
		t.Fatalf("earliest offset %d, want 0", got)
	}
	localStart := listOffset(t, cl, "history", -4)
	if tiered := listOffset(t, cl, "history", -5); tiered < localStart-1 {
		t.Fatalf("latest tiered offset %d below the local log start %d", tiered, localStart)
	}

	// By timestamp: answered from the bucket below the local log, from
	// the disk above it; the largest timestamp is the last record's.
	for _, i := range []int64{0, 100, localStart - 1, localStart, n - 1} {
		if got := listOffset(t, cl, "history", base+i); got != i {
			t.Fatalf("offset for timestamp of record %d: %d", i, got)
		}
	}
	if got := listOffset(t, cl, "history", -3); got != n-1 {
		t.Fatalf("offset of the largest timestamp: %d, want %d", got, n-1)
	}

	// franz-go from offset 0: every record, in order, byte for byte.
	recs := consumeN(t, b, "history", n, kgo.FetchMaxPartitionBytes(20000))
	for i, r := range recs[:n] {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d, value %.20q", i, r.Offset, r.Value)
		}
	}

	// kcat (librdkafka) from the beginning.
	t.Run("kcat", func(t *testing.T) {
		brokertest.KcatPath(t)
		out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", "history", "-o", "beginning", "-e", "-q", "-f", "%o %s\n")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != n {
			t.Fatalf("kcat read %d records, want %d", len(lines), n)
		}
		for i, l := range lines {
			if l != strconv.Itoa(i)+" "+string(tieredValue(i)) {
				t.Fatalf("kcat record %d: %.30q", i, l)
			}
		}
	})

	// A produce answer carries the log start of the whole log.
	if got := produceLogStart(t, cl, "history"); got != 0 {
		t.Fatalf("produce answered log start %d, want 0", got)
	}

	// DeleteRecords below the local log moves the log start in the
	// manifest; remote retention then deletes the objects below it.
	segsBefore := len(listBucket(t, bucket, ".log"))
	dr, err := b.Admin().DeleteRecords(testCtx(t), kadm.Offsets{"history": {0: {At: 300}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	if lw := dr["history"][0].LowWatermark; lw != 300 {
		t.Fatalf("low watermark %d, want 300", lw)
	}
	if got := listOffset(t, cl, "history", -2); got != 300 {
		t.Fatalf("earliest offset after DeleteRecords: %d", got)
	}
	waitFor(t, "remote retention of the deleted records", 30*time.Second, func() bool {
		return len(listBucket(t, bucket, ".log")) < segsBefore
	})
	if rec := consumeN(t, b, "history", 1)[0]; rec.Offset != 300 {
		t.Fatalf("first record after DeleteRecords at %d", rec.Offset)
	}

	// The bucket describes itself: the topic is listed.
	topics, err := tiering.ListTopics(context.Background(), bucket, tiering.Layout{})
	if err != nil || len(topics) != 1 || topics[0].Name != "history" {
		t.Fatalf("topics in the bucket: %+v, %v", topics, err)
	}
}

// listBucket lists the keys in a bucket ending with suffix.
func listBucket(t *testing.T, b objectstore.Bucket, suffix string) []string {
	t.Helper()
	var out []string
	if err := b.List(context.Background(), "", func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, suffix) {
			out = append(out, a.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// produceLogStart produces one record to partition 0 with a raw request
// and returns the log start offset the answer carries.
func produceLogStart(t *testing.T, cl *kgo.Client, topic string) int64 {
	t.Helper()
	tds, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()},
		[]recordbatch.Record{{Value: []byte("raw")}})
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = 1
	req.TimeoutMillis = 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rt.TopicID = tds[topic].ID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Topics[0].Partitions[0]
	if sp.ErrorCode != 0 {
		t.Fatalf("produce: error %d", sp.ErrorCode)
	}
	return sp.LogStartOffset
}

// TestRemoteFetchesKeepTheirBytesWhileTheReaderReusesChunks replays a
// tiered topic many times the broker's remote cache with several
// consumers at once, one of them with a MinBytes no fetch reaches (each of
// its fetches reads remote data, drops it to wait, then reads it again),
// and checks every record byte for byte. The reader gives chunk buffers
// back to its pool as the cache evicts them and as responses are written
// or dropped: a buffer reused while a response still held it would send
// another chunk's bytes (or, built with -tags invariants, poison).
func TestRemoteFetchesKeepTheirBytesWhileTheReaderReusesChunks(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 2 << 20}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "replay", 1, map[string]*string{
		"segment.bytes":         str("131072"),
		"local.retention.bytes": str("100000"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
	cl := tieredProducer(b, "replay")
	const n = 12000 // about 5.5 MB: 40 segments, each two chunks
	produceTieredValues(t, cl, 0, n, 100)
	waitFor(t, "uploads and local retention", 60*time.Second, func() bool {
		return listOffset(t, cl, "replay", -4) > n*9/10
	})
	consume := func(opts ...kgo.Opt) {
		c := b.Client(append([]kgo.Opt{kgo.ConsumeTopics("replay"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
		ctx := testCtx(t)
		for next := 0; next < n; {
			fs := c.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Errorf("consumed %d of %d records before the deadline", next, n)
				return
			}
			fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
			for _, r := range fs.Records() {
				if r.Offset != int64(next) || !bytes.Equal(r.Value, tieredValue(next)) {
					t.Errorf("record %d: offset %d, value %.20q", next, r.Offset, r.Value)
					return
				}
				next++
			}
		}
	}
	var wg sync.WaitGroup
	for _, opts := range [][]kgo.Opt{
		{kgo.FetchMaxPartitionBytes(100 << 10)},
		{kgo.FetchMaxPartitionBytes(300 << 10)},
		{kgo.FetchMaxPartitionBytes(1 << 20), kgo.FetchMaxBytes(1 << 20)},
		{kgo.FetchMaxPartitionBytes(200 << 10), kgo.FetchMinBytes(8 << 20), kgo.FetchMaxWait(20 * time.Millisecond)},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			consume(opts...)
		}()
	}
	wg.Wait()
}
