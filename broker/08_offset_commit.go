package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.OffsetCommit, 2, 10, handleOffsetCommit)
}

// handleOffsetCommit queues the commit from the connection's reader, so a
// connection's commits apply in the order it sent them, and is answered off
// the reader once the offsets are in the log. The partitions of a topic the
// client may not READ are answered TOPIC_AUTHORIZATION_FAILED and the
// others committed; a commit of only those does not reach the coordinator.
func handleOffsetCommit(b *Broker, r *request, req *kmsg.OffsetCommitRequest) kmsg.Response {
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		resp.Topics = commitsRefused(req.Topics, kerr.GroupAuthorizationFailed.Code)
		return resp
	}
	readable := newACLVerdicts(r, acl.Read, acl.Topic)
	allowed, denied := splitBy(req.Topics, func(t kmsg.OffsetCommitRequestTopic) bool {
		// READ on each topic.
		return readable.allowedTopic(b, t.Topic, t.TopicID, req.Version >= 10)
	})
	refused := commitsRefused(denied, kerr.TopicAuthorizationFailed.Code)
	commit := req
	if len(denied) > 0 {
		if len(allowed) == 0 {
			resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
			resp.Topics = refused
			return resp
		}
		c := *req
		c.Topics = allowed
		commit = &c
	}
	wait := b.groups.c.StartOffsetCommit(r.ctx(), commit)
	go func() {
		resp := wait()
		resp.Topics = append(resp.Topics, refused...)
		r.respond(resp)
	}()
	return nil
}

// commitsRefused answers every partition of topics with code.
func commitsRefused(topics []kmsg.OffsetCommitRequestTopic, code int16) []kmsg.OffsetCommitResponseTopic {
	if len(topics) == 0 {
		return nil
	}
	out := make([]kmsg.OffsetCommitResponseTopic, len(topics))
	for i, t := range topics {
		rt := &out[i]
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.OffsetCommitResponseTopicPartition, len(t.Partitions))
		for j, p := range t.Partitions {
			rt.Partitions[j] = kmsg.OffsetCommitResponseTopicPartition{Partition: p.Partition, ErrorCode: code}
		}
	}
	return out
}
