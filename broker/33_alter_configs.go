package broker

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.AlterConfigs, 0, 2, handleAlterConfigs)
}

// handleAlterConfigs replaces a topic's whole set of configs (the legacy,
// non-incremental semantics: configs not named return to their defaults).
func handleAlterConfigs(b *Broker, r *request, req *kmsg.AlterConfigsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
		for _, res := range req.Resources {
			out := kmsg.NewAlterConfigsResponseResource()
			out.ResourceType, out.ResourceName = res.ResourceType, res.ResourceName
			err := alterTopicConfigs(ctx, b, res.ResourceType, res.ResourceName, req.ValidateOnly, func(map[string]string) (map[string]string, error) {
				next := map[string]string{}
				for _, c := range res.Configs {
					if c.Value == nil {
						continue
					}
					if err := validateTopicConfig(c.Name, *c.Value); err != nil {
						return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
					}
					next[c.Name] = *c.Value
				}
				return next, nil
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

// alterTopicConfigs applies mutate to a topic's stored configs (or only
// validates it) and waits until this broker applies the result.
func alterTopicConfigs(ctx context.Context, b *Broker, typ kmsg.ConfigResourceType, name string, validateOnly bool, mutate func(map[string]string) (map[string]string, error)) error {
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
	case kmsg.ConfigResourceTypeBroker:
		return fmt.Errorf("%w: dynamic broker configs are not supported; set them on the command line or in the environment", errInvalidRequest)
	default:
		return fmt.Errorf("%w: unsupported config resource type %d", errInvalidRequest, typ)
	}
	tv := b.meta.snapshot().topics[name]
	if tv == nil {
		return fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	checked := func(cur map[string]string) (map[string]string, error) {
		next, err := mutate(cur)
		if err != nil {
			return nil, err
		}
		if err := checkTopicConfigs(cur, next, b.cfg.TopicDefaults); err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
		}
		return next, nil
	}
	if validateOnly {
		_, err := checked(cloneConfigs(tv.configs))
		return err
	}
	rev, err := b.meta.updateTopicConfigs(ctx, name, checked)
	if err != nil {
		return err
	}
	return b.waitApplied(ctx, rev)
}

func cloneConfigs(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
