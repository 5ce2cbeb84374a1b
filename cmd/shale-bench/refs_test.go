package main

import (
	"os"
	"slices"
	"testing"
	"time"
)

// TestDiskLatencyRefTimesEveryBatchDue: the disk latency reference times
// each batch due in its measured part once, from when it was due to an
// fdatasync after it, with writers sharing files when there are more of
// them than files, and leaves no file behind.
func TestDiskLatencyRefTimesEveryBatchDue(t *testing.T) {
	dir := t.TempDir()
	cfg := rawConfig{conns: 3, partitions: 2, batchBytes: 4 << 10, rateMBps: 1,
		warmup: 100 * time.Millisecond, duration: 300 * time.Millisecond}
	lat, err := diskLatencyRef(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	every := time.Duration(float64(cfg.batchBytes) / (cfg.rateMBps * 1e6 / float64(cfg.conns)) * float64(time.Second))
	want := 0
	for k := 0; time.Duration(k)*every < cfg.warmup+cfg.duration; k++ {
		if time.Duration(k)*every >= cfg.warmup {
			want += cfg.conns
		}
	}
	if len(lat) != want {
		t.Fatalf("%d latencies, want one for each of the %d batches due in the measured part", len(lat), want)
	}
	if !slices.IsSorted(lat) || lat[0] <= 0 {
		t.Fatalf("latencies not sorted or not positive: %v", lat)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("%d files left behind", len(left))
	}
}

// TestDiskRoundTripRefSyncsWindowsAndCleansUp: the round-trip reference
// carries whole windows through each connection until its senders stop,
// reports a positive rate, and leaves no file behind.
func TestDiskRoundTripRefSyncsWindowsAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	bps, err := diskRoundTripRef(dir, 3, 4<<10, 16<<10, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if bps <= 0 {
		t.Fatalf("rate %v, want positive", bps)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("%d files left behind", len(left))
	}
}

// TestDiskPipelineRefAnswersEveryBatch: the pipelined reference, with one
// and with two syncs in flight, answers every batch its senders sent (they
// wait for each before stopping), reports a positive rate, and leaves no
// file behind.
func TestDiskPipelineRefAnswersEveryBatch(t *testing.T) {
	for _, syncs := range []int{1, 2} {
		dir := t.TempDir()
		bps, err := diskPipelineRef(dir, 3, 4<<10, 4, syncs, 200*time.Millisecond)
		if err != nil {
			t.Fatalf("%d in flight: %v", syncs, err)
		}
		if bps <= 0 {
			t.Fatalf("%d in flight: rate %v, want positive", syncs, bps)
		}
		left, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != 0 {
			t.Fatalf("%d in flight: %d files left behind", syncs, len(left))
		}
	}
}

// TestPageCacheRefCostsTheKernelAndLeavesNoFile: the page-cache reference
// writes what it is asked, reads a kernel cost per MB above zero (the
// copies are the kernel's), and leaves no file behind.
func TestPageCacheRefCostsTheKernelAndLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	ms, err := pageCacheRef(dir, 2, 32<<10, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	if ms <= 0 {
		t.Fatalf("%.3f kernel ms per MB for 256 MiB of writes, want above 0", ms)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("%d files left behind", len(left))
	}
	if _, err := pageCacheRef(dir, 4, 32<<10, 1<<10); err == nil {
		t.Fatal("a reference that writes nothing returned no error")
	}
}
