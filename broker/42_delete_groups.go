package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.DeleteGroups, 0, 3, handleDeleteGroups)
}

// handleDeleteGroups is answered by the group coordinator off the
// connection's reader.
func handleDeleteGroups(b *Broker, r *request, req *kmsg.DeleteGroupsRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.DeleteGroups(r.ctx(), req)) }()
	return nil
}
