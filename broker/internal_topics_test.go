package broker_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// A client that produces a forged offset commit to __consumer_offsets is
// refused with INVALID_TOPIC_EXCEPTION, and the group's committed offset
// after a restart (when the coordinator replays the topic) is the real one.
func TestProduceToInternalTopicIsRefused(t *testing.T) {
	b := groupBroker(t, nil)
	// Every client is closed before the restart: the broker waits for
	// open connections when it stops.
	admCl := b.Client()
	adm := kadm.NewClient(admCl)
	createTopic(t, adm, "events", 1, nil)
	ctx := testCtx(t)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "events", Partition: 0, At: 1, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "victims", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}

	key := (&kmsg.OffsetCommitKey{Version: 1, Group: "victims", Topic: "events", Partition: 0}).AppendTo(nil)
	val := (&kmsg.OffsetCommitValue{Version: 3, Offset: 999, LeaderEpoch: -1, CommitTimestamp: time.Now().UnixMilli()}).AppendTo(nil)
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, BaseTimestamp: time.Now().UnixMilli()},
		[]recordbatch.Record{{Key: key, Value: val}})
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []int16{9, 13} {
		req := kmsg.NewPtrProduceRequest()
		req.Version = version
		req.Acks = -1
		req.TimeoutMillis = 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "__consumer_offsets"
		td, err := adm.ListTopics(ctx, rt.Topic)
		if err != nil {
			t.Fatal(err)
		}
		rt.TopicID = td[rt.Topic].ID
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = group.PartitionFor("victims", 4)
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		cl := b.Client(kgo.MaxVersions(kversionsProduce(version)))
		resp, err := req.RequestWith(ctx, cl)
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Topics[0].Partitions[0].ErrorCode; got != kerr.InvalidTopicException.Code {
			t.Fatalf("produce v%d to __consumer_offsets: error %d, want INVALID_TOPIC_EXCEPTION", version, got)
		}
	}

	// DeleteRecords on an internal topic is refused the same way.
	dr, err := adm.DeleteRecords(ctx, func() kadm.Offsets {
		o := kadm.Offsets{}
		o.Add(kadm.Offset{Topic: "__consumer_offsets", Partition: group.PartitionFor("victims", 4), At: -1})
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range dr.Sorted() {
		if r.Err != kerr.InvalidTopicException {
			t.Fatalf("DeleteRecords on __consumer_offsets: %v, want INVALID_TOPIC_EXCEPTION", r.Err)
		}
	}

	admCl.Close()
	b.Restart()
	fetched, err := b.Admin().FetchOffsets(testCtx(t), "victims")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("events", 0); !ok || o.At != 1 {
		t.Fatalf("committed offset after restart: %+v (found %v), want 1", o, ok)
	}
}

// kversionsProduce caps a client's Produce version.
func kversionsProduce(v int16) *kversion.Versions {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(kmsg.Produce.Int16(), v)
	return vs
}
