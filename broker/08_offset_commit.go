package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.OffsetCommit, 2, 10, handleOffsetCommit)
}

// handleOffsetCommit queues the commit from the connection's reader, so a
// connection's commits apply in the order it sent them, and is answered off
// the reader once the offsets are in the log.
func handleOffsetCommit(b *Broker, r *request, req *kmsg.OffsetCommitRequest) kmsg.Response {
	wait := b.groups.c.StartOffsetCommit(r.ctx(), req)
	go func() { r.respond(wait()) }()
	return nil
}
