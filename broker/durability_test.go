package broker_test

import (
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/vfs"
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

// gateFS holds the writes to files whose path contains match while a gate
// is armed, as a disk that stalls: the first one, or with every, all of
// them until the gate is closed.
type gateFS struct {
	vfs.FS
	match string
	syncs bool // hold fsyncs rather than writes
	every bool
	mu    sync.Mutex
	gate  chan struct{} // writes wait for it to close
	held  chan struct{} // closed when a write is held
	told  bool          // held is closed
}

func (g *gateFS) arm() (held, release chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.held, g.told = make(chan struct{}), make(chan struct{}), false
	return g.held, g.gate
}

func (g *gateFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil || !strings.Contains(name, g.match) {
		return f, err
	}
	return &gateFile{File: f, g: g}, nil
}

type gateFile struct {
	vfs.File
	g *gateFS
}

func (f *gateFile) hold(sync bool) {
	f.g.mu.Lock()
	gate, held := f.g.gate, f.g.held
	if sync != f.g.syncs {
		gate = nil
	}
	tell := gate != nil && !f.g.told
	if gate != nil && !f.g.every {
		f.g.gate = nil
	}
	if tell {
		f.g.told = true
	}
	f.g.mu.Unlock()
	if tell {
		close(held)
	}
	if gate != nil {
		<-gate
	}
}

func (f *gateFile) WriteAt(p []byte, off int64) (int, error) {
	f.hold(false)
	return f.File.WriteAt(p, off)
}

func (f *gateFile) Sync() error {
	f.hold(true)
	return f.File.Sync()
}

// Reads of data below the log end never wait for a write in progress
// (nor for its fsync): a stalled disk write stalls producers, not
// consumers of what is already there.
func TestFetchDoesNotWaitForAWrite(t *testing.T) {
	gfs := &gateFS{FS: vfs.OSFS{}, match: "slow-0/"}
	b := brokertest.StartOn(t, t.TempDir(), gfs)
	createTopic(t, b.Admin(), "slow", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("slow"), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	for i := 0; i < 10; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte("before")})
	}
	held, release := gfs.arm()
	defer close(release)
	go cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("stalled")})
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the produce never reached its write")
	}
	done := make(chan int, 1)
	go func() {
		recs := consumeN(t, b, "slow", 10)
		done <- len(recs)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a fetch below the log end waited for a stalled write")
	}
}

// A stalled fsync (an acks=all produce waiting for it) delays neither
// fetches nor acks=1 appends: the group commit runs outside the log's
// lock.
func TestStalledFsyncDelaysNeitherFetchesNorAppends(t *testing.T) {
	gfs := &gateFS{FS: vfs.OSFS{}, match: "slow-0/", syncs: true}
	b := brokertest.StartOn(t, t.TempDir(), gfs)
	createTopic(t, b.Admin(), "slow", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("slow"), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	for i := 0; i < 10; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte("before")})
	}
	held, release := gfs.arm()
	defer close(release)
	all := b.Client(kgo.DefaultProduceTopic("slow"), kgo.RequiredAcks(kgo.AllISRAcks()))
	acked := make(chan error, 1)
	go func() { acked <- all.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("durable")}).FirstErr() }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the acks=all produce never reached its fsync")
	}
	done := make(chan struct{})
	go func() {
		produceSync(t, cl, &kgo.Record{Value: []byte("meanwhile")})
		consumeN(t, b, "slow", 12)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an append or a fetch waited for a stalled fsync")
	}
	select {
	case err := <-acked:
		t.Fatalf("acks=all answered (%v) before its fsync finished", err)
	default:
	}
}

// flush.messages=1 makes acks=1 answers wait for the fsync too, as
// Kafka's flush in the append path does.
func TestFlushMessagesMakesAcksOneWaitForTheFsync(t *testing.T) {
	gfs := &gateFS{FS: vfs.OSFS{}, match: "flushed-0/", syncs: true}
	b := brokertest.StartOn(t, t.TempDir(), gfs)
	one := "1"
	createTopic(t, b.Admin(), "flushed", 1, map[string]*string{"flush.messages": &one})
	cl := b.Client(kgo.DefaultProduceTopic("flushed"), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	held, gate := gfs.arm()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	acked := make(chan error, 1)
	go func() { acked <- cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("flushed")}).FirstErr() }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no fsync for a batch that reached flush.messages")
	}
	select {
	case err := <-acked:
		t.Fatalf("acks=1 answered (%v) before the flush.messages fsync ended", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
}
