package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.ListGroups, 0, 5, handleListGroups)
}

// handleListGroups is answered by the group coordinator off the
// connection's reader (state filter from v4, type filter from v5). A
// client that may not DESCRIBE the cluster sees the groups it may
// DESCRIBE; the others are left out, unlogged: it did not name them.
func handleListGroups(b *Broker, r *request, req *kmsg.ListGroupsRequest) kmsg.Response {
	// DESCRIBE on the cluster lists every group.
	all := r.conn.allowed(acl.Describe, acl.Cluster, acl.ClusterName)
	go func() {
		resp := b.groups.c.ListGroups(r.ctx(), req)
		if !all {
			// Else DESCRIBE on each group listed.
			resp.Groups = slices.DeleteFunc(resp.Groups, func(g kmsg.ListGroupsResponseGroup) bool {
				return !r.conn.allowed(acl.Describe, acl.Group, g.Group)
			})
		}
		r.respond(resp)
	}()
	return nil
}
