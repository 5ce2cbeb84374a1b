package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

const (
	// maxBatchBytes bounds one appended batch (group commits, snapshot
	// chunks); a single write larger than this still goes out whole.
	maxBatchBytes = 900 << 10
	// recordOverhead approximates a record's framing in a batch, for the
	// log-size estimate.
	recordOverhead = 16
	// maxLoadDecompressed caps the expansion of one compressed batch read
	// back on load (Kafka tools may have written compressed batches).
	maxLoadDecompressed = 64 << 20
)

// shard owns the groups of one __consumer_offsets partition. Everything
// below "owned by run" is touched only by the run goroutine: requests,
// timers and append completions reach it as closures on ops.
//
// Writes go through a pipeline with one append in flight: writes made while
// an append is in flight are batched into the next one (group commit), and
// each write's done callback runs on the loop once its batch is committed
// or failed, so state changes apply in log order.
type shard struct {
	c         *Coordinator
	partition int32
	log       Log
	ctx       context.Context
	cancel    context.CancelFunc
	ops       chan func()
	jobDone   chan *appendJob
	done      chan struct{} // closed once run has returned
	startOnce sync.Once
	loaded    atomic.Bool
	appendWG  sync.WaitGroup
	// numGroups is len(groups), for the coordinator's bound on groups.
	numGroups atomic.Int64
	// completions are the transaction outcomes the broker reported
	// (CompleteTxn), waiting for the loop; completionsReady (capacity 1)
	// wakes it. They wait out a load: the loop applies them once loaded.
	completions struct {
		sync.Mutex
		q []txnCompletion
	}
	completionsReady chan struct{}

	// Owned by run.
	groups      map[string]*groupEntry
	timers      map[*timer]struct{}
	pending     []*write
	appending   bool
	snapshotDue bool
	// logBytes estimates the bytes of the log from its start (record
	// keys and values plus framing); liveBytes those of the live state.
	// A snapshot is due when logBytes > 2*liveBytes + SnapshotMinBytes
	// and logBytes > noSnapshotBefore (backoff after a failure).
	logBytes, liveBytes int64
	noSnapshotBefore    int64
	// endOffset is the log end as far as this shard knows (-1 unknown).
	endOffset int64
	// logStart is the log start as far as this shard knows: the first
	// batch scanned, then each move (-1 unknown).
	logStart int64
	// counted is the bytes of every batch appended or replayed since the
	// shard started (the positions of logAt.bytes).
	counted int64
	// openTxns lists, per producer id, the groups holding its pending
	// transactional offsets.
	openTxns map[int64]map[string]struct{}
	stats    shardStats
}

// shardStats are counters for tests and metrics.
type shardStats struct {
	appends, appendedRecords, snapshots, corruptRecords int64
	// snapshotsHeld counts snapshots after which the log start stayed
	// at or before a pending transaction's records.
	snapshotsHeld int64
}

// groupEntry is one group id's state: exactly one of classic and consumer
// is set, and the committed offsets.
type groupEntry struct {
	id       string
	classic  *classicGroup
	consumer *consumerGroup
	offsets  map[topicPartition]*offsetEntry
	// pendingCommits counts the commits in flight per partition; expiry
	// leaves those partitions alone.
	pendingCommits map[topicPartition]int
	// dead: the group is being deleted (DeleteGroups, expiry); requests
	// get COORDINATOR_NOT_AVAILABLE until the tombstones are written.
	dead bool
	// txnOffsets are the pending transactional offsets by producer id
	// (Kafka's pendingTransactionalOffsetCommits), each with its batch's
	// place in the log: OffsetFetch does not see them until the
	// producer's COMMIT marker.
	txnOffsets map[int64]map[topicPartition]*offsetEntry
	// txnInFlight counts the TxnOffsetCommit appends in flight per
	// partition.
	txnInFlight map[topicPartition]int
}

// write is records to append and what to do once they are committed.
type write struct {
	records []recordbatch.Record
	bytes   int64
	// txn, when set, makes the write a transactional batch of its own
	// (Log.AppendTransactional).
	txn *txnProducer
	// done runs on the loop with the batch's place in the log, or the
	// error; nil for fire-and-forget.
	done func(at logAt, err error)
}

// txnProducer is the producer a transactional write belongs to.
type txnProducer struct {
	id    int64
	epoch int16
}

type appendBatch struct {
	records []recordbatch.Record
	writes  []*write
	bytes   int64
	txn     *txnProducer
	base    int64
	err     error
}

