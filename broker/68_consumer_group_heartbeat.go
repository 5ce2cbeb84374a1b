package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.ConsumerGroupHeartbeat, 0, 1, handleConsumerGroupHeartbeat)
}

// handleConsumerGroupHeartbeat is answered by the group coordinator off
// the connection's reader (KIP-848).
func handleConsumerGroupHeartbeat(b *Broker, r *request, req *kmsg.ConsumerGroupHeartbeatRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.ConsumerGroupHeartbeat(r.ctx(), clientInfo(r), req)) }()
	return nil
}
