package broker

import (
	"context"
	"fmt"
	"maps"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/clientquota"
)

func init() {
	handler(kmsg.AlterClientQuotas, 0, 1, handleAlterClientQuotas)
}

// handleAlterClientQuotas sets and removes client quotas, each entity's
// in one etcd write (kafka-configs --alter --entity-type
// users/clients/ips). See client_quotas.go.
func handleAlterClientQuotas(b *Broker, r *request, req *kmsg.AlterClientQuotasRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.AlterClientQuotasResponse)
		var refused error
		// ALTER_CONFIGS on the cluster; refused, every entry answers so.
		if !r.authorizedCluster(acl.AlterConfigs) {
			refused = errClusterAuthorization
		}
		var last int64
		for _, entry := range req.Entries {
			out := kmsg.NewAlterClientQuotasResponseEntry()
			for _, c := range entry.Entity {
				oe := kmsg.NewAlterClientQuotasResponseEntryEntity()
				oe.Type, oe.Name = c.Type, c.Name
				out.Entity = append(out.Entity, oe)
			}
			var rev int64
			err := refused
			if err == nil {
				rev, err = b.alterClientQuotas(ctx, r, entry, req.ValidateOnly)
			}
			if err != nil {
				out.ErrorCode = kafkaError(err)
				out.ErrorMessage = errorMessage(err)
			}
			last = max(last, rev)
			resp.Entries = append(resp.Entries, out)
		}
		if last > 0 {
			// Answered once this broker applies them: a describe that
			// follows sees them.
			if err := b.waitApplied(ctx, last); err != nil {
				b.log.Debug("waiting for client quotas to apply", "err", err)
			}
		}
		r.respond(resp)
	}()
	return nil
}

// alterClientQuotas checks and applies one entry: its entity, and each
// quota set or removed, a key at most once.
func (b *Broker) alterClientQuotas(ctx context.Context, r *request, entry kmsg.AlterClientQuotasRequestEntry, validateOnly bool) (int64, error) {
	comps := make([]clientquota.Component, 0, len(entry.Entity))
	for _, c := range entry.Entity {
		comps = append(comps, clientquota.Component{Type: c.Type, Name: c.Name})
	}
	e, err := clientquota.Entity(comps)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errInvalidRequest, err)
	}
	seen := map[string]bool{}
	for _, op := range entry.Ops {
		if seen[op.Key] {
			return 0, fmt.Errorf("%w: quota %s appears more than once", errInvalidRequest, op.Key)
		}
		seen[op.Key] = true
		if op.Remove {
			err = clientquota.CheckKey(e, op.Key)
		} else {
			err = clientquota.CheckValue(e, op.Key, op.Value)
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errInvalidRequest, err)
		}
	}
	if validateOnly {
		return 0, nil
	}
	var before, after map[string]float64
	rev, err := b.meta.updateClientQuotas(ctx, e, func(cur map[string]float64) (map[string]float64, error) {
		next := maps.Clone(cur)
		for _, op := range entry.Ops {
			if op.Remove {
				delete(next, op.Key)
			} else {
				next[op.Key] = op.Value
			}
		}
		before, after = cur, next
		return next, nil
	})
	if err != nil {
		return 0, err
	}
	b.log.Info("client quotas changed", append([]any{"entity", e.Key(), "before", before, "after", after}, r.clientAttrs()...)...)
	return rev, nil
}
