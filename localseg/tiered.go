package localseg

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"sync/atomic"
)

// What tiered storage needs of a local log: a notice when a segment is
// sealed, a way to read a sealed segment with its indexes, producer
// snapshot and leader epochs for upload, and a guard so that local
// retention deletes only what the object store already holds.

// IndexEntry is one offset-index entry of a sealed segment: the batch
// holding offset base+RelOffset starts at byte Position.
type IndexEntry struct {
	RelOffset uint32
	Position  uint32
}

// TimeEntry is one time-index entry: Timestamp is the largest batch
// timestamp up to the batch whose last offset is base+RelOffset.
type TimeEntry struct {
	Timestamp int64
	RelOffset uint32
}

// SealedSegment is a sealed segment opened for upload. It keeps the file
// open (even if retention deletes the segment meanwhile) until Close.
type SealedSegment struct {
	BaseOffset   int64
	NextOffset   int64 // offset after the last batch
	Size         int64 // bytes of the .log
	MaxTimestamp int64 // -1 when no batch has a timestamp
	OffsetIndex  []IndexEntry
	TimeIndex    []TimeEntry
	// ProducerSnapshot is the producer state as of NextOffset in the
	// local snapshot format (see the package doc), nil when the log has
	// no snapshot there.
	ProducerSnapshot []byte
	// Epochs are the leader epochs that wrote the segment's batches: the
	// last epoch that started at or below BaseOffset, then every epoch
	// that started inside the segment.
	Epochs []EpochEntry
	// AbortedTxns are the aborted transactions whose ABORT markers lie in
	// the segment, in marker order: its transaction index, which Kafka's
	// tiered storage ships with the segment (EncodeTxnIndex gives the
	// .txnindex bytes).
	AbortedTxns []AbortedTxn

	fc *FileCache
	s  *segment
	f  File
}

// ReadAt reads the segment's .log bytes.
func (s *SealedSegment) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.Size {
		return 0, errors.New("localseg: read past the end of a sealed segment")
	}
	if int64(len(p)) > s.Size-off {
		n, err := s.f.ReadAt(p[:s.Size-off], off)
		if err == nil {
			err = errors.New("localseg: read past the end of a sealed segment")
		}
		return n, err
	}
	return s.f.ReadAt(p, off)
}

// Close lets the segment's file be closed. Safe to call more than once.
func (s *SealedSegment) Close() {
	if s.s != nil {
		s.fc.release(s.s)
		s.s = nil
	}
}

// ErrNotSealed: OpenSealed of a segment that is active, or gone.
var ErrNotSealed = errors.New("localseg: no such sealed segment")

// OpenSealed opens the sealed segment with the given base offset for
// upload.
func (l *Log) OpenSealed(base int64) (*SealedSegment, error) {
	segs := l.segments()
	i := sort.Search(len(segs), func(i int) bool { return segs[i].base >= base })
	if i >= len(segs)-1 || segs[i].base != base {
		return nil, fmt.Errorf("%w: %d", ErrNotSealed, base)
	}
	s := segs[i]
	s.waitRollFiles() // its producer snapshot
	f, err := l.fc.acquire(s)
	if err != nil {
		if errors.Is(err, errSegmentGone) {
			return nil, fmt.Errorf("%w: %d", ErrNotSealed, base)
		}
		return nil, err
	}
	ss := &SealedSegment{BaseOffset: s.base, NextOffset: s.next.Load(), Size: s.size.Load(), MaxTimestamp: s.maxTs.Load(), fc: l.fc, s: s, f: f}
	ss.AbortedTxns = slices.Clone(s.abortedTxns())
	idx, tidx, err := l.indexesFor(s, f)
	if err != nil {
		ss.Close()
		return nil, err
	}
	ss.OffsetIndex = make([]IndexEntry, len(idx))
	for i, e := range idx {
		ss.OffsetIndex[i] = IndexEntry{RelOffset: e.rel, Position: e.pos}
	}
	ss.TimeIndex = make([]TimeEntry, len(tidx))
	for i, e := range tidx {
		ss.TimeIndex[i] = TimeEntry{Timestamp: e.ts, RelOffset: e.rel}
	}
	snap, err := readFile(l.fs, l.snapshotPath(ss.NextOffset), maxSnapshotSize)
	if errors.Is(err, os.ErrNotExist) {
		// A roll's snapshot that its background flush could not write:
		// rebuilt, so that the bucket's copy carries it (a log restored
		// from the bucket takes its producers from it).
		l.mu.Lock()
		if l.writableLocked() == nil {
			l.ensureSnapshotLocked(ss.NextOffset)
		}
		l.mu.Unlock()
		snap, err = readFile(l.fs, l.snapshotPath(ss.NextOffset), maxSnapshotSize)
	}
	switch {
	case err == nil:
		ss.ProducerSnapshot = snap
	case !errors.Is(err, os.ErrNotExist):
		ss.Close()
		return nil, fmt.Errorf("localseg: reading the producer snapshot at %d: %w", ss.NextOffset, err)
	}
	for _, e := range l.Epochs() {
		switch {
		case e.StartOffset >= ss.NextOffset:
		case e.StartOffset <= ss.BaseOffset:
			ss.Epochs = append(ss.Epochs[:0], e)
		default:
			ss.Epochs = append(ss.Epochs, e)
		}
	}
	return ss, nil
}

// tieredState is the log's part in tiering; its zero value is an
// untiered log.
type tieredState struct {
	onSeal  func(SegmentInfo)
	guarded atomic.Bool
	end     atomic.Int64
}

// SetUploadedEnd guards local retention for a tiered log: it then deletes
// only segments that end at or below end (the offset after the last one the
// object store holds). A log starts unguarded; a tiered partition sets the
// guard (to 0 until it knows better) before its first retention pass.
func (l *Log) SetUploadedEnd(end int64) {
	l.tiered.end.Store(end)
	l.tiered.guarded.Store(true)
}

// retentionGuard is the offset local retention may not delete past.
// Requires mu (Config.UploadsStopped).
func (l *Log) retentionGuard() int64 {
	if !l.tiered.guarded.Load() || l.mu.cfg.UploadsStopped {
		return math.MaxInt64
	}
	return l.tiered.end.Load()
}

// notifySealed tells the owner that s was sealed. Requires mu: the
// callback must not block or call back into the log.
func (l *Log) notifySealed(s *segment) {
	if l.tiered.onSeal != nil {
		l.tiered.onSeal(SegmentInfo{BaseOffset: s.base, NextOffset: s.next.Load(), Size: s.size.Load(), MaxTimestamp: s.maxTs.Load(), Path: s.path(".log")})
	}
}
