package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.SyncGroup, 0, 5, handleSyncGroup)
}

// handleSyncGroup is answered by the group coordinator off the
// connection's reader (once the leader's assignment is stored).
func handleSyncGroup(b *Broker, r *request, req *kmsg.SyncGroupRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.SyncGroup(r.ctx(), req)) }()
	return nil
}
