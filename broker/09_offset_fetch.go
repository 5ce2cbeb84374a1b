package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.OffsetFetch, 1, 10, handleOffsetFetch)
}

// handleOffsetFetch is answered by the group coordinator off the
// connection's reader.
func handleOffsetFetch(b *Broker, r *request, req *kmsg.OffsetFetchRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.OffsetFetch(r.ctx(), req)) }()
	return nil
}
