package localseg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// segment is one .log file and its indexes. Its base offset is fixed; the
// fields that grow (size, next offset, timestamps, the live indexes) are
// written only under the owning log's mu and published atomically, size
// before next, so a reader that loads next and then size never sees an
// offset whose bytes are not there yet, and never locks against the writer.
type segment struct {
	fs       FS
	dir      string
	base     int64
	interval int64 // index.interval.bytes when the segment was created

	size atomic.Int64 // bytes of whole batches
	next atomic.Int64 // offset after the last batch
	// endPair is size and next as one value (size<<32 | next-base), for
	// readers that need the two to agree: a segment is below 4 GiB
	// (index positions are 32-bit) and spans at most 2^31 offsets.
	endPair     atomic.Uint64
	maxTs       atomic.Int64 // largest batch max timestamp, -1 when unknown or empty
	maxTsOffset atomic.Int64 // last offset of that batch

	// Active segments only, under the log's mu. w is the writable handle
	// the segment was created or recovered with, handed to the FileCache
	// as the segment's one descriptor: the cache may close it when it
	// evicts the idle segment, so I/O goes through FileCache.acquire and
	// w only says that the log holds its active segment (nil after a
	// seal, a retirement or a failed truncation). The live indexes are
	// nil once the segment is sealed.
	w          File
	activeIdx  atomic.Pointer[liveEntries[indexEntry]]
	activeTidx atomic.Pointer[liveEntries[timeEntry]]
	recent     recentBatches
	sinceIndex int64 // bytes appended since the last index entry
	created    int64 // wall-clock ms of the first append: segment.ms in ApplyRetention
	firstTs    int64 // max timestamp of the first batch (-1 none): segment.ms on append

	// wbFrom is where the part of the file not yet handed to background
	// write-back starts; wbBusy is set while a write-back goroutine runs
	// for the segment (see Log.writeBehind).
	wbFrom atomic.Int64
	wbBusy atomic.Bool
	// zero is the preallocation of an active segment (prealloc.go);
	// fullSync asks the next sync of the file for an fsync, not an
	// fdatasync: its preallocated tail was cut.
	zero     zeroState
	fullSync atomic.Bool

	loadMu sync.Mutex // one loader of a sealed segment's index files at a time
	// retired: the segment left its log (Log.retireSegmentsLocked).
	retired atomic.Bool
	// syncMu serializes the fsyncs of the .log file, which all go
	// through the segment's one cached descriptor (see Log.syncSegment);
	// syncErr is the first that failed, returned by every later one.
	syncMu  sync.Mutex
	syncErr error
	// damage is what a scan found in this sealed segment after a read met
	// a corrupt batch (nil: not scanned). Guarded by loadMu.
	damage *[]Damage
	// txns are the aborted transactions whose markers lie in the
	// segment (its .txnindex), in marker order: changed only under the
	// log's mu, read without a lock (see liveEntries). Never nil.
	txns atomic.Pointer[liveEntries[AbortedTxn]]
	// txnDirty: entries were appended to the .txnindex since its last
	// fsync (see Log.syncTxnIndex).
	txnDirty atomic.Bool
	// rollFiles, set by the roll that sealed the segment, is closed once
	// the files that roll writes in the background (the segment's index
	// files and the producer snapshot at its end) are written: whoever
	// reads, syncs, renames or removes them waits for it (waitRollFiles).
	rollFiles atomic.Pointer[chan struct{}]

	// Guarded by FileCache.mu: the open handle and loaded indexes.
	cache  cacheState
	file   File
	idx    []indexEntry
	tidx   []timeEntry
	loaded bool
}

// wroteBack records that the file below to was handed to write-back (or
// synced): wbFrom only moves forward.
func (s *segment) wroteBack(to int64) {
	for {
		from := s.wbFrom.Load()
		if to <= from || s.wbFrom.CompareAndSwap(from, to) {
			return
		}
	}
}

// setEnd publishes the segment's size and next offset, together.
func (s *segment) setEnd(size, next int64) {
	s.size.Store(size)
	s.next.Store(next)
	s.endPair.Store(uint64(size)<<32 | uint64(uint32(next-s.base)))
}

// end returns the size and next offset of one publication.
func (s *segment) end() (size, next int64) {
	v := s.endPair.Load()
	return int64(v >> 32), s.base + int64(uint32(v))
}

func segmentName(base int64, ext string) string { return fmt.Sprintf("%020d%s", base, ext) }

