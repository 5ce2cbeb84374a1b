package recordbatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

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
// of record bytes (decompressed): the streaming walk beside the
// implementation it replaced (decompress whole, build every record), which
// is its ceiling to beat in the same run. Run with -benchmem.
func BenchmarkValidateProduce(b *testing.B) {
	ctx := context.Background()
	budget := NewBudget(DefaultBudgetBytes)
	for _, codec := range allCodecs {
		batch, raw := benchBatch(b, codec)
		b.Run(codec.String()+"/walk", func(b *testing.B) {
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			opts := ValidateOptions{Budget: budget}
			for b.Loop() {
				if _, err := ValidateProduce(ctx, batch, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(codec.String()+"/reference", func(b *testing.B) {
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			for b.Loop() {
				if err := referenceValidateProduce(batch, MinMaxDecompressed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
