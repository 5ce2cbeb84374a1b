package group

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config holds the coordinator's settings. Field comments give Kafka's
// broker config name; Set accepts those names.
type Config struct {
	MinSessionTimeout     time.Duration // group.min.session.timeout.ms, default 6000
	MaxSessionTimeout     time.Duration // group.max.session.timeout.ms, default 1800000
	InitialRebalanceDelay time.Duration // group.initial.rebalance.delay.ms, default 3000 (zero is legal: no delay)
	MaxSize               int           // group.max.size, default 1000 (Kafka's is MaxInt32); members and members-to-be of a classic group
	// MaxMetadataBytes bounds the protocol metadata (names and bytes of
	// every protocol each member offers) a classic group's members hold,
	// and the subscriptions (topic names and regular expression) of a
	// consumer group's members. Shale's own (group.max.metadata.bytes,
	// default 4 MiB): Kafka bounds it only by the request size.
	MaxMetadataBytes int
	// MaxGroups bounds the groups one coordinator (broker) holds across
	// its offsets partitions; a request that would create one more is
	// refused with POLICY_VIOLATION. Shale's own
	// (group.coordinator.max.groups, default 100,000).
	MaxGroups int
	// MaxOffsetsPerGroup bounds the partitions a group has committed
	// offsets for; a commit that would add one more is refused with
	// POLICY_VIOLATION for that partition. Shale's own
	// (group.max.committed.offsets, default 100,000).
	MaxOffsetsPerGroup int

	OffsetsRetention              time.Duration // offsets.retention.minutes, default 10080 (7 days)
	OffsetsRetentionCheckInterval time.Duration // offsets.retention.check.interval.ms, default 600000
	OffsetMetadataMaxBytes        int           // offset.metadata.max.bytes, default 4096
	OffsetsTopicNumPartitions     int32         // offsets.topic.num.partitions, default 50
	OffsetCommitTimeout           time.Duration // offsets.commit.timeout.ms, default 5000
	// MaxRecordBytes bounds one record of the offsets topic (a group's
	// metadata with every member's subscription and assignment); Kafka's
	// bound is the topic's max.message.bytes, default 1048588.
	MaxRecordBytes int

	ConsumerHeartbeatInterval time.Duration // group.consumer.heartbeat.interval.ms, default 5000
	ConsumerSessionTimeout    time.Duration // group.consumer.session.timeout.ms, default 45000
	ConsumerMaxSize           int           // group.consumer.max.size, default 1000 (Kafka's is MaxInt32)
	ConsumerAssignors         []string      // group.consumer.assignors, default uniform,range (the first is the default)

	// SnapshotMinBytes is Shale's own: an offsets partition's log may
	// grow to twice its live state plus this many bytes before the
	// coordinator appends a snapshot of the live state and deletes the
	// log before it. Default 16 MiB.
	SnapshotMinBytes int64
}

// DefaultConfig returns Kafka's defaults, except for the bounds on what
// clients can make the coordinator hold (group.max.size,
// group.consumer.max.size and Shale's own bounds).
func DefaultConfig() Config {
	return Config{
		MinSessionTimeout:             6 * time.Second,
		MaxSessionTimeout:             30 * time.Minute,
		InitialRebalanceDelay:         3 * time.Second,
		MaxSize:                       1000,
		MaxMetadataBytes:              4 << 20,
		MaxGroups:                     100_000,
		MaxOffsetsPerGroup:            100_000,
		OffsetsRetention:              7 * 24 * time.Hour,
		OffsetsRetentionCheckInterval: 10 * time.Minute,
		OffsetMetadataMaxBytes:        4096,
		OffsetsTopicNumPartitions:     50,
		OffsetCommitTimeout:           5 * time.Second,
		MaxRecordBytes:                1048588,
		ConsumerHeartbeatInterval:     5 * time.Second,
		ConsumerSessionTimeout:        45 * time.Second,
		ConsumerMaxSize:               1000,
		ConsumerAssignors:             []string{"uniform", "range"},
		SnapshotMinBytes:              16 << 20,
	}
}

// knownAssignors are the server-side assignors the coordinator implements.
var knownAssignors = []string{"uniform", "range"}

// configKey maps one Kafka config name onto a field.
type configKey struct {
	name string
	set  func(c *Config, v string) error
}

func msField(get func(c *Config) *time.Duration, unit time.Duration, min int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < min {
			return fmt.Errorf("%q is not an integer >= %d", v, min)
		}
		*get(c) = time.Duration(n) * unit
		return nil
	}
}

func intField(get func(c *Config) *int, min int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < min {
			return fmt.Errorf("%q is not an integer >= %d", v, min)
		}
		*get(c) = int(n)
		return nil
	}
}

