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
	stats     shardStats
}

// shardStats are counters for tests and metrics.
type shardStats struct {
	appends, appendedRecords, snapshots, corruptRecords int64
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
}

// write is records to append and what to do once they are committed.
type write struct {
	records []recordbatch.Record
	bytes   int64
	done    func(err error) // on the loop; nil for fire-and-forget
}

type appendBatch struct {
	records []recordbatch.Record
	writes  []*write
	bytes   int64
	err     error
}

type appendJob struct {
	snapshot      [][]recordbatch.Record
	snapshotBytes int64
	snapshotEnd   int64 // log end when a snapshot with no records was taken
	snapshotErr   error
	snapshotDone  bool
	batches       []*appendBatch
	lastBase      int64
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
			fn()
		case job := <-s.jobDone:
			s.finishAppend(job)
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
	w := &write{records: records, done: done}
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
	job := &appendJob{snapshotEnd: -1}
	if s.snapshotDue {
		s.snapshotDue = false
		job.snapshot, job.snapshotBytes = s.snapshotRecords()
		if len(job.snapshot) == 0 {
			job.snapshotEnd = s.endOffset
		}
	}
	var cur *appendBatch
	for _, w := range s.pending {
		if cur == nil || (cur.bytes+w.bytes > maxBatchBytes && len(cur.records) > 0) {
			cur = &appendBatch{}
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
// go first and nothing else is appended between them, so the snapshot is
// atomic with respect to the partition's writes; the log start moves to
// the snapshot only when every chunk is committed.
func (s *shard) runAppend(job *appendJob) {
	timeout := s.c.cfg.OffsetCommitTimeout
	job.lastBase = -1
	if len(job.snapshot) > 0 || job.snapshotEnd >= 0 {
		first := job.snapshotEnd
		for i, recs := range job.snapshot {
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
			job.lastBase = base + int64(len(recs))
		}
		if job.snapshotErr == nil && first >= 0 {
			if err := s.log.DeleteBefore(first); err != nil {
				job.snapshotErr = err
			} else {
				job.snapshotDone = true
			}
		}
	}
	for _, b := range job.batches {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		base, err := s.log.Append(ctx, b.records)
		cancel()
		b.err = err
		if err == nil {
			job.lastBase = base + int64(len(b.records))
		}
	}
}

func (s *shard) finishAppend(job *appendJob) {
	s.appending = false
	if job.lastBase >= 0 {
		s.endOffset = job.lastBase
	}
	switch {
	case job.snapshotDone:
		s.logBytes = job.snapshotBytes
		s.stats.snapshots++
	case len(job.snapshot) > 0 || job.snapshotEnd >= 0:
		// A failed snapshot may have written some chunks; try again
		// only once the log has grown by another floor.
		s.logBytes += job.snapshotBytes
		s.noSnapshotBefore = s.logBytes + max(s.c.cfg.SnapshotMinBytes, 1<<20)
		if s.ctx.Err() == nil {
			s.c.log.Warn("group: snapshot of offsets partition failed", "partition", s.partition, "err", job.snapshotErr)
		}
	}
	for _, b := range job.batches {
		if b.err == nil {
			s.logBytes += b.bytes
			s.stats.appends++
			s.stats.appendedRecords += int64(len(b.records))
		}
		for _, w := range b.writes {
			if w.done != nil {
				w.done(b.err)
			}
		}
	}
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
// metadata, every committed offset) in chunks of at most maxBatchBytes.
func (s *shard) snapshotRecords() ([][]recordbatch.Record, int64) {
	var chunks [][]recordbatch.Record
	var cur []recordbatch.Record
	var curBytes, total int64
	add := func(r recordbatch.Record) {
		n := recordBytes(r)
		if curBytes+n > maxBatchBytes && len(cur) > 0 {
			chunks = append(chunks, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, r)
		curBytes += n
		total += n
	}
	for _, e := range s.groups {
		for _, r := range e.liveRecords() {
			add(r)
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks, total
}

// liveRecords are the records that reproduce the entry's durable state.
func (e *groupEntry) liveRecords() []recordbatch.Record {
	var out []recordbatch.Record
	switch {
	case e.classic != nil && e.classic.stored != nil:
		out = append(out, recordbatch.Record{Key: appendGroupKey(nil, e.id), Value: e.classic.stored})
	case e.consumer != nil && e.consumer.storedEpoch >= 0:
		out = append(out, recordbatch.Record{Key: appendConsumerGroupKey(nil, e.id), Value: appendConsumerGroupValue(nil, e.consumer.storedEpoch)})
	}
	for tp, o := range e.offsets {
		out = append(out, recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp), Value: appendOffsetValue(nil, o)})
	}
	return out
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
// content.
func (s *shard) replayBatch(b recordbatch.Batch) {
	if err := recordbatch.Check(b); err != nil {
		s.stats.corruptRecords++
		s.c.log.Warn("group: skipping corrupt batch in offsets partition", "partition", s.partition, "err", err)
		return
	}
	s.endOffset = b.NextOffset()
	if b.Control() || b.Transactional() {
		// Transactional offset commits belong to the transaction
		// coordinator, which Shale does not have yet.
		return
	}
	opts := recordbatch.ValidateOptions{MaxDecompressed: maxLoadDecompressed, Budget: s.c.budget}
	err := recordbatch.Records(s.ctx, b, opts, func(r recordbatch.Record) error {
		s.logBytes += recordBytes(r)
		if err := s.replayRecord(r.Key, r.Value); err != nil {
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

// replayRecord applies one record. Record slices are only valid during the
// call; everything kept is copied.
func (s *shard) replayRecord(key, value []byte) error {
	d, err := decodeRecord(key, value)
	if err != nil {
		return err
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
		o.size = size
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
	if len(e.offsets) > 0 {
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
	}
	return codeCoordinatorNotAvailable
}

func (s *shard) String() string { return fmt.Sprintf("__consumer_offsets-%d", s.partition) }
