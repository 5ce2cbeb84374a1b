package localseg

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// sealedLog returns a log of 30 one-batch segments (all but the last
// sealed) and the path of its third segment, which holds offset 2.
func sealedLog(t *testing.T) (*harness, string) {
	t.Helper()
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for i := 0; i < 30; i++ {
		h.append(batch(1, 100, 0))
	}
	return h, h.log.Segments()[1].Path
}

// A flipped byte or a bad length in a sealed segment is found by the
// scrubber, with the offsets it may hide and the next intact batch.
func TestScrubFindsCorruptionInSealedSegments(t *testing.T) {
	for name, corrupt := range map[string]func([]byte){
		"flipped byte": func(b []byte) { b[len(b)-5] ^= 0xff },
		"bad length":   func(b []byte) { b[len(b)/2+8], b[len(b)/2+9] = 0x7f, 0xff },
		"bad base":     func(b []byte) { b[len(b)/2+7] = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			h, path := sealedLog(t)
			if ds, err := h.log.Scrub(context.Background(), 0); err != nil || len(ds) != 0 {
				t.Fatalf("intact log: %v %v", ds, err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			corrupt(data)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			ds, err := h.log.Scrub(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 || ds[0].Segment != path {
				t.Fatalf("damage: %v", ds)
			}
			if ds[0].FirstOffset < 2 || ds[0].FirstOffset > 3 {
				t.Fatalf("damage hides offsets from %d, want 2 or 3: %v", ds[0].FirstOffset, ds[0])
			}
		})
	}
}

func TestScanSegmentResyncsAfterGarbage(t *testing.T) {
	var seg []byte
	for i := int64(0); i < 3; i++ {
		b := batch(2, 50, 0)
		b.SetBaseOffset(i * 2)
		seg = append(seg, b...)
	}
	one := len(seg) / 3
	garbage := append(append(append([]byte(nil), seg[:one]...), bytes.Repeat([]byte{0xaa}, 37)...), seg[one:]...)
	ds, err := ScanSegment(bytes.NewReader(garbage), 0, int64(len(garbage)), 6)
	if err != nil || len(ds) != 1 || ds[0].FirstOffset != 2 || ds[0].NextGood != 2 {
		t.Fatalf("damage %v, %v", ds, err)
	}
}

// FuzzScanSegment: any bytes as a segment: no panic, no hang, damage
// positions inside the segment.
func FuzzScanSegment(f *testing.F) {
	var seg []byte
	for i := int64(0); i < 3; i++ {
		b := batch(1, 20, 0)
		b.SetBaseOffset(i)
		seg = append(seg, b...)
	}
	f.Add(seg, int64(0), int64(3))
	f.Add(seg[:len(seg)-3], int64(0), int64(-1))
	f.Add(append([]byte{0, 0, 0}, seg...), int64(0), int64(3))
	f.Fuzz(func(t *testing.T, data []byte, base, next int64) {
		if len(data) > 1<<16 {
			return
		}
		ds, err := ScanSegment(bytes.NewReader(data), base, int64(len(data)), next)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.Pos < 0 || d.Pos >= int64(len(data)) {
				t.Fatalf("damage at %d outside %d bytes", d.Pos, len(data))
			}
		}
		// ScanStream, reading the same bytes a few at a time, finds the
		// same first damage, and hands over every batch before it.
		var passed []int64
		d, err := ScanStream(iotest.HalfReader(bytes.NewReader(data)), base, int64(len(data)), next, func(pos int64, b recordbatch.Batch) {
			passed = append(passed, pos)
		})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case d == nil && len(ds) > 0:
			t.Fatalf("ScanStream found nothing, ScanSegment damage at %d", ds[0].Pos)
		case d != nil && (len(ds) == 0 || ds[0].Pos != d.Pos):
			t.Fatalf("ScanStream found damage at %d (%v), ScanSegment %v", d.Pos, d.Err, ds)
		}
		for _, pos := range passed {
			if d != nil && pos >= d.Pos {
				t.Fatalf("batch at %d handed over, past the damage at %d", pos, d.Pos)
			}
		}
	})
}

