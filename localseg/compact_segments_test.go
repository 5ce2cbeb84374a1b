package localseg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// SegmentCompaction over the sealed segments of a Log, read back as
// streams from their files: it must decide every record as Log.Compact
// does, keep offsets, and refuse bytes that do not check out.

// scSealed returns the log's sealed segments (all but the active one),
// after flushing them, so that their files hold every batch.
func scSealed(h *harness) []SegmentInfo {
	h.t.Helper()
	if err := h.log.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.log.flushes.Wait()
	segs := h.log.Segments()
	return segs[:len(segs)-1]
}

// scReader opens a sealed segment's .log file as a stream of its Size
// bytes (a preallocated tail is not the segment's).
func scReader(t *testing.T, s SegmentInfo) io.Reader {
	t.Helper()
	f, err := os.Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return io.LimitReader(f, s.Size)
}

// scBytes reads a sealed segment's bytes.
func scBytes(t *testing.T, s SegmentInfo) []byte {
	t.Helper()
	b, err := io.ReadAll(scReader(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != s.Size {
		t.Fatalf("%s: read %d bytes, the segment has %d", s.Path, len(b), s.Size)
	}
	return b
}

// scBatches splits data into batches, each of which must check out, of
// strictly ascending offsets.
func scBatches(t *testing.T, data []byte) []recordbatch.Batch {
	t.Helper()
	var out []recordbatch.Batch
	prev := int64(-1)
	for rest := data; len(rest) > 0; {
		b, next, err := recordbatch.Next(rest)
		if err != nil {
			t.Fatalf("output at byte %d: %v", len(data)-len(rest), err)
		}
		if err := recordbatch.Check(b); err != nil {
			t.Fatalf("output batch at offset %d: %v", b.BaseOffset(), err)
		}
		if b.BaseOffset() <= prev {
			t.Fatalf("output batch at offset %d after offset %d", b.BaseOffset(), prev)
		}
		prev = b.LastOffset()
		out = append(out, b)
		rest = next
	}
	return out
}

// scRecords reads the records of the data batches of bs, with their
// timestamps by offset.
func scRecords(t *testing.T, bs []recordbatch.Batch) ([]record, map[int64]int64) {
	t.Helper()
	var out []record
	ts := map[int64]int64{}
	for _, b := range bs {
		if b.Control() {
			continue
		}
		err := recordbatch.Records(context.Background(), b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
			out = append(out, record{offset: r.Offset, key: string(r.Key), val: string(r.Value), tomb: r.Value == nil})
			ts[r.Offset] = r.Timestamp
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out, ts
}

// scGroup rewrites the segments of one group into a new segment.
func scGroup(t *testing.T, c *SegmentCompaction, group []SegmentInfo, interval int64, aborted func(SegmentInfo) []AbortedTxn) ([]byte, CompactedSegmentInfo) {
	t.Helper()
	var buf bytes.Buffer
	seg := c.NewSegment(&buf, group[0].BaseOffset, interval)
	for _, s := range group {
		var ab []AbortedTxn
		if aborted != nil {
			ab = aborted(s)
		}
		if err := seg.Add(context.Background(), scReader(t, s), s.BaseOffset, s.NextOffset, ab); err != nil {
			t.Fatalf("adding the segment at %d: %v", s.BaseOffset, err)
		}
	}
	info, err := seg.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(buf.Len()) {
		t.Fatalf("info says %d bytes, %d written", info.Size, buf.Len())
	}
	return buf.Bytes(), info
}

// scMapKeys maps the keys of segs, in order.
func scMapKeys(t *testing.T, c *SegmentCompaction, segs []SegmentInfo) {
	t.Helper()
	for _, s := range segs {
		if err := c.MapKeys(context.Background(), scReader(t, s), s.BaseOffset, s.NextOffset); err != nil {
			t.Fatalf("mapping the keys of the segment at %d: %v", s.BaseOffset, err)
		}
	}
}

// scRequireIndexes checks a new segment's indexes against its batches:
// each offset-index entry at the start of a batch of its offset, both
// indexes ascending, the time index ending with MaxTimestamp.
func scRequireIndexes(t *testing.T, data []byte, base int64, info CompactedSegmentInfo) {
	t.Helper()
	starts := map[int64]int64{} // position -> base offset
	lasts := map[int64]bool{}
	maxTs := int64(-1)
	for pos := 0; pos < len(data); {
		b, _, err := recordbatch.Next(data[pos:])
		if err != nil {
			t.Fatal(err)
		}
		starts[int64(pos)] = b.BaseOffset()
		lasts[b.LastOffset()] = true
		maxTs = max(maxTs, b.MaxTimestamp())
		pos += len(b)
	}
	for i, e := range info.OffsetIndex {
		if i > 0 && (e.RelOffset <= info.OffsetIndex[i-1].RelOffset || e.Position <= info.OffsetIndex[i-1].Position) {
			t.Fatalf("offset index not ascending: %+v", info.OffsetIndex)
		}
		if off, ok := starts[int64(e.Position)]; !ok || off != base+int64(e.RelOffset) {
			t.Fatalf("offset index entry %+v: the batch at that position starts at %d (%v)", e, off, ok)
		}
	}
	for i, e := range info.TimeIndex {
		if i > 0 && (e.Timestamp <= info.TimeIndex[i-1].Timestamp || e.RelOffset < info.TimeIndex[i-1].RelOffset) {
			t.Fatalf("time index not ascending: %+v", info.TimeIndex)
		}
		if !lasts[base+int64(e.RelOffset)] {
			t.Fatalf("time index entry %+v is not at the last offset of a batch", e)
		}
	}
	if info.MaxTimestamp != maxTs {
		t.Fatalf("max timestamp %d, the batches' largest is %d", info.MaxTimestamp, maxTs)
	}
	if n := len(info.TimeIndex); maxTs >= 0 && (n == 0 || info.TimeIndex[n-1].Timestamp != maxTs) {
		t.Fatalf("time index %+v does not end with the max timestamp %d", info.TimeIndex, maxTs)
	}
}

func TestSegmentCompactionKeepsLastOfEachKey(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1024, IndexIntervalBytes: 128})
	// 300 records in batches of 3, of keys k0-k6 until k4 stops at 60, k5
	// at 105 and k6 at 150 (k0-k3 in their place): k4-k6 last appear in
	// the first half, in batches of their own, k5 as a tombstone. An
	// earlier tombstone of k3 is superseded.
	stop := map[int]int{4: 60, 5: 105, 6: 150}
	var all []record
	wantTs := map[int64]int64{}
	for i := 0; i < 300; i += 3 {
		var recs []kv
		for j := i; j < i+3; j++ {
			k := fmt.Sprintf("k%d", j%7)
			if s, ok := stop[j%7]; ok && j >= s {
				k = fmt.Sprintf("k%d", j%4)
			}
			var v []byte
			if j != 10 && j != 103 {
				v = val(fmt.Sprintf("v%03d", j))
			}
			recs = append(recs, kv{k, v})
		}
		ts := int64(1000 + i)
		res := h.append(keyedBatch(recordbatch.BuildOptions{}, ts, recs...))
		for n, r := range recs {
			off := res.FirstOffset + int64(n)
			all = append(all, record{offset: off, key: r.key, val: string(r.val), tomb: r.val == nil})
			wantTs[off] = ts
		}
	}
	if err := h.log.Roll(); err != nil {
		t.Fatal(err)
	}
	sealed := scSealed(h)
	if len(sealed) < 4 {
		t.Fatalf("%d sealed segments, want several", len(sealed))
	}
	want := lastOfEachKey(all)
	if len(want) != 7 || !want["k5"].tomb || want["k5"].offset != 103 {
		t.Fatalf("the test's writes: %+v", want)
	}

	now := h.clock.Now()
	const retention = 3600_000
	c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: now, DeleteRetentionMs: retention}})
	if c.Horizon() != -1 {
		t.Fatalf("horizon %d before anything was rewritten", c.Horizon())
	}
	scMapKeys(t, c, sealed)
	if c.Keys() != 7 || c.Full() {
		t.Fatalf("%d keys mapped (full %v), want 7", c.Keys(), c.Full())
	}
	// Two groups: the segments below offset 150, and the rest.
	mid := slices.IndexFunc(sealed, func(s SegmentInfo) bool { return s.BaseOffset >= 150 })
	if mid <= 0 {
		t.Fatalf("no segment starts at or after 150: %+v", sealed)
	}
	var got []record
	var out []recordbatch.Batch
	var records, removed int64
	prev := int64(-1)
	for _, group := range [][]SegmentInfo{sealed[:mid], sealed[mid:]} {
		// A small index interval: the few batches kept still get
		// offset-index entries.
		data, info := scGroup(t, c, group, 64, nil)
		bs := scBatches(t, data)
		if len(bs) == 0 {
			t.Fatalf("group at %d: nothing written", group[0].BaseOffset)
		}
		first, end := group[0].BaseOffset, group[len(group)-1].NextOffset
		if bs[0].BaseOffset() <= prev || bs[0].BaseOffset() < first || bs[len(bs)-1].LastOffset() >= end {
			t.Fatalf("group [%d, %d): batches [%d, %d] after offset %d", first, end, bs[0].BaseOffset(), bs[len(bs)-1].LastOffset(), prev)
		}
		prev = bs[len(bs)-1].LastOffset()
		recs, ts := scRecords(t, bs)
		var maxTs int64 = -1
		for _, r := range recs {
			if ts[r.offset] != wantTs[r.offset] {
				t.Fatalf("record at %d: timestamp %d, written with %d", r.offset, ts[r.offset], wantTs[r.offset])
			}
			maxTs = max(maxTs, ts[r.offset])
		}
		if !info.Changed || info.Records-info.Removed != int64(len(recs)) {
			t.Fatalf("group at %d: %+v, %d records kept", first, info, len(recs))
		}
		if info.MaxTimestamp != maxTs {
			t.Fatalf("group at %d: max timestamp %d, the largest kept is %d", first, info.MaxTimestamp, maxTs)
		}
		if len(info.OffsetIndex) == 0 || len(info.TimeIndex) == 0 {
			t.Fatalf("group at %d: empty indexes %+v %+v", first, info.OffsetIndex, info.TimeIndex)
		}
		scRequireIndexes(t, data, first, info)
		if len(info.AbortedTxns) != 0 {
			t.Fatalf("aborted transactions %+v without a transaction", info.AbortedTxns)
		}
		got = append(got, recs...)
		out = append(out, bs...)
		records += info.Records
		removed += info.Removed
	}
	// Each key's last record, at its offset, and nothing else.
	requireRecords(t, got, want)
	if records != 300 || removed != 300-7 {
		t.Fatalf("%d records read, %d removed; want 300 and %d", records, removed, 300-7)
	}
	// The tombstone stays (its horizon is ahead), its batch stamped.
	horizon := now.UnixMilli() + retention
	for _, b := range out {
		hz, ok := b.DeleteHorizon()
		tomb := b.BaseOffset() <= 103 && 103 <= b.LastOffset()
		if tomb != ok || (ok && hz != horizon) {
			t.Fatalf("batch [%d, %d]: delete horizon %d %v, want one (%d) only on the tombstone's", b.BaseOffset(), b.LastOffset(), hz, ok, horizon)
		}
	}
	if c.Horizon() != horizon {
		t.Fatalf("pass horizon %d, want %d", c.Horizon(), horizon)
	}

	// Log.Compact, with the same clock, writes the same batches.
	h.compact(CompactOptions{Now: now, DeleteRetentionMs: retention})
	local := h.readAll(0)
	if len(local) != len(out) {
		t.Fatalf("Log.Compact left %d batches, the segment pass %d", len(local), len(out))
	}
	for i := range local {
		if !bytes.Equal(local[i], out[i]) {
			t.Fatalf("batch %d: Log.Compact wrote [%d, %d] %x, the segment pass [%d, %d] %x", i, local[i].BaseOffset(), local[i].LastOffset(), []byte(local[i]), out[i].BaseOffset(), out[i].LastOffset(), []byte(out[i]))
		}
	}
}

