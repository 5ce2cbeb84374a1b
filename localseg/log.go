package localseg

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs"
)

// File names in a partition directory besides the segments (see doc.go).
const (
	cleanShutdownFile = ".clean-shutdown"
	logStartFile      = "log-start-offset"
	recoveryPointFile = "recovery-point"
	snapshotExt       = ".snapshot"
	deletedExt        = ".deleted"
	brokenExt         = ".broken"
	// maxRecordScanBytes caps the decompressed size of one batch when
	// OffsetForTimestamp and MaxTimestamp look at its records.
	maxRecordScanBytes = recordbatch.MaxMaxDecompressed
	// maxSnapshotSize bounds what reading a producer snapshot allocates.
	maxSnapshotSize = 1 << 30
)

// Log is one partition's local log: a directory of segments.
//
// Concurrency: every method is safe for concurrent use. Appends, rolls,
// flushes, truncation and retention are serialized by mu. Read, the offset
// accessors and Segments take no lock: they load the segment list and each
// segment's published size and next offset atomically, and see only fully
// written batches. Lock order: mu, then rp, then FileCache.mu.
type Log struct {
	onDamage func(Damage)
	onSync   func(SyncStats)
	lostMu   sync.Mutex  // serializes the lost-ranges file
	hasLost  atomic.Bool // the lost-ranges file may exist
	// scrubbed caches the scrubbed file (unix ms; 0: never; -1: not
	// read yet).
	scrubbed atomic.Int64
	dir      string
	fs       FS
	fc       *FileCache
	log      *slog.Logger
	// recovered is what recovery after an unclean shutdown cut (set
	// while the log loads, for its summary line).
	recovered struct {
		truncatedBytes  int64
		removedSegments int
	}
	// openedClean: Open found the clean-shutdown marker and the log as
	// it describes (set while the log loads; see OpenedClean).
	openedClean bool
	// lostSegments: Open found no segment in a log whose start had
	// moved (set while the log loads; see LostSegmentsAtOpen).
	lostSegments bool
	// budget bounds the memory of looking inside batches (shared with
	// the broker's other readers); nil means unbounded.
	budget *recordbatch.Budget
	now    func() time.Time

	// segs is the immutable list of segments, oldest first; the last is
	// the active one. Replaced (never modified) under mu, by setSegments.
	segs atomic.Pointer[[]*segment]
	// end is the log end offset: the active segment's next offset, stored
	// after it (by publishRun and setSegments), so a reader that loads end
	// finds the bytes below it published, without the three dependent
	// loads of segs, the list and the segment. Its writers are serialized
	// as the active segment's are: under pub for a reserved write, under
	// mu with no write in flight for the rest.
	end      atomic.Int64
	logStart atomic.Int64
	closed   atomic.Bool
	tiered   tieredState
	// offline holds the error (wrapping ErrOffline) of the first failed
	// write or fsync; nil while the log is online.
	offline atomic.Pointer[error]
	// epochs is the leader-epoch cache as last published (mu.epochs is
	// the writer's copy).
	epochs atomic.Pointer[epochCache]
	// unstable is the first offset of the oldest open transaction, -1
	// when none is open, as the producer state last published it.
	unstable atomic.Int64
	// pub orders the writes done outside mu: queue holds the reserved
	// ones in offset order; each is published when it and all before it
	// are written. Lock order: mu, then pub.
	pub struct {
		sync.Mutex
		cond  sync.Cond
		queue []*writeTicket
		// base is queue's array from its first element: an emptied
		// queue starts again there instead of in a new array (queue
		// moves along its array as its head is published).
		base []*writeTicket
		// free are tickets published and given back by their writers
		// (at most maxFreeTickets), taken by the next reservations.
		free []*writeTicket
		// cut is where the first failed write cut its segment.
		cut struct {
			s   *segment
			pos int64
		}
	}
	// sync is the group commit (durable.go).
	sync SyncScheduler
	// dirGen counts files created in the directory; dirSynced is the
	// count the last directory fsync covered.
	dirGen, dirSynced atomic.Int64

	mu struct {
		sync.Mutex
		cfg       Config
		closed    bool
		epochs    epochCache
		producers producerState
		// flushTail is the newest background flush of a sealed segment;
		// each waits for the one before it so the recovery point only
		// moves past segments that are all on stable storage.
		flushTail *flushTicket
		// deletes are segment files renamed to .deleted, removed once
		// file.delete.delay.ms has passed (in ApplyRetention or Close).
		deletes []pendingDelete
	}
	// rp is the recovery point: every batch below it is on stable
	// storage (and so are the indexes of the sealed segments below it).
	// The checkpoint file may lag (persisted): the group commit moves the
	// point without writing the file, and recovery scans from the file's.
	// rp is held only to read or set these fields, never across a file
	// write: rolls and the group commit read them under mu or on the
	// produce path.
	rp struct {
		sync.Mutex
		point     int64
		persisted int64
		gen       int64 // bumped by truncation: stale background flushes give up
	}
	// compactMu serializes compaction passes (compact.go); cleanerCP is
	// the cleaner checkpoint as last read or written (nil: not read yet).
	compactMu sync.Mutex
	cleanerCP atomic.Pointer[cleanerState]
	// startMu serializes the changes of the log start (retention,
	// DeleteRecords, truncations), so that retention can write the
	// log-start checkpoint with mu released. Lock order: startMu, then
	// mu.
	startMu sync.Mutex
	// rpFile serializes the writers of the recovery-point file, held
	// from their check of rp.gen to their update of rp.persisted: a
	// raise cannot write a stale point after a truncation lowered it.
	// Lock order: mu, then rpFile, then rp.
	rpFile sync.Mutex
	hw     struct {
		sync.Mutex
		hwState
	}
	// hwFile serializes the writers of the high watermark's checkpoint
	// file (checkpointHW), which hold it, not hw, while they write.
	hwFile  sync.Mutex
	flushes sync.WaitGroup // background flushes of sealed segments
	// retiring counts the retentions renaming their segments' files
	// with mu released: Close and Discard wait for them once no
	// retention can start.
	retiring sync.WaitGroup
	// writeBacks counts the write-behind goroutines (see writeBehind):
	// Close and Discard wait for them once no write can publish.
	writeBacks sync.WaitGroup
	// zeroers counts the goroutines writing zeros ahead of the active
	// segment (prealloc.go): Close and Discard wait for them.
	zeroers sync.WaitGroup
	// diskTurn is taken by each group-commit sync for its fsyncs and by
	// the zeroing for each piece of zeros it writes and writes back (and
	// for its fdatasync), so that the two never run beside each other
	// (prealloc.go).
	diskTurn  sync.Mutex
	closeOnce sync.Once
	closeErr  error
}

type flushTicket struct {
	done chan struct{}
	ok   bool // set before done is closed
}

type pendingDelete struct {
	paths []string
	due   time.Time
}

// Open opens (or creates) the log in dir. After an unclean shutdown it
// re-validates the segments after the last recovery point (CRC-32C of each
// batch), truncates a torn or corrupt tail, rebuilds their indexes and the
// producer state; after a clean shutdown (the marker file is present) it
// skips that scan.
func Open(dir string, cfg Config, opts Options) (*Log, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, fs: opts.FS, fc: opts.Files, log: opts.Logger, now: opts.Now, budget: opts.ScanBudget, onDamage: opts.OnDamage, onSync: opts.OnSync}
	l.scrubbed.Store(-1)
	if l.fs == nil {
		l.fs = OSFS{}
	}
	if l.fc == nil {
		l.fc = NewFileCache(1 << 20)
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.mu.cfg = cfg
	l.tiered.onSeal = opts.OnSeal
	l.setProducersLocked(newProducerState())
	l.sync.l = l
	l.pub.cond.L = &l.pub.Mutex
	if err := l.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("localseg: %w", err)
	}
	// The directory's own entry must survive a crash with the data in
	// it; its files' entries are synced by the first flush.
	if err := l.fs.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("localseg: %w", err)
	}
	l.dirGen.Store(1)
	if err := l.load(); err != nil {
		l.retireAll()
		return nil, err
	}
	l.pruneLostAtOpen()
	return l, nil
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

