package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.JoinGroup, 0, 9, handleJoinGroup)
}

// handleJoinGroup is answered by the group coordinator off the
// connection's reader (once the join round completes).
func handleJoinGroup(b *Broker, r *request, req *kmsg.JoinGroupRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.JoinGroup(r.ctx(), clientInfo(r), req)) }()
	return nil
}
