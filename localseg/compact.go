package localseg

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Log compaction (Kafka's log cleaner, cleanup.policy=compact).
//
// A pass keeps, of every key, at least its last record: it maps each key
// of the dirty part of the log (the sealed segments from the cleaner
// checkpoint on, up to the first offset it may not clean) to the offset of
// its last record there, then rewrites every sealed segment from the log
// start to the end of what it mapped, dropping each record some later
// record of its key supersedes. As Kafka's cleaner, it also drops
//   - records without a key;
//   - tombstones (null values) whose delete horizon has passed: a pass
//     that keeps a tombstone stamps its batch with now+delete.retention.ms
//     (KIP-534), so a consumer that reads the log from its start within
//     that time sees every delete;
//   - the records of aborted transactions, and transaction markers past
//     delete.retention.ms whose transaction has no record left;
//
// and it keeps the last batch of every producer the log still tracks,
// emptied of its records if none is left (a header-only batch), so that
// its sequence numbers survive on replicas that copy the compacted log.
//
// Batches keep their offsets: a rewritten batch keeps its base offset,
// offset range and producer fields, only fewer records; consumers see
// gaps. Consecutive segments are merged while the result fits in
// segment.bytes.
//
// It never cleans at or past the high watermark (those records may still be
// truncated), the first unstable offset (a transaction's fate decides what
// goes), the recovery point (recovery replays only what was never
// cleaned), the active segment, segments younger than min.compaction.lag.ms
// by their largest timestamp, or, in a tiered log, what the object store
// lacks.
//
// Each rewritten group of segments is swapped in crash-safely, as Kafka's:
// the new segment is written and fsynced as <base>.log.cleaned, renamed to
// <base>.log.swap (from then on recovery completes the swap), the old
// segments' files are renamed to .deleted, and the swap file to
// <base>.log. The cleaner checkpoint (the first dirty offset) is written
// once every group is swapped. Compaction takes no lock while it reads and
// writes; the swap checks, under the log's locks, that the segments it
// replaces are still the log's (retention, truncation and DeleteRecords run
// meanwhile and win: the pass is dropped and done again later).

// File names of the cleaner.
const (
	cleanerCheckpointFile = "cleaner-offset-checkpoint"
	cleanedExt            = ".cleaned"
	swapExt               = ".swap"
	// defaultMaxCleanerKeys bounds the key map of one pass when the
	// caller gives no bound: about 24 MiB of keys.
	defaultMaxCleanerKeys = 1 << 20
	// cleanerWriteBuffer is how much of a new segment is gathered
	// before it is written.
	cleanerWriteBuffer = 1 << 20
)

// CompactOptions are one compaction pass's settings, named after Kafka's
// topic configs.
type CompactOptions struct {
	// Now is the pass's clock: delete horizons and compaction lags are
	// measured from it.
	Now time.Time
	// HighWatermark bounds what may be cleaned: nothing at or past it.
	HighWatermark int64
	// DeleteRetentionMs (delete.retention.ms) is how long a tombstone,
	// and a marker whose transaction has no record left, are kept after
	// the pass that first kept them.
	DeleteRetentionMs int64
	// MinCompactionLagMs (min.compaction.lag.ms): a segment whose
	// largest timestamp is younger is not cleaned yet.
	MinCompactionLagMs int64
	// MaxKeys bounds the keys one pass maps (0: about a million), and so
	// its memory (about 40 bytes a key). A pass maps at least one whole
	// segment, whatever its keys.
	MaxKeys int
	// Validate bounds the decompression of the batches the pass reads
	// and rewrites.
	Validate recordbatch.ValidateOptions
}

// Cleanable describes how much of a log a compaction pass would clean.
type Cleanable struct {
	// FirstDirty is the first offset no pass has cleaned; End the first
	// offset a pass may not clean now. Dirty bytes are the sealed
	// segments between them; clean bytes those below FirstDirty.
	FirstDirty, End        int64
	CleanBytes, DirtyBytes int64
	// DirtyTimestamp is the largest timestamp of the first dirty
	// segment (-1: none or unknown), for max.compaction.lag.ms.
	DirtyTimestamp int64
	// HorizonDue: a tombstone or transaction marker the last pass kept
	// has reached its delete horizon, so a pass is due even with nothing
	// dirty (KIP-534).
	HorizonDue bool
}

// DirtyRatio is the dirty share of the cleanable bytes
// (min.cleanable.dirty.ratio compares with it).
func (c Cleanable) DirtyRatio() float64 {
	if c.DirtyBytes <= 0 {
		return 0
	}
	return float64(c.DirtyBytes) / float64(c.CleanBytes+c.DirtyBytes)
}

// CompactStats is what a compaction pass did.
type CompactStats struct {
	// Segments is how many segments were rewritten, into Groups new ones.
	Segments, Groups int
	// ReadBytes and WrittenBytes are the sizes of the segments replaced
	// and of those that replaced them.
	ReadBytes, WrittenBytes int64
	// Records and RemovedRecords count the records read and dropped.
	Records, RemovedRecords int64
	// Keys is how many distinct keys the dirty part held.
	Keys int
	// CleanedTo is the first dirty offset after the pass (its new
	// cleaner checkpoint); unchanged when the pass did nothing.
	CleanedTo int64
}

// ErrCompactionAborted is returned when a pass gave up because the log
// changed under it (a segment it read was deleted or truncated, or the log
// closed); the next pass starts again.
var ErrCompactionAborted = errors.New("localseg: compaction aborted: the log changed under it")

// cleanerPlan is the part of the log a pass works on.
type cleanerPlan struct {
	segs       []*segment // sealed segments from the one holding the log start, up to End
	dirty      int        // index in segs of the first dirty segment
	firstDirty int64
	// horizonDue: a tombstone or marker the last pass kept may go now.
	horizonDue bool
}

// Cleanable reports what a compaction pass with opts would clean. It takes
// no lock beyond reading the recovery point.
func (l *Log) Cleanable(opts CompactOptions) Cleanable {
	p := l.planCompaction(opts)
	c := Cleanable{FirstDirty: p.firstDirty, End: p.firstDirty, DirtyTimestamp: -1, HorizonDue: p.horizonDue && len(p.segs) > 0}
	for i, s := range p.segs {
		if i < p.dirty {
			c.CleanBytes += s.size.Load()
			continue
		}
		if i == p.dirty {
			c.DirtyTimestamp = s.maxTs.Load()
		}
		c.DirtyBytes += s.size.Load()
		c.End = s.next.Load()
	}
	return c
}

// planCompaction picks the sealed segments a pass may clean.
func (l *Log) planCompaction(opts CompactOptions) cleanerPlan {
	segs := l.segments()
	sealed := segs[:len(segs)-1]
	bound := min(opts.HighWatermark, l.RecoveryPoint())
	if lso, ok := l.FirstUnstableOffset(); ok {
		bound = min(bound, lso)
	}
	if l.tiered.guarded.Load() {
		bound = min(bound, l.tiered.end.Load())
	}
	start := l.logStart.Load()
	first := 0
	for first < len(sealed) && sealed[first].next.Load() <= start {
		first++ // below the log start: retention deletes it
	}
	cp := l.cleanerCheckpoint()
	checkpoint := cp.firstDirty
	lagCut := opts.Now.UnixMilli() - opts.MinCompactionLagMs
	p := cleanerPlan{firstDirty: max(checkpoint, start)}
	p.horizonDue = cp.horizon >= 0 && cp.horizon <= opts.Now.UnixMilli()
	p.dirty = -1
	for i := first; i < len(sealed); i++ {
		s := sealed[i]
		if s.next.Load() > bound {
			break
		}
		if s.next.Load() > checkpoint {
			if opts.MinCompactionLagMs > 0 && s.maxTs.Load() > lagCut {
				break
			}
			if p.dirty < 0 {
				p.dirty = i - first
				p.firstDirty = max(s.base, start)
			}
		}
		p.segs = append(p.segs, s)
	}
	if p.dirty < 0 {
		p.dirty = len(p.segs)
		if n := len(p.segs); n > 0 {
			p.firstDirty = p.segs[n-1].next.Load()
		}
	}
	return p
}

// cleanerState is the cleaner checkpoint: the first dirty offset, and the
// earliest time a tombstone or marker the last pass kept may go (-1: none),
// when a pass is due even with nothing dirty (KIP-534).
type cleanerState struct {
	firstDirty int64
	horizon    int64
}

func encodeCleanerState(s cleanerState) []byte {
	return encodeCheckpoint("cleaner-offset", 1, []string{strconv.FormatInt(s.firstDirty, 10), strconv.FormatInt(s.horizon, 10)})
}

func decodeCleanerState(data []byte) (cleanerState, error) {
	lines, err := decodeCheckpoint("cleaner-offset", 1, data)
	if err != nil {
		return cleanerState{}, err
	}
	if len(lines) != 2 {
		return cleanerState{}, fmt.Errorf("%w: cleaner-offset: %d lines", errBadCheckpoint, len(lines))
	}
	off, err1 := strconv.ParseInt(lines[0], 10, 64)
	hz, err2 := strconv.ParseInt(lines[1], 10, 64)
	if err1 != nil || err2 != nil || off < 0 || hz < -1 {
		return cleanerState{}, fmt.Errorf("%w: cleaner-offset: bad values %q", errBadCheckpoint, lines)
	}
	return cleanerState{firstDirty: off, horizon: hz}, nil
}

// cleanerCheckpoint returns the cleaner checkpoint, read once from its
// file. None, or one that does not check out, reads as "all dirty" (a pass
// costs work, never a record); so does one past the log end (the log was
// truncated below it).
func (l *Log) cleanerCheckpoint() cleanerState {
	none := cleanerState{horizon: -1}
	st := l.cleanerCP.Load()
	if st == nil {
		st = &none
		data, err := readFile(l.fs, filepath.Join(l.dir, cleanerCheckpointFile), maxCheckpointSize)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			l.log.Warn("ignoring an unreadable cleaner checkpoint", "dir", l.dir, "err", err)
		default:
			if cp, err := decodeCleanerState(data); err != nil {
				l.log.Warn("ignoring a corrupt cleaner checkpoint", "dir", l.dir, "err", err)
			} else {
				st = &cp
			}
		}
		l.cleanerCP.CompareAndSwap(nil, st)
	}
	if st.firstDirty > l.LogEndOffset() {
		return none
	}
	return *st
}

