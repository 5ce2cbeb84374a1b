package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.ConsumerGroupDescribe, 0, 1, handleConsumerGroupDescribe)
}

// handleConsumerGroupDescribe is answered by the group coordinator off
// the connection's reader (KIP-848).
func handleConsumerGroupDescribe(b *Broker, r *request, req *kmsg.ConsumerGroupDescribeRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.ConsumerGroupDescribe(r.ctx(), req)) }()
	return nil
}
