package txn

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// shard owns the transactional ids of one __transaction_state partition.
// Everything below "owned by run" is touched only by the run goroutine:
// requests, timers, marker outcomes and append completions reach it as
// closures on ops.
//
// Writes go through a pipeline with one append in flight: writes made while
// an append is in flight are batched into the next one (group commit), and
// each write's done callback runs on the loop once its batch is committed
// or failed, so state changes apply in log order.
type shard struct {
	c                *Coordinator
	partition        int32
	coordinatorEpoch int32
	log              Log
	ctx              context.Context
	cancel           context.CancelFunc
	ops              chan func()
	jobDone          chan *appendJob
	done             chan struct{} // closed once run has returned
	startOnce        sync.Once
	loaded           atomic.Bool
	// workers counts the append and marker goroutines.
	workers sync.WaitGroup
	// idsByState counts txns' stored ids by state, for scrapes.
	idsByState stateCounts

	// Owned by run.
	txns        map[string]*txnEntry
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
	markerCalls, completions, timedOut, expired         int64
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

func newShard(c *Coordinator, partition, coordinatorEpoch int32, log Log) *shard {
	ctx, cancel := context.WithCancel(context.Background())
	return &shard{
		c:                c,
		partition:        partition,
		coordinatorEpoch: coordinatorEpoch,
		log:              log,
		ctx:              ctx,
		cancel:           cancel,
		ops:              make(chan func(), 1024),
		jobDone:          make(chan *appendJob, 1),
		done:             make(chan struct{}),
		txns:             map[string]*txnEntry{},
		timers:           map[*timer]struct{}{},
		endOffset:        -1,
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

func (s *shard) nowMs() int64 { return s.now().UnixMilli() }

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
			s.c.log.Info("txn: lost the transaction state partition while loading it", "partition", s.partition, "err", err)
		} else {
			s.c.log.Error("txn: loading transaction state partition failed; retrying", "partition", s.partition, "err", err)
		}
		s.txns = map[string]*txnEntry{}
		s.idsByState.reset()
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
	s.c.log.Debug("txn: transaction state partition loaded", "partition", s.partition, "coordinator_epoch", s.coordinatorEpoch,
		"transactional_ids", len(s.txns), "log_bytes", s.logBytes, "live_bytes", s.liveBytes)
	s.scheduleAbortTimedOut()
	s.scheduleRemoveExpired()
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
	s.workers.Wait()
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

// cancelTimer stops t (on the loop): its callback will not run.
func (s *shard) cancelTimer(t *timer) {
	if t.dead {
		return
	}
	t.dead = true
	delete(s.timers, t)
	t.t.Stop()
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

// persist writes an id's next metadata and, once it is committed, makes it
// the id's state; then done runs with the append's outcome. The id is busy
// meanwhile. On failure the state is left as it was (the record is "maybe
// written": a snapshot or a later write supersedes it), and a new id
// whose first write failed is forgotten.
func (s *shard) persist(e *txnEntry, next txnMeta, done func(err error)) {
	e.busy = true
	r := recordbatch.Record{Key: appendKey(nil, e.id), Value: appendValue(nil, &next)}
	size := recordBytes(r)
	s.appendRecords([]recordbatch.Record{r}, func(err error) {
		e.busy = false
		switch {
		case err == nil:
			s.setMeta(e, next, size)
		case !e.stored && s.txns[e.id] == e:
			delete(s.txns, e.id)
		}
		done(err)
		if !e.pending() {
			s.unpark(e)
		}
	})
}

// maxPark bounds how long a request waits for the transition in flight of
// its transactional id (park) before it is answered
// CONCURRENT_TRANSACTIONS.
const maxPark = time.Second

// parkedRequest is a request waiting for its id's transition to end.
type parkedRequest struct {
	retry func()
	timer *timer
	done  bool
}

// park holds a request that found its transactional id in a transition
// (the last transaction's markers being written, most often: the next
// transaction's AddPartitionsToTxn follows its EndTxn at once) until the
// transition ends, then runs retry; after maxPark it answers busy instead
// (CONCURRENT_TRANSACTIONS). Kafka answers at once, and the client backs
// off (franz-go 20 ms, Java's producer retry.backoff.ms, 100 ms) though
// the markers take a few: one producer's transactions then cost a backoff
// each.
func (s *shard) park(e *txnEntry, retry func(), busy func()) {
	r := &parkedRequest{retry: retry}
	r.timer = s.after(maxPark, func() {
		if !r.done {
			r.done = true
			e.parked = slices.DeleteFunc(e.parked, func(p *parkedRequest) bool { return p == r })
			busy()
		}
	})
	e.parked = append(e.parked, r)
}

// unpark runs the requests parked on e, in the order they came, once its
// transition ended.
func (s *shard) unpark(e *txnEntry) {
	parked := e.parked
	e.parked = nil
	for _, r := range parked {
		if r.done {
			continue
		}
		r.done = true
		s.cancelTimer(r.timer)
		r.retry()
	}
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
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		s.runAppend(job)
		s.jobDone <- job
	}()
}

// runAppend performs a job's appends, off the loop. A snapshot's chunks
// go first and nothing else is appended between them, so the snapshot is
// atomic with respect to the partition's writes; the log start moves to
// the snapshot only when every chunk is committed.
func (s *shard) runAppend(job *appendJob) {
	timeout := s.c.cfg.RequestTimeout
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

// finishAppend applies a finished job: its writes' done callbacks run in
// log order, and only then may the next append (or a snapshot) start. The
// pipeline counts as busy until the last callback has run, so that writes
// a callback makes wait in pending, and a snapshot never misses the state
// of a record that precedes it.
func (s *shard) finishAppend(job *appendJob) {
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
			s.c.log.Warn("txn: snapshot of transaction state partition failed", "partition", s.partition, "err", job.snapshotErr)
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

// snapshotRecords returns every live record (each stored id's metadata as
// last committed) in chunks of at most maxBatchBytes.
func (s *shard) snapshotRecords() ([][]recordbatch.Record, int64) {
	var chunks [][]recordbatch.Record
	var cur []recordbatch.Record
	var curBytes, total int64
	for _, e := range s.txns {
		if !e.stored {
			continue
		}
		r := recordbatch.Record{Key: appendKey(nil, e.id), Value: appendValue(nil, &e.meta)}
		n := recordBytes(r)
		if curBytes+n > maxBatchBytes && len(cur) > 0 {
			chunks = append(chunks, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, r)
		curBytes += n
		total += n
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks, total
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
		s.c.log.Warn("txn: skipping corrupt batch in transaction state partition", "partition", s.partition, "err", err)
		return
	}
	s.endOffset = b.NextOffset()
	if b.Control() || b.Transactional() {
		return
	}
	opts := recordbatch.ValidateOptions{MaxDecompressed: maxLoadDecompressed, Budget: s.c.budget}
	err := recordbatch.Records(s.ctx, b, opts, func(r recordbatch.Record) error {
		s.logBytes += recordBytes(r)
		if err := s.replayRecord(r.Key, r.Value); err != nil {
			s.stats.corruptRecords++
			s.c.log.Warn("txn: skipping malformed record in transaction state partition", "partition", s.partition, "offset", r.Offset, "err", err)
		}
		return nil
	})
	if err != nil {
		s.stats.corruptRecords++
		s.c.log.Warn("txn: skipping undecodable batch in transaction state partition", "partition", s.partition, "offset", b.BaseOffset(), "err", err)
	}
}

// replayRecord applies one record; the last record of an id wins. Record
// slices are only valid during the call; decodeRecord copies what is
// kept.
func (s *shard) replayRecord(key, value []byte) error {
	d, err := decodeRecord(key, value)
	if err != nil || d.skip {
		return err
	}
	if d.tombstone {
		if e := s.txns[d.id]; e != nil {
			s.removeEntry(e)
		}
		return nil
	}
	e := s.txns[d.id]
	if e == nil {
		e = &txnEntry{id: d.id, lastProducerID: noProducerID, lastProducerEpoch: noProducerEpoch}
		s.txns[d.id] = e
	}
	s.setMeta(e, d.meta, int64(len(key)+len(value)+recordOverhead))
	return nil
}

// finishLoad resumes what the log left halfway: every transaction in
// PrepareCommit or PrepareAbort gets its markers sent again and its
// Complete record written.
func (s *shard) finishLoad() {
	for _, e := range s.txns {
		if st := e.meta.state; st == statePrepareCommit || st == statePrepareAbort {
			s.startCompletion(e)
		}
	}
}

// --- live-state accounting ---

// setMeta makes m the id's committed state; size is its record's bytes.
func (s *shard) setMeta(e *txnEntry, m txnMeta, size int64) {
	if e.stored {
		s.liveBytes -= e.size
		s.idsByState.add(e.meta.state, -1)
	}
	s.idsByState.add(m.state, 1)
	e.meta, e.size, e.stored = m, size, true
	s.liveBytes += size
}

// removeEntry forgets an id (its tombstone is written).
func (s *shard) removeEntry(e *txnEntry) {
	if s.txns[e.id] != e {
		return
	}
	if e.stored {
		s.liveBytes -= e.size
		s.idsByState.add(e.meta.state, -1)
	}
	delete(s.txns, e.id)
}

func (s *shard) String() string { return fmt.Sprintf("__transaction_state-%d", s.partition) }
