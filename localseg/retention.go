package localseg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ApplyRetention deletes segments wholly below the log start offset, older
// than retention.ms (by their largest timestamp) or beyond retention.bytes
// (oldest first), never the active segment unless it is expired too (then
// it is rolled first). It also expires idle producer state, rolls the
// active segment when segment.ms has passed since its first append (wall
// clock), applies flush.ms, and removes the files of deleted segments whose
// file.delete.delay.ms has passed. It returns how many segments it
// deleted. The log start offset moves to the first remaining segment.
func (l *Log) ApplyRetention(now time.Time) (int, error) {
	// The files of deleted segments whose delay has passed are removed
	// once the lock is released (deferred before its unlock): unlinking
	// a segment frees its blocks, which can take long on a busy disk,
	// and appends wait for the lock. Their segments left the list when
	// they were renamed; a crash meanwhile leaves .deleted files, which
	// recovery removes.
	var due []string
	defer func() { l.removeFiles(due) }()
	// No other change of the log start (DeleteRecords, truncations) runs
	// until this one is done: the checkpoint is written, and the
	// segments' files renamed, with mu released (see below).
	l.startMu.Lock()
	defer l.startMu.Unlock()
	doomed, keep, err := l.pickRetention(now, &due)
	if err != nil || len(doomed) == 0 {
		return 0, err
	}
	// The doomed segments left the list and their files were retired
	// under the lock; their renames to .deleted (directory updates that
	// wait behind other writers' journal commits on a busy disk) happen
	// here, with only startMu held: no segment is created at their base
	// offsets meanwhile (rolls start at the log end, above them, and
	// truncations wait for startMu). Reads that hold one of them keep
	// its open descriptor. A crash before the renames leaves segments
	// below the log start, which is on stable storage: the log opens at
	// that start and the next retention deletes them.
	defer l.retiring.Done()
	paths := l.renameToDeleted(doomed)
	l.forgetLostOf(doomed)
	// Snapshots below the first kept segment are no longer needed (the
	// one at its base stays). Rolls write theirs at higher offsets.
	l.deleteSnapshotsWhere(func(off int64) bool { return off < keep })
	l.mu.Lock()
	if l.mu.cfg.FileDeleteDelayMs <= 0 {
		due = append(due, paths...)
	} else {
		l.queueDeletesLocked(paths)
	}
	l.mu.Unlock()
	return len(doomed), nil
}