func (l *Log) segments() []*segment { return *l.segs.Load() }

// setSegments replaces the segment list and publishes its active segment's
// next offset as the log end. Requires mu, and no write in flight (or the
// load of the log).
func (l *Log) setSegments(list []*segment) {
	l.segs.Store(&list)
	l.end.Store(list[len(list)-1].next.Load())
}

func (l *Log) active() *segment {
	s := l.segments()
	return s[len(s)-1]
}

// LogStartOffset is the first offset a consumer may read.
func (l *Log) LogStartOffset() int64 { return l.logStart.Load() }

// LocalLogStartOffset is the first offset held locally: the base offset of
// the oldest local segment, or the log start when that is higher.
func (l *Log) LocalLogStartOffset() int64 {
	s := l.segments()
	return max(l.logStart.Load(), s[0].base)
}

// LogEndOffset is the offset the next appended record will get.
func (l *Log) LogEndOffset() int64 { return l.end.Load() }

// Size is the total size of the local segment files.
func (l *Log) Size() int64 {
	var n int64
	for _, s := range l.segments() {
		n += s.size.Load()
	}
	return n
}

// OpenedClean reports whether Open found the log as its previous run
// closed it cleanly (the clean-shutdown marker present and the log as it
// says): then every record that run appended is here, and the log ends
// where it ended. After a crash it is false, whatever recovery kept.
func (l *Log) OpenedClean() bool { return l.openedClean }

// LostSegmentsAtOpen reports whether Open found no segment file in a log
// whose start had moved past 0: a log always keeps its active segment, so
// its segments were lost (a crash in the middle of a truncation that
// empties the log, or files removed from under it). The log then starts
// empty at its recorded start, which says nothing of where it ended.
func (l *Log) LostSegmentsAtOpen() bool { return l.lostSegments }

// RecoveryPoint is the offset below which everything is on stable storage
// (fsynced): what survives a crash of the machine, not just the process.
func (l *Log) RecoveryPoint() int64 {
	l.rp.Lock()
	defer l.rp.Unlock()
	return l.rp.point
}

// Offline is nil while the log is online. After a failed write or fsync it
// is an error wrapping ErrOffline and the failure: the log refuses appends,
// flushes, rolls, truncation and retention, and never fsyncs again (the
// kernel may have dropped the pages a failed fsync covered, and a later
// fsync that succeeds would not bring them back). Reopening the log
// recovers from the last durable point.
func (l *Log) Offline() error {
	if p := l.offline.Load(); p != nil {
		return *p
	}
	return nil
}

// goOffline takes the log offline for cause (the first cause is kept) and
// returns the offline error.
func (l *Log) goOffline(cause error) error {
	err := fmt.Errorf("%w: %w", ErrOffline, cause)
	if l.offline.CompareAndSwap(nil, &err) {
		l.log.Error("log offline: a write or fsync failed; it accepts nothing until reopened", "dir", l.dir, "err", cause)
	}
	return l.Offline()
}

// writableLocked is nil when the log may change. Requires mu.
func (l *Log) writableLocked() error {
	if l.mu.closed {
		return ErrClosed
	}
	return l.Offline()
}

// AppendAsLeader appends one producer batch, already accepted by
// recordbatch.ValidateProduce. It assigns offsets from the log end, stamps
// leaderEpoch into the batch (in place, outside the CRC) and records the
// epoch in the leader-epoch checkpoint when it is new. For idempotent and
// transactional producers it checks the sequence against the producer state
// (five most recent batches per producer kept for duplicate detection):
// a retry of one of them returns Duplicate with the original offsets; a gap
// returns ErrOutOfOrderSequence; an old epoch ErrInvalidProducerEpoch.
// A new epoch must start at sequence 0. A transactional batch opens its
// producer's transaction when none is open; a batch outside a transaction
// from a producer whose transaction is open returns ErrInvalidTxnState. A
// control batch returns recordbatch.ErrInvalidRecord: transaction markers
// are appended with AppendMarker.
//
// The batch's position and offsets are reserved under the log's lock; the
// pwrite happens outside it (so one producer's write overlaps the next
// one's checks), and batches are published to readers in offset order.
// b is written to the segment file before AppendAsLeader returns (once
// its batch is published, or has failed) and is not retained: the caller
// may reuse its memory at once (the broker returns produce frames to a
// pool).
func (l *Log) AppendAsLeader(b Batch, leaderEpoch int32) (AppendResult, error) {
	if err := checkLeaderBatch(b); err != nil {
		return AppendResult{}, err
	}
	return l.appendLeader(b, leaderEpoch)
}

// appendLeader does AppendAsLeader's work for a checked batch (or a marker
// the log built: AppendMarker).
func (l *Log) appendLeader(b Batch, leaderEpoch int32) (AppendResult, error) {
	var t *writeTicket
	var res AppendResult
	var cfg Config
	var err error
	func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		t, res, _, err = l.reserveLocked(b, leaderEpoch, true)
		cfg = l.mu.cfg
	}()
	if err != nil || res.Duplicate {
		return res, err
	}
	run := [1]*writeTicket{t}
	if err := l.writeAndPublish(run[:]); err != nil {
		return AppendResult{}, err
	}
	res.FlushDue = l.sync.afterAppend(&cfg, b.NextOffset())
	return res, nil
}

// AppendBatchesAsLeader appends producer batches, in order, as
// AppendAsLeader appends each (res[i] and errs[i], which must have room for
// len(bs) elements, are batch i's outcome: each has its own checks,
// offsets and sequence check), with fewer system calls: batches reserved
// together, those that fit the active segment after the writes in flight,
// are written with one vectored write (a batch that needs a roll starts a
// new run). A failed write fails every batch of its run and every batch
// after it (none of them is acknowledged) and takes the log offline. Like
// AppendAsLeader, every batch is written (or has failed) before it
// returns, and none is retained.
func (l *Log) AppendBatchesAsLeader(bs []Batch, leaderEpoch int32, res []AppendResult, errs []error) {
	res, errs = res[:len(bs)], errs[:len(bs)]
	// On the stack for up to maxStackRun batches.
	var ticketsBuf, tsBuf [maxStackRun]*writeTicket
	tickets := ticketsBuf[:]
	if len(bs) > len(tickets) {
		tickets = make([]*writeTicket, len(bs))
	}
	tickets = tickets[:len(bs)]
	for i := 0; i < len(bs); {
		var cfg Config
		n, run := 0, 0
		func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			cfg = l.mu.cfg
			for ; i+n < len(bs); n++ {
				j := i + n
				tickets[j] = nil
				if err := checkLeaderBatch(bs[j]); err != nil {
					res[j], errs[j] = AppendResult{}, err
					continue
				}
				t, r, stop, err := l.reserveLocked(bs[j], leaderEpoch, run == 0)
				if stop {
					break
				}
				res[j], errs[j], tickets[j] = r, err, t
				if t != nil {
					run++
				}
			}
		}()
		ts := tsBuf[:0]
		for _, t := range tickets[i : i+n] {
			if t != nil {
				ts = append(ts, t)
			}
		}
		var werr error
		if len(ts) > 0 {
			werr = l.writeAndPublish(ts)
		}
		for j := i; j < i+n; j++ {
			if tickets[j] == nil {
				continue
			}
			tickets[j] = nil
			if werr != nil {
				res[j], errs[j] = AppendResult{}, werr
				continue
			}
			res[j].FlushDue = l.sync.afterAppend(&cfg, bs[j].NextOffset())
		}
		i += n
	}
}

