package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/metadata"
)

func init() {
	handler(kmsg.CreateACLs, 0, 3, handleCreateACLs)
}

// handleCreateACLs adds ACLs (kafka-acls --add): for a client allowed
// ALTER on the cluster, on a broker that enforces ACLs. Each resource
// pattern's new entries go in one etcd write; an entry there already is
// not added twice. The answer comes once this broker applies them.
func handleCreateACLs(b *Broker, r *request, req *kmsg.CreateACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	errs := make([]error, len(req.Creations))
	byResource := map[metadata.ACLResource][]int{} // creations by resource
	var order []metadata.ACLResource
	refused := b.aclAdmin(r, acl.Alter)
	for i, c := range req.Creations {
		bd := acl.Binding{
			Resource: acl.Resource{Type: acl.ResourceType(c.ResourceType), Pattern: acl.PatternType(c.ResourcePatternType), Name: c.ResourceName},
			Entry:    acl.Entry{Principal: c.Principal, Host: c.Host, Operation: acl.Operation(c.Operation), Permission: acl.Permission(c.PermissionType)},
		}
		if errs[i] = refused; errs[i] == nil {
			if err := bd.Check(); err != nil {
				errs[i] = fmt.Errorf("%w: %w", errInvalidRequest, err)
			}
		}
		if errs[i] != nil {
			continue
		}
		res, _ := aclRecord(bd)
		if _, ok := byResource[res]; !ok {
			order = append(order, res)
		}
		byResource[res] = append(byResource[res], i)
	}
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		var last int64
		for _, res := range order {
			rev, err := b.createACLs(ctx, r, res, req.Creations, byResource[res])
			last = max(last, rev)
			for _, i := range byResource[res] {
				errs[i] = err
			}
		}
		if last > 0 {
			// Answered once this broker applies them: a describe that
			// follows sees them, and its requests are checked by them.
			if err := b.waitApplied(ctx, last); err != nil {
				b.log.Debug("waiting for ACLs to apply", "err", err)
			}
		}
		for _, err := range errs {
			res := kmsg.NewCreateACLsResponseResult()
			if err != nil {
				res.ErrorCode, res.ErrorMessage = kafkaError(err), errorMessage(err)
			}
			resp.Results = append(resp.Results, res)
		}
		r.respond(resp)
	}()
	return nil
}

// createACLs adds the creations at idx, all on resource res, in one write.
func (b *Broker) createACLs(ctx context.Context, r *request, res metadata.ACLResource, creations []kmsg.CreateACLsRequestCreation, idx []int) (int64, error) {
	var added []string
	rev, err := b.meta.updateACLs(ctx, res, func(cur []metadata.ACLEntry) ([]metadata.ACLEntry, error) {
		next := slices.Clone(cur)
		added = nil
		for _, i := range idx {
			c := creations[i]
			e := metadata.ACLEntry{Principal: c.Principal, Host: c.Host, Operation: int8(c.Operation), Permission: int8(c.PermissionType)}
			if !slices.Contains(next, e) {
				next = append(next, e)
				added = append(added, aclBinding(res, e).String())
			}
		}
		return next, nil
	})
	if err != nil {
		return 0, err
	}
	if len(added) > 0 {
		b.log.Info("ACLs created", append([]any{"acls", added}, r.clientAttrs()...)...)
	}
	return rev, nil
}
