package recordbatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// filterRecords are records of every shape compaction meets: null and
// empty keys, tombstones (null values) and empty values, headers (a null
// header value), timestamps before the base, out of order, and one without
// a timestamp (NoTimestamp, with filterBase as the base).
func filterRecords() []Record {
	recs := make([]Record, 12)
	for i := range recs {
		r := Record{
			TimestampDelta: int64((i*37)%11) - 3,
			Key:            fmt.Appendf(nil, "key-%d", i%5),
			Value:          bytes.Repeat([]byte{byte('a' + i)}, 20+i),
		}
		if i%4 == 1 {
			r.Value = nil // a tombstone
		}
		if i%3 == 0 {
			r.Headers = []Header{{Key: "h", Value: []byte("v")}, {Key: "n", Value: nil}}
		}
		recs[i] = r
	}
	recs[2].Key = nil
	recs[3].Key = []byte{}
	recs[6].Value = []byte{}
	recs[7].TimestampDelta = NoTimestamp - filterBase
	recs[10].TimestampDelta = 1 << 40 // a long varint
	return recs
}

const (
	filterBase    = 1_700_000_000_000
	filterLogTime = 1_800_000_000_000
	filterHorizon = 1_900_000_000_000
)

// filterBatch builds a transactional producer's batch of recs with every
// header field set, stored at offset 5000; with logAppendTime its
// timestamps are the broker's.
func filterBatch(t testing.TB, codec Codec, logAppendTime bool, recs []Record) Batch {
	t.Helper()
	buf, err := Build(nil, BuildOptions{
		BaseOffset: 5000, PartitionLeaderEpoch: 9, Codec: codec, Transactional: true,
		ProducerID: 77, ProducerEpoch: 4, BaseSequence: 300, BaseTimestamp: filterBase,
	}, recs)
	if err != nil {
		t.Fatal(err)
	}
	b := Batch(buf)
	if logAppendTime {
		b.SetLogAppendTime(filterLogTime)
	}
	return b
}

// keepers are the keep functions of the table tests, by the records'
// offsets (the batches start at 5000).
var keepers = []struct {
	name string
	keep func(off int64) bool
}{
	{"all", func(int64) bool { return true }},
	{"none", func(int64) bool { return false }},
	{"even", func(off int64) bool { return off%2 == 0 }},
	{"odd", func(off int64) bool { return off%2 == 1 }},
	{"first", func(off int64) bool { return off == 5000 }},
	{"last", func(off int64) bool { return off == 5011 }},
	{"all but first", func(off int64) bool { return off != 5000 }},
	{"tombstones", func(off int64) bool { return off%4 == 1 }},
	{"no tombstones", func(off int64) bool { return off%4 != 1 }},
}

