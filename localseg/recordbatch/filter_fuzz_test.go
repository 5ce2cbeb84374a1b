package recordbatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
)

// seedFilterBatches adds batches Filter rewrites in every way: each codec,
// both timestamp types, tombstones to stamp, a batch already stamped, a
// control batch, a compacted one and an empty one; each with a horizon.
func seedFilterBatches(f *testing.F) {
	for _, codec := range allCodecs { // seedBatches's
		b, err := Build(nil, BuildOptions{Codec: codec, ProducerID: 3, BaseSequence: 0}, testRecords(3))
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(b), int64(1))
	}
	f.Add([]byte{}, int64(0))
	f.Add(make([]byte, HeaderSize), int64(0))
	recs := []Record{
		{Key: []byte("a"), Value: []byte("one"), Headers: []Header{{Key: "h", Value: nil}}},
		{Key: []byte("b"), Value: nil, TimestampDelta: -7},
		{Key: nil, Value: []byte("three"), TimestampDelta: 1 << 40},
		{Key: []byte{}, Value: nil, TimestampDelta: NoTimestamp - 1000},
	}
	for _, codec := range allCodecs {
		for _, lat := range []bool{false, true} {
			buf, err := Build(nil, BuildOptions{BaseOffset: 40, Codec: codec, ProducerID: 3, BaseSequence: 9, BaseTimestamp: 1000}, recs)
			if err != nil {
				f.Fatal(err)
			}
			b := Batch(buf)
			if lat {
				b.SetLogAppendTime(5000)
			}
			f.Add([]byte(b), int64(0))
			f.Add([]byte(b), int64(9000))
			stamped, _, err := Filter(context.Background(), nil, b, FilterOptions{Horizon: 9000}, func(*Record) bool { return true })
			if err != nil {
				f.Fatal(err)
			}
			f.Add(stamped, int64(10000))
			compacted, _, err := Filter(context.Background(), nil, b, FilterOptions{}, func(r *Record) bool { return r.Offset != 41 })
			if err != nil {
				f.Fatal(err)
			}
			f.Add(compacted, int64(9000))
			f.Add(EmptyBatch(nil, b), int64(9000))
		}
		buf, err := Build(nil, BuildOptions{Codec: codec, Transactional: true, Control: true, ProducerID: 3, BaseTimestamp: 1000}, recs[:2])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf, int64(9000))
	}
}

// FuzzFilter feeds arbitrary bytes to Filter as a stored batch (skipped
// when Check refuses it), keeping every other record: never a panic,
// nothing left charged, and what it writes is a valid batch holding the
// records kept, read alike (offsets, timestamps, keys, values, headers),
// with the input's offset range. Filter must accept what Records accepts,
// and refuse what it refuses. So that the fuzzer reaches the records past
// the CRC, each input is also taken with its length, magic and CRC sealed.
func FuzzFilter(f *testing.F) {
	seedFilterBatches(f)
	f.Fuzz(func(t *testing.T, data []byte, horizon int64) {
		filterEveryOther(t, Batch(data), horizon)
		if len(data) >= HeaderSize {
			b := Batch(bytes.Clone(data))
			binary.BigEndian.PutUint32(b[offBatchLength:], uint32(len(b)-LengthOffset))
			b[offMagic] = 2
			b.updateCRC()
			filterEveryOther(t, b, horizon)
		}
	})
}

