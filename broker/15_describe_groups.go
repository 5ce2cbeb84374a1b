package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.DescribeGroups, 0, 6, handleDescribeGroups)
}

// handleDescribeGroups is answered by the group coordinator off the
// connection's reader.
func handleDescribeGroups(b *Broker, r *request, req *kmsg.DescribeGroupsRequest) kmsg.Response {
	go func() { r.respond(b.groups.c.DescribeGroups(r.ctx(), req)) }()
	return nil
}
