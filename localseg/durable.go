package localseg

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// maxSyncsInFlight bounds the syncs of one log that run at once. One: the
// fsyncs of a segment go through its one descriptor, one at a time (see
// Log.syncSegment), so a second sync would only queue behind the first;
// and on the ext4 disk measured, two overlapping syncs moved no more data
// when each had a descriptor of its own (the journal commits follow each
// other anyway). Measured again on a 2-core VM's ext4 disk: four files
// fsynced every 256 KiB moved 242-270 MB/s, every 128 KiB 158-186 MB/s (a
// sync's cost is mostly fixed, so splitting a producer's window over two
// overlapping syncs pays it twice); shale-bench's pipelined reference
// (producers' round trip, each batch answered once synced, no broker)
// moved 0.8-1.75x as much with two syncs in flight per file as with one
// (median 1.1x over eleven runs on a loaded machine), in most runs less
// than one sync per window; and the broker with two in flight stayed within
// the noise of one.
const maxSyncsInFlight = 1

// SyncScheduler is a log's group commit. Callers that need records on
// stable storage (an acks=all produce whose in-sync replicas are the leader
// alone, flush.messages, flush.ms) register with WhenDurable. Syncs run on
// goroutines of their own, outside the log's lock (appends go on
// meanwhile); each covers the log end published when it starts, so that
// every producer that arrives during a sync shares the next one.
//
// A sync that releases waiters holds the next one back until as many
// waiters have come again (the producers it answered, which keep a window
// of requests in flight, send their next ones) or for half the recent sync
// duration at most (maxSyncHold). Started at once, the next sync would
// cover only the waiters that arrived during the last one: with a window
// of w requests in flight, syncs would alternate between covering some of
// them and the rest, about w/2 each, and the fsync's fixed cost (a journal
// commit and a cache flush) would be paid twice per window. Held, one sync
// covers the whole window; the hold costs at most half a sync's latency,
// and nothing when a lone producer (one request in flight) comes back.
// Holds that end by their deadline halve the next one's, so that where
// producers do not come back in time holding costs little, and no sync is
// held after a watch saw the answered producers not come back within the
// hold's bound (producers at a fixed rate; see watchLocked). Measured
// (BenchmarkDurableAppend, interleaved, 2 cores at load 28-37) the hold won
// 6 of 8 pairs, 335 against 278 MB/s on average (the disk's own window
// ceiling: 385); on a quiet machine the raw load generator showed no
// difference either way.
//
// A sync that answered a single waiter holds nothing, unless recent syncs
// answered two or more on average (a window coming back one by one): at
// a low rate each sync answers the one request that came, the requests
// that arrived during it are already there, and the next producer comes
// when its own rate says, not when an answer lets it. Held, those waiting
// would wait for it or the hold's deadline with the disk idle.
//
// Outcomes are applied in the order the syncs started (were
// maxSyncsInFlight raised): the recovery point moves to a sync's end only
// once every sync started before it succeeded, and callbacks run when the
// recovery point covers them. Each sync fdatasyncs through the segments'
// descriptors, and a segment whose fsync failed once fails every later
// one (see Log.syncSegment), so a writeback error reaches every sync it
// concerns.
//
// A failed fsync takes the log offline: the callbacks get the error, the
// outcomes of syncs still running are discarded, and the log never fsyncs
// again (see Log.Offline).
type SyncScheduler struct {
	l *Log
	// asked is set by every request for a sync (a wait for durable
	// records, flush.messages, flush.ms) and cleared when the zeroing
	// of the active segment starts: preallocation only serves logs that
	// the group commit syncs (see reserveZeros).
	asked atomic.Bool
	// ended is closed, and replaced, by the end of each sync: the
	// zeroing waits for it to write its next piece right after a sync
	// rather than beside one (see awaitSyncEnd).
	mu struct {
		sync.Mutex
		want    int64         // the highest offset asked to be durable
		covered int64         // the highest end of a sync started (or done)
		flights []*syncFlight // started, in start order, outcome not applied yet
		waiters []durableWaiter
		due     []dueCall   // taken by fireLocked, run by unlock
		spare   []dueCall   // an emptied due array, for the next fireLocked
		timer   *time.Timer // flush.ms, armed by the first unflushed append
		stopped bool
		// hold: no sync starts while held; expect counts the waiters
		// still awaited before it ends; holdTimer, one for the
		// scheduler's life, ends it at holdUntil at the latest.
		held      bool
		expect    int
		holdTimer *time.Timer
		holdUntil time.Time
		// holdMisses counts the holds in a row that ended by their
		// deadline: each halves the next one's (up to maxHoldMisses).
		holdMisses int
		syncDur    time.Duration // moving average of recent syncs' durations
		// answeredAvg is a moving average of the waiters a sync
		// answered, in sixteenths.
		answeredAvg int
		// back watches whether the waiters a sync answered come back
		// within a round trip (see watchLocked); noHold is set while
		// the last watch saw them not come back in time.
		back struct {
			at   time.Time
			n    int // waiters still awaited; 0: nothing watched
			till time.Duration
		}
		noHold bool
		// ended, when not nil, is closed when the running sync ends.
		ended chan struct{}
	}
}

