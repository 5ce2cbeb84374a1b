package localseg

import (
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Regression: a client inventing a producer id per batch grew a log's
// producer state (and its snapshots) without bound. Past
// maxProducersPerLog the producers idle longest are dropped.
func TestProducerStateIsBounded(t *testing.T) {
	s := newProducerState()
	recs := []recordbatch.Record{{Value: []byte("v")}}
	const n = 2*maxProducersPerLog + 7
	for i := 0; i < n; i++ {
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: int64(i), ProducerEpoch: 0, BaseSequence: 0, BaseTimestamp: int64(1000 + i)}, recs)
		if err != nil {
			t.Fatal(err)
		}
		s.update(recordbatch.Batch(b))
		if len(s.producers) > maxProducersPerLog {
			t.Fatalf("%d producers after %d batches", len(s.producers), i+1)
		}
	}
	if s.producers[n-1] == nil {
		t.Fatal("the newest producer was dropped")
	}
	if s.producers[0] != nil {
		t.Fatal("the producer idle longest was kept")
	}
}
