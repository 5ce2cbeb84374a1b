// Package tiering moves a partition's sealed segments to object storage and
// reads them back: the upload of sealed segments (Archiver), the
// per-partition manifest committed with conditional PUTs fenced by leader
// epoch (ManifestStore), remote reads through a byte-bounded chunk cache
// with read-ahead (Reader), remote retention and orphan cleanup (pure
// planners), topic deletion, and the descriptors that make a bucket
// readable without the cluster that wrote it. It knows nothing of the
// Kafka wire protocol; the broker composes it with localseg.
//
// This comment is the specification of the archive format. A bucket
// written by Shale is meant to be read for years, by Shale and by people
// who only have this text: every layout below is frozen. A change gets a
// new magic or version number, and readers keep reading the old ones.
//
// # Keys
//
// All keys sit under an optional prefix P (the object-store URL's path; no
// prefix means keys start at the bucket root). T is a topic directory:
// the topic name, a dash, and the topic id in unpadded base64url (Kafka's
// printed form, 22 characters), so a re-created topic of the same name
// never mixes with the old one. N is the partition number in decimal. B is
// a base offset as 20 decimal digits, U a 32-hex-digit random id (UUIDv4)
// chosen for each upload attempt, so that two leaders, or two attempts of
// one leader, never write the same key.
//
//	P/shale-archive.json                    archive descriptor (JSON)
//	P/T/topic.json                          topic descriptor (JSON)
//	P/T/deleted.json                        deletion marker (JSON)
//	P/T/N/manifest                          partition manifest (binary)
//	P/T/N/spill-B-U.manifest                spilled manifest part (binary)
//	P/T/N/swept.json                        the leader's sweep note (JSON)
//	P/T/N/cleaner.json                      the leader's cleaner note (JSON)
//	P/T/N/scrubbed.json                     the leader's scrub note (JSON)
//	P/T/N/B-U.log                           segment: Kafka record batches
//	P/T/N/B-U.indexes                       the segment's companion (binary)
//	P/groups/C/K.json                       committed offsets of the groups of
//	                                        partition K of cluster C's
//	                                        __consumer_offsets (JSON)
//
// An object is never overwritten, except the manifest, the descriptors,
// the notes and the groups' offsets. Segment and companion objects not named by the manifest
// (or one of its spilled parts) are not part of the archive: an upload in
// progress, or one whose commit never happened; cleanup deletes them once
// they are older than a grace period.
//
// Within a partition's directory the keys sort by base offset (B is fixed
// width), and the cleaner note, the manifest, the scrub note, the
// spilled parts and the sweep note after every segment and companion: a listing that starts
// after P/T/N/B (S3's StartAfter) holds the segments from base offset B
// on, the notes, the manifest and every spilled part. The leader's
// periodic cleanup lists only that tail, where uploads can have left
// objects, and the objects below the first segment the manifest names,
// where remote retention can (a page when there are none); a full
// listing runs about daily, and finds the objects a compaction (see
// Compaction) left anywhere when it stopped midway.
//
// The sweep note is not part of the archive's data: a reader may ignore
// it. It is how a leader tells the next where the tail starts:
//
//	{"leader_epoch": 7, "uploads_from": 123456, "swept_at": "2026-..."}
//
// The objects that failed uploads left, and that the cleanups up to
// swept_at did not delete, have base offsets of uploads_from or above.
// Without a note a new leader lists everything once.
//
// # Segment (.log)
//
// Byte for byte the local segment file (see package localseg): record
// batches, magic v2, offsets ascending from the base offset, each with its
// CRC-32C. Nothing else: no header, no padding. A segment's first batch may
// start above B (a segment cut by a follower's gap); its batches end just
// below the manifest entry's next offset.
//
// # Companion (.indexes)
//
//	magic "SHCI" | version u16 = 1 | section count u16 |
//	crc32c u32 of the section table |
//	section table: count × (kind u16 | reserved u16 = 0 | length u32 | crc32c u32)
//	sections: their bytes in table order, back to back
//
// Big endian; crc32c is CRC-32C (Castagnoli). Each section's checksum
// covers its bytes. Kinds (a reader skips kinds it does not know):
//
//	1 offset index   entries of relative offset u32 | position u32: the
//	                 batch holding offset B+rel starts at byte position in
//	                 the .log (sparse; both fields strictly ascending)
//	2 time index     entries of timestamp i64 | relative offset u32: ts is
//	                 the largest batch timestamp up to the batch whose last
//	                 offset is B+rel (both ascending)
//	3 producer state the producer snapshot as of the segment's next offset,
//	                 in localseg's snapshot format ("SHPS", see localseg)
//	4 leader epochs  entries of epoch i32 | start offset i64: the epoch in
//	                 force at B, then each epoch that started inside the
//	                 segment (both ascending)
//	5 aborted txns   entries of producer id i64 | first offset i64 |
//	                 last offset i64 | last stable offset i64: each
//	                 transaction whose abort marker lies in the segment,
//	                 as Kafka's transaction index (the .txnindex KIP-405
//	                 uploads with a remote segment; its entries less their
//	                 version i16, localseg's .txnindex). Last offset is the
//	                 marker's, in [B, next offset); first offset, at or
//	                 below it, is the transaction's first record, perhaps
//	                 in an earlier segment; last stable offset is the
//	                 partition's once the marker was written (the first
//	                 offset of the oldest transaction then still open, else
//	                 the marker's offset + 1). Producer id and offsets are
//	                 not negative, first offset <= last offset, last stable
//	                 offset <= last offset + 1; strictly ascending by last
//	                 offset (a marker is one record). Written only when the
//	                 segment has such a marker
//
// Shale writes sections 1 to 4, once each, in that order, then 5 when
// there are aborted transactions. New kinds come without a new version: a reader skips
// the kinds it does not know (checking their checksums all the same), so
// a version 1 reader that predates kind 5 reads a companion that has it
// (without its aborted transactions: such a reader serves no transactional
// consumer), and one that knows kind 5 reads a companion without it as a
// segment with no aborted transaction. A change to a kind's layout gets a
// new kind or version.
//
// A read_committed consumer of offsets [F, T) skips the records of the
// aborted transactions with last offset >= F and first offset < T. Their
// markers lie at or above F, so a reader looks at the segment holding F
// and the ones after it. Going past T it can stop after an entry whose
// last stable offset is at or above T (as Kafka does: every transaction
// whose marker comes later started at or above it), or after a segment
// ending at or above T whose producer state (section 3, its snapshot at the
// segment's next offset) holds no transaction that is open and started
// below T; else it goes on to the end of the remote log, then the local
// one. Where manifest entries overlap, a segment's entries with markers
// below the previous entry's next offset are left out (that entry covers
// those offsets).
//
// # Manifest (manifest) and spilled parts (spill-*.manifest)
//
//	magic "SHMF" (manifest) or "SHMS" (spilled part) | version u16 = 1 |
//	flags u16 = 0 | crc32c u32 of every byte after this field | body
//	body:   commit id [16] | leader epoch i32 | log start offset i64 |
//	        committed at i64 (Unix ms) | spill count u32 | spills |
//	        segment count u32 | segments
//	spill:  base offset i64 | next offset i64 | segment count u32 |
//	        bytes i64 | max timestamp i64 | id [16]
//	segment: base offset i64 | next offset i64 | size i64 |
//	        companion size i64 | max timestamp i64 | upload epoch i32 |
//	        id [16] | epoch count u16 | epoch count × (epoch i32 | start i64)
//
// When a topic's remote storage is turned off (topic configs
// remote.storage.enable=false and remote.log.delete.on.disable=true, as
// Kafka's KIP-950 names them), each partition's manifest is first
// committed with its log start at its end (nothing is readable from the
// bucket from then on), then its objects go, then the manifest is
// committed empty with its log start at 0, as a partition's that was
// never archived, and stays so.
//
// The manifest lists the partition's remote segments, ascending by next
// offset; segments may overlap (a new leader's segment boundaries differ
// from the old leader's: the later entry covers from the earlier's next
// offset) and may leave gaps (remote storage enabled on a topic that had
// already deleted data locally). The log start offset is the first offset
// consumers may read; entries wholly below it await deletion. The leader
// epoch is that of the leader that committed it; the commit id is random
// per commit.
//
// Spilled parts keep the manifest small however long the history: when a
// commit would make the manifest larger than 64 KiB, its oldest entries
// (all but about 16 KiB of them) move to a new spilled part, an immutable
// object in the same layout with magic "SHMS", no spills of its own, its
// id as commit id, and its segments. The manifest keeps a reference per
// part, oldest first and before its own segments: the part's first base
// offset, last next offset, segment count, total segment bytes, largest
// timestamp (-1 when unknown) and id, naming spill-<base>-<id>.manifest. A
// reader holds a part against its reference (count, first base, last next
// offset, bytes) and refuses one that disagrees; a part the manifest names
// but the bucket lacks is an error, never a gap. Remote retention drops a
// part whole, or replaces the first part by a new one without its expired
// entries; either way the manifest is committed before the old part and
// the expired segments are deleted.
//
// # Committing
//
// Only the partition's leader writes the manifest, and only with a
// conditional PUT: If-None-Match: * for the first, If-Match: <ETag of the
// version it read> after. A writer whose leader epoch is below the one in
// the stored manifest is fenced and gives up. A PUT whose outcome is
// unknown (timeout, lost response) is settled by reading the manifest
// again: the commit id says whether the write took. A write that took and
// was then replaced by a newer leader's manifest (built on it) reads back
// as fenced: a fenced writer deletes only the objects the stored manifest
// does not name, and a writer whose write may still land deletes nothing
// (orphan cleanup does, later). A write may reach the store late, after
// its writer gave up on it: it lands only while the manifest is still the
// version it was conditional on. So a new leader first commits the
// manifest unchanged under its epoch (a fence) before it sweeps orphans,
// and a leader whose own write's outcome is unknown, and which reads back
// the version that write was conditional on, fences it the same way
// before it commits or sweeps again: after the fence no such write can
// land and name objects a sweep deleted. The order of an upload
// is: segment, companion, the spilled part the commit creates (if any),
// then the manifest; a segment is deleted from
// local disk only after the manifest that names it is committed. Remote
// retention commits the manifest without the expired entries (and a higher
// log start) before it deletes their objects.
//
// # Compaction
//
// The remote log of a compacted topic (cleanup.policy with compact) is
// compacted by its leader, as Kafka's log cleaner compacts a local log:
// a commit replaces a run of consecutive entries by one new entry, its
// segment and companion new objects, whose batches are those of the run
// less the records compaction removed. Nothing else changes: offsets are
// never renumbered (the new segment's batches keep their base offsets
// and last offset deltas; records are missing inside batches, batches are
// missing between them, and its first batch may start above B), record
// timestamps are kept, and a tombstone kept carries its delete horizon in
// its batch header (KIP-534: attribute bit 6, the base timestamp being
// the horizon and the records' deltas rebased). A run whose records all
// went keeps one empty batch of its last batch's offsets, of no producer
// (producer id, epoch and base sequence -1, neither transactional nor
// control, no records), so that no entry is empty. The new entry spans
// the run's offsets, from the first entry's base offset to the last one's
// next offset; its leader epochs are the run's, its producer state
// (section 3) the last entry's, its aborted transactions those whose
// markers it kept. Where entries of the run overlapped, the new segment
// holds each batch once. A run in spilled parts replaces those parts: the
// commit writes one new part of their entries with the run replaced, or,
// when no part follows them, moves those entries into the manifest's own
// (spilled again as usual if they are many). The objects replaced go some
// minutes after the commit (reads begun on the manifest before it finish
// first): until then they are objects no manifest names that the leader's
// orphan sweeps leave alone, and after a crash of the leader, objects no
// manifest names, which orphan sweeps delete.
//
// The cleaner note is not part of the archive's data: a reader may ignore
// it. It tells the next pass, of this leader or the next, where to start:
//
//	{"leader_epoch": 7, "first_dirty": 123456, "horizon": 1767225600000,
//	 "cleaned_at": "2026-..."}
//
// first_dirty is the first offset the last pass did not clean (the keys
// of the segments below it were mapped then), horizon the earliest time
// (Unix ms) a tombstone or transaction marker it kept may go, -1 when
// none: a pass is due then even with nothing dirty. Without a note a pass
// cleans the whole remote log.
//
// # Scrubbing
//
// The leader reads its remote log back about once a scrub interval and
// checks every object the manifest names (VerifyPartition: the objects'
// sizes, every segment's batches, CRC-32C included, and its companion's
// indexes against them), a bounded stretch at a time. Its scrub note,
// not part of the archive's data either, tells the next step, of this
// leader or the next, where to go on and when the last complete scrub
// ended:
//
//	{"leader_epoch": 7, "next_offset": 123456, "started_at": "2026-...",
//	 "completed_at": "2026-...", "damaged": 0}
//
// next_offset is 0 when no scrub is under way; damaged counts the damaged
// objects the scrub under way found so far (the last complete one's when
// none is). Without a note a leader scrubs from the start.
//
// # Descriptors (JSON)
//
//	shale-archive.json  {"format": "shale-tiered-storage", "version": 1,
//	                     "created_at": RFC 3339 time}
//	topic.json          {"name", "id" (base64url), "partitions",
//	                     "configs" (Kafka names), "updated_at"}
//	deleted.json        {"name", "id", "deleted_at"}: the topic was deleted;
//	                     its other objects are being removed, or are gone.
//	                     The marker stays, a tombstone: a write that lands
//	                     after the deletion (a descriptor, a segment held on
//	                     its way) does not bring the topic back, and the
//	                     next deletion pass removes it
//	groups/C/K.json     {"cluster": C, "partition": K, "partitions": N,
//	                     "groups": [{"group", "offsets": [{"topic",
//	                     "topic_id" (base64url), "partition", "offset"}]}],
//	                     "updated_at"}: written by the leader of partition
//	                     K of cluster C's offsets topic (C is the cluster
//	                     id), about once a minute when its groups' offsets
//	                     changed; every write holds all of them. N is the
//	                     partition count by which C mapped a group to K
//	                     (Kafka's: Java's String.hashCode of the group
//	                     id, its absolute value, 0 for -2^31, modulo N), so
//	                     the object speaks for every group that maps to K,
//	                     named or not; objects written before N was
//	                     recorded lack it, and speak only for the groups
//	                     they name. A cluster rebuilt on the bucket writes
//	                     under its own id; a reader takes, for each group,
//	                     the newest object that speaks for it: its offsets
//	                     there, or none when that object does not name it
//	                     (deleted, or expired, in the newest cluster that
//	                     held it). A topic_id names the topic the offset was
//	                     committed on; offsets of a topic since deleted or
//	                     re-created do not apply
//
// With the descriptors, a bucket lists its topics and their partitions, and
// a partition's records are its manifest's segments read in order from the
// log start offset: no etcd, no broker. ListTopics, LoadManifest and
// ReadBatches do exactly that (see the package example);
// ReadCommittedBatches reads as a read_committed consumer, without the
// transaction markers and the aborted transactions' batches. They are also
// enough to rebuild a cluster that lost its metadata: `shale topic restore`
// creates each topic of the bucket again from its descriptor, under its
// id, each partition's leader continues from its manifest's end, and the
// groups get their newest offsets back from groups/.
package tiering