// filterT filters b into a copy of prefix (with spare capacity, so that
// Filter appends in place), checks the prefix survives and that keep saw
// every record of b in order, and returns the new batch (nil when none
// was written).
func filterT(t *testing.T, b Batch, opts FilterOptions, keep func(off int64) bool) (Batch, int32) {
	t.Helper()
	prefix := []byte("prefix")
	dst := append(make([]byte, 0, 2*len(b)+len(prefix)), prefix...)
	want := recordsOf(t, b, opts.ValidateOptions)
	var seen []Record
	out, kept, err := Filter(context.Background(), dst, b, opts, func(r *Record) bool {
		c := *r
		c.Key, c.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		c.Headers = nil
		for _, h := range r.Headers {
			c.Headers = append(c.Headers, Header{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		seen = append(seen, c)
		return keep(r.Offset)
	})
	if err != nil {
		t.Fatalf("Filter: %v", err)
	}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("keep saw\n%+v\nwant\n%+v", seen, want)
	}
	if !bytes.Equal(out[:len(prefix)], prefix) {
		t.Fatalf("prefix overwritten: %q", out[:len(prefix)])
	}
	if kept == 0 {
		if len(out) != len(prefix) {
			t.Fatalf("nothing kept, yet %d bytes appended", len(out)-len(prefix))
		}
		return nil, 0
	}
	nb, rest, err := Next(out[len(prefix):])
	if err != nil || len(rest) != 0 {
		t.Fatalf("Next: %v, %d bytes after the batch", err, len(rest))
	}
	return nb, kept
}

// keptRecords is recs (as recordsOf reads them) without those keep drops.
func keptRecords(recs []Record, keep func(off int64) bool) []Record {
	var out []Record
	for _, r := range recs {
		if keep(r.Offset) {
			out = append(out, r)
		}
	}
	return out
}

// checkFiltered checks a batch Filter wrote from in: valid, in's header
// but for the record count, the max timestamp (and, stamped, the horizon),
// and exactly want as its records, read here and by franz-go.
func checkFiltered(t *testing.T, in, out Batch, want []Record, horizon int64) {
	t.Helper()
	if err := Check(out); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := WalkRecords(context.Background(), out, ValidateOptions{}, func(int64, int64) bool { return true }); err != nil {
		t.Fatalf("WalkRecords: %v", err)
	}
	if out.BaseOffset() != in.BaseOffset() || out.PartitionLeaderEpoch() != in.PartitionLeaderEpoch() ||
		out.LastOffsetDelta() != in.LastOffsetDelta() || out.ProducerID() != in.ProducerID() ||
		out.ProducerEpoch() != in.ProducerEpoch() || out.BaseSequence() != in.BaseSequence() {
		t.Fatalf("header fields lost:\n got %x\nwant %x", out[:HeaderSize], in[:HeaderSize])
	}
	wantAttrs, wantBase := in.Attributes(), in.BaseTimestamp()
	if horizon > 0 {
		wantAttrs, wantBase = wantAttrs|DeleteHorizonBit, horizon
	}
	if out.Attributes() != wantAttrs || out.BaseTimestamp() != wantBase {
		t.Fatalf("attributes %#x base timestamp %d, want %#x %d", out.Attributes(), out.BaseTimestamp(), wantAttrs, wantBase)
	}
	if h, ok := out.DeleteHorizon(); ok != (wantAttrs&DeleteHorizonBit != 0) || (ok && h != wantBase) {
		t.Fatalf("DeleteHorizon %d, %v", h, ok)
	}
	if int(out.RecordCount()) != len(want) {
		t.Fatalf("record count %d, want %d", out.RecordCount(), len(want))
	}
	wantMax := in.MaxTimestamp()
	if !in.LogAppendTime() {
		wantMax = want[0].Timestamp
		for _, r := range want {
			wantMax = max(wantMax, r.Timestamp)
		}
	}
	if out.MaxTimestamp() != wantMax {
		t.Fatalf("max timestamp %d, want %d", out.MaxTimestamp(), wantMax)
	}
	got := recordsOf(t, out, ValidateOptions{})
	if horizon > 0 && !in.LogAppendTime() {
		// The deltas are from the horizon now; the timestamps they give
		// are the same.
		want = append([]Record(nil), want...)
		for i := range want {
			want[i].TimestampDelta = want[i].Timestamp - horizon
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("records\n got %+v\nwant %+v", got, want)
	}
	checkWithFranz(t, out, want)
}

// checkWithFranz reads b with franz-go, an independent implementation: its
// CRC (computed here with the standard library), its body decompressed by
// franz-go's decompressor, and each record's offset, timestamp, key, value
// and headers.
func checkWithFranz(t *testing.T, b Batch, want []Record) {
	t.Helper()
	var kb kmsg.RecordBatch
	if err := kb.ReadFrom(b); err != nil {
		t.Fatalf("kmsg: %v", err)
	}
	if crc := crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)); uint32(kb.CRC) != crc {
		t.Fatalf("crc %08x, computed %08x", uint32(kb.CRC), crc)
	}
	if int(kb.Length) != len(b)-12 || int(kb.NumRecords) != len(want) {
		t.Fatalf("kmsg: length %d of %d bytes, %d records", kb.Length, len(b), kb.NumRecords)
	}
	raw := kb.Records
	if c := b.Codec(); c != CodecNone {
		var err error
		if raw, err = kgo.DefaultDecompressor().Decompress(kb.Records, kgo.CompressionCodecType(c)); err != nil {
			t.Fatalf("franz-go decompresses: %v", err)
		}
	}
	for i, w := range want {
		l, n := binary.Varint(raw)
		if n <= 0 || l < 0 || int(l) > len(raw)-n {
			t.Fatalf("record %d: length %d", i, l)
		}
		var kr kmsg.Record
		if err := kr.ReadFrom(raw[:n+int(l)]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		raw = raw[n+int(l):]
		ts := kb.FirstTimestamp + kr.TimestampDelta64
		if b.LogAppendTime() {
			ts = kb.MaxTimestamp
		}
		if kb.FirstOffset+int64(kr.OffsetDelta) != w.Offset || ts != w.Timestamp ||
			!bytes.Equal(kr.Key, w.Key) || (kr.Key == nil) != (w.Key == nil) ||
			!bytes.Equal(kr.Value, w.Value) || (kr.Value == nil) != (w.Value == nil) || len(kr.Headers) != len(w.Headers) {
			t.Fatalf("record %d: franz-go reads %+v, want %+v", i, kr, w)
		}
	}
	if len(raw) != 0 {
		t.Fatalf("%d bytes after the records", len(raw))
	}
}

func TestFilter(t *testing.T) {
	for _, codec := range allCodecs {
		for _, lat := range []bool{false, true} {
			in := filterBatch(t, codec, lat, filterRecords())
			recs := recordsOf(t, in, ValidateOptions{})
			for _, k := range keepers {
				t.Run(fmt.Sprintf("%s/logAppendTime=%v/%s", codec, lat, k.name), func(t *testing.T) {
					opts := FilterOptions{ValidateOptions: ValidateOptions{Budget: NewBudget(DefaultBudgetBytes)}}
					out, kept := filterT(t, in, opts, k.keep)
					want := keptRecords(recs, k.keep)
					if int(kept) != len(want) {
						t.Fatalf("kept %d, want %d", kept, len(want))
					}
					if n := opts.Budget.InUse(); n != 0 {
						t.Fatalf("%d budget bytes still taken", n)
					}
					if len(want) == 0 {
						return
					}
					if len(want) == len(recs) && !bytes.Equal(out, in) {
						t.Fatal("every record kept, yet the batch was rewritten")
					}
					checkFiltered(t, in, out, want, 0)
				})
			}
		}
	}
}

// TestFilterTwice filters a batch already compacted: the offset gaps and
// the offset range survive another filter.
func TestFilterTwice(t *testing.T) {
	for _, codec := range allCodecs {
		t.Run(codec.String(), func(t *testing.T) {
			in := filterBatch(t, codec, false, filterRecords())
			recs := recordsOf(t, in, ValidateOptions{})
			even := func(off int64) bool { return off%2 == 0 }
			once, _ := filterT(t, in, FilterOptions{}, even)
			third := func(off int64) bool { return off%3 != 0 }
			twice, kept := filterT(t, once, FilterOptions{}, third)
			want := keptRecords(keptRecords(recs, even), third)
			if int(kept) != len(want) || twice.LastOffsetDelta() != 11 {
				t.Fatalf("kept %d, last offset delta %d", kept, twice.LastOffsetDelta())
			}
			checkFiltered(t, in, twice, want, 0)
			// A compacted batch is no producer's: its offsets have gaps.
			if _, err := ValidateProduce(context.Background(), twice, ValidateOptions{}); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("ValidateProduce of a compacted batch: %v", err)
			}
		})
	}
}

func TestFilterStampsDeleteHorizon(t *testing.T) {
	for _, codec := range allCodecs {
		for _, lat := range []bool{false, true} {
			in := filterBatch(t, codec, lat, filterRecords())
			recs := recordsOf(t, in, ValidateOptions{})
			for _, k := range keepers {
				t.Run(fmt.Sprintf("%s/logAppendTime=%v/%s", codec, lat, k.name), func(t *testing.T) {
					out, kept := filterT(t, in, FilterOptions{Horizon: filterHorizon}, k.keep)
					want := keptRecords(recs, k.keep)
					if int(kept) != len(want) {
						t.Fatalf("kept %d, want %d", kept, len(want))
					}
					if len(want) == 0 {
						return
					}
					tombstone := false
					for _, r := range want {
						tombstone = tombstone || r.Value == nil
					}
					if !tombstone {
						// Nothing to stamp: as without a horizon.
						if len(want) == len(recs) && !bytes.Equal(out, in) {
							t.Fatal("every record kept and nothing stamped, yet the batch was rewritten")
						}
						checkFiltered(t, in, out, want, 0)
						return
					}
					checkFiltered(t, in, out, want, filterHorizon)

					// Stamped once: another horizon leaves it as it is.
					again, n := filterT(t, out, FilterOptions{Horizon: filterHorizon + 1000}, func(int64) bool { return true })
					if n != kept || !bytes.Equal(again, out) {
						t.Fatal("a stamped batch kept whole was rewritten")
					}
					first := want[0].Offset
					again, _ = filterT(t, out, FilterOptions{Horizon: filterHorizon + 1000}, func(off int64) bool { return off != first })
					if again != nil {
						checkFiltered(t, out, again, want[1:], filterHorizon)
					}
				})
			}
		}
	}
}

// TestFilterStampsNoControlBatch: transaction markers get their delete
// horizon elsewhere (the cleaner's marker pass), never from a tombstone.
func TestFilterStampsNoControlBatch(t *testing.T) {
	for _, codec := range allCodecs {
		buf, err := Build(nil, BuildOptions{
			BaseOffset: 10, Codec: codec, Transactional: true, Control: true,
			ProducerID: 5, ProducerEpoch: 1, BaseSequence: -1, BaseTimestamp: filterBase,
		}, []Record{{Key: []byte{0, 0, 0, 1}, Value: nil}, {Key: []byte{0, 0, 0, 0}, Value: []byte{0, 0, 0, 0, 0, 1}}})
		if err != nil {
			t.Fatal(err)
		}
		in := Batch(buf)
		out, kept := filterT(t, in, FilterOptions{Horizon: filterHorizon}, func(int64) bool { return true })
		if kept != 2 || !bytes.Equal(out, in) {
			t.Fatalf("%s: control batch rewritten (%d kept)", codec, kept)
		}
		out, kept = filterT(t, in, FilterOptions{Horizon: filterHorizon}, func(off int64) bool { return off == 10 })
		if kept != 1 {
			t.Fatalf("%s: kept %d", codec, kept)
		}
		checkFiltered(t, in, out, recordsOf(t, in, ValidateOptions{})[:1], 0)
	}
}

// TestFilterStampsBatchWithoutHorizonBitOnly: a horizon of 0 stamps
// nothing, a batch already stamped keeps its horizon whatever is kept.
func TestFilterStampsBatchWithoutHorizonBitOnly(t *testing.T) {
	in := filterBatch(t, CodecLZ4, false, filterRecords())
	all := func(int64) bool { return true }
	out, _ := filterT(t, in, FilterOptions{Horizon: 0}, all)
	if !bytes.Equal(out, in) {
		t.Fatal("no horizon, yet the batch was rewritten")
	}
	if _, ok := in.DeleteHorizon(); ok {
		t.Fatal("a batch without the bit has a delete horizon")
	}
	stamped, _ := filterT(t, in, FilterOptions{Horizon: filterHorizon}, all)
	if h, ok := stamped.DeleteHorizon(); !ok || h != filterHorizon {
		t.Fatalf("DeleteHorizon %d, %v", h, ok)
	}
	out, _ = filterT(t, stamped, FilterOptions{Horizon: filterHorizon + 1}, func(off int64) bool { return off%2 == 1 })
	if h, ok := out.DeleteHorizon(); !ok || h != filterHorizon {
		t.Fatalf("restamped: DeleteHorizon %d, %v", h, ok)
	}
}

// TestFilterIgnoresRequireKeys: records without a key reach keep, which
// decides their fate.
func TestFilterIgnoresRequireKeys(t *testing.T) {
	in := filterBatch(t, CodecZstd, false, filterRecords())
	nullKeys := 0
	_, kept, err := Filter(context.Background(), nil, in, FilterOptions{ValidateOptions: ValidateOptions{RequireKeys: true}}, func(r *Record) bool {
		if r.Key == nil {
			nullKeys++
			return false
		}
		return true
	})
	if err != nil || nullKeys != 1 || kept != 11 {
		t.Fatalf("Filter: %v, %d null keys, %d kept", err, nullKeys, kept)
	}
}

// TestFilterRecordChangesIgnored: what keep does to its record changes
// nothing written.
func TestFilterRecordChangesIgnored(t *testing.T) {
	for _, codec := range allCodecs {
		in := filterBatch(t, codec, false, filterRecords())
		out, _, err := Filter(context.Background(), nil, in, FilterOptions{Horizon: filterHorizon}, func(r *Record) bool {
			keep := r.Offset%2 == 0
			r.Key, r.Value, r.Timestamp, r.TimestampDelta, r.OffsetDelta = []byte("x"), []byte("y"), 1, 1, 1
			return keep
		})
		if err != nil {
			t.Fatal(err)
		}
		checkFiltered(t, in, Batch(out), keptRecords(recordsOf(t, in, ValidateOptions{}), func(off int64) bool { return off%2 == 0 }), 0)
	}
}

func TestFilterRefusesBrokenBatches(t *testing.T) {
	ctx := context.Background()
	garbage := bytes.Repeat([]byte{0xff, 0x13, 0x37, 0x00}, 64)
	cases := []struct {
		name string
		b    Batch
		want error
	}{
		{"bad crc", func() Batch {
			b := filterBatch(t, CodecNone, false, filterRecords())
			b[len(b)-1] ^= 1
			return b
		}(), ErrCorrupt},
		{"short", filterBatch(t, CodecNone, false, filterRecords())[:HeaderSize-1], ErrCorrupt},
		{"record garbage", wrapBody(CodecNone, 3, garbage), ErrInvalidRecord},
		{"count beyond the records", wrapBody(CodecNone, 3, AppendRecord(nil, Record{Value: []byte("one")})), ErrInvalidRecord},
		{"bytes after the records", wrapBody(CodecNone, 1, AppendRecord(AppendRecord(nil, Record{}), Record{OffsetDelta: 1})), ErrInvalidRecord},
		{"offset deltas out of order", wrapBody(CodecNone, 2, AppendRecord(AppendRecord(nil, Record{OffsetDelta: 1}), Record{OffsetDelta: 0})), ErrInvalidRecord},
		{"offset delta past the batch", wrapBody(CodecNone, 1, AppendRecord(nil, Record{OffsetDelta: 5})), ErrInvalidRecord},
	}
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		cases = append(cases, struct {
			name string
			b    Batch
			want error
		}{codec.String() + " garbage", wrapBody(codec, 3, garbage), ErrCorrupt})
		c, _ := Compress(codec, garbage)
		cases = append(cases, struct {
			name string
			b    Batch
			want error
		}{codec.String() + " compressed garbage", wrapBody(codec, 3, c), ErrInvalidRecord})
	}
	for _, c := range cases {
		budget := NewBudget(DefaultBudgetBytes)
		dst := []byte("dst")
		calls := 0
		out, kept, err := Filter(ctx, dst, c.b, FilterOptions{ValidateOptions: ValidateOptions{Budget: budget}, Horizon: filterHorizon}, func(*Record) bool { calls++; return calls%2 == 0 })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if kept != 0 || string(out) != "dst" || len(out) != 3 {
			t.Errorf("%s: out %q, kept %d", c.name, out, kept)
		}
		if n := budget.InUse(); n != 0 {
			t.Errorf("%s: %d budget bytes still taken", c.name, n)
		}
	}
}

