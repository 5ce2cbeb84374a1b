package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.SyncGroup, 0, 5, handleSyncGroup)
}

// handleSyncGroup is answered by the group coordinator off the
// connection's reader (once the leader's assignment is stored).
func handleSyncGroup(b *Broker, r *request, req *kmsg.SyncGroupRequest) kmsg.Response {
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		resp.MemberAssignment = []byte{}
		return resp
	}
	go func() { r.respond(b.groups.c.SyncGroup(r.ctx(), req)) }()
	return nil
}
