package broker

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// topicConfigDef defines one topic config: Kafka's name, type, default and
// the broker config that overrides the default for all topics.
type topicConfigDef struct {
	name     string
	typ      kmsg.ConfigType
	def      string
	synonym  string // broker-level default, e.g. log.retention.ms
	validate func(string) error
	doc      string
}

func intRange(min, max int64) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		if v < min || v > max {
			return fmt.Errorf("%d is outside [%d, %d]", v, min, max)
		}
		return nil
	}
}

func oneOf(values ...string) func(string) error {
	return func(s string) error {
		if slices.Contains(values, s) {
			return nil
		}
		return fmt.Errorf("%q is not one of %s", s, strings.Join(values, ", "))
	}
}

func isBool(s string) error {
	if s != "true" && s != "false" {
		return fmt.Errorf("%q is not true or false", s)
	}
	return nil
}

func isDouble(min, max float64) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < min || v > max {
			return fmt.Errorf("%q is not a number in [%g, %g]", s, min, max)
		}
		return nil
	}
}

const maxLong = math.MaxInt64

// topicConfigDefs lists the topic configs Shale accepts, with Kafka's names
// and defaults. Names not listed are refused with INVALID_CONFIG, as Kafka
// refuses unknown topic configs.
var topicConfigDefs = []topicConfigDef{
	{"cleanup.policy", kmsg.ConfigTypeList, "delete", "log.cleanup.policy", validateCleanupPolicy,
		"What happens to old records: delete (segments past retention.ms or retention.bytes are deleted), compact (the log cleaner keeps the last record of each key; records without a key are refused) or both (compact,delete). On a tiered compacted topic (remote.storage.enable=true, which defaults to false on it) the leader also compacts the remote log."},
	{"compression.type", kmsg.ConfigTypeString, "producer", "compression.type", oneOf(compressionTypes...),
		"How batches are stored: as the producer compressed them (producer), or rewritten by the leader with this codec (uncompressed, gzip, snappy, lz4 or zstd) when the producer used another."},
	{"compression.gzip.level", kmsg.ConfigTypeInt, "-1", "compression.gzip.level", validateGzipLevel,
		"The gzip level of batches the leader compresses (compression.type=gzip): 1 to 9, or -1 for the codec's default (6)."},
	{"compression.lz4.level", kmsg.ConfigTypeInt, "9", "compression.lz4.level", intRange(1, 17),
		"The lz4 level of batches the leader compresses (compression.type=lz4): 1 to 17."},
	{"compression.zstd.level", kmsg.ConfigTypeInt, "3", "compression.zstd.level", intRange(-131072, 22),
		"The zstd level of batches the leader compresses (compression.type=zstd): -131072 to 22."},
	{"delete.retention.ms", kmsg.ConfigTypeLong, "86400000", "log.cleaner.delete.retention.ms", intRange(0, maxLong),
		"How long a compacted topic keeps delete tombstones (records with a null value) once the cleaner has reached them, so that consumers reading from the start see the deletion."},
	{"file.delete.delay.ms", kmsg.ConfigTypeLong, "60000", "log.segment.delete.delay.ms", intRange(0, maxLong),
		"Time to wait before deleting a file from the filesystem."},
	{"flush.messages", kmsg.ConfigTypeLong, "9223372036854775807", "log.flush.interval.messages", intRange(1, maxLong),
		"Force an fsync after this many messages (default: never; replication provides durability)."},
	{"flush.ms", kmsg.ConfigTypeLong, "9223372036854775807", "log.flush.interval.ms", intRange(0, maxLong),
		"Force an fsync after this much time (default: never)."},
	{"index.interval.bytes", kmsg.ConfigTypeInt, "4096", "log.index.interval.bytes", intRange(0, math.MaxInt32),
		"How often an offset index entry is added."},
	{"follower.replication.throttled.replicas", kmsg.ConfigTypeList, "", "", validateThrottledReplicas,
		"Replicas whose replication the follower throttles to follower.replication.throttled.rate while they are out of the ISR: partition:brokerId pairs (the broker is the follower's) separated by commas, or * for all replicas of the topic."},
	{"max.compaction.lag.ms", kmsg.ConfigTypeLong, "9223372036854775807", "log.cleaner.max.compaction.lag.ms", intRange(1, maxLong),
		"Longest time a record of a compacted topic may remain uncompacted: past it, its segment is cleaned whatever min.cleanable.dirty.ratio says."},
	{"max.message.bytes", kmsg.ConfigTypeInt, "1048588", "message.max.bytes", intRange(0, math.MaxInt32),
		"Largest record batch size allowed."},
	{"message.downconversion.enable", kmsg.ConfigTypeBoolean, "true", "log.message.downconversion.enable", isBool,
		"Accepted, with no effect, for Kafka 3.x tools that set or copy it (MirrorMaker 2 copies a source topic's configs): Shale serves record batches of the current format only, to every client version it serves, so there is nothing to down-convert. Kafka 4 removed it."},
	{"message.format.version", kmsg.ConfigTypeString, "3.0-IV1", "log.message.format.version", validateMessageFormatVersion,
		"Accepted, with no effect, for Kafka 3.x tools that set or copy it (topics of clusters upgraded from Kafka 2 often carry one): Shale stores v2 record batches only, as Kafka 3 does whatever the value. Kafka 4 removed it."},
	{"message.timestamp.after.max.ms", kmsg.ConfigTypeLong, "3600000", "log.message.timestamp.after.max.ms", intRange(0, maxLong),
		"Largest allowed amount a CreateTime timestamp may be ahead of the broker's clock."},
	{"message.timestamp.before.max.ms", kmsg.ConfigTypeLong, "9223372036854775807", "log.message.timestamp.before.max.ms", intRange(0, maxLong),
		"Largest allowed amount a CreateTime timestamp may be behind the broker's clock."},
	{"message.timestamp.type", kmsg.ConfigTypeString, "CreateTime", "log.message.timestamp.type", oneOf("CreateTime", "LogAppendTime"),
		"Whether record timestamps are the producer's (CreateTime) or the broker's (LogAppendTime)."},
	{"min.cleanable.dirty.ratio", kmsg.ConfigTypeDouble, "0.5", "log.cleaner.min.cleanable.ratio", isDouble(0, 1),
		"Share of a compacted log not yet cleaned (dirty) past which the cleaner compacts it."},
	{"min.compaction.lag.ms", kmsg.ConfigTypeLong, "0", "log.cleaner.min.compaction.lag.ms", intRange(0, maxLong),
		"Shortest time a record of a compacted topic remains uncompacted: the cleaner leaves younger records alone."},
	{"min.insync.replicas", kmsg.ConfigTypeInt, "1", "min.insync.replicas", intRange(1, math.MaxInt32),
		"Minimum in-sync replicas that must acknowledge an acks=all write."},
	{"preallocate", kmsg.ConfigTypeBoolean, "false", "log.preallocate", isBool,
		"Write zeros ahead of the active segment's appends, so that the fsyncs of acks=all on a leader alone (or flush.messages) overwrite written blocks instead of growing the file. Doubles the bytes written."},
	{"leader.replication.throttled.replicas", kmsg.ConfigTypeList, "", "", validateThrottledReplicas,
		"Replicas whose replication the leader throttles to leader.replication.throttled.rate while they are out of the ISR: partition:brokerId pairs (the broker is the leader's) separated by commas, or * for all replicas of the topic."},
	{"local.retention.bytes", kmsg.ConfigTypeLong, "-2", "log.local.retention.bytes", intRange(-2, maxLong),
		"Size the local part of a tiered partition may grow to before its uploaded segments are deleted locally (-2: retention.bytes)."},
	{"local.retention.ms", kmsg.ConfigTypeLong, "86400000", "log.local.retention.ms", intRange(-2, maxLong),
		"How long a tiered partition keeps uploaded segments on local disk (-2: retention.ms). Shale's default keeps one day hot: local disk serves the recent past with sendfile, the bucket holds the rest."},
	{"remote.log.copy.disable", kmsg.ConfigTypeBoolean, "false", "", isBool,
		"Stop uploading a tiered topic's segments (KIP-950): what the object store holds stays readable and expires by retention.ms/bytes, and local segments are kept and deleted by retention.ms/bytes too (local.retention.* no longer applies)."},
	{"remote.log.delete.on.disable", kmsg.ConfigTypeBoolean, "false", "", isBool,
		"Set with remote.storage.enable=false to turn tiered storage off on a topic that has it (KIP-950): the topic's objects in the object store are deleted, and its log starts at the local log's start."},
	{"remote.storage.enable", kmsg.ConfigTypeBoolean, "true", "remote.log.storage.system.enable", isBool,
		"Upload sealed segments to the broker's object store and serve older offsets from it (no effect on a broker without one). Turning it off on a topic that has it needs remote.log.delete.on.disable=true, and deletes the topic's objects. On compacted topics (cleanup.policy with compact) it defaults to false, as Kafka does not tier them; true tiers one, and its leader compacts its remote log."},
	{"retention.bytes", kmsg.ConfigTypeLong, "-1", "log.retention.bytes", intRange(-1, maxLong),
		"Largest size a partition may grow to before old segments are deleted (-1: no limit)."},
	{"retention.ms", kmsg.ConfigTypeLong, "604800000", "log.retention.ms", intRange(-1, maxLong),
		"How long segments are kept (-1: forever)."},
	{"segment.bytes", kmsg.ConfigTypeInt, "1073741824", "log.segment.bytes", intRange(14, math.MaxInt32),
		"Segment file size."},
	{"segment.index.bytes", kmsg.ConfigTypeInt, "10485760", "log.index.size.max.bytes", intRange(4, math.MaxInt32),
		"Size of the offset index of a segment."},
	{"segment.jitter.ms", kmsg.ConfigTypeLong, "0", "log.roll.jitter.ms", intRange(0, maxLong),
		"Random jitter subtracted from segment.ms."},
	{"segment.ms", kmsg.ConfigTypeLong, "604800000", "log.roll.ms", intRange(1, maxLong),
		"Time after which a segment is rolled even if not full."},
	{"unclean.leader.election.enable", kmsg.ConfigTypeBoolean, "false", "unclean.leader.election.enable", isBool,
		"Allow out-of-sync replicas to become leader (may lose data)."},
}

