package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// BenchmarkReplicatedProduce measures produce throughput of acks=all with
// three replicas on a three-broker cluster beside its same-run ceiling,
// acks=1 on a single broker, both through franz-go with 1 KiB records.
func BenchmarkReplicatedProduce(b *testing.B) {
	value := make([]byte, 1024)
	run := func(b *testing.B, c *brokertest.Cluster, rf int16, acks kgo.Acks) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := c.Admin().CreateTopic(ctx, 1, rf, nil, "bench"); err != nil {
			b.Fatal(err)
		}
		opts := []kgo.Opt{kgo.DefaultProduceTopic("bench"), kgo.RequiredAcks(acks), kgo.ProducerLinger(time.Millisecond)}
		if acks != kgo.AllISRAcks() {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
		cl := c.Client(opts...)
		b.SetBytes(int64(len(value)))
		b.ResetTimer()
		errs := make(chan error, 1)
		for i := 0; i < b.N; i++ {
			cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
	}
	b.Run("single-broker-acks1", func(b *testing.B) {
		run(b, brokertest.StartCluster(b, 1), 1, kgo.LeaderAck())
	})
	b.Run("three-brokers-rf3-acksall", func(b *testing.B) {
		run(b, brokertest.StartCluster(b, 3), 3, kgo.AllISRAcks())
	})
}
