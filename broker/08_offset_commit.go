package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.OffsetCommit, 2, 10, handleOffsetCommit)
}

// handleOffsetCommit is answered by the group coordinator off the
// connection's reader (once the offsets are committed to the log).
func handleOffsetCommit(b *Broker, r *request, req *kmsg.OffsetCommitRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.OffsetCommit(r.ctx(), req)) }()
	return nil
}
