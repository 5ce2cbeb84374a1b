package recordbatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"
)

// compressedBatch wraps already-compressed body bytes in a valid header
// claiming count records.
func compressedBatch(codec Codec, count int32, body []byte) Batch {
	return wrapBody(codec, count, body)
}

func TestValidateRefusesGarbageCompressedBodyWithValidCRC(t *testing.T) {
	// Not random: random bytes are sometimes a valid snappy block.
	garbage := bytes.Repeat([]byte{0xff, 0x13, 0x37, 0x00}, 1024)
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			b := compressedBatch(codec, 3, garbage)
			if err := Check(b); err != nil {
				t.Fatalf("the header and CRC should pass: %v", err)
			}
			_, err := ValidateProduce(context.Background(), b, ValidateOptions{})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("garbage %s body: got %v, want ErrCorrupt", codec, err)
			}
			// Well-compressed bytes that are not records.
			c, _ := Compress(codec, garbage)
			_, err = ValidateProduce(context.Background(), compressedBatch(codec, 3, c), ValidateOptions{})
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("compressed garbage: got %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func TestValidateRefusesRecordCountBeyondTheRecords(t *testing.T) {
	body := AppendRecord(nil, Record{Value: []byte("one")})
	for _, codec := range allCodecs {
		c, err := Compress(codec, body)
		if err != nil {
			t.Fatal(err)
		}
		for _, claim := range []int32{2, 1 << 30} {
			b := compressedBatch(codec, claim, c)
			if _, err := ValidateProduce(context.Background(), b, ValidateOptions{}); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("%s claiming %d records: got %v", codec, claim, err)
			}
		}
		// And the other way: records after the claimed count.
		c, _ = Compress(codec, AppendRecord(AppendRecord(nil, Record{}), Record{OffsetDelta: 1}))
		if _, err := ValidateProduce(context.Background(), compressedBatch(codec, 1, c), ValidateOptions{}); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s with a record past the count: got %v", codec, err)
		}
	}
}

func TestValidateSummaryReadsTheRecords(t *testing.T) {
	recs := testRecords(5)
	recs[2].TimestampDelta = 100
	recs[3].TimestampDelta = -4
	for _, codec := range allCodecs {
		b := buildT(t, BuildOptions{Codec: codec, ProducerID: -1, BaseSequence: -1, BaseTimestamp: 1000}, recs)
		sum, err := ValidateProduce(context.Background(), b, ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := Summary{Records: 5, MinTimestamp: 996, MaxTimestamp: 1100, MaxTimestampOffsetDelta: 2}
		if sum != want {
			t.Fatalf("%s: summary %+v, want %+v", codec, sum, want)
		}
	}
}

// bomb is a batch of one record whose value is n zero bytes, compressed.
func bomb(t testing.TB, codec Codec, n int) Batch {
	t.Helper()
	body := AppendRecord(nil, Record{Value: make([]byte, n)})
	c, err := Compress(codec, body)
	if err != nil {
		t.Fatal(err)
	}
	return compressedBatch(codec, 1, c)
}

func TestDecompressionBombRefusedWithoutAllocatingItsSize(t *testing.T) {
	const size, limit = 24 << 20, 4 << 20
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			b := bomb(t, codec, size)
			budget := NewBudget(DefaultBudgetBytes)
			opts := ValidateOptions{MaxDecompressed: limit, Budget: budget}
			// Warm the decoder pool with a small batch of the codec.
			small := buildT(t, BuildOptions{Codec: codec, ProducerID: -1, BaseSequence: -1}, testRecords(2))
			if _, err := ValidateProduce(context.Background(), small, opts); err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := ValidateProduce(context.Background(), b, opts)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrDecompressTooLarge) {
				t.Fatalf("got %v, want ErrDecompressTooLarge", err)
			}
			// At most what the walk charges the budget (decoder state,
			// which the GC above may have dropped from the pools, and the
			// window) and some slack: never the bomb's size.
			bound := uint64(walkWindow + 1<<20)
			if need, err := WalkMemory(b, opts); err == nil {
				bound += uint64(need)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bound || bound > size/2 {
				t.Fatalf("refusing a %d-byte bomb allocated %d bytes (bound %d)", size, alloc, bound)
			}
			if n := budget.InUse(); n != 0 {
				t.Fatalf("%d budget bytes still taken", n)
			}
		})
	}
}

