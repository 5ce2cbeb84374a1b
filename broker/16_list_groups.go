package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.ListGroups, 0, 5, handleListGroups)
}

// handleListGroups is answered by the group coordinator off the
// connection's reader (state filter from v4, type filter from v5).
func handleListGroups(b *Broker, r *request, req *kmsg.ListGroupsRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.ListGroups(r.ctx(), req)) }()
	return nil
}
