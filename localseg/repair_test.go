package localseg

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// A damaged range of a sealed segment is put back from a good copy of its
// batches: reads serve it again and it leaves the lost-ranges file; a copy
// that does not fit the range exactly changes nothing.
func TestRepairPutsBackADamagedRange(t *testing.T) {
	for name, corrupt := range map[string]func([]byte){
		"flipped byte": func(b []byte) { b[len(b)-5] ^= 0xff },
		"bad length":   func(b []byte) { b[len(b)/2+8], b[len(b)/2+9] = 0x7f, 0xff },
	} {
		t.Run(name, func(t *testing.T) {
			h, path := sealedLog(t)
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := bytes.Clone(good)
			corrupt(bad)
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			ds, err := h.log.Scrub(context.Background(), 0)
			if err != nil || len(ds) != 1 {
				t.Fatalf("damage %v, %v", ds, err)
			}
			r, ok := h.log.RangeOf(ds[0])
			if !ok {
				t.Fatal("no range for the damage")
			}
			if lost, _ := h.log.LostRanges(); len(lost) != 1 || lost[0].From != r.From || lost[0].To != r.To {
				t.Fatalf("lost ranges %v, want %v", lost, r)
			}
			if got := h.readAll(0); len(got) == 30 {
				t.Fatal("the damaged batch was served")
			}
			copyOf := good[ds[0].Pos:ds[0].NextPos]

			// Copies that do not fit change nothing.
			flipped := bytes.Clone(copyOf)
			flipped[len(flipped)-1] ^= 1
			for what, c := range map[string][]byte{
				"short":     copyOf[:len(copyOf)-1],
				"bad crc":   flipped,
				"too much":  append(bytes.Clone(copyOf), copyOf...),
				"elsewhere": good[:ds[0].Pos],
			} {
				if err := h.log.Repair(r, c); !errors.Is(err, ErrRepairMismatch) {
					t.Fatalf("%s copy: %v", what, err)
				}
			}
			if lost, _ := h.log.LostRanges(); len(lost) != 1 {
				t.Fatalf("lost ranges after refused copies: %v", lost)
			}

			if err := h.log.Repair(r, copyOf); err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(path); !bytes.Equal(data, good) {
				t.Fatal("the repaired segment differs from the original")
			}
			if got := h.readAll(0); len(got) != 30 {
				t.Fatalf("%d batches read after the repair, want 30", len(got))
			}
			if lost, err := h.log.LostRanges(); err != nil || len(lost) != 0 {
				t.Fatalf("lost ranges after the repair: %v %v", lost, err)
			}
			if ds, err := h.log.Scrub(context.Background(), 0); err != nil || len(ds) != 0 {
				t.Fatalf("scrub after the repair: %v %v", ds, err)
			}
			// Repaired already: nothing to do.
			if err := h.log.Repair(r, copyOf); err != nil {
				t.Fatalf("second repair: %v", err)
			}
		})
	}
}

// The lost ranges of a segment that retention deletes leave the
// lost-ranges file with it, also when the deletion happened before the
// log was last opened; they do not pile up.
func TestLostRangesOfDeletedSegmentsArePruned(t *testing.T) {
	h, path := sealedLog(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-5] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if ds, err := h.log.Scrub(context.Background(), 0); err != nil || len(ds) != 1 {
		t.Fatalf("damage %v, %v", ds, err)
	}
	if lost, _ := h.log.LostRanges(); len(lost) != 1 {
		t.Fatalf("lost ranges %v", lost)
	}
	// Past the damaged segment: it goes, and its record with it.
	if err := h.log.SetLogStartOffset(10); err != nil {
		t.Fatal(err)
	}
	if _, err := h.log.ApplyRetention(h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatalf("%s is still there", path)
	}
	if lost, err := h.log.LostRanges(); err != nil || len(lost) != 0 {
		t.Fatalf("lost ranges after the segment was deleted: %v %v", lost, err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, lostRangesFile)); !os.IsNotExist(err) {
		t.Fatalf("lost-ranges file: %v", err)
	}

	// A record left behind by an older version is pruned at open.
	stale := encodeLostRanges([]LostRange{{From: 2, To: 3, SegmentBase: 2, FoundMs: 1}})
	if err := os.WriteFile(filepath.Join(h.dir, lostRangesFile), stale, 0o644); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if lost, err := h.log.LostRanges(); err != nil || len(lost) != 0 {
		t.Fatalf("lost ranges after reopening: %v %v", lost, err)
	}
}

// A copy as long as the damaged stretch and covering its offsets, but
// batched differently (here two one-record batches offered as one batch of
// two), is not a copy of what was lost: the segment's offset index knows
// where the lost batches began, and Repair refuses it.
func TestRepairRefusesACopyBatchedDifferently(t *testing.T) {
	one := batch(1, 100, 0)
	L := len(one)
	h := newHarness(t, Config{SegmentBytes: int64(4 * L), IndexIntervalBytes: 1})
	for i := 0; i < 12; i++ {
		h.append(batch(1, 100, 0))
	}
	path := h.log.Segments()[0].Path
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[2*L-5] ^= 0xff // batches 1 and 2
	bad[3*L-5] ^= 0xff
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := h.log.Scrub(context.Background(), 0)
	if err != nil || len(ds) != 1 || ds[0].Pos != int64(L) || ds[0].NextPos != int64(3*L) {
		t.Fatalf("damage %v, %v; want one stretch over batches 1 and 2", ds, err)
	}
	r, ok := h.log.RangeOf(ds[0])
	if !ok || r.From != 1 || r.To != 3 {
		t.Fatalf("range %v %v, want [1, 3)", r, ok)
	}
	// One batch of two records, as long as the two lost batches.
	var merged []byte
	for a := 90; a < 200 && merged == nil; a++ {
		for b := a; b < a+40; b++ {
			recs := []recordbatch.Record{{Value: bytes.Repeat([]byte{'y'}, a)}, {TimestampDelta: 1, Value: bytes.Repeat([]byte{'z'}, b)}}
			m, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) == 2*L {
				recordbatch.Batch(m).SetBaseOffset(1)
				merged = m
				break
			}
		}
	}
	if merged == nil {
		t.Fatal("no two-record batch of the stretch's length")
	}
	if err := h.log.Repair(r, merged); !errors.Is(err, ErrRepairMismatch) {
		t.Fatalf("a differently batched copy: %v", err)
	}
	if lost, _ := h.log.LostRanges(); len(lost) != 1 {
		t.Fatalf("lost ranges after a refused copy: %v", lost)
	}
	if err := h.log.Repair(r, good[L:3*L]); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, good) {
		t.Fatal("the repaired segment differs from the original")
	}
}
