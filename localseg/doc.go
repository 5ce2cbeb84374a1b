// Package localseg is one partition's local log: a directory of segment
// files holding Kafka record batches, their offset and time indexes, and the
// small checkpoint files that make the log restartable. It appends (as
// leader or follower), reads as file ranges for sendfile, rolls segments,
// recovers after a crash, truncates, and applies local retention. It knows
// nothing of the network, of etcd or of object storage.
//
// This comment is the specification of the directory's contents. Shale's
// archives outlive the code that wrote them: every layout below is frozen.
// A change of layout gets a new magic or version number, and readers keep
// reading the old ones.
//
// # Directory
//
// All numbers in file names are offsets, zero-padded to 20 decimal digits
// (Kafka's naming). A partition directory holds:
//
//	00000000000000000000.log        segment: record batches, from base offset 0
//	00000000000000000000.index      sparse offset index of that segment
//	00000000000000000000.timeindex  time index of that segment
//	00000000000000000000.txnindex   aborted transactions whose markers are in that segment
//	00000000000000001234.snapshot   producer state as of offset 1234
//	leader-epoch-checkpoint         leader epochs and the offset each started at
//	log-start-offset                first offset consumers may read
//	recovery-point                  offset below which everything was fsynced
//	high-watermark                  the partition's high watermark (replication)
//	lost-ranges                     offsets reads skip: damage found in sealed segments
//	cleaner-offset-checkpoint       compaction: the first dirty offset (compact.go)
//	.clean-shutdown                 present only while the log is cleanly closed
//	*.tmp                           a file being written (removed on open)
//	*.deleted                       segment files awaiting deletion (removed on open)
//	<base>.log.broken               bytes cut off by crash recovery (see Recovery)
//	<base>.log.cleaned              a segment compaction is writing (removed on open)
//	<base>.log.swap                 a compacted segment being swapped in: open
//	                                completes the swap (see compact.go)
//
// Files Shale defines carry a CRC-32C (Castagnoli) checksum and a version;
// one that does not check out is never trusted: an index is rebuilt from its
// segment, a snapshot is skipped for an older one (or the log is replayed),
// a corrupt recovery point means recovery from the first segment, a corrupt
// log start reads as the first segment's base, a corrupt epoch checkpoint is
// rebuilt from the batches, a corrupt clean-shutdown marker means recovery.
// None of them makes Open fail.
//
// # Segments (.log) — Kafka's format
//
// A segment is the concatenation of record batches (magic v2, see package
// recordbatch for the layout) exactly as the producer or the leader sent
// them, with the base offset and partition leader epoch stamped in place
// (those fields lie outside the batch CRC). Batches in a segment have
// increasing offsets, at or above the segment's base offset and at most
// MaxInt32 above it. Offsets may skip (a follower of a compacted leader),
// never go back. The segment's name is its base offset. Only the last
// segment (the active one) is written to; a sealed segment never changes
// except by truncation. Nothing else is in a .log file: no header, no
// padding. With preallocation (the preallocate topic config) the active
// segment's file runs on past its last batch with zeros written ahead of
// the appends; they are not part of the log (a batch header of zeros is
// no batch: its length is 0), and a roll or Close cuts them, so a sealed
// segment, or the active one after a clean shutdown, ends at its last
// batch.
//
// # Offset index (.index)
//
//	entry   relative offset u32 | position u32                  (8 bytes)
//	trailer "SHIX" | entry count u32 | crc32c u32 | reserved u32 (16 bytes)
//
// Big endian. An entry maps the base offset of a batch, relative to the
// segment's base, to the batch's byte position in the .log. An entry is
// added for a batch when at least index.interval.bytes were appended since
// the previous entry (the first batch of a segment is at position 0 and
// needs none). Entries ascend strictly in both fields. The checksum covers
// the entries. Finding an offset: the last entry at or below it, then a
// walk of batch headers from its position. Unlike Kafka's, the file is not
// preallocated and ends with the trailer.
//
// # Time index (.timeindex)
//
//	entry   timestamp i64 | relative offset u32                  (12 bytes)
//	trailer "SHTX" | entry count u32 | crc32c u32 | reserved u32 (16 bytes)
//
// An entry (ts, rel) says: ts is the largest batch max timestamp among the
// batches up to and including the one whose last offset is base+rel, and
// no batch before that one holds a larger timestamp. Entries are written
// alongside offset-index entries (for the largest timestamp before the
// indexed batch) when it grew, and a sealed segment's time index ends with
// an entry for the segment's largest timestamp. Timestamps ascend strictly,
// relative offsets never descend.
//
// Both index files of a sealed segment are written when it is sealed (and
// those of the active segment on Close). They are written through a
// temporary file and a rename; their durability comes with the segment's
// (see Durability). An index is loaded only when a read needs it, its
// checksum and its ordering verified then (positions must lie inside the
// segment); one that does not check out is rebuilt from the segment's batch
// headers and rewritten.
//
// # Transaction index (.txnindex) — Kafka's format
//
//	entry   version i16 = 0 | producer id i64 | first offset i64 |
//	        last offset i64 | last stable offset i64            (34 bytes)
//
// Big endian, no header, no trailer, no checksum: Kafka's .txnindex, which
// tiered storage ships with the segment. One entry per aborted
// transaction whose ABORT marker lies in the segment, in marker order:
// the producer, the offset of the transaction's first batch in this
// partition, the marker's offset, and the log's first unstable offset
// right after the transaction ended (the first offset of the oldest
// transaction still open, or the marker's offset + 1 when none was). A
// segment without the file has no aborted transaction (logs written
// before transactions have none). An entry is appended when its marker is
// appended (the file is created with the first), written into the page
// cache before the marker's batch, and fsynced by every sync of the
// segment that follows (see Durability), so it is on stable storage
// before the recovery point passes its marker. A rebuild, a truncation or
// recovery rewrites the file through a temporary and a rename (or removes
// it), and deletion renames and removes it with the segment. A file that
// is not whole entries of version 0, strictly ascending, each possible
// (offsets not negative, first at or below last, last stable offset at
// most last + 1) and with its markers inside the segment, is rebuilt
// from the batches at Open (see Recovery).
//
// # Producer snapshot (<offset>.snapshot)
//
//	magic "SHPS" | version u16 = 1 | crc32c u32 of every byte after it |
//	count u32 | count × entry, in ascending producer id
//	entry: producer id i64 | epoch i16 | last timestamp i64 |
//	       coordinator epoch i32 | current txn first offset i64 |
//	       batch count u8 (<= 5) | batch count × batch
//	batch: first sequence i32 | last sequence i32 | first offset i64 |
//	       last offset i64 | max timestamp i64
//
// The state of every idempotent or transactional producer after all
// batches below the offset in the name: its epoch, its last five batches
// (for duplicate detection), the largest timestamp it wrote (for
// producer.id.expiration.ms), the epoch of the coordinator that wrote its
// last transaction marker (-1 before any) and the first offset of its
// open transaction (-1: none), so that an open transaction holds the last
// stable offset across a restart. A snapshot is taken at the base offset
// of each new segment when the one before it is sealed (so each sealed
// segment has the snapshot at its end offset), and at the log end on
// Close; a rebuild of the state (Open, a truncation) writes the ones it
// replays past that are missing or bad (a roll's, lost with a crash before
// its background flush), and retention writes the one at the first segment
// it keeps when it is missing (a roll's that could not be written), from
// the segments it deletes. Snapshots go with the segments below them, and
// past the log end with a truncation.
//
// # Checkpoints (text)
//
//	shale-checkpoint <kind> <version>
//	<line>
//	...
//	crc32c <8 lowercase hex digits: CRC-32C of every byte above this line>
//
// Lines end with '\n'. The kinds, all version 1:
//
//	leader-epoch      a line with the entry count, then "<epoch> <start offset>"
//	                  lines, both ascending: the epochs that wrote to the log
//	                  and the first offset each wrote (Kafka's
//	                  leader-epoch-checkpoint, in this framing)
//	log-start-offset  one line: the log start offset (DeleteRecords, retention)
//	recovery-point    one line: every batch below it was fsynced
//	high-watermark    one line: the high watermark (written every few seconds
//	                  without fsync, and at Close with it; read within the log)
//	clean-shutdown    one line: the log end offset at Close
//	cleaner-offset    two lines: the first offset no compaction pass has
//	                  cleaned, and the earliest time (unix ms) a tombstone or
//	                  marker the last pass kept may go, -1 for none
//	scrubbed          one line: when the last scrub that verified every
//	                  sealed segment started (unix ms; written without
//	                  fsync, and not at all while there is none)
//	lost-ranges       "<from> <to> <segment base> <found unix ms>" lines, by
//	                  from: offsets [from, to) lie in damaged batches of a
//	                  sealed segment (bad length, CRC or offsets) that reads
//	                  skip; the segment is kept, never deleted for it; a range
//	                  put back from a good copy (Repair) leaves the file
//
// Checkpoints are written to a temporary, fsynced, renamed over the old
// file, and the directory fsynced.
//
// # Durability
//
// An append is one pwrite into the page cache; the log does not fsync it on
// the append path. A crash of the process (kill -9) loses nothing that was
// written. A crash of the machine (power loss, kernel panic) loses what the
// kernel had not written back: at most the batches above the recovery
// point, which recovery then cuts at the first torn or missing batch.
//
// Who needs a batch on stable storage asks WhenDurable (the broker does for
// acks=all when the leader is the only in-sync replica, and for
// flush.messages). The SyncScheduler (durable.go) is the group commit: a
// sync, on a goroutine of its own, fdatasyncs the segments above the
// recovery point and, when a segment was created since the last directory
// fsync, the directory, all outside the log's lock, each segment through its
// cached descriptor, one sync at a time (a writeback error is reported once
// per open file description, so a segment keeps its first fsync failure
// and fails every later sync with it); it then moves the recovery point
// (in memory) to the log end it saw before it started and runs the
// callbacks it covers. Appends that arrive during a sync share the next,
// which starts when it ends, or, when it answered waiters, once as many
// have come again (the answered producers' next requests) or half a sync's
// time has passed, so that one sync covers a producer's whole window.
// flush.ms arms a timer at the first unflushed append. The recovery-point
// file is written by rolls, Flush and Close, so recovery may scan more than
// the group commit made durable, never less. Open fsyncs the parent
// directory, so that the partition directory's own entry is durable.
//
// A failed write or fsync takes the log offline (ErrOffline): it refuses
// every change, never fsyncs again (the kernel may have dropped the pages a
// failed fsync covered and marked them clean), writes no clean-shutdown
// marker, and a reopen recovers from the last durable point.
//
// A segment's transaction index is fsynced by every sync of the segment
// (the group commit's, the sealed segment's flush, Flush, Close) when
// entries were appended to it since its last fsync, before the recovery
// point moves.
//
// When a segment rolls, its index files and the new producer snapshot are
// written without fsync; a background flush fsyncs the segment, them, and
// the directory, and only then moves the recovery point past the segment
// (never past an earlier segment still unsynced). What is durable when the
// call returns: the leader-epoch checkpoint (written before the first batch
// of a new epoch), the log start offset (SetLogStartOffset), a truncation's
// lowered recovery point (written before any byte is cut), Flush, and
// everything on Close, which writes the clean-shutdown marker last.
//
// # Recovery
//
// Open deletes *.tmp and *.deleted files and the clean-shutdown marker (and
// fsyncs the directory) before the log takes a write. With a good marker it
// trusts the segments: sealed ones cost a stat and a read of the time
// index's last entry, the active one loads its index files and walks the
// batch headers after the last index entry. Without it, every batch from
// the segment holding the recovery point on is re-validated (length, magic
// 2, CRC-32C, offsets increasing from the segment base, within MaxInt32 of
// it); at the first bad batch the segment is cut (the cut bytes, up to 64
// MiB, are saved to <base>.log.broken, which Shale never reads or deletes),
// later segments are removed, and the cut segment becomes the active one.
// Only zeros after the last good batch are a preallocated tail, not
// damage, when the segment is the last one or its batches end where the
// next segment begins (sealed just before the crash): the zeros are cut
// and nothing else changes. The checked segments' indexes are rebuilt;
// leader epochs are replayed from their batches; producer state is
// rebuilt from the newest good snapshot at or below the log end (and,
// after a crash, at or below the first checked segment) plus the batches
// after it, writing a snapshot at each segment base on the way. The
// transaction indexes of the segments replayed are rebuilt with it: their
// entries from where the replay starts are those of the markers replayed;
// a transaction index that does not check out makes the replay start at
// or below its segment.
//
// # Reads and resources
//
// Read returns a Range: an *os.File, an offset and a length, for sendfile,
// with a reference that keeps the descriptor open until Release even if
// the segment is evicted from the FileCache or deleted. A read starts at
// the batch holding the offset, never exposes a batch whose last offset is
// at or past the given bound (the high watermark), may end mid-batch at
// maxBytes as Kafka's does, and never spans two segments. The FileCache
// shared by all logs bounds open descriptors (one per open segment) and the
// memory of loaded indexes. OffsetForTimestamp and MaxTimestamp stream an
// uncompressed batch's records from the file and decompress a compressed
// one as a stream (at most 256 MiB of output), charging the batch and the
// decoder's state to the shared scan budget (Options.ScanBudget) first.
// Recovery buffers batches of
// up to 8 MiB and streams the CRC of larger ones.
//
// # Concurrency
//
// Every method is safe for concurrent use. Writers (appends, rolls,
// truncation, retention, flushes, Close) serialize on the log's mutex.
// Readers take no log lock: they load the segment list and each segment's
// published size and next offset atomically; a writer publishes the size of
// new batches before their offsets, after the write. The only goroutines
// are the background flushes of sealed segments; Close waits for them.
package localseg
