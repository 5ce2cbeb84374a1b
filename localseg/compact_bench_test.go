package localseg

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// BenchmarkCompact times one compaction pass over 32 MiB of 100-byte
// records of 20,000 keys, uncompressed and zstd (b.SetBytes: the bytes the
// pass reads).
func BenchmarkCompact(b *testing.B) {
	for _, codec := range []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecZstd} {
		b.Run(codec.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l, err := Open(b.TempDir(), Config{SegmentBytes: 8 << 20, RetentionMs: -1}, Options{Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(1, 2))
				recs := make([]recordbatch.Record, 200)
				for l.Size() < 32<<20 {
					for j := range recs {
						v := make([]byte, 100)
						for k := range v {
							v[k] = byte('a' + rng.IntN(26))
						}
						recs[j] = recordbatch.Record{Key: fmt.Appendf(nil, "key-%09d", rng.IntN(20000)), Value: v}
					}
					bt, err := recordbatch.Build(nil, recordbatch.BuildOptions{Codec: codec, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1}, recs)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := l.AppendAsLeader(Batch(bt), 0); err != nil {
						b.Fatal(err)
					}
				}
				l.Roll()
				l.Flush()
				l.flushes.Wait()
				b.StartTimer()
				st, err := l.Compact(context.Background(), CompactOptions{Now: time.Now(), HighWatermark: l.LogEndOffset()})
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(st.ReadBytes)
				b.StopTimer()
				l.Close()
			}
		})
	}
}
