package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.TxnOffsetCommit, 0, 3, handleTxnOffsetCommit)
}

// handleTxnOffsetCommit commits a consumer group's offsets inside a
// producer's transaction (consume-transform-produce): they become the
// group's committed offsets when the transaction commits, and vanish if it
// aborts. It needs WRITE on the transactional id, READ on the group and
// READ on each topic, as Kafka asks.
func handleTxnOffsetCommit(b *Broker, r *request, req *kmsg.TxnOffsetCommitRequest) kmsg.Response {
	refuse := func(topics []kmsg.TxnOffsetCommitRequestTopic, code int16) []kmsg.TxnOffsetCommitResponseTopic {
		out := make([]kmsg.TxnOffsetCommitResponseTopic, 0, len(topics))
		for _, rt := range topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			out = append(out, st)
		}
		return out
	}
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	if !r.authorized(acl.Write, acl.TransactionalID, req.TransactionalID) {
		resp.Topics = refuse(req.Topics, kerr.TransactionalIDAuthorizationFailed.Code)
		return resp
	}
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp.Topics = refuse(req.Topics, kerr.GroupAuthorizationFailed.Code)
		return resp
	}
	readable := newACLVerdicts(r, acl.Read, acl.Topic)
	allowed, denied := splitBy(req.Topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool {
		return readable.allowed(t.Topic)
	})
	refused := refuse(denied, kerr.TopicAuthorizationFailed.Code)
	if len(allowed) == 0 {
		resp.Topics = refused
		return resp
	}
	commit := req
	if len(denied) > 0 {
		c := *req
		c.Topics = allowed
		commit = &c
	}
	go func() {
		resp := b.groups.c.TxnOffsetCommit(r.ctx(), commit)
		resp.Topics = append(resp.Topics, refused...)
		r.respond(resp)
	}()
	return nil
}
