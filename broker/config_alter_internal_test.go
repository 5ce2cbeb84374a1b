package broker

import (
	"errors"
	"maps"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func incOp(op int8, name string, value *string) kmsg.IncrementalAlterConfigsRequestResourceConfig {
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Op, c.Name, c.Value = kmsg.IncrementalAlterConfigOp(op), name, value
	return c
}

// TestIncrementalConfigChanges drives applyIncremental over topic and
// broker configs: the throttled replica lists are validated lists that
// APPEND and SUBTRACT edit; the throttle rates are the only dynamic
// broker configs, positive longs.
func TestIncrementalConfigChanges(t *testing.T) {
	b := &Broker{}
	topic, broker := b.topicConfigKind(), brokerConfigKind
	s := kmsg.StringPtr
	for _, tc := range []struct {
		name string
		kind configKind
		cur  map[string]string
		ops  []kmsg.IncrementalAlterConfigsRequestResourceConfig
		want map[string]string
		err  error
	}{
		{"set a list", topic, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "leader.replication.throttled.replicas", s("0:1, 1:2"))},
			map[string]string{"leader.replication.throttled.replicas": "0:1, 1:2"}, nil},
		{"wildcard", topic, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "follower.replication.throttled.replicas", s("*"))},
			map[string]string{"follower.replication.throttled.replicas": "*"}, nil},
		{"bad pair", topic, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "follower.replication.throttled.replicas", s("0-1"))},
			nil, errInvalidConfig},
		{"append and subtract", topic, map[string]string{"leader.replication.throttled.replicas": "0:1,1:2"},
			[]kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opAppend, "leader.replication.throttled.replicas", s("2:0,0:1")), incOp(opSubtract, "follower.replication.throttled.replicas", s("0:1"))},
			map[string]string{"leader.replication.throttled.replicas": "0:1,1:2,2:0", "follower.replication.throttled.replicas": ""}, nil},
		{"append a wildcard to a list", topic, map[string]string{"leader.replication.throttled.replicas": "0:1"},
			[]kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opAppend, "leader.replication.throttled.replicas", s("*"))}, nil, errInvalidConfig},
		{"unknown topic config", topic, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "leader.replication.throttled.rate", s("10"))},
			nil, errInvalidConfig},
		{"set a rate", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "leader.replication.throttled.rate", s("1048576"))},
			map[string]string{"leader.replication.throttled.rate": "1048576"}, nil},
		{"delete a rate", broker, map[string]string{"leader.replication.throttled.rate": "1", "follower.replication.throttled.rate": "2"},
			[]kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opDelete, "follower.replication.throttled.rate", nil)},
			map[string]string{"leader.replication.throttled.rate": "1"}, nil},
		{"rate zero", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "follower.replication.throttled.rate", s("0"))}, nil, errInvalidConfig},
		{"rate not a number", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "follower.replication.throttled.rate", s("10MB"))}, nil, errInvalidConfig},
		{"static broker config", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "broker.rack", s("a"))}, nil, errInvalidConfig},
		{"append to a long", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opAppend, "leader.replication.throttled.rate", s("1"))}, nil, errInvalidConfig},
		{"twice", broker, nil, []kmsg.IncrementalAlterConfigsRequestResourceConfig{incOp(opSet, "leader.replication.throttled.rate", s("1")), incOp(opDelete, "leader.replication.throttled.rate", nil)}, nil, errInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := maps.Clone(tc.cur)
			got, err := applyIncremental(cur, tc.ops, tc.kind)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err == nil && !maps.Equal(got, tc.want) {
				t.Fatalf("configs %v, want %v", got, tc.want)
			}
			if !maps.Equal(cur, tc.cur) {
				t.Fatalf("the current configs were changed: %v", cur)
			}
		})
	}
}