// checkLeaderBatch refuses a batch whose length field does not match its
// bytes, and a control batch: transaction markers are the coordinator's,
// appended with AppendMarker (Kafka's LogValidator refuses clients'
// control batches).
func checkLeaderBatch(b Batch) error {
	if n, err := recordbatch.Size(b); err != nil || n != len(b) || len(b) < recordbatch.HeaderSize {
		return fmt.Errorf("%w: append of a batch whose length field does not match its %d bytes", recordbatch.ErrCorrupt, len(b))
	}
	if b.Control() {
		return fmt.Errorf("%w: a control batch appended as a producer's (markers go through AppendMarker)", recordbatch.ErrInvalidRecord)
	}
	return nil
}

// reserveLocked does an append's work under the log's lock: checks,
// offsets, the epoch checkpoint, a roll when the batch does not fit, and
// the batch's place in the active segment, queued for publication. t is
// nil for a duplicate. With may roll false (the caller holds reserved
// writes of its own, which a roll would wait for), a batch that does not
// surely fit after the pending writes is not reserved: stop is set and
// nothing changed. Requires mu.
func (l *Log) reserveLocked(b Batch, leaderEpoch int32, mayRoll bool) (t *writeTicket, res AppendResult, stop bool, err error) {
	if err := l.writableLocked(); err != nil {
		return nil, res, false, err
	}
	s, pos, leo, ok := l.reservedEnd()
	fits := ok && l.fitsPendingLocked(s, pos, leo, b)
	if !fits && !mayRoll {
		return nil, res, true, nil
	}
	if b.HasProducerID() {
		dup, err := l.mu.producers.check(b)
		if err != nil {
			return nil, res, false, err
		}
		if dup != nil {
			return nil, AppendResult{FirstOffset: dup.firstOffset, LastOffset: dup.lastOffset, MaxTimestamp: dup.timestamp,
				Duplicate: true, LogStartOffset: l.logStart.Load()}, false, nil
		}
	}
	if !fits {
		// Rolls and the full roll checks see the published state.
		l.drainLocked()
		s = l.active()
		if n, rollAt := l.fitLocked(s, b); n == 0 {
			if err := l.rollLocked(rollAt); err != nil {
				return nil, res, false, l.goOffline(err)
			}
			s = l.active()
		}
		pos, leo = s.size.Load(), s.next.Load()
	}
	b.SetBaseOffset(leo)
	b.SetPartitionLeaderEpoch(leaderEpoch)
	// The epoch goes to its checkpoint before the data, as Kafka's
	// leader does: a crash in between leaves an entry at the log end,
	// which is harmless; the other order could leave batches of an epoch
	// the checkpoint does not know.
	if err := l.assignEpochLocked(leaderEpoch, leo); err != nil {
		return nil, res, false, l.goOffline(err)
	}
	wait := l.reserveZeros(s, pos+int64(len(b)))
	l.pub.Lock()
	t = l.newTicketLocked()
	*t = writeTicket{s: s, pos: pos, buf: b, next: b.NextOffset(), iov: t.iov, zeros: wait}
	q := append(l.pub.queue, t)
	if cap(q) != cap(l.pub.queue) {
		l.pub.base = q // a new array
	}
	l.pub.queue = q
	l.pub.Unlock()
	l.updateProducerLocked(s, b)
	return t, AppendResult{FirstOffset: leo, LastOffset: b.LastOffset(), MaxTimestamp: b.MaxTimestamp(), LogStartOffset: l.logStart.Load()}, false, nil
}

// AppendAsFollower appends batches copied from the leader, keeping their
// offsets and leader epochs. The first batch must start at or after the log
// end (ErrOffsetsNotIncreasing otherwise) and offsets must increase from
// batch to batch. Every batch is checked (size, magic, CRC-32C) before any
// is written; they are written with one write per segment they land in.
// Producer state and the leader-epoch checkpoint are updated from the
// batches.
func (l *Log) AppendAsFollower(batches []byte) (AppendResult, error) {
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return AppendResult{}, err
	}
	res := AppendResult{FirstOffset: -1, LastOffset: -1, MaxTimestamp: -1, LogStartOffset: l.logStart.Load()}
	next := l.active().next.Load()
	latest, _ := l.mu.epochs.latest()
	newEpoch := false
	for buf := batches; len(buf) > 0; {
		b, rest, err := recordbatch.Next(buf)
		if err != nil {
			return res, fmt.Errorf("localseg: follower append: %w", err)
		}
		if err := recordbatch.Check(b); err != nil {
			return res, fmt.Errorf("localseg: follower append: %w", err)
		}
		if b.BaseOffset() < next {
			return res, fmt.Errorf("%w: batch at %d, expected at least %d", ErrOffsetsNotIncreasing, b.BaseOffset(), next)
		}
		next = b.NextOffset()
		if e := b.PartitionLeaderEpoch(); e >= 0 && (e > latest.Epoch || len(l.mu.epochs.entries) == 0) {
			newEpoch = true
		}
		if res.FirstOffset < 0 {
			res.FirstOffset = b.BaseOffset()
		}
		res.LastOffset = b.LastOffset()
		res.MaxTimestamp = max(res.MaxTimestamp, b.MaxTimestamp())
		buf = rest
	}
	if res.FirstOffset < 0 {
		return res, nil
	}
	if newEpoch {
		// New epochs go to the checkpoint before their batches.
		epochs := l.mu.epochs.clone()
		for buf := batches; len(buf) > 0; {
			b, rest, _ := recordbatch.Next(buf)
			epochs.assign(b.PartitionLeaderEpoch(), b.BaseOffset())
			buf = rest
		}
		if err := l.writeEpochs(&epochs); err != nil {
			return res, l.goOffline(err)
		}
		l.setEpochsLocked(epochs)
	}
	if err := l.appendLocked(batches); err != nil {
		return res, err
	}
	res.FlushDue = l.sync.afterAppend(&l.mu.cfg, res.LastOffset+1)
	return res, nil
}

// writeTicket is a reserved append: its batch goes to s at pos, and the
// log end moves to next when it is published.
type writeTicket struct {
	s         *segment
	pos, next int64
	buf       []byte
	done      bool  // written (or failed); under pub
	err       error // under pub
	finished  bool  // published or failed for good; under pub
	// zeros, when not nil, is closed once the zeros being written
	// where the batch goes are written (see reserveZeros).
	zeros <-chan struct{}
	// iov is the vector of a run's write when the ticket is the run's
	// first (writeRun); its array stays with the ticket when it is
	// reused, so that runs written one after the other allocate none.
	iov [][]byte
}

// maxFreeTickets bounds the tickets a log keeps for reuse: more than a
// group of appends reserves at once (a connection's pipelined produce
// requests, several connections).
const maxFreeTickets = 64

// newTicketLocked returns a ticket for a reservation: one given back, or a
// new one. Requires pub.
func (l *Log) newTicketLocked() *writeTicket {
	if n := len(l.pub.free); n > 0 {
		t := l.pub.free[n-1]
		l.pub.free[n-1] = nil
		l.pub.free = l.pub.free[:n-1]
		return t
	}
	return new(writeTicket)
}

// freeTicketsLocked takes back the tickets of run that are published or
// failed for good (finished): those are off the queue, and no one but
// their writer, which gives them back, refers to them. A failed ticket
// not finished yet may still be on the queue, to be failed by the writer
// at its head: it is left to the garbage collector. Requires pub.
func (l *Log) freeTicketsLocked(run []*writeTicket) {
	for _, t := range run {
		if !t.finished || len(l.pub.free) >= maxFreeTickets {
			continue
		}
		*t = writeTicket{iov: t.iov} // its batch is the caller's memory
		l.pub.free = append(l.pub.free, t)
	}
}