// maxSyncHold bounds a hold (see SyncScheduler); a var so that tests can
// change it.
var maxSyncHold = 2 * time.Millisecond

// maxHoldMisses bounds the halvings of the hold after holds that ended by
// their deadline (the answered producers did not come back in time: a
// loaded machine, or producers that do not keep a window), so that a
// hold that does not pay costs little, and one that pays again restores it.
const maxHoldMisses = 4

// syncFlight is one sync: it makes durable every batch below end, unless a
// truncation (a new recovery-point generation than gen) came first.
type syncFlight struct {
	end, gen int64
	done     bool
	err      error
}

type durableWaiter struct {
	offset int64
	w      DurableWaiter
}

// A DurableWaiter is told, once, that the records it waits for are on
// stable storage (Durable(nil)) or cannot be (the error).
type DurableWaiter interface {
	Durable(err error)
}

// DurableFunc is a function that is a DurableWaiter.
type DurableFunc func(error)

// Durable calls f.
func (f DurableFunc) Durable(err error) { f(err) }

// WhenDurable arranges for fn to be called once every record below offset
// is on stable storage, or with the error that prevents it (ErrOffline
// wrapping the failure, ErrClosed). It returns true, and never calls fn,
// when they are durable already. fn runs on a sync's goroutine (or the
// closing one) and must not block or call the log. The records below
// offset must be appended (AppendAsLeader and AppendAsFollower have
// returned) before the call.
func (l *Log) WhenDurable(offset int64, fn func(error)) bool {
	return l.sync.whenDurable(offset, DurableFunc(fn))
}

// WhenDurableTell is WhenDurable with a waiter instead of a function: a
// caller that waits for many appends (the broker, one wait per acks=all
// produce) passes a pointer it has already and allocates nothing, where a
// function that says which wait it ends is a new closure each time. w is
// told at most once, as fn would be called.
func (l *Log) WhenDurableTell(offset int64, w DurableWaiter) bool {
	return l.sync.whenDurable(offset, w)
}

func (s *SyncScheduler) whenDurable(offset int64, w DurableWaiter) bool {
	if offset <= s.l.RecoveryPoint() {
		return true
	}
	s.mu.Lock()
	defer s.unlock()
	// Again under s.mu: a sync of the whole log outside the group commit
	// (a roll's, a sealed segment's flush) may have moved the recovery
	// point past offset since the look above, and its waiters are only
	// answered by fireLocked, which that sync does not run before a
	// waiter is added (see recoveryPointRaised).
	if offset <= s.l.RecoveryPoint() {
		return true
	}
	if s.mu.stopped {
		err := s.l.Offline()
		if err == nil && offset > s.l.RecoveryPoint() {
			err = ErrClosed
		}
		if err == nil {
			return true
		}
		go w.Durable(err)
		return false
	}
	s.mu.waiters = append(s.mu.waiters, durableWaiter{offset: offset, w: w})
	if s.mu.back.n > 0 {
		s.cameBackLocked()
	}
	if s.mu.held {
		if s.mu.expect--; s.mu.expect <= 0 {
			s.mu.held, s.mu.holdMisses = false, 0
		}
	}
	s.requestLocked(offset)
	return false
}

