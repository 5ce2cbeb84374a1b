package localseg

import (
	"bytes"
	"errors"
	"testing"
)

func TestOnSealReportsEachRolledSegment(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2, RetentionMs: -1})
	var sealed []SegmentInfo
	h.opts.OnSeal = func(s SegmentInfo) { sealed = append(sealed, s) }
	h.restart()
	for i := 0; i < 5; i++ {
		h.append(batch(1, 100, int64(1000+i)))
	}
	if len(sealed) != 2 || sealed[0].BaseOffset != 0 || sealed[0].NextOffset != 2 || sealed[1].BaseOffset != 2 || sealed[1].NextOffset != 4 {
		t.Fatalf("sealed %+v", sealed)
	}
	if sealed[1].MaxTimestamp != 1003 || sealed[1].Size != int64(2*len(one)) {
		t.Fatalf("sealed %+v", sealed[1])
	}
}

func TestOpenSealedReturnsBytesIndexesSnapshotAndEpochs(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 3, IndexIntervalBytes: 1, RetentionMs: -1})
	for i := 0; i < 7; i++ {
		b := batch(1, 100, int64(1000+i))
		if _, err := h.log.AppendAsLeader(b, int32(i/2)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.log.OpenSealed(6); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("active segment opened: %v", err)
	}
	ss, err := h.log.OpenSealed(3)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if ss.BaseOffset != 3 || ss.NextOffset != 6 || ss.Size != int64(3*len(one)) || ss.MaxTimestamp != 1005 {
		t.Fatalf("segment %+v", ss)
	}
	data := make([]byte, ss.Size)
	if _, err := ss.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	want := h.readAll(3)
	if !bytes.Equal(data, bytes.Join([][]byte{want[0], want[1], want[2]}, nil)) {
		t.Fatal("segment bytes differ from what the log reads")
	}
	if len(ss.OffsetIndex) != 2 || ss.OffsetIndex[0] != (IndexEntry{RelOffset: 1, Position: uint32(len(one))}) {
		t.Fatalf("offset index %+v", ss.OffsetIndex)
	}
	if n := len(ss.TimeIndex); n == 0 || ss.TimeIndex[n-1].Timestamp != 1005 {
		t.Fatalf("time index %+v", ss.TimeIndex)
	}
	if ss.ProducerSnapshot == nil {
		t.Fatal("no producer snapshot")
	}
	wantEpochs := []EpochEntry{{Epoch: 1, StartOffset: 2}, {Epoch: 2, StartOffset: 4}}
	if len(ss.Epochs) != 2 || ss.Epochs[0] != wantEpochs[0] || ss.Epochs[1] != wantEpochs[1] {
		t.Fatalf("epochs %+v", ss.Epochs)
	}
}

func TestTieredRetentionKeepsSegmentsNotYetUploaded(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)), RetentionBytes: 1, RetentionMs: -1, FileDeleteDelayMs: 1})
	for i := 0; i < 5; i++ {
		h.append(batch(1, 100, 0))
	}
	h.log.SetUploadedEnd(0)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 0 {
		t.Fatalf("deleted %d segments with nothing uploaded (%v)", n, err)
	}
	h.log.SetUploadedEnd(2)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("deleted %d segments with two uploaded (%v)", n, err)
	}
	if got := h.log.LocalLogStartOffset(); got != 2 {
		t.Fatalf("local log start %d", got)
	}
	// Records deleted by the user go whether uploaded or not.
	if err := h.log.SetLogStartOffset(4); err != nil {
		t.Fatal(err)
	}
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("deleted %d segments below the log start (%v)", n, err)
	}
}

// A sealed segment whose producer snapshot the roll's background flush
// could not write is uploaded with one rebuilt from the log: a log
// restored from the bucket takes its producers from it.
func TestOpenSealedRebuildsAMissingProducerSnapshot(t *testing.T) {
	h := lostRollSnapshot(t)
	ss, err := h.log.OpenSealed(2)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	st, err := decodeProducerState(ss.ProducerSnapshot)
	if err != nil {
		t.Fatalf("producer snapshot: %v", err)
	}
	if e := st.producers[4]; e == nil || e.lastSeq() != 3 {
		t.Fatalf("producer 4 in the rebuilt snapshot: %+v", e)
	}
}