type appendJob struct {
	snapshot
	snapshotEnd  int64 // log end when a snapshot with no records was taken
	logStart     int64 // s.logStart when the snapshot was taken
	snapshotErr  error
	snapshotDone bool
	// snapshotBases are the chunks' base offsets (-1: not written);
	// movedTo the new log start (-1: not moved).
	snapshotBases []int64
	movedTo       int64
	batches       []*appendBatch
	lastBase      int64
}

// snapshot is the live state as records, in chunks.
type snapshot struct {
	chunks     [][]recordbatch.Record
	chunkBytes []int64
	// refs are, per chunk, the committed offsets it rewrites: once the
	// chunk is written their records are there.
	refs  [][]snapshotRef
	bytes int64
	// hold, when held, is the earliest record a pending transaction
	// needs: the log start must not move past it (see holdsLog).
	hold logAt
	held bool
}

type snapshotRef struct {
	e  *groupEntry
	tp topicPartition
	o  *offsetEntry
}

func newShard(c *Coordinator, partition int32, log Log) *shard {
	ctx, cancel := context.WithCancel(context.Background())
	return &shard{
		c:         c,
		partition: partition,
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		ops:       make(chan func(), 1024),
		jobDone:   make(chan *appendJob, 1),
		done:      make(chan struct{}),
		groups:    map[string]*groupEntry{},
		timers:    map[*timer]struct{}{},
		endOffset: -1,
		logStart:  -1,
		openTxns:  map[int64]map[string]struct{}{},

		completionsReady: make(chan struct{}, 1),
	}
}

func (s *shard) start() { s.startOnce.Do(func() { go s.run() }) }

// stop ends the shard and waits until its goroutines are gone.
func (s *shard) stop() {
	s.cancel()
	s.startOnce.Do(func() { close(s.done) })
	<-s.done
}

func (s *shard) now() time.Time { return s.c.clock.Now() }

