package localseg

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// load opens the directory's segments.
//
// After a clean shutdown (the marker is present and checks out) it trusts
// the segments: a sealed segment costs a stat and a read of its time
// index's last entry (its indexes load on first use, verified then); the
// active segment takes its indexes from the files Close wrote and walks only
// the batch headers after the last index entry.
//
// Otherwise every batch of the segments from the one holding the recovery
// point on is re-validated (size, magic 2, CRC-32C, offsets increasing);
// the log is cut at the first bad batch (the cut bytes are kept in a
// .broken file, later segments are removed), the indexes of the checked
// segments are rebuilt, and leader epochs and producer state are replayed
// from them. A missing or corrupt recovery point means recovery from the
// first segment.
func (l *Log) load() error {
	entries, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	if swapped, err := l.completeSwaps(entries); err != nil {
		return err
	} else if swapped {
		if entries, err = l.fs.ReadDir(l.dir); err != nil {
			return fmt.Errorf("localseg: %w", err)
		}
	}
	var bases []int64
	hasTxns := map[int64]bool{} // segments with a transaction index
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, deletedExt):
			l.fs.Remove(filepath.Join(l.dir, name))
		case strings.HasSuffix(name, ".log") && len(name) == 24:
			if base, err := strconv.ParseInt(strings.TrimSuffix(name, ".log"), 10, 64); err == nil && base >= 0 {
				bases = append(bases, base)
			}
		case strings.HasSuffix(name, txnIndexExt) && len(name) == 20+len(txnIndexExt):
			if base, err := strconv.ParseInt(strings.TrimSuffix(name, txnIndexExt), 10, 64); err == nil && base >= 0 {
				hasTxns[base] = true
			}
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	// A transaction index without its segment (a crash between the
	// renames of a deletion) would be taken for the index of a segment
	// created at its base later.
	for base := range hasTxns {
		if _, found := slices.BinarySearch(bases, base); !found {
			l.fs.Remove(filepath.Join(l.dir, segmentName(base, txnIndexExt)))
			delete(hasTxns, base)
		}
	}

	marker := filepath.Join(l.dir, cleanShutdownFile)
	clean, markerEnd := false, int64(-1)
	if data, err := readFile(l.fs, marker, maxCheckpointSize); err == nil {
		if markerEnd, err = decodeOffsetCheckpoint("clean-shutdown", data); err == nil {
			clean = true
		} else {
			l.log.Warn("ignoring a corrupt clean-shutdown marker", "dir", l.dir, "err", err)
		}
	}
	logStart := l.readOffsetCheckpoint(logStartFile, "log-start-offset")
	recoveryPoint := l.readOffsetCheckpoint(recoveryPointFile, "recovery-point")
	epochsOK := false
	if data, err := readFile(l.fs, filepath.Join(l.dir, epochCheckpointFile), maxCheckpointSize); err == nil {
		if c, err := decodeEpochCache(data); err == nil {
			l.mu.epochs, epochsOK = c, true
		} else {
			l.log.Warn("rebuilding a corrupt leader-epoch checkpoint", "dir", l.dir, "err", err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		epochsOK = len(bases) == 0
	}

	if len(bases) == 0 {
		if logStart > 0 {
			l.lostSegments = true
			l.log.Warn("a log whose start had moved holds no segment: it starts empty at its recorded start", "dir", l.dir, "log_start_offset", logStart)
		}
		s, err := l.newSegment(logStart)
		if err != nil {
			return err
		}
		l.setSegments([]*segment{s})
		l.logStart.Store(logStart)
		l.rp.point, l.rp.persisted = logStart, recoveryPoint
		l.mu.epochs = epochCache{}
		l.deleteSnapshotsWhere(func(int64) bool { return true })
		return l.finishLoad(marker)
	}

	// Segments from firstUnsafe on are validated batch by batch.
	firstUnsafe := len(bases)
	recoveryStart := time.Now()
	if !clean {
		firstUnsafe = max(sort.Search(len(bases), func(i int) bool { return bases[i] > recoveryPoint })-1, 0)
		l.log.Info("recovering a log after an unclean shutdown", "dir", l.dir, "from_segment", bases[firstUnsafe], "recovery_point", recoveryPoint)
		// Epochs of the checked region are replayed from its batches;
		// an entry at the log start stays (it may name the epoch in force
		// there, moved by retention or restored with no batch behind it;
		// a batch at the log start replaces it).
		l.mu.epochs.truncateFromEnd(max(bases[firstUnsafe], logStart+1))
	}
	var segs []*segment
	for i, base := range bases {
		s := l.makeSegment(base)
		last := i == len(bases)-1
		var done bool
		switch {
		case i >= firstUnsafe:
			done, err = l.recoverSegment(s, last, bases[i+1:], epochsOK)
		case last:
			s, done, err = l.loadActiveClean(s, markerEnd, epochsOK)
		default:
			err = l.loadSealedClean(s)
		}
		if err != nil {
			l.retireSegments(append(segs, s))
			return err
		}
		segs = append(segs, s)
		if done {
			break
		}
	}
	// A sealed segment ends where the next begins.
	for i := 0; i+1 < len(segs); i++ {
		segs[i].setEnd(segs[i].size.Load(), segs[i+1].base)
	}
	l.setSegments(segs)
	leo := segs[len(segs)-1].next.Load()
	if !clean {
		level := slog.LevelInfo
		if l.recovered.truncatedBytes > 0 || l.recovered.removedSegments > 0 {
			level = slog.LevelWarn
		}
		l.log.Log(context.Background(), level, "log recovered", "dir", l.dir, "segments_checked", max(len(segs)-firstUnsafe, 0),
			"log_end_offset", leo, "truncated_bytes", l.recovered.truncatedBytes, "removed_segments", l.recovered.removedSegments,
			"took", time.Since(recoveryStart).Round(time.Millisecond))
	}

	logStart = min(max(logStart, segs[0].base), leo)
	l.logStart.Store(logStart)
	l.rp.point = min(recoveryPoint, leo)
	l.rp.persisted = recoveryPoint
	if clean {
		l.rp.point = leo
	}
	if !epochsOK {
		l.mu.epochs = epochCache{}
		if err := l.scanBatches(segs[0].base, leo, func(b recordbatch.Batch) {
			l.mu.epochs.assign(b.PartitionLeaderEpoch(), b.BaseOffset())
		}); err != nil {
			return fmt.Errorf("localseg: rebuilding leader epochs: %w", err)
		}
	}
	// The entry at the log start names the epoch in force there even in
	// an empty log (moved by retention, or restored from remote storage).
	l.mu.epochs.truncateFromEnd(max(leo, logStart+1))
	l.mu.epochs.truncateFromStart(logStart)

	// Snapshots: none past the log end; of the others, those at segment
	// bases and the newest one stay (Kafka's stray snapshot cleanup).
	isBase := map[int64]bool{}
	for _, s := range segs {
		isBase[s.base] = true
	}
	l.deleteSnapshotsWhere(func(off int64) bool { return off > leo })
	if offs := l.snapshotOffsets(); len(offs) > 0 {
		newest := offs[len(offs)-1]
		l.deleteSnapshotsWhere(func(off int64) bool { return !isBase[off] && off != newest })
	}
	// The producer state is replayed from below the first segment
	// recovery checked, so that the transaction index of every batch
	// that was not known to be durable is rebuilt from the batches
	// (an entry may be torn, missing, or name a marker that was cut),
	// and from below any segment whose index does not check out.
	txnsFrom := leo
	if !clean {
		txnsFrom = bases[firstUnsafe]
	}
	var bad []*segment
	for _, s := range segs {
		if !hasTxns[s.base] {
			continue
		}
		es, err := l.readTxnIndex(s)
		if err != nil {
			l.log.Warn("rebuilding a transaction index that does not check out", "segment", s.path(txnIndexExt), "err", err)
			txnsFrom = min(txnsFrom, s.base)
			bad = append(bad, s)
			continue
		}
		s.txns.Store(newLiveEntries(es))
	}
	if err := l.rebuildProducersFrom(leo, txnsFrom); err != nil {
		return err
	}
	for _, s := range bad {
		// The rebuild rewrote the index of a segment with entries;
		// one without has no file.
		if len(s.abortedTxns()) == 0 {
			if err := l.fs.Remove(s.path(txnIndexExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("localseg: %w", err)
			}
		}
	}
	return l.finishLoad(marker)
}

// finishLoad persists the epochs and removes the clean-shutdown marker,
// durably, before the log takes any write: a crash from here on must
// recover.
func (l *Log) finishLoad(marker string) error {
	l.setEpochsLocked(l.mu.epochs)
	l.loadHighWatermark(l.logStart.Load(), l.LogEndOffset())
	if err := l.writeEpochs(&l.mu.epochs); err != nil {
		return err
	}
	if err := l.fs.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localseg: removing the clean-shutdown marker: %w", err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	return nil
}

// readOffsetCheckpoint reads one of the log's offset checkpoints; a
// missing or corrupt one reads as 0 (the safe default: recovery from the
// start, or a log start at the first segment).
func (l *Log) readOffsetCheckpoint(name, kind string) int64 {
	data, err := readFile(l.fs, filepath.Join(l.dir, name), maxCheckpointSize)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			l.log.Warn("ignoring an unreadable checkpoint", "dir", l.dir, "file", name, "err", err)
		}
		return 0
	}
	off, err := decodeOffsetCheckpoint(kind, data)
	if err != nil {
		l.log.Warn("ignoring a corrupt checkpoint", "dir", l.dir, "file", name, "err", err)
		return 0
	}
	return off
}