func TestFilterDecompressionIsCapped(t *testing.T) {
	recs := []Record{{Key: []byte("k"), Value: make([]byte, 1<<20)}, {Key: []byte("k")}}
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		b := filterBatch(t, codec, false, recs)
		_, _, err := Filter(context.Background(), nil, b, FilterOptions{ValidateOptions: ValidateOptions{MaxDecompressed: 64 << 10}}, func(*Record) bool { return false })
		if !errors.Is(err, ErrDecompressTooLarge) {
			t.Errorf("%s: got %v", codec, err)
		}
		_, _, err = Filter(context.Background(), nil, b, FilterOptions{ValidateOptions: ValidateOptions{Budget: NewBudget(1 << 20)}}, func(*Record) bool { return false })
		if !errors.Is(err, ErrDecompressTooLarge) {
			t.Errorf("%s with a budget too small: got %v", codec, err)
		}
	}
}

// TestFilterChargesTheBudgetWhileItRuns: a compressed batch's records are
// charged while keep sees them, and given back once Filter returns.
func TestFilterChargesTheBudgetWhileItRuns(t *testing.T) {
	budget := NewBudget(DefaultBudgetBytes)
	b := filterBatch(t, CodecGzip, false, filterRecords())
	var during int64
	_, _, err := Filter(context.Background(), nil, b, FilterOptions{ValidateOptions: ValidateOptions{Budget: budget}}, func(*Record) bool {
		during = budget.InUse()
		return true
	})
	if err != nil || during < MinMaxDecompressed || budget.InUse() != 0 {
		t.Fatalf("Filter: %v, %d bytes charged during, %d after", err, during, budget.InUse())
	}
}

