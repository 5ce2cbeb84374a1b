package broker_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/vfs/errorfs"
)

// A failed write takes its partition's log offline: the producer is told
// KAFKA_STORAGE_ERROR, the partition stays refused, and the broker's other
// partitions keep serving.
func TestFailedWriteTakesOnlyItsPartitionOffline(t *testing.T) {
	ffs := errorfs.New(nil)
	b := brokertest.StartOn(t, t.TempDir(), ffs)
	adm := b.Admin()
	createTopic(t, adm, "bad", 1, nil)
	createTopic(t, adm, "good", 1, nil)
	ffs.Inject(errorfs.Fault{Op: errorfs.OpWrite, PathContains: "bad-0/", Times: -1, Err: syscall.EIO, Short: true})
	cl := b.Client(kgo.DisableIdempotentWrite(), kgo.RecordRetries(0), kgo.RecordDeliveryTimeout(5*time.Second))
	err := cl.ProduceSync(testCtx(t), &kgo.Record{Topic: "bad", Value: []byte("lost")}).FirstErr()
	if !errors.Is(err, kerr.KafkaStorageError) {
		t.Fatalf("produce to the failed partition: %v", err)
	}
	if ffs.Fired() != 1 {
		t.Fatalf("%d faults fired, want the one write", ffs.Fired())
	}
	produceSync(t, cl, &kgo.Record{Topic: "good", Value: []byte("kept")})
	ends, err := adm.ListEndOffsets(testCtx(t), "bad", "good")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("bad", 0); !errors.Is(o.Err, kerr.KafkaStorageError) {
		t.Fatalf("list offsets of the offline partition: %+v", o)
	}
	if o, _ := ends.Lookup("good", 0); o.Err != nil || o.Offset != 1 {
		t.Fatalf("list offsets of the healthy partition: %+v", o)
	}
	// A retry is refused too, without touching the disk.
	err = cl.ProduceSync(testCtx(t), &kgo.Record{Topic: "bad", Value: []byte("retry")}).FirstErr()
	if !errors.Is(err, kerr.KafkaStorageError) || ffs.Fired() != 1 {
		t.Fatalf("retry: %v after %d faults", err, ffs.Fired())
	}
	consumeN(t, b, "good", 1)
}

// acks=all is answered only after the fsync; a failed fsync answers
// KAFKA_STORAGE_ERROR, never success.
func TestFailedFsyncFailsAcksAll(t *testing.T) {
	ffs := errorfs.New(nil)
	b := brokertest.StartOn(t, t.TempDir(), ffs)
	createTopic(t, b.Admin(), "sync", 1, nil)
	ffs.Inject(errorfs.Fault{Op: errorfs.OpSync, PathContains: "sync-0/", Times: -1, Err: syscall.EIO})
	cl := b.Client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordRetries(0), kgo.RecordDeliveryTimeout(5*time.Second))
	err := cl.ProduceSync(testCtx(t), &kgo.Record{Topic: "sync", Value: []byte("not durable")}).FirstErr()
	if !errors.Is(err, kerr.KafkaStorageError) {
		t.Fatalf("acks=all produce whose fsync failed: %v", err)
	}
	if ffs.Fired() != 1 {
		t.Fatalf("%d syncs failed, want 1 (no fsync after a failed one)", ffs.Fired())
	}
}
