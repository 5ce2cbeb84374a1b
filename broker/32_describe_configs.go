package broker

import (
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	// Kafka 4 dropped DescribeConfigs v0.
	handler(kmsg.DescribeConfigs, 1, 4, handleDescribeConfigs)
}

func handleDescribeConfigs(b *Broker, r *request, req *kmsg.DescribeConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	view := b.meta.snapshot()
	for _, res := range req.Resources {
		out := kmsg.NewDescribeConfigsResponseResource()
		out.ResourceType, out.ResourceName = res.ResourceType, res.ResourceName
		wanted := func(name string) bool {
			if res.ConfigNames == nil {
				return true
			}
			for _, n := range res.ConfigNames {
				if n == name {
					return true
				}
			}
			return false
		}
		// DESCRIBE_CONFIGS on the topic, or on the cluster for a broker.
		if err := r.authorizeConfigs(acl.DescribeConfigs, res.ResourceType, res.ResourceName); err != nil {
			out.ErrorCode, out.ErrorMessage = kafkaError(err), errorMessage(err)
			resp.Resources = append(resp.Resources, out)
			continue
		}
		switch res.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			tv := view.topics[res.ResourceName]
			if tv == nil {
				out.ErrorCode = kerr.UnknownTopicOrPartition.Code
				break
			}
			for _, def := range topicConfigDefs {
				if !wanted(def.name) {
					continue
				}
				v, src := configValue(def.name, tv.configs, b.cfg.TopicDefaults)
				c := describedConfig(req, def.name, v, src, def.typ, def.doc, false)
				if req.IncludeSynonyms {
					c.ConfigSynonyms = topicConfigSynonyms(def, tv.configs, b.cfg.TopicDefaults)
				}
				out.Configs = append(out.Configs, c)
			}
		case kmsg.ConfigResourceTypeBroker:
			if res.ResourceName == "" {
				// The cluster-wide default: only the dynamic
				// defaults set, as Kafka describes it.
				for _, def := range dynamicBrokerConfigDefs {
					if v, ok := view.brokerConfigs[defaultBrokerConfigs][def.name]; ok && wanted(def.name) {
						out.Configs = append(out.Configs, describedConfig(req, def.name, v, kmsg.ConfigSourceDynamicDefaultBrokerConfig, def.typ, def.doc, false))
					}
				}
				break
			}
			id, err := strconv.ParseInt(res.ResourceName, 10, 32)
			if err != nil || int32(id) != b.cfg.NodeID {
				out.ErrorCode = kerr.InvalidRequest.Code
				out.ErrorMessage = kmsg.StringPtr("this broker describes only its own configs (node.id " + strconv.Itoa(int(b.cfg.NodeID)) + ")")
				break
			}
			for _, e := range append(b.cfg.describe(), b.cfg.describeAuthorizer()...) {
				if wanted(e.name) {
					out.Configs = append(out.Configs, describedConfig(req, e.name, e.value, kmsg.ConfigSourceStaticBrokerConfig, e.typ, "", true))
				}
			}
			for i := range dynamicBrokerConfigDefs {
				def := &dynamicBrokerConfigDefs[i]
				if !wanted(def.name) {
					continue
				}
				v, src := brokerConfigValue(view, b.cfg.NodeID, &b.cfg, def)
				c := describedConfig(req, def.name, v, src, def.typ, def.doc, false)
				if req.IncludeSynonyms {
					c.ConfigSynonyms = brokerConfigSynonyms(view, b.cfg.NodeID, &b.cfg, def)
				}
				out.Configs = append(out.Configs, c)
			}
		default:
			out.ErrorCode = kerr.InvalidRequest.Code
			out.ErrorMessage = kmsg.StringPtr("unsupported config resource type " + strconv.Itoa(int(res.ResourceType)))
		}
		resp.Resources = append(resp.Resources, out)
	}
	return resp
}

// describeAuthorizer lists the broker's ACL settings for DescribeConfigs,
// read-only as the other static configs Config.describe lists.
func (c *Config) describeAuthorizer() []describedEntry {
	class := ""
	if c.ACLs {
		class = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
	}
	return []describedEntry{
		{"authorizer.class.name", class, kmsg.ConfigTypeClass},
		{"super.users", strings.Join(c.SuperUsers, ";"), kmsg.ConfigTypeString},
		{"allow.everyone.if.no.acl.found", strconv.FormatBool(c.AllowEveryoneIfNoACLFound), kmsg.ConfigTypeBoolean},
	}
}

func describedConfig(req *kmsg.DescribeConfigsRequest, name, value string, src kmsg.ConfigSource, typ kmsg.ConfigType, doc string, readOnly bool) kmsg.DescribeConfigsResponseResourceConfig {
	c := kmsg.NewDescribeConfigsResponseResourceConfig()
	c.Name = name
	v := value
	c.Value = &v
	c.ReadOnly = readOnly
	c.Source = src
	c.IsDefault = src == kmsg.ConfigSourceDefaultConfig
	c.ConfigType = typ
	if req.IncludeDocumentation && doc != "" {
		d := doc
		c.Documentation = &d
	}
	return c
}

// topicConfigSynonyms lists where a topic config's value may come from, most
// specific first, as Kafka's DescribeConfigs does with IncludeSynonyms.
func topicConfigSynonyms(def topicConfigDef, topic, broker map[string]string) []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym {
	var out []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym
	add := func(name, value string, src kmsg.ConfigSource) {
		s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
		v := value
		s.Name, s.Value, s.Source = name, &v, src
		out = append(out, s)
	}
	if v, ok := topic[def.name]; ok {
		add(def.name, v, kmsg.ConfigSourceDynamicTopicConfig)
	}
	if def.synonym == "" {
		add(def.name, def.def, kmsg.ConfigSourceDefaultConfig)
		return out
	}
	if v, ok := broker[def.synonym]; ok {
		add(def.synonym, v, kmsg.ConfigSourceStaticBrokerConfig)
	}
	dflt := def.def
	if def.name == "remote.storage.enable" && compacted(topic, broker) {
		dflt = "false" // as configValue resolves it: compacted topics are not tiered by default
	}
	add(def.synonym, dflt, kmsg.ConfigSourceDefaultConfig)
	return out
}
