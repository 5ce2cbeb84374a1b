package broker

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestCleanupPolicyValidation: cleanup.policy takes delete, compact or
// both, in either order and with spaces around the items, as Kafka's does;
// an unknown or empty item is refused.
func TestCleanupPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		value        string
		compact, del bool
	}{
		{"delete", false, true},
		{"compact", true, false},
		{"compact,delete", true, true},
		{"delete,compact", true, true},
		{" compact , delete ", true, true},
		{"compact,compact", true, false},
	} {
		compact, del, err := parseCleanupPolicy(tc.value)
		if err != nil || compact != tc.compact || del != tc.del {
			t.Errorf("%q: compact %v delete %v err %v, want %v %v", tc.value, compact, del, err, tc.compact, tc.del)
		}
		if err := validateTopicConfig("cleanup.policy", tc.value); err != nil {
			t.Errorf("%q refused: %v", tc.value, err)
		}
	}
	for _, bad := range []string{"", "compact,bogus", "bogus", "compact,", ",delete", "compact,,delete", "Compact", "compact delete"} {
		if err := validateTopicConfig("cleanup.policy", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestCompactOnlyLogConfigKeepsEverything: a topic whose cleanup.policy
// lacks delete applies no time or size retention, locally or in total,
// whatever retention.ms/bytes say; with delete too they apply as usual.
// The cleaner's configs are parsed, the ratio as a double.
func TestCompactOnlyLogConfigKeepsEverything(t *testing.T) {
	c := parseTopicConfig(map[string]string{
		"cleanup.policy": "compact", "retention.ms": "3600000", "retention.bytes": "1000000",
		"local.retention.ms": "60000", "delete.retention.ms": "1000", "min.compaction.lag.ms": "2000",
		"max.compaction.lag.ms": "3000", "min.cleanable.dirty.ratio": "0.25",
	}, nil)
	if !c.compact || c.deletePolicy {
		t.Fatalf("compact %v delete %v", c.compact, c.deletePolicy)
	}
	for _, tiered := range []bool{false, true} {
		if l := c.logConfig(tiered); l.RetentionMs != -1 || l.RetentionBytes != -1 {
			t.Errorf("logConfig(tiered=%v): retention.ms %d retention.bytes %d, want -1 -1", tiered, l.RetentionMs, l.RetentionBytes)
		}
	}
	if c.retentionMs != -1 || c.retentionBytes != -1 || c.localRetentionMs != -1 || c.localRetentionBytes != -1 {
		t.Errorf("retention %d/%d, local %d/%d, want all -1", c.retentionMs, c.retentionBytes, c.localRetentionMs, c.localRetentionBytes)
	}
	if c.deleteRetentionMs != 1000 || c.minCompactionLagMs != 2000 || c.maxCompactionLagMs != 3000 || c.minCleanableRatio != 0.25 {
		t.Errorf("cleaner configs %d %d %d %g", c.deleteRetentionMs, c.minCompactionLagMs, c.maxCompactionLagMs, c.minCleanableRatio)
	}
	if c.remoteStorage {
		t.Error("a compacted topic tiers by default")
	}

	both := parseTopicConfig(map[string]string{"cleanup.policy": "delete, compact", "retention.ms": "3600000", "retention.bytes": "1000000"}, nil)
	if !both.compact || !both.deletePolicy {
		t.Fatalf("compact,delete: compact %v delete %v", both.compact, both.deletePolicy)
	}
	if l := both.logConfig(false); l.RetentionMs != 3600000 || l.RetentionBytes != 1000000 || both.retentionMs != 3600000 || both.retentionBytes != 1000000 {
		t.Errorf("compact,delete: log retention %d/%d, total %d/%d", l.RetentionMs, l.RetentionBytes, both.retentionMs, both.retentionBytes)
	}

	// Defaults (Kafka's), and the broker's default policy.
	def := parseTopicConfig(nil, nil)
	if def.compact || !def.deletePolicy || def.deleteRetentionMs != 86400000 || def.minCompactionLagMs != 0 ||
		def.maxCompactionLagMs != maxLong || def.minCleanableRatio != 0.5 || def.log.RetentionMs != 604800000 || !def.remoteStorage {
		t.Errorf("defaults: %+v", def)
	}
	byBroker := parseTopicConfig(nil, map[string]string{"log.cleanup.policy": "compact", "log.cleaner.min.cleanable.ratio": "0.1"})
	if !byBroker.compact || byBroker.deletePolicy || byBroker.log.RetentionMs != -1 || byBroker.minCleanableRatio != 0.1 || byBroker.remoteStorage {
		t.Errorf("broker default compact: %+v", byBroker)
	}
}

// TestCompactRemoteStorageDefault: Shale's remote.storage.enable default
// (true) is false on a compacted topic, as Kafka's is on every topic; a
// value the topic or the broker sets is kept as it is.
func TestCompactRemoteStorageDefault(t *testing.T) {
	for _, tc := range []struct {
		topic, broker map[string]string
		want          string
		src           kmsg.ConfigSource
	}{
		{nil, nil, "true", kmsg.ConfigSourceDefaultConfig},
		{map[string]string{"cleanup.policy": "compact"}, nil, "false", kmsg.ConfigSourceDefaultConfig},
		{map[string]string{"cleanup.policy": "delete,compact"}, nil, "false", kmsg.ConfigSourceDefaultConfig},
		{nil, map[string]string{"log.cleanup.policy": "compact"}, "false", kmsg.ConfigSourceDefaultConfig},
		{map[string]string{"cleanup.policy": "delete"}, map[string]string{"log.cleanup.policy": "compact"}, "true", kmsg.ConfigSourceDefaultConfig},
		{map[string]string{"cleanup.policy": "compact", "remote.storage.enable": "true"}, nil, "true", kmsg.ConfigSourceDynamicTopicConfig},
		{map[string]string{"cleanup.policy": "compact"}, map[string]string{"remote.log.storage.system.enable": "true"}, "true", kmsg.ConfigSourceStaticBrokerConfig},
	} {
		v, src := configValue("remote.storage.enable", tc.topic, tc.broker)
		if v != tc.want || src != tc.src {
			t.Errorf("topic %v broker %v: %s (%v), want %s (%v)", tc.topic, tc.broker, v, src, tc.want, tc.src)
		}
	}
}

// TestCompactTieredConfigChecks: checkTopicConfigs lets compacted topics
// be tiered when remote.storage.enable says so (the topic's or the
// broker's), and refuses only a change that would make a tiered topic
// compacted without saying whether it stays tiered (the default on a
// compacted topic is untiered: its remote log would be left unreachable);
// turning its remote storage off needs, KIP-950, its remote log deleted.
func TestCompactTieredConfigChecks(t *testing.T) {
	m := func(kv ...string) map[string]string {
		out := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for name, tc := range map[string]struct {
		cur, next, broker map[string]string
		refused           bool
	}{
		"create compact":                        {nil, m("cleanup.policy", "compact"), nil, false},
		"create compact,delete":                 {nil, m("cleanup.policy", "compact,delete"), nil, false},
		"create compact tiered":                 {nil, m("cleanup.policy", "compact", "remote.storage.enable", "true"), nil, false},
		"create compact,delete tiered":          {nil, m("cleanup.policy", "delete,compact", "remote.storage.enable", "true"), nil, false},
		"create compact untiered":               {nil, m("cleanup.policy", "compact", "remote.storage.enable", "false"), nil, false},
		"create compact, broker tiers":          {nil, m("cleanup.policy", "compact"), m("remote.log.storage.system.enable", "true"), false},
		"create tiered, broker compacts":        {nil, m("remote.storage.enable", "true"), m("log.cleanup.policy", "compact"), false},
		"create default, broker compacts":       {nil, m(), m("log.cleanup.policy", "compact"), false},
		"alter tiered to compact":               {m("remote.storage.enable", "true"), m("remote.storage.enable", "true", "cleanup.policy", "compact"), nil, false},
		"alter default-tiered to compact":       {m(), m("cleanup.policy", "compact"), nil, true},
		"alter tiered to compact, off, kept":    {m(), m("cleanup.policy", "compact", "remote.storage.enable", "false"), nil, true},
		"alter tiered to compact, off, deleted": {m(), m("cleanup.policy", "compact", "remote.storage.enable", "false", "remote.log.delete.on.disable", "true"), nil, false},
		"alter untiered to compact":             {m("remote.storage.enable", "false"), m("remote.storage.enable", "false", "cleanup.policy", "compact"), nil, false},
		"alter compact to tiered":               {m("cleanup.policy", "compact"), m("cleanup.policy", "compact", "remote.storage.enable", "true"), nil, false},
		"alter compact, another config":         {m("cleanup.policy", "compact"), m("cleanup.policy", "compact", "retention.ms", "1000"), nil, false},
		"alter compact back to delete":          {m("cleanup.policy", "compact"), m("cleanup.policy", "delete"), nil, false},
	} {
		err := checkTopicConfigs(tc.cur, tc.next, tc.broker)
		if (err != nil) != tc.refused {
			t.Errorf("%s: %v, refused %v", name, err, tc.refused)
		}
		if err != nil && strings.Contains(name, "compact") && !strings.Contains(name, "kept") &&
			!strings.HasPrefix(err.Error(), "Tiered storage is not supported on compacted topics (cleanup.policy=compact)") {
			t.Errorf("%s: message %q", name, err)
		}
	}
}