// Requires s.mu.
func (s *SyncScheduler) requestLocked(offset int64) {
	if !s.asked.Load() {
		s.asked.Store(true)
	}
	s.mu.want = max(s.mu.want, offset)
	s.startLocked()
}

// startLocked starts a sync when something asked for is not covered by a
// sync started already and fewer than maxSyncsInFlight run; otherwise the
// end of a running one starts it. On an offline log it fails the waiters
// instead. Requires s.mu.
func (s *SyncScheduler) startLocked() {
	if err := s.l.Offline(); err != nil {
		s.fireLocked(err)
		return
	}
	if s.mu.stopped || s.mu.held || s.mu.want <= s.mu.covered || len(s.mu.flights) >= maxSyncsInFlight {
		return
	}
	s.l.rp.Lock()
	f := &syncFlight{gen: s.l.rp.gen}
	rp := s.l.rp.point
	s.l.rp.Unlock()
	if s.mu.want <= rp {
		s.fireLocked(nil)
		return
	}
	// The published end: every batch below it is written (reads of
	// the end come after the writes they publish). When nothing was
	// published past what is covered (a wait for offsets beyond the
	// log end, after a truncation), there is nothing to sync: a later
	// append asks again.
	f.end = s.l.LogEndOffset()
	if f.end <= max(s.mu.covered, rp) {
		return
	}
	s.mu.covered = max(s.mu.covered, f.end)
	s.mu.flights = append(s.mu.flights, f)
	s.l.flushes.Add(1)
	go s.run(f, rp)
}

// run does one sync and applies the outcomes that are due.
func (s *SyncScheduler) run(f *syncFlight, rp int64) {
	defer s.l.flushes.Done()
	s.l.diskTurn.Lock()
	start := time.Now()
	err := s.l.syncActive(rp)
	took := time.Since(start)
	s.l.diskTurn.Unlock()
	released := 0
	if fn := s.l.onSync; fn != nil {
		// Told after the waiters were answered (unlock runs their
		// callbacks), so that a note's cost never delays an answer.
		defer func() { fn(SyncStats{Took: took, Answered: released, Err: err}) }()
	}
	s.mu.Lock()
	defer s.unlock()
	f.done, f.err = true, err
	if s.mu.ended != nil {
		close(s.mu.ended)
		s.mu.ended = nil
	}
	if s.mu.syncDur == 0 {
		s.mu.syncDur = took
	} else {
		s.mu.syncDur += (took - s.mu.syncDur) / 8
	}
	released = len(s.mu.waiters)
	s.applyLocked()
	released -= len(s.mu.waiters)
	if released > 0 && err == nil {
		s.mu.answeredAvg += (16*released - s.mu.answeredAvg) / 4
		if released > 1 || s.mu.answeredAvg >= 2*16 {
			s.watchLocked(released)
			if !s.mu.noHold {
				s.holdLocked(released)
			}
		}
	}
	s.startLocked()
}

// awaitSyncEnd returns at once when no sync runs, otherwise when the
// running one ends (or the scheduler halts).
func (s *SyncScheduler) awaitSyncEnd() {
	s.mu.Lock()
	if len(s.mu.flights) == 0 || s.mu.stopped {
		s.unlock()
		return
	}
	if s.mu.ended == nil {
		s.mu.ended = make(chan struct{})
	}
	ended := s.mu.ended
	s.unlock()
	<-ended
}

// watchLocked watches whether the n waiters a sync just answered come back
// (n new waiters arrive) within the hold's bound, half the recent sync
// duration (and maxSyncHold): producers that keep a window of requests in
// flight do, a round trip after their answers, and a hold then covers
// their whole window with one sync. Producers at a fixed rate, whose next
// requests come when their rate says whatever the answers, do not: a hold
// would only delay the requests that come meanwhile (about 1 ms at p50 at
// a fixed rate with 3.5 ms syncs). The next sync is held only when the
// last watch saw them come back in time, and a watch still open when the
// next one starts saw them not (cameBackLocked ends it otherwise). The
// watch runs whether the sync is held or not, so that producers that
// start keeping a window get the hold back after one sync. Requires s.mu.
func (s *SyncScheduler) watchLocked(n int) {
	if s.mu.back.n > 0 {
		s.mu.noHold = true
	}
	s.mu.back.at, s.mu.back.n = time.Now(), n
	s.mu.back.till = min(s.mu.syncDur/2, maxSyncHold)
}

