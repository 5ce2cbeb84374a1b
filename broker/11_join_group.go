package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.JoinGroup, 0, 9, handleJoinGroup)
}

// handleJoinGroup is answered by the group coordinator off the
// connection's reader (once the join round completes).
func handleJoinGroup(b *Broker, r *request, req *kmsg.JoinGroupRequest) kmsg.Response {
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		return joinGroupRefused(req, kerr.GroupAuthorizationFailed.Code)
	}
	go func() { r.respond(b.groups.c.JoinGroup(r.ctx(), clientInfo(r), req)) }()
	return nil
}

// joinGroupRefused is Kafka's JoinGroup error response: no generation,
// member or protocol.
func joinGroupRefused(req *kmsg.JoinGroupRequest, code int16) *kmsg.JoinGroupResponse {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.ErrorCode = code
	resp.Generation = -1
	if req.Version < 7 {
		resp.Protocol = strPtr("") // not nullable before v7
	}
	return resp
}
