package recordbatch

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func testRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{
			TimestampDelta: int64(i * 3),
			Key:            []byte{byte('a' + i%26)},
			Value:          bytes.Repeat([]byte{byte(i)}, 10+i),
			Headers:        []Header{{Key: "h", Value: []byte("v")}},
		}
	}
	recs[0].Key = nil // a null key
	return recs
}

func buildT(t *testing.T, opts BuildOptions, recs []Record) Batch {
	t.Helper()
	buf, err := Build(nil, opts, recs)
	if err != nil {
		t.Fatal(err)
	}
	b, rest, err := Next(buf)
	if err != nil || len(rest) != 0 {
		t.Fatalf("Next: %v, %d bytes left", err, len(rest))
	}
	return b
}

func TestBuildValidateRoundTripEveryCodec(t *testing.T) {
	for _, codec := range []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			recs := testRecords(20)
			b := buildT(t, BuildOptions{BaseOffset: 100, Codec: codec, ProducerID: 7, ProducerEpoch: 1, BaseSequence: 5, BaseTimestamp: 1000}, recs)
			if _, err := ValidateProduce(context.Background(), b, ValidateOptions{MaxDecompressed: 1 << 20}); err != nil {
				t.Fatal(err)
			}
			if b.Codec() != codec || b.RecordCount() != 20 || b.LastOffset() != 119 || b.MaxTimestamp() != 1000+19*3 {
				t.Fatalf("header: codec %v count %d last %d maxTs %d", b.Codec(), b.RecordCount(), b.LastOffset(), b.MaxTimestamp())
			}
			if b.LastSequence() != 24 {
				t.Fatalf("last sequence %d", b.LastSequence())
			}
			i := 0
			err := Records(context.Background(), b, ValidateOptions{MaxDecompressed: 1 << 20}, func(r Record) error {
				if r.Offset != 100+int64(i) || r.Timestamp != 1000+int64(i*3) || !bytes.Equal(r.Value, recs[i].Value) || !bytes.Equal(r.Key, recs[i].Key) || (r.Key == nil) != (recs[i].Key == nil) {
					t.Fatalf("record %d: %+v", i, r)
				}
				if len(r.Headers) != 1 || r.Headers[0].Key != "h" || string(r.Headers[0].Value) != "v" {
					t.Fatalf("record %d headers: %+v", i, r.Headers)
				}
				i++
				return nil
			})
			if err != nil || i != 20 {
				t.Fatalf("Records: %v after %d", err, i)
			}

			// franz-go, an independent implementation, reads the same bytes.
			var kb kmsg.RecordBatch
			if err := kb.ReadFrom(b); err != nil {
				t.Fatal(err)
			}
			raw, err := kgo.DefaultDecompressor().Decompress(kb.Records, kgo.CompressionCodecType(codec))
			if err != nil {
				t.Fatal(err)
			}
			if codec == CodecNone {
				raw = kb.Records
			}
			var kr kmsg.Record
			if err := kr.ReadFrom(raw[:1+int(raw[0])/2]); err != nil { // first record: 1-byte varint length
				t.Fatalf("kmsg record: %v", err)
			}
			if kr.Key != nil || !bytes.Equal(kr.Value, recs[0].Value) {
				t.Fatalf("kmsg record: %+v", kr)
			}
		})
	}
}

func TestPatchesOutsideCRCKeepItValid(t *testing.T) {
	b := buildT(t, BuildOptions{ProducerID: NoProducerID, ProducerEpoch: -1, BaseSequence: -1}, testRecords(3))
	b.SetBaseOffset(1 << 40)
	b.SetPartitionLeaderEpoch(9)
	if err := Check(b); err != nil {
		t.Fatal(err)
	}
	if b.BaseOffset() != 1<<40 || b.PartitionLeaderEpoch() != 9 {
		t.Fatal("patch lost")
	}
	b.SetLogAppendTime(5555)
	if err := Check(b); err != nil {
		t.Fatalf("after log append time: %v", err)
	}
	_ = Records(context.Background(), b, ValidateOptions{MaxDecompressed: 1 << 20}, func(r Record) error {
		if r.Timestamp != 5555 {
			t.Fatalf("timestamp %d", r.Timestamp)
		}
		return nil
	})
}