// cameBackLocked counts a new waiter for the watch watchLocked started,
// and ends it once n have come or its bound has passed. Requires s.mu.
func (s *SyncScheduler) cameBackLocked() {
	if time.Since(s.mu.back.at) > s.mu.back.till {
		s.mu.back.n, s.mu.noHold = 0, true
		return
	}
	if s.mu.back.n--; s.mu.back.n == 0 {
		s.mu.noHold = false
	}
}

// holdLocked holds the next sync back until n more waiters have come, for
// half the recent sync duration at most (and maxSyncHold). Requires s.mu.
func (s *SyncScheduler) holdLocked(n int) {
	d := min(s.mu.syncDur/2, maxSyncHold) >> s.mu.holdMisses
	if s.mu.stopped || d <= 0 {
		return
	}
	s.mu.held, s.mu.expect = true, n
	s.mu.holdUntil = time.Now().Add(d)
	if s.mu.holdTimer == nil {
		s.mu.holdTimer = time.AfterFunc(d, s.holdExpired)
	} else {
		s.mu.holdTimer.Reset(d)
	}
}

// holdExpired ends the hold once its deadline has passed. The timer is
// reused for every hold: a run that started for an earlier hold finds the
// current one's deadline ahead and leaves it to the timer (re-armed for
// what is left).
func (s *SyncScheduler) holdExpired() {
	s.mu.Lock()
	defer s.unlock()
	if !s.mu.held || s.mu.stopped {
		return
	}
	if left := time.Until(s.mu.holdUntil); left > 0 {
		s.mu.holdTimer.Reset(left)
		return
	}
	s.mu.held = false
	s.mu.holdMisses = min(s.mu.holdMisses+1, maxHoldMisses)
	s.startLocked()
}

// applyLocked applies, in start order, the outcomes of the syncs that are
// done and have none running before them. Requires s.mu.
func (s *SyncScheduler) applyLocked() {
	for len(s.mu.flights) > 0 && s.mu.flights[0].done {
		f := s.mu.flights[0]
		n := copy(s.mu.flights, s.mu.flights[1:])
		s.mu.flights[n] = nil
		s.mu.flights = s.mu.flights[:n]
		err := f.err
		if err == nil {
			// A sync that succeeded after an earlier one failed
			// proves nothing: the kernel may have dropped pages.
			err = s.l.Offline()
		}
		if err != nil {
			s.fireLocked(err)
			continue
		}
		s.l.rp.Lock()
		if f.gen == s.l.rp.gen && f.end > s.l.rp.point {
			s.l.rp.point = f.end
		}
		s.l.rp.Unlock()
		s.fireLocked(nil)
	}
	if len(s.mu.flights) == 0 {
		// Nothing runs: what was covered and not made durable (a
		// truncation came first) must be asked again.
		s.mu.covered = s.l.RecoveryPoint()
	}
}

// afterAppend applies flush.messages and flush.ms after an append that
// moved the log end to leo. It reports whether the append crossed
// flush.messages (a sync to leo is then on its way). Requires the log's mu.
func (s *SyncScheduler) afterAppend(cfg *Config, leo int64) bool {
	due := cfg.FlushMessages != math.MaxInt64 && leo-s.l.RecoveryPoint() >= cfg.FlushMessages
	s.mu.Lock()
	defer s.unlock()
	if s.mu.stopped {
		return false
	}
	if due {
		s.requestLocked(leo)
	}
	if cfg.FlushMs != math.MaxInt64 && s.mu.timer == nil {
		s.mu.timer = time.AfterFunc(time.Duration(cfg.FlushMs)*time.Millisecond, func() {
			s.mu.Lock()
			defer s.unlock()
			s.mu.timer = nil
			if !s.mu.stopped {
				s.requestLocked(s.l.LogEndOffset())
			}
		})
	}
	return due
}

// recoveryPointRaised answers the waiters a recovery point moved outside
// the group commit now covers (a roll's sync of the whole log, a sealed
// segment's background flush): the group commit only answers them when a
// sync of its own ends, and none may be running. Called without the
// recovery point's lock.
func (s *SyncScheduler) recoveryPointRaised() {
	s.mu.Lock()
	defer s.unlock()
	s.fireLocked(nil)
}

