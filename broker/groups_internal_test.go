package broker

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestOffsetsLoadBoundsTheBatchSizeFromTheFile: the load read a range as
// long as the first batch the file declared, and allocated it whole. A
// batch larger than the coordinator ever writes is refused first.
func TestOffsetsLoadBoundsTheBatchSizeFromTheFile(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{SegmentBytes: 1 << 30}, localseg.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	big, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]recordbatch.Record{{Key: []byte("k"), Value: make([]byte, 65<<20)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.AppendAsLeader(recordbatch.Batch(big), 0); err != nil {
		t.Fatal(err)
	}
	big = nil
	p := newPartition(offsetsTopic, [16]byte{1}, 0, 0, log, &topicConfig{maxMessageBytes: 1 << 20})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err = (&offsetsLog{p: p}).Scan(context.Background(), func(recordbatch.Batch) error { return nil })
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "more than any the coordinator writes") {
		t.Fatalf("scan over a 65 MiB batch: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("refusing the batch allocated %d bytes", alloc)
	}
}
