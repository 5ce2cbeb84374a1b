package broker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// describeTopicPartitions sends a DescribeTopicPartitions request naming
// topics (none: all of them) with a partition limit (0: kmsg's default,
// 2000) and a cursor ("" for none).
func describeTopicPartitions(t *testing.T, cl *kgo.Client, limit int32, cursorTopic string, cursorPartition int32, topics ...string) *kmsg.DescribeTopicPartitionsResponse {
	t.Helper()
	req := kmsg.NewPtrDescribeTopicPartitionsRequest()
	for _, name := range topics {
		rt := kmsg.NewDescribeTopicPartitionsRequestTopic()
		rt.Topic = name
		req.Topics = append(req.Topics, rt)
	}
	if limit != 0 {
		req.ResponsePartitionLimit = limit
	}
	if cursorTopic != "" {
		req.Cursor = &kmsg.DescribeTopicPartitionsRequestCursor{Topic: cursorTopic, Partition: cursorPartition}
	}
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// pageSummary lists a response's topics with their partitions, or their
// error, then its next cursor: "alpha[0] nope(UNKNOWN_TOPIC_OR_PARTITION)
// beta[0 1] -> beta/2".
func pageSummary(resp *kmsg.DescribeTopicPartitionsResponse) string {
	var parts []string
	for _, rt := range resp.Topics {
		name := "<nil>"
		if rt.Topic != nil {
			name = *rt.Topic
		}
		if rt.ErrorCode != 0 {
			parts = append(parts, fmt.Sprintf("%s(%s)", name, kerr.ErrorForCode(rt.ErrorCode).(*kerr.Error).Message))
			continue
		}
		var indexes []string
		for _, p := range rt.Partitions {
			index := fmt.Sprint(p.Partition)
			if p.ErrorCode != 0 {
				index += fmt.Sprintf("(%s)", kerr.ErrorForCode(p.ErrorCode).(*kerr.Error).Message)
			}
			indexes = append(indexes, index)
		}
		parts = append(parts, fmt.Sprintf("%s[%s]", name, strings.Join(indexes, " ")))
	}
	if c := resp.NextCursor; c != nil {
		parts = append(parts, fmt.Sprintf("-> %s/%d", c.Topic, c.Partition))
	}
	return strings.Join(parts, " ")
}

// pageCase is a DescribeTopicPartitions request (limit 0: kmsg's default;
// cursorTopic "": no cursor) and the pageSummary of its answer.
type pageCase struct {
	name            string
	limit           int32
	cursorTopic     string
	cursorPartition int32
	topics          []string
	want            string
}

func checkPages(t *testing.T, cl *kgo.Client, prefix string, cases []pageCase) {
	t.Helper()
	for _, c := range cases {
		got := pageSummary(describeTopicPartitions(t, cl, c.limit, c.cursorTopic, c.cursorPartition, c.topics...))
		if got != c.want {
			t.Errorf("%s%s: %s, want %s", prefix, c.name, got, c.want)
		}
	}
}

// DescribeTopicPartitions (KIP-966, what kafka-topics.sh --describe asks
// Kafka 3.7+ brokers) describes each partition as Metadata does, topics in
// name order, a page of at most the request's limit of partitions at a
// time, the next page's start in NextCursor; a named topic that does not
// exist gets an error, and a cursor outside the named topics (or on a
// negative partition) INVALID_REQUEST, as in Kafka.
func TestDescribeTopicPartitionsPagesThroughTopicsAsMetadataDescribesThem(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ids := map[string][16]byte{
		"beta":  createTopic(t, adm, "beta", 3, nil).ID,
		"alpha": createTopic(t, adm, "alpha", 1, nil).ID,
	}
	cl := b.Client()

	// Every field, against Metadata's answer for the same partitions.
	all := describeTopicPartitions(t, cl, 0, "", 0)
	meta, err := kmsg.NewPtrMetadataRequest().RequestWith(testCtx(t), cl) // all topics
	if err != nil {
		t.Fatal(err)
	}
	if all.NextCursor != nil || len(all.Topics) != 2 {
		t.Fatalf("all topics: %s", pageSummary(all))
	}
	for i, rt := range all.Topics {
		name := *rt.Topic
		// Without ACLs a client may do every topic operation (3576).
		if want := []string{"alpha", "beta"}[i]; name != want || rt.ErrorCode != 0 || rt.TopicID != ids[name] || rt.IsInternal || rt.AuthorizedOperations != 3576 {
			t.Fatalf("topic %d: %s %v id %x internal %v operations %d, want %s with id %x", i, name, kerr.ErrorForCode(rt.ErrorCode), rt.TopicID, rt.IsInternal, rt.AuthorizedOperations, want, ids[want])
		}
		mi := slices.IndexFunc(meta.Topics, func(mt kmsg.MetadataResponseTopic) bool { return *mt.Topic == name })
		if mi < 0 || len(meta.Topics[mi].Partitions) != len(rt.Partitions) {
			t.Fatalf("%s: Metadata answered %+v", name, meta.Topics)
		}
		for j, p := range rt.Partitions {
			mp := meta.Topics[mi].Partitions[j]
			if p.ErrorCode != 0 || p.Partition != int32(j) || p.LeaderID != mp.Leader || p.LeaderEpoch != mp.LeaderEpoch ||
				!slices.Equal(p.Replicas, mp.Replicas) || !slices.Equal(p.ISR, mp.ISR) || !slices.Equal(p.OfflineReplicas, mp.OfflineReplicas) {
				t.Fatalf("%s partition %d: %+v, Metadata says %+v", name, j, p, mp)
			}
			if p.LeaderID < 0 || len(p.Replicas) != 1 || !slices.Equal(p.ISR, p.Replicas) || len(p.OfflineReplicas) != 0 || len(p.EligibleLeaderReplicas) != 0 || len(p.LastKnownELR) != 0 {
				t.Fatalf("%s partition %d on one broker: %+v", name, j, p)
			}
		}
	}

	checkPages(t, cl, "", []pageCase{
		{name: "one by name", topics: []string{"beta"}, want: "beta[0 1 2]"},
		{name: "named twice, out of order", topics: []string{"beta", "alpha", "beta"}, want: "alpha[0] beta[0 1 2]"},
		{name: "unknown and invalid names", topics: []string{"nope", "alpha", "bad/name"},
			want: "alpha[0] bad/name(INVALID_TOPIC_EXCEPTION) nope(UNKNOWN_TOPIC_OR_PARTITION)"},
		{name: "limit cuts a topic", limit: 2, want: "alpha[0] beta[0] -> beta/1"},
		{name: "from the cursor on", limit: 2, cursorTopic: "beta", cursorPartition: 1, want: "beta[1 2]"},
		{name: "limit ends with a topic", limit: 1, want: "alpha[0] -> beta/0"},
		{name: "named, from the cursor on", cursorTopic: "beta", cursorPartition: 1, topics: []string{"alpha", "beta", "nope"},
			want: "beta[1 2] nope(UNKNOWN_TOPIC_OR_PARTITION)"},
		{name: "cursor past the last partition", cursorTopic: "beta", cursorPartition: 7, topics: []string{"beta"}, want: "beta[]"},
		{name: "cursor on a topic not named", cursorTopic: "beta", topics: []string{"alpha"}, want: "alpha(INVALID_REQUEST)"},
		{name: "cursor on a negative partition", cursorTopic: "beta", cursorPartition: -1, topics: []string{"beta"}, want: "beta(INVALID_REQUEST)"},
		{name: "a limit below one is one", limit: -5, want: "alpha[0] -> beta/0"},
	})

	// Records that cannot be decoded: the partition is offline, in its
	// place in the pages; the topic is offline when named, and left out
	// of all topics.
	etcdPut(t, b.Etcd(), "/shale/partitions/beta/0000000001", "{garbage")
	etcdPut(t, b.Etcd(), "/shale/topics/alpha", "{garbage")
	brokertest.WaitFor(t, 10*time.Second, "the undecodable records offline", func() (bool, string) {
		got := pageSummary(describeTopicPartitions(t, cl, 0, "", 0))
		return got == "beta[0 1(LEADER_NOT_AVAILABLE) 2]", got
	})
	checkPages(t, cl, "undecodable, ", []pageCase{
		{name: "named", topics: []string{"alpha", "beta"}, want: "alpha(LEADER_NOT_AVAILABLE) beta[0 1(LEADER_NOT_AVAILABLE) 2]"},
		{name: "a page ending on it", limit: 2, want: "beta[0 1(LEADER_NOT_AVAILABLE)] -> beta/2"},
		{name: "a page from it", limit: 1, cursorTopic: "beta", cursorPartition: 1, want: "beta[1(LEADER_NOT_AVAILABLE)] -> beta/2"},
	})
}

// A partition's eligible leader replicas (KIP-966), which only
// DescribeTopicPartitions shows, are its record's: a follower that leaves
// an ISR of min.insync.replicas members (here, stopped) becomes one, and
// is offline; back in the ISR, it is one no longer.
func TestDescribeTopicPartitionsShowsEligibleLeaderReplicas(t *testing.T) {
	c := brokertest.StartCluster(t, 2)
	adm := c.Admin()
	two := "2"
	ctx := testCtx(t)
	if _, err := adm.CreateTopic(ctx, 1, 2, map[string]*string{"min.insync.replicas": &two}, "elr"); err != nil {
		t.Fatal(err)
	}
	cl := c.Client()
	var leader, follower int32
	brokertest.WaitFor(t, 15*time.Second, "a leader with both replicas in sync", func() (bool, string) {
		resp := describeTopicPartitions(t, cl, 0, "", 0, "elr")
		p := resp.Topics[0].Partitions
		if len(p) != 1 || p[0].LeaderID < 0 || len(p[0].ISR) != 2 {
			return false, pageSummary(resp) + fmt.Sprintf(" %+v", p)
		}
		leader, follower = p[0].LeaderID, 1-p[0].LeaderID
		return true, ""
	})
	c.Stop(follower)
	cl = c.Client() // seeded with the leader alone
	brokertest.WaitFor(t, 15*time.Second, "the stopped follower out of the ISR, an eligible leader replica", func() (bool, string) {
		p := describeTopicPartitions(t, cl, 0, "", 0, "elr").Topics[0].Partitions[0]
		ok := p.ErrorCode == 0 && p.LeaderID == leader && slices.Equal(p.ISR, []int32{leader}) &&
			slices.Equal(p.EligibleLeaderReplicas, []int32{follower}) && slices.Equal(p.OfflineReplicas, []int32{follower})
		return ok, fmt.Sprintf("%+v", p)
	})
	c.Start(follower)
	brokertest.WaitFor(t, 15*time.Second, "the follower back in the ISR, no longer eligible", func() (bool, string) {
		p := describeTopicPartitions(t, cl, 0, "", 0, "elr").Topics[0].Partitions[0]
		return len(p.ISR) == 2 && len(p.EligibleLeaderReplicas) == 0 && len(p.OfflineReplicas) == 0, fmt.Sprintf("%+v", p)
	})
}