// reservedEnd returns where the next batch goes: the end of the last
// reserved write, or, when none is pending (ok false), nothing: the caller
// then reads the published state after draining. Requires mu.
func (l *Log) reservedEnd() (s *segment, pos, next int64, ok bool) {
	l.pub.Lock()
	defer l.pub.Unlock()
	n := len(l.pub.queue)
	if n == 0 {
		return nil, 0, 0, false
	}
	t := l.pub.queue[n-1]
	return t.s, t.pos + int64(len(t.buf)), t.next, true
}

// fitsPendingLocked reports, without the publication-time state, whether a
// batch of n bytes surely fits the active segment s after the pending
// writes (which end at pos and next). When unsure, the caller drains and
// decides on the published state. Requires mu.
func (l *Log) fitsPendingLocked(s *segment, pos, next int64, b Batch) bool {
	cfg := &l.mu.cfg
	l.pub.Lock()
	pending := int64(len(l.pub.queue))
	l.pub.Unlock()
	idx := s.activeIdx.Load().len() + pending + 1
	return s == l.active() && pos+int64(len(b)) <= cfg.SegmentBytes &&
		idx < cfg.SegmentIndexBytes/timeIndexEntrySize && idx < cfg.SegmentIndexBytes/indexEntrySize &&
		next+(b.LastOffset()-b.BaseOffset())-s.base <= math.MaxInt32
}

// writeAndPublish writes reserved batches outside the log's lock (a run
// reserved together, contiguous in one segment, with one vectored write),
// then publishes every written batch at the head of the queue, in order,
// and waits until its own are published. A failed write fails every batch
// of the run, takes the log offline and fails every write queued after
// it (they are never published).
func (l *Log) writeAndPublish(run []*writeTicket) error {
	first := run[0]
	for _, t := range run {
		if t.zeros != nil {
			<-t.zeros
		}
	}
	w, err := l.fc.acquire(first.s)
	if err == nil {
		if len(run) == 1 {
			err = writeFull(w, first.buf, first.pos)
		} else {
			err = writeRun(w, run)
		}
		l.fc.release(first.s)
	}
	l.pub.Lock()
	defer l.pub.Unlock()
	for _, t := range run {
		t.done = true
		if err != nil {
			t.err = err
		}
	}
	for len(l.pub.queue) > 0 && l.pub.queue[0].done {
		h := l.pub.queue[0]
		if h.err == nil && l.Offline() != nil {
			h.err = l.Offline()
		}
		if h.err != nil {
			// Cut what the failed write left, so the file ends at a
			// whole batch; recovery cuts anything a later write put
			// past it. The writes failed after it (queued behind it,
			// or in its run) cut at the first cut, never past it: a
			// truncation past the end would extend the file with
			// zeros.
			cut := h.pos
			if l.pub.cut.s == h.s {
				cut = min(cut, l.pub.cut.pos)
			}
			l.pub.cut.s, l.pub.cut.pos = h.s, cut
			if w, terr := l.fc.acquire(h.s); terr == nil {
				if terr := w.Truncate(cut); terr != nil {
					l.log.Error("cannot cut a failed write", "segment", h.s.path(".log"), "err", terr)
				}
				l.fc.release(h.s)
			}
			h.err = l.goOffline(fmt.Errorf("localseg: writing %s: %w", h.s.path(".log"), h.err))
			for _, q := range l.pub.queue {
				if q.err == nil {
					q.err = h.err
				}
			}
		} else {
			l.publishRun(h.s, h.buf, h.pos)
		}
		h.finished = true
		l.pub.queue[0] = nil
		l.pub.queue = l.pub.queue[1:]
	}
	if len(l.pub.queue) == 0 {
		l.pub.queue = l.pub.base[:0]
	}
	l.pub.cond.Broadcast()
	var failed error
	for _, t := range run {
		for !t.finished {
			if t.err != nil && t.done {
				// Failed, and its turn may never come: an earlier
				// write failed and the queue is being failed whole.
				break
			}
			l.pub.cond.Wait()
		}
		if t.err != nil {
			failed = t.err
			break
		}
	}
	l.freeTicketsLocked(run)
	return failed
}

// maxStackRun is the batches an append of several (AppendBatchesAsLeader)
// keeps its tickets for on the stack: a connection's group of pipelined
// produce requests (the broker's maxProduceGroup).
const maxStackRun = 32

// writeRun writes a run of reserved batches, contiguous from the first's
// position, with one vectored write.
func writeRun(w File, run []*writeTicket) error {
	bufs := run[0].iov[:0]
	total := 0
	for _, t := range run {
		bufs = append(bufs, t.buf)
		total += len(t.buf)
	}
	run[0].iov = bufs
	defer clear(bufs) // the batches are the callers' memory
	n, err := vfs.WriteVAt(w, bufs, run[0].pos)
	if err == nil && n != total {
		err = io.ErrShortWrite
	}
	return err
}

// drainLocked waits until every reserved write is published or failed.
// With mu held no new one is reserved, so the published state is then the
// whole log. Requires mu.
func (l *Log) drainLocked() {
	l.pub.Lock()
	for len(l.pub.queue) > 0 {
		l.pub.cond.Wait()
	}
	l.pub.Unlock()
}

// lockDrained takes mu and waits for the writes in flight.
func (l *Log) lockDrained() {
	l.mu.Lock()
	l.drainLocked()
}

// AssignEpoch records that leaderEpoch starts at the log end, as a new
// leader does before accepting writes (Kafka's makeLeader): a follower that
// later asks where an older epoch ended learns it ended here, even if this
// leader has not written in its epoch yet. An epoch at or below the latest
// one known is ignored.
func (l *Log) AssignEpoch(leaderEpoch int32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return ErrClosed
	}
	return l.assignEpochLocked(leaderEpoch, l.active().next.Load())
}

// assignEpochLocked records that epoch starts writing at offset, making
// the checkpoint durable first. Requires mu.
func (l *Log) assignEpochLocked(epoch int32, offset int64) error {
	if last, ok := l.mu.epochs.latest(); epoch < 0 || (ok && epoch <= last.Epoch) {
		return nil
	}
	c := l.mu.epochs.clone()
	c.assign(epoch, offset)
	if err := l.writeEpochs(&c); err != nil {
		return err
	}
	l.setEpochsLocked(c)
	return nil
}

// setEpochsLocked replaces the leader epochs, and publishes them to the
// readers (Epochs, EndOffsetForEpoch), who never take mu: a cache once
// published is never modified. Requires mu.
func (l *Log) setEpochsLocked(c epochCache) {
	l.mu.epochs = c
	l.epochs.Store(&c)
}

func (l *Log) writeEpochs(c *epochCache) error {
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, epochCheckpointFile), c.encode()); err != nil {
		return fmt.Errorf("localseg: writing the leader-epoch checkpoint: %w", err)
	}
	return nil
}

// appendLocked writes whole, checked batches (offsets final), contiguous in
// buf: one write per segment they land in, rolling before a batch that does
// not fit the active segment. The producer state takes each run's batches
// before it is written, as a leader's reservation does: a roll after it
// snapshots the state with them, and the aborted transactions they end are
// in the segment's transaction index before a sync can see the run. A
// failed write or roll takes the log offline (the batches before it stay
// published; a reopen keeps what recovery validates). Requires mu.
func (l *Log) appendLocked(buf []byte) error {
	for len(buf) > 0 {
		s := l.active()
		n, rollAt := l.fitLocked(s, buf)
		if n == 0 {
			if err := l.rollLocked(rollAt); err != nil {
				return l.goOffline(err)
			}
			continue
		}
		l.updateProducersLocked(s, buf[:n])
		if err := l.Offline(); err != nil {
			return err
		}
		if err := l.writeRunLocked(s, buf[:n]); err != nil {
			return l.goOffline(err)
		}
		buf = buf[n:]
	}
	return nil
}

