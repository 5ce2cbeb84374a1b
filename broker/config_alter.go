package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

// What AlterConfigs (33) and IncrementalAlterConfigs (44) share: the
// resource types they change, the store write and the wait, the log line.
// The handlers differ only in how a request turns the stored configs into
// the next ones (replaceConfigs, applyIncremental).

// configKind is what changing one resource type's configs needs.
type configKind struct {
	what string // "topic" or "broker", for messages
	// listType reports whether name is a known config, and whether it
	// is a list (APPEND and SUBTRACT apply to lists only).
	listType func(name string) (known, list bool)
	// validate checks one name=value; its message goes to the client.
	validate func(name, value string) error
	// effective is the value a config has when the stored configs are
	// m (a list APPEND or SUBTRACT starts from it).
	effective func(name string, m map[string]string) string
}

func (b *Broker) topicConfigKind() configKind {
	return configKind{
		what: "topic",
		listType: func(name string) (bool, bool) {
			def, ok := topicConfigIndex[name]
			return ok, ok && def.typ == kmsg.ConfigTypeList
		},
		validate: validateTopicConfig,
		effective: func(name string, m map[string]string) string {
			v, _ := configValue(name, m, b.cfg.TopicDefaults)
			return v
		},
	}
}

var brokerConfigKind = configKind{
	what: "broker",
	listType: func(name string) (bool, bool) {
		def, ok := dynamicBrokerConfigIndex[name]
		return ok, ok && def.typ == kmsg.ConfigTypeList
	},
	validate:  validateBrokerConfig,
	effective: func(name string, m map[string]string) string { return m[name] },
}

// alterConfigs applies mutate to a resource's stored configs (or only
// validates the result) and waits until this broker applies it. A topic
// resource names a topic; a broker resource a broker id, or is empty for
// the cluster-wide default (Kafka's --entity-default). The change is
// logged with the client that asked for it.
func (b *Broker) alterConfigs(ctx context.Context, r *request, typ kmsg.ConfigResourceType, name string, validateOnly bool, mutate func(cur map[string]string, kind configKind) (map[string]string, error)) error {
	// ALTER_CONFIGS on the topic, or on the cluster for a broker.
	if err := r.authorizeConfigs(acl.AlterConfigs, typ, name); err != nil {
		return err
	}
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
		return b.alterTopicConfigs(ctx, r, name, validateOnly, mutate)
	case kmsg.ConfigResourceTypeBroker:
		return b.alterBrokerConfigs(ctx, r, name, validateOnly, mutate)
	default:
		return fmt.Errorf("%w: unsupported config resource type %d", errInvalidRequest, typ)
	}
}

// authorizeConfigs asks for op (DESCRIBE_CONFIGS or ALTER_CONFIGS) on the
// configs of a resource as Kafka does: on the topic, or on the cluster for
// a broker or its loggers; before whether the resource exists, and before
// whether its type is one Shale has configs for.
func (r *request) authorizeConfigs(op acl.Operation, typ kmsg.ConfigResourceType, name string) error {
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
		if !r.authorizedTopic(op, name) {
			return errTopicAuthorization
		}
	case kmsg.ConfigResourceTypeBroker, kmsg.ConfigResourceTypeBrokerLogger:
		if !r.authorizedCluster(op) {
			return errClusterAuthorization
		}
	}
	return nil
}

