package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.AddPartitionsToTxn, 0, 3, handleAddPartitionsToTxn)
}

// handleAddPartitionsToTxn adds partitions to a producer's transaction
// (the client's form, v0-3; v4's brokers' verification is not offered).
// It needs WRITE on the transactional id and on each topic, as Kafka asks:
// without the first every partition is TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
// a topic refused is TOPIC_AUTHORIZATION_FAILED and the others
// OPERATION_NOT_ATTEMPTED, nothing added. Internal topics are refused
// the same way: a client may not write them.
func handleAddPartitionsToTxn(b *Broker, r *request, req *kmsg.AddPartitionsToTxnRequest) kmsg.Response {
	if !r.authorized(acl.Write, acl.TransactionalID, req.TransactionalID) {
		return addPartitionsAnswered(req, func(string) int16 { return kerr.TransactionalIDAuthorizationFailed.Code })
	}
	writable := newACLVerdicts(r, acl.Write, acl.Topic)
	refused := false
	for _, rt := range req.Topics {
		if isInternalTopic(rt.Topic) || !writable.allowed(rt.Topic) {
			refused = true
		}
	}
	if refused {
		return addPartitionsAnswered(req, func(topic string) int16 {
			if isInternalTopic(topic) || !writable.allowed(topic) {
				return kerr.TopicAuthorizationFailed.Code
			}
			return kerr.OperationNotAttempted.Code
		})
	}
	go func() { r.respond(b.txns.c.AddPartitionsToTxn(r.ctx(), req)) }()
	return nil
}

// addPartitionsAnswered answers every partition of the request with the
// code its topic gets.
func addPartitionsAnswered(req *kmsg.AddPartitionsToTxnRequest, code func(topic string) int16) *kmsg.AddPartitionsToTxnResponse {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewAddPartitionsToTxnResponseTopic()
		st.Topic = rt.Topic
		c := code(rt.Topic)
		for _, index := range rt.Partitions {
			sp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			sp.Partition, sp.ErrorCode = index, c
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