// fitLocked returns how many leading bytes of buf (whole batches) go into
// the active segment s before a roll. When none fit, rollAt is the base
// offset of the segment to roll to. The roll triggers are Kafka's:
// segment.bytes, a full offset or time index, a relative offset past
// MaxInt32, and segment.ms measured between the segment's first batch
// timestamp and the new batch's (or, without timestamps, wall-clock time
// since the first append). Requires mu.
func (l *Log) fitLocked(s *segment, buf []byte) (n int, rollAt int64) {
	cfg := &l.mu.cfg
	size := s.size.Load()
	idxN := s.activeIdx.Load().len()
	tidxN := s.activeTidx.Load().len()
	since, firstTs := s.sinceIndex, s.firstTs
	var nowMs int64 = -1
	for n < len(buf) {
		b := recordbatch.Batch(buf[n:])
		blen, _ := recordbatch.Size(b)
		if size > 0 {
			elapsed := int64(0)
			if firstTs >= 0 && b.MaxTimestamp() >= 0 {
				elapsed = b.MaxTimestamp() - firstTs
			} else if n == 0 {
				if nowMs < 0 {
					nowMs = l.now().UnixMilli()
				}
				elapsed = nowMs - s.created
			}
			if size+int64(blen) > cfg.SegmentBytes ||
				idxN >= cfg.SegmentIndexBytes/indexEntrySize ||
				tidxN >= cfg.SegmentIndexBytes/timeIndexEntrySize ||
				b.LastOffset()-s.base > math.MaxInt32 ||
				elapsed > cfg.SegmentMs {
				return n, max(b.BaseOffset(), s.next.Load())
			}
		} else if b.LastOffset()-s.base > math.MaxInt32 {
			// Only after a gap (a follower): start the segment at the
			// batch.
			return n, b.BaseOffset()
		} else if firstTs < 0 {
			firstTs = b.MaxTimestamp()
		}
		if since >= s.interval {
			idxN++
			tidxN++
			since = 0
		}
		since += int64(blen)
		size += int64(blen)
		n += blen
	}
	return n, 0
}

// writeRunLocked writes batches that fit the active segment with one
// write, then publishes them: indexes, recent positions, size, and last
// the next offset. A failed write publishes nothing and cuts what it left
// in the file. Requires mu.
func (l *Log) writeRunLocked(s *segment, run []byte) error {
	pos := s.size.Load()
	if wait := l.reserveZeros(s, pos+int64(len(run))); wait != nil {
		<-wait
	}
	w, err := l.fc.acquire(s)
	if err != nil {
		return fmt.Errorf("localseg: writing %s: %w", s.path(".log"), err)
	}
	defer l.fc.release(s)
	if err := writeFull(w, run, pos); err != nil {
		// Cut whatever part was written so the file ends at a batch
		// boundary (a disk that filled up then has room for the
		// recovery after a reopen); if that fails too, recovery cuts
		// the torn tail.
		if terr := w.Truncate(pos); terr != nil {
			l.log.Error("cannot cut a failed write", "segment", s.path(".log"), "err", terr)
		}
		return fmt.Errorf("localseg: writing %s: %w", s.path(".log"), err)
	}
	l.pub.Lock()
	l.publishRun(s, run, pos)
	l.pub.Unlock()
	return nil
}

// publishRun publishes written batches at pos of s: indexes, recent
// positions, size, and last the next offset. Requires pub (and mu or a
// reservation of the place).
func (l *Log) publishRun(s *segment, run []byte, pos int64) {
	if pos == 0 {
		s.created = l.now().UnixMilli()
		s.firstTs = recordbatch.Batch(run).MaxTimestamp()
	}
	idx := s.activeIdx.Load()
	tidx := s.activeTidx.Load()
	newIdx, newTidx := idx, tidx
	var next int64
	for off := 0; off < len(run); {
		b := recordbatch.Batch(run[off:])
		blen, _ := recordbatch.Size(b)
		h := header{base: b.BaseOffset(), size: int64(blen), last: b.LastOffset(), maxTs: b.MaxTimestamp()}
		at := pos + int64(off)
		if s.sinceIndex >= s.interval {
			newIdx = newIdx.add(indexEntry{rel: uint32(h.base - s.base), pos: uint32(at)})
			if ts := s.maxTs.Load(); ts >= 0 {
				if n := newTidx.len(); n == 0 || ts > newTidx.es[n-1].ts {
					newTidx = newTidx.add(timeEntry{ts: ts, rel: uint32(s.maxTsOffset.Load() - s.base)})
				}
			}
			s.sinceIndex = 0
		}
		s.sinceIndex += h.size
		if h.maxTs > s.maxTs.Load() {
			s.maxTsOffset.Store(h.last)
			s.maxTs.Store(h.maxTs)
		}
		next = h.last + 1
		s.recent.push(recentBatch{base: h.base, next: next, pos: at, size: h.size})
		off += blen
	}
	// Readers of the old arrays keep the entries they saw (see
	// liveEntries); a grown array is published once for the run.
	if newIdx != idx {
		s.activeIdx.Store(newIdx)
	}
	if newTidx != tidx {
		s.activeTidx.Store(newTidx)
	}
	s.setEnd(pos+int64(len(run)), next)
	l.end.Store(next) // s is the active segment: rolls wait for the writes in flight
	l.writeBehind(s)
}

// writeBehindBytes is how much of a segment may be written and not yet
// handed to the disk's write-back before a background write-back of it
// starts (see writeBehind); a var so that tests can change it.
var writeBehindBytes int64 = 4 << 20

// writeBehindAlign is where a background write-back of a segment ends: a
// multiple of it at or below the segment's size, so that it never takes
// the page (or large folio: at most 2 MiB, naturally aligned) the next
// append writes into. Write-back holds the pages it submits locked until
// their I/O is queued, and the block layer throttles that queueing
// (writeback throttling: tens of milliseconds behind other writes); an
// append into a page so held waited as long, with the partition's append
// lock held.
const writeBehindAlign = 2 << 20

// writeBehindEnd is where a background write-back of s may end now.
func writeBehindEnd(s *segment) int64 {
	return s.size.Load() &^ (writeBehindAlign - 1)
}

// writeBehind starts writing back the part of s not yet handed to
// write-back once it reaches writeBehindBytes, on a goroutine of its own
// (one per segment at a time), without waiting for the disk and without
// making anything durable (vfs.WriteBehind).
//
// Without it, a log that takes acks=1 or acks=0 traffic leaves everything
// it wrote to the page cache until the kernel's dirty thresholds (a share
// of memory: gigabytes) or a sync: the next fsync (an acks=all producer's,
// flush.ms, a roll's) then writes the whole backlog at once, and every
// producer waiting for it waits that long (p99 above a second, measured
// right after an acks=1 run). With it, an fsync finds at most about
// writeBehindBytes plus writeBehindAlign of the segment not already on its
// way to the disk.
// Called after a publication (under pub); cheap when there is nothing to
// do.
func (l *Log) writeBehind(s *segment) {
	if writeBehindEnd(s)-s.wbFrom.Load() < writeBehindBytes || !s.wbBusy.CompareAndSwap(false, true) {
		return
	}
	l.writeBacks.Add(1)
	go func() {
		defer l.writeBacks.Done()
		for {
			from, to := s.wbFrom.Load(), writeBehindEnd(s)
			if to-from < writeBehindBytes {
				s.wbBusy.Store(false)
				// A publication between the look and the store saw
				// the goroutine busy: look again.
				if writeBehindEnd(s)-s.wbFrom.Load() < writeBehindBytes || !s.wbBusy.CompareAndSwap(false, true) {
					return
				}
				continue
			}
			f, err := l.fc.acquire(s)
			if err != nil {
				s.wbBusy.Store(false) // the segment is gone
				return
			}
			err = vfs.WriteBehind(f, from, to-from)
			l.fc.release(s)
			if err != nil {
				// Only a hint: the next fsync writes the range and
				// reports what failed.
				l.log.Debug("background write-back", "segment", s.path(".log"), "err", err)
			}
			s.wroteBack(to)
		}
	}()
}

