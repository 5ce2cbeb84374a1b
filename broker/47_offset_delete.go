package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.OffsetDelete, 0, 0, handleOffsetDelete)
}

// handleOffsetDelete is answered by the group coordinator off the
// connection's reader. The partitions of a topic the client may not READ
// are answered TOPIC_AUTHORIZATION_FAILED, unless the group's answer is an
// error.
func handleOffsetDelete(b *Broker, r *request, req *kmsg.OffsetDeleteRequest) kmsg.Response {
	// DELETE on the group.
	if !r.authorizedGroup(acl.Delete, req.Group) {
		resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	readable := newACLVerdicts(r, acl.Read, acl.Topic)
	del := *req
	var denied []kmsg.OffsetDeleteRequestTopic
	del.Topics, denied = splitBy(req.Topics, func(t kmsg.OffsetDeleteRequestTopic) bool {
		// READ on each topic.
		return readable.allowed(t.Topic)
	})
	go func() {
		resp := b.groups.c.OffsetDelete(r.ctx(), &del)
		if resp.ErrorCode != 0 {
			r.respond(resp)
			return
		}
		for _, t := range denied {
			rt := kmsg.NewOffsetDeleteResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetDeleteResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.TopicAuthorizationFailed.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		r.respond(resp)
	}()
	return nil
}
