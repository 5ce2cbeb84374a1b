package tiering

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

// testSnapshot encodes a producer snapshot in localseg's format whose
// producers (ascending ids) have open transactions starting at the
// offsets given (-1: none open).
func testSnapshot(producers ...[2]int64) []byte {
	b := []byte(snapshotMagic)
	b = binary.BigEndian.AppendUint16(b, snapshotVersion)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(producers)))
	for i, p := range producers {
		b = binary.BigEndian.AppendUint64(b, uint64(p[0]))
		b = binary.BigEndian.AppendUint16(b, 0)                 // epoch
		b = binary.BigEndian.AppendUint64(b, 1_700_000_000_000) // last timestamp
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)        // coordinator epoch
		b = binary.BigEndian.AppendUint64(b, uint64(p[1]))
		b = append(b, byte(i%2)) // batches
		for range i % 2 {
			b = append(b, make([]byte, snapshotBatchSize)...)
		}
	}
	binary.BigEndian.PutUint32(b[6:], crc32.Checksum(b[snapshotHeaderSize:], castagnoli))
	return b
}

func abortedSample() (*Companion, *Segment) {
	c, seg := sampleCompanion() // [10, 20)
	c.AbortedTxns = []localseg.AbortedTxn{
		{ProducerID: 7, FirstOffset: 3, LastOffset: 10, LastStableOffset: 11},
		{ProducerID: 8, FirstOffset: 12, LastOffset: 15, LastStableOffset: 14},
		{ProducerID: 9, FirstOffset: 19, LastOffset: 19, LastStableOffset: 20},
	}
	return c, seg
}

func TestCompanionRoundTripsAbortedTxns(t *testing.T) {
	c, seg := abortedSample()
	data := EncodeCompanion(c)
	if n := binary.BigEndian.Uint16(data[6:]); n != 5 {
		t.Fatalf("%d sections, want 5", n)
	}
	got, err := DecodeCompanion(data, seg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v\nwant %+v", got, c)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x01
		if _, err := DecodeCompanion(bad, seg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d accepted: %v", i, err)
		}
	}
}

// A segment without aborted transactions gets the companion it had before
// the section existed: the four sections, nothing else.
func TestCompanionWithoutAbortedTxnsHasNoSectionForThem(t *testing.T) {
	c, seg := sampleCompanion()
	c.AbortedTxns = []localseg.AbortedTxn{}
	data := EncodeCompanion(c)
	if n := binary.BigEndian.Uint16(data[6:]); n != 4 {
		t.Fatalf("%d sections, want 4", n)
	}
	got, err := DecodeCompanion(data, seg)
	if err != nil || got.AbortedTxns != nil {
		t.Fatalf("aborted transactions %v (%v)", got.AbortedTxns, err)
	}
}

// encodeSections encodes a companion of the sections given, in order.
func encodeSections(kinds []uint16, secs [][]byte) []byte {
	b := []byte(companionMagic)
	b = binary.BigEndian.AppendUint16(b, formatVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(secs)))
	b = append(b, 0, 0, 0, 0)
	for i, sec := range secs {
		b = binary.BigEndian.AppendUint16(b, kinds[i])
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(len(sec)))
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(sec, castagnoli))
	}
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(b[12:], castagnoli))
	for _, sec := range secs {
		b = append(b, sec...)
	}
	return b
}

func abortedSection(txns ...localseg.AbortedTxn) []byte {
	var b []byte
	for _, e := range txns {
		b = binary.BigEndian.AppendUint64(b, uint64(e.ProducerID))
		b = binary.BigEndian.AppendUint64(b, uint64(e.FirstOffset))
		b = binary.BigEndian.AppendUint64(b, uint64(e.LastOffset))
		b = binary.BigEndian.AppendUint64(b, uint64(e.LastStableOffset))
	}
	return b
}

// Readers skip the section kinds they do not know: a reader from before
// kind 5 reads a companion that has it as this one reads a kind 99, and
// this one reads a companion without kind 5 as a segment without aborts.
func TestCompanionSectionsOfUnknownKindsAreSkipped(t *testing.T) {
	c, seg := abortedSample()
	data := EncodeCompanion(c)
	// Turn kind 5 (the fifth table entry) into 99: the table checksum
	// changes with it.
	binary.BigEndian.PutUint16(data[12+4*12:], 99)
	binary.BigEndian.PutUint32(data[8:12], crc32.Checksum(data[12:12+5*12], castagnoli))
	got, err := DecodeCompanion(data, seg)
	if err != nil {
		t.Fatal(err)
	}
	want := *c
	want.AbortedTxns = nil
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("got %+v\nwant %+v", got, &want)
	}
	// An unknown section must still check out.
	data[len(data)-1] ^= 1
	if _, err := DecodeCompanion(data, seg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged unknown section accepted: %v", err)
	}
}