// recoveryPointLowered forgets what syncs covered above off (a
// truncation): the offsets above it are written again, and a waiter for
// one of them needs a sync that covers the new records, not the ones a
// sync covered before. Called without the recovery point's lock.
func (s *SyncScheduler) recoveryPointLowered(off int64) {
	s.mu.Lock()
	defer s.unlock()
	s.mu.covered = min(s.mu.covered, off)
}

// fireLocked takes the callbacks the recovery point now covers, and all
// of them with err when it is not nil, to be run by unlock. Requires s.mu.
func (s *SyncScheduler) fireLocked(err error) {
	rp := s.l.RecoveryPoint()
	if s.mu.due == nil {
		s.mu.due, s.mu.spare = s.mu.spare, nil
	}
	kept := s.mu.waiters[:0]
	for _, w := range s.mu.waiters {
		switch {
		case w.offset <= rp:
			s.mu.due = append(s.mu.due, dueCall{w.w, nil})
		case err != nil:
			s.mu.due = append(s.mu.due, dueCall{w.w, err})
		default:
			kept = append(kept, w)
		}
	}
	clear(s.mu.waiters[len(kept):])
	s.mu.waiters = kept
}

// dueCall is a callback fireLocked took, and its argument.
type dueCall struct {
	w   DurableWaiter
	err error
}

// unlock releases s.mu, then runs the callbacks fireLocked took meanwhile:
// they answer producers (encoding and queueing a response each), which
// under s.mu would hold back every append that registers a wait, and the
// next sync's start. Calls that come through unlock return after their
// callbacks ran, as when they ran under the lock. The emptied array is
// kept for the next callbacks (a sync answers a window of producers).
func (s *SyncScheduler) unlock() {
	due := s.mu.due
	s.mu.due = nil
	s.mu.Unlock()
	if len(due) == 0 {
		return
	}
	for i := range due {
		due[i].w.Durable(due[i].err)
	}
	clear(due)
	s.mu.Lock()
	if cap(due) > cap(s.mu.spare) {
		s.mu.spare = due[:0]
	}
	s.mu.Unlock()
}

// halt starts no more syncs (Close, before it waits for the running ones).
func (s *SyncScheduler) halt() {
	s.mu.Lock()
	defer s.unlock()
	s.mu.stopped = true
	s.mu.held = false
	if s.mu.ended != nil {
		close(s.mu.ended)
		s.mu.ended = nil
	}
	if s.mu.holdTimer != nil {
		s.mu.holdTimer.Stop()
		s.mu.holdTimer = nil
	}
	if s.mu.timer != nil {
		s.mu.timer.Stop()
		s.mu.timer = nil
	}
}

// stop ends the scheduler for Close (after the final flush, with its
// error): the waiters the recovery point covers get nil, the others err
// or ErrClosed.
func (s *SyncScheduler) stop(err error) {
	s.mu.Lock()
	defer s.unlock()
	if err == nil {
		err = ErrClosed
	}
	s.fireLocked(err)
}

// syncActive fsyncs the segments above the recovery point rp (read when
// the sync started, with the end it covers), and the directory when a
// segment was created since it was last synced, without the log's mu. A
// failure takes the log offline.
func (l *Log) syncActive(rp int64) error {
	if err := l.Offline(); err != nil {
		return err
	}
	dirGen := l.dirGen.Load()
	segs := l.segments()
	for i, s := range segs {
		if i < len(segs)-1 && s.next.Load() <= rp {
			continue
		}
		if err := l.Offline(); err != nil {
			return err // another sync failed meanwhile
		}
		if err := l.syncSegment(s); err != nil {
			return l.goOffline(err)
		}
	}
	// A segment created since the directory was last synced needs its
	// entry on stable storage too.
	if l.dirSynced.Load() < dirGen {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return l.goOffline(fmt.Errorf("localseg: syncing %s: %w", l.dir, err))
		}
		for {
			old := l.dirSynced.Load()
			if old >= dirGen || l.dirSynced.CompareAndSwap(old, dirGen) {
				break
			}
		}
	}
	return nil
}
