package tiering

import (
	"bytes"
	"context"
	"fmt"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// maxLookupDecompressed caps what looking inside one compressed batch
// decompresses (as localseg's lookups do).
const maxLookupDecompressed = 64 << 20

// OffsetForTimestamp finds the first remote record (at or above the log
// start) whose timestamp is at or above ts, as ListOffsets by timestamp
// does: its offset, timestamp and batch leader epoch. ok is false when no
// remote record has one. It skips segments whose largest timestamp is
// below ts and reads the others through the cache.
func (r *Reader) OffsetForTimestamp(ctx context.Context, p Partition, m *Manifest, ts int64) (offset, timestamp int64, epoch int32, ok bool, err error) {
	start := m.Start()
	if start < 0 {
		return 0, 0, 0, false, nil
	}
	var done bool
	walkErr := WalkSegments(ctx, r, p, m, start, func(s Spill) bool { return s.MaxTimestamp < ts }, func(seg Segment) bool {
		if seg.MaxTimestamp < ts {
			return true
		}
		offset, timestamp, epoch, ok, err = r.searchSegment(ctx, p, m, seg, start, ts)
		done = ok || err != nil
		return !done
	})
	if done {
		return offset, timestamp, epoch, ok, err
	}
	return 0, 0, 0, false, walkErr
}

// searchSegment looks for the first record at or above start with a
// timestamp at or above ts in one remote segment.
func (r *Reader) searchSegment(ctx context.Context, p Partition, m *Manifest, seg Segment, start, ts int64) (offset, timestamp int64, epoch int32, ok bool, err error) {
	err = r.walkSegmentRecords(ctx, p, m, seg, start, func(b recordbatch.Batch) bool { return b.MaxTimestamp() < ts },
		func(b recordbatch.Batch, o, t int64) bool {
			if t >= ts {
				offset, timestamp, epoch, ok = o, t, b.PartitionLeaderEpoch(), true
			}
			return !ok
		})
	if err != nil || !ok {
		return 0, 0, 0, false, err
	}
	return offset, timestamp, epoch, true, nil
}

// walkSegmentRecords calls fn with each record of seg at or above start,
// in order, in the batches skip does not pass over, until fn returns
// false. It reads the segment through the cache a MiB at a time.
func (r *Reader) walkSegmentRecords(ctx context.Context, p Partition, m *Manifest, seg Segment, start int64, skip func(recordbatch.Batch) bool, fn func(b recordbatch.Batch, offset, timestamp int64) bool) error {
	for off := max(seg.BaseOffset, start); off < seg.NextOffset; {
		parts, err := r.Read(ctx, p, m, off, 1<<20, seg.NextOffset, true)
		if err != nil || parts == nil {
			return err
		}
		next := off
		for buf := bytes.Join(parts, nil); len(buf) > 0; {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch: read again from it
			}
			buf = rest
			next = b.NextOffset()
			if b.LastOffset() < start || skip(b) {
				continue
			}
			more := true
			err = recordbatch.WalkRecords(ctx, b, recordbatch.ValidateOptions{MaxDecompressed: maxLookupDecompressed}, func(o, t int64) bool {
				if o >= start {
					more = fn(b, o, t)
				}
				return more
			})
			if err != nil {
				return fmt.Errorf("tiering: %s at %d: %w", p, b.BaseOffset(), err)
			}
			if !more {
				return nil
			}
		}
		if next <= off {
			return fmt.Errorf("%w: %s: no whole batch at %d", ErrCorrupt, p, off)
		}
		off = next
	}
	return nil
}

// MaxTimestampRecord returns the remote record with the largest timestamp
// at or above the log start (ListOffsets MAX_TIMESTAMP), the first of
// those sharing it; ok is false when the remote log holds none. The
// manifest's largest timestamps are those of whole segments: the segment
// holding a log start a DeleteRecords moved inside it may have its largest
// below the start, so that one's is read from its records when it matters.
func (r *Reader) MaxTimestampRecord(ctx context.Context, p Partition, m *Manifest) (offset, timestamp int64, epoch int32, ok bool, err error) {
	start := m.Start()
	if start < 0 {
		return 0, 0, 0, false, nil
	}
	largest := int64(-1)
	var partial Segment
	havePartial := false
	err = WalkSegments(ctx, r, p, m, start, func(s Spill) bool {
		if s.BaseOffset >= start {
			largest = max(largest, s.MaxTimestamp)
			return true
		}
		return false
	}, func(seg Segment) bool {
		if seg.BaseOffset >= start {
			largest = max(largest, seg.MaxTimestamp)
		} else {
			partial, havePartial = seg, true
		}
		return true
	})
	if err != nil {
		return 0, 0, 0, false, err
	}
	if havePartial && partial.MaxTimestamp > largest {
		ts, err := r.maxTimestampFrom(ctx, p, m, partial, start)
		if err != nil {
			return 0, 0, 0, false, err
		}
		largest = max(largest, ts)
	}
	if largest < 0 {
		return 0, 0, 0, false, nil
	}
	return r.OffsetForTimestamp(ctx, p, m, largest)
}

// maxTimestampFrom is the largest timestamp of seg's records at or above
// start (-1 when none is).
func (r *Reader) maxTimestampFrom(ctx context.Context, p Partition, m *Manifest, seg Segment, start int64) (int64, error) {
	largest := int64(-1)
	err := r.walkSegmentRecords(ctx, p, m, seg, start, func(b recordbatch.Batch) bool { return b.MaxTimestamp() <= largest },
		func(_ recordbatch.Batch, _, t int64) bool {
			largest = max(largest, t)
			return true
		})
	if err != nil {
		return 0, err
	}
	return largest, nil
}

// MaxTimestamp is the largest record timestamp in the remote log (-1 when
// unknown), from the manifest alone.
func (m *Manifest) MaxTimestamp() int64 {
	ts := int64(-1)
	start := m.Start()
	for _, s := range m.Spills {
		if s.NextOffset > start {
			ts = max(ts, s.MaxTimestamp)
		}
	}
	for _, s := range m.Segments {
		if s.NextOffset > start {
			ts = max(ts, s.MaxTimestamp)
		}
	}
	return ts
}
