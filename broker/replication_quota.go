package broker

import (
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// Replication quotas (Kafka's KIP-73). A broker has two rates, dynamic
// broker configs set with kafka-configs --entity-type brokers (per broker
// id, or for all brokers with --entity-default) and kept in etcd:
// leader.replication.throttled.rate bounds what it sends as leader to
// throttled replicas, follower.replication.throttled.rate what it fetches
// as follower for its throttled replicas, all partitions together. A
// topic names its throttled replicas in
// leader.replication.throttled.replicas and
// follower.replication.throttled.replicas ("partition:brokerId,..." with
// the broker on which the throttle applies, or "*").
//
// Kafka's brokers throttle only the replicas the lists name, and
// kafka-reassign-partitions --execute --throttle writes them: the moving
// partitions' current replicas as leader-throttled, the replicas it adds
// as follower-throttled, and both rates on every broker involved;
// --verify deletes them all once every move is done. Shale honours them
// the same way. It differs in one thing: while a broker has a leader rate
// in force (dynamic, or static from its flags), it also throttles, as
// leader, the replicas a reassignment is adding to its partitions, listed
// or not, so that a rate alone bounds every reassignment's copy. With no
// leader rate (as after --verify) that extra throttle is gone.
//
// As in Kafka, the bytes of every throttled replica count against the
// rate, but only replicas out of the ISR are held back: when the rate is
// spent their partitions are left out of the fetch (the leader's response,
// or the follower's request), never delayed, so a throttle cannot push an
// in-sync follower out of the ISR.

// defaultBrokerConfigs is the entity of the cluster-wide default dynamic
// broker configs (a broker resource with an empty name).
const defaultBrokerConfigs = metadata.DefaultBrokerConfigs

// dynamicBrokerConfigDef is a broker config that can be changed while the
// cluster runs.
type dynamicBrokerConfigDef struct {
	name string
	typ  kmsg.ConfigType
	// def is Kafka's default, shown when nothing sets the config.
	def      string
	validate func(string) error
	// static is the value from the broker's own configuration (flags,
	// environment); 0: none.
	static func(*Config) int64
	doc    string
}

var dynamicBrokerConfigDefs = []dynamicBrokerConfigDef{
	{"follower.replication.throttled.rate", kmsg.ConfigTypeLong, "9223372036854775807", intRange(1, maxLong),
		func(c *Config) int64 { return c.FollowerReplicationThrottledRate },
		"Bytes per second this broker fetches at most, as follower, for its throttled replicas that are out of the ISR (follower.replication.throttled.replicas), all partitions together."},
	{"leader.replication.throttled.rate", kmsg.ConfigTypeLong, "9223372036854775807", intRange(1, maxLong),
		func(c *Config) int64 { return c.LeaderReplicationThrottledRate },
		"Bytes per second this broker sends at most, as leader, to throttled replicas out of the ISR (leader.replication.throttled.replicas, and replicas a reassignment adds), all partitions together."},
}

var dynamicBrokerConfigIndex = func() map[string]*dynamicBrokerConfigDef {
	m := make(map[string]*dynamicBrokerConfigDef, len(dynamicBrokerConfigDefs))
	for i := range dynamicBrokerConfigDefs {
		m[dynamicBrokerConfigDefs[i].name] = &dynamicBrokerConfigDefs[i]
	}
	return m
}()

// validateBrokerConfig checks one dynamic broker config. The error
// message is returned to the client.
func validateBrokerConfig(name, value string) error {
	def, ok := dynamicBrokerConfigIndex[name]
	if !ok {
		return fmt.Errorf("%s is not a broker config that can be changed dynamically; those are %s and %s", name, dynamicBrokerConfigDefs[0].name, dynamicBrokerConfigDefs[1].name)
	}
	if err := def.validate(value); err != nil {
		return fmt.Errorf("invalid value for %s: %w (delete the config to remove the throttle)", name, err)
	}
	return nil
}

// brokerConfigValue resolves a dynamic broker config of broker id as Kafka
// does: the broker's own dynamic value, else the cluster-wide dynamic
// default, else the broker's static configuration, else Kafka's default.
func brokerConfigValue(view *metaView, id int32, cfg *Config, def *dynamicBrokerConfigDef) (string, kmsg.ConfigSource) {
	if v, ok := view.brokerConfigs[id][def.name]; ok && def.validate(v) == nil {
		return v, kmsg.ConfigSourceDynamicBrokerConfig
	}
	if v, ok := view.brokerConfigs[defaultBrokerConfigs][def.name]; ok && def.validate(v) == nil {
		return v, kmsg.ConfigSourceDynamicDefaultBrokerConfig
	}
	if s := def.static(cfg); s > 0 {
		return strconv.FormatInt(s, 10), kmsg.ConfigSourceStaticBrokerConfig
	}
	return def.def, kmsg.ConfigSourceDefaultConfig
}

// brokerConfigSynonyms lists where a dynamic broker config's value may
// come from, most specific first (DescribeConfigs' IncludeSynonyms).
func brokerConfigSynonyms(view *metaView, id int32, cfg *Config, def *dynamicBrokerConfigDef) []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym {
	var out []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym
	add := func(value string, src kmsg.ConfigSource) {
		s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
		v := value
		s.Name, s.Value, s.Source = def.name, &v, src
		out = append(out, s)
	}
	if v, ok := view.brokerConfigs[id][def.name]; ok {
		add(v, kmsg.ConfigSourceDynamicBrokerConfig)
	}
	if v, ok := view.brokerConfigs[defaultBrokerConfigs][def.name]; ok {
		add(v, kmsg.ConfigSourceDynamicDefaultBrokerConfig)
	}
	if s := def.static(cfg); s > 0 {
		add(strconv.FormatInt(s, 10), kmsg.ConfigSourceStaticBrokerConfig)
	}
	add(def.def, kmsg.ConfigSourceDefaultConfig)
	return out
}

// replicationQuotas are this broker's two throttles and the throttled
// replica lists of the topics, as of the last metadata applied.
type replicationQuotas struct {
	self             int32
	cfg              *Config
	leader, follower *replication.Throttle
	lists            atomic.Pointer[throttledLists]
}

// throttledLists are the topics' parsed throttled replica lists; topics
// without one are absent.
type throttledLists struct {
	leader, follower map[string]replication.ThrottledReplicas
}

func newReplicationQuotas(cfg *Config, reg prometheus.Registerer) *replicationQuotas {
	q := &replicationQuotas{self: cfg.NodeID, cfg: cfg,
		leader:   replication.NewThrottle(cfg.LeaderReplicationThrottledRate),
		follower: replication.NewThrottle(cfg.FollowerReplicationThrottledRate)}
	q.lists.Store(&throttledLists{})
	if reg != nil {
		for _, side := range []struct {
			name string
			th   *replication.Throttle
		}{{"leader", q.leader}, {"follower", q.follower}} {
			th, labels := side.th, prometheus.Labels{"side": side.name}
			reg.MustRegister(
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shale_replication_throttled_bytes_total", ConstLabels: labels,
					Help: "Bytes replicated for throttled replicas (KIP-73): sent as leader, or fetched as follower. They count against the side's replication.throttled.rate."},
					func() float64 { return float64(th.Charged()) }),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shale_replication_throttled_refusals_total", ConstLabels: labels,
					Help: "Times a throttled replica out of the ISR was left out of a replica fetch because the side's replication.throttled.rate was spent."},
					func() float64 { return float64(th.Refused()) }),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shale_replication_throttled_rate_bytes", ConstLabels: labels,
					Help: "The side's replication.throttled.rate in force, in bytes per second (0: no bound)."},
					func() float64 { return float64(th.Rate()) }),
			)
		}
	}
	return q
}

