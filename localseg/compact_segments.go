package localseg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// SegmentCompaction is a compaction pass over sealed segments kept outside
// a Log and read as streams: a tiered log's remote segments (package
// tiering). It decides each record as Log.Compact does (the same key map,
// tombstone and marker horizons, aborted transactions and producers' last
// batches); its caller picks the segments, reads them in offset order,
// and stores what it writes.
//
// A pass maps the keys of the dirty segments (MapKeys, in offset order,
// until Full), then rewrites every segment from the first one cleaned up
// to the last one mapped, in groups (NewSegment, Add for each segment of
// the group, Finish).
type SegmentCompaction struct {
	c cleaner
}

// SegmentCompactionOptions are a SegmentCompaction's settings.
type SegmentCompactionOptions struct {
	// CompactOptions' Now, DeleteRetentionMs, MaxKeys and Validate apply
	// (the caller bounds the segments by the high watermark, the last
	// stable offset and min.compaction.lag.ms).
	CompactOptions
	// AbortedTxns are the log's aborted transactions whose markers lie at
	// or past the first segment the pass rewrites: a transaction's marker
	// may lie past the segments rewritten.
	AbortedTxns []AbortedTxn
	// LastBatches maps each producer the log tracks to the last offset of
	// its last batch: that batch stays, empty if need be.
	LastBatches map[int64]int64
}

// NewSegmentCompaction starts a pass.
func NewSegmentCompaction(opts SegmentCompactionOptions) *SegmentCompaction {
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = defaultMaxCleanerKeys
	}
	c := &SegmentCompaction{c: cleaner{
		opts:      opts.CompactOptions,
		now:       opts.Now.UnixMilli(),
		keys:      map[keyHash]int64{},
		aborted:   map[int64][]AbortedTxn{},
		lastBatch: map[int64]int64{},
		txnKept:   map[int64]bool{},
		horizon:   -1,
	}}
	for _, e := range opts.AbortedTxns {
		c.c.aborted[e.ProducerID] = append(c.c.aborted[e.ProducerID], e)
	}
	for pid, last := range opts.LastBatches {
		c.c.lastBatch[pid] = last
	}
	return c
}

// Keys is how many distinct keys the pass has mapped.
func (c *SegmentCompaction) Keys() int { return len(c.c.keys) }

// Full reports whether the key map reached MaxKeys: no further segment
// may be mapped.
func (c *SegmentCompaction) Full() bool { return len(c.c.keys) >= c.c.opts.MaxKeys }

// Horizon is the earliest time (Unix ms) a tombstone or marker the
// segments rewritten so far kept may go, -1 when they kept none: the next
// pass is due then even with nothing dirty (KIP-534).
func (c *SegmentCompaction) Horizon() int64 { return c.c.horizon }

// MapKeys maps the keys of one dirty segment, of offsets below next,
// whose batches r yields, leaving out those that start below from.
func (c *SegmentCompaction) MapKeys(ctx context.Context, r io.Reader, from, next int64) error {
	return c.c.eachStreamBatch(r, from, next, func(b recordbatch.Batch) error {
		if b.Control() || c.c.isAborted(b) {
			return nil
		}
		return recordbatch.Records(ctx, b, c.c.opts.Validate, func(r recordbatch.Record) error {
			if r.Key != nil {
				c.c.keys[hashKey(r.Key)] = r.Offset
			}
			return nil
		})
	})
}

// CompactedSegment is one group's new segment being written.
type CompactedSegment struct {
	c    *SegmentCompaction
	w    io.Writer
	base int64
	ib   indexBuilder
	info CompactedSegmentInfo
	tidx []timeEntry
	// last is the header of the last batch read (Finish's placeholder
	// when nothing stays).
	last []byte
}

// CompactedSegmentInfo describes a group's new segment.
type CompactedSegmentInfo struct {
	Size         int64 // bytes written
	MaxTimestamp int64 // -1 when no batch has one
	OffsetIndex  []IndexEntry
	TimeIndex    []TimeEntry
	// AbortedTxns are the entries of the abort markers kept, ascending
	// by marker offset.
	AbortedTxns []AbortedTxn
	// Records and Removed count the records read and dropped.
	Records, Removed int64
	// Changed: the new segment's bytes differ from the ones read.
	Changed bool
}

// NewSegment starts a group's new segment of base offset base (the first
// segment's), written to w, with an offset-index entry every
// indexInterval bytes (index.interval.bytes).
func (c *SegmentCompaction) NewSegment(w io.Writer, base, indexInterval int64) *CompactedSegment {
	return &CompactedSegment{c: c, w: w, base: base, ib: newIndexBuilder(base, indexInterval), info: CompactedSegmentInfo{MaxTimestamp: -1}}
}

