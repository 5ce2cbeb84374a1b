package broker

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/metadata"
)

func init() {
	handler(kmsg.DeleteACLs, 0, 3, handleDeleteACLs)
}

// handleDeleteACLs removes the ACLs each filter selects (kafka-acls
// --remove) and answers with what it removed: for a client allowed ALTER
// on the cluster, on a broker that enforces ACLs. Each resource pattern a
// filter selects from is one etcd write, which selects again from what it
// reads, so an ACL added meanwhile to that resource goes too when the
// filter selects it. An ACL two filters select is reported by the first.
func handleDeleteACLs(b *Broker, r *request, req *kmsg.DeleteACLsRequest) kmsg.Response {
	filters := make([]acl.Filter, len(req.Filters))
	errs := make([]error, len(req.Filters))
	refused := b.aclAdmin(r, acl.Alter)
	for i, f := range req.Filters {
		filters[i] = aclFilter(f.ResourceType, f.ResourcePatternType, f.ResourceName, f.Principal, f.Host, f.Operation, f.PermissionType)
		if errs[i] = refused; errs[i] == nil {
			errs[i] = checkFilter(filters[i])
		}
	}
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
		var last int64
		for i, f := range filters {
			res := kmsg.NewDeleteACLsResponseResult()
			var deleted []acl.Binding
			if errs[i] == nil {
				var rev int64
				deleted, rev, errs[i] = b.deleteACLs(ctx, r, f)
				last = max(last, rev)
			}
			if err := errs[i]; err != nil {
				res.ErrorCode, res.ErrorMessage = kafkaError(err), errorMessage(err)
			}
			for _, bd := range deleted {
				m := kmsg.NewDeleteACLsResponseResultMatchingACL()
				m.ResourceType = kmsg.ACLResourceType(bd.Resource.Type)
				m.ResourcePatternType = kmsg.ACLResourcePatternType(bd.Resource.Pattern)
				m.ResourceName = bd.Resource.Name
				m.Principal, m.Host = bd.Entry.Principal, bd.Entry.Host
				m.Operation, m.PermissionType = kmsg.ACLOperation(bd.Entry.Operation), kmsg.ACLPermissionType(bd.Entry.Permission)
				res.MatchingACLs = append(res.MatchingACLs, m)
			}
			resp.Results = append(resp.Results, res)
		}
		if last > 0 {
			if err := b.waitApplied(ctx, last); err != nil {
				b.log.Debug("waiting for ACLs to apply", "err", err)
			}
		}
		r.respond(resp)
	}()
	return nil
}

// deleteACLs removes what f selects, from each resource pattern that had
// an ACL f selects, and returns what it removed. It stops at the first
// write that fails, returning what it removed before.
func (b *Broker) deleteACLs(ctx context.Context, r *request, f acl.Filter) ([]acl.Binding, int64, error) {
	var resources []metadata.ACLResource
	for _, bd := range sortedBindings(b.meta.snapshot().aclEntries) {
		res, _ := aclRecord(bd)
		if f.Matches(bd) && (len(resources) == 0 || resources[len(resources)-1] != res) {
			resources = append(resources, res)
		}
	}
	var deleted []acl.Binding
	var last int64
	for _, res := range resources {
		var gone []acl.Binding
		rev, err := b.meta.updateACLs(ctx, res, func(cur []metadata.ACLEntry) ([]metadata.ACLEntry, error) {
			gone = nil
			return slices.DeleteFunc(slices.Clone(cur), func(e metadata.ACLEntry) bool {
				bd := aclBinding(res, e)
				if f.Matches(bd) {
					gone = append(gone, bd)
					return true
				}
				return false
			}), nil
		})
		if err != nil {
			return deleted, last, err
		}
		last = max(last, rev)
		deleted = append(deleted, gone...)
		if len(gone) > 0 {
			names := make([]string, len(gone))
			for i, bd := range gone {
				names[i] = bd.String()
			}
			b.log.Info("ACLs deleted", append([]any{"acls", names}, r.clientAttrs()...)...)
		}
	}
	return deleted, last, nil
}
