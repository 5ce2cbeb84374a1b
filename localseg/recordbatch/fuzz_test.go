package recordbatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/snappy"
)

func snappyEncode(b []byte) []byte { return snappy.Encode(nil, b) }

var allCodecs = []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

func seedBatches(f *testing.F) {
	for _, codec := range allCodecs {
		b, err := Build(nil, BuildOptions{Codec: codec, ProducerID: 3, BaseSequence: 0}, testRecords(3))
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(b))
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
}

// fuzzMax is the decompression cap of the fuzz targets: small, so that
// the fuzzer can reach it.
const fuzzMax = 1 << 16

// FuzzValidate feeds arbitrary bytes to the produce-path validator and the
// record walkers: they must return an error or accept, never panic, and
// accepted batches must walk cleanly.
func FuzzValidate(f *testing.F) {
	seedBatches(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		for buf := data; ; {
			b, rest, err := Next(buf)
			if err != nil || b == nil {
				break
			}
			buf = rest
			if _, err := ValidateProduce(ctx, b, ValidateOptions{MaxDecompressed: fuzzMax}); err == nil {
				if err := Records(ctx, b, ValidateOptions{MaxDecompressed: fuzzMax}, func(Record) error { return nil }); err != nil {
					t.Fatalf("validated batch fails to walk: %v", err)
				}
			}
		}
	})
}

// FuzzValidateMatchesReference holds the streaming, allocation-free walk to
// the implementation it replaced (reference_test.go), which decompressed
// batches whole and built every record: on every input both accept or both
// refuse, and what they accept they read alike.
func FuzzValidateMatchesReference(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for buf := data; ; {
			b, rest, err := Next(buf)
			if err != nil || b == nil {
				break
			}
			buf = rest
			compareWithReference(t, b)
		}
	})
}

// FuzzCompressedBodyMatchesReference wraps arbitrary bytes in a valid
// header (codec, record count, CRC) so that the fuzzer works on the body:
// compressed streams and the records inside them.
func FuzzCompressedBodyMatchesReference(f *testing.F) {
	for _, codec := range allCodecs {
		body := AppendRecord(nil, Record{Key: []byte("k"), Value: []byte("value")})
		body = AppendRecord(body, Record{OffsetDelta: 1, TimestampDelta: 5, Value: bytes.Repeat([]byte("v"), 300), Headers: []Header{{Key: "h", Value: nil}}})
		c, err := Compress(codec, body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(codec), byte(2), c)
		if codec == CodecSnappy {
			// The Java client's xerial framing, a record across blocks.
			framed := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
			for _, part := range [][]byte{body[:len(body)/2], body[len(body)/2:]} {
				block := snappyEncode(part)
				framed = binary.BigEndian.AppendUint32(framed, uint32(len(block)))
				framed = append(framed, block...)
			}
			f.Add(byte(codec), byte(2), framed)
		}
	}
	f.Fuzz(func(t *testing.T, codec, count byte, body []byte) {
		c := Codec(codec % 5)
		b := wrapBody(c, int32(count%8), body)
		compareWithReference(t, b)

		// Decompress against the reference: the same bytes, or both fail.
		if c != CodecNone {
			got, err := Decompress(c, body, fuzzMax)
			want, rerr := referenceDecompress(c, body, fuzzMax)
			if (err == nil) != (rerr == nil) || (err == nil && !bytes.Equal(got, want)) {
				t.Fatalf("%s: Decompress %d bytes, %v; reference %d bytes, %v", c, len(got), err, len(want), rerr)
			}
		}
	})
}

// wrapBody builds a batch of count records (dense offsets) around body.
func wrapBody(codec Codec, count int32, body []byte) Batch {
	b := make(Batch, HeaderSize, HeaderSize+len(body))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[offBatchLength:], uint32(len(b)-LengthOffset))
	b[offMagic] = 2
	binary.BigEndian.PutUint16(b[offAttributes:], uint16(codec))
	binary.BigEndian.PutUint32(b[offLastOffsetDelta:], uint32(count-1))
	binary.BigEndian.PutUint64(b[offBaseTimestamp:], 1000)
	binary.BigEndian.PutUint64(b[offProducerID:], ^uint64(0))
	binary.BigEndian.PutUint32(b[offRecordCount:], uint32(count))
	b.updateCRC()
	return b
}