func TestCompanionDecodeRejectsBadAbortedTxns(t *testing.T) {
	seg := &Segment{BaseOffset: 10, NextOffset: 20, Size: 1000}
	txn := func(first, last int64) localseg.AbortedTxn {
		return localseg.AbortedTxn{ProducerID: 1, FirstOffset: first, LastOffset: last, LastStableOffset: last + 1}
	}
	for _, tc := range []struct {
		name string
		sec  []byte
	}{
		{"marker below the segment", abortedSection(txn(3, 9))},
		{"marker at the next offset", abortedSection(txn(12, 20))},
		{"first offset after the marker", abortedSection(txn(16, 15))},
		{"negative first offset", abortedSection(txn(-1, 15))},
		{"markers descending", abortedSection(txn(11, 15), txn(11, 14))},
		{"two on one marker", abortedSection(txn(11, 15), txn(12, 15))},
		{"negative producer id", abortedSection(localseg.AbortedTxn{ProducerID: -1, FirstOffset: 11, LastOffset: 15, LastStableOffset: 16})},
		{"last stable offset past the marker", abortedSection(localseg.AbortedTxn{ProducerID: 1, FirstOffset: 11, LastOffset: 15, LastStableOffset: 17})},
		{"negative last stable offset", abortedSection(localseg.AbortedTxn{ProducerID: 1, FirstOffset: 11, LastOffset: 15, LastStableOffset: -1})},
		{"a partial entry", abortedSection(txn(11, 15))[:31]},
		{"an entry and a half", append(abortedSection(txn(11, 15)), make([]byte, 16)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := encodeSections([]uint16{sectionOffsetIndex, sectionAbortedTxns}, [][]byte{nil, tc.sec})
			if c, err := DecodeCompanion(data, seg); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("accepted: %+v (%v)", c, err)
			}
		})
	}
	// Within the bounds: markers on the segment's first and last offsets,
	// a first offset below the segment (the transaction started in an
	// earlier one), a last stable offset below the first (an older
	// transaction still open).
	good := abortedSection(txn(0, 10), localseg.AbortedTxn{ProducerID: 2, FirstOffset: 13, LastOffset: 14, LastStableOffset: 4}, txn(19, 19))
	c, err := DecodeCompanion(encodeSections([]uint16{sectionAbortedTxns}, [][]byte{good}), seg)
	if err != nil || len(c.AbortedTxns) != 3 {
		t.Fatalf("%+v (%v)", c, err)
	}
}

func TestOpenTxnFloorReadsTheProducerSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		snap  []byte
		floor int64
		ok    bool
	}{
		{"none", nil, 0, false},
		{"no producers", testSnapshot(), math.MaxInt64, true},
		{"no open transaction", testSnapshot([2]int64{1, -1}, [2]int64{2, -1}), math.MaxInt64, true},
		{"the oldest open one", testSnapshot([2]int64{1, 40}, [2]int64{2, -1}, [2]int64{3, 25}), 25, true},
		{"damaged", func() []byte { b := testSnapshot([2]int64{1, 40}); b[len(b)-3] ^= 1; return b }(), 0, false},
		{"truncated", testSnapshot([2]int64{1, 40}, [2]int64{2, 7})[:40], 0, false},
		{"another version", func() []byte { b := testSnapshot(); b[5] = 2; return b }(), 0, false},
	} {
		floor, ok := openTxnFloor(tc.snap)
		if floor != tc.floor || ok != tc.ok {
			t.Errorf("%s: floor %d %v, want %d %v", tc.name, floor, ok, tc.floor, tc.ok)
		}
	}
}

