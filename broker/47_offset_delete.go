package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.OffsetDelete, 0, 0, handleOffsetDelete)
}

// handleOffsetDelete is answered by the group coordinator off the
// connection's reader.
func handleOffsetDelete(b *Broker, r *request, req *kmsg.OffsetDeleteRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.OffsetDelete(r.ctx(), req)) }()
	return nil
}