func (s *shard) run() {
	defer close(s.done)
	defer s.shutdown()
	backoff := 100 * time.Millisecond
	for {
		err := s.load()
		if err == nil {
			break
		}
		if s.ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrNotLeader) {
			// It is being unloaded: another broker leads now.
			s.c.log.Info("group: lost the offsets partition while loading it", "partition", s.partition, "err", err)
		} else {
			s.c.log.Error("group: loading offsets partition failed; retrying", "partition", s.partition, "err", err)
		}
		s.groups = map[string]*groupEntry{}
		s.numGroups.Store(0)
		s.logBytes, s.liveBytes, s.endOffset = 0, 0, -1
		s.logStart, s.counted = -1, 0
		s.openTxns = map[int64]map[string]struct{}{}
		wake := make(chan struct{})
		t := s.c.clock.AfterFunc(backoff, func() { close(wake) })
		select {
		case <-wake:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	s.finishLoad()
	s.loaded.Store(true)
	s.c.log.Debug("group: offsets partition loaded", "partition", s.partition, "groups", len(s.groups), "log_bytes", s.logBytes, "live_bytes", s.liveBytes)
	s.scheduleRetention()
	s.checkSnapshot()
	for {
		select {
		case fn := <-s.ops:
			// Markers reported before the request arrived apply first:
			// once CompleteTxn returns, later requests see it.
			select {
			case <-s.completionsReady:
				s.applyCompletions()
			default:
			}
			fn()
		case job := <-s.jobDone:
			s.finishAppend(job)
		case <-s.completionsReady:
			s.applyCompletions()
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *shard) shutdown() {
	for t := range s.timers {
		t.dead = true
		t.t.Stop()
	}
	s.timers = nil
	s.appendWG.Wait()
	s.loaded.Store(false)
}

// timer is a clock timer whose callback runs on the loop, unless it was
// cancelled (on the loop) first.
type timer struct {
	t    Timer
	fn   func()
	dead bool
}

func (s *shard) after(d time.Duration, fn func()) *timer {
	t := &timer{fn: fn}
	s.timers[t] = struct{}{}
	t.t = s.c.clock.AfterFunc(d, func() {
		s.post(func() {
			if t.dead {
				return
			}
			t.dead = true
			delete(s.timers, t)
			t.fn()
		})
	})
	return t
}

func (s *shard) cancelTimer(t *timer) {
	if t == nil || t.dead {
		return
	}
	t.dead = true
	t.t.Stop()
	delete(s.timers, t)
}

// post queues fn for the loop (from timers and other goroutines).
func (s *shard) post(fn func()) {
	select {
	case s.ops <- fn:
	case <-s.ctx.Done():
	}
}

// --- the write pipeline ---

func recordBytes(r recordbatch.Record) int64 {
	return int64(len(r.Key) + len(r.Value) + recordOverhead)
}

// appendRecords queues records for the log; done runs on the loop once
// they are committed (err nil) or failed.
func (s *shard) appendRecords(records []recordbatch.Record, done func(error)) {
	var d func(logAt, error)
	if done != nil {
		d = func(_ logAt, err error) { done(err) }
	}
	s.appendWrite(records, nil, d)
}

// appendWrite queues records for the log, as one transactional batch of
// txn when it is set; done gets the batch's place in the log.
func (s *shard) appendWrite(records []recordbatch.Record, txn *txnProducer, done func(logAt, error)) {
	w := &write{records: records, txn: txn, done: done}
	for _, r := range records {
		w.bytes += recordBytes(r)
	}
	s.pending = append(s.pending, w)
	s.maybeStartAppend()
}

func (s *shard) maybeStartAppend() {
	if s.appending || (len(s.pending) == 0 && !s.snapshotDue) {
		return
	}
	job := &appendJob{snapshotEnd: -1, logStart: s.logStart, movedTo: -1}
	if s.snapshotDue {
		s.snapshotDue = false
		job.snapshot = s.snapshotRecords()
		if len(job.chunks) == 0 {
			job.snapshotEnd = s.endOffset
		}
	}
	var cur *appendBatch
	for _, w := range s.pending {
		// A transactional write is a batch of its own.
		if cur == nil || w.txn != nil || cur.txn != nil || (cur.bytes+w.bytes > maxBatchBytes && len(cur.records) > 0) {
			cur = &appendBatch{txn: w.txn}
			job.batches = append(job.batches, cur)
		}
		cur.records = append(cur.records, w.records...)
		cur.writes = append(cur.writes, w)
		cur.bytes += w.bytes
	}
	s.pending = nil
	s.appending = true
	s.appendWG.Add(1)
	go func() {
		defer s.appendWG.Done()
		s.runAppend(job)
		s.jobDone <- job
	}()
}

// runAppend performs a job's appends, off the loop. A snapshot's chunks
// go first and nothing else of the coordinator's is appended between
// them, so the snapshot is atomic with respect to the group state's
// writes; the log start moves to the snapshot only when every chunk is
// committed, and not past the records pending transactions need.
func (s *shard) runAppend(job *appendJob) {
	timeout := s.c.cfg.OffsetCommitTimeout
	job.lastBase = -1
	if len(job.chunks) > 0 || job.snapshotEnd >= 0 {
		first := job.snapshotEnd
		job.snapshotBases = make([]int64, len(job.chunks))
		for i := range job.snapshotBases {
			job.snapshotBases[i] = -1
		}
		for i, recs := range job.chunks {
			ctx, cancel := context.WithTimeout(s.ctx, timeout)
			base, err := s.log.Append(ctx, recs)
			cancel()
			if err != nil {
				job.snapshotErr = err
				break
			}
			if i == 0 {
				first = base
			}
			job.snapshotBases[i] = base
			job.lastBase = base + int64(len(recs))
		}
		if job.snapshotErr == nil && first >= 0 {
			if job.held && job.hold.offset < first {
				first = job.hold.offset
			}
			if first > job.logStart {
				if err := s.log.DeleteBefore(first); err != nil {
					job.snapshotErr = err
				} else {
					job.movedTo = first
				}
			}
			job.snapshotDone = job.snapshotErr == nil
		}
	}
	for _, b := range job.batches {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		var base int64
		var err error
		if b.txn != nil {
			base, err = s.log.AppendTransactional(ctx, b.txn.id, b.txn.epoch, b.records)
		} else {
			base, err = s.log.Append(ctx, b.records)
		}
		cancel()
		b.base, b.err = base, err
		if err == nil {
			job.lastBase = base + int64(len(b.records))
		}
	}
}

func (s *shard) finishAppend(job *appendJob) {
	if job.lastBase >= 0 {
		s.endOffset = max(s.endOffset, job.lastBase)
	}
	if len(job.chunks) > 0 || job.snapshotEnd >= 0 {
		// The offsets a written chunk rewrote have their record there
		// now (as a reload would see them).
		before := s.counted
		at := logAt{bytes: before}
		for i, base := range job.snapshotBases {
			if base < 0 {
				break
			}
			at.offset = base
			for _, r := range job.refs[i] {
				if r.e.offsets[r.tp] == r.o {
					r.o.at = at
				}
			}
			at.bytes += job.chunkBytes[i]
		}
		s.counted += job.bytes
		if job.movedTo >= 0 {
			s.logStart = job.movedTo
		}
		switch {
		case job.snapshotDone:
			s.logBytes = job.bytes
			if job.held {
				// The log keeps what lies between the pending
				// transactions' records and the snapshot.
				s.logBytes += max(0, before-job.hold.bytes)
				s.stats.snapshotsHeld++
			}
			s.stats.snapshots++
		default:
			// A failed snapshot may have written some chunks; try
			// again only once the log has grown by another floor.
			s.logBytes += job.bytes
			s.noSnapshotBefore = s.logBytes + max(s.c.cfg.SnapshotMinBytes, 1<<20)
			if s.ctx.Err() == nil {
				s.c.log.Warn("group: snapshot of offsets partition failed", "partition", s.partition, "err", job.snapshotErr)
			}
		}
		if job.held && job.snapshotDone {
			// While transactions hold the log start the log cannot
			// shrink to the snapshot: the next one waits until the log
			// has grown by the live state again, as after a full one.
			s.noSnapshotBefore = s.logBytes + s.liveBytes + s.c.cfg.SnapshotMinBytes
		}
	}
	for _, b := range job.batches {
		at := logAt{offset: b.base, bytes: s.counted}
		if b.err == nil {
			s.logBytes += b.bytes
			s.counted += b.bytes
			s.stats.appends++
			s.stats.appendedRecords += int64(len(b.records))
		}
		for _, w := range b.writes {
			if w.done != nil {
				w.done(at, b.err)
			}
		}
	}
	// Only now may the next append start: a callback that writes again
	// (a consumer group storing its next epoch) would otherwise start
	// a due snapshot before the later callbacks of this job applied
	// their state, and the snapshot, missing it, would move the log
	// start past the records that hold it.
	s.appending = false
	s.checkSnapshot()
	s.maybeStartAppend()
}

// checkSnapshot marks a snapshot due when the log holds much more than
// the live state.
func (s *shard) checkSnapshot() {
	if s.logBytes > 2*s.liveBytes+s.c.cfg.SnapshotMinBytes && s.logBytes > s.noSnapshotBefore {
		s.snapshotDue = true
		s.maybeStartAppend()
	}
}

// snapshotRecords returns every live record (each group's last stored
// metadata, every committed offset) in chunks of at most maxBatchBytes,
// and how far back pending transactions hold the log start.
//
// A pending transactional offset cannot be rewritten (it must stay in its
// producer's transactional batch until the marker), so its batch stays in
// the log. And a committed offset whose record came before a pending one
// of the same partition is not rewritten either: rewritten after the
// pending one, it would win over it at the commit marker on a reload
// (the later record wins), where in memory the pending one wins. Its
// record stays where it is, and the log start with it.
func (s *shard) snapshotRecords() snapshot {
	var snap snapshot
	var cur []recordbatch.Record
	var refs []snapshotRef
	var curBytes int64
	hold := func(at logAt) {
		if !snap.held || at.offset < snap.hold.offset {
			snap.hold, snap.held = at, true
		}
	}
	add := func(r recordbatch.Record, ref snapshotRef) {
		n := recordBytes(r)
		if curBytes+n > maxBatchBytes && len(cur) > 0 {
			snap.chunks, snap.chunkBytes, snap.refs = append(snap.chunks, cur), append(snap.chunkBytes, curBytes), append(snap.refs, refs)
			cur, refs, curBytes = nil, nil, 0
		}
		cur = append(cur, r)
		if ref.o != nil {
			refs = append(refs, ref)
		}
		curBytes += n
		snap.bytes += n
	}
	for _, e := range s.groups {
		switch {
		case e.classic != nil && e.classic.stored != nil:
			add(recordbatch.Record{Key: appendGroupKey(nil, e.id), Value: e.classic.stored}, snapshotRef{})
		case e.consumer != nil && e.consumer.storedEpoch >= 0:
			add(recordbatch.Record{Key: appendConsumerGroupKey(nil, e.id), Value: appendConsumerGroupValue(nil, e.consumer.storedEpoch)}, snapshotRef{})
		}
		for _, pend := range e.txnOffsets {
			for _, p := range pend {
				hold(p.at)
			}
		}
		for tp, o := range e.offsets {
			if e.pendingTxnAfter(tp, o.at.offset) {
				hold(o.at)
				continue
			}
			add(recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp), Value: appendOffsetValue(nil, o)}, snapshotRef{e, tp, o})
		}
	}
	if len(cur) > 0 {
		snap.chunks, snap.chunkBytes, snap.refs = append(snap.chunks, cur), append(snap.chunkBytes, curBytes), append(snap.refs, refs)
	}
	return snap
}

// --- loading ---

func (s *shard) load() error {
	return s.log.Scan(s.ctx, func(b recordbatch.Batch) error {
		s.replayBatch(b)
		return nil
	})
}

// replayBatch applies one batch read back from the log. Corrupt batches
// and records are counted, logged and skipped: the load never fails on
// content. A transactional batch's offset commits become pending offsets
// of its producer; a control batch is that producer's marker.
func (s *shard) replayBatch(b recordbatch.Batch) {
	if err := recordbatch.Check(b); err != nil {
		s.stats.corruptRecords++
		s.c.log.Warn("group: skipping corrupt batch in offsets partition", "partition", s.partition, "err", err)
		return
	}
	s.endOffset = b.NextOffset()
	if s.logStart < 0 {
		s.logStart = b.BaseOffset()
	}
	at := logAt{offset: b.BaseOffset(), bytes: s.counted}
	producer := int64(-1)
	if b.Transactional() || b.Control() {
		producer = b.ProducerID()
		if producer < 0 {
			s.stats.corruptRecords++
			s.c.log.Warn("group: skipping transactional batch without a producer id in offsets partition", "partition", s.partition, "offset", b.BaseOffset())
			return
		}
	}
	marker := false
	opts := recordbatch.ValidateOptions{MaxDecompressed: maxLoadDecompressed, Budget: s.c.budget}
	err := recordbatch.Records(s.ctx, b, opts, func(r recordbatch.Record) error {
		n := recordBytes(r)
		s.logBytes += n
		s.counted += n
		var err error
		switch {
		case !b.Control():
			err = s.replayRecord(r.Key, r.Value, producer, at)
		case !marker:
			// A control batch holds one record; Kafka reads the first.
			marker = true
			var commit, ok bool
			if commit, ok, err = decodeMarker(r.Key); ok {
				s.completeTxn(producer, commit, b.BaseOffset())
			}
		}
		if err != nil {
			s.stats.corruptRecords++
			s.c.log.Warn("group: skipping malformed record in offsets partition", "partition", s.partition, "offset", r.Offset, "err", err)
		}
		return nil
	})
	if err != nil {
		s.stats.corruptRecords++
		s.c.log.Warn("group: skipping undecodable batch in offsets partition", "partition", s.partition, "offset", b.BaseOffset(), "err", err)
	}
}

// replayRecord applies one record of a batch at `at`, of a transaction of
// producer (-1: none). Record slices are only valid during the call;
// everything kept is copied.
func (s *shard) replayRecord(key, value []byte, producer int64, at logAt) error {
	d, err := decodeRecord(key, value)
	if err != nil {
		return err
	}
	if producer >= 0 && (d.kind != keyOffsetCommit || d.tombstone) {
		// A transaction carries offset commits only (Kafka's loader
		// takes nothing else from a transactional batch).
		if d.kind == -1 {
			return nil
		}
		return fmt.Errorf("%w: key version %d (tombstone %t) in a transactional batch", errBadRecord, d.kind, d.tombstone)
	}
	size := int64(len(key) + len(value) + recordOverhead)
	switch d.kind {
	case keyOffsetCommit:
		e := s.loadEntry(d.group)
		if d.tombstone {
			s.deleteOffset(e, d.tp)
			return nil
		}
		o := d.offset
		o.size, o.at = size, at
		if producer >= 0 {
			s.addTxnOffset(e, producer, d.tp, &o)
			return nil
		}
		s.setOffset(e, d.tp, &o)
	case keyGroupMetadata:
		e := s.loadEntry(d.group)
		if e.consumer != nil {
			s.liveBytes -= e.consumer.storedSize
			e.consumer = nil
			e.classic = newClassicGroup(s, d.group)
		}
		g := e.classic
		if d.tombstone {
			s.setStored(g, nil, nil)
			return nil
		}
		s.setStored(g, d.classic, value)
	case keyConsumerGroupMetadata:
		e := s.loadEntry(d.group)
		if d.tombstone {
			if e.consumer != nil {
				s.liveBytes -= e.consumer.storedSize
				e.consumer = nil
				e.classic = newClassicGroup(s, d.group)
			}
			return nil
		}
		if e.classic != nil {
			s.setStored(e.classic, nil, nil)
			e.classic = nil
			e.consumer = newConsumerGroup(s, d.group)
		}
		cg := e.consumer
		s.liveBytes += size - cg.storedSize
		cg.storedEpoch, cg.storedSize = d.epoch, size
		cg.epoch = max(cg.epoch, d.epoch)
		cg.assignmentEpoch = cg.epoch
	}
	return nil
}

// loadEntry returns the entry for a group, creating an empty classic one.
func (s *shard) loadEntry(group string) *groupEntry {
	e := s.groups[group]
	if e == nil {
		e = &groupEntry{id: group, classic: newClassicGroup(s, group), offsets: map[topicPartition]*offsetEntry{}}
		s.groups[group] = e
		s.numGroups.Store(int64(len(s.groups)))
	}
	return e
}

// groupsFull reports whether a new group would pass
// group.coordinator.max.groups (groups loaded from the log count, and are
// never refused).
func (s *shard) groupsFull() bool {
	return s.c.groupCount() >= int64(s.c.cfg.MaxGroups)
}

// finishLoad turns the replayed records into live groups: classic groups
// with members come back Stable with fresh session timers, and entries
// left with nothing are dropped.
func (s *shard) finishLoad() {
	for id, e := range s.groups {
		if e.classic != nil {
			e.classic.restore()
		}
		if e.isVacant() {
			delete(s.groups, id)
		}
	}
	s.numGroups.Store(int64(len(s.groups)))
}

// isVacant: nothing in memory or in the log keeps the entry alive.
func (e *groupEntry) isVacant() bool {
	if len(e.offsets) > 0 || len(e.txnOffsets) > 0 {
		return false
	}
	if g := e.classic; g != nil {
		return g.state == stateEmpty && len(g.members) == 0 && len(g.pendingMembers) == 0 && g.stored == nil
	}
	cg := e.consumer
	return len(cg.members) == 0 && cg.storedEpoch < 0
}

// --- live-state accounting ---

func (s *shard) setOffset(e *groupEntry, tp topicPartition, o *offsetEntry) {
	if old := e.offsets[tp]; old != nil {
		s.liveBytes -= old.size
	}
	e.offsets[tp] = o
	s.liveBytes += o.size
}

func (s *shard) deleteOffset(e *groupEntry, tp topicPartition) {
	if old := e.offsets[tp]; old != nil {
		s.liveBytes -= old.size
		delete(e.offsets, tp)
	}
}

// setStored records the group metadata last written for a classic group
// (nil after a tombstone).
func (s *shard) setStored(g *classicGroup, v *groupValue, raw []byte) {
	s.liveBytes -= g.storedSize
	g.storedSize = 0
	g.stored, g.storedValue = nil, nil
	if raw != nil {
		g.stored = append([]byte(nil), raw...)
		g.storedValue = v
		g.storedSize = int64(len(appendGroupKey(nil, g.id)) + len(raw) + recordOverhead)
		s.liveBytes += g.storedSize
	}
}

// removeEntry drops a group from memory (its tombstones are written).
func (s *shard) removeEntry(e *groupEntry) {
	if s.groups[e.id] != e {
		return
	}
	for tp := range e.offsets {
		s.deleteOffset(e, tp)
	}
	for producer := range e.txnOffsets {
		s.dropTxnGroup(producer, e.id)
	}
	e.txnOffsets = nil
	if e.classic != nil {
		e.classic.stopTimers()
		s.setStored(e.classic, nil, nil)
	}
	if e.consumer != nil {
		e.consumer.stopTimers()
		s.liveBytes -= e.consumer.storedSize
	}
	delete(s.groups, e.id)
	s.numGroups.Store(int64(len(s.groups)))
}

// errorCodeForAppend maps a failed write to Kafka's code for commits, as
// Kafka's coordinator does.
func appendErrorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotLeader), errors.Is(err, context.Canceled):
		return codeNotCoordinator
	case errors.Is(err, ErrRecordTooLarge):
		return codeInvalidCommitOffsetSize
	case errors.Is(err, ErrProducerFenced):
		return codeInvalidProducerEpoch
	}
	return codeCoordinatorNotAvailable
}

func (s *shard) String() string { return fmt.Sprintf("__consumer_offsets-%d", s.partition) }
