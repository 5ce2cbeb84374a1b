package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.LeaveGroup, 0, 5, handleLeaveGroup)
}

// handleLeaveGroup is answered by the group coordinator off the
// connection's reader (batched from v3, KIP-345).
func handleLeaveGroup(b *Broker, r *request, req *kmsg.LeaveGroupRequest) kmsg.Response {
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	go func() { r.respond(b.groups.c.LeaveGroup(r.ctx(), req)) }()
	return nil
}
