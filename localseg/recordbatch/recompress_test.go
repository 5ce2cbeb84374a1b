package recordbatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// recompressRecords is a batch's worth of records of every shape: null and
// empty keys and values, headers (a null header value, an empty header
// key), a timestamp before the base, and a value larger than the walk's
// window.
func recompressRecords() []Record {
	recs := testRecords(30)
	return append(recs,
		Record{TimestampDelta: -5, Key: []byte{}, Value: nil},
		Record{Key: []byte("k"), Value: []byte{}, Headers: []Header{{Key: "a", Value: nil}, {Key: "", Value: []byte("empty key")}}},
		Record{TimestampDelta: 90, Value: bytes.Repeat([]byte("a large value "), 2*walkWindow/14)},
	)
}

// producerBatch builds a transactional producer's batch with every header
// field set, so that a field lost in recompression shows.
func producerBatch(t testing.TB, codec Codec, recs []Record) Batch {
	t.Helper()
	buf, err := Build(nil, BuildOptions{
		BaseOffset: 1234, PartitionLeaderEpoch: 7, Codec: codec, Transactional: true,
		ProducerID: 42, ProducerEpoch: 3, BaseSequence: 1000, BaseTimestamp: 1_700_000_000_000,
	}, recs)
	if err != nil {
		t.Fatal(err)
	}
	return Batch(buf)
}

