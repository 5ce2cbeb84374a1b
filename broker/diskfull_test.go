package broker_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// smallFS mounts a tmpfs of size bytes at dir (it needs root). Without
// one, the test fails under CI=true and is skipped elsewhere.
func smallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a small filesystem for the disk-full test: %v: %s", err, out)
		}
		t.Skipf("cannot mount a small filesystem (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fill writes a file in dir until the filesystem has at most leave bytes
// free (0: until it is full).
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		free := freeBytes(t, dir)
		if free <= leave {
			return path
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			return path // full
		}
	}
}

func produceErr(t *testing.T, cl *kgo.Client, v string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr()
}

// eventually retries fn for up to 20 seconds.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Below log-dir-reserve-bytes, produce is refused with KAFKA_STORAGE_ERROR
// and the broker reports it in its health; once space returns, produce
// works again without a restart.
func TestLogDirReserveRefusesProduceUntilSpaceReturns(t *testing.T) {
	dir := t.TempDir()
	logDir := brokertest.LogDir(dir)
	smallFS(t, logDir, 48<<20)
	b := brokertest.StartOn(t, dir, nil, func(c *broker.Config) { c.LogDirReserveBytes = 16 << 20 })
	createTopic(t, b.Admin(), "tight", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("tight"), kgo.RecordRetries(0), kgo.MaxBufferedRecords(1))
	if err := produceErr(t, cl, "before"); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, logDir, 8<<20)
	eventually(t, "produce below the reserve", func() error {
		if err := produceErr(t, cl, "refused"); !errors.Is(err, kerr.KafkaStorageError) {
			return errors.New("not refused: " + errString(err))
		}
		return nil
	})
	if err := b.B.Ready(); err == nil {
		t.Fatal("ready below the log dir reserve")
	}
	// Alive all the same: a restart would not free the disk.
	if err := b.B.Live(context.Background()); err != nil {
		t.Fatalf("not live below the log dir reserve: %v", err)
	}
	os.Remove(filler)
	eventually(t, "produce after space returned", func() error { return produceErr(t, cl, "after") })
	eventually(t, "ready after space returned", b.B.Ready)
}

// When the disk fills up anyway (no reserve), the write fails, the log goes
// offline (KAFKA_STORAGE_ERROR, not ready), and the broker reopens it by
// itself once space returns: nothing acknowledged is lost.
func TestFullLogDiskRecoversByItself(t *testing.T) {
	dir := t.TempDir()
	logDir := brokertest.LogDir(dir)
	smallFS(t, logDir, 32<<20)
	b := brokertest.StartOn(t, dir, nil, func(c *broker.Config) { c.LogDirReserveBytes = -1 })
	createTopic(t, b.Admin(), "full", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("full"), kgo.RecordRetries(0), kgo.MaxBufferedRecords(1), kgo.ProducerBatchCompression(kgo.NoCompression()))
	acked := 0
	for i := 0; i < 10; i++ {
		if err := produceErr(t, cl, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		acked++
	}
	filler := fill(t, logDir, 0)
	big := string(make([]byte, 256<<10))
	eventually(t, "produce on a full disk", func() error {
		if err := produceErr(t, cl, big); !errors.Is(err, kerr.KafkaStorageError) {
			if err == nil {
				acked++
			}
			return errors.New("not refused: " + errString(err))
		}
		return nil
	})
	if err := b.B.Ready(); err == nil {
		t.Fatal("ready with a partition offline")
	}
	if err := b.B.Live(context.Background()); err != nil {
		t.Fatalf("not live with a partition offline on a full disk: %v", err)
	}
	os.Remove(filler)
	eventually(t, "produce after space returned", func() error { return produceErr(t, cl, "after") })
	acked++
	eventually(t, "ready after space returned", b.B.Ready)
	if got := consumeN(t, b, "full", acked); len(got) < acked {
		t.Fatalf("%d records read back, %d acknowledged", len(got), acked)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// Below metadata-reserve-bytes on the embedded etcd's filesystem, admin
// writes are refused with KAFKA_STORAGE_ERROR (etcd itself would exit when
// a write fails for space) and etcd keeps serving; once space returns,
// they work again.
func TestMetadataReserveRefusesAdminWrites(t *testing.T) {
	dir := t.TempDir()
	etcdDir := filepath.Join(dir, "etcd")
	smallFS(t, etcdDir, 192<<20)
	b := brokertest.StartOn(t, dir, nil, func(c *broker.Config) {
		c.MetadataDir = etcdDir
		c.MetadataReserveBytes = 32 << 20
	})
	adm := b.Admin()
	filler := fill(t, etcdDir, 16<<20)
	eventually(t, "not ready below the metadata reserve", func() error {
		if b.B.Ready() == nil {
			return errors.New("ready")
		}
		return b.B.Live(context.Background())
	})
	eventually(t, "create a topic below the reserve", func() error {
		resp, err := adm.CreateTopic(testCtx(t), 1, 1, nil, "refused")
		if err == nil {
			err = resp.Err
		}
		if !errors.Is(err, kerr.KafkaStorageError) {
			return errors.New("not refused: " + errString(err))
		}
		return nil
	})
	if _, err := adm.ListTopics(testCtx(t)); err != nil {
		t.Fatalf("metadata reads after the refusal: %v", err)
	}
	os.Remove(filler)
	eventually(t, "create a topic after space returned", func() error {
		resp, err := adm.CreateTopic(testCtx(t), 1, 1, nil, "accepted")
		if err == nil {
			err = resp.Err
		}
		return err
	})
}