// Flush writes every appended byte and index to stable storage and moves
// the recovery point to the log end.
func (l *Log) Flush() error {
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	return l.flushLocked()
}

// flushLocked fsyncs every segment above the recovery point (sealed ones a
// background flush may still be on: syncing twice is cheap), the directory,
// and moves the recovery point to the log end. A failure takes the log
// offline. Requires mu.
func (l *Log) flushLocked() error {
	if err := l.Offline(); err != nil {
		return err
	}
	if err := l.syncAllLocked(); err != nil {
		return l.goOffline(err)
	}
	return nil
}

// syncAllLocked does flushLocked's work. Requires mu.
func (l *Log) syncAllLocked() error {
	rp := l.RecoveryPoint()
	segs := l.segments()
	for i, s := range segs {
		if i < len(segs)-1 && s.next.Load() <= rp {
			continue
		}
		if err := l.syncSegment(s); err != nil {
			return err
		}
	}
	dirGen := l.dirGen.Load()
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("localseg: flushing %s: %w", l.dir, err)
	}
	l.dirSynced.Store(dirGen)
	// Everything is durable now; later background flushes need not wait
	// for the ones in flight.
	l.mu.flushTail = nil
	l.rp.Lock()
	gen := l.rp.gen
	l.rp.Unlock()
	return l.setRecoveryPoint(l.LogEndOffset(), gen)
}

// syncSegment makes a segment's log file durable (fdatasync when the file
// is the operating system's: the size of an appended file is flushed with
// its data, its times need not be), its transaction index when entries
// were appended to it since its last fsync, and, when sealed, its index
// files, which a roll writes without syncing. A segment deleted meanwhile
// needs nothing.
//
// The fsync goes through the segment's cached descriptor (FileCache
// acquire: no open per sync), one at a time (syncMu). Linux reports a
// writeback error once per open file description, to the first fsync on it
// that follows, and a later one succeeds: so the first failure is kept
// (syncErr) and every later sync of the segment returns it, whoever asks
// (the group commit, a sealed segment's flush, Flush, Close) and even
// after the cache reopened the file. An error the kernel recorded while
// no descriptor was open is reported to the next one opened, as it was
// seen by none.
func (l *Log) syncSegment(s *segment) error {
	s.syncMu.Lock()
	err := s.syncErr
	if err == nil {
		// The transaction index first: the entries of the markers
		// below the end this sync covers were written before the
		// markers were published.
		err = l.syncTxnIndex(s)
	}
	if err == nil {
		var f File
		if f, err = l.fc.acquire(s); err == nil {
			size := s.size.Load()
			if s.fullSync.Load() {
				// The file was cut (its preallocated zeros): the
				// smaller size must reach the disk too.
				if err = f.Sync(); err == nil {
					s.fullSync.Store(false)
				}
			} else {
				err = vfs.Datasync(f)
			}
			if err != nil {
				s.syncErr = err
			} else {
				s.wroteBack(size) // no write-back of what is synced
			}
			l.fc.release(s)
		} else if errors.Is(err, errSegmentGone) {
			err = nil
		}
	}
	s.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("localseg: flushing %s: %w", s.path(".log"), err)
	}
	if !s.isActive() {
		s.waitRollFiles()
		for _, ext := range []string{".index", ".timeindex"} {
			if err := syncPath(l.fs, s.path(ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("localseg: flushing %s: %w", s.path(ext), err)
			}
		}
	}
	return nil
}

// syncPath fsyncs a file by name.
func syncPath(fs FS, path string) error {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setRecoveryPoint moves the recovery point forward to off and persists it
// (or the point the group commit reached past it), unless a truncation
// happened since gen was read.
func (l *Log) setRecoveryPoint(off, gen int64) error {
	raised, err := l.raiseRecoveryPoint(off, gen)
	if raised {
		l.sync.recoveryPointRaised()
	}
	return err
}

// raiseRecoveryPoint writes the checkpoint file with rpFile held and rp
// free: its fsyncs can take long on a busy disk, and rp is taken on the
// produce path (the group commit) and by rolls. Only writers of the file
// change rp.gen and rp.persisted (under rpFile and rp both), so what was
// checked stays true until the write is done; rp.point may move forward
// meanwhile (the group commit), never back (a truncation lowers it with
// rpFile).
func (l *Log) raiseRecoveryPoint(off, gen int64) (raised bool, err error) {
	l.rpFile.Lock()
	defer l.rpFile.Unlock()
	l.rp.Lock()
	stale := gen != l.rp.gen
	off = max(off, l.rp.point)
	persisted := l.rp.persisted
	l.rp.Unlock()
	if stale || off <= persisted {
		return false, nil
	}
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, recoveryPointFile), encodeOffsetCheckpoint("recovery-point", off)); err != nil {
		return false, fmt.Errorf("localseg: writing the recovery point: %w", err)
	}
	l.rp.Lock()
	l.rp.point, l.rp.persisted = max(l.rp.point, off), off
	l.rp.Unlock()
	return true, nil
}

// lowerRecoveryPointLocked moves the recovery point back to off (a
// truncation) before the data below the old one changes, and makes stale
// background flushes give up. Requires mu.
func (l *Log) lowerRecoveryPointLocked(off int64) error {
	defer l.sync.recoveryPointLowered(off)
	l.rpFile.Lock()
	defer l.rpFile.Unlock()
	l.rp.Lock()
	l.rp.gen++
	l.rp.point = min(l.rp.point, off)
	lower := off < l.rp.persisted
	l.rp.Unlock()
	if !lower {
		return nil
	}
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, recoveryPointFile), encodeOffsetCheckpoint("recovery-point", off)); err != nil {
		return fmt.Errorf("localseg: writing the recovery point: %w", err)
	}
	l.rp.Lock()
	l.rp.persisted = off
	l.rp.Unlock()
	return nil
}

// Roll closes the active segment and starts a new one at the log end (no-op
// when the active segment is empty).
func (l *Log) Roll() error {
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if l.active().size.Load() == 0 {
		return nil
	}
	return l.rollLocked(l.LogEndOffset())
}

// rollLocked seals the active segment and starts a new one at base (the
// log end, or past it after a follower's gap). An empty active segment is
// replaced rather than sealed. The sealed segment's index files and a
// producer snapshot are written without fsync; a background flush fsyncs
// them with the segment and then moves the recovery point past it.
// Requires mu.
func (l *Log) rollLocked(base int64) error {
	old := l.active()
	segs := l.segments()
	if old.zero.stop() && old.size.Load() > 0 {
		// A sealed segment ends at its last batch (sendfile, uploads
		// and recovery take the file as it is): cut the zeros ahead.
		if err := l.trimZeros(old); err != nil {
			return err
		}
	}
	if old.size.Load() == 0 {
		if old.base == base {
			return nil
		}
		next, err := l.newSegment(base)
		if err != nil {
			return err
		}
		list := append(append([]*segment(nil), segs[:len(segs)-1]...), next)
		l.setSegments(list)
		l.deleteSegmentsLocked([]*segment{old})
		return nil
	}
	next, err := l.newSegment(base)
	if err != nil {
		return err
	}
	idx, tidx := l.sealIndexes(old)
	// The sealed segment's index files and a producer snapshot at the
	// new base (recovery and truncation replay from the newest one at or
	// below where they start, and tiering ships it with the sealed
	// segment) are encoded here and written by the background flush,
	// before its fsyncs: the file system's metadata work (creates and
	// renames wait behind other writers' journal commits) stays out of
	// the lock that appends wait for. Their readers wait for them
	// (rollFiles); until then the indexes are read from memory.
	files := rollFiles{
		index:     encodeOffsetIndex(idx),
		timeIndex: encodeTimeIndex(tidx),
		snapshot:  l.mu.producers.encode(),
		done:      make(chan struct{}),
	}
	old.rollFiles.Store(&files.done)
	list := append(append([]*segment(nil), segs...), next)
	l.setSegments(list)
	l.fc.seal(old, idx, tidx)
	old.w = nil
	l.flushSealedLocked(old, base, &files)
	l.notifySealed(old)
	return nil
}

