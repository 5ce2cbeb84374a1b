package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.Heartbeat, 0, 4, handleHeartbeat)
}

// handleHeartbeat is answered by the group coordinator off the
// connection's reader.
func handleHeartbeat(b *Broker, r *request, req *kmsg.HeartbeatRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.Heartbeat(r.ctx(), req)) }()
	return nil
}
