package recordbatch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
)

// cpuTime is the CPU time the process has used. On a shared machine wall
// time measures the neighbours; MB per CPU second (reported beside MB/s)
// measures the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs fn b.N times, reporting MB per CPU second of raw bytes.
func measure(b *testing.B, raw int, fn func()) {
	b.SetBytes(int64(raw))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		fn()
	}
	if cpu := cpuTime() - start; cpu > 0 {
		b.ReportMetric(float64(raw)*float64(b.N)/cpu.Seconds()/1e6, "MB/cpu-s")
	}
}

// benchBatch is a 32 KiB-ish producer batch of 100-byte records (the raw
// load generator's shape), values half random and half repeated so that
// every codec has something to do.
func benchBatch(b *testing.B, codec Codec) (Batch, int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]Record, 300)
	raw := 0
	for i := range recs {
		v := make([]byte, 100)
		for j := range v {
			if j < 50 {
				v[j] = byte('a' + rng.IntN(26))
			} else {
				v[j] = byte('a' + j%7)
			}
		}
		recs[i] = Record{TimestampDelta: int64(i), Key: []byte(fmt.Sprintf("key-%d", i%16)), Value: v}
	}
	body := 0
	for _, r := range recs {
		body += len(AppendRecord(nil, r))
	}
	raw = body
	buf, err := Build(nil, BuildOptions{Codec: codec, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1}, recs)
	if err != nil {
		b.Fatal(err)
	}
	return Batch(buf), raw
}

// BenchmarkValidateProduce measures produce validation per codec, in MB/s
// (and MB per CPU second) of record bytes, decompressed: the streaming walk
// beside the implementation it replaced (decompress whole, build every
// record), the figure to beat in the same run. Run with -cpu 1 so that
// the process's CPU time is the benchmark's.
func BenchmarkValidateProduce(b *testing.B) {
	ctx := context.Background()
	budget := NewBudget(DefaultBudgetBytes)
	for _, codec := range allCodecs {
		batch, raw := benchBatch(b, codec)
		b.Run(codec.String()+"/walk", func(b *testing.B) {
			opts := ValidateOptions{Budget: budget}
			measure(b, raw, func() {
				if _, err := ValidateProduce(ctx, batch, opts); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(codec.String()+"/reference", func(b *testing.B) {
			measure(b, raw, func() {
				if err := referenceValidateProduce(batch, MinMaxDecompressed); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// recompressBatch is a 1 MiB-ish producer batch of 1 KiB JSON-like
// records (ids and timestamps random, field names and words from small
// vocabularies, as in event streams), compressed with codec. It returns
// the batch and its records' size.
func recompressBatch(b *testing.B, codec Codec) (Batch, int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	words := []string{"checkout", "cart", "search", "login", "view", "product", "price", "shipping", "promo", "mobile", "desktop", "retry", "timeout", "success", "error", "session"}
	events := []string{"page_view", "add_to_cart", "purchase", "search", "click"}
	var recs []Record
	raw := 0
	for raw < 1<<20 {
		v := fmt.Appendf(nil, `{"id":"%016x","ts":%d,"user":{"id":%d,"name":"user-%d","country":"%s"},"event":"%s","page":"/catalog/%d/item/%d","session":"%016x","text":"`,
			rng.Uint64(), 1_700_000_000_000+rng.Int64N(1e9), rng.IntN(1e6), rng.IntN(5000), []string{"DE", "FR", "US", "JP", "BR"}[rng.IntN(5)],
			events[rng.IntN(len(events))], rng.IntN(100), rng.IntN(10000), rng.Uint64())
		for len(v) < 1000 {
			v = append(append(v, words[rng.IntN(len(words))]...), ' ')
		}
		v = append(v, `"}`...)
		r := Record{TimestampDelta: int64(len(recs)), Key: fmt.Appendf(nil, "user-%d", rng.IntN(5000)), Value: v}
		raw += len(AppendRecord(nil, r))
		recs = append(recs, r)
	}
	buf, err := Build(nil, BuildOptions{Codec: codec, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1}, recs)
	if err != nil {
		b.Fatal(err)
	}
	return Batch(buf), raw
}

// BenchmarkRecompress measures Recompress (default levels) in MB/s (and
// MB per CPU second) of records, decompressed, beside a ceiling in the
// same run: the codec alone on the same records bytes, with the same
// pooled encoder (or the decoder, for zstd to none), writing into a
// buffer it reuses. out-B is the size of the recompressed batch. Run with
// -cpu 1 so that the process's CPU time is the benchmark's.
func BenchmarkRecompress(b *testing.B) {
	ctx := context.Background()
	budget := NewBudget(DefaultBudgetBytes)
	for _, c := range []struct{ from, to Codec }{
		{CodecNone, CodecZstd}, {CodecNone, CodecLZ4}, {CodecNone, CodecSnappy}, {CodecNone, CodecGzip}, {CodecZstd, CodecNone},
	} {
		batch, raw := recompressBatch(b, c.from)
		records, err := Decompress(c.from, batch[HeaderSize:], MaxMaxDecompressed)
		if err != nil {
			b.Fatal(err)
		}
		name := c.from.String() + "-" + c.to.String()
		b.Run(name+"/recompress", func(b *testing.B) {
			opts := ValidateOptions{Budget: budget}
			size := 0
			measure(b, raw, func() {
				out, charged, err := Recompress(ctx, batch, c.to, 0, opts)
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
				budget.Release(charged)
			})
			b.ReportMetric(float64(size), "out-B")
		})
		b.Run(name+"/ceiling", func(b *testing.B) {
			op, size := codecOnly(b, c.from, c.to, batch, records)
			measure(b, raw, op)
			b.ReportMetric(float64(*size), "out-B")
		})
	}
}

// codecOnly returns the codec's own work in recompressing batch from
// codec from to codec to: compressing records with the pooled encoder
// Recompress uses, or decompressing the batch's payload.
func codecOnly(b *testing.B, from, to Codec, batch Batch, records []byte) (func(), *int) {
	b.Helper()
	size := new(int)
	out := bytes.NewBuffer(make([]byte, 0, 2*len(records)))
	switch {
	case to == CodecSnappy:
		dst := make([]byte, s2.MaxEncodedLen(len(records)))
		return func() { *size = HeaderSize + len(s2.EncodeSnappy(dst, records)) }, size
	case to == CodecNone:
		return func() {
			d, err := openDecompressor(from, batch[HeaderSize:], MinMaxDecompressed)
			if err != nil {
				b.Fatal(err)
			}
			out.Reset()
			if _, err := out.ReadFrom(d); err != nil {
				b.Fatal(err)
			}
			d.close()
			*size = HeaderSize + out.Len()
		}, size
	}
	e, err := newEncoding(to, 0, MinMaxDecompressed)
	if err != nil {
		b.Fatal(err)
	}
	return func() {
		out.Reset()
		w, err := e.getEncoder(out, int64(len(records)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(records); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		e.putEncoder(w)
		*size = HeaderSize + out.Len()
	}, size
}