// rollFiles are the files a roll leaves to its background flush to write:
// the sealed segment's indexes and the producer snapshot at its end.
type rollFiles struct {
	index, timeIndex, snapshot []byte
	done                       chan struct{} // closed once written (or failed)
}

// write writes the files of the roll that sealed s, without fsync (the
// flush syncs them next). An index that cannot be written fails the
// flush: the recovery point must not pass a segment whose indexes are not
// on stable storage. A snapshot that cannot be written is only logged, as
// recovery replays from an older one. The caller closes done after it,
// whatever happened.
func (f *rollFiles) write(l *Log, s *segment, snapshotAt int64) error {
	if err := writeFileNoSync(l.fs, s.path(".index"), f.index); err != nil {
		return fmt.Errorf("writing index: %w", err)
	}
	if err := writeFileNoSync(l.fs, s.path(".timeindex"), f.timeIndex); err != nil {
		return fmt.Errorf("writing time index: %w", err)
	}
	if err := writeFileNoSync(l.fs, l.snapshotPath(snapshotAt), f.snapshot); err != nil {
		l.log.Warn("writing a producer snapshot", "dir", l.dir, "err", err)
	}
	return nil
}

// waitRollFiles waits until the files of every roll are written. Requires
// mu (no roll starts meanwhile).
func (l *Log) waitRollFiles() {
	for _, s := range l.segments() {
		s.waitRollFiles()
	}
}

// sealIndexes returns the final indexes of an active segment: the live
// ones, the time index ending with the segment's largest timestamp.
func (l *Log) sealIndexes(s *segment) ([]indexEntry, []timeEntry) {
	idx := s.activeIdx.Load().entries()
	tidx := s.activeTidx.Load().entries()
	if ts := s.maxTs.Load(); ts >= 0 && (len(tidx) == 0 || ts > tidx[len(tidx)-1].ts) {
		tidx = append(tidx[:len(tidx):len(tidx)], timeEntry{ts: ts, rel: uint32(s.maxTsOffset.Load() - s.base)})
	}
	return idx, tidx
}

// flushSealedLocked writes the files of the roll that sealed s (files)
// and fsyncs the segment, they and the producer snapshot taken at
// snapshotAt, in the background. The recovery point moves past it once it
// and every segment sealed before it are synced. Requires mu.
func (l *Log) flushSealedLocked(s *segment, snapshotAt int64, files *rollFiles) {
	l.rp.Lock()
	gen := l.rp.gen
	l.rp.Unlock()
	prev := l.mu.flushTail
	t := &flushTicket{done: make(chan struct{})}
	l.mu.flushTail = t
	end := s.next.Load()
	snapshot := filepath.Join(l.dir, segmentName(snapshotAt, snapshotExt))
	l.flushes.Add(1)
	go func() {
		defer l.flushes.Done()
		defer close(t.done)
		err := l.Offline()
		if err == nil {
			err = files.write(l, s, snapshotAt)
		}
		close(files.done)
		if err == nil {
			err = l.syncSegment(s)
		}
		if err == nil {
			if serr := syncPath(l.fs, snapshot); serr != nil && !errors.Is(serr, os.ErrNotExist) {
				err = serr
			}
		}
		if err == nil {
			dirGen := l.dirGen.Load()
			if err = l.fs.SyncDir(l.dir); err == nil {
				l.dirSynced.Store(max(l.dirSynced.Load(), dirGen))
			}
		}
		if prev != nil {
			<-prev.done
		}
		t.ok = err == nil && (prev == nil || prev.ok)
		if err != nil {
			// The recovery point stays below this segment for good:
			// the log goes offline and a reopen recovers from there.
			l.goOffline(fmt.Errorf("localseg: flushing the sealed segment %s: %w", s.path(".log"), err))
			return
		}
		if t.ok {
			if err := l.setRecoveryPoint(end, gen); err != nil {
				l.log.Warn("writing the recovery point", "dir", l.dir, "err", err)
			}
		}
	}()
}