// recordsOf reads b's records, copied out of the batch.
func recordsOf(t testing.TB, b Batch, opts ValidateOptions) []Record {
	t.Helper()
	var recs []Record
	err := Records(context.Background(), b, ValidateOptions{MaxDecompressed: opts.MaxDecompressed}, func(r Record) error {
		r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		hs := r.Headers
		r.Headers = nil
		for _, h := range hs {
			r.Headers = append(r.Headers, Header{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Records: %v", err)
	}
	return recs
}

// headerWithoutRecompressedFields is b's header with the fields
// Recompress rewrites (batch length, CRC, codec bits) zeroed.
func headerWithoutRecompressedFields(b Batch) []byte {
	h := bytes.Clone(b[:HeaderSize])
	copy(h[offBatchLength:offBatchLength+4], make([]byte, 4))
	copy(h[offCRC:offCRC+4], make([]byte, 4))
	h[offAttributes+1] &^= CodecMask
	return h
}

// checkRecompressed checks what every recompressed batch must be: a valid
// batch of codec to, the input's header but for the fields recompression
// rewrites, and the input's records.
func checkRecompressed(t testing.TB, in, out Batch, to Codec, opts ValidateOptions) {
	t.Helper()
	if err := Check(out); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, err := ValidateProduce(context.Background(), out, ValidateOptions{MaxDecompressed: opts.MaxDecompressed}); err != nil {
		t.Fatalf("ValidateProduce: %v", err)
	}
	if out.Codec() != to {
		t.Fatalf("codec %s, want %s", out.Codec(), to)
	}
	if got, want := headerWithoutRecompressedFields(out), headerWithoutRecompressedFields(in); !bytes.Equal(got, want) {
		t.Fatalf("header\n got %x\nwant %x", got, want)
	}
	if got, want := recordsOf(t, out, opts), recordsOf(t, in, opts); !reflect.DeepEqual(got, want) {
		t.Fatalf("records differ:\n got %+v\nwant %+v", got, want)
	}
}

func TestRecompressEveryCodecPair(t *testing.T) {
	ctx := context.Background()
	recs := recompressRecords()
	for _, from := range allCodecs {
		in := producerBatch(t, from, recs)
		raw, err := Decompress(from, in[HeaderSize:], 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range allCodecs {
			t.Run(fmt.Sprintf("%s-%s", from, to), func(t *testing.T) {
				opts := ValidateOptions{MaxDecompressed: 1 << 20, Budget: NewBudget(DefaultBudgetBytes)}
				if _, err := ValidateProduce(ctx, in, opts); err != nil {
					t.Fatal(err)
				}
				out, charged, err := Recompress(ctx, in, to, 0, opts)
				if err != nil {
					t.Fatal(err)
				}
				if n := opts.Budget.InUse(); n != charged || charged < int64(len(out)) {
					t.Fatalf("budget in use %d, charged %d, for %d bytes", n, charged, len(out))
				}
				checkRecompressed(t, in, out, to, opts)

				// franz-go, an independent reader, finds the same records bytes.
				got := []byte(out[HeaderSize:])
				if to != CodecNone {
					if got, err = kgo.DefaultDecompressor().Decompress(got, kgo.CompressionCodecType(to)); err != nil {
						t.Fatalf("franz-go: %v", err)
					}
				}
				if !bytes.Equal(got, raw) {
					t.Fatalf("franz-go reads %d bytes of records, want %d", len(got), len(raw))
				}

				opts.Budget.Release(charged)
				if n := opts.Budget.InUse(); n != 0 {
					t.Fatalf("%d bytes in use after releasing the batch", n)
				}
			})
		}
	}
}

func TestRecompressWithoutBudgetChargesNothing(t *testing.T) {
	in := producerBatch(t, CodecNone, recompressRecords())
	out, charged, err := Recompress(context.Background(), in, CodecZstd, 0, ValidateOptions{})
	if err != nil || charged != 0 {
		t.Fatalf("charged %d, %v", charged, err)
	}
	checkRecompressed(t, in, out, CodecZstd, ValidateOptions{})
}

// compressibleRecords are records whose values repeat, with a little
// variation: text every level compresses, better at higher levels.
func compressibleRecords(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		v := fmt.Sprintf(`{"user":"user-%d","event":"page_view","path":"/products/%d","referrer":"https://example.com/search?q=item-%d","agent":"Mozilla/5.0 (X11; Linux x86_64)"}`, i%97, i%13, i%31)
		recs[i] = Record{TimestampDelta: int64(i), Key: []byte(fmt.Sprintf("user-%d", i%97)), Value: []byte(v)}
	}
	return recs
}

func TestRecompressLevels(t *testing.T) {
	ctx := context.Background()
	in := producerBatch(t, CodecNone, compressibleRecords(2000))
	opts := ValidateOptions{MaxDecompressed: 4 << 20}
	for _, codec := range []Codec{CodecGzip, CodecLZ4, CodecZstd} {
		lo, hi, def, ok := LevelRange(codec)
		if !ok {
			t.Fatalf("%s: no level range", codec)
		}
		sizes := map[int]int{}
		levels := []int{lo, def, hi, 0, lo + 1, def - 1, def + 1, hi - 1}
		if codec == CodecGzip {
			levels = append(levels, -1)
		}
		for _, level := range levels {
			out, _, err := Recompress(ctx, in, codec, level, opts)
			if err != nil {
				t.Fatalf("%s level %d: %v", codec, level, err)
			}
			checkRecompressed(t, in, out, codec, opts)
			sizes[level] = len(out)
		}
		t.Logf("%s: %d bytes at level %d, %d at %d (default), %d at %d", codec, sizes[lo], lo, sizes[def], def, sizes[hi], hi)
		// A sanity check, on text that every level compresses: the
		// highest level does no worse than the lowest.
		if sizes[hi] > sizes[lo] {
			t.Errorf("%s: %d bytes at level %d, more than %d at level %d", codec, sizes[hi], hi, sizes[lo], lo)
		}
		if sizes[0] != sizes[def] {
			t.Errorf("%s: level 0 gives %d bytes, the default %d", codec, sizes[0], sizes[def])
		}
		// Below the range (0, and gzip's -1, are the default) and above it.
		for _, bad := range []int{min(lo-1, -2), hi + 1} {
			if _, _, err := Recompress(ctx, in, codec, bad, opts); err == nil {
				t.Errorf("%s level %d accepted", codec, bad)
			}
		}
	}
	for _, codec := range []Codec{CodecNone, CodecSnappy} {
		if _, _, _, ok := LevelRange(codec); ok {
			t.Errorf("%s has a level range", codec)
		}
		if _, _, err := Recompress(ctx, in, codec, 1, opts); err == nil {
			t.Errorf("%s accepted a level", codec)
		}
	}
	if _, _, err := Recompress(ctx, in, Codec(5), 0, opts); err == nil {
		t.Error("codec 5 accepted")
	}
}

// TestRecompressLZ4LevelsAsKafka: Kafka compresses lz4 at its default
// level with the fast compressor and at any other level with LZ4HC, so
// level 9 gives larger output than 8 or 10 on compressible text.
func TestRecompressLZ4LevelsAsKafka(t *testing.T) {
	in := producerBatch(t, CodecNone, compressibleRecords(2000))
	size := func(level int) int {
		out, _, err := Recompress(context.Background(), in, CodecLZ4, level, ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(out)
	}
	if fast, hc8, hc10 := size(9), size(8), size(10); hc8 >= fast || hc10 >= fast {
		t.Fatalf("level 9 (fast) %d bytes, 8 (HC) %d, 10 (HC) %d", fast, hc8, hc10)
	}
}

// TestRecompressZstdWindow: the frames declare at most a 1 MiB window, and
// no more than the limit, so that a reader under the same limit takes them.
func TestRecompressZstdWindow(t *testing.T) {
	ctx := context.Background()
	big := compressibleRecords(30000) // about 5 MiB
	for _, c := range []struct {
		limit int
		from  Codec
		recs  []Record
		want  uint64
	}{
		{8 << 20, CodecNone, big, 1 << 20},
		{8 << 20, CodecGzip, big, 1 << 20},
		{64 << 10, CodecNone, compressibleRecords(300), 64 << 10},
		{64 << 10, CodecLZ4, compressibleRecords(300), 64 << 10},
		{100_000, CodecSnappy, compressibleRecords(300), 64 << 10},
	} {
		in := producerBatch(t, c.from, c.recs)
		opts := ValidateOptions{MaxDecompressed: c.limit}
		out, _, err := Recompress(ctx, in, CodecZstd, 0, opts)
		if err != nil {
			t.Fatalf("limit %d: %v", c.limit, err)
		}
		var h zstd.Header
		if err := h.Decode(out[HeaderSize:]); err != nil {
			t.Fatal(err)
		}
		if h.WindowSize > c.want {
			t.Errorf("limit %d, from %s: window %d, want at most %d", c.limit, c.from, h.WindowSize, c.want)
		}
		checkRecompressed(t, in, out, CodecZstd, opts)
	}
}

// TestRecompressLZ4Frame: the lz4 frames have 64 KiB blocks, as Kafka's
// Java producer writes them.
func TestRecompressLZ4Frame(t *testing.T) {
	in := producerBatch(t, CodecNone, compressibleRecords(3000))
	out, _, err := Recompress(context.Background(), in, CodecLZ4, 0, ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frame := out[HeaderSize:]
	if !bytes.HasPrefix(frame, []byte{0x04, 0x22, 0x4d, 0x18}) {
		t.Fatalf("not an lz4 frame: %x", frame[:8])
	}
	if bd := frame[5] >> 4 & 7; bd != 4 {
		t.Fatalf("block size index %d, want 4 (64 KiB)", bd)
	}
}

func TestRecompressRefusesWhatItCannotRead(t *testing.T) {
	ctx := context.Background()
	garbage := bytes.Repeat([]byte{0xff, 0x13, 0x37, 0x00}, 1024)
	records := AppendRecord(nil, Record{Value: bytes.Repeat([]byte("v"), 4000)})
	type refusal struct {
		name string
		b    Batch
		opts ValidateOptions
		want error
	}
	cases := []refusal{
		{"none beyond the limit", producerBatch(t, CodecNone, []Record{{Value: make([]byte, 100<<10)}}), ValidateOptions{MaxDecompressed: 64 << 10}, ErrDecompressTooLarge},
		{"truncated batch", producerBatch(t, CodecNone, testRecords(3))[:100], ValidateOptions{}, ErrCorrupt},
	}
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		full, err := Compress(codec, records)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			refusal{codec.String() + " bomb", bomb(t, codec, 1<<20), ValidateOptions{MaxDecompressed: 64 << 10}, ErrDecompressTooLarge},
			refusal{codec.String() + " garbage", compressedBatch(codec, 3, garbage), ValidateOptions{}, ErrCorrupt},
			refusal{codec.String() + " cut short", compressedBatch(codec, 1, full[:len(full)-5]), ValidateOptions{}, ErrCorrupt},
		)
	}
	for _, c := range cases {
		for _, to := range allCodecs {
			opts := c.opts
			opts.Budget = NewBudget(DefaultBudgetBytes)
			out, charged, err := Recompress(ctx, c.b, to, 0, opts)
			if !errors.Is(err, c.want) {
				t.Errorf("%s to %s: got %v (%d bytes), want %v", c.name, to, err, len(out), c.want)
			}
			if n := opts.Budget.InUse(); n != 0 || charged != 0 {
				t.Errorf("%s to %s: %d bytes in use, %d charged after an error", c.name, to, n, charged)
			}
		}
	}
}

// shortBudget returns options whose budget holds enough for a zstd
// decoder and little more, the rest taken by another holder, and a batch
// whose records (1 MiB of zeros) decompress from zstd far beyond their
// compressed size: recompressing it to none must grow the output past what
// the budget has free.
func shortBudget(t *testing.T) (Batch, ValidateOptions, int64) {
	t.Helper()
	b := producerBatch(t, CodecZstd, []Record{{Value: make([]byte, 1<<20)}})
	opts := ValidateOptions{MaxDecompressed: 4 << 20, Budget: NewBudget(16 << 20)}
	work, err := decoderMemory(CodecZstd, b[HeaderSize:], opts.limit())
	if err != nil {
		t.Fatal(err)
	}
	other := opts.Budget.Total() - work - 256<<10
	if err := opts.Budget.Acquire(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	return b, opts, other
}

// waitForWaiter returns once someone waits in b's queue.
func waitForWaiter(t *testing.T, b *Budget) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		n := len(b.mu.waiters)
		b.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody waits for the budget")
		}
	}
}

func TestRecompressWaitsForTheBudgetHoldingNothing(t *testing.T) {
	in, opts, other := shortBudget(t)
	type result struct {
		out     Batch
		charged int64
		err     error
	}
	done := make(chan result, 1)
	go func() {
		out, charged, err := Recompress(context.Background(), in, CodecNone, 0, opts)
		done <- result{out, charged, err}
	}()
	waitForWaiter(t, opts.Budget)
	// It waits holding nothing: all it held is given back.
	if n := opts.Budget.InUse(); n != other {
		t.Fatalf("%d bytes in use while waiting, want the other holder's %d", n, other)
	}
	opts.Budget.Release(other)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if n := opts.Budget.InUse(); n != r.charged {
		t.Fatalf("in use %d, charged %d", n, r.charged)
	}
	checkRecompressed(t, in, r.out, CodecNone, opts)
	opts.Budget.Release(r.charged)
}

func TestRecompressWaitsUntilTheContextEnds(t *testing.T) {
	in, opts, other := shortBudget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	out, charged, err := Recompress(ctx, in, CodecNone, 0, opts)
	if !errors.Is(err, context.DeadlineExceeded) || out != nil || charged != 0 {
		t.Fatalf("got %d bytes, %d charged, %v; want the context's error", len(out), charged, err)
	}
	if n := opts.Budget.InUse(); n != other {
		t.Fatalf("%d bytes in use, want the other holder's %d", n, other)
	}
}

func TestRecompressRefusesABudgetTooSmall(t *testing.T) {
	in := producerBatch(t, CodecZstd, []Record{{Value: make([]byte, 1<<20)}})
	opts := ValidateOptions{Budget: NewBudget(1 << 20)} // less than a zstd decoder
	_, charged, err := Recompress(context.Background(), in, CodecNone, 0, opts)
	if !errors.Is(err, ErrDecompressTooLarge) || charged != 0 || opts.Budget.InUse() != 0 {
		t.Fatalf("got %v, %d charged, %d in use", err, charged, opts.Budget.InUse())
	}
}

// TestRecompressPoolsEncoders: encoders are taken from pools, not built
// per batch, including after one failed mid-stream.
func TestRecompressPoolsEncoders(t *testing.T) {
	ctx := context.Background()
	small := producerBatch(t, CodecNone, testRecords(20))
	for _, to := range []Codec{CodecGzip, CodecLZ4, CodecZstd} {
		opts := ValidateOptions{MaxDecompressed: 64 << 10}
		// An encoder abandoned mid-stream goes back to its pool reset.
		if _, _, err := Recompress(ctx, bomb(t, CodecGzip, 1<<20), to, 0, opts); !errors.Is(err, ErrDecompressTooLarge) {
			t.Fatalf("%s: %v", to, err)
		}
		out, _, err := Recompress(ctx, small, to, 0, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkRecompressed(t, small, out, to, opts)

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const runs = 20
		for range runs {
			if _, _, err := Recompress(ctx, small, to, 0, opts); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		// A new encoder costs 0.5 to 4 MiB; a batch a few KiB.
		per := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%s: %d bytes allocated per recompression", to, per)
		if per > 128<<10 && !raceEnabled {
			t.Errorf("%s: %d bytes allocated per recompression", to, per)
		}
	}
}

// TestRecompressGrowsPastTheDeclaredSize: the output is first sized from
// what the payload declares, which for several gzip members (the last
// one's ISIZE) or zstd frames (the first one's content size) is less than
// the records; the buffers must grow past it.
func TestRecompressGrowsPastTheDeclaredSize(t *testing.T) {
	var records []byte
	var ends []int // where each record ends
	for i := range 200 {
		records = AppendRecord(records, Record{OffsetDelta: int32(i), Value: bytes.Repeat([]byte{byte(i)}, 1000)})
		ends = append(ends, len(records))
	}
	for _, c := range []struct {
		codec Codec
		split int // the records of the first member or frame
	}{
		{CodecGzip, ends[198]}, // the last member holds the last record only
		{CodecZstd, ends[0]},   // the first frame the first record only
	} {
		var body []byte
		for _, part := range [][]byte{records[:c.split], records[c.split:]} {
			z, err := Compress(c.codec, part)
			if err != nil {
				t.Fatal(err)
			}
			body = append(body, z...)
		}
		if declared, _ := decompressedSize(c.codec, body); declared > 2000 {
			t.Fatalf("%s: %d bytes declared; the test wants a small declared size", c.codec, declared)
		}
		in := compressedBatch(c.codec, 200, body)
		opts := ValidateOptions{Budget: NewBudget(DefaultBudgetBytes)}
		if _, err := ValidateProduce(context.Background(), in, opts); err != nil {
			t.Fatalf("%s: %v", c.codec, err)
		}
		for _, to := range allCodecs {
			out, charged, err := Recompress(context.Background(), in, to, 0, opts)
			if err != nil {
				t.Fatalf("%s to %s: %v", c.codec, to, err)
			}
			checkRecompressed(t, in, out, to, opts)
			opts.Budget.Release(charged)
		}
	}
}

// TestRecompressHugeLimit: a limit past what Recompress takes is capped,
// not overflowed.
func TestRecompressHugeLimit(t *testing.T) {
	opts := ValidateOptions{MaxDecompressed: math.MaxInt}
	for _, from := range allCodecs {
		in := producerBatch(t, from, testRecords(10))
		for _, to := range allCodecs {
			out, _, err := Recompress(context.Background(), in, to, 0, opts)
			if err != nil {
				t.Fatalf("%s to %s: %v", from, to, err)
			}
			checkRecompressed(t, in, out, to, ValidateOptions{})
		}
	}
}
