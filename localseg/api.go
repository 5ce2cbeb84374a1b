package localseg

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Errors. The broker maps them to Kafka error codes at its edge.
var (
	// ErrOffsetOutOfRange: a read below the log start or above the log end.
	ErrOffsetOutOfRange = errors.New("localseg: offset out of range")
	// ErrOutOfOrderSequence: an idempotent producer's sequence number is
	// not the one after its last appended batch.
	ErrOutOfOrderSequence = errors.New("localseg: out of order sequence number")
	// ErrInvalidProducerEpoch: a producer epoch older than the one the log
	// has seen for that producer id (the producer was fenced).
	ErrInvalidProducerEpoch = errors.New("localseg: invalid producer epoch")
	// ErrTransactionCoordinatorFenced: a transaction marker from a
	// coordinator whose epoch is older than that of the coordinator that
	// wrote the producer's last marker (Kafka's
	// TRANSACTION_COORDINATOR_FENCED).
	ErrTransactionCoordinatorFenced = errors.New("localseg: transaction coordinator fenced")
	// ErrInvalidTxnState: a batch outside a transaction from a producer
	// whose transaction is open (Kafka's INVALID_TXN_STATE).
	ErrInvalidTxnState = errors.New("localseg: invalid transaction state")
	// ErrOffsetsNotIncreasing: a follower append whose offsets do not
	// follow the log end.
	ErrOffsetsNotIncreasing = errors.New("localseg: offsets not increasing")
	// ErrClosed: the log was closed or deleted.
	ErrClosed = errors.New("localseg: log closed")
	// ErrOffline: a write or fsync of the log failed, so the log cannot
	// prove what is on stable storage. It refuses every change (and never
	// fsyncs again over pages the kernel may have dropped) until it is
	// reopened, which recovers from the last durable point. Log.Offline
	// returns it wrapped with the failure.
	ErrOffline = errors.New("localseg: log offline after a failed write or fsync")
)

// Config holds one log's settings, named after Kafka's topic configs.
// Zero fields take Kafka's defaults in EnsureDefaults.
type Config struct {
	SegmentBytes       int64 // segment.bytes, default 1 GiB
	SegmentMs          int64 // segment.ms, default 7 days
	SegmentIndexBytes  int64 // segment.index.bytes, default 10 MiB
	IndexIntervalBytes int64 // index.interval.bytes, default 4096
	RetentionMs        int64 // retention.ms, default 7 days; -1 keeps forever
	RetentionBytes     int64 // retention.bytes, default -1 (no size limit)
	FlushMessages      int64 // flush.messages, default MaxInt64 (leave it to the page cache)
	FlushMs            int64 // flush.ms, default MaxInt64
	FileDeleteDelayMs  int64 // file.delete.delay.ms, default 60000
	// ProducerIDExpirationMs drops idle producer state
	// (producer.id.expiration.ms), default 1 day.
	ProducerIDExpirationMs int64
	// Preallocate (preallocate, default false) writes zeros ahead of the
	// active segment's appends, so that they overwrite written blocks
	// and an fsync of them writes no inode (see prealloc.go). For logs
	// that are fsynced often (acks=all on a leader alone,
	// flush.messages), and zeros only while the group commit is asked to
	// sync the log; it doubles the bytes written, keeps up to 32 MiB
	// of zeros per active segment on disk, and holds a descriptor of its
	// own, outside the FileCache's bound, while it writes them.
	Preallocate bool
	// UploadsStopped lifts the guard of SetUploadedEnd on a tiered log
	// whose uploads are stopped: nothing more will reach the object
	// store, so local retention deletes as in an untiered log, what the
	// object store lacks too. It is part of the config, not a switch of
	// its own, so that it changes in one SetConfig with the retention it
	// goes with: no retention pass applies a tiered log's local
	// retention unguarded, or the guard to the total retention.
	UploadsStopped bool
}

// EnsureDefaults fills zero fields with Kafka's defaults.
func (c *Config) EnsureDefaults() {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.SegmentBytes, 1<<30)
	def(&c.SegmentMs, 7*24*3600*1000)
	def(&c.SegmentIndexBytes, 10<<20)
	def(&c.IndexIntervalBytes, 4096)
	def(&c.RetentionMs, 7*24*3600*1000)
	def(&c.RetentionBytes, -1)
	def(&c.FlushMessages, math.MaxInt64)
	def(&c.FlushMs, math.MaxInt64)
	def(&c.FileDeleteDelayMs, 60000)
	def(&c.ProducerIDExpirationMs, 24*3600*1000)
}

