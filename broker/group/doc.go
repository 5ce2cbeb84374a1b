// Package group is Shale's group coordinator: Kafka's classic group
// protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup with static
// membership and KIP-394's member-id round), the next-generation consumer
// protocol (KIP-848 ConsumerGroupHeartbeat with server-side uniform and
// range assignors), committed offsets, and their storage in the internal
// topic __consumer_offsets. It speaks kmsg: requests in, responses out;
// the broker's handlers only route bytes and connections.
//
// # Ownership and time
//
// Groups map to __consumer_offsets partitions as Kafka maps them:
// Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions, with
// Java's UTF-16 string hash and Integer.MIN_VALUE mapped to 0. The broker
// that leads partition N is the coordinator of its groups: Load(N, log)
// reads the partition back into memory (requests get
// COORDINATOR_LOAD_IN_PROGRESS meanwhile), Unload(N) stops serving it
// (NOT_COORDINATOR). Each loaded partition is a shard whose state one
// goroutine owns; requests, timers and append completions reach it as
// closures. Every timer (session, rebalance, initial delay, pending sync,
// retention) comes from an injected Clock, so tests drive them with a
// fake clock and decisions never read wall time.
//
// # Records (frozen: Kafka's __consumer_offsets format)
//
// Every record's key starts with an int16 naming its schema; a record with
// a null value is a tombstone that deletes the key.
//
//	key version 0/1  OffsetCommitKey     group string, topic string, partition int32
//	                 value OffsetCommitValue v3: offset int64, leaderEpoch int32,
//	                 metadata string, commitTimestamp int64 (v1 with
//	                 expireTimestamp int64 when OffsetCommit v2-v4 set a retention)
//	key version 2    GroupMetadataKey    group string
//	                 value GroupMetadataValue v3: protocolType, generation,
//	                 protocol, leader, currentStateTimestamp, and per member:
//	                 memberId, groupInstanceId, clientId, clientHost,
//	                 rebalanceTimeout, sessionTimeout, subscription, assignment
//	key version 3    ConsumerGroupMetadataKey (KIP-848)  group string
//	                 value ConsumerGroupMetadataValue v0 (flexible): epoch int32
//
// Strings are int16-length-prefixed, bytes int32-length-prefixed, as in
// Kafka's non-flexible schemas, so Burrow and kafka-console-consumer's
// offsets formatter read the topic. Other key versions (Kafka's KIP-848
// member and assignment records 4-8, share and streams groups) are skipped
// on load. Shale writes batches without compression; plain batches
// without producer ids, and a TxnOffsetCommit's offsets as one
// transactional batch of its producer (producer id and epoch, no
// sequence: Log.AppendTransactional) holding the same OffsetCommit
// records. The transaction coordinator's markers are control batches of
// that producer (the broker appends them): one record whose key is int16
// version (0; a newer one reads as 0) and int16 type (0 ABORT, 1 COMMIT),
// whose value (EndTxnMarker) the coordinator does not read. Loading reads
// both: a transactional batch's offset commits become pending offsets of
// its producer (records of other kinds there are skipped), and a marker
// applies to that producer's pending offsets whose batches precede it, as
// CompleteTxn does live.
//
// # Transactional offsets
//
// Pending offsets are kept per group, per producer and partition (Kafka's
// pendingTransactionalOffsetCommits) with their batch's offset, and are
// invisible to OffsetFetch: with RequireStable (v7+, KIP-447) a partition
// with one pending, or being written, answers UNSTABLE_OFFSET_COMMIT. At a
// COMMIT marker each becomes the committed offset unless the committed
// one's record came later in the log (Kafka compares record offsets; we
// compare batch offsets, which order the same records); at ABORT they are
// dropped. A group with a pending transaction is neither deleted
// (DeleteGroups answers NON_EMPTY_GROUP) nor expired, nor are its pending
// partitions' offsets. Offset tombstones (OffsetDelete, expiry) delete
// the committed offset only, live and on load alike; Kafka also drops the
// pending ones.
//
// KIP-848 groups store only their group epoch. Their members, target and
// current assignments live in memory: after a coordinator move or restart
// members get UNKNOWN_MEMBER_ID and rejoin with epoch 0, keeping their
// committed offsets, and the group epoch keeps increasing. Classic groups
// come back Stable with their generation and assignments, so their
// members carry on without a rebalance.
//
// # Writes
//
// A shard writes through a pipeline with one Append in flight: writes made
// while an append is in flight go out together in the next one (group
// commit: one batch, one wait for the high watermark). State changes apply
// only after their batch is committed, in log order; a failed append is
// "maybe written" and its requests get NOT_COORDINATOR (leadership lost),
// INVALID_COMMIT_OFFSET_SIZE (too large) or COORDINATOR_NOT_AVAILABLE.
//
// # Bounded size
//
// Shale has no log compaction yet. Instead, when a partition's log holds
// more than twice the bytes of its live state plus SnapshotMinBytes, the
// shard appends a snapshot (every group's last stored metadata and every
// committed offset, in batches of under 1 MiB) and then moves the log
// start to the snapshot's first offset (Log.DeleteBefore). Nothing else of
// the coordinator's is appended between the snapshot's batches, and it is
// taken only between appends, so it reflects exactly the records before
// it: replaying from any log start (before or after the move) gives the
// same state. A failed snapshot is retried once the log has grown by
// another floor. The topic is created with retention.ms=-1 and
// retention.bytes=-1, so nothing but these moves deletes its data.
// Nothing here writes to etcd: the commit rate costs appends to a local
// log, replicated like any partition.
//
// Pending transactions bound the move. A pending offset cannot be
// rewritten into the snapshot (it must stay in its producer's
// transactional batch, before the marker), and neither can a committed
// offset whose record came before a pending one of the same partition: a
// copy after the pending one would win at the marker on a reload, where
// the original loses. Those committed offsets are left out of the
// snapshot, and the log start moves to the snapshot or to the earliest
// batch these records are in, whichever comes first (no move when that is
// not past the current start). Replaying from there gives the same state:
// the records kept replay in order, and the snapshot rewrites the rest.
// Once such a snapshot is taken the next one waits until the log has
// grown by the live state and the floor again; after the markers a
// snapshot moves the start past the transactions.
//
// # Expiry
//
// Every offsets.retention.check.interval.ms, offsets expire as Kafka's
// KIP-211 says: those of an empty group offsets.retention.minutes after it
// became empty (after their commit for a group that only stores offsets),
// those of a topic no member of a live group subscribes to after their
// commit, and those committed with their own retention at its end. An
// empty group left without offsets is then deleted (tombstones).
package group