// pickRetention decides, under the log's lock, which segments retention
// deletes, moves the log start past them and takes them out of the
// segment list (keep is the base of the first one left). Their files are
// retired (closed once the last reader releases them), not yet renamed:
// the caller renames them, then calls retiring.Done. It sets due to the
// .deleted files whose delay has passed. Requires startMu.
func (l *Log) pickRetention(now time.Time, due *[]string) (doomed []*segment, keep int64, err error) {
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return nil, 0, err
	}
	*due = l.takeDueLocked(now, false)
	cfg := &l.mu.cfg
	nowMs := now.UnixMilli()
	if act := l.active(); act.size.Load() > 0 && nowMs-act.created > cfg.SegmentMs {
		if err := l.rollLocked(act.next.Load()); err != nil {
			return nil, 0, err
		}
	}
	l.mu.producers.expire(nowMs - cfg.ProducerIDExpirationMs)

	segs := l.segments()
	total := l.Size()
	start := l.logStart.Load()
	guard := l.retentionGuard()
	n := 0
	for i := 0; i < len(segs); i++ {
		s := segs[i]
		size := s.size.Load()
		below := s.next.Load() <= start
		if (size == 0 && i == len(segs)-1) || (s.next.Load() > guard && !below) {
			// A tiered log keeps what the object store lacks.
			break
		}
		if size == 0 && !below {
			// A sealed segment compaction emptied: it has no timestamp
			// to expire by, and holds back nothing. It goes with the
			// next segment retention deletes (the log start does not
			// move past offsets that held no record before the
			// records after them go).
			continue
		}
		expired := cfg.RetentionMs >= 0 && s.maxTs.Load() >= 0 && nowMs-s.maxTs.Load() > cfg.RetentionMs
		oversize := cfg.RetentionBytes >= 0 && total-size >= cfg.RetentionBytes
		if !below && !expired && !oversize {
			break
		}
		total -= size
		n = i + 1
	}
	if n == 0 {
		return nil, 0, nil
	}
	if n < len(segs) {
		l.ensureSnapshotLocked(segs[n].base)
	}
	if n == len(segs) {
		// Everything goes, the active segment too: roll so that an
		// empty one remains at the log end.
		if err := l.rollLocked(l.LogEndOffset()); err != nil {
			return nil, 0, err
		}
		segs = l.segments()
	}
	doomed = segs[:n]
	rest := append([]*segment(nil), segs[n:]...)
	if start := rest[0].base; start > l.logStart.Load() {
		if l.dirSynced.Load() < l.dirGen.Load() {
			// A segment kept may not be in the directory on stable
			// storage yet (a roll just now): the checkpoint and its
			// directory fsync, under the lock, make it so before the
			// others' files go, so a crash cannot leave a log without
			// it that restarts at a stale start.
			if err := l.setLogStartLocked(start); err != nil {
				return nil, 0, err
			}
		} else {
			// The checkpoint, with its fsyncs, is written with mu
			// released (appends wait for mu, and a busy disk takes
			// tens of milliseconds). startMu keeps the log start and
			// the head of the segment list as they are meanwhile
			// (only this, DeleteRecords and truncations change them);
			// rolls may add segments at the tail. A crash after the
			// write and before the deletes leaves segments below the
			// start, which the next retention deletes.
			l.mu.Unlock()
			err := l.writeLogStart(start)
			l.lockDrained()
			if err != nil {
				return nil, 0, err
			}
			if err := l.writableLocked(); err != nil {
				return nil, 0, err
			}
			segs = l.segments()
			if len(segs) <= n || segs[n] != rest[0] {
				// An empty active segment replaced by a roll past a
				// gap: the next retention decides again.
				return nil, 0, nil
			}
			rest = append([]*segment(nil), segs[n:]...)
			l.publishLogStartLocked(start)
		}
	}
	l.setSegments(rest)
	l.retireSegmentsLocked(doomed)
	l.retiring.Add(1) // Close waits for the renames
	return doomed, rest[0].base, nil
}

// deleteSegmentsLocked retires segments already unlinked from the segment
// list: their files are renamed to .deleted at once and removed once
// file.delete.delay.ms has passed. Open Ranges keep reading their files
// until released. Requires mu.
func (l *Log) deleteSegmentsLocked(segs []*segment) {
	l.retireSegmentsLocked(segs)
	paths := l.renameToDeleted(segs)
	l.forgetLostOf(segs)
	l.queueDeletesLocked(paths)
	if l.mu.cfg.FileDeleteDelayMs <= 0 {
		l.removeDueLocked(time.Time{}, true)
	}
}

// retireSegmentsLocked gives up the files of segments already unlinked
// from the segment list: each closes when its last reader releases it.
// Requires mu.
func (l *Log) retireSegmentsLocked(segs []*segment) {
	for _, s := range segs {
		s.retired.Store(true)
		s.zero.stop()
		s.w = nil
		l.fc.retire(s)
	}
}

// renameToDeleted renames the files of retired segments to .deleted (once
// their roll's files are written) and returns the new names. No other
// file of their names may be created meanwhile: the caller holds mu, or
// startMu with the segments below the log start.
func (l *Log) renameToDeleted(segs []*segment) []string {
	var paths []string
	for _, s := range segs {
		s.waitRollFiles()
		for _, ext := range []string{".log", ".index", ".timeindex", txnIndexExt} {
			p := s.path(ext)
			if err := l.fs.Rename(p, p+deletedExt); err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					l.log.Warn("renaming a deleted segment file", "file", p, "err", err)
					// Remove it now rather than leave it to be
					// loaded again.
					if err := l.fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
						l.log.Error("removing a deleted segment file", "file", p, "err", err)
					}
				}
				continue
			}
			paths = append(paths, p+deletedExt)
		}
	}
	return paths
}

