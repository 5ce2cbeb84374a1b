package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// TestTierVerifyFindsDamageInTheBucket: `shale tier verify` beside a live
// node that tiers a topic reports every partition whole (the segments read
// back, nothing damaged); a byte flipped in one uploaded segment and a
// companion deleted are each reported with their key, the command exits
// with an error, and --quick (no segment reads) sees the missing companion
// but not the flipped byte.
func TestTierVerifyFindsDamageInTheBucket(t *testing.T) {
	storeDir := t.TempDir()
	store := "file://" + storeDir
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startDev(t, "", "SHALE_OBJECT_STORE="+store, "SHALE_TOPIC_DEFAULT=log.segment.bytes=16384,log.roll.ms=500")
	adm := kadm.NewClient(p.client())
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "audit"); err != nil {
		t.Fatal(err)
	}
	prod := p.client(kgo.DefaultProduceTopic("audit"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := 0; i < 300; i += 20 {
		var recs []*kgo.Record
		for j := i; j < i+20; j++ {
			recs = append(recs, &kgo.Record{Partition: int32(j % 2), Value: restoreRecord(int32(j%2), j)})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "several segments of each partition uploaded", func() bool {
		sts := tierStatus(t, p.httpAddr, "audit")
		for _, st := range sts {
			if st.RemoteEndOffset < 60 {
				return false
			}
		}
		return len(sts) == 2
	})

	var rows []verifiedPartition
	cliJSON(t, &rows, "tier", "verify", "--object-store", store)
	if len(rows) != 2 {
		t.Fatalf("verified %d partitions, want 2: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Topic != "audit" || r.Segments < 2 || r.ReadBytes != r.Bytes || len(r.Problems) != 0 {
			t.Fatalf("partition %d: %d segments, %d of %d bytes read, problems %v", r.Partition, r.Segments, r.ReadBytes, r.Bytes, r.Problems)
		}
	}

	// Damage partition 0's first segment (a byte of its first batch's
	// records, past the header) and delete the companion of its second.
	bucket, err := objectstore.Open(ctx, store, objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	td, err := adm.ListTopics(ctx, "audit")
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: "audit", TopicID: td["audit"].ID, Index: 0}
	m, err := tiering.LoadManifest(ctx, bucket, tiering.Layout{}, part)
	if err != nil {
		t.Fatal(err)
	}
	var segs []tiering.Segment
	if err := tiering.WalkSegments(ctx, tiering.BucketSpills{Bucket: bucket}, part, m, -1, nil, func(s tiering.Segment) bool {
		segs = append(segs, s)
		return true
	}); err != nil || len(segs) < 2 {
		t.Fatalf("partition 0's segments: %v %v", segs, err)
	}
	rotten := tiering.Layout{}.SegmentKey(part, segs[0].BaseOffset, segs[0].ID)
	file := filepath.Join(storeDir, "objects", filepath.FromSlash(rotten))
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 0x40
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	gone := tiering.Layout{}.CompanionKey(part, segs[1].BaseOffset, segs[1].ID)
	if err := bucket.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "tier", "verify", "audit", "--object-store", store)
	if !errors.Is(err, errDamaged) {
		t.Fatalf("verify of a damaged bucket: %v, want %v\n%s", err, errDamaged, out)
	}
	for _, want := range []string{rotten + ": byte 0", "crc", gone + ": the companion object is missing"} {
		if !strings.Contains(out, want) {
			t.Fatalf("verify's report does not say %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "tier", "verify", "audit", "--object-store", store, "--quick")
	if !errors.Is(err, errDamaged) || strings.Contains(out, rotten) || !strings.Contains(out, gone) {
		t.Fatalf("verify --quick: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "tier", "verify", "nope", "--object-store", store); err == nil || !strings.Contains(err.Error(), "no topic nope") {
		t.Fatalf("verify of a topic the bucket does not hold: %v", err)
	}

	// A topic descriptor that does not decode is reported, and the other
	// topics are still checked.
	ghost := "ghost-AAAAAAAAAAAAAAAAAAAAAA/topic.json"
	if _, err := bucket.Put(ctx, ghost, strings.NewReader("{not json"), 9, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "tier", "verify", "--object-store", store, "--quick")
	if !errors.Is(err, errDamaged) || !strings.Contains(out, ghost+": tiering: corrupt object") || !strings.Contains(out, gone) {
		t.Fatalf("verify with a damaged topic descriptor: %v\n%s", err, out)
	}
}