// retireSegments releases segments of a failed load.
func (l *Log) retireSegments(segs []*segment) {
	for _, s := range segs {
		s.zero.stop()
		if s.w != nil && !l.fc.admitted(s) {
			s.w.Close()
		}
		s.w = nil
		l.fc.retire(s)
	}
}

// loadSealedClean loads a trusted sealed segment: its size, and its
// largest timestamp from the last entry of its time index (rebuilding both
// indexes when that file is missing or malformed).
func (l *Log) loadSealedClean(s *segment) error {
	f, err := l.fs.OpenFile(s.path(".log"), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	s.setEnd(size, s.base)
	e, ok, err := readTimeIndexTail(l.fs, s.path(".timeindex"), size)
	if err == nil {
		s.maxTs.Store(-1)
		s.maxTsOffset.Store(s.base)
		if ok {
			s.maxTs.Store(e.ts)
			s.maxTsOffset.Store(s.base + int64(e.rel))
		}
		return nil
	}
	idx, tidx, err := rebuildIndexes(f, s.base, size, s.interval)
	if err != nil {
		return fmt.Errorf("localseg: rebuilding the indexes of %s: %w", s.path(".log"), err)
	}
	s.setMaxTimestamp(tidx)
	if err := writeFileAtomic(l.fs, s.path(".index"), encodeOffsetIndex(idx)); err != nil {
		return err
	}
	return writeFileAtomic(l.fs, s.path(".timeindex"), encodeTimeIndex(tidx))
}

// loadActiveClean loads the last segment after a clean shutdown: indexes
// from its files, then a walk of the headers after the last index entry.
// If anything does not check out (index files, headers, the log end the
// marker recorded), the segment is recovered as after a crash instead.
func (l *Log) loadActiveClean(s *segment, markerEnd int64, epochsOK bool) (*segment, bool, error) {
	f, err := l.fs.OpenFile(s.path(".log"), os.O_RDWR, 0)
	if err != nil {
		return s, false, fmt.Errorf("localseg: %w", err)
	}
	size, err := f.Size()
	if err == nil {
		var idx []indexEntry
		var tidx []timeEntry
		idx, err = readOffsetIndexFile(l.fs, s.path(".index"), size)
		if err == nil {
			tidx, err = readTimeIndexFile(l.fs, s.path(".timeindex"), size)
		}
		if err == nil {
			err = l.resumeActive(s, f, size, idx, tidx)
		}
		if err == nil && s.next.Load() != markerEnd {
			err = fmt.Errorf("log end %d, the clean-shutdown marker says %d", s.next.Load(), markerEnd)
		}
		if err == nil {
			l.fc.admit(s, f)
			l.openedClean = true
			return s, true, nil
		}
	}
	f.Close()
	l.log.Warn("recovering the active segment after a clean shutdown", "segment", s.path(".log"), "err", err)
	fresh := l.makeSegment(s.base)
	done, err := l.recoverSegment(fresh, true, nil, epochsOK)
	return fresh, done, err
}

// resumeActive installs an active segment's verified indexes and walks the
// batch headers after the last offset-index entry (at most about
// index.interval.bytes) for the rest of its state.
func (l *Log) resumeActive(s *segment, f File, size int64, idx []indexEntry, tidx []timeEntry) error {
	ib := newIndexBuilder(s.base, s.interval)
	if n := len(tidx); n > 0 {
		ib.maxTs, ib.maxOff = tidx[n-1].ts, s.base+int64(tidx[n-1].rel)
	}
	pos := int64(0)
	resume := len(idx) > 0
	if resume {
		pos = int64(idx[len(idx)-1].pos)
	}
	next := s.base
	for first := true; pos < size; first = false {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return err
		}
		if h.base < next {
			return fmt.Errorf("%w: offsets not increasing at %d", recordbatch.ErrCorrupt, pos)
		}
		if first && resume {
			if h.base != s.base+int64(idx[len(idx)-1].rel) {
				return fmt.Errorf("%w: the last index entry does not point at its batch", errBadCheckpoint)
			}
			ib.skip(h)
		} else {
			ie, te, addI, addT := ib.add(h, pos)
			if addI {
				idx = append(idx, ie)
			}
			if addT {
				tidx = appendTime(tidx, te)
			}
		}
		next = h.last + 1
		s.recent.push(recentBatch{base: h.base, next: next, pos: pos, size: h.size})
		pos += h.size
	}
	if size > 0 {
		h, err := readHeader(f, 0, size)
		if err != nil {
			return err
		}
		s.firstTs = h.maxTs
	}
	l.installActive(s, f, size, next, idx, tidx, ib)
	return nil
}

