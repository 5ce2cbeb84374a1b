package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.Heartbeat, 0, 4, handleHeartbeat)
}

// handleHeartbeat is answered by the group coordinator off the
// connection's reader.
func handleHeartbeat(b *Broker, r *request, req *kmsg.HeartbeatRequest) kmsg.Response {
	// READ on the group.
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	go func() { r.respond(b.groups.c.Heartbeat(r.ctx(), req)) }()
	return nil
}
