package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestAConsumerKeepsReadingItsHotPartitionWhileTheStoreIsFrozen: a
// consumer of two partitions, one read from history that is in the bucket
// alone and one read at its end, goes on getting the hot partition's new
// records while the object store hangs (MinIO frozen with SIGSTOP). Each
// of its fetches holds the cold partition, and the broker held the whole
// fetch for the remote read's timeout (10 s): every hot record waited
// that long. When the store answers again, the history reads from
// offset 0, whole and in order.
func TestAConsumerKeepsReadingItsHotPartitionWhileTheStoreIsFrozen(t *testing.T) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: startTestEtcd(t, ctx),
		objectStore: srv.URL("frozen-read", "") + "&create_bucket=true", env: miniotest.Env(),
		// Local retention deletes uploaded segments at its next check.
		extra: []string{"--retention-check-interval", "200ms"}}
	startClusterBroker(t, p)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	defer func() {
		if t.Failed() {
			t.Logf("broker:\n%s", tail(p.stderr.String(), 6000))
		}
	}()

	prod, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// Batches well below a segment, uncompressed: 16 KiB segments
		// of about 23 records.
		kgo.ProducerBatchMaxBytes(4096), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	configs := map[string]*string{"segment.bytes": ptr("16384"), "local.retention.bytes": ptr("32768"), "file.delete.delay.ms": ptr("1")}
	if _, err := kadm.NewClient(prod).CreateTopic(ctx, 2, 1, configs, "t"); err != nil {
		t.Fatal(err)
	}
	const history = 600
	pad := make([]byte, 700)
	for i := range history {
		prod.Produce(ctx, &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "%06d-%s", i, pad)}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	procs := []*brokerProc{p}
	waitUntil(t, "partition 0's first records to leave the broker's disk", func() bool { return localStarts(procs, "t-0")[0] > 0 })

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	cons, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.FetchMaxWait(500*time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().At(0), 1: kgo.NewOffset().At(0)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var mu sync.Mutex
	hotAt := map[int]time.Time{} // hot record -> when the consumer got it
	var cold []*kgo.Record
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			fs := cons.PollFetches(pollCtx)
			now := time.Now()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if r.Partition == 1 {
					n, _ := strconv.Atoi(string(r.Value))
					hotAt[n] = now
				} else {
					cold = append(cold, r)
				}
			})
			mu.Unlock()
		}
	}()
	defer func() {
		stopPolling()
		<-polled
	}()

	// Hot records, each acknowledged before the next, while the store is
	// frozen; each must reach the consumer well before the remote read's
	// timeout would have let its fetch go.
	const hot = 20
	sentAt := make([]time.Time, hot)
	for i := range hot {
		sentAt[i] = time.Now()
		if err := prod.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitUntil(t, "the hot records", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hotAt) == hot
	})
	mu.Lock()
	var worst time.Duration
	for i := range hot {
		worst = max(worst, hotAt[i].Sub(sentAt[i]))
	}
	coldDuring := len(cold)
	mu.Unlock()
	t.Logf("the store frozen, the slowest hot record reached the consumer %v after it was sent", worst.Round(time.Millisecond))
	if worst > 5*time.Second {
		t.Errorf("a hot record took %v to reach the consumer while the store was frozen", worst)
	}
	if coldDuring > 0 {
		t.Fatalf("%d cold records read while the store was frozen: the test did not reach the bucket", coldDuring)
	}

	srv.Resume()
	resumed = true
	waitUntil(t, "the history, the store back", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(cold) >= history
	})
	mu.Lock()
	defer mu.Unlock()
	for i, r := range cold[:history] {
		if r.Offset != int64(i) || string(r.Value[:6]) != fmt.Sprintf("%06d", i) {
			t.Fatalf("history record %d: offset %d, value %.6q", i, r.Offset, r.Value)
		}
	}
}
