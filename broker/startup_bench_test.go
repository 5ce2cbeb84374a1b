package broker_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// BenchmarkRestartWithManyPartitions measures a broker's start-up (its
// stop included) with 1000 partition logs of one record each to open.
func BenchmarkRestartWithManyPartitions(b *testing.B) {
	const topic, parts = "many", 1000
	br := brokertest.Start(b)
	adm := br.Admin()
	if _, err := adm.CreateTopic(b.Context(), parts, 1, nil, topic); err != nil {
		b.Fatal(err)
	}
	cl := br.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for p := range int32(parts) {
		recs = append(recs, &kgo.Record{Partition: p, Value: []byte("x")})
	}
	if err := cl.ProduceSync(b.Context(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	cl.Close()
	adm.Close()
	b.ResetTimer()
	for range b.N {
		br.Restart()
	}
}