// newSegment creates an empty active segment at base.
func (l *Log) newSegment(base int64) (*segment, error) {
	s := l.makeSegment(base)
	w, err := l.fs.OpenFile(s.path(".log"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localseg: creating segment: %w", err)
	}
	for _, ext := range []string{".index", ".timeindex", txnIndexExt} {
		l.fs.Remove(s.path(ext))
	}
	l.dirGen.Add(1)
	s.w = w
	s.setEnd(0, base)
	s.maxTs.Store(-1)
	s.maxTsOffset.Store(base)
	s.activeIdx.Store(newLiveEntries[indexEntry](nil))
	s.activeTidx.Store(newLiveEntries[timeEntry](nil))
	s.created = l.now().UnixMilli()
	s.firstTs = -1
	l.fc.admit(s, w)
	s.zero.init(0, l.mu.cfg.SegmentBytes)
	l.reserveZeros(s, 0) // zeros for the first appends, with preallocation
	return s, nil
}

func (l *Log) makeSegment(base int64) *segment {
	s := &segment{fs: l.fs, dir: l.dir, base: base, interval: l.mu.cfg.IndexIntervalBytes, firstTs: -1}
	s.txns.Store(newLiveEntries[AbortedTxn](nil))
	return s
}

// writeFileNoSync writes a checksummed file through a temporary and a
// rename, without fsync: a reader sees the old or the new file while the
// machine is up; after a crash the file may be empty or torn, which its
// checksum reveals (it is then rebuilt or ignored). Used where a
// background flush or the recovery point covers durability.
func writeFileNoSync(fs FS, path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	err = writeFull(f, data, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err != nil {
		fs.Remove(tmp)
	}
	return err
}

// Read returns the bytes of the batches from the one containing offset,
// at most maxBytes long (it may end mid-batch, as Kafka's does; clients
// drop a partial last batch), never including a batch whose last offset
// is at or past maxOffset (the high watermark for consumers, the log end
// for followers). With minOneBatch, the first batch is returned whole even
// when larger than maxBytes. A read never spans two segments. Offset must
// be within [LogStartOffset, LogEndOffset]; at the log end the range is
// empty. The caller must Release the range.
func (l *Log) Read(offset int64, maxBytes int, maxOffset int64, minOneBatch bool) (Range, error) {
	for attempt := 0; ; attempt++ {
		if l.closed.Load() {
			return Range{}, ErrClosed
		}
		segs := l.segments()
		leo := segs[len(segs)-1].next.Load()
		start := l.logStart.Load()
		if offset < start || offset > leo {
			return Range{}, fmt.Errorf("%w: %d not in [%d, %d]", ErrOffsetOutOfRange, offset, start, leo)
		}
		if offset >= maxOffset || offset == leo {
			return Range{}, nil
		}
		i := sort.Search(len(segs), func(i int) bool { return segs[i].base > offset }) - 1
		var r Range
		var err error
		for i = max(i, 0); i < len(segs); i++ {
			if offset >= segs[i].next.Load() {
				// offset sits at this segment's end (or in a gap):
				// the next segment holds it.
				continue
			}
			r, err = l.readSegment(segs[i], offset, maxBytes, maxOffset, minOneBatch)
			if err == nil && r.length == 0 && maxBytes > 0 && i+1 < len(segs) && segs[i+1].base < maxOffset {
				// No batch at or after offset in this segment:
				// compaction emptied its end. The next one holds
				// what follows.
				continue
			}
			break
		}
		if i == len(segs) {
			return Range{}, nil
		}
		var skip errSkipTo
		if errors.As(err, &skip) && skip.offset > offset && attempt < 8 {
			offset = skip.offset // the rest of that segment is lost
			continue
		}
		if errors.Is(err, errSegmentGone) && attempt < 8 {
			continue // deleted or rolled under us: look again
		}
		return r, err
	}
}

func (l *Log) readSegment(s *segment, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) (Range, error) {
	f, err := l.fc.acquire(s)
	if err != nil {
		return Range{}, err
	}
	size, next := s.end() // one pair: size holds the batches below next, no more
	start, firstSize, err := l.findBatch(s, f, offset, size, next)
	end := size
	if !s.isActive() {
		// A sealed segment is verified on its first read (once per
		// process). Durable corruption in it: the read moves on to
		// the next intact batch (consumers see a gap, as after
		// compaction) instead of failing at this offset forever, and
		// never returns a damaged batch.
		if ds := l.damageOf(s, f, size, next); len(ds) > 0 {
			start, firstSize, end, err = l.skipDamage(s, f, offset, size, next)
		}
	}
	if err != nil {
		l.fc.release(s)
		return Range{}, err
	}
	if maxOffset < next {
		cut, _, err := l.findBatch(s, f, maxOffset, size, next)
		if err != nil && !(errors.Is(err, recordbatch.ErrCorrupt) && !s.isActive()) {
			l.fc.release(s)
			return Range{}, err
		}
		if err == nil {
			end = min(end, cut)
		}
	}
	n := end - start
	if n > int64(maxBytes) {
		n = max(int64(maxBytes), 0)
		if minOneBatch && firstSize > n {
			n = firstSize
		}
	}
	osf := f.OS()
	if n <= 0 || osf == nil {
		l.fc.release(s)
		if osf == nil {
			return Range{}, errors.New("localseg: the filesystem has no OS files to serve reads from")
		}
		return Range{}, nil
	}
	return Range{file: osf, off: start, length: n, ref: &rangeRef{fc: l.fc, s: s}}, nil
}

// rangeRef is the reference a Range holds on its segment's file.
type rangeRef struct {
	fc   *FileCache
	s    *segment
	done atomic.Bool
}

func (r *rangeRef) release() {
	if r.done.CompareAndSwap(false, true) {
		r.fc.release(r.s)
	}
}

// findBatch returns the position and size of the first batch in s whose
// last offset is at or past offset (the segment size when there is none
// below next). The caller holds a reference on s. Recent batches of the
// active segment are found in memory; others by the sparse offset index
// and a short scan of batch headers.
func (l *Log) findBatch(s *segment, f File, offset, size, next int64) (int64, int64, error) {
	if offset >= next {
		return size, 0, nil
	}
	if s.isActive() {
		if b, ok := s.recent.find(offset); ok && b.pos+b.size <= size {
			return b.pos, b.size, nil
		}
	}
	idx, _, err := l.indexesFor(s, f)
	if err != nil {
		return 0, 0, err
	}
	var pos int64
	if offset > s.base {
		pos = int64(floorEntry(idx, uint32(min(offset-s.base, math.MaxUint32))).pos)
	}
	for pos < size {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return 0, 0, fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
		}
		if h.last >= offset {
			return pos, h.size, nil
		}
		pos += h.size
	}
	return size, 0, nil
}

// indexesFor returns s's indexes, loading them if needed. The caller holds
// a reference on s.
func (l *Log) indexesFor(s *segment, f File) ([]indexEntry, []timeEntry, error) {
	if err := l.fc.ensureLoaded(s, f); err != nil {
		return nil, nil, err
	}
	l.fc.mu.Lock()
	defer l.fc.mu.Unlock()
	idx, tidx := s.indexesLocked()
	return idx, tidx, nil
}

// SetConfig changes the log's settings (AlterConfigs); they apply from the
// next append or retention pass (index.interval.bytes from the next
// segment).
func (l *Log) SetConfig(cfg Config) {
	cfg.EnsureDefaults()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.cfg = cfg
}

// Segments describes the local segments, oldest first.
func (l *Log) Segments() []SegmentInfo {
	segs := l.segments()
	out := make([]SegmentInfo, 0, len(segs))
	for i, s := range segs {
		next := s.next.Load()
		out = append(out, SegmentInfo{
			BaseOffset: s.base, NextOffset: next, Size: s.size.Load(),
			MaxTimestamp: s.maxTs.Load(), Active: i == len(segs)-1, Path: s.path(".log"),
		})
	}
	return out
}

// Close flushes and closes the log and writes the clean-shutdown marker.
// Idempotent; concurrent calls wait for the first.
func (l *Log) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

// stopWriting refuses appends from now on, halts the sync scheduler and
// waits for the background flushes: what Close and Discard both do first.
func (l *Log) stopWriting() {
	l.mu.Lock()
	l.mu.closed = true
	l.closed.Store(true)
	l.mu.Unlock()
	l.sync.halt()
	l.flushes.Wait()
	l.retiring.Wait()
}

func (l *Log) close() (err error) {
	l.stopWriting()
	// Whoever waits for durability learns the outcome of the last flush.
	defer func() { l.sync.stop(err) }()
	l.lockDrained()
	defer l.mu.Unlock()
	defer l.retireAll()
	l.writeBacks.Wait()
	l.active().zero.stop()
	l.zeroers.Wait()
	if err := l.Offline(); err != nil {
		// Nothing is flushed and no clean-shutdown marker written:
		// the next open recovers from the last durable point.
		return fmt.Errorf("localseg: closing %s: %w", l.dir, err)
	}
	act := l.active()
	if act.w == nil {
		// A failed truncation left the log without its active
		// segment: no clean-shutdown marker, the next open recovers.
		return fmt.Errorf("localseg: closing %s: the log lost its active segment", l.dir)
	}
	var errs []error
	// A write that failed and could not be cut, or preallocation, left
	// bytes past the published size: cut them now, so the clean open
	// trusts only whole batches.
	if w, err := l.fc.acquire(act); err == nil {
		if n, err := w.Size(); err == nil && n > act.size.Load() {
			errs = append(errs, w.Truncate(act.size.Load()))
			act.fullSync.Store(true)
		}
		l.fc.release(act)
	}
	errs = append(errs, l.flushLocked())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localseg: closing %s: %w", l.dir, err)
	}
	idx, tidx := l.sealIndexes(act)
	errs = append(errs,
		l.writeSnapshotLocked(act.next.Load()),
		writeFileAtomic(l.fs, act.path(".index"), encodeOffsetIndex(idx)),
		writeFileAtomic(l.fs, act.path(".timeindex"), encodeTimeIndex(tidx)))
	l.removeDueLocked(time.Time{}, true)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localseg: closing %s: %w", l.dir, err)
	}
	if err := l.checkpointHW(true); err != nil {
		return fmt.Errorf("localseg: closing %s: %w", l.dir, err)
	}
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, cleanShutdownFile), encodeOffsetCheckpoint("clean-shutdown", act.next.Load())); err != nil {
		return fmt.Errorf("localseg: closing %s: %w", l.dir, err)
	}
	return nil
}

// retireAll gives up every segment's file (each closes when its last
// Range is released).
func (l *Log) retireAll() {
	p := l.segs.Load()
	if p == nil {
		return
	}
	for _, s := range *p {
		s.zero.stop()
		s.w = nil
		l.fc.retire(s)
	}
}

// Discard closes the log without making anything durable: no flush, no
// indexes, producer snapshot, checkpoint or clean-shutdown marker. It is for
// a log whose directory is about to be removed (its topic's deletion is
// recorded), where each of those fsyncs would be wasted. Waiters for
// durability get ErrClosed. Should the directory survive (a crash before it
// is removed), its next open recovers as after a crash. Discard after Close,
// or Close after Discard, does nothing.
func (l *Log) Discard() {
	l.closeOnce.Do(func() {
		l.stopWriting()
		l.lockDrained()
		l.writeBacks.Wait()
		l.waitRollFiles() // no file is created after the caller removes the directory
		l.retireAll()
		l.zeroers.Wait()
		l.mu.Unlock()
		l.sync.stop(ErrClosed)
	})
}
