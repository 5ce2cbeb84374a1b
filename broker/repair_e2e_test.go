package broker_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// flipInSealedSegment flips a byte inside the first batch of the second
// segment of the partition log in dir, and returns that segment's path and
// its bytes before.
func flipInSealedSegment(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(logs)
	if len(logs) < 3 {
		t.Fatalf("only %d segments in %s", len(logs), dir)
	}
	good, err := os.ReadFile(logs[1])
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(logs[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{good[100] ^ 0xff}, 100); err != nil {
		t.Fatal(err)
	}
	return logs[1], good
}

// waitRepaired waits until the segment at path holds good again and its
// partition records no lost range.
func waitRepaired(t *testing.T, path string, good []byte) {
	t.Helper()
	brokertest.WaitFor(t, 20*time.Second, "the damaged segment to be repaired", func() (bool, string) {
		data, _ := os.ReadFile(path)
		_, err := os.Stat(filepath.Join(filepath.Dir(path), "lost-ranges"))
		return bytes.Equal(data, good) && os.IsNotExist(err), fmt.Sprintf("segment restored: %v, lost-ranges: %v", bytes.Equal(data, good), err)
	})
}

func checkRepairedRead(t *testing.T, recs []*kgo.Record, value func(int) []byte) {
	t.Helper()
	for i, r := range recs {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, value(i)) {
			t.Fatalf("record %d: offset %d value %.20q", i, r.Offset, r.Value)
		}
	}
}

// RF=1 with tiering: a byte flipped in a sealed segment that is also in
// the bucket (MinIO) is put back from there; every record reads again.
func TestLostRangeIsRepairedFromTheBucket(t *testing.T) {
	srv := miniotest.Start(t)
	logs := &logCapture{}
	b := brokertest.StartWithLog(t, slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}), func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: srv.NewS3(t, nil), UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.ScrubInterval = 300 * time.Millisecond
	})
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "mended", 1, map[string]*string{
		"segment.bytes": str("65536"), "retention.ms": str("-1"),
	})
	const n = 800
	produceTiered(t, b, "mended", n)
	cl := b.Client()
	dir := filepath.Join(brokertest.LogDir(b.Dir), "mended-0")
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(segs)
	var third int64
	fmt.Sscanf(filepath.Base(segs[2]), "%d.log", &third)
	waitFor(t, "the first two segments in the bucket", 30*time.Second, func() bool {
		return listOffset(t, cl, "mended", -5) >= third-1
	})
	path, good := flipInSealedSegment(t, dir)
	waitRepaired(t, path, good)
	logs.find(t, "repaired a lost range of a sealed segment", "topic", "mended", "source", "bucket")
	if v, _ := gather(t, b.Registry).get("shale_lost_range_repairs_total", "result=repaired"); v < 1 {
		t.Fatalf("shale_lost_range_repairs_total{result=repaired} = %v", v)
	}
	checkRepairedRead(t, consumeN(t, b, "mended", n), tieredValue)
}

// RF=3 without tiering: a byte flipped in the leader's sealed segment is
// put back from an in-sync follower: the three logs agree again.
func TestLostRangeIsRepairedFromAReplica(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(c *broker.Config) { c.ScrubInterval = 300 * time.Millisecond })
	ctx := testCtx(t)
	adm := c.Admin()
	seg := "2048"
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"segment.bytes": &seg}, "mended"); err != nil {
		t.Fatal(err)
	}
	value := func(i int) []byte { return fmt.Appendf(nil, "record-%03d-%0200d", i, i) }
	cl := c.Client(kgo.DefaultProduceTopic("mended"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const n = 60
	for i := range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value(i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitReplicated(t, c, "mended", n)
	leader, _, _ := partitionState(t, adm, "mended")
	path, good := flipInSealedSegment(t, filepath.Join(c.Brokers[leader].Dir, "mended-0"))
	waitRepaired(t, path, good)
	cons := c.Client(kgo.ConsumeTopics("mended"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", len(recs), n, err)
		}
		recs = append(recs, fs.Records()...)
	}
	checkRepairedRead(t, recs, value)
	c.CheckReplicasAgree(t, "mended", 0, 1, 2)
}

// A lost range that neither the bucket nor another replica holds stays
// recorded as lost, and a log line says so.
func TestLostRangeWithoutASourceStaysLost(t *testing.T) {
	logs := &logCapture{}
	b := brokertest.StartWithLog(t, slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}),
		func(c *broker.Config) { c.ScrubInterval = 300 * time.Millisecond })
	seg := "2048"
	createTopic(t, b.Admin(), "alone", 1, map[string]*string{"segment.bytes": &seg})
	cl := b.Client(kgo.DefaultProduceTopic("alone"))
	for i := range 60 {
		produceSync(t, cl, &kgo.Record{Value: fmt.Appendf(nil, "record-%03d-%0200d", i, i)})
	}
	dir := filepath.Join(brokertest.LogDir(b.Dir), "alone-0")
	path, good := flipInSealedSegment(t, dir)
	line := logs.find(t, "a lost range could not be repaired: it stays recorded as lost and reads skip it; tried again later", "topic", "alone", "partition", 0)
	if line["level"] != "ERROR" || line["tried"] == nil {
		t.Fatalf("log line %v", line)
	}
	if v, _ := gather(t, b.Registry).get("shale_lost_range_repairs_total", "result=failed"); v < 1 {
		t.Fatalf("shale_lost_range_repairs_total{result=failed} = %v", v)
	}
	if _, err := os.Stat(filepath.Join(dir, "lost-ranges")); err != nil {
		t.Fatalf("the lost range is no longer recorded: %v", err)
	}
	if data, _ := os.ReadFile(path); bytes.Equal(data, good) {
		t.Fatal("the segment was changed back with no source")
	}
	// The operator's view (GET /v1/lost-ranges): the range, and why it
	// is still lost.
	brokertest.WaitFor(t, 10*time.Second, "the failed repair to be reported", func() (bool, string) {
		got := b.B.LostRanges("alone")
		return len(got) == 1 && got[0].LastRepairError != "", fmt.Sprintf("%+v", got)
	})
	got := b.B.LostRanges("")
	if len(got) != 1 || got[0].Topic != "alone" || got[0].Partition != 0 || !got[0].Leader || len(got[0].Ranges) != 1 ||
		got[0].Ranges[0].To <= got[0].Ranges[0].From || got[0].LastRepair.IsZero() || got[0].ReadError != "" {
		t.Fatalf("LostRanges: %+v", got)
	}
	if other := b.B.LostRanges("other"); len(other) != 0 {
		t.Fatalf("LostRanges(other): %+v", other)
	}
}