func TestSegmentCompactionEmptiedGroupKeepsAHeader(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 1 << 20})
	for i := 0; i < 10; i++ {
		opts := recordbatch.BuildOptions{}
		if i == 9 {
			opts.Codec = recordbatch.CodecGzip // the placeholder drops the codec
		}
		h.append(keyedBatch(opts, int64(100+i), kv{"a", val(fmt.Sprint(i))}, kv{"b", val(fmt.Sprint(i))}))
	}
	h.log.Roll()
	for i := 10; i < 13; i++ {
		h.append(keyedBatch(recordbatch.BuildOptions{}, int64(100+i), kv{"b", val(fmt.Sprint(i))}, kv{"a", val(fmt.Sprint(i))}))
	}
	h.log.Roll()
	sealed := scSealed(h)
	if len(sealed) != 2 {
		t.Fatalf("%d sealed segments, want 2", len(sealed))
	}
	in := scBatches(t, scBytes(t, sealed[0]))
	lastIn := in[len(in)-1]

	c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: h.clock.Now()}})
	scMapKeys(t, c, sealed) // the later segment supersedes every record of the first
	data, info := scGroup(t, c, sealed[:1], 4096, nil)
	bs := scBatches(t, data)
	if len(bs) != 1 {
		t.Fatalf("%d batches written, want one header", len(bs))
	}
	b := bs[0]
	if b.RecordCount() != 0 || b.BaseOffset() != lastIn.BaseOffset() || b.LastOffset() != lastIn.LastOffset() || b.Codec() != recordbatch.CodecNone {
		t.Fatalf("placeholder [%d, %d] of %d records, codec %v; the last batch read is [%d, %d]", b.BaseOffset(), b.LastOffset(), b.RecordCount(), b.Codec(), lastIn.BaseOffset(), lastIn.LastOffset())
	}
	if info.Size != recordbatch.HeaderSize || !info.Changed || info.Records != 20 || info.Removed != 20 {
		t.Fatalf("info %+v", info)
	}
	if info.MaxTimestamp != lastIn.MaxTimestamp() || !slices.Equal(info.TimeIndex, []TimeEntry{{Timestamp: lastIn.MaxTimestamp(), RelOffset: uint32(lastIn.LastOffset() - sealed[0].BaseOffset)}}) {
		t.Fatalf("max timestamp %d, time index %+v", info.MaxTimestamp, info.TimeIndex)
	}
	scRequireIndexes(t, data, sealed[0].BaseOffset, info)

	// The next group keeps the last records, as they were.
	data, info = scGroup(t, c, sealed[1:], 4096, nil)
	got, _ := scRecords(t, scBatches(t, data))
	if len(got) != 2 || got[0].key != "b" || got[0].val != "12" || got[1].key != "a" || got[1].val != "12" || info.Removed != 4 {
		t.Fatalf("second group: %+v, %+v", got, info)
	}
}

