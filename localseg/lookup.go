package localseg

import (
	"errors"
	"fmt"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// OffsetForTimestamp returns the first record whose timestamp is at or
// after ts (ListOffsets by time): its offset, timestamp and the leader
// epoch of its batch. ok is false when no such record exists.
//
// It skips segments whose largest timestamp is below ts, finds a starting
// position in the first other one through its time index (the last entry
// below ts: no earlier batch can hold a later timestamp) and its offset
// index, then walks batch headers to the first batch whose max timestamp
// reaches ts and scans its records (decompressing at most
// maxRecordScanBytes).
func (l *Log) OffsetForTimestamp(ts int64) (offset, timestamp int64, epoch int32, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		offset, timestamp, epoch, ok, err = l.offsetForTimestamp(ts)
		if !errors.Is(err, errSegmentGone) || attempt >= 8 {
			return
		}
	}
}

func (l *Log) offsetForTimestamp(ts int64) (int64, int64, int32, bool, error) {
	if l.closed.Load() {
		return 0, 0, 0, false, ErrClosed
	}
	start := l.logStart.Load()
	for _, s := range l.segments() {
		if s.next.Load() <= start || s.maxTs.Load() < ts {
			continue
		}
		off, rts, ep, found, err := l.scanForRecord(s, func(idx []indexEntry, tidx []timeEntry) int64 {
			if e, ok := floorTime(tidx, ts); ok {
				return int64(floorEntry(idx, e.rel).pos)
			}
			return 0
		}, func(h header) bool { return h.maxTs >= ts && h.last >= start },
			func(r recordbatch.Record) bool { return r.Timestamp >= ts && r.Offset >= start })
		if err != nil || found {
			return off, rts, ep, found, err
		}
	}
	return 0, 0, 0, false, nil
}

// MaxTimestamp returns the record with the largest timestamp in the log
// (ListOffsets MAX_TIMESTAMP, KIP-734): its offset, timestamp and epoch.
// Of records sharing that timestamp, the first wins.
func (l *Log) MaxTimestamp() (offset, timestamp int64, epoch int32, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		offset, timestamp, epoch, ok, err = l.maxTimestamp()
		if !errors.Is(err, errSegmentGone) || attempt >= 8 {
			return
		}
	}
}

func (l *Log) maxTimestamp() (int64, int64, int32, bool, error) {
	if l.closed.Load() {
		return 0, 0, 0, false, ErrClosed
	}
	start := l.logStart.Load()
	var best *segment
	for _, s := range l.segments() {
		if s.next.Load() <= start || s.size.Load() == 0 || s.maxTs.Load() < 0 {
			continue
		}
		if best == nil || s.maxTs.Load() > best.maxTs.Load() {
			best = s
		}
	}
	if best == nil {
		return 0, 0, 0, false, nil
	}
	want, at := best.maxTs.Load(), best.maxTsOffset.Load()
	off, ts, ep, ok, err := l.scanForRecord(best, func(idx []indexEntry, _ []timeEntry) int64 {
		// The batch holding the largest timestamp ends at at; the
		// first batch reaching it cannot come after that one.
		if at > best.base {
			return int64(floorEntry(idx, uint32(at-best.base)).pos)
		}
		return 0
	}, func(h header) bool { return h.maxTs == want && h.last >= start },
		func(r recordbatch.Record) bool { return r.Timestamp == want && r.Offset >= start })
	if err == nil && !ok {
		// The time index pointed past the first batch holding the
		// timestamp (or the first one lay below the log start): scan
		// the whole segment.
		off, ts, ep, ok, err = l.scanForRecord(best, func([]indexEntry, []timeEntry) int64 { return 0 },
			func(h header) bool { return h.maxTs == want && h.last >= start },
			func(r recordbatch.Record) bool { return r.Timestamp == want && r.Offset >= start })
	}
	return off, ts, ep, ok, err
}

// scanForRecord walks s's batches from the position from returns; in the
// first batch that batchMatch accepts and that holds a record recMatch
// accepts, it returns that record.
func (l *Log) scanForRecord(s *segment, from func([]indexEntry, []timeEntry) int64, batchMatch func(header) bool, recMatch func(recordbatch.Record) bool) (int64, int64, int32, bool, error) {
	f, err := l.fc.acquire(s)
	if err != nil {
		return 0, 0, 0, false, err
	}
	defer l.fc.release(s)
	idx, tidx, err := l.indexesFor(s, f)
	if err != nil {
		return 0, 0, 0, false, err
	}
	size := s.size.Load()
	var buf []byte
	for pos := from(idx, tidx); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return 0, 0, 0, false, fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
		}
		if batchMatch(h) {
			if int64(cap(buf)) < h.size {
				buf = make([]byte, h.size)
			}
			buf = buf[:h.size]
			if _, err := f.ReadAt(buf, pos); err != nil {
				return 0, 0, 0, false, err
			}
			var off, ts int64
			found := false
			err := recordbatch.Records(recordbatch.Batch(buf), maxRecordScanBytes, func(r recordbatch.Record) error {
				if recMatch(r) {
					off, ts, found = r.Offset, r.Timestamp, true
					return errStopScan
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStopScan) {
				return 0, 0, 0, false, fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
			}
			if found {
				return off, ts, h.leaderEpoch, true, nil
			}
		}
		pos += h.size
	}
	return 0, 0, 0, false, nil
}

var errStopScan = errors.New("stop")

// Epochs returns the leader-epoch checkpoint entries, oldest first.
func (l *Log) Epochs() []EpochEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]EpochEntry(nil), l.mu.epochs.entries...)
}

// EndOffsetForEpoch answers OffsetForLeaderEpoch as Kafka's
// LeaderEpochFileCache.endOffsetFor does: for the latest epoch, the log
// end; for an older one, the largest epoch at or below it and the start
// offset of the first epoch after it; for an epoch older than every entry,
// that epoch and the first entry's start offset. ok is false when the
// epoch is newer than every entry, or no epoch is known
// (UNDEFINED_EPOCH_OFFSET).
func (l *Log) EndOffsetForEpoch(epoch int32) (foundEpoch int32, endOffset int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.epochs.endOffsetFor(epoch, l.LogEndOffset())
}