// writeCleanerCheckpoint makes st the cleaner checkpoint, on stable storage.
func (l *Log) writeCleanerCheckpoint(st cleanerState) error {
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, cleanerCheckpointFile), encodeCleanerState(st)); err != nil {
		return fmt.Errorf("localseg: writing the cleaner checkpoint: %w", err)
	}
	l.cleanerCP.Store(&st)
	return nil
}

// lowerCleanerCheckpoint moves the first dirty offset down to offset after
// a truncation: what is appended from there on was never cleaned. A
// failure only leaves those records uncompacted for a while; it is
// logged.
func (l *Log) lowerCleanerCheckpoint(offset int64) {
	st := l.cleanerCP.Load()
	if st == nil {
		cp := l.cleanerCheckpoint()
		st = &cp
	}
	if st.firstDirty <= offset {
		return
	}
	if err := l.writeCleanerCheckpoint(cleanerState{firstDirty: offset, horizon: st.horizon}); err != nil {
		l.log.Warn("lowering the cleaner checkpoint after a truncation", "dir", l.dir, "err", err)
	}
}

// keyHash is what the key map holds of a key: 128 bits of hash, as
// Kafka's SkimpyOffsetMap keeps an MD5 (a collision would drop a record of
// another key; at 128 bits it does not happen). Two maphash sums with
// seeds of their own cost a fraction of an MD5.
type keyHash [2]uint64