func TestSegmentCompactionSkipsOverlap(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 512})
	for i := 0; i < 40; i += 2 {
		h.append(keyedBatch(recordbatch.BuildOptions{}, int64(i), kv{fmt.Sprint("k", i), val("x")}, kv{fmt.Sprint("k", i+1), val("y")}))
	}
	h.log.Roll()
	sealed := scSealed(h)
	if len(sealed) < 2 {
		t.Fatalf("%d sealed segments", len(sealed))
	}
	s0, s1 := sealed[0], sealed[1]
	a, b := scBytes(t, s0), scBytes(t, s1)
	inA := scBatches(t, a)
	if len(inA) < 3 {
		t.Fatalf("%d batches in the first segment", len(inA))
	}
	// The second input starts with the first segment's last two batches,
	// as a segment that overlaps the one before it.
	tail := inA[len(inA)-2:]
	overlap := append(append(append([]byte(nil), tail[0]...), tail[1]...), b...)
	// The keys are unique: everything stays, the bytes unchanged.
	run := func(t *testing.T, inputs [][]byte, froms, nexts []int64) ([]byte, CompactedSegmentInfo) {
		c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: h.clock.Now()}})
		for i, in := range inputs {
			if err := c.MapKeys(context.Background(), bytes.NewReader(in), froms[i], nexts[i]); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		seg := c.NewSegment(&buf, froms[0], 4096)
		for i, in := range inputs {
			if err := seg.Add(context.Background(), bytes.NewReader(in), froms[i], nexts[i], nil); err != nil {
				t.Fatal(err)
			}
		}
		info, err := seg.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), info
	}
	t.Run("overlapping segments", func(t *testing.T) {
		out, info := run(t, [][]byte{a, overlap}, []int64{s0.BaseOffset, s1.BaseOffset}, []int64{s0.NextOffset, s1.NextOffset})
		want := append(append([]byte(nil), a...), b...)
		if !bytes.Equal(out, want) {
			bs := scBatches(t, out)
			t.Fatalf("wrote %d bytes in %d batches, want the %d of both segments", len(out), len(bs), len(want))
		}
		n := s1.NextOffset - s0.BaseOffset
		if info.Records != n || info.Removed != 0 || info.Changed {
			t.Fatalf("info %+v, want %d records read, none removed", info, n)
		}
	})
	t.Run("from inside a batch", func(t *testing.T) {
		from := inA[1].BaseOffset() + 1 // the batch it falls in starts below: left out
		out, info := run(t, [][]byte{a}, []int64{from}, []int64{s0.NextOffset})
		bs := scBatches(t, out)
		if len(bs) != len(inA)-2 || bs[0].BaseOffset() != inA[2].BaseOffset() || !bytes.Equal(out, a[len(inA[0])+len(inA[1]):]) {
			t.Fatalf("from %d: %d batches from %d", from, len(bs), bs[0].BaseOffset())
		}
		if info.Records != s0.NextOffset-inA[2].BaseOffset() || info.Changed {
			t.Fatalf("info %+v", info)
		}
	})
}