func (s *segment) path(ext string) string { return filepath.Join(s.dir, segmentName(s.base, ext)) }

func (s *segment) isActive() bool { return s.activeIdx.Load() != nil }

// openLocked opens the segment's handle: read-only for a sealed segment,
// read-write for an active one the cache evicted. Requires FileCache.mu.
func (s *segment) openLocked(writable bool) error {
	if s.file != nil {
		return nil
	}
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := s.fs.OpenFile(s.path(".log"), flag, 0)
	if err != nil {
		return fmt.Errorf("localseg: opening segment: %w", err)
	}
	s.file = f
	return nil
}

// closeFileLocked closes the handle. Requires FileCache.mu.
func (s *segment) closeFileLocked() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

// indexesLocked returns the segment's indexes: the live ones of an active
// segment, or the loaded ones of a sealed segment. Requires FileCache.mu.
func (s *segment) indexesLocked() ([]indexEntry, []timeEntry) {
	if p := s.activeIdx.Load(); p != nil {
		return p.entries(), s.activeTidx.Load().entries()
	}
	return s.idx, s.tidx
}

// waitRollFiles waits until the files of the roll that sealed s are
// written (at once when s was not sealed by a roll of this process).
func (s *segment) waitRollFiles() {
	if ch := s.rollFiles.Load(); ch != nil {
		<-*ch
	}
}

// readIndexes reads a sealed segment's index files, rebuilding them from
// the segment when they are missing or do not check out (and rewriting
// them, best effort). It refreshes the segment's max timestamp from the
// verified time index.
func (s *segment) readIndexes(f File) ([]indexEntry, []timeEntry, error) {
	s.waitRollFiles()
	size := s.size.Load()
	idx, err1 := readOffsetIndexFile(s.fs, s.path(".index"), size)
	tidx, err2 := readTimeIndexFile(s.fs, s.path(".timeindex"), size)
	if err1 != nil || err2 != nil {
		var err error
		idx, tidx, err = rebuildIndexes(f, s.base, size, s.interval)
		if err != nil {
			return nil, nil, fmt.Errorf("localseg: rebuilding the indexes of %s: %w", s.path(".log"), err)
		}
		// A later load rebuilds again if this fails. A retired
		// segment's names may already be another's (a compacted
		// segment takes the name of the first it replaced).
		if !s.retired.Load() {
			_ = writeFileAtomic(s.fs, s.path(".index"), encodeOffsetIndex(idx))
			_ = writeFileAtomic(s.fs, s.path(".timeindex"), encodeTimeIndex(tidx))
		}
	}
	s.setMaxTimestamp(tidx)
	return idx, tidx, nil
}

// setMaxTimestamp takes a sealed segment's largest timestamp from the last
// entry of its time index.
func (s *segment) setMaxTimestamp(tidx []timeEntry) {
	if n := len(tidx); n > 0 {
		s.maxTsOffset.Store(s.base + int64(tidx[n-1].rel))
		s.maxTs.Store(tidx[n-1].ts)
	} else {
		s.maxTsOffset.Store(s.base)
		s.maxTs.Store(-1)
	}
}

// maxIndexFileSize bounds an index file by the segment it indexes: at most
// one entry per batch, and a batch is at least a header long.
func maxIndexFileSize(segSize int64, entrySize int) int64 {
	return (segSize/recordbatch.HeaderSize+1)*int64(entrySize) + indexTrailerSize
}

func readOffsetIndexFile(fs FS, path string, segSize int64) ([]indexEntry, error) {
	data, err := readFile(fs, path, maxIndexFileSize(segSize, indexEntrySize))
	if err != nil {
		return nil, err
	}
	return decodeOffsetIndex(data, segSize)
}

func readTimeIndexFile(fs FS, path string, segSize int64) ([]timeEntry, error) {
	data, err := readFile(fs, path, maxIndexFileSize(segSize, timeIndexEntrySize))
	if err != nil {
		return nil, err
	}
	return decodeTimeIndex(data)
}

