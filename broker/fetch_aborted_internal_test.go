package broker

import (
	"bytes"
	"math"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestBatchesEnd: the end of the batches a read returns, read from their
// headers, in a file range or in remote data split anywhere; a batch cut
// short counts once its header is whole.
func TestBatchesEnd(t *testing.T) {
	var all []byte
	base := int64(40)
	for n := 1; n <= 3; n++ {
		recs := make([]recordbatch.Record, n)
		for i := range recs {
			recs[i].Value = bytes.Repeat([]byte{'x'}, 30)
		}
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: base, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
		base += int64(n)
	}
	// Batches of 1, 2 and 3 records from offset 40: the end is 46.
	whole := bytes.NewReader(all)
	if got := batchesEnd(whole, 0, int64(len(all))); got != 46 {
		t.Fatalf("end of the whole batches: %d, want 46", got)
	}
	if got := batchesEnd(whole, 0, int64(len(all))-20); got != 46 {
		t.Fatalf("end with the last batch cut: %d, want 46", got)
	}
	if got := batchesEnd(whole, 0, 30); got != math.MaxInt64 {
		t.Fatalf("end with no whole header: %d, want no bound", got)
	}
	for split := 1; split < len(all); split += 7 {
		d := &dataReader{bufs: [][]byte{all[:split], all[split:]}}
		if got := batchesEnd(d, 0, int64(len(all))); got != 46 {
			t.Fatalf("end of data split at %d: %d, want 46", split, got)
		}
	}
}
