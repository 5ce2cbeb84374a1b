package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DeleteGroups, 0, 3, handleDeleteGroups)
}

// handleDeleteGroups is answered by the group coordinator off the
// connection's reader. A group the client may not DELETE is answered
// GROUP_AUTHORIZATION_FAILED.
func handleDeleteGroups(b *Broker, r *request, req *kmsg.DeleteGroupsRequest) kmsg.Response {
	deletable := newACLVerdicts(r, acl.Delete, acl.Group)
	// DELETE on each group.
	allowed, denied := splitBy(req.Groups, deletable.allowed)
	del := *req
	del.Groups = allowed
	go func() {
		resp := b.groups.c.DeleteGroups(r.ctx(), &del)
		for _, id := range denied {
			g := kmsg.NewDeleteGroupsResponseGroup()
			g.Group, g.ErrorCode = id, kerr.GroupAuthorizationFailed.Code
			resp.Groups = append(resp.Groups, g)
		}
		r.respond(resp)
	}()
	return nil
}
