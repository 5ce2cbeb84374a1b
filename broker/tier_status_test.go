package broker_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

// TierStatus reports a tiered partition's local and remote bytes, upload
// lag and last upload while the archive loop uploads (run with -race: it
// reads what the loop writes).
func TestTierStatusFollowsUploads(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startTiered(t, bucket)
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "tiered", 1, map[string]*string{
		"remote.storage.enable": str("true"),
		"segment.bytes":         str("16384"),
	})
	createTopic(t, b.Admin(), "local", 1, map[string]*string{"remote.storage.enable": str("false")})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // readers during the uploads
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				b.B.TierStatus("")
			}
		}
	}()
	cl := b.Client(kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := 0; i < 100; i++ {
		produceSync(t, cl, &kgo.Record{Topic: "tiered", Value: tieredValue(i)}, &kgo.Record{Topic: "local", Value: tieredValue(i)})
	}
	var st []broker.PartitionTierStatus
	waitFor(t, "sealed segments uploaded", 30*time.Second, func() bool {
		st = b.B.TierStatus("tiered")
		return len(st) == 1 && st[0].RemoteSegments >= 2 && st[0].UploadLagSegments == 0
	})
	close(stop)
	wg.Wait()
	p := st[0]
	if !p.Leader || !p.Tiered || p.Loading || p.Broker != 0 || p.HighWatermark != 100 || p.LogEndOffset != 100 {
		t.Fatalf("status %+v", p)
	}
	if p.RemoteBytes <= 0 || p.LocalBytes <= 0 || p.RemoteStartOffset != 0 || p.RemoteEndOffset <= 0 || p.RemoteEndOffset >= 100 {
		t.Fatalf("sizes and offsets %+v", p)
	}
	if p.LastUpload.IsZero() || time.Since(p.LastUpload) > time.Minute {
		t.Fatalf("last upload %v", p.LastUpload)
	}
	all := b.B.TierStatus("")
	if len(all) != 2 || all[0].Topic != "local" || all[0].Tiered || all[0].RemoteStartOffset != -1 || all[1].Topic != "tiered" {
		t.Fatalf("every partition: %+v", all)
	}
}

// gatedBucket holds every segment upload (a .log Put) until open is
// closed, counting those waiting.
type gatedBucket struct {
	objectstore.Bucket
	open    chan struct{}
	waiting atomic.Int32
}

func (g *gatedBucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) (objectstore.Attrs, error) {
	if strings.HasSuffix(key, ".log") {
		g.waiting.Add(1)
		select {
		case <-g.open:
		case <-ctx.Done():
			g.waiting.Add(-1)
			return objectstore.Attrs{}, ctx.Err()
		}
		g.waiting.Add(-1)
	}
	return g.Bucket.Put(ctx, key, r, size, opts)
}

// TestUploadLagCountsEverySealedSegmentTheManifestLacks: the upload lag
// (shale_tiering_lag_segments and _bytes, and TierStatus) counts every
// sealed local segment the manifest does not hold yet, uploads in flight
// included, as Kafka's RemoteCopyLagSegments does; never the active
// segment. Once the uploads are committed it is 0. The eligible part
// (shale_tiering_lag_eligible_segments) is all of it on a lone broker.
func TestUploadLagCountsEverySealedSegmentTheManifestLacks(t *testing.T) {
	gate := &gatedBucket{Bucket: objectstore.NewMem(), open: make(chan struct{})}
	b := startTiered(t, gate)
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), "lag", 1, map[string]*string{"segment.bytes": str("16384"), "retention.ms": str("-1")})
	cl := b.Client(kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := 0; i < 120; i++ {
		produceSync(t, cl, &kgo.Record{Topic: "lag", Value: tieredValue(i)})
	}
	// The sealed segments' sizes, from the files (the last is active).
	var sealed []int64
	files, _ := filepath.Glob(filepath.Join(brokertest.LogDir(b.Dir), "lag-0", "*.log"))
	sort.Strings(files)
	for _, f := range files[:len(files)-1] {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, fi.Size())
	}
	if len(sealed) < 3 {
		t.Fatalf("%d sealed segments, want at least 3", len(sealed))
	}
	var wantBytes int64
	for _, n := range sealed {
		wantBytes += n
	}
	waitFor(t, "uploads in flight", 30*time.Second, func() bool { return gate.waiting.Load() > 0 })
	check := func(segs, bytes int64) {
		t.Helper()
		st := b.B.TierStatus("lag")
		if len(st) != 1 || st[0].UploadLagSegments != segs || st[0].UploadLagBytes != bytes {
			t.Fatalf("tier status %+v; want a lag of %d segments, %d bytes", st, segs, bytes)
		}
		s := gather(t, b.Registry)
		if v, _ := s.get("shale_tiering_lag_segments", "partition=0,topic=lag"); int64(v) != segs {
			t.Fatalf("shale_tiering_lag_segments %v, want %d", v, segs)
		}
		if v, _ := s.get("shale_tiering_lag_bytes", "partition=0,topic=lag"); int64(v) != bytes {
			t.Fatalf("shale_tiering_lag_bytes %v, want %d", v, bytes)
		}
		// A lone broker's high watermark is past every sealed segment:
		// all of them are eligible.
		if v, _ := s.get("shale_tiering_lag_eligible_segments", "partition=0,topic=lag"); int64(v) != segs {
			t.Fatalf("shale_tiering_lag_eligible_segments %v, want %d", v, segs)
		}
	}
	check(int64(len(sealed)), wantBytes)
	close(gate.open)
	waitFor(t, "every sealed segment committed", 30*time.Second, func() bool {
		st := b.B.TierStatus("lag")
		return len(st) == 1 && st[0].RemoteSegments >= int64(len(sealed))
	})
	check(0, 0)
}
