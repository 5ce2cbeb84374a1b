package group

import (
	"context"
	"errors"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Log is one __consumer_offsets partition that this broker leads. The
// coordinator is its only writer while it is loaded.
type Log interface {
	// Append writes the records as one batch and returns its base offset
	// once the batch is committed (the high watermark passed it, and the
	// batch is on stable storage when the leader is the partition's only
	// in-sync replica). An
	// error means "maybe written": the batch may still become committed.
	// ErrNotLeader (wrapped) means this broker no longer leads the
	// partition; ErrRecordTooLarge that the batch exceeds the topic's
	// limit.
	Append(ctx context.Context, records []recordbatch.Record) (int64, error)
	// AppendTransactional writes the records as one transactional batch
	// of the producer (producer id, epoch, transactional attribute; no
	// sequence checks are needed from the coordinator's side) and
	// returns its base offset once committed, as Append. The
	// partition's producer state then holds an open transaction until
	// the transaction coordinator's marker. Errors are Append's, and
	// ErrProducerFenced (wrapped) when the partition knows a newer epoch
	// of the producer.
	AppendTransactional(ctx context.Context, producerID int64, producerEpoch int16, records []recordbatch.Record) (int64, error)
	// Scan calls fn for every batch from the log start to the log end,
	// in order, and returns once all of it is committed (as Append's
	// batches are): the coordinator serves nothing it loaded before
	// then. The batch is only valid during fn.
	Scan(ctx context.Context, fn func(recordbatch.Batch) error) error
	// DeleteBefore moves the log start forward to offset; the records
	// below it are no longer scanned and their segments may be removed.
	DeleteBefore(offset int64) error
	// Leads reports whether this broker still leads the partition as far
	// as it can prove now. A coordinator cut off from the cluster keeps
	// its partitions in its own eyes while another broker is elected and
	// coordinates their groups: it answers NOT_COORDINATOR once it cannot
	// prove its leadership, rather than serve commits the new
	// coordinator has moved past.
	Leads() bool
	// ReadFence returns once this broker has proven that it leads the
	// partition at a time after since (the wall-clock time a read
	// arrived), so that no other coordinator can have acknowledged,
	// before the read, a commit this one's state lacks; an error
	// (ErrNotLeader) when it cannot. OffsetFetch passes it before it
	// reads a group's commits. It may wait while the broker's lease is
	// out (etcd away), for a follower's word.
	ReadFence(ctx context.Context, since time.Time) error
}

// Errors a Log returns (wrapped), which the coordinator maps to Kafka's
// codes.
var (
	ErrNotLeader      = errors.New("group: not the leader of the offsets partition")
	ErrRecordTooLarge = errors.New("group: record batch too large for the offsets topic")
	// ErrProducerFenced: AppendTransactional was refused because the
	// producer's epoch is older than the partition's (INVALID_PRODUCER_EPOCH
	// to the client).
	ErrProducerFenced = errors.New("group: producer epoch fenced on the offsets partition")
)

// Topics is what the coordinator needs to know of the cluster's topics:
// commits for topics that do not exist are refused, and KIP-848 groups are
// assigned partitions by topic id. Implementations are safe for concurrent
// use.
type Topics interface {
	// TopicByName returns a topic's id and partition count.
	TopicByName(name string) (id [16]byte, partitions int32, ok bool)
	// TopicByID returns a topic's name and partition count.
	TopicByID(id [16]byte) (name string, partitions int32, ok bool)
	// TopicNames lists every topic (for regular-expression subscriptions),
	// internal topics excluded.
	TopicNames() []string
}

// ClientInfo identifies the connection a request came from, for member
// descriptions, and what its client may see.
type ClientInfo struct {
	ClientID   string
	ClientHost string
	// MayDescribe reports whether the client may see a topic (its
	// DESCRIBE ACL; nil: every topic): a member's regular expression
	// matches only topics it may see, as Kafka's coordinator filters
	// them.
	MayDescribe func(topic string) bool
}