// scCorruptInput is three batches of two records, at offsets 0, 2 and 4,
// and where each starts.
func scCorruptInput() ([]byte, []int) {
	var data []byte
	var starts []int
	for i := int64(0); i < 3; i++ {
		b := keyedBatch(recordbatch.BuildOptions{}, 10+i, kv{"a", val("1")}, kv{fmt.Sprint("b", i), val("2")})
		b.SetBaseOffset(2 * i)
		starts = append(starts, len(data))
		data = append(data, b...)
	}
	return data, starts
}

// scSetCRC recomputes a batch's CRC-32C over its attributes on.
func scSetCRC(b []byte) {
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
}

func TestSegmentCompactionCorruptInput(t *testing.T) {
	good, starts := scCorruptInput()
	second := starts[1]
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		next   int64
	}{
		{"flipped body byte", func(b []byte) []byte { b[second+recordbatch.HeaderSize+3] ^= 0x10; return b }, 6},
		{"flipped header byte", func(b []byte) []byte { b[second+45] ^= 1; return b }, 6}, // the producer id
		{"truncated batch", func(b []byte) []byte { return b[:len(b)-5] }, 6},
		{"truncated length prefix", func(b []byte) []byte { return b[:second+7] }, 6},
		{"truncated header", func(b []byte) []byte { return b[:second+30] }, 6},
		{"length 2^31-1", func(b []byte) []byte { binary.BigEndian.PutUint32(b[second+8:], math.MaxInt32); return b }, 6},
		{"negative length", func(b []byte) []byte { binary.BigEndian.PutUint32(b[second+8:], 0xffffffff); return b }, 6},
		{"length below a header", func(b []byte) []byte { binary.BigEndian.PutUint32(b[second+8:], 20); return b }, 6},
		{"magic 1", func(b []byte) []byte { b[second+16] = 1; return b }, 6},
		{"overlapping offsets", func(b []byte) []byte { recordbatch.Batch(b[second:]).SetBaseOffset(1); return b }, 6},
		{"offsets going back", func(b []byte) []byte { recordbatch.Batch(b[starts[2]:]).SetBaseOffset(0); return b }, 6},
		{"negative offset", func(b []byte) []byte { recordbatch.Batch(b).SetBaseOffset(-2); return b }, 6},
		{"last offset at next", func(b []byte) []byte { return b }, 5},
		{"past next", func(b []byte) []byte { return b }, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.mutate(bytes.Clone(good))
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: time.UnixMilli(1_700_000_000_000)}})
			if err := c.MapKeys(context.Background(), bytes.NewReader(data), 0, tc.next); !errors.Is(err, ErrSegmentCorrupt) {
				t.Fatalf("MapKeys: %v, want ErrSegmentCorrupt", err)
			}
			c = NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: time.UnixMilli(1_700_000_000_000)}})
			var buf bytes.Buffer
			seg := c.NewSegment(&buf, 0, 4096)
			if err := seg.Add(context.Background(), bytes.NewReader(data), 0, tc.next, nil); !errors.Is(err, ErrSegmentCorrupt) {
				t.Fatalf("Add: %v, want ErrSegmentCorrupt", err)
			}
			runtime.ReadMemStats(&ms)
			if n := ms.TotalAlloc - before; n > 4<<20 {
				t.Fatalf("%d bytes allocated over %d bytes of input", n, len(data))
			}
		})
	}
	// Records that do not read under a good CRC: an error, no panic.
	t.Run("bad records under a good CRC", func(t *testing.T) {
		data := bytes.Clone(good)
		b := data[second:starts[2]]
		b[recordbatch.HeaderSize] = 0x7f // the first record's length: negative
		scSetCRC(b)
		if err := recordbatch.Check(recordbatch.Batch(b)); err != nil {
			t.Fatal(err)
		}
		c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: time.UnixMilli(1_700_000_000_000)}})
		if err := c.MapKeys(context.Background(), bytes.NewReader(data), 0, 6); err == nil {
			t.Fatal("MapKeys read a batch whose records do not read")
		}
		c = NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: time.UnixMilli(1_700_000_000_000)}})
		if err := c.NewSegment(io.Discard, 0, 4096).Add(context.Background(), bytes.NewReader(data), 0, 6, nil); err == nil {
			t.Fatal("Add rewrote a batch whose records do not read")
		}
	})
	// The good bytes pass, for the cases above to mean something.
	c := NewSegmentCompaction(SegmentCompactionOptions{CompactOptions: CompactOptions{Now: time.UnixMilli(1_700_000_000_000)}})
	if err := c.MapKeys(context.Background(), bytes.NewReader(good), 0, 6); err != nil {
		t.Fatal(err)
	}
	if err := c.NewSegment(io.Discard, 0, 4096).Add(context.Background(), bytes.NewReader(good), 0, 6, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentCompactionAbortedTxns(t *testing.T) {
	h := newHarness(t, Config{SegmentBytes: 4096})
	txn := func(pid int64, seq int32, recs ...kv) Batch {
		return keyedBatch(recordbatch.BuildOptions{Transactional: true, ProducerID: pid, ProducerEpoch: 0, BaseSequence: seq}, 10, recs...)
	}
	h.append(keyedBatch(recordbatch.BuildOptions{}, 1, kv{"a", val("plain")}))            // 0
	h.append(txn(1, 0, kv{"a", val("aborted")}, kv{"x", val("aborted")}))                 // 1-2
	h.append(txn(2, 0, kv{"b", val("committed")}))                                        // 3
	abortAt := h.marker(1, 0, false)                                                      // 4
	h.marker(2, 0, true)                                                                  // 5
	h.log.Roll()                                                                          //
	h.append(keyedBatch(recordbatch.BuildOptions{}, 20, kv{"c", val("1")}))               // 6
	h.append(keyedBatch(recordbatch.BuildOptions{}, 21, kv{"d", val("1")}, kv{"d", nil})) // 7-8
	h.log.Roll()
	sealed := scSealed(h)
	if len(sealed) != 2 || abortAt != 4 {
		t.Fatalf("segments %+v, abort marker at %d", sealed, abortAt)
	}
	end := sealed[1].NextOffset
	aborted := h.log.AbortedTxns(0, end)
	if len(aborted) != 1 || aborted[0].ProducerID != 1 || aborted[0].FirstOffset != 1 || aborted[0].LastOffset != 4 {
		t.Fatalf("aborted transactions %+v", aborted)
	}
	segAborted := func(s SegmentInfo) []AbortedTxn {
		ss, err := h.log.OpenSealed(s.BaseOffset)
		if err != nil {
			t.Fatal(err)
		}
		defer ss.Close()
		return ss.AbortedTxns
	}
	now := h.clock.Now()
	const retention = 1000
	run := func(opts SegmentCompactionOptions) ([]recordbatch.Batch, CompactedSegmentInfo) {
		opts.Now, opts.DeleteRetentionMs = now, retention
		c := NewSegmentCompaction(opts)
		scMapKeys(t, c, sealed)
		data, info := scGroup(t, c, sealed, 4096, segAborted)
		scRequireIndexes(t, data, 0, info)
		return scBatches(t, data), info
	}
	kinds := func(bs []recordbatch.Batch) string {
		var out []string
		for _, b := range bs {
			switch {
			case b.Control():
				out = append(out, fmt.Sprint("marker", b.ProducerID(), "@", b.BaseOffset()))
			case b.RecordCount() == 0:
				out = append(out, fmt.Sprint("empty", b.ProducerID(), "@", b.BaseOffset()))
			default:
				out = append(out, fmt.Sprint("data", b.ProducerID(), "@", b.BaseOffset()))
			}
		}
		return fmt.Sprint(out)
	}

	// Run first: Log.Compact below rewrites the segments.
	t.Run("no last batches", func(t *testing.T) {
		// Nothing of producer 1's transaction stays: its marker, past
		// delete.retention.ms by its timestamp, goes with it.
		bs, info := run(SegmentCompactionOptions{AbortedTxns: aborted})
		if k, w := kinds(bs), "[data-1@0 data2@3 marker2@5 data-1@6 data-1@7]"; k != w {
			t.Fatalf("batches %s, want %s", k, w)
		}
		if len(info.AbortedTxns) != 0 {
			t.Fatalf("aborted transactions kept %+v without their marker", info.AbortedTxns)
		}
	})
	t.Run("aborted transactions not given", func(t *testing.T) {
		// The aborted records then read as committed: the pass needs
		// the log's aborted transactions.
		bs, _ := run(SegmentCompactionOptions{})
		got, _ := scRecords(t, bs)
		if !slices.Contains(got, record{2, "x", "aborted", false}) {
			t.Fatalf("records %+v", got)
		}
	})

	bs, info := run(SegmentCompactionOptions{AbortedTxns: aborted, LastBatches: h.log.LastBatches()})
	got, _ := scRecords(t, bs)
	want := []record{{0, "a", "plain", false}, {3, "b", "committed", false}, {6, "c", "1", false}, {8, "d", "", true}}
	if !slices.Equal(got, want) {
		t.Fatalf("records %+v, want %+v", got, want)
	}
	// Producer 1's last batch stays, empty, and so its marker does, with
	// its entry.
	if k, w := kinds(bs), "[data-1@0 empty1@1 data2@3 marker1@4 marker2@5 data-1@6 data-1@7]"; k != w {
		t.Fatalf("batches %s, want %s", k, w)
	}
	if !slices.Equal(info.AbortedTxns, aborted) {
		t.Fatalf("aborted transactions kept %+v, want %+v", info.AbortedTxns, aborted)
	}
	// 9 records (the markers' included): 2 aborted and 1 superseded go.
	if info.Records != 9 || info.Removed != 3 || !info.Changed {
		t.Fatalf("info %+v", info)
	}
	// Log.Compact, with the same clock, writes the same batches.
	h.compact(CompactOptions{Now: now, DeleteRetentionMs: retention})
	local := h.readAll(0)
	if len(local) != len(bs) {
		t.Fatalf("Log.Compact left %s, the segment pass %s", kinds(local), kinds(bs))
	}
	for i := range local {
		if !bytes.Equal(local[i], bs[i]) {
			t.Fatalf("batch %d: Log.Compact wrote %x, the segment pass %x", i, []byte(local[i]), []byte(bs[i]))
		}
	}
}

// fuzzSegmentNow is the fuzz pass's clock: past the timestamps of the
// seeds' markers and delete horizons, so that both paths run.
const fuzzSegmentNow = 1_700_000_000_000

// segmentCompactionSeeds builds the fuzz seeds: the sealed segments of a
// log with plain, compressed, idempotent and transactional batches,
// tombstones and markers, one of them already compacted, and a few
// handmade streams.
func segmentCompactionSeeds(f *testing.F) [][]byte {
	dir := filepath.Join(f.TempDir(), "topic-0")
	l, err := Open(dir, Config{SegmentBytes: 1024}, Options{Logger: quietLogger(), Now: func() time.Time { return time.UnixMilli(fuzzSegmentNow) }})
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	add := func(b Batch) {
		if _, err := l.AppendAsLeader(b, 0); err != nil {
			f.Fatal(err)
		}
	}
	mark := func(pid int64, commit bool, ts int64) {
		if _, err := l.AppendMarker(Marker{ProducerID: pid, Commit: commit, Timestamp: ts}, 0); err != nil {
			f.Fatal(err)
		}
	}
	codecs := []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecGzip, recordbatch.CodecSnappy, recordbatch.CodecLZ4, recordbatch.CodecZstd}
	for i := 0; i < 30; i++ {
		k := fmt.Sprint("k", i%5)
		var v []byte
		if i%7 != 3 {
			v = val(fmt.Sprint(i))
		}
		add(keyedBatch(recordbatch.BuildOptions{Codec: codecs[i%len(codecs)]}, int64(i), kv{k, v}, kv{fmt.Sprint("j", i%3), val("x")}))
		switch i {
		case 5:
			add(keyedBatch(recordbatch.BuildOptions{ProducerID: 7, BaseSequence: 0}, 50, kv{"k1", val("idem")}))
		case 10:
			add(keyedBatch(recordbatch.BuildOptions{Transactional: true, ProducerID: 8, BaseSequence: 0}, 60, kv{"k2", val("aborted")}))
			add(keyedBatch(recordbatch.BuildOptions{Transactional: true, ProducerID: 9, BaseSequence: 0}, 61, kv{"k3", val("committed")}))
			mark(8, false, 62)
			mark(9, true, fuzzSegmentNow) // not yet past delete.retention.ms
		}
	}
	if err := l.Roll(); err != nil {
		f.Fatal(err)
	}
	if err := l.Flush(); err != nil {
		f.Fatal(err)
	}
	l.flushes.Wait()
	var seeds [][]byte
	var whole []byte
	for _, s := range l.Segments() {
		if s.Active {
			continue
		}
		data, err := os.ReadFile(s.Path)
		if err != nil {
			f.Fatal(err)
		}
		data = data[:s.Size]
		seeds = append(seeds, data)
		whole = append(whole, data...)
	}
	seeds = append(seeds, whole)
	// A segment already compacted: stamped tombstones, an emptied
	// producer batch.
	if _, err := l.Compact(context.Background(), CompactOptions{Now: time.UnixMilli(fuzzSegmentNow), HighWatermark: l.LogEndOffset(), DeleteRetentionMs: 1000}); err != nil {
		f.Fatal(err)
	}
	for _, s := range l.Segments()[:1] {
		data, err := os.ReadFile(s.Path)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, data[:s.Size])
	}
	good, starts := scCorruptInput()
	seeds = append(seeds, good, good[:starts[1]], good[:len(good)-1], []byte{})
	flipped := bytes.Clone(good)
	flipped[starts[1]+recordbatch.HeaderSize] ^= 1
	seeds = append(seeds, flipped)
	return seeds
}