// installActive publishes the state of an active segment.
func (l *Log) installActive(s *segment, f File, size, next int64, idx []indexEntry, tidx []timeEntry, ib indexBuilder) {
	s.w = f
	s.sinceIndex = ib.since
	s.created = l.now().UnixMilli()
	s.activeIdx.Store(newLiveEntries(idx))
	s.activeTidx.Store(newLiveEntries(tidx))
	s.maxTs.Store(ib.maxTs)
	s.maxTsOffset.Store(ib.maxOff)
	s.wbFrom.Store(size) // what is there is written back or its fsync's
	s.setEnd(size, next)
	s.zero.init(size, l.mu.cfg.SegmentBytes)
}

// fillActive rebuilds an active segment's in-memory state from its file
// (after a truncation). Requires mu.
func (l *Log) fillActive(s *segment, f File, size int64) error {
	return l.walkActive(s, f, size, false, false)
}

// recoverSegment validates a segment batch by batch and cuts it at the
// first bad batch. The last segment, or one that was cut, becomes the
// active segment (done is true: later segments are removed); another is
// sealed with rebuilt index files. Epochs are replayed from the batches
// when the checkpoint was good (otherwise the caller rebuilds them all).
func (l *Log) recoverSegment(s *segment, last bool, later []int64, epochsOK bool) (done bool, err error) {
	f, err := l.fs.OpenFile(s.path(".log"), os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("localseg: %w", err)
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return false, fmt.Errorf("localseg: %w", err)
	}
	valid, next, err := validateSegment(f, s.base, size)
	if err != nil {
		f.Close()
		return false, err
	}
	cut := valid < size
	if cut {
		// Zeros after the last batch are a preallocated tail (see
		// prealloc.go), not damage, when the segment is the last one
		// or ends where the next begins (sealed just before the crash,
		// before its tail was cut). Anything else after the batches is
		// a torn or corrupt tail, kept in the .broken file.
		zeroTail, err := onlyZeros(f, valid, size)
		if err != nil {
			f.Close()
			return false, err
		}
		if zeroTail && (last || (len(later) > 0 && next == later[0])) {
			l.log.Info("cutting a preallocated tail", "segment", s.path(".log"), "kept", valid, "zeros", size-valid)
			cut = false
		} else {
			l.log.Warn("cutting a torn or corrupt log tail", "segment", s.path(".log"), "kept", valid, "dropped", size-valid)
			l.recovered.truncatedBytes += size - valid
			l.keepBroken(f, s, valid, size)
		}
		if err := f.Truncate(valid); err != nil {
			f.Close()
			return false, fmt.Errorf("localseg: truncating %s: %w", s.path(".log"), err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return false, fmt.Errorf("localseg: truncating %s: %w", s.path(".log"), err)
		}
	}
	for _, ext := range []string{".index", ".timeindex"} {
		l.fs.Remove(s.path(ext))
	}
	if err := l.walkActive(s, f, valid, true, epochsOK); err != nil {
		f.Close()
		return false, err
	}
	if last || cut {
		l.fc.admit(s, f)
		l.recovered.removedSegments += len(later)
		for _, base := range later {
			dead := l.makeSegment(base)
			for _, ext := range []string{".log", ".index", ".timeindex", txnIndexExt} {
				if err := l.fs.Remove(dead.path(ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					l.log.Warn("removing a segment after a corrupt one", "file", dead.path(ext), "err", err)
				}
			}
		}
		return true, nil
	}
	// A sealed segment: write its rebuilt indexes and drop the live ones.
	idx, tidx := l.sealIndexes(s)
	s.w = nil
	s.activeIdx.Store(nil)
	s.activeTidx.Store(nil)
	f.Close()
	if err := writeFileAtomic(l.fs, s.path(".index"), encodeOffsetIndex(idx)); err != nil {
		return false, err
	}
	if err := writeFileAtomic(l.fs, s.path(".timeindex"), encodeTimeIndex(tidx)); err != nil {
		return false, err
	}
	return false, nil
}

// walkActive walks every batch header of f up to size, building the live
// indexes and recent positions, and installs s as an active segment. With
// epochs, it replays each batch's leader epoch into the epoch cache.
// Requires mu (or the log not yet published).
func (l *Log) walkActive(s *segment, f File, size int64, replayEpochs, epochsOK bool) error {
	var idx []indexEntry
	var tidx []timeEntry
	ib := newIndexBuilder(s.base, s.interval)
	next := s.base
	for pos := int64(0); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
		}
		if pos == 0 {
			s.firstTs = h.maxTs
		}
		ie, te, addI, addT := ib.add(h, pos)
		if addI {
			idx = append(idx, ie)
		}
		if addT {
			tidx = appendTime(tidx, te)
		}
		if replayEpochs && epochsOK {
			l.mu.epochs.assign(h.leaderEpoch, h.base)
		}
		next = h.last + 1
		s.recent.push(recentBatch{base: h.base, next: next, pos: pos, size: h.size})
		pos += h.size
	}
	l.installActive(s, f, size, next, idx, tidx, ib)
	return nil
}

