package tiering

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

var (
	// ErrUnavailable: the object store could not serve a remote read
	// (down, slow past the deadline, or an object missing). Retriable.
	ErrUnavailable = errors.New("tiering: remote storage unavailable")
	// ErrOutOfRange: the offset is below the remote log start.
	ErrOutOfRange = errors.New("tiering: offset below the remote log start")
)

// ReaderConfig configures the remote reader shared by all partitions.
type ReaderConfig struct {
	Bucket objectstore.Bucket
	Layout Layout
	// CacheBytes bounds the chunk cache (default 1 GiB).
	CacheBytes int64
	// ChunkBytes is the size of a ranged GET and a cache entry (default
	// 4 MiB).
	ChunkBytes int64
	// ReadAhead is how many chunks after the one read are fetched ahead
	// for a sequential reader (default 4; 0 after EnsureDefaults only if
	// negative was given).
	ReadAhead int
	// CallTimeout bounds each GET (default 30s).
	CallTimeout time.Duration
	Metrics     *Metrics
}

func (c *ReaderConfig) ensureDefaults() {
	if c.CacheBytes <= 0 {
		c.CacheBytes = 1 << 30
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 4 << 20
	}
	switch {
	case c.ReadAhead == 0:
		c.ReadAhead = 4
	case c.ReadAhead < 0:
		c.ReadAhead = 0
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
}

// Reader reads remote segments through a byte-bounded chunk cache. One
// Reader serves every partition of a broker. Safe for concurrent use; it
// takes no lock a produce or a local fetch needs.
type Reader struct {
	cfg    ReaderConfig
	chunks *ristretto.Cache[string, []byte]
	comps  *ristretto.Cache[string, *Companion]
	spills *ristretto.Cache[string, *Manifest]

	ctx    context.Context // ends on Close: read-ahead stops
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ahead  chan struct{} // read-ahead GETs in flight

	mu struct {
		sync.Mutex
		loads map[string]*load // chunk loads in flight
		// recent holds the last chunks loaded, so a chunk the cache's
		// admission policy refused is not fetched again by the very
		// next read of the same stream.
		recent    map[string][]byte
		recentLog []string
		// last is the last chunk read per object: read-ahead starts
		// when a read follows it.
		last map[string]int64
	}
}

type load struct {
	done chan struct{}
	data []byte
	err  error
}

// recentChunks is how many freshly loaded chunks stay outside the cache.
const recentChunks = 16

// NewReader returns a reader; Close stops its read-ahead.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	cfg.ensureDefaults()
	r := &Reader{cfg: cfg, ahead: make(chan struct{}, 8)}
	counters := max(10*cfg.CacheBytes/cfg.ChunkBytes, 1000)
	var err error
	r.chunks, err = ristretto.NewCache(&ristretto.Config[string, []byte]{
		NumCounters: counters, MaxCost: cfg.CacheBytes - cfg.CacheBytes/16, BufferItems: 64,
		OnEvict: func(*ristretto.Item[[]byte]) { cfg.Metrics.evicted() },
	})
	if err != nil {
		return nil, fmt.Errorf("tiering: %w", err)
	}
	// Companions (offset and time indexes) get a sixteenth of the budget.
	r.comps, err = ristretto.NewCache(&ristretto.Config[string, *Companion]{
		NumCounters: counters, MaxCost: max(cfg.CacheBytes/16, 1<<20), BufferItems: 64,
	})
	if err != nil {
		r.chunks.Close()
		return nil, fmt.Errorf("tiering: %w", err)
	}
	// Spilled manifest parts (immutable) get a sixteenth too.
	r.spills, err = ristretto.NewCache(&ristretto.Config[string, *Manifest]{
		NumCounters: counters, MaxCost: max(cfg.CacheBytes/16, 1<<20), BufferItems: 64,
	})
	if err != nil {
		r.chunks.Close()
		r.comps.Close()
		return nil, fmt.Errorf("tiering: %w", err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mu.loads = map[string]*load{}
	r.mu.recent = map[string][]byte{}
	r.mu.last = map[string]int64{}
	return r, nil
}

// Close stops read-ahead and releases the caches.
func (r *Reader) Close() {
	r.cancel()
	r.wg.Wait()
	r.chunks.Close()
	r.comps.Close()
	r.spills.Close()
}

// Wait waits until the caches have applied every Set (tests).
func (r *Reader) Wait() {
	r.chunks.Wait()
	r.comps.Wait()
	r.spills.Wait()
}

// LoadSpill reads a spilled manifest part through the reader's cache.
func (r *Reader) LoadSpill(ctx context.Context, p Partition, s Spill) (*Manifest, error) {
	if s.part != nil {
		return s.part, nil
	}
	key := r.cfg.Layout.SpillKey(p, s.BaseOffset, s.ID)
	if part, ok := r.spills.Get(key); ok {
		return part, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	part, err := readSpill(ctx, r.cfg.Bucket, key, s)
	r.cfg.Metrics.get(err)
	if err != nil {
		return nil, err
	}
	r.spills.Set(key, part, int64(part.encodedSize())*2)
	return part, nil
}

// Read returns the record batches of partition p from the remote segment
// holding offset (or the next one after a gap): from the batch holding
// offset, at most maxBytes (the first batch whole with minOneBatch, else it
// may end mid-batch as Kafka's reads do), never a batch whose last offset
// is at or past maxOffset, never spanning two segments. The result is a
// list of slices of cached chunks, to be written out as they are (never
// modified). Nil with no error means offset is at or past the manifest's
// end (the local log holds it). An offset below the manifest's start is
// ErrOutOfRange; a store that fails is ErrUnavailable.
func (r *Reader) Read(ctx context.Context, p Partition, m *Manifest, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) ([][]byte, error) {
	start := time.Now()
	defer func() { r.cfg.Metrics.ObserveRemoteFetch(time.Since(start)) }()
	if s := m.Start(); s < 0 || offset < s {
		if s < 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %d below %d", ErrOutOfRange, offset, s)
	}
	if offset >= maxOffset {
		return nil, nil
	}
	seg, ok, err := FindSegment(ctx, r, p, m, offset)
	if err != nil || !ok {
		return nil, err
	}
	offset = max(offset, seg.BaseOffset)
	comp, err := r.companion(ctx, p, seg)
	if err != nil {
		return nil, err
	}
	var pos int64
	if i := sort.Search(len(comp.OffsetIndex), func(i int) bool {
		return seg.BaseOffset+int64(comp.OffsetIndex[i].RelOffset) > offset
	}); i > 0 {
		pos = int64(comp.OffsetIndex[i-1].Position)
	}
	sr := &segReader{r: r, ctx: ctx, p: p, seg: seg, key: r.cfg.Layout.SegmentKey(p, seg.BaseOffset, seg.ID)}
	// Find the first batch whose last offset reaches offset.
	var first int64 = -1
	for pos < seg.Size {
		base, last, size, err := sr.header(pos)
		if err != nil {
			return nil, err
		}
		if base >= maxOffset {
			return nil, nil
		}
		if last >= offset {
			first = size
			break
		}
		pos += size
	}
	if first < 0 {
		return nil, nil
	}
	// Take whole batches below maxOffset while they fit maxBytes.
	end := pos + first
	if first > int64(maxBytes) && !minOneBatch {
		end = pos + int64(max(maxBytes, 0))
	}
	for end < seg.Size && end-pos < int64(maxBytes) {
		base, _, size, err := sr.header(end)
		if err != nil {
			return nil, err
		}
		if base >= maxOffset {
			break
		}
		end = min(end+size, pos+int64(maxBytes))
	}
	if end <= pos {
		return nil, nil
	}
	out, err := sr.slices(pos, end)
	if err != nil {
		return nil, err
	}
	r.readAhead(sr, end, m)
	return out, nil
}

// segReader reads one remote segment through the chunk cache.
type segReader struct {
	r   *Reader
	ctx context.Context
	p   Partition
	seg Segment
	key string
}

// header returns the base offset, last offset and size of the batch at pos.
func (s *segReader) header(pos int64) (base, last, size int64, err error) {
	const n = 23 + 4 // through lastOffsetDelta
	if pos+n > s.seg.Size {
		return 0, 0, 0, fmt.Errorf("%w: %s: batch header at %d past the end", ErrCorrupt, s.key, pos)
	}
	var hdr [n]byte
	parts, err := s.slices(pos, pos+n)
	if err != nil {
		return 0, 0, 0, err
	}
	at := 0
	for _, p := range parts {
		at += copy(hdr[at:], p)
	}
	base = int64(binary.BigEndian.Uint64(hdr[0:]))
	length := int64(int32(binary.BigEndian.Uint32(hdr[8:])))
	delta := int64(int32(binary.BigEndian.Uint32(hdr[23:])))
	size = length + 12
	if length < recordbatch.HeaderSize-12 || pos+size > s.seg.Size || delta < 0 || base < s.seg.BaseOffset || base+delta >= s.seg.NextOffset {
		return 0, 0, 0, fmt.Errorf("%w: %s: bad batch header at %d", ErrCorrupt, s.key, pos)
	}
	return base, base + delta, size, nil
}

// slices returns the bytes [from, to) of the segment as slices of chunks.
func (s *segReader) slices(from, to int64) ([][]byte, error) {
	cb := s.r.cfg.ChunkBytes
	var out [][]byte
	for at := from; at < to; {
		idx := at / cb
		chunk, err := s.r.chunk(s.ctx, s.key, idx, s.chunkLen(idx), false)
		if err != nil {
			return nil, err
		}
		lo := at - idx*cb
		hi := min(int64(len(chunk)), to-idx*cb)
		out = append(out, chunk[lo:hi])
		at = idx*cb + hi
	}
	return out, nil
}

func (s *segReader) chunkLen(idx int64) int64 {
	cb := s.r.cfg.ChunkBytes
	return min(cb, s.seg.Size-idx*cb)
}

func chunkKey(key string, idx int64) string { return key + "#" + strconv.FormatInt(idx, 10) }

// chunk returns one chunk of an object: from the recent loads, the cache,
// a load in flight, or a ranged GET.
func (r *Reader) chunk(ctx context.Context, key string, idx, length int64, ahead bool) ([]byte, error) {
	ck := chunkKey(key, idx)
	r.mu.Lock()
	if data, ok := r.mu.recent[ck]; ok {
		r.mu.Unlock()
		if !ahead {
			r.cfg.Metrics.cacheHit(true)
		}
		return data, nil
	}
	if data, ok := r.chunks.Get(ck); ok {
		r.mu.Unlock()
		if !ahead {
			r.cfg.Metrics.cacheHit(true)
		}
		return data, nil
	}
	if ld, ok := r.mu.loads[ck]; ok {
		r.mu.Unlock()
		if ahead {
			return nil, nil
		}
		r.cfg.Metrics.cacheHit(true)
		select {
		case <-ld.done:
			return ld.data, ld.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	ld := &load{done: make(chan struct{})}
	r.mu.loads[ck] = ld
	r.mu.Unlock()
	if !ahead {
		r.cfg.Metrics.cacheHit(false)
	}
	ld.data, ld.err = r.get(ctx, key, idx*r.cfg.ChunkBytes, length)
	r.mu.Lock()
	delete(r.mu.loads, ck)
	if ld.err == nil {
		r.rememberLocked(ck, ld.data)
	}
	r.mu.Unlock()
	close(ld.done)
	if ld.err == nil {
		r.chunks.Set(ck, ld.data, int64(len(ld.data)))
	}
	return ld.data, ld.err
}

// Requires mu.
func (r *Reader) rememberLocked(ck string, data []byte) {
	if _, ok := r.mu.recent[ck]; ok {
		return
	}
	if len(r.mu.recentLog) >= recentChunks {
		delete(r.mu.recent, r.mu.recentLog[0])
		r.mu.recentLog = append(r.mu.recentLog[:0], r.mu.recentLog[1:]...)
	}
	r.mu.recent[ck] = data
	r.mu.recentLog = append(r.mu.recentLog, ck)
}

// get reads exactly length bytes at off, within the call deadline.
func (r *Reader) get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	body, err := r.cfg.Bucket.Get(ctx, key, off, length)
	if err != nil {
		r.cfg.Metrics.get(err)
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, key, err)
	}
	defer body.Close()
	data := make([]byte, length)
	if _, err := io.ReadFull(body, data); err != nil {
		r.cfg.Metrics.get(err)
		return nil, fmt.Errorf("%w: %s at %d: %v", ErrUnavailable, key, off, err)
	}
	r.cfg.Metrics.get(nil)
	return data, nil
}

// companion returns a segment's decoded companion, from the cache or the
// store.
func (r *Reader) companion(ctx context.Context, p Partition, seg Segment) (*Companion, error) {
	key := r.cfg.Layout.CompanionKey(p, seg.BaseOffset, seg.ID)
	if c, ok := r.comps.Get(key); ok {
		return c, nil
	}
	if seg.CompanionSize <= 0 || seg.CompanionSize > maxCompanionSize {
		return nil, fmt.Errorf("%w: %s: size %d", ErrCorrupt, key, seg.CompanionSize)
	}
	data, err := r.get(ctx, key, 0, seg.CompanionSize)
	if err != nil {
		return nil, err
	}
	c, err := DecodeCompanion(data, &seg)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s: %w", key, err)
	}
	r.comps.Set(key, c, c.memSize())
	return c, nil
}

// readAhead starts GETs of the chunks after end when the reader is
// sequential (its read continues the chunk the previous read ended in),
// and of the next segment's companion and first chunk near a segment's
// end. It never waits: at most a few GETs are in flight for read-ahead.
func (r *Reader) readAhead(s *segReader, end int64, m *Manifest) {
	cb := r.cfg.ChunkBytes
	if r.cfg.ReadAhead == 0 {
		return
	}
	cur := (end - 1) / cb
	r.mu.Lock()
	prev, seen := r.mu.last[s.key]
	if len(r.mu.last) > 10000 {
		clear(r.mu.last)
	}
	r.mu.last[s.key] = cur
	r.mu.Unlock()
	if !seen || cur < prev || cur > prev+1 {
		return // not (yet) sequential
	}
	last := (s.seg.Size - 1) / cb
	for i := cur + 1; i <= min(cur+int64(r.cfg.ReadAhead), last); i++ {
		if !r.startAhead(func(ctx context.Context) { r.chunk(ctx, s.key, i, s.chunkLen(i), true) }) {
			return
		}
	}
	if last-cur < int64(r.cfg.ReadAhead) {
		next, ok, err := FindSegment(s.ctx, r, s.p, m, s.seg.NextOffset)
		if err != nil || !ok {
			return
		}
		ns := &segReader{r: r, p: s.p, seg: next, key: r.cfg.Layout.SegmentKey(s.p, next.BaseOffset, next.ID)}
		// The stream continues into the next segment: its first read
		// counts as sequential, and its first chunks come ahead.
		r.mu.Lock()
		if _, ok := r.mu.last[ns.key]; !ok {
			r.mu.last[ns.key] = -1
		}
		r.mu.Unlock()
		r.startAhead(func(ctx context.Context) { r.companion(ctx, s.p, next) })
		for i := int64(0); i < min(int64(r.cfg.ReadAhead)-(last-cur), (next.Size-1)/cb+1); i++ {
			if !r.startAhead(func(ctx context.Context) { r.chunk(ctx, ns.key, i, ns.chunkLen(i), true) }) {
				return
			}
		}
	}
}

// startAhead runs fn in the background if a read-ahead slot is free.
func (r *Reader) startAhead(fn func(ctx context.Context)) bool {
	select {
	case r.ahead <- struct{}{}:
	default:
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { <-r.ahead }()
		fn(r.ctx)
	}()
	return true
}
