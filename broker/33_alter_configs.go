package broker

import (
	"context"
	"fmt"
	"slices"

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
			err := alterTopicConfigs(ctx, b, r, res.ResourceType, res.ResourceName, req.ValidateOnly, func(map[string]string) (map[string]string, error) {
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
// The change is logged with the client that asked for it.
func alterTopicConfigs(ctx context.Context, b *Broker, r *request, typ kmsg.ConfigResourceType, name string, validateOnly bool, mutate func(map[string]string) (map[string]string, error)) error {
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
	var before, after map[string]string
	rev, err := b.meta.updateTopicConfigs(ctx, name, func(cur map[string]string) (map[string]string, error) {
		next, err := checked(cur)
		before, after = cur, next
		return next, err
	})
	if err != nil {
		return err
	}
	b.log.Info("topic configs changed", append([]any{"topic", name, "changes", configChanges(before, after)}, r.clientAttrs()...)...)
	return b.waitApplied(ctx, rev)
}

// configChanges describes what moved from before to after, sorted by name:
// "name=value" for a set, "name (default)" for a removed override.
func configChanges(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			out = append(out, k+"="+v)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k+" (default)")
		}
	}
	slices.Sort(out)
	return out
}

func cloneConfigs(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
