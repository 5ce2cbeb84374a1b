package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestSIGKILLDuringAnUploadLosesNothing runs a `shale broker` process
// with a MinIO store that kills itself with SIGKILL at a fault point of
// its third upload batch: after the segments' objects are PUT and
// before the manifest commit names them, and after the commit before the
// local log may delete its copy. Restarted, the broker deletes the
// orphaned objects (or finds none), uploads on from where the manifest
// ends, keeps a contiguous manifest naming only objects that exist, drops
// the committed local copy, and a consumer from offset 0 reads every
// acknowledged record once, in order.
func TestSIGKILLDuringAnUploadLosesNothing(t *testing.T) {
	for _, point := range []string{tiering.FaultUploaded, tiering.FaultCommitted} {
		t.Run(point, func(t *testing.T) { killDuringUpload(t, point) })
	}
}

func killDuringUpload(t *testing.T, point string) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	const bucket = "killed"
	env := append(miniotest.Env(), "SHALE_TEST_ORPHAN_GRACE=1ms")
	p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr,
		objectStore: srv.URL(bucket, "") + "&create_bucket=true", env: append(env, "SHALE_TEST_KILL_AT="+point+":3"),
		// Local retention deletes uploaded segments at its next check.
		extra: []string{"--retention-check-interval", "500ms"}}
	startClusterBroker(t, p)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	defer func() {
		if t.Failed() {
			t.Logf("broker:\n%s", tail(p.stderr.String(), 6000))
		}
	}()

	adm, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	configs := map[string]*string{"segment.bytes": ptr("65536"), "local.retention.ms": ptr("1"), "file.delete.delay.ms": ptr("1")}
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, configs, "tk"); err != nil {
		t.Fatal(err)
	}
	adm.Close()

	// Produce until the broker dies at its third upload, then again after
	// its restart for three more segments; values are record numbers,
	// keys pad each record to about 600 bytes.
	var acked []int
	next := 0
	produce := func(until func() bool) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.DefaultProduceTopic("tk"),
			kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RequestTimeoutOverhead(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		// An idempotent producer keeps what the dead broker may have
		// written until it can tell: closing the client fails it.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-p.exited:
				cl.Close()
			case <-done:
			}
		}()
		for !until() && ctx.Err() == nil {
			var recs []*kgo.Record
			for range 20 {
				recs = append(recs, &kgo.Record{Key: []byte(strings.Repeat("k", 600)), Value: []byte(strconv.Itoa(next))})
				next++
			}
			res := cl.ProduceSync(ctx, recs...)
			for _, r := range res {
				if r.Err == nil {
					v, _ := strconv.Atoi(string(r.Record.Value))
					acked = append(acked, v)
				}
			}
		}
	}
	produce(func() bool {
		select {
		case <-p.exited:
			return true
		default:
			return false
		}
	})
	if ctx.Err() != nil {
		t.Fatalf("the broker did not die at %s", point)
	}
	if !strings.Contains(p.stderr.String(), "SHALE_TEST_KILL_AT") {
		t.Fatalf("the broker exited, not at the fault point")
	}

	// What the crash left: two commits named at least two segments; the
	// third batch's objects (a segment and its companion each) are in
	// the bucket unnamed (uploaded), or named and still on the local
	// disk (committed).
	mc := srv.Client()
	m, keys := readTierState(t, ctx, mc, bucket)
	if n := len(m.Segments); n < 2 && point == tiering.FaultUploaded || n < 3 && point == tiering.FaultCommitted {
		t.Fatalf("killed at %s: the manifest names %d segments", point, n)
	}
	orphans := unnamed(m, keys)
	// Uploads in flight beside the one killed (several per partition)
	// may have left objects of later segments, a segment without its
	// companion among them; never an object of a segment the manifest
	// covers. Killed at uploaded, one segment's two objects at least are
	// there unnamed.
	objects := map[int64]int{}
	for _, k := range orphans {
		base, err := strconv.ParseInt(strings.SplitN(filepath.Base(k), "-", 2)[0], 10, 64)
		if err != nil || base < m.End() {
			t.Fatalf("killed at %s: objects the manifest does not name: %v", point, orphans)
		}
		objects[base]++
	}
	if point == tiering.FaultUploaded && !slices.Contains(slices.Collect(maps.Values(objects)), 2) {
		t.Fatalf("killed at %s: no segment's two objects among those the manifest does not name: %v", point, orphans)
	}
	last := m.Segments[len(m.Segments)-1]
	localCopy := filepath.Join(p.dataDir, "log", "tk-0", fmt.Sprintf("%020d.log", last.BaseOffset))
	if point == tiering.FaultCommitted {
		if _, err := os.Stat(localCopy); err != nil {
			t.Fatalf("the committed segment's local copy is gone before the local log was told: %v", err)
		}
	}
	killedAt := m.End()

	// Restart without the fault: cleanup, catch-up, more records.
	p.env = env
	startClusterBroker(t, p)
	waitUntil(t, "orphaned objects deleted", func() bool {
		_, keys := readTierState(t, ctx, mc, bucket)
		for _, k := range orphans {
			if keys[k] {
				return false
			}
		}
		return true
	})
	if point == tiering.FaultCommitted {
		waitUntil(t, "the committed segment's local copy deleted", func() bool {
			_, err := os.Stat(localCopy)
			return os.IsNotExist(err)
		})
	}
	produce(func() bool {
		m, _ := readTierState(t, ctx, mc, bucket)
		return len(m.Segments) >= 6
	})
	m, keys = readTierState(t, ctx, mc, bucket)
	if m.Start() != 0 {
		t.Fatalf("the manifest starts at %d", m.Start())
	}
	for i, s := range m.Segments {
		if i > 0 && s.BaseOffset != m.Segments[i-1].NextOffset {
			t.Fatalf("manifest segments %d and %d: [%d, %d) then [%d, %d)", i-1, i, m.Segments[i-1].BaseOffset, m.Segments[i-1].NextOffset, s.BaseOffset, s.NextOffset)
		}
		base := fmt.Sprintf("%020d-%s", s.BaseOffset, hex.EncodeToString(s.ID[:]))
		for _, ext := range []string{".log", ".indexes"} {
			if !hasSuffixKey(keys, base+ext) {
				t.Fatalf("the manifest names %s%s, not in the bucket", base, ext)
			}
		}
	}
	if m.End() <= killedAt {
		t.Fatalf("no upload after the restart: the manifest ends at %d", m.End())
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.ConsumeTopics("tk"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	brokertest.CheckAckedReadOnce(t, ctx, cons, "tk", acked)
	t.Logf("killed at %s with the manifest ending at %d; %d records acknowledged, all read once in order from a manifest of %d segments",
		point, killedAt, len(acked), len(m.Segments))
}

func ptr(s string) *string { return &s }

// readTierState returns the one partition manifest in bucket and every
// key there, listed after the manifest was read: a live broker puts a
// segment's objects before the commit that names them, so every object
// the manifest names is in the listing (listed first, a commit between
// the listing and the read named objects the listing had missed).
func readTierState(t *testing.T, ctx context.Context, mc *minio.Client, bucket string) (*tiering.Manifest, map[string]bool) {
	t.Helper()
	list := func() map[string]bool {
		keys := map[string]bool{}
		for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			keys[o.Key] = true
		}
		return keys
	}
	keys := list()
	var manifest string
	for k := range keys {
		if strings.HasSuffix(k, "/0/manifest") {
			manifest = k
		}
	}
	if manifest == "" {
		return &tiering.Manifest{}, keys
	}
	obj, err := mc.GetObject(ctx, bucket, manifest, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tiering.DecodeManifest(data, false)
	if err != nil {
		t.Fatalf("%s: %v", manifest, err)
	}
	if len(m.Spills) > 0 {
		t.Fatalf("%s spilled", manifest)
	}
	return m, list()
}

// unnamed lists the segment and companion objects m does not name.
func unnamed(m *tiering.Manifest, keys map[string]bool) []string {
	named := map[string]bool{}
	for _, s := range m.Segments {
		named[fmt.Sprintf("%020d-%s", s.BaseOffset, hex.EncodeToString(s.ID[:]))] = true
	}
	var out []string
	for k := range keys {
		if !strings.HasSuffix(k, ".log") && !strings.HasSuffix(k, ".indexes") {
			continue
		}
		name := filepath.Base(k)
		if !named[strings.TrimSuffix(strings.TrimSuffix(name, ".log"), ".indexes")] {
			out = append(out, k)
		}
	}
	return out
}

func hasSuffixKey(keys map[string]bool, suffix string) bool {
	for k := range keys {
		if strings.HasSuffix(k, "/"+suffix) {
			return true
		}
	}
	return false
}
