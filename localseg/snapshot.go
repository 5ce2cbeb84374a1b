package localseg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Producer snapshots: one at the base offset of every segment (taken when
// the segment before it is sealed, or by the next rebuild when that one was
// lost) and one at the log end on Close. They are deleted with the segments
// below them, and past the log end by truncation.

func (l *Log) snapshotPath(offset int64) string {
	return filepath.Join(l.dir, segmentName(offset, snapshotExt))
}

// snapshotOffsets lists the producer snapshots in the directory, ascending.
func (l *Log) snapshotOffsets() []int64 {
	entries, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return nil
	}
	var out []int64
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), snapshotExt); ok && len(name) == 20 {
			if off, err := strconv.ParseInt(name, 10, 64); err == nil && off >= 0 {
				out = append(out, off)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// writeSnapshotLocked writes the producer state as of offset (the log
// end), durable on return. (A roll's snapshot is written by its
// background flush instead: rollFiles.) Requires mu.
func (l *Log) writeSnapshotLocked(offset int64) error {
	return writeFileAtomic(l.fs, l.snapshotPath(offset), l.mu.producers.encode())
}

// deleteSnapshotsWhere removes the snapshots whose offsets match.
//
// A roll's background flush may still be writing the snapshot at the
// active segment's base (rollFiles): a caller whose match can take that
// offset waits for it first (the truncations do; retention's never can).
func (l *Log) deleteSnapshotsWhere(match func(off int64) bool) {
	for _, off := range l.snapshotOffsets() {
		if match(off) {
			if err := l.fs.Remove(l.snapshotPath(off)); err != nil && !errors.Is(err, os.ErrNotExist) {
				l.log.Warn("removing a producer snapshot", "file", l.snapshotPath(off), "err", err)
			}
		}
	}
}

// rebuildProducersLocked restores the producer state as of end. Requires
// mu, and no roll's files still being written (the truncations wait for
// them).
func (l *Log) rebuildProducersLocked(end int64) error {
	return l.rebuildProducersFrom(end, end)
}

// rebuildProducersFrom restores the producer state as of end, replaying
// from a snapshot at or below from at most (see producerStateAt). Requires
// mu (or the log not yet published), and no roll's files still being
// written.
func (l *Log) rebuildProducersFrom(end, from int64) error {
	state, err := l.producerStateAt(end, from)
	if err != nil {
		return err
	}
	l.setProducersLocked(state)
	return nil
}

// ensureSnapshotLocked makes sure a producer snapshot is at base, a
// segment's base offset, before retention deletes the segments below it or
// the one below it is uploaded (OpenSealed): a roll's background flush
// that could not write it (a full or failing disk) leaves none, and
// without it a restart, or a log restored from the bucket, would forget
// the producers whose batches are only below it (a retry of their last
// batch would be taken for new records). It is rebuilt from the segments
// below it. Requires mu, and a writable log.
func (l *Log) ensureSnapshotLocked(base int64) {
	segs := l.segments()
	n := sort.Search(len(segs), func(i int) bool { return segs[i].base >= base })
	if n == 0 || n == len(segs) || segs[n].base != base {
		return
	}
	for _, s := range segs[:n] {
		s.waitRollFiles()
	}
	if f, err := l.fs.OpenFile(l.snapshotPath(base), os.O_RDONLY, 0); err == nil {
		f.Close()
		return
	}
	if _, err := l.producerStateAt(base, base); err != nil {
		l.log.Warn("rebuilding a missing producer snapshot", "dir", l.dir, "offset", base, "err", err)
	}
}

// producerStateAt rebuilds the producer state as of end: the newest good
// snapshot at or below end and replayFrom (and not below the first
// segment), then the batches after it. A bad snapshot is skipped for an
// older one; with none, every local batch is replayed.
//
// The transaction index of every segment it replays is rebuilt with it, as
// Kafka's segment recovery rebuilds the segment's: its entries whose
// markers are at or past where the replay starts are replaced by those of
// the markers replayed, which the same batches from the same state give
// again (the files change only where they were wrong: torn by a crash,
// missing an entry, or naming a marker since cut). Requires mu, and no
// roll's files below end still being written.
func (l *Log) producerStateAt(end, replayFrom int64) (producerState, error) {
	first := l.segments()[0].base
	state, from := newProducerState(), first
	offs := l.snapshotOffsets()
	for i := len(offs) - 1; i >= 0; i-- {
		if offs[i] > min(end, replayFrom) || offs[i] < first {
			continue
		}
		data, err := readFile(l.fs, l.snapshotPath(offs[i]), maxSnapshotSize)
		if err == nil {
			var st producerState
			if st, err = decodeProducerState(data); err == nil {
				state, from = st, offs[i]
				break
			}
		}
		l.log.Warn("ignoring a bad producer snapshot", "file", l.snapshotPath(offs[i]), "err", err)
	}
	// The segment bases the replay passes have no good snapshot (from is
	// the newest one): a roll's background flush did not write it before
	// a crash, or it was bad. Each is written as the replay reaches it,
	// since once retention deletes the segments below it, it is all that
	// remembers the producers whose batches were there.
	buf := make([]byte, recordbatch.HeaderSize)
	var written []int64
	for _, s := range l.segments() {
		if s.base > from && s.base <= end {
			if err := writeFileAtomic(l.fs, l.snapshotPath(s.base), state.encode()); err != nil {
				l.log.Warn("writing a producer snapshot", "file", l.snapshotPath(s.base), "err", err)
			} else {
				written = append(written, s.base)
			}
		}
		if s.next.Load() <= from || s.base >= end {
			continue
		}
		old := s.abortedTxns()
		txns := slices.Clone(old[:sort.Search(len(old), func(i int) bool { return old[i].LastOffset >= from })])
		err := l.scanSegment(s, from, end, buf, func(b recordbatch.Batch) {
			abort, ok, err := state.update(b)
			if err != nil {
				l.log.Warn("ignoring a transaction marker that does not read", "dir", l.dir, "offset", b.BaseOffset(), "err", err)
			}
			if ok {
				txns = append(txns, abort)
			}
		})
		if err != nil {
			return producerState{}, fmt.Errorf("localseg: rebuilding producer state: %w", err)
		}
		if err := l.setTxnsLocked(s, txns); err != nil {
			return producerState{}, fmt.Errorf("localseg: rebuilding the transaction index: %w", err)
		}
	}
	if len(written) > 0 {
		l.log.Info("wrote the producer snapshots missing at segment bases", "dir", l.dir, "offsets", written)
	}
	return state, nil
}

// scanBatches calls fn with the header of every batch with offsets in
// [from, end) (a batch of HeaderSize bytes: enough for producer state and
// epochs, not for records), or the whole batch for a control batch (a
// transaction marker, whose record the producer state reads).
func (l *Log) scanBatches(from, end int64, fn func(recordbatch.Batch)) error {
	buf := make([]byte, recordbatch.HeaderSize)
	for _, s := range l.segments() {
		if s.next.Load() <= from || s.base >= end {
			continue
		}
		if err := l.scanSegment(s, from, end, buf, fn); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) scanSegment(s *segment, from, end int64, buf []byte, fn func(recordbatch.Batch)) error {
	f, err := l.fc.acquire(s)
	if err != nil {
		return err
	}
	defer l.fc.release(s)
	size := s.size.Load()
	var control []byte
	pos := int64(0)
	if from > s.base {
		idx, _, err := l.indexesFor(s, f)
		if err != nil {
			return err
		}
		pos = int64(floorEntry(idx, uint32(min(from-s.base, 1<<32-1))).pos)
	}
	for pos < size {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return err
		}
		if h.base >= end {
			break
		}
		if h.last >= from {
			if _, err := f.ReadAt(buf, pos); err != nil {
				return err
			}
			b := recordbatch.Batch(buf)
			if b.Control() && h.size <= maxControlBatchSize {
				// A marker is a few dozen bytes. A control batch
				// larger than maxControlBatchSize is passed as its
				// header alone, which does not read as a marker.
				control = slices.Grow(control[:0], int(h.size))[:h.size]
				if _, err := f.ReadAt(control, pos); err != nil {
					return err
				}
				b = recordbatch.Batch(control)
			}
			fn(b)
		}
		pos += h.size
	}
	return nil
}