// keySeeds seed keyHash; a map lives for one pass, so the seeds may change
// with every process.
var keySeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func hashKey(key []byte) keyHash {
	return keyHash{maphash.Bytes(keySeeds[0], key), maphash.Bytes(keySeeds[1], key)}
}

// Compact runs one compaction pass (see the comment at the top of this
// file). Passes of one log are serialized. A pass that finds the log
// changed under it returns ErrCompactionAborted with what it did so far.
func (l *Log) Compact(ctx context.Context, opts CompactOptions) (CompactStats, error) {
	l.compactMu.Lock()
	defer l.compactMu.Unlock()
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = defaultMaxCleanerKeys
	}
	p := l.planCompaction(opts)
	st := CompactStats{CleanedTo: p.firstDirty}
	if len(p.segs) == 0 || (p.dirty >= len(p.segs) && !p.horizonDue) {
		return st, nil
	}
	c := &cleaner{l: l, opts: opts, now: opts.Now.UnixMilli(), keys: map[keyHash]int64{}, horizon: -1}
	c.collectTxns()
	mapped, err := c.mapKeys(ctx, p.segs[p.dirty:])
	if err != nil {
		return st, err
	}
	st.Keys = len(c.keys)
	segs := p.segs[:p.dirty+mapped]
	end := segs[len(segs)-1].next.Load()
	for len(segs) > 0 {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n := l.groupSize(segs)
		if err := c.cleanGroup(ctx, segs[:n], &st); err != nil {
			return st, err
		}
		segs = segs[n:]
	}
	if err := l.writeCleanerCheckpoint(cleanerState{firstDirty: end, horizon: c.horizon}); err != nil {
		return st, err
	}
	st.CleanedTo = end
	return st, nil
}

