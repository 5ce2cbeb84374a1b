package txn

import (
	"context"
	"errors"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Log is one __transaction_state partition that this broker leads. The
// coordinator is its only writer while it is loaded.
type Log interface {
	// Append writes the records as one batch and returns its base offset
	// once the batch is committed (the high watermark passed it). An
	// error means "maybe written": the batch may still become committed.
	// ErrNotLeader (wrapped) means this broker no longer leads the
	// partition; ErrRecordTooLarge that the batch exceeds the topic's
	// limit.
	Append(ctx context.Context, records []recordbatch.Record) (int64, error)
	// Scan calls fn for every batch from the log start to the log end,
	// in order, and returns once all of it is committed: the coordinator
	// serves nothing it loaded before then. The batch is only valid
	// during fn.
	Scan(ctx context.Context, fn func(recordbatch.Batch) error) error
	// DeleteBefore moves the log start forward to offset; the records
	// below it are no longer scanned and their segments may be removed.
	DeleteBefore(offset int64) error
	// Leads reports whether this broker still leads the partition as far
	// as it can prove now; the coordinator answers NOT_COORDINATOR once it
	// cannot.
	Leads() bool
}

// Errors a Log returns (wrapped), which the coordinator maps to Kafka's
// codes.
var (
	ErrNotLeader      = errors.New("txn: not the leader of the transaction state partition")
	ErrRecordTooLarge = errors.New("txn: record batch too large for the transaction state topic")
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Markers delivers transaction markers to partition leaders.
type Markers interface {
	// WriteMarkers writes one COMMIT (commit=true) or ABORT marker for
	// the producer to each partition and returns each partition's Kafka
	// error code (0 = written and committed). It returns when every
	// partition has an outcome (a partition missing from the map counts
	// as REQUEST_TIMED_OUT); retriable codes (NOT_LEADER_OR_FOLLOWER,
	// UNKNOWN_TOPIC_OR_PARTITION while metadata catches up,
	// REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, COORDINATOR_NOT_AVAILABLE,
	// KAFKA_STORAGE_ERROR...) are for the coordinator to retry with
	// backoff. It must return promptly once ctx ends (the partition was
	// unloaded, or the attempt timed out).
	WriteMarkers(ctx context.Context, producerID int64, producerEpoch int16, coordinatorEpoch int32, commit bool, partitions []TopicPartition) map[TopicPartition]int16
}

// ProducerIDs allocates producer ids, unique across the cluster.
type ProducerIDs interface {
	NextProducerID(ctx context.Context) (int64, error)
}

// Topics is what the coordinator needs to know of the cluster's topics.
// Implementations are safe for concurrent use.
type Topics interface {
	// Partitions returns the partition count of an existing topic.
	Partitions(topic string) (int32, bool)
}