func TestValidateRefusesBrokenBatches(t *testing.T) {
	good := buildT(t, BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, testRecords(4))
	mutate := func(f func(Batch)) Batch {
		b := Batch(bytes.Clone(good))
		f(b)
		return b
	}
	cases := []struct {
		name string
		b    Batch
		want error
	}{
		{"flipped payload bit", mutate(func(b Batch) { b[len(b)-1] ^= 1 }), ErrCorrupt},
		{"wrong magic", mutate(func(b Batch) { b[offMagic] = 1 }), ErrCorrupt},
		{"short", good[:HeaderSize-1], ErrCorrupt},
		{"length too long", mutate(func(b Batch) { b[offBatchLength+3]++ }), ErrCorrupt},
		{"count mismatch", mutate(func(b Batch) { b[offRecordCount+3] = 9; b.updateCRC() }), ErrInvalidRecord},
		{"delta mismatch", mutate(func(b Batch) { b[offLastOffsetDelta+3] = 2; b.updateCRC() }), ErrInvalidRecord},
		{"empty", mutate(func(b Batch) { b[offRecordCount+3] = 0; b.updateCRC() }), ErrInvalidRecord},
		{"unknown codec", mutate(func(b Batch) { b[offAttributes+1] |= 7; b.updateCRC() }), ErrCorrupt},
		{"control without txn", mutate(func(b Batch) { b[offAttributes+1] |= ControlBit; b.updateCRC() }), ErrInvalidRecord},
		{"record garbage", mutate(func(b Batch) { b[HeaderSize] = 0x7f; b.updateCRC() }), ErrInvalidRecord},
	}
	for _, c := range cases {
		if _, err := ValidateProduce(context.Background(), c.b, ValidateOptions{MaxDecompressed: 1 << 20}); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestDecompressionIsCapped(t *testing.T) {
	recs := []Record{{Value: make([]byte, 1<<20)}}
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		b := buildT(t, BuildOptions{Codec: codec, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
		if _, err := ValidateProduce(context.Background(), b, ValidateOptions{MaxDecompressed: 64 << 10}); !errors.Is(err, ErrDecompressTooLarge) {
			t.Errorf("%s: got %v", codec, err)
		}
	}
}

func TestXerialSnappyFraming(t *testing.T) {
	body := AppendRecord(nil, Record{Value: []byte("java framed")})
	block := snappyEncode(body)
	framed := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
	framed = append(framed, byte(len(block)>>24), byte(len(block)>>16), byte(len(block)>>8), byte(len(block)))
	framed = append(framed, block...)
	out, err := Decompress(CodecSnappy, framed, 1<<10)
	if err != nil || !bytes.Equal(out, body) {
		t.Fatalf("xerial: %v %q", err, out)
	}
}

func TestIncrementSequenceWraps(t *testing.T) {
	if got := IncrementSequence(1<<31-1, 1); got != 0 {
		t.Fatalf("wrap: %d", got)
	}
	if got := IncrementSequence(1<<31-2, 3); got != 1 {
		t.Fatalf("wrap: %d", got)
	}
	if got := IncrementSequence(5, 3); got != 8 {
		t.Fatalf("plain: %d", got)
	}
}

// TestWholePrefixDropsPartialTail: a fetch answer cut inside its last
// batch keeps only the whole batches before it.
func TestWholePrefixDropsPartialTail(t *testing.T) {
	batch := func() []byte {
		b := kmsg.NewRecordBatch()
		b.Magic = 2
		b.Length = int32(len(b.AppendTo(nil)) - 12) // after the base offset and the length
		return b.AppendTo(nil)
	}
	one := batch()
	two := append(slices.Clone(one), batch()...)
	for _, tc := range []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{one, len(one)},
		{two, len(two)},
		{two[:len(two)-1], len(one)},
		{one[:5], 0},
	} {
		if got := len(WholePrefix(tc.in)); got != tc.want {
			t.Errorf("WholePrefix of %d bytes kept %d, want %d", len(tc.in), got, tc.want)
		}
	}
}