var topicConfigIndex = func() map[string]*topicConfigDef {
	m := make(map[string]*topicConfigDef, len(topicConfigDefs))
	for i := range topicConfigDefs {
		m[topicConfigDefs[i].name] = &topicConfigDefs[i]
	}
	return m
}()

func validateCleanupPolicy(s string) error {
	_, _, err := parseCleanupPolicy(s)
	return err
}

// parseCleanupPolicy reads cleanup.policy as Kafka does: a list of
// delete and compact, separated by commas with spaces allowed around
// each, and reports whether it has compact and whether it has delete.
// An empty item, or one that is neither, is refused.
func parseCleanupPolicy(s string) (compact, del bool, err error) {
	for _, p := range strings.Split(s, ",") {
		switch p = strings.TrimSpace(p); p {
		case "delete":
			del = true
		case "compact":
			compact = true
		case "":
			return false, false, fmt.Errorf("%q has an empty item: the policies are delete, compact, or both (compact,delete)", s)
		default:
			return false, false, fmt.Errorf("%q is not a cleanup policy: the policies are delete, compact, or both (compact,delete)", p)
		}
	}
	return compact, del, nil
}

// compacted reports whether a topic's cleanup.policy, resolved as
// configValue does, has compact. An invalid value counts as the default
// (delete), as parseTopicConfig takes it.
func compacted(topic, broker map[string]string) bool {
	v, _ := configValue("cleanup.policy", topic, broker)
	compact, _, err := parseCleanupPolicy(v)
	return err == nil && compact
}

