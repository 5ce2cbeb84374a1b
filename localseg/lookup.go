package localseg

import (
	"context"
	"errors"
	"fmt"
	"io"

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
// reaches ts and scans its records (see scanForRecord for what that may
// allocate).
func (l *Log) OffsetForTimestamp(ctx context.Context, ts int64) (offset, timestamp int64, epoch int32, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		offset, timestamp, epoch, ok, err = l.offsetForTimestamp(ctx, ts)
		if !errors.Is(err, errSegmentGone) || attempt >= 8 {
			return
		}
	}
}

func (l *Log) offsetForTimestamp(ctx context.Context, ts int64) (int64, int64, int32, bool, error) {
	if l.closed.Load() {
		return 0, 0, 0, false, ErrClosed
	}
	start := l.logStart.Load()
	for _, s := range l.segments() {
		if s.next.Load() <= start || s.maxTs.Load() < ts {
			continue
		}
		off, rts, ep, found, err := l.scanForRecord(ctx, s, func(idx []indexEntry, tidx []timeEntry) int64 {
			if e, ok := floorTime(tidx, ts); ok {
				return int64(floorEntry(idx, e.rel).pos)
			}
			return 0
		}, func(h header) bool { return h.maxTs >= ts && h.last >= start },
			func(off, rts int64) bool { return rts >= ts && off >= start })
		if err != nil || found {
			return off, rts, ep, found, err
		}
	}
	return 0, 0, 0, false, nil
}

// MaxTimestamp returns the record with the largest timestamp in the log
// (ListOffsets MAX_TIMESTAMP, KIP-734): its offset, timestamp and epoch.
// Of records sharing that timestamp, the first wins.
func (l *Log) MaxTimestamp(ctx context.Context) (offset, timestamp int64, epoch int32, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		offset, timestamp, epoch, ok, err = l.maxTimestamp(ctx)
		if !errors.Is(err, errSegmentGone) || attempt >= 8 {
			return
		}
	}
}

func (l *Log) maxTimestamp(ctx context.Context) (int64, int64, int32, bool, error) {
	if l.closed.Load() {
		return 0, 0, 0, false, ErrClosed
	}
	start := l.logStart.Load()
	var segs []*segment
	for _, s := range l.segments() {
		if s.next.Load() <= start || s.size.Load() == 0 || s.maxTs.Load() < 0 {
			continue
		}
		segs = append(segs, s)
	}
	// A segment's largest timestamp may be a record below the log start
	// (a DeleteRecords inside the segment holding it): only the segment
	// holding the log start can be so. Its largest timestamp at or above
	// the start is then read from its records, and the search repeats.
	var partial *segment
	partialTs := int64(-1)
	for {
		var best *segment
		bestTs := int64(-1)
		for _, s := range segs {
			ts := s.maxTs.Load()
			if s == partial {
				ts = partialTs
			}
			if ts >= 0 && (best == nil || ts > bestTs) {
				best, bestTs = s, ts
			}
		}
		if best == nil {
			return 0, 0, 0, false, nil
		}
		off, ts, ep, ok, err := l.maxTimestampIn(ctx, best, bestTs, start)
		if err != nil || ok || best == partial || best.base >= start {
			return off, ts, ep, ok, err
		}
		partial = best
		if partialTs, err = l.maxTimestampFrom(ctx, best, start); err != nil {
			return 0, 0, 0, false, err
		}
	}
}

// maxTimestampIn finds the first record at or above start in s whose
// timestamp is want.
func (l *Log) maxTimestampIn(ctx context.Context, best *segment, want, start int64) (int64, int64, int32, bool, error) {
	at := best.maxTsOffset.Load()
	if want != best.maxTs.Load() {
		at = best.base // not the segment's own largest: no index hint
	}
	off, ts, ep, ok, err := l.scanForRecord(ctx, best, func(idx []indexEntry, _ []timeEntry) int64 {
		// The batch holding the largest timestamp ends at at; the
		// first batch reaching it cannot come after that one.
		if at > best.base {
			return int64(floorEntry(idx, uint32(at-best.base)).pos)
		}
		return 0
	}, func(h header) bool { return h.maxTs >= want && h.last >= start },
		func(off, ts int64) bool { return ts == want && off >= start })
	if err == nil && !ok {
		// The time index pointed past the first batch holding the
		// timestamp (or the first one lay below the log start): scan
		// the whole segment.
		off, ts, ep, ok, err = l.scanForRecord(ctx, best, func([]indexEntry, []timeEntry) int64 { return 0 },
			func(h header) bool { return h.maxTs >= want && h.last >= start },
			func(off, ts int64) bool { return ts == want && off >= start })
	}
	return off, ts, ep, ok, err
}