func (b *Broker) alterTopicConfigs(ctx context.Context, r *request, name string, validateOnly bool, mutate func(map[string]string, configKind) (map[string]string, error)) error {
	tv := b.meta.snapshot().topics[name]
	if tv == nil {
		return fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	kind := b.topicConfigKind()
	checked := func(cur map[string]string) (map[string]string, error) {
		next, err := mutate(cur, kind)
		if err != nil {
			return nil, err
		}
		if err := checkTopicConfigs(cur, next, b.checkedDefaults()); err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
		}
		if err := checkDraining(tv, cur, next, b.cfg.TopicDefaults); err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
		}
		return next, nil
	}
	if validateOnly {
		_, err := checked(maps.Clone(tv.configs))
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

// checkDraining refuses to drop remote.log.delete.on.disable from a topic
// whose remote storage is off while a partition's remote log may still be
// being deleted (it is not marked unarchived): its tier would close with
// the drain half done, and remote storage turned on later would go on from
// the half-deleted manifest, whose log start is past what the local logs
// still hold. Turning remote storage on again instead stops the drain
// safely.
func checkDraining(tv *topicView, cur, next, broker map[string]string) error {
	on := func(name string, m map[string]string) bool {
		v, _ := configValue(name, m, broker)
		return v == "true"
	}
	if on("remote.storage.enable", next) || on("remote.log.delete.on.disable", next) ||
		on("remote.storage.enable", cur) || !on("remote.log.delete.on.disable", cur) {
		return nil
	}
	for _, pv := range tv.partitions {
		if !pv.unarchived {
			return fmt.Errorf("remote.log.delete.on.disable stays set while the topic's remote log is being deleted (partition %d is not done); set remote.storage.enable=true to stop deleting it", pv.index)
		}
	}
	return nil
}

func (b *Broker) alterBrokerConfigs(ctx context.Context, r *request, name string, validateOnly bool, mutate func(map[string]string, configKind) (map[string]string, error)) error {
	id := defaultBrokerConfigs
	if name != "" {
		n, err := strconv.ParseInt(name, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: broker resource name %q is not a broker id (or empty, for the cluster-wide default)", errInvalidRequest, name)
		}
		id = int32(n)
	}
	if validateOnly {
		_, err := mutate(maps.Clone(b.meta.snapshot().brokerConfigs[id]), brokerConfigKind)
		return err
	}
	var before, after map[string]string
	rev, err := b.meta.updateBrokerConfigs(ctx, id, func(cur map[string]string) (map[string]string, error) {
		next, err := mutate(cur, brokerConfigKind)
		before, after = cur, next
		return next, err
	})
	if err != nil {
		return err
	}
	entity := name
	if entity == "" {
		entity = "default"
	}
	b.log.Info("broker configs changed", append([]any{"broker", entity, "changes", configChanges(before, after)}, r.clientAttrs()...)...)
	return b.waitApplied(ctx, rev)
}

// replaceConfigs is AlterConfigs' change: the configs named, all others
// back to their defaults. A config without a value is skipped.
func replaceConfigs(configs []kmsg.AlterConfigsRequestResourceConfig, kind configKind) (map[string]string, error) {
	next := map[string]string{}
	for _, c := range configs {
		if c.Value == nil {
			continue
		}
		if err := kind.validate(c.Name, *c.Value); err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
		}
		next[c.Name] = *c.Value
	}
	return next, nil
}

// The operations of IncrementalAlterConfigs.
const (
	opSet      = 0
	opDelete   = 1
	opAppend   = 2
	opSubtract = 3
)

// applyIncremental applies SET/DELETE/APPEND/SUBTRACT operations to a copy
// of a resource's configs.
func applyIncremental(cur map[string]string, ops []kmsg.IncrementalAlterConfigsRequestResourceConfig, kind configKind) (map[string]string, error) {
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]string{}
	}
	seen := map[string]bool{}
	for _, op := range ops {
		if seen[op.Name] {
			return nil, fmt.Errorf("%w: config %s appears more than once", errInvalidRequest, op.Name)
		}
		seen[op.Name] = true
		known, list := kind.listType(op.Name)
		if !known {
			if err := kind.validate(op.Name, ""); err != nil {
				return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
			}
			return nil, fmt.Errorf("%w: unknown %s config name: %s", errInvalidConfig, kind.what, op.Name)
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
			if !list {
				return nil, fmt.Errorf("%w: %s is not a list; APPEND and SUBTRACT apply to lists", errInvalidConfig, op.Name)
			}
			if op.Value == nil {
				return nil, fmt.Errorf("%w: %s without a value", errInvalidConfig, op.Name)
			}
			items := splitList(kind.effective(op.Name, next))
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
			if err := kind.validate(op.Name, v); err != nil {
				return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
			}
		}
	}
	return next, nil
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

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// checkedDefaults are the broker's topic defaults as checkTopicConfigs
// sees them: on a broker without an object store no topic is tiered,
// whatever its remote.storage.enable says, so that none has a remote log to
// delete before it may be compacted.
func (b *Broker) checkedDefaults() map[string]string {
	if b.tier != nil {
		return b.cfg.TopicDefaults
	}
	d := maps.Clone(b.cfg.TopicDefaults)
	if d == nil {
		d = map[string]string{}
	}
	d["remote.log.storage.system.enable"] = "false"
	return d
}