func validateThrottledReplicas(s string) error {
	_, err := replication.ParseThrottledReplicas(s)
	return err
}

// compressionTypes are compression.type's values: producer keeps a
// producer's batch as it came, the others name the codec the leader stores
// every batch with, rewriting those the producer compressed otherwise.
var compressionTypes = []string{"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"}

// storedCodec is the codec compression.type stores batches with, and
// false for producer.
func storedCodec(compressionType string) (recordbatch.Codec, bool) {
	switch compressionType {
	case "uncompressed":
		return recordbatch.CodecNone, true
	case "gzip":
		return recordbatch.CodecGzip, true
	case "snappy":
		return recordbatch.CodecSnappy, true
	case "lz4":
		return recordbatch.CodecLZ4, true
	case "zstd":
		return recordbatch.CodecZstd, true
	}
	return 0, false
}

// validateMessageFormatVersion accepts what Kafka 3 accepts for
// message.format.version: a release, as 0.10.2, 2.8 or 3.0-IV1.
func validateMessageFormatVersion(s string) error {
	release, _, _ := strings.Cut(s, "-")
	parts := strings.Split(release, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return fmt.Errorf("%q is not a Kafka release", s)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return fmt.Errorf("%q is not a Kafka release", s)
		}
	}
	return nil
}