// txnArchive is a partition of five remote segments of ten offsets each,
// written to b (companions and, with spill, a spilled part holding the
// first two): aborted transactions, producer snapshots at their ends, and
// no .log objects (AbortedTxns reads none).
//
//	[0, 10)   A aborted at 5 (started at 2); B (started at 8) still open
//	[10, 20)  B aborted at 14, C (started at 16) at 18; nothing open
//	[20, 30)  no marker; D (started at 25) open at the end
//	[30, 40)  D aborted at 33; no snapshot
//	[40, 50)  E aborted at 45 (started at 41); no snapshot
var (
	txnA = localseg.AbortedTxn{ProducerID: 1, FirstOffset: 2, LastOffset: 5, LastStableOffset: 6}
	txnB = localseg.AbortedTxn{ProducerID: 2, FirstOffset: 8, LastOffset: 14, LastStableOffset: 15}
	txnC = localseg.AbortedTxn{ProducerID: 3, FirstOffset: 16, LastOffset: 18, LastStableOffset: 19}
	txnD = localseg.AbortedTxn{ProducerID: 4, FirstOffset: 25, LastOffset: 33, LastStableOffset: 34}
	txnE = localseg.AbortedTxn{ProducerID: 5, FirstOffset: 41, LastOffset: 45, LastStableOffset: 46}
)

func txnArchive(t *testing.T, b objectstore.Bucket, spill bool) *Manifest {
	t.Helper()
	comps := []*Companion{
		{AbortedTxns: []localseg.AbortedTxn{txnA}, ProducerSnapshot: testSnapshot([2]int64{1, -1}, [2]int64{2, 8})},
		{AbortedTxns: []localseg.AbortedTxn{txnB, txnC}, ProducerSnapshot: testSnapshot([2]int64{1, -1}, [2]int64{2, -1}, [2]int64{3, -1})},
		{ProducerSnapshot: testSnapshot([2]int64{4, 25})},
		{AbortedTxns: []localseg.AbortedTxn{txnD}},
		{AbortedTxns: []localseg.AbortedTxn{txnE}},
	}
	return putTxnSegments(t, b, comps, [][2]int64{{0, 10}, {10, 20}, {20, 30}, {30, 40}, {40, 50}}, spill)
}

// txnSegID is the id of putTxnSegments' i-th segment.
func txnSegID(i int) (id [16]byte) {
	binary.BigEndian.PutUint64(id[:], uint64(i)+1)
	return id
}

// txnCompanionName is the end of the key of putTxnSegments' i-th
// segment's companion, whose base offset is base.
func txnCompanionName(i int, base int64) string { return objectBase(base, txnSegID(i)) + ".indexes" }