// maxRecoveryBuffer bounds the buffer recovery reads a batch into; larger
// batches (possible with a large max.message.bytes, or a corrupt length
// field) are checked by streaming their CRC instead.
const maxRecoveryBuffer = 8 << 20

// validateSegment checks every batch of a segment: whole, magic 2, CRC,
// offsets at or above the base, increasing, and within the relative offset
// range. It returns the size of the valid prefix and the offset after its
// last batch (base when none); an error only for I/O.
func validateSegment(f File, base, size int64) (valid, next int64, err error) {
	var buf []byte
	next = base
	for pos := int64(0); pos < size; {
		if size-pos < recordbatch.HeaderSize {
			return pos, next, nil
		}
		var hb [recordbatch.HeaderSize]byte
		if _, err := f.ReadAt(hb[:], pos); err != nil {
			return 0, 0, fmt.Errorf("localseg: reading for recovery: %w", err)
		}
		n, err := recordbatch.Size(hb[:])
		if err != nil || int64(n) > size-pos {
			return pos, next, nil
		}
		hdr := recordbatch.Batch(hb[:])
		if hdr.BaseOffset() < next || hdr.LastOffset() < hdr.BaseOffset() || hdr.LastOffset()-base > math.MaxInt32 {
			return pos, next, nil
		}
		if n <= maxRecoveryBuffer {
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := f.ReadAt(buf, pos); err != nil {
				return 0, 0, fmt.Errorf("localseg: reading for recovery: %w", err)
			}
			if recordbatch.Check(recordbatch.Batch(buf)) != nil {
				return pos, next, nil
			}
		} else if ok, err := checkLargeBatch(f, pos, int64(n), hdr); err != nil {
			return 0, 0, err
		} else if !ok {
			return pos, next, nil
		}
		next = hdr.NextOffset()
		pos += int64(n)
	}
	return size, next, nil
}