// validateGzipLevel accepts Kafka's compression.gzip.level: 1 to 9, or -1
// for the codec's default.
func validateGzipLevel(s string) error {
	if s == "-1" {
		return nil
	}
	return intRange(1, 9)(s)
}

// validateTopicConfig checks one name=value pair. The error message is
// returned to the client.
func validateTopicConfig(name, value string) error {
	def, ok := topicConfigIndex[name]
	if !ok {
		return fmt.Errorf("unknown topic config name: %s", name)
	}
	if err := def.validate(value); err != nil {
		return fmt.Errorf("invalid value for %s: %w", name, err)
	}
	return nil
}

// topicConfig is a topic's effective configuration, typed.
type topicConfig struct {
	log                localseg.Config
	maxMessageBytes    int32
	logAppendTime      bool
	timestampBeforeMax int64
	timestampAfterMax  int64
	minInsyncReplicas  int32
	uncleanLeaderElect bool
	// recompress is set when compression.type names a codec: the leader
	// stores every batch with compression, at compressionLevel (0: the
	// codec's default), rewriting those the producer compressed
	// otherwise (Kafka's LogValidator does the same).
	recompress       bool
	compression      recordbatch.Codec
	compressionLevel int
	// Tiered storage: whether the topic tiers, and its total and local
	// retention (local resolved: -2 taken as the total, and never more
	// than it).
	remoteStorage      bool
	remoteCopyDisabled bool // remote.log.copy.disable
	// remoteDeleteOnDisable: remote.log.delete.on.disable, set with
	// remote.storage.enable=false to delete the remote log.
	remoteDeleteOnDisable bool
	// retentionMs and retentionBytes are the total retention the log
	// applies (-1 for both on a compact-only topic, whose cleanup.policy
	// lacks delete), and localRetentionMs/Bytes the local part of it.
	retentionMs         int64
	retentionBytes      int64
	localRetentionMs    int64
	localRetentionBytes int64
	// Compaction (cleanup.policy and the log cleaner's configs). compact:
	// the policy has compact, so the log cleaner keeps the last record of
	// each key and produce refuses records without a key. deletePolicy:
	// it has delete, so retention.ms/bytes delete old segments (without
	// it the log keeps everything the cleaner leaves) and DeleteRecords
	// is allowed.
	compact            bool
	deletePolicy       bool
	deleteRetentionMs  int64   // delete.retention.ms
	minCompactionLagMs int64   // min.compaction.lag.ms
	maxCompactionLagMs int64   // max.compaction.lag.ms
	minCleanableRatio  float64 // min.cleanable.dirty.ratio
}

// logConfig is the local log's configuration: a tiered log keeps the
// local retention (the total applies to the remote log), unless its
// uploads are stopped (uploadsStopped): then nothing more reaches the
// object store, and the local log keeps the total, as Kafka's does, no
// longer held back by what the object store lacks.
func (c *topicConfig) logConfig(tiered bool) localseg.Config {
	l := c.log
	switch {
	case tiered && c.uploadsStopped():
		l.UploadsStopped = true
	case tiered:
		l.RetentionMs, l.RetentionBytes = c.localRetentionMs, c.localRetentionBytes
	}
	return l
}

// uploadsStopped reports whether a tiered partition of the topic uploads
// nothing more: remote.log.copy.disable is set, or remote storage is being
// turned off (its remote log is being deleted, see partitionTier.drain).
func (c *topicConfig) uploadsStopped() bool {
	return c.remoteCopyDisabled || !c.remoteStorage
}

