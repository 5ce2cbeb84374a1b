package broker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
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