// Validate rejects settings no log can run with (after EnsureDefaults).
// The broker validates Kafka's ranges at its edge; this is the last line.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
		min  int64
	}{
		{"segment.bytes", c.SegmentBytes, 14},
		{"segment.ms", c.SegmentMs, 1},
		{"segment.index.bytes", c.SegmentIndexBytes, 8},
		{"index.interval.bytes", c.IndexIntervalBytes, 0},
		{"retention.ms", c.RetentionMs, -1},
		{"retention.bytes", c.RetentionBytes, -1},
		{"flush.messages", c.FlushMessages, 1},
		{"flush.ms", c.FlushMs, 0},
		{"file.delete.delay.ms", c.FileDeleteDelayMs, 0},
		{"producer.id.expiration.ms", c.ProducerIDExpirationMs, 1},
	} {
		if f.v < f.min {
			return fmt.Errorf("localseg: %s is %d, at least %d", f.name, f.v, f.min)
		}
	}
	return nil
}

// Options are the process-wide parts a log is opened with.
type Options struct {
	// Files bounds the open descriptors of all logs sharing it. Nil means
	// a private cache (tests).
	Files *FileCache
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for segment.ms, retention and producer expiry;
	// nil means time.Now.
	Now func() time.Time
	// FS is the filesystem; nil means the operating system's.
	FS FS
	// OnSeal, when set, is called when a segment is sealed (rolled),
	// with the log's lock held: it must only take note (tiering wakes
	// its uploader), never block or call the log.
	OnSeal func(SegmentInfo)
	// ScanBudget bounds the memory OffsetForTimestamp and MaxTimestamp
	// use to look inside batches, shared with every other reader of
	// batches the budget is given to; nil means no shared bound.
	ScanBudget *recordbatch.Budget
	// OnDamage, if set, is told of every damaged stretch a read finds in
	// a sealed segment (reads then skip it): replication or tiering may
	// fetch the range again from a replica or the bucket.
	OnDamage func(Damage)
	// OnSync, if set, is told of every sync of the group commit (see
	// SyncScheduler) once it ended, outside the log's locks: it must
	// only take note (the broker's flush metrics), never block or call
	// the log.
	OnSync func(SyncStats)
}

// SyncStats describes one sync of the group commit.
type SyncStats struct {
	// Took is the sync's own time: its fdatasyncs, from the first to
	// the return of the last (waiting its turn with the zeroing ahead
	// of the active segment not included).
	Took time.Duration
	// Answered is how many waiters (acks=all produces, WhenDurable
	// calls) it answered, made durable or told of its failure: how much
	// the group commit batched.
	Answered int
	// Err is the sync's failure (the log is then offline), nil if none.
	Err error
}

// AppendResult describes an append.
type AppendResult struct {
	FirstOffset  int64 // offset of the first record appended
	LastOffset   int64 // offset of the last record appended
	MaxTimestamp int64 // largest record timestamp of the appended batches
	// Duplicate: an idempotent producer retried a batch the log already
	// holds. Nothing was appended; the offsets are the original's.
	Duplicate bool
	// LogStartOffset after the append.
	LogStartOffset int64
	// FlushDue: the append reached flush.messages, and a sync to the log
	// end is under way. To answer only once it is done, as Kafka's
	// flush.messages does, wait with WhenDurable(LastOffset + 1).
	FlushDue bool
}

// Range is a byte range of a segment file, ready for sendfile. It holds a
// reference that keeps the file open (even if the descriptor cache evicts
// it or retention deletes the segment) until Release. Copies of a Range
// share the reference: releasing any of them releases it, once.
type Range struct {
	file   *os.File
	off    int64
	length int64
	ref    *rangeRef
}

// File is the open segment file; use it only before Release.
func (r *Range) File() *os.File { return r.file }

// Offset is the position of the range in the file.
func (r *Range) Offset() int64 { return r.off }

// Len is the number of bytes in the range; zero means nothing to read.
func (r *Range) Len() int64 { return r.length }

// Release lets the file be closed. Safe to call more than once.
func (r *Range) Release() {
	if r.ref != nil {
		r.ref.release()
		r.ref = nil
	}
}

// Bytes copies the range into a new slice (for internal readers such as
// the group coordinator loading its partition; fetches use sendfile).
func (r *Range) Bytes() ([]byte, error) {
	buf := make([]byte, r.length)
	if r.length == 0 {
		return buf, nil
	}
	_, err := r.file.ReadAt(buf, r.off)
	return buf, err
}

// EpochEntry is one line of the leader-epoch checkpoint: the epoch and the
// first offset written in it.
type EpochEntry struct {
	Epoch       int32
	StartOffset int64
}

// SegmentInfo describes one segment (for tiering and admin tools).
type SegmentInfo struct {
	BaseOffset   int64
	NextOffset   int64 // offset after the last batch
	Size         int64
	MaxTimestamp int64
	Active       bool
	Path         string
}

// A Batch is re-exported for callers that only import localseg.
type Batch = recordbatch.Batch