// groupSize is how many of segs, from the first, one new segment takes:
// at least one, and more while their sizes fit in segment.bytes, their
// indexes in segment.index.bytes, and their offsets in an index's 32 bits.
func (l *Log) groupSize(segs []*segment) int {
	l.mu.Lock()
	maxBytes, maxIndex, interval := l.mu.cfg.SegmentBytes, l.mu.cfg.SegmentIndexBytes, l.mu.cfg.IndexIntervalBytes
	l.mu.Unlock()
	base := segs[0].base
	size := segs[0].size.Load()
	n := 1
	for ; n < len(segs); n++ {
		size += segs[n].size.Load()
		span := segs[n].next.Load() - base
		entries := size/max(interval, 1) + 1
		if size > maxBytes || span >= math.MaxInt32 || entries*timeIndexEntrySize > maxIndex {
			break
		}
	}
	return n
}

// cleaner is one compaction pass.
type cleaner struct {
	l    *Log
	opts CompactOptions
	now  int64
	// keys maps each key of the dirty part to the offset of its last
	// record there.
	keys map[keyHash]int64
	// aborted are the aborted transactions of the log, by producer.
	aborted map[int64][]AbortedTxn
	// lastBatch is the last offset of the last batch of each producer
	// the log tracks: that batch is kept, empty if need be.
	lastBatch map[int64]int64
	// txnKept: a batch of the producer's current transaction was kept
	// (its marker must stay).
	txnKept map[int64]bool
	// horizon is the earliest time a tombstone or marker kept may go
	// (-1: none kept).
	horizon int64
	buf     []byte // one batch read
	out     []byte // one batch rewritten
}