// readTimeIndexTail reads only the trailer and the last entry of a time
// index (two small preads): enough to learn a sealed segment's largest
// timestamp at open without loading the index. The checksum is verified
// later, when the index is loaded; a mismatch then rebuilds the index and
// corrects the timestamp.
func readTimeIndexTail(fs FS, path string, segSize int64) (timeEntry, bool, error) {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return timeEntry{}, false, err
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		return timeEntry{}, false, err
	}
	if n < indexTrailerSize || n > maxIndexFileSize(segSize, timeIndexEntrySize) || (n-indexTrailerSize)%timeIndexEntrySize != 0 {
		return timeEntry{}, false, fmt.Errorf("%w: time index of %d bytes", errBadCheckpoint, n)
	}
	var buf [timeIndexEntrySize + indexTrailerSize]byte
	tail := buf[:]
	if n == indexTrailerSize {
		tail = buf[timeIndexEntrySize:]
	}
	if _, err := f.ReadAt(tail, n-int64(len(tail))); err != nil && !errors.Is(err, io.EOF) {
		return timeEntry{}, false, err
	}
	tr := buf[timeIndexEntrySize:]
	if string(tr[:4]) != timeIndexMagic || int64(binary.BigEndian.Uint32(tr[4:]))*timeIndexEntrySize != n-indexTrailerSize {
		return timeEntry{}, false, fmt.Errorf("%w: time index trailer", errBadCheckpoint)
	}
	if n == indexTrailerSize {
		return timeEntry{}, false, nil
	}
	e := timeEntry{ts: int64(binary.BigEndian.Uint64(buf[:])), rel: binary.BigEndian.Uint32(buf[8:])}
	return e, true, nil
}

// header is the part of a batch header the log needs to walk a segment.
type header struct {
	base        int64
	size        int64 // whole batch
	last        int64
	maxTs       int64
	leaderEpoch int32
}

// headerPrefix is the part of a batch header that header needs: up to and
// including maxTimestamp.
const headerPrefix = 43

func parseHeader(b []byte) (header, error) {
	n, err := recordbatch.Size(b)
	if err != nil {
		return header{}, err
	}
	h := header{
		base:        int64(binary.BigEndian.Uint64(b)),
		size:        int64(n),
		leaderEpoch: int32(binary.BigEndian.Uint32(b[12:])),
		maxTs:       int64(binary.BigEndian.Uint64(b[35:])),
	}
	if b[16] != 2 {
		return header{}, fmt.Errorf("%w: magic %d", recordbatch.ErrCorrupt, b[16])
	}
	delta := int32(binary.BigEndian.Uint32(b[23:]))
	if delta < 0 || h.base < 0 {
		return header{}, fmt.Errorf("%w: bad offsets in a batch header", recordbatch.ErrCorrupt)
	}
	h.last = h.base + int64(delta)
	return h, nil
}

var headerBufs = sync.Pool{New: func() any { return new([headerPrefix]byte) }}

// readHeader reads the batch header at pos (which must be below end).
func readHeader(f File, pos, end int64) (header, error) {
	if end-pos < recordbatch.HeaderSize {
		return header{}, fmt.Errorf("%w: %d bytes left at %d", recordbatch.ErrCorrupt, end-pos, pos)
	}
	// The buffer would escape through the interface call: pool it so a
	// read walking headers does not allocate per header.
	buf := headerBufs.Get().(*[headerPrefix]byte)
	defer headerBufs.Put(buf)
	if _, err := f.ReadAt(buf[:], pos); err != nil && !errors.Is(err, io.EOF) {
		return header{}, err
	}
	h, err := parseHeader(buf[:])
	if err != nil {
		return h, err
	}
	if pos+h.size > end {
		return h, fmt.Errorf("%w: batch at %d runs past %d", recordbatch.ErrCorrupt, pos, end)
	}
	return h, nil
}

// indexBuilder adds index entries as batches go by, the same way for
// appends, recovery and rebuilds: an offset-index entry for a batch when at
// least index.interval.bytes were written since the previous entry, and
// with it a time-index entry for the largest timestamp before that batch
// when it grew.
type indexBuilder struct {
	base, interval int64
	since          int64 // bytes since the last entry
	maxTs, maxOff  int64 // largest timestamp so far and the last offset of its batch
}

func newIndexBuilder(base, interval int64) indexBuilder {
	return indexBuilder{base: base, interval: interval, maxTs: -1, maxOff: base}
}

// add accounts for the batch h at pos and returns the entries to append.
func (b *indexBuilder) add(h header, pos int64) (idx indexEntry, tidx timeEntry, addIdx, addTidx bool) {
	if b.since >= b.interval {
		idx, addIdx = indexEntry{rel: uint32(h.base - b.base), pos: uint32(pos)}, true
		if b.maxTs >= 0 {
			tidx, addTidx = timeEntry{ts: b.maxTs, rel: uint32(b.maxOff - b.base)}, true
		}
		b.since = 0
	}
	b.since += h.size
	if h.maxTs > b.maxTs {
		b.maxTs, b.maxOff = h.maxTs, h.last
	}
	return
}