// checkTopicConfigs checks what single values cannot, as Kafka checks
// them: no tiered storage on a compacted topic (checkCompactedNotTiered);
// a tiered topic's local.retention.ms/bytes, when set on the topic,
// within its retention.ms/bytes (-2 means "the total"; -1 is refused under
// a bounded total), and equal to it (or -2) while remote.log.copy.disable
// is set; and remote.storage.enable turned off on a topic that has it only
// with remote.log.delete.on.disable=true (KIP-950: its remote log is then
// deleted). cur is nil for a new topic. A local retention the topic
// inherits (Shale's default, or the broker's) is capped at the total
// instead, or ignored while uploads are stopped: it is not the topic's
// choice.
func checkTopicConfigs(cur, next, broker map[string]string) error {
	if err := checkCompactedNotTiered(cur, next, broker); err != nil {
		return err
	}
	if cur != nil {
		was, _ := configValue("remote.storage.enable", cur, broker)
		now, _ := configValue("remote.storage.enable", next, broker)
		del, _ := configValue("remote.log.delete.on.disable", next, broker)
		if was == "true" && now != "true" && del != "true" {
			return errors.New("It is invalid to disable remote storage without deleting remote data. " +
				"If you want to keep the remote data and turn to read only, please set `remote.storage.enable=true,remote.log.copy.disable=true`. " +
				"If you want to disable remote storage and delete all remote data, please set `remote.storage.enable=false,remote.log.delete.on.disable=true`.")
		}
	}
	if v, _ := configValue("remote.storage.enable", next, broker); v != "true" {
		return nil
	}
	copyDisabled, _ := configValue("remote.log.copy.disable", next, broker)
	for _, pair := range [][2]string{{"local.retention.ms", "retention.ms"}, {"local.retention.bytes", "retention.bytes"}} {
		lv, src := configValue(pair[0], next, broker)
		if src != kmsg.ConfigSourceDynamicTopicConfig {
			continue
		}
		tv, _ := configValue(pair[1], next, broker)
		local, err1 := strconv.ParseInt(lv, 10, 64)
		total, err2 := strconv.ParseInt(tv, 10, 64)
		if err1 != nil || err2 != nil || local == -2 {
			continue // single-value validation reports bad numbers
		}
		if copyDisabled == "true" && local != total {
			return fmt.Errorf("When `remote.log.copy.disable` is set to true, the `%s` and `%s` must be set to the identical value because there will be no more logs copied to the remote storage.", pair[0], pair[1])
		}
		if total != -1 && (local == -1 || local > total) {
			return fmt.Errorf("%s %d exceeds %s %d: local retention is part of the total", pair[0], local, pair[1], total)
		}
	}
	return nil
}

// tieredCompactedMsg begins the refusal of a change that would leave a
// tiered topic's remote log unreachable by making it compacted.
const tieredCompactedMsg = "Tiered storage is not supported on compacted topics (cleanup.policy=compact)"

// checkCompactedNotTiered refuses to make a tiered topic (cur) compacted
// (cleanup.policy with compact) without saying whether it stays tiered:
// Shale's default of remote.storage.enable is false on a compacted topic
// (configValue, as Kafka refuses tiered storage there), so the change
// would stop tiering it and leave its remote log, which holds its oldest
// records, unreachable. remote.storage.enable=true keeps it tiered (the
// leader compacts its remote log, tiering.CompactRemote);
// remote.storage.enable=false with remote.log.delete.on.disable=true
// (the KIP-950 check, checkTopicConfigs) deletes the remote log.
func checkCompactedNotTiered(cur, next, broker map[string]string) error {
	if cur == nil || !compacted(next, broker) {
		return nil
	}
	tiered := func(m map[string]string) bool {
		v, _ := configValue("remote.storage.enable", m, broker)
		return v == "true"
	}
	if tiered(cur) && !tiered(next) && next["remote.storage.enable"] != "false" {
		return errors.New(tieredCompactedMsg + " by default: the topic is tiered; to compact it and keep it tiered, set remote.storage.enable=true " +
			"in the same change (its remote log is then compacted too); to compact it untiered, set remote.storage.enable=false " +
			"and remote.log.delete.on.disable=true, which deletes its remote log")
	}
	return nil
}

// localRetention resolves a local.retention.* value against its total, as
// Kafka does: -2 means the total, and local never exceeds a bounded total.
func localRetention(local, total int64) int64 {
	if local == -2 || (total >= 0 && (local < 0 || local > total)) {
		return total
	}
	return local
}

// configValue resolves a topic config: the topic's own value, else the
// broker's default for it, else Kafka's default. One default depends on
// another config: Shale's remote.storage.enable, true where Kafka's is
// false, is false on a compacted topic (cleanup.policy with compact),
// which Kafka does not tier, so that compacted topics are created as Kafka
// creates them (Kafka Streams' changelogs, Connect's and Schema
// Registry's topics) on a broker that tiers.
func configValue(name string, topic, broker map[string]string) (string, kmsg.ConfigSource) {
	if v, ok := topic[name]; ok {
		return v, kmsg.ConfigSourceDynamicTopicConfig
	}
	def := topicConfigIndex[name]
	if v, ok := broker[def.synonym]; ok && def.synonym != "" {
		return v, kmsg.ConfigSourceStaticBrokerConfig
	}
	if name == "remote.storage.enable" && compacted(topic, broker) {
		return "false", kmsg.ConfigSourceDefaultConfig
	}
	return def.def, kmsg.ConfigSourceDefaultConfig
}