var configKeys = []configKey{
	{"group.min.session.timeout.ms", msField(func(c *Config) *time.Duration { return &c.MinSessionTimeout }, time.Millisecond, 1)},
	{"group.max.session.timeout.ms", msField(func(c *Config) *time.Duration { return &c.MaxSessionTimeout }, time.Millisecond, 1)},
	{"group.initial.rebalance.delay.ms", msField(func(c *Config) *time.Duration { return &c.InitialRebalanceDelay }, time.Millisecond, 0)},
	{"group.max.size", intField(func(c *Config) *int { return &c.MaxSize }, 1)},
	{"group.max.metadata.bytes", intField(func(c *Config) *int { return &c.MaxMetadataBytes }, 1)},
	{"group.coordinator.max.groups", intField(func(c *Config) *int { return &c.MaxGroups }, 1)},
	{"group.max.committed.offsets", intField(func(c *Config) *int { return &c.MaxOffsetsPerGroup }, 1)},
	{"offsets.retention.minutes", msField(func(c *Config) *time.Duration { return &c.OffsetsRetention }, time.Minute, 1)},
	{"offsets.retention.check.interval.ms", msField(func(c *Config) *time.Duration { return &c.OffsetsRetentionCheckInterval }, time.Millisecond, 1)},
	{"offset.metadata.max.bytes", intField(func(c *Config) *int { return &c.OffsetMetadataMaxBytes }, 0)},
	{"offsets.topic.num.partitions", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not an integer >= 1", v)
		}
		c.OffsetsTopicNumPartitions = int32(n)
		return nil
	}},
	{"offsets.commit.timeout.ms", msField(func(c *Config) *time.Duration { return &c.OffsetCommitTimeout }, time.Millisecond, 1)},
	{"group.consumer.heartbeat.interval.ms", msField(func(c *Config) *time.Duration { return &c.ConsumerHeartbeatInterval }, time.Millisecond, 1)},
	{"group.consumer.session.timeout.ms", msField(func(c *Config) *time.Duration { return &c.ConsumerSessionTimeout }, time.Millisecond, 1)},
	{"group.consumer.max.size", intField(func(c *Config) *int { return &c.ConsumerMaxSize }, 1)},
	{"group.consumer.assignors", func(c *Config, v string) error {
		var names []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				names = append(names, s)
			}
		}
		c.ConsumerAssignors = names
		return nil
	}},
}

// Set changes the field named by a Kafka config name. Unknown names fail.
func (c *Config) Set(name, value string) error {
	for _, k := range configKeys {
		if k.name == name {
			if err := k.set(c, value); err != nil {
				return fmt.Errorf("group: %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("group: unknown config %q", name)
}

// Validate checks the settings.
func (c *Config) Validate() error {
	checks := []struct {
		bad bool
		msg string
	}{
		{c.MinSessionTimeout <= 0, "group.min.session.timeout.ms must be positive"},
		{c.MaxSessionTimeout < c.MinSessionTimeout, "group.max.session.timeout.ms is below group.min.session.timeout.ms"},
		{c.InitialRebalanceDelay < 0, "group.initial.rebalance.delay.ms must not be negative"},
		{c.MaxSize < 1, "group.max.size must be at least 1"},
		{c.MaxMetadataBytes < 1, "group.max.metadata.bytes must be at least 1"},
		{c.MaxGroups < 1, "group.coordinator.max.groups must be at least 1"},
		{c.MaxOffsetsPerGroup < 1, "group.max.committed.offsets must be at least 1"},
		{c.OffsetsRetention <= 0, "offsets.retention.minutes must be positive"},
		{c.OffsetsRetentionCheckInterval <= 0, "offsets.retention.check.interval.ms must be positive"},
		{c.OffsetMetadataMaxBytes < 0, "offset.metadata.max.bytes must not be negative"},
		{c.OffsetsTopicNumPartitions < 1, "offsets.topic.num.partitions must be at least 1"},
		{c.OffsetCommitTimeout <= 0, "offsets.commit.timeout.ms must be positive"},
		{c.MaxRecordBytes < 1024, "the offsets topic record limit must be at least 1024 bytes"},
		{c.ConsumerHeartbeatInterval <= 0, "group.consumer.heartbeat.interval.ms must be positive"},
		{c.ConsumerSessionTimeout <= c.ConsumerHeartbeatInterval, "group.consumer.session.timeout.ms must exceed the heartbeat interval"},
		{c.ConsumerMaxSize < 1, "group.consumer.max.size must be at least 1"},
		{len(c.ConsumerAssignors) == 0, "group.consumer.assignors must name at least one assignor"},
		{c.SnapshotMinBytes < 0, "the snapshot floor must not be negative"},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("group: %s", ch.msg)
		}
	}
	for _, a := range c.ConsumerAssignors {
		if !slices.Contains(knownAssignors, a) {
			return fmt.Errorf("group: unknown assignor %q in group.consumer.assignors (known: %s)", a, strings.Join(knownAssignors, ", "))
		}
	}
	return nil
}
