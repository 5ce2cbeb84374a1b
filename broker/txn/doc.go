// Package txn is Shale's transaction coordinator: Kafka's
// TransactionCoordinator, TransactionStateManager and
// TransactionMarkerChannelManager, for exactly-once producers
// (InitProducerId, AddPartitionsToTxn v0-3, AddOffsetsToTxn, EndTxn) and
// the admin APIs DescribeTransactions and ListTransactions, with the state
// stored in the internal topic __transaction_state. It speaks kmsg:
// requests in, responses out; ACLs, the internal topic, WriteTxnMarkers
// and producer-id blocks are the broker's, reached through the Log,
// Markers, ProducerIDs and Topics interfaces.
//
// # Ownership and time
//
// Transactional ids map to __transaction_state partitions as Kafka maps
// them: Utils.abs(transactionalId.hashCode()) %
// transaction.state.log.num.partitions, with Java's UTF-16 string hash and
// Integer.MIN_VALUE mapped to 0. The broker that leads partition N is the
// coordinator of its ids: Load(N, epoch, log) reads the partition back
// into memory (requests get COORDINATOR_LOAD_IN_PROGRESS meanwhile),
// Unload(N) stops serving it (NOT_COORDINATOR). The epoch is the
// partition's leader epoch, the coordinator epoch every marker carries so
// that partitions refuse markers of a stale coordinator. Each loaded
// partition is a shard whose state one goroutine owns; requests, timers,
// marker outcomes and append completions reach it as closures. Every
// timer comes from an injected Clock, so tests drive them with a fake
// clock and decisions never read wall time.
//
// # Records (frozen: Kafka's __transaction_state format)
//
// Every record's key starts with an int16 naming its schema; a record with
// a null value is a tombstone: the transactional id expired.
//
//	key version 0   TransactionLogKey    transactionalId string
//	                value TransactionLogValue v0: producerId int64,
//	                producerEpoch int16, transactionTimeoutMs int32,
//	                transactionStatus int8, transactionPartitions
//	                [topic string, partitionIds [int32]] (null in Empty),
//	                transactionLastUpdateTimestampMs int64,
//	                transactionStartTimestampMs int64 (-1 before the
//	                first partition is added)
//
// Status ids are Kafka's TransactionState ids: Empty 0, Ongoing 1,
// PrepareCommit 2, PrepareAbort 3, CompleteCommit 4, CompleteAbort 5,
// Dead 6, PrepareEpochFence 7. Strings are int16-length-prefixed and
// arrays int32-count-prefixed, as in Kafka's non-flexible schemas, so
// kafka-console-consumer's transaction log formatter reads the topic.
// Value version 1 (flexible, KIP-915: compact strings and arrays, tagged
// fields, KIP-890's among them, which are ignored) is read too; other key
// versions are skipped. A stored Dead reads as a tombstone, a stored
// PrepareEpochFence (Kafka never writes one) as Ongoing. Shale writes
// batches without compression and without producer ids; control and
// transactional batches are skipped on load.
//
// The previous producer id and epoch that KIP-360 retries are checked
// against are kept in memory only, as Kafka 3.x keeps them: after a
// coordinator move such a retry is fenced, and the producer starts over.
//
// # Writes
//
// A shard writes through a pipeline with one Append in flight: writes made
// while an append is in flight go out together in the next one (group
// commit: one batch, one wait for the high watermark). A transactional
// id's new state applies only after its record is committed, in log
// order; while the write is in flight the id answers
// CONCURRENT_TRANSACTIONS, as Kafka's pending transition does. A failed
// append is "maybe written": the state stays as it was, and the request
// gets NOT_COORDINATOR (leadership lost), UNKNOWN_SERVER_ERROR (record too
// large) or COORDINATOR_NOT_AVAILABLE.
//
// # Ending a transaction
//
// EndTxn (or the coordinator itself, aborting) writes PrepareCommit or
// PrepareAbort and answers once it is committed. Then, off the shard's
// goroutine, Markers.WriteMarkers writes a marker to every partition of
// the transaction with the producer id, epoch and coordinator epoch;
// failed partitions are retried, backing off from 100 ms doubling to 5 s
// (codes Kafka deems impossible too, logged, rather than leave the
// partition's transaction open); UNKNOWN_TOPIC_OR_PARTITION for a topic
// that no longer exists counts as written, as Kafka drops markers of
// deleted partitions. Once every partition has its marker,
// CompleteCommit or CompleteAbort is written (retried the same way). A
// partition answering TRANSACTION_COORDINATOR_FENCED,
// INVALID_PRODUCER_EPOCH or PRODUCER_FENCED stops the completion (a newer
// coordinator or producer epoch has moved on), and so does losing the
// partition: the transaction stays in its
// Prepare state, and the next Load of the partition sends its markers
// again. Until the Complete record is committed the id answers
// CONCURRENT_TRANSACTIONS.
//
// An ongoing transaction whose producer is replaced (InitProducerId) or
// that outlives its timeout is aborted with a bumped epoch (Kafka's
// PrepareEpochFence): PrepareAbort is written with epoch+1, so the old
// producer is fenced at once and its partitions refuse its later writes,
// and the markers carry epoch+1.
//
// # Bounded size
//
// Shale has no log compaction yet. Instead, when a partition's log holds
// more than twice the bytes of its live state plus SnapshotMinBytes, the
// shard appends a snapshot (every id's last committed record, in batches
// of under 1 MiB) and then moves the log start to the snapshot's first
// offset (Log.DeleteBefore). Nothing else is appended between the
// snapshot's batches, and it is taken only between appends, so it
// reflects exactly the records before it: replaying from any log start
// (before or after the move) gives the same state. A failed snapshot is
// retried once the log has grown by another floor. The topic is created
// with retention.ms=-1 and retention.bytes=-1, so nothing but these moves
// deletes its data.
//
// # Timers
//
// Every transaction.abort.timed.out.transaction.cleanup.interval.ms,
// Ongoing transactions whose start plus timeout has passed are aborted
// with an epoch bump, as above. Every
// transaction.remove.expired.transaction.cleanup.interval.ms, ids in
// Empty, CompleteCommit or CompleteAbort not updated for
// transactional.id.expiration.ms get a tombstone and are forgotten; a
// later InitProducerId for one gets a new producer id.
package txn
