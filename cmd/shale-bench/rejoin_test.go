package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestWipePartitionLogsKeepsIdentity removes exactly the topic's partition
// directories: meta.properties, the clean-shutdown marker and other
// topics' logs (one named with the topic as a prefix) stay.
func TestWipePartitionLogsKeepsIdentity(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"rejoin-0", "rejoin-12", "rejoin-x", "rejoin-01", "rejoinx-0", "rejoin-2-0", "other-0"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "00000000000000000000.log"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"meta.properties", "clean-shutdown", "rejoin-3"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := wipePartitionLogs(dir, "rejoin")
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v; want 2", n, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{"clean-shutdown", "meta.properties", "other-0", "rejoin-01", "rejoin-2-0", "rejoin-3", "rejoin-x", "rejoinx-0"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}

// TestReadPartitionReadsToTheEnd produces 2 MiB and reads every partition
// back with the reference's raw fetch loop: every record, no more.
func TestReadPartitionReadsToTheEnd(t *testing.T) {
	b := brokertest.Start(t)
	if err := createTopicNamed(b.Addr, rejoinTopic, 2); err != nil {
		t.Fatal(err)
	}
	const mib = 2
	if err := produceMiB(b.Addr, rejoinTopic, mib); err != nil {
		t.Fatal(err)
	}
	ends, err := endOffsets(b.Addr, rejoinTopic, 2)
	if err != nil {
		t.Fatal(err)
	}
	var bytes, records int64
	for p := int32(0); p < 2; p++ {
		n, r, err := readPartition(b.Addr, rejoinTopic, p, ends[p])
		if err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
		bytes += n
		records += r
	}
	want := int64((mib<<20 + rejoinRecordBytes - 1) / rejoinRecordBytes)
	if records != want || bytes < want*rejoinRecordBytes {
		t.Fatalf("read %d records in %d bytes, produced %d records of %d bytes", records, bytes, want, rejoinRecordBytes)
	}
}