// skip accounts for a batch that already has its index entry (resuming
// after the last entry of an index file).
func (b *indexBuilder) skip(h header) {
	b.since = h.size
	if h.maxTs > b.maxTs {
		b.maxTs, b.maxOff = h.maxTs, h.last
	}
}

func appendTime(tidx []timeEntry, e timeEntry) []timeEntry {
	if len(tidx) == 0 || e.ts > tidx[len(tidx)-1].ts {
		return append(tidx, e)
	}
	return tidx
}

// rebuildIndexes scans a segment's batch headers and builds its indexes,
// the time index ending with the segment's largest timestamp.
func rebuildIndexes(f File, base, size, interval int64) ([]indexEntry, []timeEntry, error) {
	var idx []indexEntry
	var tidx []timeEntry
	ib := newIndexBuilder(base, interval)
	for pos := int64(0); pos < size; {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return nil, nil, err
		}
		ie, te, addI, addT := ib.add(h, pos)
		if addI {
			idx = append(idx, ie)
		}
		if addT {
			tidx = appendTime(tidx, te)
		}
		pos += h.size
	}
	if ib.maxTs >= 0 {
		tidx = appendTime(tidx, timeEntry{ts: ib.maxTs, rel: uint32(ib.maxOff - base)})
	}
	return idx, tidx, nil
}

// recentBatches remembers where the last batches appended to the active
// segment start and end, so that the common reads (a consumer at the tail,
// the cut at a recent high watermark) find their positions without
// touching the file.
type recentBatches struct {
	mu   sync.Mutex
	ring [64]recentBatch
	n    int // total pushed
}

type recentBatch struct {
	base, next, pos, size int64
}

func (r *recentBatches) push(b recentBatch) {
	r.mu.Lock()
	r.ring[r.n%len(r.ring)] = b
	r.n++
	r.mu.Unlock()
}

// find returns the remembered batch holding offset.
func (r *recentBatches) find(offset int64) (recentBatch, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lo := max(r.n-len(r.ring), 0)
	for i := r.n - 1; i >= lo; i-- {
		b := r.ring[i%len(r.ring)]
		if offset >= b.base && offset < b.next {
			return b, true
		}
		if b.next <= offset {
			return recentBatch{}, false
		}
	}
	return recentBatch{}, false
}

// indexMemory is what loaded indexes cost in memory.
func indexMemory(idx []indexEntry, tidx []timeEntry) int64 {
	return int64(len(idx))*8 + int64(len(tidx))*16
}

// liveEntries is an active segment's growing index, read without a lock:
// es is a backing array used up to n, the count of entries published.
// The one writer (under the log's pub) writes an entry past n and then
// raises n, so a reader that loads n reads only written entries; when es
// is full, the writer copies them into an array of twice the capacity and
// publishes that one instead. A reader of the old array keeps a consistent
// prefix. Only a full array allocates, not each entry.
type liveEntries[T any] struct {
	es []T
	n  atomic.Int64
}

// newLiveEntries returns es published as a live index. It never writes
// into es's array (whose spare capacity may be shared): the first add
// copies.
func newLiveEntries[T any](es []T) *liveEntries[T] {
	b := &liveEntries[T]{es: es[:len(es):len(es)]}
	b.n.Store(int64(len(es)))
	return b
}

// entries returns the published entries, capped so that an append to
// them copies.
func (b *liveEntries[T]) entries() []T {
	n := b.n.Load()
	return b.es[:n:n]
}

// len returns the count of published entries.
func (b *liveEntries[T]) len() int64 { return b.n.Load() }

// add publishes e after the entries and returns the index to publish from
// then on: b, or a larger copy when b is full. Requires the one writer.
func (b *liveEntries[T]) add(e T) *liveEntries[T] {
	n := b.n.Load()
	if int(n) < len(b.es) {
		b.es[n] = e
		b.n.Store(n + 1)
		return b
	}
	nb := &liveEntries[T]{es: make([]T, max(2*len(b.es), 16))}
	copy(nb.es, b.es[:n])
	nb.es[n] = e
	nb.n.Store(n + 1)
	return nb
}