// parseTopicConfig turns stored configs (already validated) into their typed
// form. A value that no longer parses falls back to the default.
func parseTopicConfig(topic, broker map[string]string) topicConfig {
	get := func(name string) string {
		v, _ := configValue(name, topic, broker)
		if topicConfigIndex[name].validate(v) != nil {
			return topicConfigIndex[name].def
		}
		return v
	}
	i64 := func(name string) int64 {
		v, _ := strconv.ParseInt(get(name), 10, 64)
		return v
	}
	f64 := func(name string) float64 {
		v, _ := strconv.ParseFloat(get(name), 64)
		return v
	}
	c := topicConfig{
		log: localseg.Config{
			SegmentBytes:       i64("segment.bytes"),
			SegmentMs:          i64("segment.ms"),
			SegmentIndexBytes:  i64("segment.index.bytes"),
			IndexIntervalBytes: i64("index.interval.bytes"),
			RetentionMs:        i64("retention.ms"),
			RetentionBytes:     i64("retention.bytes"),
			FlushMessages:      i64("flush.messages"),
			FlushMs:            i64("flush.ms"),
			FileDeleteDelayMs:  i64("file.delete.delay.ms"),
			Preallocate:        get("preallocate") == "true",
		},
		maxMessageBytes:       int32(i64("max.message.bytes")),
		logAppendTime:         get("message.timestamp.type") == "LogAppendTime",
		timestampBeforeMax:    i64("message.timestamp.before.max.ms"),
		timestampAfterMax:     i64("message.timestamp.after.max.ms"),
		minInsyncReplicas:     int32(i64("min.insync.replicas")),
		uncleanLeaderElect:    get("unclean.leader.election.enable") == "true",
		remoteStorage:         get("remote.storage.enable") == "true",
		remoteCopyDisabled:    get("remote.log.copy.disable") == "true",
		remoteDeleteOnDisable: get("remote.log.delete.on.disable") == "true",
	}
	c.compression, c.recompress = storedCodec(get("compression.type"))
	switch c.compression {
	case recordbatch.CodecGzip:
		c.compressionLevel = max(int(i64("compression.gzip.level")), 0) // -1: the default
	case recordbatch.CodecLZ4:
		c.compressionLevel = int(i64("compression.lz4.level"))
	case recordbatch.CodecZstd:
		c.compressionLevel = int(i64("compression.zstd.level"))
	}
	c.compact, c.deletePolicy, _ = parseCleanupPolicy(get("cleanup.policy"))
	c.deleteRetentionMs = i64("delete.retention.ms")
	c.minCompactionLagMs = i64("min.compaction.lag.ms")
	c.maxCompactionLagMs = i64("max.compaction.lag.ms")
	c.minCleanableRatio = f64("min.cleanable.dirty.ratio")
	if !c.deletePolicy {
		// Compact only: no time or size retention, the log keeps what
		// the cleaner leaves (retention.ms/bytes stay described as set,
		// without effect, as in Kafka).
		c.log.RetentionMs, c.log.RetentionBytes = -1, -1
	}
	c.retentionMs, c.retentionBytes = c.log.RetentionMs, c.log.RetentionBytes
	c.localRetentionMs = localRetention(i64("local.retention.ms"), c.retentionMs)
	c.localRetentionBytes = localRetention(i64("local.retention.bytes"), c.retentionBytes)
	if !c.deletePolicy && !c.remoteStorage {
		// Nor locally, unless the topic is tiered: then the local log
		// keeps local.retention.ms/bytes of what the bucket holds (whose
		// remote log its leader compacts), as any tiered topic's.
		c.localRetentionMs, c.localRetentionBytes = -1, -1
	}
	// Zero means "Kafka's default" to localseg; these configs allow 0 as
	// a real value, which localseg treats the same way except for
	// file.delete.delay.ms and index.interval.bytes, where 0 is kept as
	// the smallest meaningful value.
	if c.log.FileDeleteDelayMs == 0 {
		c.log.FileDeleteDelayMs = 1
	}
	if c.log.IndexIntervalBytes == 0 {
		c.log.IndexIntervalBytes = 1
	}
	return c
}
