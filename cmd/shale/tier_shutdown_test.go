package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestSIGTERMWithAFrozenStoreExitsPromptly: a broker whose object store
// hangs (MinIO frozen with SIGSTOP) while uploads are on their way shuts
// down on SIGTERM without waiting for the store. It waited 30 s (the call
// timeout) whenever an upload was in flight, to delete that upload's
// objects; the deletes now go on for objectstore.CleanupGrace after the
// shutdown ends the upload, and orphan cleanup takes what remains. Uploads
// are in flight at the signal in about half the runs.
func TestSIGTERMWithAFrozenStoreExitsPromptly(t *testing.T) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: startTestEtcd(t, ctx),
		objectStore: srv.URL("frozen-shutdown", "") + "&create_bucket=true", env: miniotest.Env()}
	startClusterBroker(t, p)
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 8, 1, map[string]*string{"segment.bytes": ptr("65536")}, "t"); err != nil {
		t.Fatal(err)
	}
	produce := func() {
		v := make([]byte, 1000)
		for range 4000 {
			cl.Produce(ctx, &kgo.Record{Value: v}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	produce()
	srv.Pause()
	defer srv.Resume()
	// Segments sealed now are uploaded to a store that answers nothing.
	produce()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after SIGTERM:\n%s", tail(p.stderr.String(), 3000))
	}
}
