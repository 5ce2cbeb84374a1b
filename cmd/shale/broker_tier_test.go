package main

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestBrokerUploadsSealedSegmentsToMinIO: three `shale broker` processes
// with an s3:// object store (a real MinIO, the bucket created by the
// brokers through create_bucket=true) upload the sealed segments of an
// RF=3 topic with segment.bytes=65536, produced in small acks=all batches,
// within seconds: segment objects appear in the bucket, and the replicas'
// logs agree.
func TestBrokerUploadsSealedSegmentsToMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	const bucket = "brokers"
	store := srv.URL(bucket, "") + "&create_bucket=true"
	procs, seeds := startBrokerProcs(t, etcdAddr, 3, func(p *brokerProc) {
		p.objectStore, p.env = store, miniotest.Env()
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("up"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	segBytes := "65536"
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 3, map[string]*string{"segment.bytes": &segBytes}, "up"); err != nil {
		t.Fatal(err)
	}
	// About 400 KB in batches of 20 records of 500 bytes: several
	// segments of 64 KiB seal.
	for i := 0; i < 800; i += 20 {
		var recs []*kgo.Record
		for j := i; j < i+20; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(strings.Repeat("u", 500))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	mc := srv.Client()
	for {
		var keys []string
		for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err == nil {
				keys = append(keys, o.Key)
			}
		}
		segs := 0
		for _, k := range keys {
			if strings.HasSuffix(k, ".log") {
				segs++
			}
		}
		if segs >= 3 && uploadedSegments(procs) >= 3 {
			t.Logf("%d segments in the bucket %s after the last acknowledgement", segs, time.Since(start).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("segments in the bucket: %v; shale_tiering_uploaded_segments_total of the brokers: %v", keys, uploadedSegments(procs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// tier status, given the Kafka addresses alone, finds the leader's
	// HTTP address through the cluster and shows what it uploaded.
	waitUntil(t, "tier status from --brokers alone", func() bool {
		var rows []tierRow
		out, err := runCLI(t, "tier", "status", "up", "--brokers", strings.Join(seeds, ","), "-o", "json")
		if err != nil || jsonUnmarshal(out, &rows) != nil {
			t.Logf("tier status: %v\n%s", err, out)
			return false
		}
		return len(rows) == 1 && rows[0].Reported && rows[0].Tiered && rows[0].RemoteSegments >= 1
	})
	// The followers copy the leader's bytes: a replica may be behind,
	// never different.
	checkReplicasAgree(t, procs, "up")
}

// uploadedSegments sums shale_tiering_uploaded_segments_total over the
// brokers' /metrics.
func uploadedSegments(procs []*brokerProc) float64 {
	var sum float64
	for _, p := range procs {
		resp, err := http.Get("http://" + p.httpAddr + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "shale_tiering_uploaded_segments_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				sum += f
			}
		}
		resp.Body.Close()
	}
	return sum
}