// eachBatch calls fn with every batch of the sealed segment s, read
// through the file cache. ErrCompactionAborted when s was deleted.
func (c *cleaner) eachBatch(s *segment, fn func(b recordbatch.Batch) error) error {
	l := c.l
	f, err := l.fc.acquire(s)
	if err != nil {
		if errors.Is(err, errSegmentGone) {
			return ErrCompactionAborted
		}
		return err
	}
	defer l.fc.release(s)
	size := s.size.Load()
	bad := func(pos int64, err error) error {
		if s.retired.Load() {
			// Truncated or deleted under the pass: its bytes may
			// have been cut while it read them.
			return ErrCompactionAborted
		}
		return fmt.Errorf("localseg: compacting %s at %d: %w", s.path(".log"), pos, err)
	}
	for pos := int64(0); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return bad(pos, err)
		}
		if int64(cap(c.buf)) < h.size {
			c.buf = make([]byte, h.size)
		}
		b := c.buf[:h.size]
		if _, err := f.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
			return bad(pos, err)
		}
		if err := recordbatch.Check(b); err != nil {
			return bad(pos, err)
		}
		if err := fn(recordbatch.Batch(b)); err != nil {
			return err
		}
		pos += h.size
	}
	return nil
}

// mapKeys maps the keys of the dirty segments, whole segments at a time,
// until MaxKeys is reached (the segment that reaches it is mapped whole)
// or the segments end. It returns how many segments it mapped. The
// records of aborted transactions are not mapped: they are not the last
// of their key.
func (c *cleaner) mapKeys(ctx context.Context, dirty []*segment) (int, error) {
	n := 0
	for _, s := range dirty {
		if n > 0 && len(c.keys) >= c.opts.MaxKeys {
			break
		}
		err := c.eachBatch(s, func(b recordbatch.Batch) error {
			if b.Control() || c.isAborted(b) {
				return nil
			}
			return recordbatch.Records(ctx, b, c.opts.Validate, func(r recordbatch.Record) error {
				if r.Key != nil {
					c.keys[hashKey(r.Key)] = r.Offset
				}
				return nil
			})
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// collectTxns gathers the aborted transactions of the whole log (a
// transaction's marker may lie past the segments cleaned) and the last
// batches of the producers the log tracks.
func (c *cleaner) collectTxns() {
	l := c.l
	c.aborted = map[int64][]AbortedTxn{}
	for _, s := range l.segments() {
		for _, e := range s.abortedTxns() {
			c.aborted[e.ProducerID] = append(c.aborted[e.ProducerID], e)
		}
	}
	c.lastBatch = l.LastBatches()
	c.txnKept = map[int64]bool{}
}

// isAborted reports whether b is a batch of an aborted transaction.
func (c *cleaner) isAborted(b recordbatch.Batch) bool {
	if !b.Transactional() || b.Control() {
		return false
	}
	off := b.BaseOffset()
	for _, e := range c.aborted[b.ProducerID()] {
		if off >= e.FirstOffset && off < e.LastOffset {
			return true
		}
	}
	return false
}

// keepRecord decides one record of batch b.
func (c *cleaner) keepRecord(b recordbatch.Batch, r *recordbatch.Record) bool {
	if r.Key == nil {
		return false
	}
	if last, ok := c.keys[hashKey(r.Key)]; ok && r.Offset < last {
		return false
	}
	if r.Value == nil {
		horizon, ok := b.DeleteHorizon()
		if ok && horizon <= c.now {
			return false
		}
		if !ok {
			horizon = c.now + c.opts.DeleteRetentionMs // Filter stamps it
		}
		c.keepUntil(horizon)
	}
	return true
}

// keepUntil notes that something kept may go at horizon.
func (c *cleaner) keepUntil(horizon int64) {
	if c.horizon < 0 || horizon < c.horizon {
		c.horizon = horizon
	}
}

// filter appends to dst what b becomes: b itself, b with fewer records,
// an empty batch, or nothing. It returns the records kept and whether the
// batch stays.
func (c *cleaner) filter(ctx context.Context, dst []byte, b recordbatch.Batch) ([]byte, int32, bool, error) {
	pid := b.ProducerID()
	if b.Control() {
		kept := c.txnKept[pid]
		delete(c.txnKept, pid)
		if !kept {
			if expiry := b.MaxTimestamp() + c.opts.DeleteRetentionMs; expiry > c.now {
				c.keepUntil(expiry)
			} else {
				return dst, 0, false, nil
			}
		}
		return append(dst, b...), b.RecordCount(), true, nil
	}
	var kept int32
	n := len(dst)
	if !c.isAborted(b) {
		var err error
		opts := recordbatch.FilterOptions{ValidateOptions: c.opts.Validate, Horizon: c.now + c.opts.DeleteRetentionMs}
		dst, kept, err = recordbatch.Filter(ctx, dst, b, opts, func(r *recordbatch.Record) bool { return c.keepRecord(b, r) })
		if err != nil {
			return dst[:n], 0, false, err
		}
	}
	stays := kept > 0
	if !stays && pid >= 0 && c.lastBatch[pid] == b.LastOffset() {
		dst = recordbatch.EmptyBatch(dst, b)
		stays = true
	}
	if stays && b.Transactional() {
		c.txnKept[pid] = true
	}
	return dst, kept, stays, nil
}

// newSegmentWriter gathers a group's new segment.
type newSegmentWriter struct {
	f       File
	path    string
	pos     int64 // bytes written and gathered
	pending []byte
	ib      indexBuilder
	idx     []indexEntry
	tidx    []timeEntry
	txns    []AbortedTxn
}

func (w *newSegmentWriter) add(batch []byte) error {
	h, err := parseHeader(batch)
	if err != nil {
		return err
	}
	ie, te, addI, addT := w.ib.add(h, w.pos)
	if addI {
		w.idx = append(w.idx, ie)
	}
	if addT {
		w.tidx = appendTime(w.tidx, te)
	}
	w.pending = append(w.pending, batch...)
	w.pos += int64(len(batch))
	if len(w.pending) >= cleanerWriteBuffer {
		return w.flush()
	}
	return nil
}

func (w *newSegmentWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	if err := writeFull(w.f, w.pending, w.pos-int64(len(w.pending))); err != nil {
		return err
	}
	w.pending = w.pending[:0]
	return nil
}

// cleanGroup rewrites the segments of one group into one new segment and
// swaps it in.
func (c *cleaner) cleanGroup(ctx context.Context, group []*segment, st *CompactStats) (err error) {
	l := c.l
	l.mu.Lock()
	ns := l.makeSegment(group[0].base)
	l.mu.Unlock()
	w := &newSegmentWriter{path: ns.path(".log") + cleanedExt, ib: newIndexBuilder(ns.base, ns.interval)}
	w.f, err = l.fs.OpenFile(w.path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	defer func() {
		if w.f != nil {
			w.f.Close()
		}
		if err != nil {
			l.fs.Remove(w.path)
		}
	}()
	// The markers of aborted transactions that stay keep their entries.
	abortAt := map[int64]AbortedTxn{}
	var read int64
	var records, removed int64
	for _, s := range group {
		read += s.size.Load()
		for _, e := range s.abortedTxns() {
			abortAt[e.LastOffset] = e
		}
		err := c.eachBatch(s, func(b recordbatch.Batch) error {
			var kept int32
			var stays bool
			var err error
			c.out, kept, stays, err = c.filter(ctx, c.out[:0], b)
			if err != nil {
				return fmt.Errorf("localseg: compacting %s at offset %d: %w", s.path(".log"), b.BaseOffset(), err)
			}
			records += int64(b.RecordCount())
			removed += int64(b.RecordCount() - kept)
			if !stays {
				return nil
			}
			if e, ok := abortAt[b.BaseOffset()]; ok && b.Control() {
				w.txns = append(w.txns, e)
			}
			return w.add(c.out)
		})
		if err != nil {
			return err
		}
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("localseg: writing %s: %w", w.path, err)
	}
	if w.ib.maxTs >= 0 {
		w.tidx = appendTime(w.tidx, timeEntry{ts: w.ib.maxTs, rel: uint32(w.ib.maxOff - ns.base)})
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("localseg: syncing %s: %w", w.path, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	w.f = nil
	ns.setEnd(w.pos, group[len(group)-1].next.Load())
	ns.setMaxTimestamp(w.tidx)
	if err := l.swapIn(group, ns, w); err != nil {
		return err
	}
	st.Segments += len(group)
	st.Groups++
	st.ReadBytes += read
	st.WrittenBytes += w.pos
	st.Records += records
	st.RemovedRecords += removed
	return nil
}

// swapIn replaces the segments old (consecutive, sealed) with ns, whose
// file w wrote as <base>.log.cleaned. On disk: the cleaned file is renamed
// to .swap (recovery completes the swap from then on), the old segments'
// files to .deleted, the swap file to .log, each step on stable storage
// before the next, so that a crash never leaves two segments over the
// same offsets. In memory, the new segment list is published (once the
// old segments are checked to be still the log's) before the old files
// are renamed, with the new segment's file open and its indexes loaded, so
// that readers move to it at once and never open it by a name it does not
// have yet; the index files are written after.
func (l *Log) swapIn(old []*segment, ns *segment, w *newSegmentWriter) error {
	// startMu holds off retention, DeleteRecords and truncations from the
	// check that old are still the log's to the publication of ns: once
	// the swap file exists, recovery completes it, so it must never
	// stand for segments that changed.
	l.startMu.Lock()
	defer l.startMu.Unlock()
	// where finds old in the segment list. Requires mu.
	where := func() (segs []*segment, at int, ok bool) {
		segs = l.segments()
		at = slices.Index(segs, old[0])
		ok = at >= 0 && at+len(old) < len(segs) && l.writableLocked() == nil
		for j := 0; ok && j < len(old); j++ {
			ok = segs[at+j] == old[j]
		}
		return segs, at, ok
	}
	l.lockDrained()
	_, _, ok := where()
	l.mu.Unlock()
	if !ok {
		return ErrCompactionAborted
	}
	logPath := ns.path(".log")
	swapPath := logPath + swapExt
	f, err := l.fs.OpenFile(w.path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("localseg: %w", err)
	}
	if err := l.fs.Rename(w.path, swapPath); err != nil {
		f.Close()
		return fmt.Errorf("localseg: %w", err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		return l.goOffline(fmt.Errorf("localseg: %w", err))
	}

	l.lockDrained()
	segs, at, ok := where()
	if !ok {
		// Closed or offline meanwhile (nothing else changes the
		// segments under startMu): the swap file stands for segments
		// that are still on disk, and the next open completes it.
		l.mu.Unlock()
		f.Close()
		return ErrCompactionAborted
	}
	ch := make(chan struct{})
	ns.rollFiles.Store(&ch)
	defer close(ch)
	ns.txns.Store(newLiveEntries(w.txns))
	l.fc.install(ns, f, w.idx, w.tidx)
	defer l.fc.release(ns)
	list := make([]*segment, 0, len(segs)-len(old)+1)
	list = append(list, segs[:at]...)
	list = append(list, ns)
	list = append(list, segs[at+len(old):]...)
	l.setSegments(list)
	l.retireSegmentsLocked(old)
	l.forgetLostOf(old)
	l.mu.Unlock()

	paths := l.renameToDeleted(old)
	defer func() {
		l.mu.Lock()
		l.queueDeletesLocked(paths)
		l.mu.Unlock()
	}()
	if err := l.fs.SyncDir(l.dir); err != nil {
		return l.goOffline(fmt.Errorf("localseg: %w", err))
	}
	if err := l.fs.Rename(swapPath, logPath); err != nil {
		return l.goOffline(fmt.Errorf("localseg: %w", err))
	}
	// The new segment's index files, as a roll writes a sealed
	// segment's: a crash before they are written leaves them to be
	// rebuilt. Its transaction index is on stable storage before the
	// cleaner checkpoint moves past it.
	if err := writeFileNoSync(l.fs, ns.path(".index"), encodeOffsetIndex(w.idx)); err != nil {
		l.log.Warn("writing a compacted segment's index", "file", ns.path(".index"), "err", err)
	}
	if err := writeFileNoSync(l.fs, ns.path(".timeindex"), encodeTimeIndex(w.tidx)); err != nil {
		l.log.Warn("writing a compacted segment's time index", "file", ns.path(".timeindex"), "err", err)
	}
	if len(w.txns) > 0 {
		if err := writeFileAtomic(l.fs, ns.path(txnIndexExt), encodeTxnIndex(w.txns)); err != nil {
			return l.goOffline(fmt.Errorf("localseg: writing %s: %w", ns.path(txnIndexExt), err))
		}
	}
	return nil
}

// completeSwaps finishes the swaps a crash interrupted (see swapIn): each
// <base>.log.swap replaces the segments whose bases lie in the offsets it
// holds (the one at its base at least), and the leftovers of a pass that
// never reached its swap are removed. It runs before the log loads its
// segments.
func (l *Log) completeSwaps(entries []os.DirEntry) (bool, error) {
	var bases []int64
	var swaps []int64
	for _, e := range entries {
		name := e.Name()
		switch {
		case len(name) == 24+len(cleanedExt) && name[20:24] == ".log" && name[24:] == cleanedExt:
			l.fs.Remove(filepath.Join(l.dir, name))
		case len(name) == 24+len(swapExt) && name[20:24] == ".log" && name[24:] == swapExt:
			if base, ok := parseBase(name[:20]); ok {
				swaps = append(swaps, base)
			}
		case len(name) == 24 && name[20:] == ".log":
			if base, ok := parseBase(name[:20]); ok {
				bases = append(bases, base)
			}
		}
	}
	for _, base := range swaps {
		swapPath := filepath.Join(l.dir, segmentName(base, ".log")+swapExt)
		end, err := swapEnd(l.fs, swapPath)
		if err != nil {
			return false, fmt.Errorf("localseg: completing the compaction swap %s: %w", swapPath, err)
		}
		end = max(end, base+1)
		for _, b := range bases {
			if b < base || b >= end {
				continue
			}
			for _, ext := range []string{".log", ".index", ".timeindex", txnIndexExt} {
				if err := l.fs.Remove(filepath.Join(l.dir, segmentName(b, ext))); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return false, fmt.Errorf("localseg: %w", err)
				}
			}
		}
		if err := l.fs.SyncDir(l.dir); err != nil {
			return false, fmt.Errorf("localseg: %w", err)
		}
		if err := l.fs.Rename(swapPath, filepath.Join(l.dir, segmentName(base, ".log"))); err != nil {
			return false, fmt.Errorf("localseg: %w", err)
		}
		l.log.Info("completed a compaction swap a crash interrupted", "dir", l.dir, "base_offset", base, "end_offset", end)
	}
	if len(swaps) == 0 {
		return false, nil
	}
	return true, l.fs.SyncDir(l.dir)
}

// parseBase parses the 20 digits of a segment file's name.
func parseBase(digits string) (int64, bool) {
	base, err := strconv.ParseInt(digits, 10, 64)
	return base, err == nil && base >= 0
}

// swapEnd is the offset after the last whole batch of a swap file.
func swapEnd(fsys FS, path string) (int64, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return 0, err
	}
	end := int64(0)
	for pos := int64(0); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			break // fsynced before its rename: a torn tail is not expected, and the batches before it stand
		}
		end = h.last + 1
		pos += h.size
	}
	return end, nil
}
