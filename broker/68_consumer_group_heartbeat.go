package broker

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.ConsumerGroupHeartbeat, 0, 1, handleConsumerGroupHeartbeat)
}

// handleConsumerGroupHeartbeat is answered by the group coordinator off
// the connection's reader (KIP-848). A member subscribing by name to a
// topic it may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED, as
// Kafka answers it, before the coordinator sees the subscription.
func handleConsumerGroupHeartbeat(b *Broker, r *request, req *kmsg.ConsumerGroupHeartbeatRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	describable := newACLVerdicts(r, acl.Describe, acl.Topic)
	// DESCRIBE on each topic subscribed to by name.
	if _, denied := splitBy(req.SubscribedTopicNames, describable.allowed); len(denied) > 0 {
		resp.ErrorCode = kerr.TopicAuthorizationFailed.Code
		resp.ErrorMessage = strPtr("not authorized to describe topics: " + strings.Join(denied, ", "))
		return resp
	}
	go func() { r.respond(b.groups.c.ConsumerGroupHeartbeat(r.ctx(), clientInfo(r), req)) }()
	return nil
}