// maxTimestampFrom is the largest timestamp of s's records at or above
// start (-1 when none is).
func (l *Log) maxTimestampFrom(ctx context.Context, s *segment, start int64) (int64, error) {
	largest := int64(-1)
	_, _, _, _, err := l.scanForRecord(ctx, s, func(idx []indexEntry, _ []timeEntry) int64 {
		if start > s.base {
			return int64(floorEntry(idx, uint32(start-s.base)).pos)
		}
		return 0
	}, func(h header) bool { return h.last >= start && h.maxTs > largest },
		func(off, ts int64) bool {
			if off >= start && ts > largest {
				largest = ts
			}
			return false
		})
	return largest, err
}

// scanForRecord walks s's batches from the position from returns; in the
// first batch that batchMatch accepts and that holds a record recMatch
// accepts, it returns that record.
//
// What it allocates is bounded whatever the file says: an uncompressed
// batch is streamed from the file through a small window; a compressed one
// is read whole and decompressed as a stream, both charged to the scan
// budget first (at most the segment's batch and a decoder's state, refused
// when larger than the whole budget).
func (l *Log) scanForRecord(ctx context.Context, s *segment, from func([]indexEntry, []timeEntry) int64, batchMatch func(header) bool, recMatch func(offset, ts int64) bool) (int64, int64, int32, bool, error) {
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
	for pos := from(idx, tidx); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return 0, 0, 0, false, fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
		}
		if batchMatch(h) {
			var off, ts int64
			found := false
			match := func(o, t int64) bool {
				if recMatch(o, t) {
					off, ts, found = o, t, true
					return false
				}
				return true
			}
			if err := l.walkStoredBatch(ctx, f, pos, h.size, match); err != nil {
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

// walkStoredBatch calls fn with the offset and timestamp of each record of
// the batch of n bytes at pos in f, until fn returns false.
func (l *Log) walkStoredBatch(ctx context.Context, f File, pos, n int64, fn func(offset, ts int64) bool) error {
	var hb [recordbatch.HeaderSize]byte
	if _, err := f.ReadAt(hb[:], pos); err != nil {
		return err
	}
	hdr := recordbatch.Batch(hb[:])
	if hdr.Codec() == recordbatch.CodecNone {
		body := io.NewSectionReader(f, pos+recordbatch.HeaderSize, n-recordbatch.HeaderSize)
		return recordbatch.WalkUncompressedRecords(hdr, body, fn)
	}
	opts := recordbatch.ValidateOptions{MaxDecompressed: maxRecordScanBytes}
	// Take the batch's bytes, read it, then the decoder's share. Never
	// wait while holding: if the second part is not free now, give
	// everything back and wait for the whole.
	held := n
	for {
		if err := l.budget.Acquire(ctx, held); err != nil {
			return err
		}
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, pos); err != nil {
			l.budget.Release(held)
			return err
		}
		need, err := recordbatch.WalkMemory(recordbatch.Batch(buf), opts)
		if err != nil {
			l.budget.Release(held)
			return err
		}
		if more := n + need - held; more <= 0 || l.budget.TryAcquire(more) {
			held = max(held, n+need)
			err = recordbatch.WalkRecords(ctx, recordbatch.Batch(buf), opts, fn)
			l.budget.Release(held)
			return err
		}
		l.budget.Release(held)
		held = n + need
	}
}

// Epochs returns the leader-epoch checkpoint entries, oldest first.
// It takes no lock: appends in progress do not delay it.
func (l *Log) Epochs() []EpochEntry {
	return append([]EpochEntry(nil), l.epochs.Load().entries...)
}

// LatestEpoch is the newest leader epoch entry (ok false: none), without
// the copy Epochs makes. It takes no lock.
func (l *Log) LatestEpoch() (EpochEntry, bool) {
	entries := l.epochs.Load().entries
	if len(entries) == 0 {
		return EpochEntry{}, false
	}
	return entries[len(entries)-1], true
}

// EndOffsetForEpoch answers OffsetForLeaderEpoch as Kafka's
// LeaderEpochFileCache.endOffsetFor does: for the latest epoch, the log
// end; for an older one, the largest epoch at or below it and the start
// offset of the first epoch after it; for an epoch older than every entry,
// that epoch and the first entry's start offset. ok is false when the
// epoch is newer than every entry, or no epoch is known
// (UNDEFINED_EPOCH_OFFSET).
// It takes no lock.
func (l *Log) EndOffsetForEpoch(epoch int32) (foundEpoch int32, endOffset int64, ok bool) {
	return l.epochs.Load().endOffsetFor(epoch, l.LogEndOffset())
}
