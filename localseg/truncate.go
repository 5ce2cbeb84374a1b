package localseg

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// TruncateTo removes everything at and above offset (a follower diverged
// from its leader). The batch containing offset goes too, so the log end
// may land below offset. Producer state and epochs are truncated with it.
// At or past the log end no record goes, but an epoch that starts at the
// log end does: this broker led at that epoch and appended nothing in it
// before another leader was elected, which never saw it. Kept, it is the
// last epoch every fetch names, the leader answers each one as diverging,
// and each truncation to the log end changed nothing: the follower never
// caught up, and never said why.
func (l *Log) TruncateTo(offset int64) (err error) {
	l.startMu.Lock()
	defer l.startMu.Unlock()
	defer func() {
		if err == nil {
			l.lowerCleanerCheckpoint(offset)
		}
	}()
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	l.waitRollFiles()
	if end := l.LogEndOffset(); offset >= end {
		return l.truncateEpochsLocked(end)
	}
	if offset < l.logStart.Load() {
		return l.truncateFullyLocked(offset)
	}
	segs := l.segments()
	i := sort.Search(len(segs), func(i int) bool { return segs[i].base > offset }) - 1
	if i < 0 {
		return l.truncateFullyLocked(offset)
	}
	s := segs[i]
	f, err := l.fc.acquire(s)
	if err != nil {
		return err
	}
	pos, _, err := l.findBatch(s, f, offset, s.size.Load(), s.next.Load())
	l.fc.release(s)
	if err != nil {
		return err
	}
	// The recovery point goes below the cut before any byte changes, so
	// a crash midway recovers from there.
	if err := l.lowerRecoveryPointLocked(s.base); err != nil {
		return err
	}
	// Later segments go; the cut segment becomes the active one again,
	// reopened from its kept bytes.
	l.mu.flushTail = nil
	l.deleteSegmentsLocked(segs[i+1:])
	if i+1 < len(segs) {
		// The later segments' renames are made durable before anything
		// depends on them: after a crash they would load again, the cut
		// batches with them.
		if err := l.fs.SyncDir(l.dir); err != nil {
			l.mu.closed = true
			l.closed.Store(true)
			return l.goOffline(fmt.Errorf("localseg: truncating %s (log closed): syncing the directory: %w", l.dir, err))
		}
	}
	s.zero.stop()
	s.w = nil
	l.fc.retire(s)
	reopened, err := l.reopenActive(s.base, pos, s.abortedTxns())
	if err != nil {
		// The segment list still names the retired segment; the log
		// cannot go on without its active segment.
		l.mu.closed = true
		l.closed.Store(true)
		return fmt.Errorf("localseg: truncating %s (log closed): %w", l.dir, err)
	}
	list := append(append([]*segment(nil), segs[:i]...), reopened)
	l.setSegments(list)
	return l.afterTruncateLocked()
}

// reopenActive opens an existing segment file as the active segment, cut
// to size, and rebuilds its live indexes from it. Of its aborted
// transactions (txns), those whose markers were cut go, from its
// transaction index too.
func (l *Log) reopenActive(base, size int64, txns []AbortedTxn) (*segment, error) {
	s := l.makeSegment(base)
	w, err := l.fs.OpenFile(s.path(".log"), os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localseg: reopening segment: %w", err)
	}
	if err := w.Truncate(size); err != nil {
		w.Close()
		return nil, fmt.Errorf("localseg: truncating: %w", err)
	}
	// The new length is made durable before anything depends on it (the
	// next append writes at size; the leader-epoch and producer state are
	// cut to it): a crash must not bring the cut batches back, whose CRCs
	// recovery would accept.
	if err := w.Sync(); err != nil {
		w.Close()
		return nil, l.goOffline(fmt.Errorf("localseg: syncing the truncated %s: %w", s.path(".log"), err))
	}
	for _, ext := range []string{".index", ".timeindex"} {
		l.fs.Remove(s.path(ext))
	}
	s.w = w
	s.size.Store(size)
	if err := l.fillActive(s, w, size); err != nil {
		w.Close()
		return nil, err
	}
	s.txns.Store(newLiveEntries(txns))
	end := s.next.Load()
	kept := txns[:sort.Search(len(txns), func(i int) bool { return txns[i].LastOffset >= end })]
	if err := l.setTxnsLocked(s, kept); err != nil {
		w.Close()
		return nil, err
	}
	l.fc.admit(s, w)
	return s, nil
}