// compareWithReference checks that ValidateProduce, WalkRecords and
// WalkUncompressedRecords agree with the reference on b.
func compareWithReference(t *testing.T, b Batch) {
	t.Helper()
	ctx := context.Background()
	opts := ValidateOptions{MaxDecompressed: fuzzMax, Budget: NewBudget(DefaultBudgetBytes)}
	sum, err := ValidateProduce(ctx, b, opts)
	rerr := referenceValidateProduce(b, fuzzMax)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("ValidateProduce: %v; reference: %v", err, rerr)
	}
	if err == nil {
		var want Summary
		want.MinTimestamp, want.MaxTimestamp = -1, -1
		_ = referenceWalkRecords(b, fuzzMax, false, func(r Record) error {
			ts := b.BaseTimestamp() + r.TimestampDelta
			if ts != NoTimestamp && (want.MinTimestamp == NoTimestamp || ts < want.MinTimestamp) {
				want.MinTimestamp = ts
			}
			if want.Records == 0 || ts > want.MaxTimestamp {
				want.MaxTimestamp, want.MaxTimestampOffsetDelta = ts, r.OffsetDelta
			}
			want.Records++
			return nil
		})
		if sum != want {
			t.Fatalf("summary %+v, reference %+v", sum, want)
		}
	}

	// The readers of stored batches: gaps in offsets allowed.
	var got, want []int64
	werr := WalkRecords(ctx, b, opts, func(off, ts int64) bool { got = append(got, off, ts); return true })
	rerr = Check(b)
	if rerr == nil {
		rerr = referenceWalkRecords(b, fuzzMax, false, func(r Record) error { want = append(want, r.Offset, r.Timestamp); return nil })
	}
	if (werr == nil) != (rerr == nil) || (werr == nil && !equalInts(got, want)) {
		t.Fatalf("WalkRecords: %v %v; reference: %v %v", werr, got, rerr, want)
	}
	if b.Codec() == CodecNone && Check(b) == nil {
		got = got[:0]
		serr := WalkUncompressedRecords(b[:HeaderSize], bytes.NewReader(b[HeaderSize:]), func(off, ts int64) bool { got = append(got, off, ts); return true })
		if (serr == nil) != (rerr == nil) || (serr == nil && !equalInts(got, want)) {
			t.Fatalf("WalkUncompressedRecords: %v %v; reference: %v %v", serr, got, rerr, want)
		}
	}
	if n := opts.Budget.InUse(); n != 0 {
		t.Fatalf("%d budget bytes still taken after the walks", n)
	}
	if errors.Is(err, errStopped) || errors.Is(werr, errStopped) {
		t.Fatal("a walk leaked its stop signal")
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzDecompress checks every codec against hostile input under a cap.
func FuzzDecompress(f *testing.F) {
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		c, _ := Compress(codec, make([]byte, 5000))
		f.Add(byte(codec), c)
	}
	f.Fuzz(func(t *testing.T, codec byte, data []byte) {
		out, err := Decompress(Codec(codec%5), data, 1<<16)
		if err == nil && len(out) > 1<<16 && codec%5 != 0 {
			t.Fatalf("decompressed %d bytes past the cap", len(out))
		}
	})
}

// FuzzRecompress recompresses arbitrary bytes into every codec: never a
// panic, nothing left charged after an error, and a batch ValidateProduce
// accepts recompresses into one it accepts too, holding the same records.
// (An uncompressed batch whose records exceed the limit is the exception:
// Recompress refuses it, as a reader under that limit could not read its
// compressed copy.) Each input is taken as a batch and, so that the fuzzer
// reaches the decoders past the CRC, as a codec byte, a record count byte
// and a body wrapped in a valid header.
func FuzzRecompress(f *testing.F) {
	seedBatches(f)
	for _, codec := range allCodecs {
		body := AppendRecord(nil, Record{Key: []byte("k"), Value: []byte("value"), Headers: []Header{{Key: "h", Value: nil}}})
		body = AppendRecord(body, Record{OffsetDelta: 1, TimestampDelta: -3, Value: bytes.Repeat([]byte("v"), 3000)})
		c, err := Compress(codec, body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(codec), 2}, c...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recompressAll(t, Batch(data))
		if len(data) >= 2 {
			recompressAll(t, wrapBody(Codec(data[0]%5), int32(data[1]%8), data[2:]))
		}
	})
}

// recompressAll checks Recompress of b into every codec against
// ValidateProduce's verdict on b.
func recompressAll(t *testing.T, b Batch) {
	t.Helper()
	ctx := context.Background()
	opts := ValidateOptions{MaxDecompressed: fuzzMax, Budget: NewBudget(DefaultBudgetBytes)}
	_, verr := ValidateProduce(ctx, b, opts)
	fits := Check(b) == nil && (b.Codec() != CodecNone || len(b)-HeaderSize <= fuzzMax)
	for _, to := range allCodecs {
		out, charged, err := Recompress(ctx, b, to, 0, opts)
		if n := opts.Budget.InUse(); n != charged {
			t.Fatalf("to %s: %d bytes in use, %d charged (%v)", to, n, charged, err)
		}
		if err != nil {
			if verr == nil && fits {
				t.Fatalf("to %s: a valid batch refused: %v", to, err)
			}
			continue
		}
		if err := Check(out); err != nil {
			t.Fatalf("to %s: output fails Check: %v", to, err)
		}
		if verr == nil {
			checkRecompressed(t, b, out, to, opts)
		}
		opts.Budget.Release(charged)
	}
}
