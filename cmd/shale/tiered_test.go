package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func tieredRecord(i int) []byte {
	return []byte(fmt.Sprintf("%05d-%s", i, strings.Repeat("r", 300+i%40)))
}

// files counts the files under dir whose names end with suffix.
func files(dir, suffix string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), suffix) {
			n++
		}
		return nil
	})
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkRecords(t *testing.T, recs []*kgo.Record, n int) {
	t.Helper()
	for i, r := range recs[:n] {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredRecord(i)) {
			t.Fatalf("record %d: offset %d value %.20q", i, r.Offset, r.Value)
		}
	}
}

// TestDevTiersToItsDataDirAndSurvivesALostLogDisk: `shale dev` uploads
// sealed segments to file://DATA/objects by default and deletes them
// locally after upload; consumers read everything from offset 0. After
// the log directory is lost, the broker serves the history from the
// bucket again and new records continue after it.
func TestDevTiersToItsDataDirAndSurvivesALostLogDisk(t *testing.T) {
	dir := t.TempDir()
	env := []string{
		"SHALE_TOPIC_DEFAULT=log.segment.bytes=65536,log.local.retention.ms=1,log.roll.ms=500,log.segment.delete.delay.ms=1",
		"SHALE_RETENTION_CHECK_INTERVAL=100ms",
	}
	p := startDev(t, dir, env...)
	cl := p.client(kgo.DefaultProduceTopic("cold"), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.AllowAutoTopicCreation())
	const n = 1200
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < n; i += 40 {
		var recs []*kgo.Record
		for j := i; j < i+40; j++ {
			recs = append(recs, &kgo.Record{Value: tieredRecord(j)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if end := endOffset(t, p, "cold"); end != n {
		t.Fatalf("end offset %d, want %d", end, n)
	}
	logDir := filepath.Join(dir, "log", "cold-0")
	waitUntil(t, "every segment uploaded and deleted locally", func() bool {
		return files(filepath.Join(dir, "objects"), ".log") >= 5 && files(logDir, ".log") == 1 && files(logDir, ".log.deleted") == 0 &&
			localSegmentsEmpty(logDir)
	})
	c1 := p.client(kgo.ConsumeTopics("cold"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30000))
	checkRecords(t, consumeAll(t, c1, n), n)

	// The log disk is lost; etcd and the bucket are kept.
	p.stop(9)
	if err := os.RemoveAll(filepath.Join(dir, "log")); err != nil {
		t.Fatal(err)
	}
	p = startDev(t, dir, env...)
	c2 := p.client(kgo.ConsumeTopics("cold"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	checkRecords(t, consumeAll(t, c2, n), n)
	prod := p.client(kgo.DefaultProduceTopic("cold"))
	res, err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("after")}).First()
	if err != nil || res.Offset != n {
		t.Fatalf("a record after the disk loss went to offset %d (%v), want %d", res.Offset, err, n)
	}
}

// localSegmentsEmpty reports whether the only local segment is the empty
// active one.
func localSegmentsEmpty(dir string) bool {
	matches, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(matches) != 1 {
		return false
	}
	st, err := os.Stat(matches[0])
	return err == nil && st.Size() == 0
}