// apply takes the rates and throttled replica lists of view.
func (q *replicationQuotas) apply(view *metaView) {
	rate := func(name string) int64 {
		v, src := brokerConfigValue(view, q.self, q.cfg, dynamicBrokerConfigIndex[name])
		if src == kmsg.ConfigSourceDefaultConfig {
			return 0
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		if n == maxLong {
			return 0 // Kafka's "unlimited"
		}
		return n
	}
	q.leader.SetRate(rate("leader.replication.throttled.rate"))
	q.follower.SetRate(rate("follower.replication.throttled.rate"))
	lists := &throttledLists{leader: map[string]replication.ThrottledReplicas{}, follower: map[string]replication.ThrottledReplicas{}}
	for name, tv := range view.topics {
		for _, side := range []struct {
			config string
			into   map[string]replication.ThrottledReplicas
		}{{"leader.replication.throttled.replicas", lists.leader}, {"follower.replication.throttled.replicas", lists.follower}} {
			// Stored values were validated; one that no longer
			// parses throttles nothing.
			if r, err := replication.ParseThrottledReplicas(tv.configs[side.config]); err == nil && !r.Empty() {
				side.into[name] = r
			}
		}
	}
	q.lists.Store(lists)
}

// leaderThrottled says, for a fetch by follower replicaID of a partition
// this broker leads, whether its bytes count against the leader rate
// (throttled) and whether they may be held back (throttled and the
// follower out of the ISR).
func (q *replicationQuotas) leaderThrottled(view *metaView, topic string, index, replicaID int32) (throttled, hold bool) {
	pv, ok := view.partition(topic, index)
	if !ok {
		return false, false
	}
	// A replica a reassignment adds is throttled while a leader rate is
	// in force, listed or not; without a rate nothing holds it back and
	// its bytes are not counted as throttled.
	throttled = slices.Contains(pv.adding, replicaID) && q.leader.Rate() > 0
	if r, ok := q.lists.Load().leader[topic]; ok && r.Contains(index, q.self) {
		throttled = true
	}
	return throttled, throttled && !slices.Contains(pv.isr, replicaID)
}

// followerThrottled is leaderThrottled for this broker's fetch, as
// follower, of a partition.
func (q *replicationQuotas) followerThrottled(view *metaView, topic string, index int32) (throttled, hold bool) {
	r, ok := q.lists.Load().follower[topic]
	if !ok || !r.Contains(index, q.self) {
		return false, false
	}
	pv, ok := view.partition(topic, index)
	return true, ok && !slices.Contains(pv.isr, q.self)
}

// partition returns the view of a topic's partition.
func (v *metaView) partition(topic string, index int32) (partitionView, bool) {
	tv := v.topics[topic]
	if tv == nil || index < 0 || int(index) >= len(tv.partitions) || tv.partitions[index].index != index {
		return partitionView{}, false
	}
	return tv.partitions[index], true
}
