package broker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.IncrementalAlterConfigs, 0, 1, handleIncrementalAlterConfigs)
}

// The operations of IncrementalAlterConfigs.
const (
	opSet      = 0
	opDelete   = 1
	opAppend   = 2
	opSubtract = 3
)

func handleIncrementalAlterConfigs(b *Broker, r *request, req *kmsg.IncrementalAlterConfigsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), 30000)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, res := range req.Resources {
			out := kmsg.NewIncrementalAlterConfigsResponseResource()
			out.ResourceType, out.ResourceName = res.ResourceType, res.ResourceName
			err := alterTopicConfigs(ctx, b, r, res.ResourceType, res.ResourceName, req.ValidateOnly, func(cur map[string]string) (map[string]string, error) {
				return applyIncremental(cur, res.Configs, b.cfg.TopicDefaults)
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

// applyIncremental applies SET/DELETE/APPEND/SUBTRACT operations to a copy
// of a topic's configs.
func applyIncremental(cur map[string]string, ops []kmsg.IncrementalAlterConfigsRequestResourceConfig, brokerDefaults map[string]string) (map[string]string, error) {
	next := cloneConfigs(cur)
	seen := map[string]bool{}
	for _, op := range ops {
		if seen[op.Name] {
			return nil, fmt.Errorf("%w: config %s appears more than once", errInvalidRequest, op.Name)
		}
		seen[op.Name] = true
		def, ok := topicConfigIndex[op.Name]
		if !ok {
			return nil, fmt.Errorf("%w: unknown topic config name: %s", errInvalidConfig, op.Name)
		}
		switch op.Op {
		case opSet:
			if op.Value == nil {
				return nil, fmt.Errorf("%w: SET of %s without a value", errInvalidConfig, op.Name)
			}
			next[op.Name] = *op.Value
		case opDelete:
			delete(next, op.Name)
		case opAppend, opSubtract:
			if def.typ != kmsg.ConfigTypeList {
				return nil, fmt.Errorf("%w: %s is not a list; APPEND and SUBTRACT apply to lists", errInvalidConfig, op.Name)
			}
			if op.Value == nil {
				return nil, fmt.Errorf("%w: %s without a value", errInvalidConfig, op.Name)
			}
			v, _ := configValue(op.Name, next, brokerDefaults)
			items := splitList(v)
			for _, item := range splitList(*op.Value) {
				if op.Op == opAppend && !slices.Contains(items, item) {
					items = append(items, item)
				} else if op.Op == opSubtract {
					items = slices.DeleteFunc(items, func(s string) bool { return s == item })
				}
			}
			next[op.Name] = strings.Join(items, ",")
		default:
			return nil, fmt.Errorf("%w: unknown operation %d", errInvalidRequest, op.Op)
		}
		if v, ok := next[op.Name]; ok {
			if err := validateTopicConfig(op.Name, v); err != nil {
				return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
			}
		}
	}
	return next, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
