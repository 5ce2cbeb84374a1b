package broker_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// produceTiered writes n records of tieredValue to topic, uncompressed.
func produceTiered(t *testing.T, b *brokertest.Broker, topic string, n int) {
	t.Helper()
	cl := tieredProducer(b, topic)
	produceTieredValues(t, cl, 0, n, 50)
}

func createTieredTopic(t *testing.T, b *brokertest.Broker, topic string) {
	t.Helper()
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), topic, 1, map[string]*string{
		"segment.bytes":         str("65536"),
		"local.retention.bytes": str("1"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
}

// TestTieredOnMinIO tiers to a real MinIO: the objects an independent
// client (minio-go) sees are the segments byte for byte (batches with good
// CRCs), and a replay from offset 0 survives MinIO being killed and
// restarted in the middle (cold reads fail with a retriable error, then
// resume).
func TestTieredOnMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	s3 := srv.NewS3(t, nil)
	b := startTiered(t, s3)
	createTieredTopic(t, b, "minio")
	const n = 1200
	produceTiered(t, b, "minio", n)
	cl := b.Client()
	waitFor(t, "uploads and local retention", 30*time.Second, func() bool {
		return localSegments(t, b, "minio") <= 2 && listOffset(t, cl, "minio", -4) > 0
	})

	// What an independent client finds in the bucket.
	ctx := context.Background()
	mc := srv.Client()
	var logs, manifests int
	for obj := range mc.ListObjects(ctx, s3.BucketName(), minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		switch {
		case strings.HasSuffix(obj.Key, ".log"):
			logs++
			o, err := mc.GetObject(ctx, s3.BucketName(), obj.Key, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(o)
			o.Close()
			for rest := buf.Bytes(); len(rest) > 0; {
				bt, r, err := recordbatch.Next(rest)
				if err == nil {
					err = recordbatch.Check(bt)
				}
				if err != nil {
					t.Fatalf("%s: %v", obj.Key, err)
				}
				rest = r
			}
		case strings.HasSuffix(obj.Key, "/manifest"):
			manifests++
		}
	}
	if logs < 5 || manifests != 1 {
		t.Fatalf("bucket holds %d segments and %d manifests", logs, manifests)
	}

	// Replay from 0, killing MinIO a third of the way in.
	c := b.Client(kgo.ConsumeTopics("minio"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(8000))
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var got []*kgo.Record
	killed := false
	for len(got) < n {
		fs := c.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("replayed %d of %d records", len(got), n)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetch error (retried): %v", err) })
		got = append(got, fs.Records()...)
		if !killed && len(got) > n/3 {
			killed = true
			srv.Kill()
			time.Sleep(2 * time.Second)
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, r := range got[:n] {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d", i, r.Offset)
		}
	}
}