func TestValidateUncompressedAllocatesNothing(t *testing.T) {
	b := buildT(t, BuildOptions{ProducerID: -1, BaseSequence: -1}, testRecords(50))
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ValidateProduce(ctx, b, ValidateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per validation", allocs)
	}
}

func TestWalkStepsOverRecordsLargerThanTheWindow(t *testing.T) {
	recs := []Record{
		{Value: bytes.Repeat([]byte("a"), 3*walkWindow+7), Key: []byte("k")},
		{Value: []byte("small"), Headers: []Header{{Key: "h", Value: bytes.Repeat([]byte("v"), walkWindow)}}},
		{Key: bytes.Repeat([]byte("k"), walkWindow-1)},
	}
	for _, codec := range allCodecs {
		b := buildT(t, BuildOptions{Codec: codec, ProducerID: -1, BaseSequence: -1, BaseTimestamp: 5}, recs)
		if _, err := ValidateProduce(context.Background(), b, ValidateOptions{}); err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		var offs []int64
		err := WalkRecords(context.Background(), b, ValidateOptions{}, func(off, ts int64) bool { offs = append(offs, off); return true })
		if err != nil || len(offs) != 3 {
			t.Fatalf("%s: walk %v, %v", codec, offs, err)
		}
		if codec == CodecNone {
			offs = offs[:0]
			err := WalkUncompressedRecords(b[:HeaderSize], bytes.NewReader(b[HeaderSize:]), func(off, ts int64) bool { offs = append(offs, off); return true })
			if err != nil || len(offs) != 3 {
				t.Fatalf("streamed: %v, %v", offs, err)
			}
		}
	}
}

func TestZstdWindowBeyondTheBoundRefused(t *testing.T) {
	// A frame header declaring a 16 MiB window (descriptor exponent 14):
	// more history than a decoder may keep, whatever follows.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 14 << 3}
	_, err := ValidateProduce(context.Background(), compressedBatch(CodecZstd, 1, frame), ValidateOptions{})
	if !errors.Is(err, ErrDecompressTooLarge) {
		t.Fatalf("got %v, want ErrDecompressTooLarge", err)
	}
}

func TestBudgetBoundsAndQueues(t *testing.T) {
	b := NewBudget(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 101); !errors.Is(err, ErrDecompressTooLarge) {
		t.Fatalf("over the whole budget: %v", err)
	}
	if err := b.Acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if b.TryAcquire(50) {
		t.Fatal("TryAcquire past the budget")
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(ctx, 50) }()
	select {
	case err := <-got:
		t.Fatalf("Acquire did not wait: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	// A waiter is first in line: a small taker must not pass it.
	if b.TryAcquire(10) {
		t.Fatal("TryAcquire passed a waiter")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { cancelled <- b.Acquire(cctx, 90) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	b.Release(60)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := b.InUse(); n != 50 {
		t.Fatalf("in use %d, want 50", n)
	}
	b.Release(50)
	if n := b.InUse(); n != 0 {
		t.Fatalf("in use %d after releasing all", n)
	}
}

// TestXerialSnappyBlocksSplitRecords: the Java client's xerial framing cuts
// the record stream into blocks wherever it likes, so records span blocks.
func TestXerialSnappyBlocksSplitRecords(t *testing.T) {
	var body []byte
	for i := range 40 {
		body = AppendRecord(body, Record{OffsetDelta: int32(i), Value: bytes.Repeat([]byte{byte(i)}, 100+i)})
	}
	framed := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 997) // not on a record boundary
		block := snappyEncode(rest[:n])
		framed = binary.BigEndian.AppendUint32(framed, uint32(len(block)))
		framed = append(framed, block...)
		rest = rest[n:]
	}
	b := compressedBatch(CodecSnappy, 40, framed)
	sum, err := ValidateProduce(context.Background(), b, ValidateOptions{})
	if err != nil || sum.Records != 40 {
		t.Fatalf("xerial batch: %v, %d records", err, sum.Records)
	}
	// A block cut short is refused.
	if _, err := ValidateProduce(context.Background(), compressedBatch(CodecSnappy, 40, framed[:len(framed)-3]), ValidateOptions{}); err == nil {
		t.Fatal("a truncated xerial block was accepted")
	}
}
