package main

import (
	"context"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// The compressed batches the benchmark sends are ones Shale accepts, with
// the records they claim.
func TestCompressedBatchesValidate(t *testing.T) {
	for _, codec := range []string{"gzip", "snappy", "lz4", "zstd"} {
		batch, records, raw, err := encodeCompressedBatch(codec, 100, 32<<10, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		sum, err := recordbatch.ValidateProduce(context.Background(), recordbatch.Batch(batch), recordbatch.ValidateOptions{})
		if err != nil || int(sum.Records) != records {
			t.Fatalf("%s: %v, %d records of %d", codec, err, sum.Records, records)
		}
		if raw <= len(batch) || raw > 32<<10 {
			t.Fatalf("%s: %d bytes compressed to %d", codec, raw, len(batch))
		}
	}
}
