package broker_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawJoin sends one JoinGroup (v9: members get their id first, KIP-394)
// offering one protocol with metadata of n bytes.
func rawJoin(t *testing.T, cl *kgo.Client, group, memberID string, n int) int16 {
	t.Helper()
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = 9
	req.Group, req.MemberID = group, memberID
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 6000, 6000
	req.ProtocolType = "consumer"
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", bytes.Repeat([]byte{'m'}, n)
	req.Protocols = append(req.Protocols, p)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ErrorCode
}

func rawCommit(t *testing.T, cl *kgo.Client, group, topic string, partitions ...int32) []int16 {
	t.Helper()
	td, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = topic, td[topic].ID
	for _, p := range partitions {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = p, 1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int16
	for _, p := range resp.Topics[0].Partitions {
		codes = append(codes, p.ErrorCode)
	}
	return codes
}

func rawConsumerHeartbeat(t *testing.T, cl *kgo.Client, group string, topics []string) int16 {
	t.Helper()
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group = group
	req.MemberID = fmt.Sprintf("member-%d", len(topics))
	req.MemberEpoch = 0
	req.RebalanceTimeoutMillis = 6000
	req.SubscribedTopicNames = topics
	req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ErrorCode
}

// group.max.size counts the members-to-be a KIP-394 join hands ids to:
// a client joining without end got an id (and a session timer) each time.
func TestGroupMaxSizeCountsMembersToBe(t *testing.T) {
	b := groupBroker(t, map[string]string{"group.max.size": "3"})
	cl := b.Client()
	for i := 0; i < 3; i++ {
		if code := rawJoin(t, cl, "crowd", "", 10); code != kerr.MemberIDRequired.Code {
			t.Fatalf("join %d: error %d, want MEMBER_ID_REQUIRED", i, code)
		}
	}
	for i := 0; i < 5; i++ {
		if code := rawJoin(t, cl, "crowd", "", 10); code != kerr.GroupMaxSizeReached.Code {
			t.Fatalf("join past group.max.size: error %d, want GROUP_MAX_SIZE_REACHED", code)
		}
	}
}

// The protocol metadata a classic group's members hold, and the
// subscriptions of a consumer group's, are bounded by
// group.max.metadata.bytes.
func TestGroupMetadataBytesAreBounded(t *testing.T) {
	b := groupBroker(t, map[string]string{"group.max.metadata.bytes": "10000"})
	cl := b.Client()
	if code := rawJoin(t, cl, "fat", "", 20000); code != kerr.GroupMaxSizeReached.Code {
		t.Fatalf("join with 20,000 bytes of metadata: error %d, want GROUP_MAX_SIZE_REACHED", code)
	}
	if code := rawJoin(t, cl, "fat", "", 5000); code != kerr.MemberIDRequired.Code {
		t.Fatalf("join with 5,000 bytes of metadata: error %d", code)
	}
	var names []string
	for i := 0; i < 2000; i++ {
		names = append(names, fmt.Sprintf("topic-%04d", i))
	}
	if code := rawConsumerHeartbeat(t, cl, "subscribed", names); code != kerr.GroupMaxSizeReached.Code {
		t.Fatalf("consumer group member subscribing 20,000 bytes of topic names: error %d, want GROUP_MAX_SIZE_REACHED", code)
	}
	if code := rawConsumerHeartbeat(t, cl, "subscribed", names[:10]); code != 0 {
		t.Fatalf("consumer group member subscribing 10 topics: error %d", code)
	}
}

// group.coordinator.max.groups bounds the groups a client can create,
// whichever way it creates them.
func TestCoordinatorGroupCountIsBounded(t *testing.T) {
	b := groupBroker(t, map[string]string{"group.coordinator.max.groups": "5"})
	createTopic(t, b.Admin(), "counted", 1, nil)
	cl := b.Client()
	for i := 0; i < 5; i++ {
		if codes := rawCommit(t, cl, fmt.Sprintf("simple-%d", i), "counted", 0); codes[0] != 0 {
			t.Fatalf("commit creating group %d: error %d", i, codes[0])
		}
	}
	if codes := rawCommit(t, cl, "simple-5", "counted", 0); codes[0] != kerr.PolicyViolation.Code {
		t.Fatalf("commit creating a sixth group: error %d, want POLICY_VIOLATION", codes[0])
	}
	if code := rawJoin(t, cl, "joined", "", 10); code != kerr.PolicyViolation.Code {
		t.Fatalf("join creating a sixth group: error %d, want POLICY_VIOLATION", code)
	}
	if code := rawConsumerHeartbeat(t, cl, "heartbeat", []string{"counted"}); code != kerr.PolicyViolation.Code {
		t.Fatalf("consumer heartbeat creating a sixth group: error %d, want POLICY_VIOLATION", code)
	}
	// The existing groups still take commits.
	if codes := rawCommit(t, cl, "simple-0", "counted", 0); codes[0] != 0 {
		t.Fatalf("commit to an existing group: error %d", codes[0])
	}
}

// group.max.committed.offsets bounds the partitions one group commits.
func TestCommittedOffsetsPerGroupAreBounded(t *testing.T) {
	b := groupBroker(t, map[string]string{"group.max.committed.offsets": "3"})
	createTopic(t, b.Admin(), "wide", 5, nil)
	cl := b.Client()
	codes := rawCommit(t, cl, "greedy", "wide", 0, 1, 2, 3, 4)
	want := []int16{0, 0, 0, kerr.PolicyViolation.Code, kerr.PolicyViolation.Code}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("commit of 5 partitions with a bound of 3: %v, want %v", codes, want)
	}
	if codes := rawCommit(t, cl, "greedy", "wide", 4); codes[0] != kerr.PolicyViolation.Code {
		t.Fatalf("a fourth partition: error %d", codes[0])
	}
	if codes := rawCommit(t, cl, "greedy", "wide", 2, 1, 0); fmt.Sprint(codes) != "[0 0 0]" {
		t.Fatalf("recommits of committed partitions: %v", codes)
	}
}