// filterEveryOther is FuzzFilter's check of one batch.
func filterEveryOther(t *testing.T, b Batch, horizon int64) {
	t.Helper()
	ctx := context.Background()
	if Check(b) != nil {
		return
	}
	budget := NewBudget(DefaultBudgetBytes)
	opts := FilterOptions{ValidateOptions: ValidateOptions{MaxDecompressed: fuzzMax, Budget: budget}, Horizon: horizon}
	var keptRecs []Record // every other record, from the first
	n := 0
	rerr := Records(ctx, b, opts.ValidateOptions, func(r Record) error {
		if n++; n%2 == 1 {
			r.Key, r.Value, r.Headers = bytes.Clone(r.Key), bytes.Clone(r.Value), cloneHeaders(r.Headers)
			keptRecs = append(keptRecs, r)
		}
		return nil
	})
	i := 0
	tombstone := false
	prefix := []byte("prefix")
	out, kept, err := Filter(ctx, append([]byte(nil), prefix...), b, opts, func(r *Record) bool {
		i++
		if i%2 == 0 {
			return false
		}
		tombstone = tombstone || r.Value == nil
		return true
	})
	if n := budget.InUse(); n != 0 {
		t.Fatalf("%d budget bytes still taken (%v)", n, err)
	}
	if (err == nil) != (rerr == nil) {
		t.Fatalf("Filter: %v; Records: %v", err, rerr)
	}
	if !bytes.Equal(out[:len(prefix)], prefix) {
		t.Fatal("prefix overwritten")
	}
	if err != nil {
		if len(out) != len(prefix) || kept != 0 {
			t.Fatalf("error %v, yet %d bytes written, %d kept", err, len(out)-len(prefix), kept)
		}
		if !errors.Is(err, ErrInvalidRecord) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrDecompressTooLarge) {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if int(kept) != len(keptRecs) {
		t.Fatalf("kept %d, want %d", kept, len(keptRecs))
	}
	if kept == 0 {
		if len(out) != len(prefix) {
			t.Fatalf("nothing kept, yet %d bytes written", len(out)-len(prefix))
		}
		return
	}
	nb := Batch(out[len(prefix):])
	if err := Check(nb); err != nil {
		t.Fatalf("output fails Check: %v", err)
	}
	stamp := horizon > 0 && tombstone && !b.Control() && b.Attributes()&DeleteHorizonBit == 0
	if kept == b.RecordCount() && !stamp && !bytes.Equal(nb, b) {
		t.Fatal("every record kept, nothing stamped, yet the batch was rewritten")
	}
	if nb.BaseOffset() != b.BaseOffset() || nb.LastOffsetDelta() != b.LastOffsetDelta() ||
		nb.ProducerID() != b.ProducerID() || nb.BaseSequence() != b.BaseSequence() || nb.Codec() != b.Codec() {
		t.Fatalf("header lost:\n got %x\nwant %x", nb[:HeaderSize], b[:HeaderSize])
	}
	if h, ok := nb.DeleteHorizon(); stamp && (!ok || h != horizon) {
		t.Fatalf("not stamped: %d, %v", h, ok)
	}
	j := 0
	// Stamping may lengthen each timestamp delta's varint.
	err = Records(ctx, nb, ValidateOptions{MaxDecompressed: 4 * fuzzMax}, func(r Record) error {
		if j >= len(keptRecs) {
			t.Fatalf("record %d past the %d kept", j, len(keptRecs))
		}
		w := keptRecs[j]
		if r.Offset != w.Offset || r.Timestamp != w.Timestamp || r.Attributes != w.Attributes ||
			!bytes.Equal(r.Key, w.Key) || (r.Key == nil) != (w.Key == nil) ||
			!bytes.Equal(r.Value, w.Value) || (r.Value == nil) != (w.Value == nil) || len(r.Headers) != len(w.Headers) {
			t.Fatalf("record %d: %+v, want %+v", j, r, w)
		}
		for k, h := range r.Headers {
			if h.Key != w.Headers[k].Key || !bytes.Equal(h.Value, w.Headers[k].Value) || (h.Value == nil) != (w.Headers[k].Value == nil) {
				t.Fatalf("record %d header %d: %+v, want %+v", j, k, h, w.Headers[k])
			}
		}
		j++
		return nil
	})
	if err != nil || j != len(keptRecs) {
		t.Fatalf("Records on the output: %v after %d of %d", err, j, len(keptRecs))
	}
}

func cloneHeaders(hs []Header) []Header {
	var out []Header
	for _, h := range hs {
		out = append(out, Header{Key: h.Key, Value: bytes.Clone(h.Value)})
	}
	return out
}

// FuzzRequireKeys holds ValidateProduce with RequireKeys to the reference
// walk: it refuses with ErrNoKey exactly the batches the reference accepts
// and that hold a record with a null key, and refuses what the reference
// refuses. Each input is taken as a batch and, so that the fuzzer reaches
// the records past the CRC and through every codec, as a codec byte, a
// record count byte and a body wrapped in a valid header.
func FuzzRequireKeys(f *testing.F) {
	seedBatches(f)
	for _, codec := range allCodecs {
		body := AppendRecord(nil, Record{Key: []byte("k"), Value: []byte("value")})
		body = AppendRecord(body, Record{OffsetDelta: 1, Key: []byte{}, Value: bytes.Repeat([]byte("v"), 300)})
		body = AppendRecord(body, Record{OffsetDelta: 2, Key: nil, TimestampDelta: 1 << 40})
		c, err := Compress(codec, body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(codec), 3}, c...))
		f.Add(append([]byte{byte(codec), 2}, c...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		requireKeysMatchesReference(t, Batch(data))
		if len(data) >= 2 {
			requireKeysMatchesReference(t, wrapBody(Codec(data[0]%5), int32(data[1]%8), data[2:]))
		}
	})
}

func requireKeysMatchesReference(t *testing.T, b Batch) {
	t.Helper()
	_, err := ValidateProduce(context.Background(), b, ValidateOptions{MaxDecompressed: fuzzMax, RequireKeys: true})
	rerr := referenceValidateProduce(b, fuzzMax)
	if rerr != nil {
		if err == nil {
			t.Fatalf("accepted what the reference refuses: %v", rerr)
		}
		return
	}
	nullKey := false
	_ = referenceWalkRecords(b, fuzzMax, true, func(r Record) error {
		nullKey = nullKey || r.Key == nil
		return nil
	})
	if nullKey != errors.Is(err, ErrNoKey) || (!nullKey && err != nil) {
		t.Fatalf("null key %v: %v", nullKey, err)
	}
}