// FuzzSegmentCompaction runs a SegmentCompaction over any bytes read as a
// segment: never a panic; a stream MapKeys accepts, Add accepts too; what
// Add writes are valid batches, of ascending offsets, each the offset
// range of a batch read, holding only keyed records, which a second pass
// reads again.
func FuzzSegmentCompaction(f *testing.F) {
	for _, s := range segmentCompactionSeeds(f) {
		f.Add(s, uint8(0))
	}
	good, _ := scCorruptInput()
	f.Add(good, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, fromByte uint8) {
		if len(data) > 1<<20 || claimsPastEnd(data, 1<<20) {
			// The stream reader allocates a batch's claimed length
			// (up to maxScanBatch, 128 MiB) before it reads it: too
			// slow for a fuzz iteration. TestSegmentCompactionCorruptInput
			// covers the lengths it refuses.
			return
		}
		ctx := context.Background()
		from := int64(fromByte)
		// A group's offsets fit its indexes' 32 bits (the caller's part,
		// as Log.groupSize's): the pass does not check it.
		next := from + math.MaxInt32
		opts := SegmentCompactionOptions{CompactOptions: CompactOptions{
			Now:               time.UnixMilli(fuzzSegmentNow),
			DeleteRetentionMs: 1000,
			MaxKeys:           4,
			Validate:          recordbatch.ValidateOptions{MaxDecompressed: 1 << 16},
		}}
		if err := NewSegmentCompaction(opts).MapKeys(ctx, bytes.NewReader(data), from, next); err != nil {
			return
		}
		// The bytes check out: the pass runs again knowing their
		// transactions and producers, as a log would tell it.
		aborted, last := fuzzTxnState(data)
		opts.AbortedTxns, opts.LastBatches = aborted, last
		c := NewSegmentCompaction(opts)
		if err := c.MapKeys(ctx, bytes.NewReader(data), from, next); err != nil {
			t.Fatalf("MapKeys refused, with the aborted transactions, what it read without: %v", err)
		}
		_ = c.Full()
		var out bytes.Buffer
		seg := c.NewSegment(&out, from, 64)
		if err := seg.Add(ctx, bytes.NewReader(data), from, next, aborted); err != nil {
			t.Fatalf("Add refused what MapKeys read: %v", err)
		}
		info, err := seg.Finish()
		if err != nil {
			t.Fatal(err)
		}
		// The batches read (MapKeys checked them all).
		ranges := map[int64]int64{}
		var read int64
		for rest := data; len(rest) > 0; {
			b, r, err := recordbatch.Next(rest)
			if err != nil {
				t.Fatalf("MapKeys accepted bytes that do not split into batches: %v", err)
			}
			if b.BaseOffset() >= from {
				ranges[b.BaseOffset()] = b.LastOffset()
				read += int64(b.RecordCount())
			}
			rest = r
		}
		if info.Size != int64(out.Len()) || info.Records != read || info.Removed < 0 || info.Removed > read {
			t.Fatalf("info %+v for %d bytes written, %d records read", info, out.Len(), read)
		}
		if len(ranges) > 0 && out.Len() == 0 {
			t.Fatal("a group that read batches wrote none")
		}
		var kept int64
		prev := int64(-1)
		markers := map[int64]bool{}
		for rest := out.Bytes(); len(rest) > 0; {
			b, r, err := recordbatch.Next(rest)
			if err != nil {
				t.Fatalf("output: %v", err)
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("output batch at %d: %v", b.BaseOffset(), err)
			}
			if b.BaseOffset() <= prev {
				t.Fatalf("output batch at %d after offset %d", b.BaseOffset(), prev)
			}
			if last, ok := ranges[b.BaseOffset()]; !ok || last != b.LastOffset() {
				t.Fatalf("output batch [%d, %d] is no batch read", b.BaseOffset(), b.LastOffset())
			}
			prev = b.LastOffset()
			kept += int64(b.RecordCount())
			if b.Control() {
				markers[b.BaseOffset()] = true
			}
			if !b.Control() {
				err := recordbatch.Records(ctx, b, recordbatch.ValidateOptions{MaxDecompressed: 4 << 16}, func(r recordbatch.Record) error {
					if r.Key == nil {
						return errors.New("a record without a key kept")
					}
					return nil
				})
				if err != nil {
					t.Fatalf("output batch at %d: %v", b.BaseOffset(), err)
				}
			}
			rest = r
		}
		if kept != info.Records-info.Removed {
			t.Fatalf("%d records written, info %+v", kept, info)
		}
		for i, e := range info.OffsetIndex {
			if int64(e.Position) >= info.Size || (i > 0 && (e.RelOffset <= info.OffsetIndex[i-1].RelOffset || e.Position <= info.OffsetIndex[i-1].Position)) {
				t.Fatalf("offset index %+v of %d bytes", info.OffsetIndex, info.Size)
			}
		}
		for i, e := range info.AbortedTxns {
			if !markers[e.LastOffset] || !slices.Contains(aborted, e) || (i > 0 && e.LastOffset <= info.AbortedTxns[i-1].LastOffset) {
				t.Fatalf("aborted transactions kept %+v of %+v", info.AbortedTxns, aborted)
			}
		}
		for i := 1; i < len(info.TimeIndex); i++ {
			if info.TimeIndex[i].Timestamp <= info.TimeIndex[i-1].Timestamp {
				t.Fatalf("time index %+v", info.TimeIndex)
			}
		}
		// A second pass reads what the first wrote.
		opts.Validate.MaxDecompressed = 4 << 16 // a stamped horizon may lengthen timestamp deltas
		opts.AbortedTxns, opts.LastBatches = nil, nil
		c2 := NewSegmentCompaction(opts)
		if err := c2.MapKeys(ctx, bytes.NewReader(out.Bytes()), 0, next); err != nil {
			t.Fatalf("a second pass cannot map the first one's output: %v", err)
		}
		if err := c2.NewSegment(io.Discard, 0, 64).Add(ctx, bytes.NewReader(out.Bytes()), 0, next, nil); err != nil {
			t.Fatalf("a second pass cannot rewrite the first one's output: %v", err)
		}
	})
}

