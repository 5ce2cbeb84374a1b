package broker_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

func createTopicsRequest(validateOnly bool, topics ...kmsg.CreateTopicsRequestTopic) *kmsg.CreateTopicsRequest {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10000
	req.ValidateOnly = validateOnly
	req.Topics = topics
	return req
}

func topicReq(name string, partitions int32) kmsg.CreateTopicsRequestTopic {
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = name, partitions, 1
	return t
}

func createTopicsCodes(t *testing.T, cl *kgo.Client, req *kmsg.CreateTopicsRequest) map[string]int16 {
	t.Helper()
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int16{}
	for _, st := range resp.Topics {
		out[st.Topic] = st.ErrorCode
	}
	return out
}

func wantCode(t *testing.T, what string, got, want int16) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %v, want %v", what, kerr.ErrorForCode(got), kerr.ErrorForCode(want))
	}
}

// Regression: a CreateTopics asking for 2^31-1 partitions made the broker
// allocate for every one of them ("fatal error: out of memory"), and
// 100,000 exceeded etcd's request limit as UNKNOWN_SERVER_ERROR. Counts
// are now bounded before anything is sized by them, as Kafka bounds one
// operation to 10,000 partitions, with ValidateOnly too.
func TestCreateTopicsHugePartitionCountsAreRefused(t *testing.T) {
	b := brokertest.Start(t)
	cl := b.Client()
	for _, validateOnly := range []bool{false, true} {
		codes := createTopicsCodes(t, cl, createTopicsRequest(validateOnly,
			topicReq("max-int", math.MaxInt32), topicReq("hundred-k", 100000)))
		wantCode(t, "2^31-1 partitions", codes["max-int"], kerr.PolicyViolation.Code)
		wantCode(t, "100,000 partitions", codes["hundred-k"], kerr.PolicyViolation.Code)
	}
	// The bound is per request, over all its topics.
	codes := createTopicsCodes(t, cl, createTopicsRequest(true, topicReq("a", 6000), topicReq("b", 6000)))
	wantCode(t, "first 6,000", codes["a"], 0)
	wantCode(t, "second 6,000", codes["b"], kerr.PolicyViolation.Code)

	// A replica assignment is bounded the same way, and one partition's
	// replica list cannot name more replicas than there are brokers.
	huge := topicReq("assigned", -1)
	huge.ReplicationFactor = -1
	for i := int32(0); i < 20000; i++ {
		a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		a.Partition, a.Replicas = i, []int32{0}
		huge.ReplicaAssignment = append(huge.ReplicaAssignment, a)
	}
	codes = createTopicsCodes(t, cl, createTopicsRequest(false, huge))
	wantCode(t, "20,000 assigned partitions", codes["assigned"], kerr.PolicyViolation.Code)
	wide := topicReq("wide", -1)
	wide.ReplicationFactor = -1
	a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
	a.Replicas = make([]int32, 100000) // refused before they are checked one by one
	wide.ReplicaAssignment = []kmsg.CreateTopicsRequestTopicReplicaAssignment{a}
	codes = createTopicsCodes(t, cl, createTopicsRequest(false, wide))
	wantCode(t, "100,000 replicas", codes["wide"], kerr.InvalidReplicaAssignment.Code)

	// CreatePartitions: the same bound, ValidateOnly or not.
	createTopic(t, b.Admin(), "grow", 1, nil)
	for _, validateOnly := range []bool{false, true} {
		req := kmsg.NewPtrCreatePartitionsRequest()
		req.TimeoutMillis, req.ValidateOnly = 10000, validateOnly
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = "grow", math.MaxInt32
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(testCtx(t), cl)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "CreatePartitions to 2^31-1", resp.Topics[0].ErrorCode, kerr.PolicyViolation.Code)
	}

	// The broker is still there and serves a normal request.
	createTopic(t, b.Admin(), "after", 3, nil)
}

// max.broker.partitions bounds what the brokers host, counted before any
// assignment is built.
func TestMaxBrokerPartitions(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxBrokerPartitions = 10 })
	cl := b.Client()
	createTopic(t, b.Admin(), "eight", 8, nil)
	codes := createTopicsCodes(t, cl, createTopicsRequest(false, topicReq("three", 3), topicReq("two", 2)))
	wantCode(t, "3 more partitions", codes["three"], kerr.PolicyViolation.Code)
	wantCode(t, "2 more partitions", codes["two"], 0)
}

// A topic of 300 partitions is created, grown to 500 and deleted
// through the Kafka API on a broker whose etcd has etcd's default limits
// (128 operations per transaction): the metadata is written in chunks.
func TestWideTopicOnAStockEtcd(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx := testCtx(t)
	createTopic(t, adm, "wide", 300, nil)
	described := func(want int) {
		t.Helper()
		brokertest.WaitFor(t, 10*time.Second, "the partitions described", func() (bool, string) {
			tds, err := adm.ListTopics(ctx, "wide")
			if err != nil {
				return false, err.Error()
			}
			n := len(tds["wide"].Partitions)
			return n == want, fmt.Sprintf("%d partitions, want %d", n, want)
		})
	}
	described(300)
	resp, err := adm.CreatePartitions(ctx, 200, "wide")
	if err != nil || resp["wide"].Err != nil {
		t.Fatalf("adding 200 partitions: %v %v", err, resp["wide"].Err)
	}
	described(500)
	cl := b.Client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceSync(t, cl, &kgo.Record{Topic: "wide", Partition: 499, Value: []byte("last")})
	dresp, err := adm.DeleteTopics(ctx, "wide")
	if err != nil || dresp["wide"].Err != nil {
		t.Fatalf("deleting: %v %v", err, dresp["wide"].Err)
	}
}
