package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeTopicPartitions, 0, 0, handleDescribeTopicPartitions)
}

// maxDescribedPartitions caps the partitions of one DescribeTopicPartitions
// response, whatever the request's limit, as Kafka's
// max.request.partition.size.limit (default 2000) does.
const maxDescribedPartitions = 2000

// handleDescribeTopicPartitions serves KIP-966's DescribeTopicPartitions,
// which Kafka's AdminClient (kafka-topics.sh --describe) prefers to
// Metadata: the partitions as Metadata describes them, with their eligible
// leader replicas, a page at a time.
func handleDescribeTopicPartitions(b *Broker, r *request, req *kmsg.DescribeTopicPartitionsRequest) kmsg.Response {
	return b.describeTopicPartitions(r, b.meta.snapshot(), req)
}

// describeTopicPartitions answers req from view as Kafka's
// DescribeTopicPartitionsRequestHandler does. The topics (all of them when
// the request names none, only those that exist) go in name order, from
// the cursor's topic on and, in it, from the cursor's partition on, each
// topic's partitions in index order; once the response holds the request's
// limit of partitions (at most maxDescribedPartitions, at least one), its
// NextCursor names the first partition left out. A named topic that does
// not exist is answered with an error, and counts for no partition. As in
// Kafka, the topics the client may not describe are left out of a listing
// of all of them, and answer TOPIC_AUTHORIZATION_FAILED after the others
// when named; every topic answered carries the client's authorized
// operations on it.
func (b *Broker) describeTopicPartitions(r *request, view *metaView, req *kmsg.DescribeTopicPartitionsRequest) *kmsg.DescribeTopicPartitionsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeTopicPartitionsResponse)
	all := len(req.Topics) == 0
	var names []string
	if all {
		names = view.sortedTopicNames()
	} else {
		names = make([]string, 0, len(req.Topics))
		for _, t := range req.Topics {
			names = append(names, t.Topic)
		}
		slices.Sort(names)
		names = slices.Compact(names)
	}
	if c := req.Cursor; c != nil {
		i, found := slices.BinarySearch(names, c.Topic)
		// Kafka refuses a cursor on a topic the request does not
		// name, and a negative partition.
		if !all && !found || c.Partition < 0 {
			return invalidDescribeTopicPartitions(req, resp)
		}
		names = names[i:]
	}
	var refused []kmsg.DescribeTopicPartitionsResponseTopic
	names = slices.DeleteFunc(names, func(name string) bool {
		if all {
			// DESCRIBE on the topic, else it is left out (not
			// logged: the client did not name it).
			return !r.conn.allowed(acl.Describe, acl.Topic, name)
		}
		// DESCRIBE on the topic.
		if r.authorizedTopic(acl.Describe, name) {
			return false
		}
		rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
		rt.Topic = kmsg.StringPtr(name) // whether it exists is not told
		rt.ErrorCode = kerr.TopicAuthorizationFailed.Code
		rt.AuthorizedOperations = noAuthorizedOperations
		refused = append(refused, rt)
		return true
	})

	remaining := int(max(min(req.ResponsePartitionLimit, maxDescribedPartitions), 1))
	for _, name := range names {
		if remaining == 0 {
			resp.NextCursor = &kmsg.DescribeTopicPartitionsResponseNextCursor{Topic: name}
			break
		}
		tv := view.topics[name]
		if tv == nil {
			if !all {
				rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
				rt.Topic = kmsg.StringPtr(name)
				rt.ErrorCode = view.missingTopicError(name)
				rt.IsInternal = isInternalTopic(name)
				rt.AuthorizedOperations = r.authorizedOperations(acl.Topic, name, topicOperations)
				resp.Topics = append(resp.Topics, rt)
			}
			continue
		}
		var from int32
		if c := req.Cursor; c != nil && c.Topic == name {
			from = c.Partition
		}
		described, next := b.describePartitions(view, tv, from, remaining)
		remaining -= len(described)
		rt := topicPartitionsTopic(tv, described)
		rt.AuthorizedOperations = r.authorizedOperations(acl.Topic, name, topicOperations)
		resp.Topics = append(resp.Topics, rt)
		if next >= 0 {
			resp.NextCursor = &kmsg.DescribeTopicPartitionsResponseNextCursor{Topic: name, Partition: next}
			break
		}
	}
	resp.Topics = append(resp.Topics, refused...)
	return resp
}

// topicPartitionsTopic is tv in a DescribeTopicPartitions response, with its
// partitions described.
func topicPartitionsTopic(tv *topicView, described []describedPartition) kmsg.DescribeTopicPartitionsResponseTopic {
	rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
	rt.Topic = kmsg.StringPtr(tv.name)
	rt.TopicID = tv.id
	rt.IsInternal = tv.internal
	rt.AuthorizedOperations = noAuthorizedOperations
	rt.Partitions = make([]kmsg.DescribeTopicPartitionsResponseTopicPartition, 0, len(described))
	for _, dp := range described {
		rp := kmsg.NewDescribeTopicPartitionsResponseTopicPartition()
		rp.ErrorCode = dp.errorCode
		rp.Partition = dp.index
		rp.LeaderID = dp.leader
		rp.LeaderEpoch = dp.leaderEpoch
		rp.Replicas = dp.replicas
		rp.ISR = dp.isr
		rp.EligibleLeaderReplicas = dp.eligible
		rp.LastKnownELR = []int32{} // Shale keeps none
		rp.OfflineReplicas = dp.offline
		rt.Partitions = append(rt.Partitions, rp)
	}
	return rt
}

// invalidDescribeTopicPartitions is Kafka's answer to a request it refuses
// (its getErrorResponse): INVALID_REQUEST for each topic the request names.
func invalidDescribeTopicPartitions(req *kmsg.DescribeTopicPartitionsRequest, resp *kmsg.DescribeTopicPartitionsResponse) *kmsg.DescribeTopicPartitionsResponse {
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
		rt.Topic = kmsg.StringPtr(t.Topic)
		rt.ErrorCode = kerr.InvalidRequest.Code
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