// claimsPastEnd reports whether a batch length of data claims more than
// limit bytes past its end.
func claimsPastEnd(data []byte, limit int64) bool {
	for pos := 0; pos+recordbatch.LengthOffset <= len(data); {
		n := int64(int32(binary.BigEndian.Uint32(data[pos+8:]))) + recordbatch.LengthOffset
		if n < recordbatch.HeaderSize {
			return false
		}
		if n > int64(len(data)-pos) {
			return n-int64(len(data)-pos) > limit
		}
		pos += int(n)
	}
	return false
}

// fuzzTxnState derives from a stream's batches what a log would know of
// them: the aborted transactions their ABORT markers end, and the last
// batch of each producer.
func fuzzTxnState(data []byte) ([]AbortedTxn, map[int64]int64) {
	var aborted []AbortedTxn
	last := map[int64]int64{}
	open := map[int64]int64{}
	for rest := data; len(rest) > 0; {
		b, r, err := recordbatch.Next(rest)
		if err != nil {
			break
		}
		rest = r
		pid := b.ProducerID()
		if pid < 0 {
			continue
		}
		if !b.Control() {
			last[pid] = b.LastOffset()
			if _, ok := open[pid]; !ok && b.Transactional() {
				open[pid] = b.BaseOffset()
			}
			continue
		}
		first, ok := open[pid]
		delete(open, pid)
		if !ok || b.Codec() != recordbatch.CodecNone { // readMarker's decompression is not bounded for the fuzzer
			continue
		}
		if m, err := readMarker(b); err == nil && !m.commit && !m.empty {
			aborted = append(aborted, AbortedTxn{ProducerID: pid, FirstOffset: first, LastOffset: b.BaseOffset(), LastStableOffset: b.BaseOffset() + 1})
		}
	}
	return aborted, last
}