// TestFilterLargeRecords keeps and drops records larger than the walk's
// window and with varints of every size.
func TestFilterLargeRecords(t *testing.T) {
	recs := []Record{
		{Key: []byte("a"), Value: bytes.Repeat([]byte("large "), 2*walkWindow/6)},
		{Key: bytes.Repeat([]byte("k"), 10000), Value: nil, TimestampDelta: -1 << 40},
		{Key: []byte("c"), Value: []byte("small")},
		{Key: nil, Value: bytes.Repeat([]byte("z"), 9000), Headers: []Header{{Key: "big", Value: bytes.Repeat([]byte("h"), 9000)}}},
	}
	for _, codec := range allCodecs {
		in := filterBatch(t, codec, false, recs)
		all := recordsOf(t, in, ValidateOptions{})
		for _, k := range keepers[2:4] {
			out, _ := filterT(t, in, FilterOptions{Horizon: filterHorizon}, k.keep)
			want := keptRecords(all, k.keep)
			horizon := int64(0)
			if k.name == "odd" {
				horizon = filterHorizon // record 5001 is a tombstone
			}
			checkFiltered(t, in, out, want, horizon)
		}
	}
}

func TestEmptyBatch(t *testing.T) {
	for _, codec := range allCodecs {
		for _, lat := range []bool{false, true} {
			in := filterBatch(t, codec, lat, filterRecords())
			stamped, _ := filterT(t, in, FilterOptions{Horizon: filterHorizon}, func(int64) bool { return true })
			for _, b := range []Batch{in, stamped} {
				prefix := []byte("prefix")
				out := EmptyBatch(append([]byte(nil), prefix...), b)
				if !bytes.Equal(out[:len(prefix)], prefix) {
					t.Fatal("prefix lost")
				}
				e := Batch(out[len(prefix):])
				if err := Check(e); err != nil {
					t.Fatalf("%s: Check: %v", codec, err)
				}
				if len(e) != HeaderSize || e.RecordCount() != 0 || e.Codec() != CodecNone {
					t.Fatalf("%s: %d bytes, %d records, codec %s", codec, len(e), e.RecordCount(), e.Codec())
				}
				want := bytes.Clone(b[:HeaderSize])
				want[offAttributes+1] &^= CodecMask
				binary.BigEndian.PutUint32(want[offBatchLength:], HeaderSize-LengthOffset)
				binary.BigEndian.PutUint32(want[offRecordCount:], 0)
				copy(want[offCRC:], e[offCRC:offCRC+4])
				if !bytes.Equal(e, want) {
					t.Fatalf("%s: header\n got %x\nwant %x", codec, e, want)
				}
				if e.LastSequence() != b.LastSequence() || e.NextOffset() != b.NextOffset() {
					t.Fatalf("%s: last sequence %d, next offset %d", codec, e.LastSequence(), e.NextOffset())
				}
				if h, ok := e.DeleteHorizon(); ok != (b.Attributes()&DeleteHorizonBit != 0) || (ok && h != filterHorizon) {
					t.Fatalf("%s: DeleteHorizon %d, %v", codec, h, ok)
				}
				if got := recordsOf(t, e, ValidateOptions{}); len(got) != 0 {
					t.Fatalf("%s: records %+v", codec, got)
				}
				if err := WalkRecords(context.Background(), e, ValidateOptions{}, func(int64, int64) bool { return true }); err != nil {
					t.Fatalf("%s: WalkRecords: %v", codec, err)
				}
				checkWithFranz(t, e, nil)
				// An empty batch filters to nothing.
				if again, kept := filterT(t, e, FilterOptions{Horizon: filterHorizon}, func(int64) bool { return true }); again != nil || kept != 0 {
					t.Fatalf("%s: an empty batch filtered to %d records", codec, kept)
				}
			}
		}
	}
	if out := EmptyBatch([]byte("x"), make(Batch, HeaderSize-1)); string(out) != "x" {
		t.Fatalf("a short batch: %q", out)
	}
}
