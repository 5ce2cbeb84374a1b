package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeGroups, 0, 6, handleDescribeGroups)
}

// handleDescribeGroups is answered by the group coordinator off the
// connection's reader. A group the client may not DESCRIBE is answered
// GROUP_AUTHORIZATION_FAILED.
func handleDescribeGroups(b *Broker, r *request, req *kmsg.DescribeGroupsRequest) kmsg.Response {
	describable := newACLVerdicts(r, acl.Describe, acl.Group)
	// DESCRIBE on each group.
	allowed, denied := splitBy(req.Groups, describable.allowed)
	describe := *req
	describe.Groups = allowed
	go func() {
		resp := b.groups.c.DescribeGroups(r.ctx(), &describe)
		if req.Version >= 3 && req.IncludeAuthorizedOperations {
			for i := range resp.Groups {
				if g := &resp.Groups[i]; g.ErrorCode == 0 {
					g.AuthorizedOperations = r.authorizedOperations(acl.Group, g.Group, groupOperations)
				}
			}
		}
		for _, id := range denied {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group, g.ErrorCode, g.ErrorMessage = id, kerr.GroupAuthorizationFailed.Code, errorMessage(errGroupAuthorization)
			resp.Groups = append(resp.Groups, g)
		}
		r.respond(resp)
	}()
	return nil
}