// putTxnSegments writes the companions of segments of the offset ranges
// given and returns their manifest; with spill its first two entries are
// in a spilled part.
func putTxnSegments(t *testing.T, b objectstore.Bucket, comps []*Companion, ranges [][2]int64, spill bool) *Manifest {
	t.Helper()
	l, ctx := Layout{Prefix: "archive"}, context.Background()
	var segs []Segment
	for i, c := range comps {
		seg := Segment{BaseOffset: ranges[i][0], NextOffset: ranges[i][1], Size: 1000, MaxTimestamp: -1, ID: txnSegID(i)}
		data := EncodeCompanion(c)
		seg.CompanionSize = int64(len(data))
		if _, err := b.Put(ctx, l.CompanionKey(testPartition, seg.BaseOffset, seg.ID), bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	m := &Manifest{Segments: segs}
	if spill {
		s, err := newSpill(segs[:2], 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		data := EncodeManifest(s.part, true)
		if _, err := b.Put(ctx, l.SpillKey(testPartition, s.BaseOffset, s.ID), bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		s.part = nil
		m = &Manifest{Spills: []Spill{s}, Segments: segs[2:]}
	}
	return m
}

func TestReaderAbortedTxnsSpanSegmentsAndStopAtTheFirstBound(t *testing.T) {
	for _, spill := range []bool{false, true} {
		name := "manifest"
		if spill {
			name = "spilled"
		}
		for _, tc := range []struct {
			name     string
			from, to int64
			want     []localseg.AbortedTxn
			// unread: the segment (by base offset) from which on no
			// companion may be read.
			unread int64
		}{
			// B started in [0, 10) and ended in the next segment;
			// [0, 10)'s snapshot shows it open, B's last stable offset
			// ends the search.
			{"a marker in the next segment", 0, 10, []localseg.AbortedTxn{txnA, txnB}, 20},
			{"a range inside a transaction", 10, 12, []localseg.AbortedTxn{txnB}, 20},
			// B's marker is below 15; [10, 20)'s snapshot holds no open
			// transaction.
			{"no open transaction at the segment's end", 15, 20, []localseg.AbortedTxn{txnC}, 20},
			// D is open at 30 since 25: past the segment, to its marker.
			{"an open transaction at the segment's end", 22, 28, []localseg.AbortedTxn{txnD}, 40},
			{"an open transaction started at to", 22, 25, nil, 30},
			// Segments without snapshots: to the manifest's end.
			{"no bound but the end", 35, 48, []localseg.AbortedTxn{txnE}, 50},
			{"everything", 0, 50, []localseg.AbortedTxn{txnA, txnB, txnC, txnD, txnE}, 50},
			{"at the end", 50, 60, nil, 0},
			{"an empty range", 12, 12, nil, 0},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				fb := &faultyBucket{Bucket: objectstore.NewMem()}
				m := txnArchive(t, fb, spill)
				var trap []*fault
				for i, base := range []int64{0, 10, 20, 30, 40} {
					if base >= tc.unread {
						trap = append(trap, fb.add(&fault{op: "get", match: txnCompanionName(i, base), n: 1}))
					}
				}
				r := newTestReader(t, fb, 4096)
				got, err := r.AbortedTxns(context.Background(), testPartition, m, tc.from, tc.to)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %+v\nwant %+v", got, tc.want)
				}
				for _, f := range trap {
					if f.fired != 0 {
						t.Fatalf("read %s past the bound", f.match)
					}
				}
				// Again: the companions (and the spilled part) are cached.
				r.Wait()
				before := fb.getCount()
				if again, err := r.AbortedTxns(context.Background(), testPartition, m, tc.from, tc.to); err != nil || !reflect.DeepEqual(again, got) {
					t.Fatalf("again: %+v (%v)", again, err)
				}
				if n := fb.getCount() - before; n != 0 {
					t.Fatalf("a second search made %d GETs", n)
				}
			})
		}
	}
}

// Entries overlap when a new leader's segment starts below the previous
// one's end: its markers below that end are the previous segment's.
func TestReaderAbortedTxnsTakeOverlappingEntriesOnce(t *testing.T) {
	f := localseg.AbortedTxn{ProducerID: 6, FirstOffset: 7, LastOffset: 9, LastStableOffset: 10}
	b := objectstore.NewMem()
	m := putTxnSegments(t, b, []*Companion{
		{AbortedTxns: []localseg.AbortedTxn{txnA, f}},
		{AbortedTxns: []localseg.AbortedTxn{f, txnB, txnC}, ProducerSnapshot: testSnapshot()},
	}, [][2]int64{{0, 10}, {8, 20}}, false)
	r := newTestReader(t, b, 4096)
	got, err := r.AbortedTxns(context.Background(), testPartition, m, 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	if want := []localseg.AbortedTxn{txnA, f, txnB, txnC}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// Below the log start the segments await deletion: the search starts at
// the log start, and a companion it cannot read is an error.
func TestReaderAbortedTxnsFromTheLogStartAndOnStoreErrors(t *testing.T) {
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	m := txnArchive(t, fb, false)
	m.LogStartOffset = 12
	below := fb.add(&fault{op: "get", match: txnCompanionName(0, 0), n: 1})
	r := newTestReader(t, fb, 4096)
	got, err := r.AbortedTxns(context.Background(), testPartition, m, 0, 13)
	if err != nil || !reflect.DeepEqual(got, []localseg.AbortedTxn{txnB}) || below.fired != 0 {
		t.Fatalf("%+v (%v), %d reads below the log start", got, err, below.fired)
	}
	fb.add(&fault{op: "get", match: txnCompanionName(2, 20), n: 1})
	if _, err := r.AbortedTxns(context.Background(), testPartition, m, 22, 28); err == nil {
		t.Fatal("a companion that failed to load was skipped")
	}
}

// txnLog is a local log with small segments holding transactions that
// span segments, aborted and committed, with plain batches in between.
func txnLog(t *testing.T) *localseg.Log {
	t.Helper()
	log, _ := testLog(t, 700, 0)
	seqs := map[int64]int32{}
	ts := int64(1_700_000_000_000)
	txn := func(pid int64) {
		t.Helper()
		ts++
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Transactional: true, ProducerID: pid, ProducerEpoch: 0,
			BaseSequence: seqs[pid], BaseTimestamp: ts}, []recordbatch.Record{{Value: bytes.Repeat([]byte("t"), 200)}})
		if err != nil {
			t.Fatal(err)
		}
		seqs[pid]++
		if _, err := log.AppendAsLeader(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	plain := func(n int) {
		t.Helper()
		for range n {
			ts++
			if _, err := log.AppendAsLeader(testBatch(t, 1, 200, ts), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	end := func(pid int64, commit bool) {
		t.Helper()
		ts++
		if _, err := log.AppendMarker(localseg.Marker{ProducerID: pid, Commit: commit, Timestamp: ts}, 0); err != nil {
			t.Fatal(err)
		}
	}
	txn(100)
	plain(3)
	txn(101)
	plain(2)
	end(100, false) // aborted, three segments after it started
	plain(1)
	txn(102)
	end(102, false) // aborted within a segment, 101 still open
	plain(2)
	txn(100)
	end(101, true)
	plain(3)
	txn(100)
	end(100, false)
	plain(1)
	txn(103)
	plain(4)
	end(103, false)
	plain(5)
	return log
}

// The archiver uploads each segment's aborted transactions, and the
// reader finds in the bucket what the local log finds on disk, for every
// range: through the producer snapshots localseg writes too.
func TestArchivedAbortedTxnsAreTheLocalLogs(t *testing.T) {
	log := txnLog(t)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	if n := uploadAll(t, a, 0, log.LogEndOffset()); n < 6 {
		t.Fatalf("uploaded %d segments", n)
	}
	m := ms.Current()
	if all := log.AbortedTxns(0, m.End()); len(all) != 4 {
		t.Fatalf("the log has %d aborted transactions: %+v", len(all), all)
	}
	r := newTestReader(t, b, 4096)
	ctx := context.Background()
	uploaded, open := 0, 0
	for _, seg := range m.Segments {
		comp, err := r.companion(ctx, testPartition, seg)
		if err != nil {
			t.Fatal(err)
		}
		uploaded += len(comp.AbortedTxns)
		// localseg's snapshots read, and some show a transaction open
		// across the segment's end.
		floor, ok := openTxnFloor(comp.ProducerSnapshot)
		if !ok {
			t.Fatalf("segment [%d, %d): the producer snapshot does not read", seg.BaseOffset, seg.NextOffset)
		}
		if floor < seg.NextOffset {
			open++
		}
		if want := log.AbortedTxns(seg.BaseOffset, seg.NextOffset); !reflect.DeepEqual(comp.AbortedTxns, markersIn(want, seg.BaseOffset, seg.NextOffset)) {
			t.Fatalf("segment [%d, %d): uploaded %+v, the log has %+v", seg.BaseOffset, seg.NextOffset, comp.AbortedTxns, want)
		}
	}
	if uploaded != 4 || open == 0 {
		t.Fatalf("%d aborted transactions uploaded, %d segments end with one open", uploaded, open)
	}
	for from := int64(0); from < m.End(); from++ {
		for to := from + 1; to <= m.End()+1; to++ {
			got, err := r.AbortedTxns(ctx, testPartition, m, from, to)
			if err != nil {
				t.Fatal(err)
			}
			want := markersIn(log.AbortedTxns(from, to), 0, m.End())
			if !slices.Equal(got, want) {
				t.Fatalf("[%d, %d): got %+v\nwant %+v", from, to, got, want)
			}
		}
	}
}

// markersIn keeps the entries whose marker lies in [from, to).
func markersIn(es []localseg.AbortedTxn, from, to int64) []localseg.AbortedTxn {
	var out []localseg.AbortedTxn
	for _, e := range es {
		if e.LastOffset >= from && e.LastOffset < to {
			out = append(out, e)
		}
	}
	return out
}

// A read_committed reader of the bucket alone reads the committed batches
// txnLog uploaded: the plain ones and producer 101's, without markers or
// the batches of the aborted transactions.
func TestReadCommittedBatchesLeaveOutTheAborted(t *testing.T) {
	log := txnLog(t)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, b, 4096)
	ctx := context.Background()
	plain, committed, raw := 0, 0, 0
	err := ReadCommittedBatches(ctx, r, testPartition, m, 0, func(b recordbatch.Batch) error {
		switch {
		case b.Control():
			t.Fatalf("a marker at %d", b.BaseOffset())
		case b.Transactional() && b.ProducerID() != 101:
			t.Fatalf("producer %d's aborted batch at %d", b.ProducerID(), b.BaseOffset())
		case b.Transactional():
			committed++
		default:
			plain++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rawPlain := 0
	if err := ReadBatches(ctx, r, testPartition, m, 0, func(b recordbatch.Batch) error {
		raw++
		if !b.Transactional() {
			rawPlain++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Every plain batch the bucket holds, producer 101's one, of the
	// bucket's batches with the aborted ones and the markers.
	if plain != rawPlain || committed != 1 || raw < plain+committed+10 {
		t.Fatalf("read %d plain and %d committed transactional batches of %d (%d plain), want every plain one and 1", plain, committed, raw, rawPlain)
	}
}
