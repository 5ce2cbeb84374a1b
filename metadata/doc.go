// Package metadata keeps Shale's cluster metadata in etcd: the broker
// registry, topics and their configs, partition state (replicas, leader,
// leader epoch, ISR) changed only by compare-and-swap, producer id blocks,
// and the controller election. It also runs the embedded etcd of
// `shale dev` and of the tests.
//
// # Keyspace (a format: operators read it with etcdctl)
//
// All keys sit under a prefix, "/shale/" by default. Values are JSON.
//
//	<prefix>cluster/id                     the cluster id, a 22-character base64url UUID, written once
//	<prefix>cluster/secret                 the inter-broker secret (43 characters of base64url), written once
//	<prefix>brokers/<id>                   Broker, attached to the broker's lease (gone when it dies)
//	<prefix>broker-configs/<id>            a broker's dynamic configs, a JSON object of name to value (kafka-configs --entity-type brokers); {} (no configs) once emptied: kept once written
//	<prefix>broker-configs/default         the cluster-wide default dynamic broker configs (--entity-default)
//	<prefix>client-quotas/<entity>         a client quota entity's quotas, a JSON object of name to number (kafka-configs --entity-type users/clients/ips); the entity is QuotaEntity.Key, such as user=alice/client-id or client-id=app%2F1; {} once emptied: kept once written
//	<prefix>topics/<name>                  Topic: id, configs, internal flag, partition count
//	<prefix>creating/<name>                a creation (or addition of partitions) under way: its topic id, on a lease
//	<prefix>partitions/<name>/<index>      Partition: replicas, leader, leader epoch, ISR, partition epoch; unarchived until a tiered leader first uploads; recovering: ISR members back from a machine crash, with their recovered log ends, until the controller has elected
//	<prefix>deleted-topics/<topic id>      DeletedTopic: name, id, time; the tombstone of a deleted topic
//	<prefix>producer-ids/next              the next unallocated producer id (a JSON number)
//	<prefix>controller//<lease>            controller candidates (the lease id in hex), each on its lease; the oldest holds the role (etcd concurrency.Election's layout)
//	<prefix>controller-state/incarnations  the broker incarnations (registration revisions) the controller last acted on, a JSON object of id to revision: a broker registered since restarted, and leaves ISRs and leaderships even when the controller that saw it go died too
//	<prefix>shutting-down/<id>             present while broker <id> is in a controlled shutdown, on its lease
//
// <topic id> is base64url without padding, as Kafka prints topic ids.
// <id> and <index> are decimal, zero-padded to 10 digits so that keys sort
// numerically. The keyspace grows with brokers, topics and partitions, never
// with data, retention or commit rates: the list of a partition's remote
// segments lives in the object store, and group offsets live in the
// __consumer_offsets topic.
//
// # Deleting data is a recorded decision
//
// A broker removes a topic's log directories only when a tombstone
// deleted-topics/<topic id> names it; DeleteTopic writes the tombstone in
// the transaction that removes the topic and its partitions. A topic that
// is merely missing (a broker that was down while the keys changed), a
// record that cannot be decoded, or a partition whose replicas no longer
// name the broker keeps its data: the broker closes that log, reports it,
// and serves it again once the metadata names it. Tombstones are small and
// kept (one per deleted topic); an operator may remove old ones with
// etcdctl once no broker still holds a directory of that topic.
//
// # Consistency
//
// A topic is deleted in one transaction. It is created in several, each
// within etcd's default limits (128 operations, 1.5 MiB): its partition
// records in chunks under a creating/<name> marker on a lease, then the
// topic record, the commit point, whose partition count says which
// partition records are its own; readers ignore the others, and the
// controller deletes those a creation left when its marker expired (see
// create.go). Partitions are added the same way, the new count last.
// A partition changes only through UpdatePartition, a compare-and-swap on
// its partition epoch, which every change bumps. Writes that depend on
// being the controller are fenced on the election key's revision
// (Leadership.Txn, Leadership.UpdatePartition). An etcd error after a
// request was sent is indeterminate: the write may still apply later (held
// in a leader that lost its quorum), so a re-read alone is no answer. The
// write is settled with a fence, a write that makes its guard fail if it
// comes later: a partition update's or a config change's key is written
// back unchanged on the revision it was guarded on (Store.fence), a broker
// config record still missing is created as {} (no configs; a record of
// broker configs is never removed after, which would let a write guarded
// on its absence apply again), a creation's marker is deleted while it is
// still its own. What the fence cannot settle is reported as
// ErrIndeterminate.
package metadata
