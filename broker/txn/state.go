package txn

import (
	"cmp"
	"slices"
)

// txnState is Kafka's TransactionState; its values are the ids stored in
// the log (frozen).
type txnState int8

const (
	stateEmpty             txnState = 0
	stateOngoing           txnState = 1
	statePrepareCommit     txnState = 2
	statePrepareAbort      txnState = 3
	stateCompleteCommit    txnState = 4
	stateCompleteAbort     txnState = 5
	stateDead              txnState = 6
	statePrepareEpochFence txnState = 7
)

// stateNames are the names Kafka prints (DescribeTransactions,
// ListTransactions and its state filters).
var stateNames = [...]string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"}

func (s txnState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "Unknown"
}

// parseState is Kafka's TransactionState.fromName: exact names only.
func parseState(name string) (txnState, bool) {
	i := slices.Index(stateNames[:], name)
	return txnState(i), i >= 0
}

const (
	noProducerID    = -1
	noProducerEpoch = -1
	// maxEpoch is Short.MaxValue: never handed to a client, so the
	// coordinator can always fence the last epoch it gave out.
	maxEpoch = 1<<15 - 1
)

// epochExhausted is Kafka's TransactionMetadata.isEpochExhausted: a new
// producer id is needed rather than another bump.
func epochExhausted(epoch int16) bool { return epoch >= maxEpoch-1 }

// txnMeta is a transactional id's metadata as one record stores it.
// Values are replaced whole, never changed in place; partitions is sorted
// and free of duplicates, and shared between copies.
type txnMeta struct {
	producerID    int64
	producerEpoch int16
	timeoutMs     int32
	state         txnState
	partitions    []TopicPartition
	startMs       int64 // -1 when no transaction has started since InitProducerId
	updateMs      int64
}

// txnEntry is one transactional id of a shard.
type txnEntry struct {
	id string
	// meta is the metadata last committed to the log; stored is false
	// while the first write of a new id is in flight (requests other than
	// InitProducerId do not see it).
	meta   txnMeta
	stored bool
	// size is the bytes of its last record, for the live-state estimate.
	size int64
	// lastProducerID and lastProducerEpoch are the producer id and epoch
	// before the last InitProducerId (KIP-360 retries). Memory only, as
	// in Kafka: they are -1 after a load.
	lastProducerID    int64
	lastProducerEpoch int16
	// busy: a write for this id is in flight (Kafka's pending
	// transition); other requests get CONCURRENT_TRANSACTIONS.
	busy bool
	// completion is the marker delivery of a Prepare* state, until its
	// Complete* record is committed (or it stopped: fenced).
	completion *completion
	// parked are requests waiting for the transition in flight to end
	// (shard.park), oldest first.
	parked []*parkedRequest
}

// pending reports whether a transition of the id is in flight.
func (e *txnEntry) pending() bool { return e.busy || e.completion != nil }

func comparePartitions(a, b TopicPartition) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// normalizePartitions sorts ps and removes duplicates, in place.
func normalizePartitions(ps []TopicPartition) []TopicPartition {
	slices.SortFunc(ps, comparePartitions)
	return slices.Compact(ps)
}

// containsAll reports whether the sorted set holds every partition of sub.
func containsAll(set, sub []TopicPartition) bool {
	for _, tp := range sub {
		if _, ok := slices.BinarySearchFunc(set, tp, comparePartitions); !ok {
			return false
		}
	}
	return true
}

// union returns a new sorted set of set's partitions and add's.
func union(set, add []TopicPartition) []TopicPartition {
	out := make([]TopicPartition, 0, len(set)+len(add))
	out = append(append(out, set...), add...)
	return normalizePartitions(out)
}