// Add rewrites one segment of the group, of offsets below next, whose
// batches r yields, leaving out those that start below from (read from
// the segment before, which overlaps it); aborted are the entries of the
// abort markers it holds. The group's segments are added in offset order.
func (s *CompactedSegment) Add(ctx context.Context, r io.Reader, from, next int64, aborted []AbortedTxn) error {
	c := &s.c.c
	abortAt := make(map[int64]AbortedTxn, len(aborted))
	for _, e := range aborted {
		abortAt[e.LastOffset] = e
	}
	return c.eachStreamBatch(r, from, next, func(b recordbatch.Batch) error {
		s.last = append(s.last[:0], b[:recordbatch.HeaderSize]...)
		var kept int32
		var stays bool
		var err error
		c.out, kept, stays, err = c.filter(ctx, c.out[:0], b)
		if err != nil {
			return fmt.Errorf("localseg: compacting at offset %d: %w", b.BaseOffset(), err)
		}
		s.info.Records += int64(b.RecordCount())
		s.info.Removed += int64(b.RecordCount() - kept)
		if !stays {
			s.info.Changed = true
			return nil
		}
		if !s.info.Changed && !bytes.Equal(c.out, b) {
			s.info.Changed = true
		}
		if e, ok := abortAt[b.BaseOffset()]; ok && b.Control() {
			s.info.AbortedTxns = append(s.info.AbortedTxns, e)
		}
		return s.write(c.out)
	})
}

// write appends one batch to the new segment.
func (s *CompactedSegment) write(batch []byte) error {
	h, err := parseHeader(batch)
	if err != nil {
		return err
	}
	ie, te, addI, addT := s.ib.add(h, s.info.Size)
	if addI {
		s.info.OffsetIndex = append(s.info.OffsetIndex, IndexEntry{RelOffset: ie.rel, Position: ie.pos})
	}
	if addT {
		s.tidx = appendTime(s.tidx, te)
	}
	if _, err := s.w.Write(batch); err != nil {
		return err
	}
	s.info.Size += int64(len(batch))
	return nil
}

// Finish ends the group's segment and describes it. A group compaction
// emptied keeps its last batch's offsets in an empty batch of no producer
// (recordbatch.PlaceholderBatch): a segment is never empty, and the
// group's offsets stay accounted for.
func (s *CompactedSegment) Finish() (CompactedSegmentInfo, error) {
	if s.info.Size == 0 && len(s.last) > 0 {
		if err := s.write(recordbatch.PlaceholderBatch(nil, recordbatch.Batch(s.last))); err != nil {
			return s.info, err
		}
	}
	if s.ib.maxTs >= 0 {
		s.tidx = appendTime(s.tidx, timeEntry{ts: s.ib.maxTs, rel: uint32(s.ib.maxOff - s.base)})
		s.info.MaxTimestamp = s.ib.maxTs
	}
	s.info.TimeIndex = make([]TimeEntry, len(s.tidx))
	for i, e := range s.tidx {
		s.info.TimeIndex[i] = TimeEntry{Timestamp: e.ts, RelOffset: e.rel}
	}
	return s.info, nil
}

// ErrSegmentCorrupt is returned when a segment read as a stream holds a
// batch that does not check out (a bad length, magic or CRC-32C, or
// offsets outside the segment's).
var ErrSegmentCorrupt = errors.New("localseg: corrupt segment")

// streamReadStep is how much more of a batch eachStreamBatch reads (and
// allocates) at a time.
const streamReadStep = 1 << 20

// eachStreamBatch calls fn with every batch r yields that starts at or
// after from, checking each (its length within maxScanBatch, its CRC-32C,
// offsets ascending and below next).
func (c *cleaner) eachStreamBatch(r io.Reader, from, next int64, fn func(b recordbatch.Batch) error) error {
	expect := int64(0)
	var prefix [12]byte // base offset, length
	for {
		if _, err := io.ReadFull(r, prefix[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%w: reading at offset %d: %w", ErrSegmentCorrupt, expect, err)
		}
		n := int64(int32(binary.BigEndian.Uint32(prefix[8:]))) + 12
		if n < recordbatch.HeaderSize || n > maxScanBatch {
			return fmt.Errorf("%w: a batch of %d bytes at offset %d", ErrSegmentCorrupt, n, expect)
		}
		// The buffer grows with the bytes read, a step at a time: a
		// length the stream does not hold costs no more than a step.
		b := append(c.buf[:0], prefix[:]...)
		for int64(len(b)) < n {
			step := min(n-int64(len(b)), streamReadStep)
			at := len(b)
			b = slices.Grow(b, int(step))[:at+int(step)]
			if _, err := io.ReadFull(r, b[at:]); err != nil {
				return fmt.Errorf("%w: reading the batch at offset %d: %w", ErrSegmentCorrupt, expect, err)
			}
		}
		c.buf = b
		if err := recordbatch.Check(b); err != nil {
			return fmt.Errorf("%w: the batch at offset %d: %w", ErrSegmentCorrupt, expect, err)
		}
		h, err := parseHeader(b)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrSegmentCorrupt, err)
		}
		if h.base < expect || h.last >= next {
			return fmt.Errorf("%w: a batch of offsets [%d, %d] where [%d, %d) was expected", ErrSegmentCorrupt, h.base, h.last, expect, next)
		}
		expect = h.last + 1
		if h.base < from {
			continue
		}
		if err := fn(recordbatch.Batch(b)); err != nil {
			return err
		}
	}
}

// LastBatches maps each producer the log tracks to the last offset of its
// last batch (SegmentCompactionOptions.LastBatches).
func (l *Log) LastBatches() map[int64]int64 {
	out := map[int64]int64{}
	l.mu.Lock()
	for pid, e := range l.mu.producers.producers {
		if n := len(e.batches); n > 0 {
			out[pid] = e.batches[n-1].lastOffset
		}
	}
	l.mu.Unlock()
	return out
}