// TestReplaceBrokerConfigs: AlterConfigs replaces the whole set and
// validates each value against the resource's kind.
func TestReplaceBrokerConfigs(t *testing.T) {
	cfg := func(name string, value *string) kmsg.AlterConfigsRequestResourceConfig {
		c := kmsg.NewAlterConfigsRequestResourceConfig()
		c.Name, c.Value = name, value
		return c
	}
	got, err := replaceConfigs([]kmsg.AlterConfigsRequestResourceConfig{cfg("leader.replication.throttled.rate", kmsg.StringPtr("5")), cfg("follower.replication.throttled.rate", nil)}, brokerConfigKind)
	if err != nil || !maps.Equal(got, map[string]string{"leader.replication.throttled.rate": "5"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := replaceConfigs([]kmsg.AlterConfigsRequestResourceConfig{cfg("num.partitions", kmsg.StringPtr("5"))}, brokerConfigKind); !errors.Is(err, errInvalidConfig) {
		t.Fatalf("a static broker config: %v", err)
	}
}

// TestBrokerConfigValueSources: a broker's own dynamic value wins over the
// cluster-wide default, which wins over the static configuration, which
// wins over Kafka's default; the quotas take the result (Kafka's maximum
// long is no bound).
func TestBrokerConfigValueSources(t *testing.T) {
	def := dynamicBrokerConfigIndex["leader.replication.throttled.rate"]
	cfg := &Config{NodeID: 1}
	view := &metaView{brokerConfigs: map[int32]map[string]string{}}
	check := func(want string, src kmsg.ConfigSource, rate int64) {
		t.Helper()
		v, s := brokerConfigValue(view, 1, cfg, def)
		if v != want || s != src {
			t.Fatalf("%s from %v, want %s from %v", v, s, want, src)
		}
		q := newReplicationQuotas(cfg, nil)
		q.apply(view)
		if got := q.leader.Rate(); got != rate {
			t.Fatalf("leader throttle at %d, want %d", got, rate)
		}
	}
	check("9223372036854775807", kmsg.ConfigSourceDefaultConfig, 0)
	cfg.LeaderReplicationThrottledRate = 300
	check("300", kmsg.ConfigSourceStaticBrokerConfig, 300)
	view.brokerConfigs[defaultBrokerConfigs] = map[string]string{"leader.replication.throttled.rate": "200"}
	check("200", kmsg.ConfigSourceDynamicDefaultBrokerConfig, 200)
	view.brokerConfigs[2] = map[string]string{"leader.replication.throttled.rate": "50"}
	check("200", kmsg.ConfigSourceDynamicDefaultBrokerConfig, 200)
	view.brokerConfigs[1] = map[string]string{"leader.replication.throttled.rate": "9223372036854775807"}
	check("9223372036854775807", kmsg.ConfigSourceDynamicBrokerConfig, 0)
	view.brokerConfigs[1] = map[string]string{"leader.replication.throttled.rate": "bad"}
	check("200", kmsg.ConfigSourceDynamicDefaultBrokerConfig, 200)
}

// TestThrottledReplicaSelection: the leader counts the bytes of every
// throttled replica but holds back only those out of the ISR; a list
// names the broker that throttles; replicas a reassignment adds are
// throttled on the leader without a list while it has a leader rate, and
// not at all without one.
func TestThrottledReplicaSelection(t *testing.T) {
	view := &metaView{topics: map[string]*topicView{
		"listed": {name: "listed", configs: map[string]string{"leader.replication.throttled.replicas": "0:1", "follower.replication.throttled.replicas": "0:3"},
			partitions: []partitionView{{index: 0, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}}},
		"moving": {name: "moving", configs: map[string]string{},
			partitions: []partitionView{{index: 0, replicas: []int32{1, 2, 4}, isr: []int32{1, 2}, adding: []int32{4}}}},
	}}
	q := newReplicationQuotas(&Config{NodeID: 1, LeaderReplicationThrottledRate: 1 << 20}, nil)
	q.apply(view)
	unbounded := newReplicationQuotas(&Config{NodeID: 1}, nil)
	unbounded.apply(view)
	if th, hold := unbounded.leaderThrottled(view, "moving", 0, 4); th || hold {
		t.Errorf("with no leader rate, a replica a reassignment adds is throttled %v, held %v", th, hold)
	}
	if th, hold := unbounded.leaderThrottled(view, "listed", 0, 3); !th || !hold {
		t.Errorf("with no leader rate, a listed replica out of the ISR is throttled %v, held %v: want both (Kafka counts listed bytes)", th, hold)
	}
	for _, tc := range []struct {
		topic           string
		replica         int32
		throttled, hold bool
	}{
		{"listed", 2, true, false}, // in sync: counted, not held
		{"listed", 3, true, true},
		{"moving", 4, true, true}, // added by a reassignment
		{"moving", 2, false, false},
		{"absent", 3, false, false},
	} {
		if th, hold := q.leaderThrottled(view, tc.topic, 0, tc.replica); th != tc.throttled || hold != tc.hold {
			t.Errorf("leader, %s replica %d: throttled %v hold %v, want %v %v", tc.topic, tc.replica, th, hold, tc.throttled, tc.hold)
		}
	}
	// Broker 1's follower list entry is 0:3: not broker 1.
	if th, _ := q.followerThrottled(view, "listed", 0); th {
		t.Error("broker 1 throttles as follower a replica the list gives broker 3")
	}
	q3 := newReplicationQuotas(&Config{NodeID: 3}, nil)
	q3.apply(view)
	if th, hold := q3.followerThrottled(view, "listed", 0); !th || !hold {
		t.Errorf("broker 3, out of the ISR and listed: throttled %v hold %v", th, hold)
	}
	if th, _ := q3.leaderThrottled(view, "listed", 0, 2); th {
		t.Error("broker 3 throttles as leader a replica the list gives broker 1")
	}
}
