package broker_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// localLog is what a broker's disk holds of partition 0 of topic: the
// base offsets of its segments (ascending) and their bytes.
func localLog(t *testing.T, b *brokertest.Broker, topic string) (bases []int64, bytes int64) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(brokertest.LogDir(b.Dir), topic+"-0", "*.log"))
	for _, f := range files {
		n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			bases = append(bases, n)
			bytes += fi.Size()
		}
	}
	return bases, bytes
}

// TestLocalRetentionBoundsTheDiskOfATieredTopic, on a real MinIO: a topic
// keeping 256 KiB on local disk (local.retention.bytes) and everything in
// total shrinks its local log to about that bound once segments are
// uploaded, never below what the manifest holds (with MinIO down the disk
// grows past the bound and nothing unuploaded goes); the earliest offset
// (-2) stays 0 while the earliest local offset (-4) moves with the local
// log, and a consumer from offset 0 reads every record. Then
// local.retention.ms (1 s, under a retention.ms of an hour) shrinks it to
// the active segment, and local.retention.bytes -2 means "as
// retention.bytes".
func TestLocalRetentionBoundsTheDiskOfATieredTopic(t *testing.T) {
	srv := miniotest.Start(t)
	s3 := srv.NewS3(t, nil)
	b := startTiered(t, s3)
	const (
		topic   = "localbound"
		segSize = 65536
		bound   = 4 * segSize
	)
	str := func(s string) *string { return &s }
	createTopic(t, b.Admin(), topic, 1, map[string]*string{
		"segment.bytes":         str(strconv.Itoa(segSize)),
		"local.retention.bytes": str(strconv.Itoa(bound)),
		"retention.ms":          str("-1"),
		"retention.bytes":       str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
	cl := b.Client()
	adm := kadm.NewClient(cl)
	const n = 3000 // about 1.4 MB: 21 segments
	produceTiered(t, b, topic, n)

	// checkOffsets checks the earliest offsets against the disk and the
	// bucket: -2 is the whole log's start (0), -4 the local log's first
	// segment, which the manifest reaches (nothing left the disk before
	// it was uploaded).
	//
	// Retention may still be trimming while the disk and the broker are
	// read (later segments' uploads go on, and a deleted segment's file
	// goes after file.delete.delay.ms), so the local log is read before
	// and after the earliest local offset until the three agree.
	checkOffsets := func(what string) (localStart int64, localBytes int64) {
		t.Helper()
		if got := listOffset(t, cl, topic, -2); got != 0 {
			t.Fatalf("%s: earliest offset %d, want 0", what, got)
		}
		var bases []int64
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			before, _ := localLog(t, b, topic)
			localStart = listOffset(t, cl, topic, -4)
			bases, localBytes = localLog(t, b, topic)
			if len(before) > 0 && len(bases) > 0 && before[0] == localStart && bases[0] == localStart {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: earliest local offset %d, local segments %v", what, localStart, bases)
			}
		}
		if m := remoteManifest(t, s3, adm, topic); localStart > m.End() {
			t.Fatalf("%s: the local log starts at %d, past the manifest's end %d: a segment left the disk before it was uploaded", what, localStart, m.End())
		}
		return localStart, localBytes
	}
	waitFor(t, "uploads and local retention to the bound", 60*time.Second, func() bool {
		bases, size := localLog(t, b, topic)
		return len(bases) > 0 && bases[0] > 0 && size <= bound+2*segSize
	})
	start, size := checkOffsets("after local retention")
	if start == 0 || size < bound-segSize {
		t.Fatalf("local log starts at %d with %d bytes: want it trimmed to about %d bytes", start, size, bound)
	}

	// MinIO down: uploads stop, the disk grows past the bound, and local
	// retention deletes nothing the manifest does not hold.
	srv.Kill()
	produceTiered2 := func(from, to int) {
		pc := tieredProducer(b, topic)
		defer pc.Close()
		produceTieredValues(t, pc, from, to, 50)
	}
	produceTiered2(n, n+1500)
	time.Sleep(time.Second) // ten retention checks
	// The manifest's end as the broker last committed it, read now: an
	// upload in flight when MinIO was killed may have committed after a
	// read before the kill, and local retention then rightly deleted up
	// to its end. No commit can succeed after the kill.
	st := b.B.TierStatus(topic)
	if len(st) != 1 || st[0].RemoteEndOffset <= 0 {
		t.Fatalf("tier status of %s with the object store down: %+v", topic, st)
	}
	endBefore := st[0].RemoteEndOffset
	bases, grown := localLog(t, b, topic)
	if grown <= bound+2*segSize || bases[0] > endBefore {
		t.Fatalf("with the object store down: local segments from %d (%d bytes), manifest ended at %d; want the disk past the bound and nothing unuploaded deleted", bases[0], grown, endBefore)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "uploads catching up and local retention to the bound again", 90*time.Second, func() bool {
		bases, size := localLog(t, b, topic)
		return len(bases) > 0 && bases[0] > endBefore && size <= bound+2*segSize
	})
	checkOffsets("after the outage")

	// local.retention.ms shorter than retention.ms, local.retention.bytes
	// -2 (the total, -1 here): only the active segment and what is not yet
	// a second old stay.
	alter := func(name, value string) {
		t.Helper()
		rs, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: name, Value: &value}}, topic)
		if err == nil {
			err = rs[0].Err
		}
		if err != nil {
			t.Fatalf("setting %s=%s: %v", name, value, err)
		}
	}
	alter("retention.ms", "3600000")
	alter("local.retention.ms", "1000")
	alter("local.retention.bytes", "-2")
	waitFor(t, "local.retention.ms to leave the active segment", 60*time.Second, func() bool {
		bases, _ := localLog(t, b, topic)
		return len(bases) == 1
	})
	checkOffsets("after local.retention.ms")
	if ends := listOffset(t, cl, topic, -1); ends != n+1500 {
		t.Fatalf("latest offset %d, want %d", ends, n+1500)
	}

	// Everything reads from offset 0, from the bucket and then the disk.
	recs := consumeN(t, b, topic, n+1500, kgo.FetchMaxPartitionBytes(64<<10))
	for i, r := range recs[:n+1500] {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d, value %.20q", i, r.Offset, r.Value)
		}
	}

	// -2 as the total: under a bounded retention.bytes, the local log is
	// bounded by it too.
	alter("local.retention.ms", "-2")
	alter("retention.ms", "-1")
	alter("retention.bytes", strconv.Itoa(6*segSize))
	produceTiered2(n+1500, n+2500)
	waitFor(t, "retention.bytes bounding the local and the remote log", 60*time.Second, func() bool {
		_, size := localLog(t, b, topic)
		return size <= 6*segSize+2*segSize && listOffset(t, cl, topic, -2) > 0
	})
	if first, local := listOffset(t, cl, topic, -2), listOffset(t, cl, topic, -4); first > local {
		t.Fatalf("earliest offset %d past the earliest local offset %d", first, local)
	}
}
