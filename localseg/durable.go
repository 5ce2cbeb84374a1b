package localseg

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// SyncScheduler is a log's group commit. Callers that need records on
// stable storage (an acks=all produce whose in-sync replicas are the leader
// alone, flush.messages, flush.ms) register with WhenDurable; one
// goroutine, started on demand and gone when idle, fsyncs the log outside
// the log's lock (appends go on meanwhile), moves the recovery point to the
// log end it saw before the fsync, and runs the callbacks of every offset
// that fsync covered. Producers that arrive during an fsync share the next
// one: under load, one fsync serves every append of the last fsync's
// duration.
//
// A failed fsync takes the log offline: the callbacks get the error and the
// log never fsyncs again (see Log.Offline).
type SyncScheduler struct {
	l  *Log
	mu struct {
		sync.Mutex
		want    int64 // the highest offset asked to be durable
		running bool  // the sync goroutine is on
		waiters []durableWaiter
		timer   *time.Timer // flush.ms, armed by the first unflushed append
		stopped bool
	}
}

type durableWaiter struct {
	offset int64
	fn     func(error)
}

// WhenDurable arranges for fn to be called once every record below offset
// is on stable storage, or with the error that prevents it (ErrOffline
// wrapping the failure, ErrClosed). It returns true, and never calls fn,
// when they are durable already. fn runs on the scheduler's goroutine (or
// the closing one) and must not block or call the log.
func (l *Log) WhenDurable(offset int64, fn func(error)) bool {
	return l.sync.whenDurable(offset, fn)
}

func (s *SyncScheduler) whenDurable(offset int64, fn func(error)) bool {
	if offset <= s.l.RecoveryPoint() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.stopped {
		err := s.l.Offline()
		if err == nil && offset > s.l.RecoveryPoint() {
			err = ErrClosed
		}
		if err == nil {
			return true
		}
		go fn(err)
		return false
	}
	s.mu.waiters = append(s.mu.waiters, durableWaiter{offset: offset, fn: fn})
	s.requestLocked(offset)
	return false
}

// request asks for a sync up to offset without waiting for it.
func (s *SyncScheduler) request(offset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.stopped {
		s.requestLocked(offset)
	}
}

// Requires s.mu.
func (s *SyncScheduler) requestLocked(offset int64) {
	s.mu.want = max(s.mu.want, offset)
	if !s.mu.running {
		s.mu.running = true
		s.l.flushes.Add(1)
		go s.run()
	}
}

// afterAppend applies flush.messages and flush.ms after an append that
// moved the log end to leo. It reports whether the append crossed
// flush.messages (a sync to leo is then on its way). Requires the log's mu.
func (s *SyncScheduler) afterAppend(cfg *Config, leo int64) bool {
	due := cfg.FlushMessages != math.MaxInt64 && leo-s.l.RecoveryPoint() >= cfg.FlushMessages
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.stopped {
		return false
	}
	if due {
		s.requestLocked(leo)
	}
	if cfg.FlushMs != math.MaxInt64 && s.mu.timer == nil {
		s.mu.timer = time.AfterFunc(time.Duration(cfg.FlushMs)*time.Millisecond, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.mu.timer = nil
			if !s.mu.stopped {
				s.requestLocked(s.l.LogEndOffset())
			}
		})
	}
	return due
}

// run syncs until every request is served.
func (s *SyncScheduler) run() {
	defer s.l.flushes.Done()
	for {
		s.mu.Lock()
		want := s.mu.want
		if s.mu.stopped || want <= s.l.RecoveryPoint() || s.l.Offline() != nil {
			s.fireLocked(s.l.Offline())
			s.mu.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		err := s.l.syncActive()
		s.mu.Lock()
		s.fireLocked(err)
		s.mu.Unlock()
	}
}

// fireLocked runs the callbacks the recovery point now covers, and all of
// them with err when it is not nil. Requires s.mu.
func (s *SyncScheduler) fireLocked(err error) {
	rp := s.l.RecoveryPoint()
	kept := s.mu.waiters[:0]
	for _, w := range s.mu.waiters {
		switch {
		case w.offset <= rp:
			w.fn(nil)
		case err != nil:
			w.fn(err)
		default:
			kept = append(kept, w)
		}
	}
	clear(s.mu.waiters[len(kept):])
	s.mu.waiters = kept
}

// halt starts no more syncs (Close, before it waits for the running one).
func (s *SyncScheduler) halt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.stopped = true
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
	defer s.mu.Unlock()
	if err == nil {
		err = ErrClosed
	}
	s.fireLocked(err)
}

// syncActive fsyncs what the recovery point does not cover yet, without
// the log's mu, and moves the recovery point (in memory: the checkpoint
// file is written by rolls, Flush and Close; recovery scans from the last
// one written) to the log end seen before the fsync. A failure takes the
// log offline.
func (l *Log) syncActive() error {
	if err := l.Offline(); err != nil {
		return err
	}
	l.rp.Lock()
	gen, rp := l.rp.gen, l.rp.point
	l.rp.Unlock()
	dirGen := l.dirGen.Load()
	segs := l.segments()
	end := segs[len(segs)-1].next.Load()
	for i, s := range segs {
		if i < len(segs)-1 && s.next.Load() <= rp {
			continue
		}
		if err := l.syncSegment(s); err != nil {
			return l.goOffline(err)
		}
	}
	// A segment created since the directory was last synced needs its
	// entry on stable storage too.
	if l.dirSynced.Load() != dirGen {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return l.goOffline(fmt.Errorf("localseg: syncing %s: %w", l.dir, err))
		}
		l.dirSynced.Store(dirGen)
	}
	l.rp.Lock()
	if gen == l.rp.gen && end > l.rp.point {
		l.rp.point = end
	}
	l.rp.Unlock()
	return nil
}