// A read at an offset inside a damaged stretch of a sealed segment moves on
// to the next intact batch (a visible gap, reported once through OnDamage)
// instead of failing at that offset forever; the intact records after it
// stay reachable.
func TestReadSkipsDamageInSealedSegments(t *testing.T) {
	for name, corrupt := range map[string]func([]byte){
		"flipped byte in the first batch": func(b []byte) { b[len(b)/2-5] ^= 0xff },
		"bad length of the second batch":  func(b []byte) { b[len(b)/2+8], b[len(b)/2+9] = 0x7f, 0xff },
	} {
		t.Run(name, func(t *testing.T) {
			h, path := sealedLog(t)
			var reported []Damage
			recordedWhenReported := -1
			h.opts.OnDamage = func(d Damage) {
				reported = append(reported, d)
				lost, err := h.log.LostRanges() // what a repair told now reads
				if err != nil {
					t.Error(err)
				}
				recordedWhenReported = len(lost)
			}
			h.restart()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			corrupt(data)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			got := h.readAll(0)
			seen := map[int64]bool{}
			for _, b := range got {
				seen[b.BaseOffset()] = true
			}
			if len(got) < 28 || !seen[4] || !seen[29] || !seen[0] {
				t.Fatalf("read %d batches past the damage (offsets %v)", len(got), seen)
			}
			if len(reported) != 1 {
				t.Fatalf("damage reported %d times: %v", len(reported), reported)
			}
			if recordedWhenReported != 1 {
				t.Fatalf("OnDamage was told with %d lost ranges recorded, want 1", recordedWhenReported)
			}
			h.restart()
			lost, err := h.log.LostRanges()
			if err != nil || len(lost) != 1 || lost[0].SegmentBase != 2 || lost[0].From != reported[0].FirstOffset {
				t.Fatalf("recorded lost ranges %+v (%v), damage %v", lost, err, reported)
			}
		})
	}
}

// FuzzDecodeLostRanges: any file content decodes or fails cleanly, and
// what decodes encodes back to the same ranges.
func FuzzDecodeLostRanges(f *testing.F) {
	f.Add(encodeLostRanges([]LostRange{{From: 2, To: 4, SegmentBase: 2, FoundMs: 1700000000000}}))
	f.Add(encodeLostRanges(nil))
	f.Add([]byte("shale-checkpoint lost-ranges 1\n5 3 0 0\ncrc32c 00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := decodeLostRanges(data)
		if err != nil {
			return
		}
		again, err := decodeLostRanges(encodeLostRanges(rs))
		if err != nil || len(again) != len(rs) {
			t.Fatalf("round trip: %v %v", again, err)
		}
	})
}

// A complete scrub is recorded in the log's directory, so that the
// scrubber's schedule survives restarts; one cut short is not.
func TestCompleteScrubIsRecordedAcrossRestarts(t *testing.T) {
	h, _ := sealedLog(t)
	if !h.log.LastScrubbed().IsZero() {
		t.Fatalf("a new log was scrubbed at %v", h.log.LastScrubbed())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.log.Scrub(ctx, 0); err == nil {
		t.Fatal("a cancelled scrub succeeded")
	}
	if !h.log.LastScrubbed().IsZero() {
		t.Fatalf("a cancelled scrub was recorded at %v", h.log.LastScrubbed())
	}
	if _, err := h.log.Scrub(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	at := h.log.LastScrubbed() // by the log's clock (Options.Now)
	if at.IsZero() {
		t.Fatal("a complete scrub was not recorded")
	}
	h.restart()
	if got := h.log.LastScrubbed(); !got.Equal(at) {
		t.Fatalf("after a restart the last scrub is %v, want %v", got, at)
	}
}

// A scrub of a log with no sealed segment (a new partition) verified
// nothing: it is recorded in memory, so that the scrubber does not come
// back to it at once, but writes no file, and after a restart the log is
// due again, at no cost.
func TestAScrubOfNoSealedSegmentWritesNoFile(t *testing.T) {
	h := newHarness(t, Config{})
	h.append(batch(1, 100, 0))
	if _, err := h.log.Scrub(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if h.log.LastScrubbed().IsZero() {
		t.Fatal("the scrub was not recorded in memory")
	}
	if _, err := os.Stat(filepath.Join(h.dir, scrubbedFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the scrubbed file: %v, want none", err)
	}
	h.restart()
	if got := h.log.LastScrubbed(); !got.IsZero() {
		t.Fatalf("after a restart the last scrub is %v, want none", got)
	}
}
