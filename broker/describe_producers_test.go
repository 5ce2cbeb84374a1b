package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestDescribeProducersListsIdempotentProducers: DescribeProducers answers,
// per partition, the idempotent producers its leader checks sequences for,
// with the epoch, last sequence and last timestamp of each (kadm's
// DescribeProducers, as kafka-transactions.sh describe-producers asks); a
// partition written only by a plain producer lists none, and one that does
// not exist is UNKNOWN_TOPIC_OR_PARTITION. A restart keeps them: they are
// in the log's producer snapshots.
func TestDescribeProducersListsIdempotentProducers(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "producers", 2, nil)
	ts := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for i := range 30 {
		recs = append(recs, &kgo.Record{Partition: 0, Value: []byte("idempotent"), Timestamp: ts.Add(time.Duration(i) * time.Millisecond)})
	}
	idem := b.Client(kgo.DefaultProduceTopic("producers"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceSync(t, idem, recs...)
	plain := b.Client(kgo.DefaultProduceTopic("producers"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())
	produceSync(t, plain, &kgo.Record{Partition: 1, Value: []byte("plain")})

	// check returns what is wrong with the answer, "" when nothing is.
	check := func() string {
		described, err := b.Admin().DescribeProducers(testCtx(t), kadm.TopicsSet{"producers": {0: {}, 1: {}}})
		if err != nil {
			return err.Error()
		}
		ps := described["producers"].Partitions
		if p := ps[0]; p.Err != nil || len(p.ActiveProducers) != 1 {
			return fmt.Sprintf("partition 0: %v, producers %+v; want one", p.Err, p.ActiveProducers)
		}
		got := ps[0].ActiveProducers.Sorted()[0]
		if got.ProducerID < 0 || got.ProducerEpoch != 0 || got.LastSequence != 29 ||
			got.LastTimestamp != ts.Add(29*time.Millisecond).UnixMilli() || got.CurrentTxnStartOffset != -1 || got.CoordinatorEpoch != -1 {
			return fmt.Sprintf("partition 0 producer %+v: want epoch 0, last sequence 29, last timestamp %d, no transaction",
				got, ts.Add(29*time.Millisecond).UnixMilli())
		}
		if p := ps[1]; p.Err != nil || len(p.ActiveProducers) != 0 {
			return fmt.Sprintf("partition 1: %v, producers %+v; want none", p.Err, p.ActiveProducers)
		}
		return ""
	}
	if msg := check(); msg != "" {
		t.Fatal(msg)
	}
	b.Restart()
	// The logs open in the background after a restart.
	brokertest.WaitFor(t, 10*time.Second, "the producers described after a restart", func() (bool, string) {
		msg := check()
		return msg == "", msg
	})

	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = "producers", []int32{7}
	req.Topics = append(req.Topics, rt)
	// Sent to the broker itself: the client would shard the request by
	// partition leader, and find none for partition 7.
	cl := b.Client()
	if _, err := kadm.NewClient(cl).BrokerMetadata(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	raw, err := cl.Broker(0).Request(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	resp := raw.(*kmsg.DescribeProducersResponse)
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("partition 7: %v, want UNKNOWN_TOPIC_OR_PARTITION", kerr.ErrorForCode(code))
	}
}