// onlyZeros reports whether the bytes of f in [from, to) are all zero.
func onlyZeros(f File, from, to int64) (bool, error) {
	buf := make([]byte, min(to-from, 1<<20))
	for pos := from; pos < to; {
		c := buf[:min(int64(len(buf)), to-pos)]
		if _, err := f.ReadAt(c, pos); err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("localseg: reading for recovery: %w", err)
		}
		for _, b := range c {
			if b != 0 {
				return false, nil
			}
		}
		pos += int64(len(c))
	}
	return true, nil
}

// checkLargeBatch verifies a batch too large to buffer: the header fields
// recordbatch.Check looks at, and the CRC-32C computed in chunks.
func checkLargeBatch(f File, pos, n int64, hdr recordbatch.Batch) (bool, error) {
	if hdr.Magic() != 2 || hdr.RecordCount() < 0 || hdr.RecordCount() > hdr.LastOffsetDelta()+1 || hdr.Codec() > recordbatch.CodecZstd {
		return false, nil
	}
	const crcStart = 21 // attributes: the CRC covers the rest of the batch
	chunk := make([]byte, 1<<20)
	var crc uint32
	for off := int64(crcStart); off < n; {
		c := chunk[:min(int64(len(chunk)), n-off)]
		if _, err := f.ReadAt(c, pos+off); err != nil {
			return false, fmt.Errorf("localseg: reading for recovery: %w", err)
		}
		crc = crc32.Update(crc, castagnoli, c)
		off += int64(len(c))
	}
	return crc == hdr.CRC(), nil
}

// keepBroken saves the bytes cut from a corrupt segment as <name>.broken
// for forensics (best effort, up to 64 MiB).
func (l *Log) keepBroken(f File, s *segment, from, to int64) {
	n := min(to-from, 64<<20)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, from); err != nil {
		return
	}
	if err := writeFileAtomic(l.fs, s.path(".log"+brokenExt), buf); err != nil {
		l.log.Warn("keeping the cut bytes of a corrupt segment", "segment", s.path(".log"), "err", err)
	}
}
