package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.IncrementalAlterConfigs, 0, 1, handleIncrementalAlterConfigs)
}

// handleIncrementalAlterConfigs applies SET, DELETE, APPEND and SUBTRACT
// to a resource's configs. The shared parts, the ALTER_CONFIGS check among
// them, are in config_alter.go.
func handleIncrementalAlterConfigs(b *Broker, r *request, req *kmsg.IncrementalAlterConfigsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, res := range req.Resources {
			out := kmsg.NewIncrementalAlterConfigsResponseResource()
			out.ResourceType, out.ResourceName = res.ResourceType, res.ResourceName
			err := b.alterConfigs(ctx, r, res.ResourceType, res.ResourceName, req.ValidateOnly, func(cur map[string]string, kind configKind) (map[string]string, error) {
				return applyIncremental(cur, res.Configs, kind)
			})
			if err != nil {
				out.ErrorCode = kafkaError(err)
				out.ErrorMessage = errorMessage(err)
			}
			resp.Resources = append(resp.Resources, out)
		}
		r.respond(resp)
	}()
	return nil
}