// queueDeletesLocked queues .deleted files for removal once
// file.delete.delay.ms has passed. Requires mu.
func (l *Log) queueDeletesLocked(paths []string) {
	if len(paths) > 0 {
		due := l.now().Add(time.Duration(l.mu.cfg.FileDeleteDelayMs) * time.Millisecond)
		l.mu.deletes = append(l.mu.deletes, pendingDelete{paths: paths, due: due})
	}
}

// removeDueLocked removes the .deleted files whose delay has passed (all
// of them with all). Requires mu.
func (l *Log) removeDueLocked(now time.Time, all bool) {
	l.removeFiles(l.takeDueLocked(now, all))
}

// takeDueLocked takes the .deleted files whose delay has passed (all of
// them with all) off the pending deletes and returns them. Requires mu.
func (l *Log) takeDueLocked(now time.Time, all bool) []string {
	var due []string
	kept := l.mu.deletes[:0]
	for _, d := range l.mu.deletes {
		if !all && now.Before(d.due) {
			kept = append(kept, d)
			continue
		}
		due = append(due, d.paths...)
	}
	clear(l.mu.deletes[len(kept):])
	l.mu.deletes = kept
	return due
}

// removeFiles removes files taken off the pending deletes (no lock: no
// one else names them).
func (l *Log) removeFiles(paths []string) {
	for _, p := range paths {
		if err := l.fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("removing a deleted segment file", "file", p, "err", err)
		}
	}
}

// SetLogStartOffset moves the log start forward to offset (DeleteRecords,
// a follower taking its leader's, remote retention). It is persisted
// before returning; segments wholly below it are deleted by the next
// ApplyRetention. A log start at or past offset already (local retention
// may move it between a caller's look and its call) is left as it is: the
// log start never moves back. Past the log end is ErrOffsetOutOfRange.
func (l *Log) SetLogStartOffset(offset int64) error {
	if offset <= l.logStart.Load() {
		return nil // without a lock: a follower asks on every fetch
	}
	l.startMu.Lock()
	defer l.startMu.Unlock()
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if offset > l.LogEndOffset() {
		return fmt.Errorf("%w: %d past the log end %d", ErrOffsetOutOfRange, offset, l.LogEndOffset())
	}
	if offset <= l.logStart.Load() {
		return nil
	}
	return l.setLogStartLocked(offset)
}

// setLogStartLocked persists and publishes a new log start, and drops the
// leader epochs wholly below it. Requires mu.
func (l *Log) setLogStartLocked(offset int64) error {
	if offset == l.logStart.Load() {
		return nil
	}
	if err := l.writeLogStart(offset); err != nil {
		return err
	}
	l.publishLogStartLocked(offset)
	return nil
}

// writeLogStart makes offset the log start on stable storage.
func (l *Log) writeLogStart(offset int64) error {
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, logStartFile), encodeOffsetCheckpoint("log-start-offset", offset)); err != nil {
		return fmt.Errorf("localseg: writing the log start: %w", err)
	}
	return nil
}

// publishLogStartLocked publishes a log start already on stable storage,
// and drops the leader epochs wholly below it. Requires mu.
func (l *Log) publishLogStartLocked(offset int64) {
	l.logStart.Store(offset)
	c := l.mu.epochs.clone()
	if c.truncateFromStart(offset) {
		if err := l.writeEpochs(&c); err != nil {
			l.log.Warn("writing the leader-epoch checkpoint", "dir", l.dir, "err", err)
		} else {
			l.setEpochsLocked(c)
		}
	}
}