// afterTruncateLocked cuts producer state, epochs and snapshots to the new
// log end. Requires mu.
func (l *Log) afterTruncateLocked() error {
	end := l.LogEndOffset()
	l.lowerHighWatermark(end)
	if err := l.truncateEpochsLocked(end); err != nil {
		return err
	}
	l.deleteSnapshotsWhere(func(off int64) bool { return off > end })
	return l.rebuildProducersLocked(end)
}

// truncateEpochsLocked removes the epochs that start at or after end, on
// disk first. Requires mu.
func (l *Log) truncateEpochsLocked(end int64) error {
	c := l.mu.epochs.clone()
	if !c.truncateFromEnd(end) {
		return nil
	}
	if err := l.writeEpochs(&c); err != nil {
		return err
	}
	l.setEpochsLocked(c)
	return nil
}

// TruncateFullyAndStartAt empties the log and restarts it at offset (a
// follower far behind a leader whose log starts past it).
func (l *Log) TruncateFullyAndStartAt(offset int64) (err error) {
	l.startMu.Lock()
	defer l.startMu.Unlock()
	defer func() {
		if err == nil {
			l.lowerCleanerCheckpoint(offset)
		}
	}()
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	return l.truncateFullyLocked(offset)
}

// Requires mu.
func (l *Log) truncateFullyLocked(offset int64) error {
	if offset < 0 {
		return fmt.Errorf("%w: cannot start the log at %d", ErrOffsetOutOfRange, offset)
	}
	l.waitRollFiles()
	if err := l.lowerRecoveryPointLocked(0); err != nil {
		return err
	}
	l.mu.flushTail = nil
	// Every segment goes (renamed to .deleted, so that no file name is
	// reused while Ranges still read it), then an empty one starts.
	l.deleteSegmentsLocked(l.segments())
	s, err := l.newSegment(offset)
	if err != nil {
		l.mu.closed = true
		l.closed.Store(true)
		return fmt.Errorf("localseg: truncating %s (log closed): %w", l.dir, err)
	}
	list := []*segment{s}
	l.setSegments(list)
	l.deleteSnapshotsWhere(func(int64) bool { return true })
	empty := epochCache{}
	if err := l.writeEpochs(&empty); err != nil {
		return err
	}
	l.setEpochsLocked(empty)
	l.setProducersLocked(newProducerState())
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, logStartFile), encodeOffsetCheckpoint("log-start-offset", offset)); err != nil {
		return fmt.Errorf("localseg: writing the log start: %w", err)
	}
	l.logStart.Store(offset)
	l.SetHighWatermark(offset)
	return nil
}

// TruncateFullyAndRestore empties the log and restarts it at offset with
// state rebuilt elsewhere (a replica starting from remote storage, KIP-405):
// the leader epochs in force up to offset (ascending, each starting below
// offset: the records that started them) and the producer state as of offset, in the snapshot format of
// this package (empty: no producers). Nothing changes if the state does
// not decode.
func (l *Log) TruncateFullyAndRestore(offset int64, epochs []EpochEntry, producerSnapshot []byte) (err error) {
	defer func() {
		if err == nil {
			l.lowerCleanerCheckpoint(offset)
		}
	}()
	producers := newProducerState()
	if len(producerSnapshot) > 0 {
		st, err := decodeProducerState(producerSnapshot)
		if err != nil {
			return fmt.Errorf("localseg: restoring the producer state: %w", err)
		}
		producers = st
	}
	for i, e := range epochs {
		if e.Epoch < 0 || e.StartOffset < 0 || e.StartOffset >= offset || (i > 0 && (e.Epoch <= epochs[i-1].Epoch || e.StartOffset < epochs[i-1].StartOffset)) {
			return fmt.Errorf("localseg: restoring leader epochs: entry %d (%d at %d) out of order", i, e.Epoch, e.StartOffset)
		}
	}
	l.startMu.Lock()
	defer l.startMu.Unlock()
	l.lockDrained()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if err := l.truncateFullyLocked(offset); err != nil {
		return err
	}
	c := epochCache{entries: append([]EpochEntry(nil), epochs...)}
	if err := l.writeEpochs(&c); err != nil {
		return err
	}
	l.setEpochsLocked(c)
	l.setProducersLocked(producers)
	if err := l.writeSnapshotLocked(offset); err != nil {
		return fmt.Errorf("localseg: writing the restored producer snapshot: %w", err)
	}
	return nil
}
