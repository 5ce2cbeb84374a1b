package txn

import (
	"fmt"
	"strconv"
	"time"
)

// Config holds the coordinator's settings. Field comments give Kafka's
// broker config name; Set accepts those names.
type Config struct {
	TransactionalIDExpiration time.Duration // transactional.id.expiration.ms, default 604800000 (7 days)
	MaxTimeout                time.Duration // transaction.max.timeout.ms, default 900000 (15 minutes)
	AbortTimedOutInterval     time.Duration // transaction.abort.timed.out.transaction.cleanup.interval.ms, default 10000
	RemoveExpiredInterval     time.Duration // transaction.remove.expired.transaction.cleanup.interval.ms, default 3600000
	NumPartitions             int32         // transaction.state.log.num.partitions, default 50
	// OffsetsTopicNumPartitions (offsets.topic.num.partitions, default
	// 50) maps AddOffsetsToTxn's group to its __consumer_offsets
	// partition; it must be the group coordinator's.
	OffsetsTopicNumPartitions int32
	// RequestTimeout (request.timeout.ms, default 30000) bounds each
	// append to the transaction state log and each WriteMarkers call.
	RequestTimeout time.Duration

	// SnapshotMinBytes is Shale's own: a transaction state partition's
	// log may grow to twice its live state plus this many bytes before
	// the coordinator appends a snapshot of the live state and deletes
	// the log before it. Default 16 MiB.
	SnapshotMinBytes int64
}

// DefaultConfig returns Kafka's defaults.
func DefaultConfig() Config {
	return Config{
		TransactionalIDExpiration: 7 * 24 * time.Hour,
		MaxTimeout:                15 * time.Minute,
		AbortTimedOutInterval:     10 * time.Second,
		RemoveExpiredInterval:     time.Hour,
		NumPartitions:             50,
		OffsetsTopicNumPartitions: 50,
		RequestTimeout:            30 * time.Second,
		SnapshotMinBytes:          16 << 20,
	}
}

type configKey struct {
	name string
	set  func(c *Config, v string) error
}

func msField(get func(c *Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not an integer >= 1", v)
		}
		*get(c) = time.Duration(n) * time.Millisecond
		return nil
	}
}

func int32Field(get func(c *Config) *int32) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not an integer >= 1", v)
		}
		*get(c) = int32(n)
		return nil
	}
}

var configKeys = []configKey{
	{"transactional.id.expiration.ms", msField(func(c *Config) *time.Duration { return &c.TransactionalIDExpiration })},
	{"transaction.max.timeout.ms", msField(func(c *Config) *time.Duration { return &c.MaxTimeout })},
	{"transaction.abort.timed.out.transaction.cleanup.interval.ms", msField(func(c *Config) *time.Duration { return &c.AbortTimedOutInterval })},
	{"transaction.remove.expired.transaction.cleanup.interval.ms", msField(func(c *Config) *time.Duration { return &c.RemoveExpiredInterval })},
	{"transaction.state.log.num.partitions", int32Field(func(c *Config) *int32 { return &c.NumPartitions })},
	{"offsets.topic.num.partitions", int32Field(func(c *Config) *int32 { return &c.OffsetsTopicNumPartitions })},
	{"request.timeout.ms", msField(func(c *Config) *time.Duration { return &c.RequestTimeout })},
}

// Set changes the field named by a Kafka config name. Unknown names fail.
func (c *Config) Set(name, value string) error {
	for _, k := range configKeys {
		if k.name == name {
			if err := k.set(c, value); err != nil {
				return fmt.Errorf("txn: %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("txn: unknown config %q", name)
}

// Validate checks the settings.
func (c *Config) Validate() error {
	checks := []struct {
		bad bool
		msg string
	}{
		{c.TransactionalIDExpiration <= 0, "transactional.id.expiration.ms must be positive"},
		{c.TransactionalIDExpiration.Milliseconds() > 1<<31-1, "transactional.id.expiration.ms must fit in an int32"},
		{c.MaxTimeout < time.Millisecond, "transaction.max.timeout.ms must be at least 1"},
		{c.MaxTimeout.Milliseconds() > 1<<31-1, "transaction.max.timeout.ms must fit in an int32"},
		{c.AbortTimedOutInterval <= 0, "transaction.abort.timed.out.transaction.cleanup.interval.ms must be positive"},
		{c.RemoveExpiredInterval <= 0, "transaction.remove.expired.transaction.cleanup.interval.ms must be positive"},
		{c.NumPartitions < 1, "transaction.state.log.num.partitions must be at least 1"},
		{c.OffsetsTopicNumPartitions < 1, "offsets.topic.num.partitions must be at least 1"},
		{c.RequestTimeout <= 0, "request.timeout.ms must be positive"},
		{c.SnapshotMinBytes < 0, "the snapshot floor must not be negative"},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("txn: %s", ch.msg)
		}
	}
	return nil
}
