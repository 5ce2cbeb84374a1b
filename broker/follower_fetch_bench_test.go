package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// BenchmarkFollowerFetchManyPartitions measures the leader's answer to a
// Fetch of every partition of a 1000-partition topic from its follower
// (replica id 1, on a connection authenticated as broker 1), beside a
// consumer's Fetch of the same partitions on the same connection, which
// skips the follower's steps (its position, ISR, throttle): first with
// every partition at its log end, then with one batch in each, fetched
// from offset 0. Profile it (-cpuprofile) to see what a follower's
// partition costs the leader.
func BenchmarkFollowerFetchManyPartitions(b *testing.B) {
	const parts = 1000
	broker.SetPoisonBuffers(false)
	defer broker.SetPoisonBuffers(true)
	c := brokertest.StartCluster(b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 60000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "wide", -1, -1
	for i := int32(0); i < parts; i++ {
		a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		a.Partition, a.Replicas = i, []int32{0, 1}
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, c.Client(kgo.RequestTimeoutOverhead(2*time.Minute)))
	if err != nil || resp.Topics[0].ErrorCode != 0 {
		b.Fatalf("creating wide: %v %+v", err, resp)
	}
	brokertest.WaitFor(b, 2*time.Minute, "every partition led by 0 with two in sync", func() (bool, string) {
		td, err := c.Admin().ListTopics(ctx, "wide")
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, p := range td["wide"].Partitions {
			if p.Leader == 0 && len(p.ISR) == 2 {
				ready++
			}
		}
		return ready == parts, fmt.Sprintf("%d of %d ready", ready, parts)
	})
	peer, err := c.Brokers[0].B.DialAsPeer(ctx, c.Brokers[0].Addr, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	fetch := func(replica int32) *kmsg.FetchRequest {
		f := kmsg.NewPtrFetchRequest()
		f.Version = 12
		f.ReplicaID = replica
		f.MaxWaitMillis, f.MinBytes, f.MaxBytes = 0, 0, 50<<20
		f.SessionEpoch = -1 // no session: every partition, every time
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "wide"
		for i := int32(0); i < parts; i++ {
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition, fp.PartitionMaxBytes = i, 1<<20
			// The log start broker 1's own fetcher reports: another
			// (kmsg's default is -1) would move the follower's log
			// start at every request, each move waking the partition's
			// waiters, broker 1's fetcher among them.
			fp.LogStartOffset = 0
			ft.Partitions = append(ft.Partitions, fp)
		}
		f.Topics = append(f.Topics, ft)
		return f
	}
	run := func(name string, replica int32) {
		b.Run(name, func(b *testing.B) {
			f := fetch(replica)
			for i := 0; i < b.N; i++ {
				r, err := peer.Request(ctx, f)
				if err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					fr := r.(*kmsg.FetchResponse)
					if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != parts {
						b.Fatalf("answer of %d topics", len(fr.Topics))
					}
					for _, p := range fr.Topics[0].Partitions {
						if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
							b.Fatalf("partition %d: %v", p.Partition, err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/parts, "ns/partition")
		})
	}
	// Caught up: a follower at the log end is answered before its
	// throttle is looked at.
	run("follower-caught-up", 1)
	run("consumer-caught-up", -1)
	// One batch in each partition, fetched from offset 0: every
	// partition's answer reads the log, and a follower's asks whether
	// it is throttled.
	prod := c.Client(kgo.DefaultProduceTopic("wide"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequestTimeoutOverhead(2*time.Minute))
	var recs []*kgo.Record
	for i := int32(0); i < parts; i++ {
		recs = append(recs, &kgo.Record{Partition: i, Value: []byte("v")})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	run("follower-one-batch", 1)
	run("consumer-one-batch", -1)
}
