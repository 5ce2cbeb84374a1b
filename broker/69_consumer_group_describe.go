package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.ConsumerGroupDescribe, 0, 1, handleConsumerGroupDescribe)
}

// handleConsumerGroupDescribe is answered by the group coordinator off
// the connection's reader (KIP-848). A group the client may not DESCRIBE
// is answered GROUP_AUTHORIZATION_FAILED, and, as Kafka does, one whose
// members' assignments name a topic it may not DESCRIBE is answered
// TOPIC_AUTHORIZATION_FAILED without its members.
func handleConsumerGroupDescribe(b *Broker, r *request, req *kmsg.ConsumerGroupDescribeRequest) kmsg.Response {
	describableGroups := newACLVerdicts(r, acl.Describe, acl.Group)
	// DESCRIBE on each group.
	allowed, denied := splitBy(req.Groups, describableGroups.allowed)
	describe := *req
	describe.Groups = allowed
	go func() {
		resp := b.groups.c.ConsumerGroupDescribe(r.ctx(), &describe)
		describable := newACLVerdicts(r, acl.Describe, acl.Topic)
		for i := range resp.Groups {
			g := &resp.Groups[i]
			if g.ErrorCode != 0 {
				continue
			}
			// DESCRIBE on each topic the members are assigned.
			if !assignedTopicsAllowed(g, &describable) {
				refused := kmsg.NewConsumerGroupDescribeResponseGroup()
				refused.Group, refused.ErrorCode = g.Group, kerr.TopicAuthorizationFailed.Code
				refused.ErrorMessage = strPtr("The group has described topic(s) that the client is not authorized to describe.")
				*g = refused
				continue
			}
			if req.IncludeAuthorizedOperations {
				g.AuthorizedOperations = r.authorizedOperations(acl.Group, g.Group, groupOperations)
			}
		}
		for _, id := range denied {
			g := kmsg.NewConsumerGroupDescribeResponseGroup()
			g.Group, g.ErrorCode, g.ErrorMessage = id, kerr.GroupAuthorizationFailed.Code, errorMessage(errGroupAuthorization)
			resp.Groups = append(resp.Groups, g)
		}
		r.respond(resp)
	}()
	return nil
}

// assignedTopicsAllowed reports whether describable allows every topic in
// the current and target assignments of the group's members. A topic the
// coordinator has no name for (deleted) shows nothing and is not asked
// about.
func assignedTopicsAllowed(g *kmsg.ConsumerGroupDescribeResponseGroup, describable *aclVerdicts) bool {
	ok := true
	for _, m := range g.Members {
		for _, a := range []kmsg.Assignment{m.Assignment, m.TargetAssignment} {
			for _, tp := range a.TopicPartitions {
				if tp.Topic != "" && !describable.allowed(tp.Topic) {
					ok = false
				}
			}
		}
	}
	return ok
}
