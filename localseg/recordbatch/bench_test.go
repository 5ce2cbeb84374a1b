package recordbatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
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
