package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.AlterConfigs, 0, 2, handleAlterConfigs)
}

// handleAlterConfigs replaces a resource's whole set of configs (the
// legacy, non-incremental semantics: configs not named return to their
// defaults). The shared parts, the ALTER_CONFIGS check among them, are in
// config_alter.go.
func handleAlterConfigs(b *Broker, r *request, req *kmsg.AlterConfigsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
		for _, res := range req.Resources {
			out := kmsg.NewAlterConfigsResponseResource()
			out.ResourceType, out.ResourceName = res.ResourceType, res.ResourceName
			err := b.alterConfigs(ctx, r, res.ResourceType, res.ResourceName, req.ValidateOnly, func(_ map[string]string, kind configKind) (map[string]string, error) {
				return replaceConfigs(res.Configs, kind)
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
