package tiering

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
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
	// ReadAhead is how many GETs a sequential reader keeps in flight
	// ahead of its reads (default GOMAXPROCS, 1 to 4; negative: none):
	// as each ends the
	// next chunk starts, as a pool of ReadAhead workers reading a segment
	// in order would, up to twice ReadAhead chunks past the reader's last
	// read (or the chunks of its next two reads, if its reads span more),
	// across segment boundaries, and on to the end of the span holding
	// the last (see ReadAheadSpan). A stream's first read fetches one
	// chunk ahead; a read that starts where the previous one of its
	// partition ended fetches the whole window.
	ReadAhead int
	// ReadAheadGets bounds the read-ahead GETs in flight, all partitions
	// together, while hot traffic is seen (see IdleGets; default twice
	// ReadAhead, but fewer than GOMAXPROCS, and at least one): the
	// broker's GET workers, shared by the sequential readers in turn, a
	// GET each (see ReadAheadSpan), so one replay cannot take every GET
	// and many replays do not multiply them. A read's own
	// GETs (the chunk it waits for) are not counted. A worker reading a
	// body the store sends faster than it is read never blocks: it keeps
	// its processor until preempted, and the goroutines of hot traffic (a
	// produce's reader, woken by the network) wait behind it in the run
	// queue, Go having no priorities: more workers than processors queue
	// them behind several, and as many as the processors leave none to a
	// produce returning from its write (the runtime hands a processor to a
	// worker while the produce is in the system call, and the produce then
	// waits for one to come free). One fewer leaves it one.
	ReadAheadGets int
	// IdleGets bounds the read-ahead GETs in flight, all partitions
	// together and one partition alone, while no hot traffic has been
	// seen for HotQuiet (see NoteHot), when it is above ReadAheadGets and
	// ReadAhead (default twice ReadAhead): with no produce to wait behind
	// the GET workers, a replay keeps as many GETs going as a client of
	// the store's own would. Once hot traffic is seen, the workers past
	// ReadAheadGets stop as their GET ends.
	IdleGets int
	// HotQuiet is how long after hot traffic was last seen the
	// read-ahead keeps to ReadAheadGets (default 250ms).
	HotQuiet time.Duration
	// ReadAheadBytes bounds the bytes of read-ahead in flight or fetched
	// and not yet read, all partitions together (default an eighth of
	// CacheBytes, and at least three ReadAheadSpan within a quarter of
	// it). Read-ahead data does not enter the cache until a read
	// takes it, so speculation never evicts what readers use; and a
	// chunk read ahead enters it only when it is fetched for the second
	// time (see Reader). Read-ahead past the bound is skipped, and
	// counted.
	ReadAheadBytes int64
	// ReadAheadSpan bounds the bytes of one read-ahead GET (default
	// 16 MiB, at least ChunkBytes): a GET worker takes the chunks
	// queued next of one object, in order, up to this many bytes, in
	// one ranged GET, each chunk into its own buffer and handed to the
	// reads as soon as its bytes are in. A replay's GETs are then a
	// quarter as many with 4 MiB chunks, and each costs the broker (the
	// SDK's request, signing and response handling) and the store (its
	// lookup of the object and opening of its data) once per 16 MiB
	// rather than per chunk; AWS advises ranges of 8 to 16 MB. A read's
	// own GETs (the chunk it waits for) stay one chunk each. A
	// sequential reader's window is refilled once a chunk of it is
	// missing, on to the end of a span of the object (spans laid from its
	// start), so that a reader asking less than a chunk per read (Kafka's
	// 1 MiB per partition) gets its read-ahead a span at a time too, not
	// a chunk each time its window moves one.
	ReadAheadSpan int64
	// CallTimeout bounds each GET (default 30s).
	CallTimeout time.Duration
	// ColdNice is how much lower than the process's the scheduling
	// priority of the threads that read the GETs' bodies is (their
	// niceness added, default 10; negative: none, the bodies are read on
	// the goroutines that ask for them): see ColdThreads. The reader's
	// cold threads (RunCold) also write what it read to clients.
	ColdNice int
	// ColdThreads bounds the cold threads (default 64); work past it
	// runs on the goroutine that asks for it.
	ColdThreads int
	Metrics     *Metrics
}

func (c *ReaderConfig) ensureDefaults() {
	if c.CacheBytes <= 0 {
		c.CacheBytes = 1 << 30
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 4 << 20
	}
	procs := runtime.GOMAXPROCS(0)
	switch {
	case c.ReadAhead == 0:
		c.ReadAhead = min(4, max(1, procs))
	case c.ReadAhead < 0:
		c.ReadAhead = 0
	}
	if c.ReadAheadGets <= 0 {
		c.ReadAheadGets = max(1, min(2*c.ReadAhead, procs-1))
	}
	if c.IdleGets <= 0 {
		c.IdleGets = 2 * c.ReadAhead
	}
	if c.HotQuiet <= 0 {
		c.HotQuiet = 250 * time.Millisecond
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.ColdNice == 0 {
		c.ColdNice = 10
	}
	if c.ColdThreads <= 0 {
		c.ColdThreads = 64
	}
	if c.ReadAheadSpan <= 0 {
		c.ReadAheadSpan = 16 << 20
	}
	c.ReadAheadSpan = max(c.ReadAheadSpan, c.ChunkBytes)
	if c.ReadAheadBytes <= 0 {
		// At least a stream's window of two span-sized reads and one
		// span more, within a quarter of the cache: with a window's
		// worth alone, the chunks a reader has not yet taken block the
		// next refill, which falls back to single-chunk GETs and skips
		// (seen at a 256 MiB cache in later rounds of a replay).
		c.ReadAheadBytes = max(c.CacheBytes/8, min(3*c.ReadAheadSpan, c.CacheBytes/4), c.ChunkBytes)
	}
}

// Reader reads remote segments through a byte-bounded chunk cache. One
// Reader serves every partition of a broker. Safe for concurrent use; it
// takes no lock a produce or a local fetch needs. Its memory (chunk cache,
// indexes, spilled manifest parts, recent loads and read-ahead) stays
// within CacheBytes, or ReadAheadBytes more when that is set above it.
//
// Admission: a chunk a stream's first read or a random read fetches
// itself enters the cache. A chunk a sequential reader fetched (its
// read-ahead, or a read continuing the previous one) does not, the first
// time: a replay reads each chunk once, in order, and
// would fill the cache with data nobody reads again, in fresh memory,
// evicting what other readers use. It stays in the recent reads (the
// reader's next reads, and a second reader close behind, find it there),
// and its buffer goes back to the pool once the last read holding it is
// released, for the replay's next GETs. Its key is remembered (seen): a
// chunk fetched so again while remembered (a second reader of the range,
// further behind) enters the cache, so a third finds it there.
type Reader struct {
	cfg    ReaderConfig
	cold   *ColdThreads
	chunks *ristretto.Cache[string, *cacheRef]
	pool   *chunkPool
	comps  *ristretto.Cache[string, *Companion]
	spills *ristretto.Cache[string, *Manifest]
	// recentMax is how many freshly read chunks stay outside the cache.
	recentMax int
	// seenMax is how many chunk keys seen remembers.
	seenMax int

	ctx    context.Context // ends on Close: read-ahead stops
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		loads map[string]*load // chunk and companion loads in flight
		// recent holds the last chunks read, so a chunk the cache's
		// admission policy refused (or has not applied yet) is not
		// fetched again by the very next read of the same stream.
		recent    map[string]*chunk
		recentLog []string
		// recentComps and recentSpills do the same for companions and
		// spilled manifest parts.
		recentComps     map[string]*Companion
		recentCompsLog  []string
		recentSpills    map[string]*Manifest
		recentSpillsLog []string
		// seen holds the keys of the last chunks read ahead that were
		// not admitted to the cache, oldest first in seenLog (some
		// stale): one read ahead again while remembered is admitted.
		seen    map[string]struct{}
		seenLog []string
		// ahead holds chunks read ahead and not read yet; aheadBytes
		// counts them and the read-ahead GETs in flight, within
		// cfg.ReadAheadBytes.
		ahead      map[string]aheadChunk
		aheadLog   []string // ahead's keys, oldest first (some stale)
		aheadBytes int64
		// streams are the sequential readers, by partition and the
		// offset their next read starts at.
		streams map[streamKey]*stream
		// ready are the streams with chunks queued and room for another
		// GET, in the order the GET workers serve them (a chunk each,
		// then to the back of the line).
		ready []*stream
		// aheadGets counts the read-ahead GET slots taken, by workers
		// and by a read's prefetches, within cfg.ReadAheadGets;
		// starting counts the workers started that have not yet taken
		// their first chunk.
		aheadGets, starting int
	}
}

// stream is one sequential reader's read-ahead: the chunks to fetch next,
// in order, and how many of the reader's GET workers fetch them now (at
// most cfg.ReadAhead). Its fields are guarded by Reader.mu.
type stream struct {
	queue   []aheadReq
	workers int
	// ready: the stream is in Reader.mu.ready.
	ready bool
	// gen counts the reads that refilled the queue: a lookup of the
	// following segments started by an older read adds nothing.
	gen int
	// gone: the stream was dropped; its workers stop.
	gone bool
	// segID, segBase and pos say where the stream's next read starts:
	// in the segment with that ID and base offset, at byte pos (the
	// batch holding its offset, or the one after the last read), so
	// that it needs no lookup in the segment's offset index.
	segID   [16]byte
	segBase int64
	pos     int64
}

type aheadReq struct {
	key         string
	idx, length int64
}

type load struct {
	done  chan struct{}
	ahead bool // a read-ahead load: its chunk goes to ahead, not the cache
	comp  *Companion
	spill *Manifest
	err   error
}

type aheadChunk struct {
	c  *chunk // the read-ahead's reference
	at time.Time
}

type streamKey struct {
	p    Partition
	next int64
}

const (
	// maxStreams bounds the sequential readers remembered.
	maxStreams = 4096
	// recentCompanions is how many decoded companions (and spilled
	// manifest parts) stay outside the cache.
	recentCompanions = 64
	// aheadMaxAge is how long a chunk read ahead is kept for its reader
	// when others need the read-ahead budget.
	aheadMaxAge = 5 * time.Second
)

// NewReader returns a reader; Close stops its read-ahead.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	cfg.ensureDefaults()
	r := &Reader{cfg: cfg, recentMax: int(min(max(cfg.CacheBytes/16/cfg.ChunkBytes, 2), 16))}
	r.cold = NewColdThreads(cfg.ColdNice, cfg.ColdThreads)
	r.cold.quiet = cfg.HotQuiet
	r.pool = &chunkPool{size: cfg.ChunkBytes, max: int(min(max(cfg.CacheBytes/16/cfg.ChunkBytes, 2), 8)), poison: invariants}
	counters := max(10*cfg.CacheBytes/cfg.ChunkBytes, 1000)
	// The chunk cache gets what the companions, spilled parts, recent
	// chunks, read-ahead and free pool buffers leave.
	side := max(cfg.CacheBytes/16, 1<<20)
	chunkCost := max(cfg.CacheBytes-2*side-cfg.ReadAheadBytes-int64(r.recentMax+r.pool.max)*cfg.ChunkBytes, 2*cfg.ChunkBytes)
	r.pool.limit = int((chunkCost+cfg.ReadAheadBytes)/cfg.ChunkBytes) + r.recentMax + r.pool.max
	var err error
	r.chunks, err = ristretto.NewCache(&ristretto.Config[string, *cacheRef]{
		NumCounters: counters, MaxCost: chunkCost, BufferItems: 64,
		OnEvict: func(*ristretto.Item[*cacheRef]) { cfg.Metrics.evicted() },
		// Evicted, rejected by the admission policy or replaced: the
		// cache's reference goes.
		OnExit: func(cr *cacheRef) { cr.drop() },
	})
	if err != nil {
		return nil, fmt.Errorf("tiering: %w", err)
	}
	// Twice the chunks the cache holds: a second reader up to a cache's
	// worth of data behind the first still finds its chunks remembered.
	r.seenMax = int(min(max(2*chunkCost/cfg.ChunkBytes, 64), 1<<16))
	// Companions (offset and time indexes) get a sixteenth of the budget.
	r.comps, err = ristretto.NewCache(&ristretto.Config[string, *Companion]{
		NumCounters: counters, MaxCost: side, BufferItems: 64,
	})
	if err != nil {
		r.chunks.Close()
		return nil, fmt.Errorf("tiering: %w", err)
	}
	// Spilled manifest parts (immutable) get a sixteenth too.
	r.spills, err = ristretto.NewCache(&ristretto.Config[string, *Manifest]{
		NumCounters: counters, MaxCost: side, BufferItems: 64,
	})
	if err != nil {
		r.chunks.Close()
		r.comps.Close()
		return nil, fmt.Errorf("tiering: %w", err)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mu.loads = map[string]*load{}
	r.mu.recent = map[string]*chunk{}
	r.mu.recentComps = map[string]*Companion{}
	r.mu.recentSpills = map[string]*Manifest{}
	r.mu.ahead = map[string]aheadChunk{}
	r.mu.seen = map[string]struct{}{}
	r.mu.streams = map[streamKey]*stream{}
	return r, nil
}

// Close stops read-ahead and releases the caches.
func (r *Reader) Close() {
	r.cancel()
	r.wg.Wait()
	r.cold.Close()
	r.chunks.Close()
	r.comps.Close()
	r.spills.Close()
}

// NoteHot tells the reader that hot traffic (a produce, or a fetch
// served from the local log) is served at now: for cfg.HotQuiet from then, read-ahead keeps to ReadAheadGets GETs
// in flight rather than IdleGets, and its cold threads copy in steps of
// ColdStepHot rather than ColdStepIdle.
func (r *Reader) NoteHot(now time.Time) { r.cold.NoteHot(now) }

// ColdStep is the bytes one step of the reader's cold work copies now:
// ColdStepHot while hot traffic was seen within cfg.HotQuiet, else
// ColdStepIdle.
func (r *Reader) ColdStep() int { return r.cold.Step() }

// gets returns the read-ahead GETs allowed in flight at now, all
// partitions together and one partition alone: ReadAheadGets and
// ReadAhead while hot traffic was seen within cfg.HotQuiet, raised to
// IdleGets when not.
func (r *Reader) gets(now time.Time) (all, stream int) {
	all, stream = r.cfg.ReadAheadGets, r.cfg.ReadAhead
	if !r.cold.hot(now, r.cfg.HotQuiet) {
		all, stream = max(all, r.cfg.IdleGets), max(stream, r.cfg.IdleGets)
	}
	return all, stream
}

// RunCold runs fn on one of the reader's cold threads, the ones that read
// its GETs' bodies, and returns when fn has returned: work on the data it
// read (writing a replay's answer to its client) then yields to hot
// traffic as the GETs' copies do. See ColdThreads.
func (r *Reader) RunCold(fn func()) { r.cold.Run(fn) }

// Wait waits until the caches have applied every Set and the read-ahead
// started has ended (tests).
func (r *Reader) Wait() {
	r.wg.Wait()
	r.chunks.Wait()
	r.comps.Wait()
	r.spills.Wait()
}

// LoadSpill reads a spilled manifest part through the reader's cache; a
// part is read once however many reads want it at the same time.
func (r *Reader) LoadSpill(ctx context.Context, p Partition, s Spill) (*Manifest, error) {
	if s.part != nil {
		return s.part, nil
	}
	key := r.cfg.Layout.SpillKey(p, s.BaseOffset, s.ID)
	if part, ok := r.spills.Get(key); ok {
		return part, nil
	}
	r.mu.Lock()
	if part, ok := r.mu.recentSpills[key]; ok {
		r.mu.Unlock()
		return part, nil
	}
	if ld, ok := r.mu.loads[key]; ok {
		r.mu.Unlock()
		select {
		case <-ld.done:
			return ld.spill, ld.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
	ld := &load{done: make(chan struct{})}
	r.mu.loads[key] = ld
	r.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	ld.spill, ld.err = readSpill(cctx, r.cfg.Bucket, key, s)
	cancel()
	r.cfg.Metrics.get(ld.err)
	r.mu.Lock()
	delete(r.mu.loads, key)
	if ld.err == nil {
		if len(r.mu.recentSpillsLog) >= recentCompanions {
			delete(r.mu.recentSpills, r.mu.recentSpillsLog[0])
			r.mu.recentSpillsLog = append(r.mu.recentSpillsLog[:0], r.mu.recentSpillsLog[1:]...)
		}
		r.mu.recentSpills[key] = ld.spill
		r.mu.recentSpillsLog = append(r.mu.recentSpillsLog, key)
	}
	r.mu.Unlock()
	close(ld.done)
	if ld.err != nil {
		return nil, ld.err
	}
	r.spills.Set(key, ld.spill, int64(ld.spill.encodedSize())*2)
	return ld.spill, nil
}

// Data is record data read from the object store: Bufs are slices of
// chunks the reader shares (with its cache and other reads), to be
// written out as they are, never modified, and not touched after Release,
// which gives the chunks back for reuse. The zero Data is empty.
type Data struct {
	Bufs [][]byte
	refs []*chunk
}

// Len is the length of the data.
func (d *Data) Len() int64 {
	var n int64
	for _, b := range d.Bufs {
		n += int64(len(b))
	}
	return n
}

// Release gives the chunks back; the data must not be used after it.
// Releasing again, or the zero Data, does nothing.
func (d *Data) Release() {
	for _, c := range d.refs {
		c.release()
	}
	d.Bufs, d.refs = nil, nil
}

// Read is ReadShared with the bytes copied out: the result, one slice or
// nil, is the caller's to keep.
func (r *Reader) Read(ctx context.Context, p Partition, m *Manifest, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) ([][]byte, error) {
	d, err := r.ReadShared(ctx, p, m, offset, maxBytes, maxOffset, minOneBatch)
	if err != nil || d.Bufs == nil {
		return nil, err
	}
	defer d.Release()
	buf := make([]byte, 0, d.Len())
	for _, b := range d.Bufs {
		buf = append(buf, b...)
	}
	return [][]byte{buf}, nil
}

// ReadShared returns the record batches of partition p from the remote
// segment holding offset (or the next one after a gap): from the batch
// holding offset, at most maxBytes (the first batch whole with
// minOneBatch, else it may end mid-batch as Kafka's reads do), never a
// batch whose last offset is at or past maxOffset, never spanning two
// segments. The result holds slices of the chunks read; the caller
// releases it. Empty with no error means offset is at or past the
// manifest's end (the local log holds it). An offset below the manifest's
// start is ErrOutOfRange; a store that fails is ErrUnavailable.
func (r *Reader) ReadShared(ctx context.Context, p Partition, m *Manifest, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) (Data, error) {
	start := time.Now()
	defer func() { r.cfg.Metrics.ObserveRemoteFetch(time.Since(start)) }()
	if s := m.Start(); s < 0 || offset < s {
		if s < 0 {
			return Data{}, nil
		}
		return Data{}, fmt.Errorf("%w: %d below %d", ErrOutOfRange, offset, s)
	}
	if offset >= maxOffset {
		return Data{}, nil
	}
	// A segment may hold no batch at or past offset though offset is
	// below its next offset: compaction emptied its tail before the topic
	// was tiered (its cleanup.policy changed from compact). The read goes
	// on from the next segment (Kafka's KAFKA-15388), at most once per
	// segment of the manifest.
	for hops := 0; ; hops++ {
		d, next, err := r.readShared(ctx, p, m, offset, maxBytes, maxOffset, minOneBatch)
		if err != nil || d.Bufs != nil || next <= offset || next >= maxOffset || hops > len(m.Segments)+len(m.Spills) {
			return d, err
		}
		offset = next
	}
}

// readShared is one step of ReadShared: a read of the segment holding
// offset. When it holds no batch at or past offset, it returns no data and
// the segment's next offset.
func (r *Reader) readShared(ctx context.Context, p Partition, m *Manifest, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) (Data, int64, error) {
	seg, ok, err := FindSegment(ctx, r, p, m, offset)
	if err != nil || !ok {
		return Data{}, 0, err
	}
	asked := offset
	offset = max(offset, seg.BaseOffset)
	// A read from the segment's first offset starts at its first byte,
	// and one continuing a stream where the stream's last read left it:
	// only another read looks its place up in the offset index (the
	// companion object). A replay then reads no companion: with 16 MiB
	// segments that was a GET of every two, and each costs the broker
	// and the store as much as one of a 16 MiB span.
	var pos int64
	if at, ok := r.resumeAt(p, asked, seg); ok && offset > seg.BaseOffset {
		pos = at
	} else if offset > seg.BaseOffset {
		comp, err := r.companion(ctx, p, seg)
		if err != nil {
			return Data{}, 0, err
		}
		if i := sort.Search(len(comp.OffsetIndex), func(i int) bool {
			return seg.BaseOffset+int64(comp.OffsetIndex[i].RelOffset) > offset
		}); i > 0 {
			pos = int64(comp.OffsetIndex[i-1].Position)
		}
	}
	sr := &segReader{r: r, ctx: ctx, p: p, seg: seg, key: r.cfg.Layout.SegmentKey(p, seg.BaseOffset, seg.ID), cur: -1,
		seq: r.sequential(p, asked)}
	out, err := r.readSeg(sr, m, seg, asked, offset, pos, maxBytes, maxOffset, minOneBatch)
	if err != nil || out == nil {
		// The chunks the read looked at are not returned.
		for _, c := range sr.refs {
			c.release()
		}
		if errors.Is(err, errPastLastBatch) {
			return Data{}, seg.NextOffset, nil
		}
		return Data{}, 0, err
	}
	return Data{Bufs: out, refs: sr.refs}, 0, nil
}

// errPastLastBatch: the segment holds no batch at or past the offset read.
var errPastLastBatch = errors.New("tiering: no batch at or past the offset in its segment")

// readSeg is ReadShared's walk of one segment from pos, the indexed
// position at or before offset.
func (r *Reader) readSeg(sr *segReader, m *Manifest, seg Segment, asked, offset, pos int64, maxBytes int, maxOffset int64, minOneBatch bool) ([][]byte, error) {
	p := sr.p
	r.prefetch(seg, sr.key, pos, min(seg.Size, pos+int64(max(maxBytes, 0))))
	// Find the first batch whose last offset reaches offset.
	var first int64 = -1
	// resume is where the reader's next read will start: past the last
	// whole batch returned, or at a batch returned in part.
	var resume int64
	for pos < seg.Size {
		base, last, size, err := sr.header(pos)
		if err != nil {
			return nil, err
		}
		if base >= maxOffset {
			return nil, nil
		}
		if last >= offset {
			first, resume = size, last+1
			break
		}
		pos += size
	}
	if first < 0 {
		return nil, errPastLastBatch
	}
	// Take whole batches below maxOffset while they fit maxBytes.
	// rpos is where the batch holding resume starts (or the next one).
	end := pos + first
	rpos := end
	if first > int64(maxBytes) && !minOneBatch {
		end = pos + int64(max(maxBytes, 0))
		resume, rpos = offset, pos
	}
	for end < seg.Size && end-pos < int64(maxBytes) {
		base, last, size, err := sr.header(end)
		if err != nil {
			return nil, err
		}
		if base >= maxOffset {
			break
		}
		if end+size > pos+int64(maxBytes) {
			end, resume, rpos = pos+int64(maxBytes), base, end
			break
		}
		end, resume = end+size, last+1
		rpos = end
	}
	if end <= pos {
		return nil, nil
	}
	out, err := sr.slices(pos, end)
	if err != nil {
		return nil, err
	}
	cb := r.cfg.ChunkBytes
	st, depth, align := r.window(p, asked, resume, (end-1)/cb-pos/cb+1, seg, rpos)
	r.readAhead(p, m, seg, end, st, depth, align)
	return out, nil
}

// sequential reports whether a read of p at offset continues a stream (a
// previous read ended there).
func (r *Reader) sequential(p Partition, offset int64) bool {
	if r.cfg.ReadAhead == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.mu.streams[streamKey{p, offset}]
	return ok
}

// resumeAt returns the byte of seg at which a read of p at offset starts,
// when the read continues a stream whose last read left off in seg.
func (r *Reader) resumeAt(p Partition, offset int64, seg Segment) (int64, bool) {
	if r.cfg.ReadAhead == 0 {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.mu.streams[streamKey{p, offset}]
	if !ok || st.segID != seg.ID || st.segBase != seg.BaseOffset || st.pos <= 0 || st.pos >= seg.Size {
		return 0, false
	}
	return st.pos, true
}

// window returns the stream a read of p at offset that ends before resume
// (the batch holding it starting at byte rpos of seg) belongs to, and how
// many chunks past the read to fetch ahead: when the read continues the
// previous one of a stream, twice the GETs a stream may have in flight
// (cfg.ReadAhead, or IdleGets without hot traffic), or the chunks of two
// reads as large as this one (span chunks) if that is more, within the
// read-ahead budget; one chunk for a stream's first read. It also
// returns align, the chunks a read-ahead GET spans (1 for a stream's
// first read, or when the budget does not hold a window and a GET more):
// a refill of a stream's window goes on to a multiple of align chunks in
// the object (see readAhead).
//
// Two reads' worth: a reader sends its next read once it has this one's
// answer, so with one read's worth ahead the GETs stop while the next
// read's answer is written (its chunks are in, and what comes after it is
// not asked for until it arrives), and the read after waits for all of its
// GETs. With the chunks of the read after next in flight too, GETs go on
// while answers are written. A consumer asking for a segment at a time
// (16 MiB per partition) spans four 4 MiB chunks, twice ReadAhead on two
// cores: the window was one read ahead, and the broker waited 40-60% of
// a cold replay for its GETs.
func (r *Reader) window(p Partition, offset, resume, span int64, seg Segment, rpos int64) (st *stream, depth, align int) {
	if r.cfg.ReadAhead == 0 {
		return nil, 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st, seq := r.mu.streams[streamKey{p, offset}]
	delete(r.mu.streams, streamKey{p, offset})
	if len(r.mu.streams) >= maxStreams {
		for _, s := range r.mu.streams {
			s.gone, s.queue = true, nil
		}
		clear(r.mu.streams)
	}
	if old, ok := r.mu.streams[streamKey{p, resume}]; ok && old != st {
		old.gone, old.queue = true, nil
	}
	if !seq {
		st = &stream{}
	}
	r.mu.streams[streamKey{p, resume}] = st
	st.segID, st.segBase, st.pos = seg.ID, seg.BaseOffset, rpos
	if seq {
		// The two reads' worth stays within what the read-ahead budget
		// holds, so that one stream does not overrun it at every read.
		budget := int(r.cfg.ReadAheadBytes / r.cfg.ChunkBytes)
		_, per := r.gets(time.Now())
		depth = max(2*per, int(min(2*span, int64(budget))))
		align = int(r.cfg.ReadAheadSpan / r.cfg.ChunkBytes)
		if depth+align-1 > budget {
			align = 1
		}
		return st, depth, align
	}
	return st, 1, 0
}

// prefetch starts GETs of the chunks [from, to) of a segment that a read
// is about to walk through, so that a read spanning several chunks waits
// for one GET, not for each in turn.
func (r *Reader) prefetch(seg Segment, key string, from, to int64) {
	cb := r.cfg.ChunkBytes
	if r.cfg.ReadAhead == 0 || to <= from {
		return
	}
	last := min((to-1)/cb, from/cb+int64(r.cfg.ReadAhead))
	for i := from/cb + 1; i <= last; i++ {
		if !r.startAhead(aheadReq{key, i, r.chunkLen(seg, i)}) {
			return
		}
	}
}

// segReader reads one remote segment through the chunk cache.
type segReader struct {
	r   *Reader
	ctx context.Context
	p   Partition
	seg Segment
	key string
	// seq: the read continues a stream (see Reader on admission).
	seq bool
	// cur is the last chunk read (its index, or -1 when none).
	cur     int64
	curData []byte
	// refs are the chunks read, a reference each.
	refs []*chunk
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
		if idx != s.cur {
			c, err := s.r.chunk(s.ctx, s.key, idx, s.chunkLen(idx), s.seq)
			if err != nil {
				return nil, err
			}
			s.refs = append(s.refs, c)
			s.cur, s.curData = idx, c.data
		}
		chunk := s.curData
		lo := at - idx*cb
		hi := min(int64(len(chunk)), to-idx*cb)
		out = append(out, chunk[lo:hi])
		at = idx*cb + hi
	}
	return out, nil
}

func (s *segReader) chunkLen(idx int64) int64 { return s.r.chunkLen(s.seg, idx) }

func (r *Reader) chunkLen(seg Segment, idx int64) int64 {
	cb := r.cfg.ChunkBytes
	return min(cb, seg.Size-idx*cb)
}

func chunkKey(key string, idx int64) string { return key + "#" + strconv.FormatInt(idx, 10) }

// chunk returns one chunk of an object, with a reference for the caller:
// from the recent reads, the read-ahead, the cache, a load in flight, or a
// ranged GET.
//
// A chunk read ahead, or fetched by a sequential read (seq), enters the
// cache only when seen again (admitOnceSeenLocked); others enter it.
func (r *Reader) chunk(ctx context.Context, key string, idx, length int64, seq bool) (*chunk, error) {
	ck := chunkKey(key, idx)
	counted := false
	hit := func(h bool) {
		if !counted {
			counted = true
			r.cfg.Metrics.cacheHit(h)
		}
	}
	for {
		r.mu.Lock()
		if c, ok := r.mu.recent[ck]; ok {
			c.ref() // recent's reference holds it while mu is held
			r.mu.Unlock()
			hit(true)
			return c, nil
		}
		if a, ok := r.mu.ahead[ck]; ok {
			// The caller's reference (and the cache's, when admitted),
			// taken while read-ahead's holds it; then read-ahead's moves
			// to recent.
			a.c.ref()
			admit := r.admitOnceSeenLocked(ck)
			if admit {
				a.c.ref()
			}
			r.takeAheadLocked(ck, a.c)
			r.mu.Unlock()
			hit(true)
			if admit {
				r.cache(ck, a.c)
			}
			return a.c, nil
		}
		if cr, ok := r.chunks.Get(ck); ok && cr.c.acquire() {
			r.mu.Unlock()
			hit(true)
			return cr.c, nil
		}
		if ld, ok := r.mu.loads[ck]; ok {
			r.mu.Unlock()
			hit(true)
			select {
			case <-ld.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
			}
			if ld.err != nil {
				return nil, ld.err
			}
			// The chunk is in recent or ahead now (or, if both have
			// dropped it since, is fetched again).
			continue
		}
		ld := &load{done: make(chan struct{})}
		r.mu.loads[ck] = ld
		r.mu.Unlock()
		hit(false)
		c, err := r.get(ctx, key, idx*r.cfg.ChunkBytes, length)
		ld.err = err
		admit := false
		r.mu.Lock()
		delete(r.mu.loads, ck)
		if err == nil {
			r.rememberLocked(ck, c.ref())
			admit = !seq || r.admitOnceSeenLocked(ck)
		}
		r.mu.Unlock()
		close(ld.done)
		if err != nil {
			return nil, err
		}
		if admit {
			r.cache(ck, c.ref())
		}
		return c, nil
	}
}

// cache puts a chunk in the chunk cache, with the reference given; the
// cache drops it when the chunk leaves (or never enters).
func (r *Reader) cache(ck string, c *chunk) {
	cr := &cacheRef{c: c}
	if !r.chunks.Set(ck, cr, int64(cap(c.data))) {
		cr.drop()
	}
}

// admitOnceSeenLocked reports whether a chunk read ahead or by a
// sequential read, now taken by a read, enters the cache: only when it
// was seen before and is still remembered (then it is forgotten);
// otherwise it is remembered. Requires mu.
func (r *Reader) admitOnceSeenLocked(ck string) bool {
	if _, ok := r.mu.seen[ck]; ok {
		delete(r.mu.seen, ck)
		return true
	}
	for len(r.mu.seen) >= r.seenMax && len(r.mu.seenLog) > 0 {
		delete(r.mu.seen, r.mu.seenLog[0])
		r.mu.seenLog[0] = ""
		r.mu.seenLog = r.mu.seenLog[1:]
	}
	r.mu.seen[ck] = struct{}{}
	r.mu.seenLog = append(r.mu.seenLog, ck)
	if len(r.mu.seenLog) > 2*len(r.mu.seen)+64 {
		r.mu.seenLog = compactKeyLog(r.mu.seenLog, len(r.mu.seen), func(k string) bool {
			_, ok := r.mu.seen[k]
			return ok
		})
	}
	return false
}

// takeAheadLocked moves a chunk read ahead, with read-ahead's reference,
// to the recent reads: a read has used it. Requires mu.
func (r *Reader) takeAheadLocked(ck string, c *chunk) {
	delete(r.mu.ahead, ck)
	r.mu.aheadBytes -= int64(len(c.data))
	r.rememberLocked(ck, c)
}

// rememberLocked adds a chunk, with the reference given, to the recent
// reads. Requires mu.
func (r *Reader) rememberLocked(ck string, c *chunk) {
	if _, ok := r.mu.recent[ck]; ok {
		c.release()
		return
	}
	if len(r.mu.recentLog) >= r.recentMax {
		r.mu.recent[r.mu.recentLog[0]].release()
		delete(r.mu.recent, r.mu.recentLog[0])
		r.mu.recentLog = append(r.mu.recentLog[:0], r.mu.recentLog[1:]...)
	}
	r.mu.recent[ck] = c
	r.mu.recentLog = append(r.mu.recentLog, ck)
}

// get reads exactly length bytes at off, within the call deadline, into a
// chunk with one reference.
func (r *Reader) get(ctx context.Context, key string, off, length int64) (c *chunk, err error) {
	r.getChunks(ctx, key, off, []int64{length}, func(_ int, gc *chunk, gerr error) { c, err = gc, gerr })
	return c, err
}

// getChunks reads consecutive chunks of the given lengths from off in one
// ranged GET within the call deadline, each straight into a chunk of its
// own (one io.ReadFull from the body), and hands each to got in order
// with one reference as soon as its bytes are in, or with the error that
// failed it and every one after it.
//
// The request runs on the caller's goroutine, the copy of its body (most
// of the CPU a replay costs the broker) on a cold thread, through its
// gate. The request is Go code (the SDK signs it and parses the answer's
// headers, some tens of microseconds) between waits, where the gate does
// not reach: on a niced thread the kernel may stop it there with a
// processor in hand, and a garbage collection's stop-the-world, or a hot
// goroutine wanting that processor, waits until the kernel runs it again.
// At the process's priority it runs to its next wait as any goroutine
// does.
func (r *Reader) getChunks(ctx context.Context, key string, off int64, lengths []int64, got func(i int, c *chunk, err error)) {
	var total int64
	for _, n := range lengths {
		total += n
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	// The body's reads pass the cold threads' gate, as the writes of
	// what they read do: at most GOMAXPROCS-1 of them hold a processor.
	body, err := r.cfg.Bucket.Get(objectstore.WithGate(ctx, r.cold), key, off, total)
	if err != nil {
		err = fmt.Errorf("%w: %s: %v", ErrUnavailable, key, err)
		for i := range lengths {
			got(i, nil, err)
		}
	} else {
		r.cold.Run(func() { err = r.readChunks(body, key, off, lengths, got) })
		body.Close()
	}
	r.cfg.Metrics.get(err)
}

// readChunks reads the chunks of getChunks from its GET's body, and
// returns the error that failed one, if any.
func (r *Reader) readChunks(body io.Reader, key string, off int64, lengths []int64, got func(i int, c *chunk, err error)) error {
	var err error
	at := off
	for i, n := range lengths {
		if err != nil {
			got(i, nil, err)
			continue
		}
		c := r.pool.newChunk(n)
		if _, rerr := io.ReadFull(body, c.data); rerr != nil {
			c.release()
			err = fmt.Errorf("%w: %s at %d: %v", ErrUnavailable, key, at, rerr)
			got(i, nil, err)
			continue
		}
		at += n
		got(i, c, nil)
	}
	return err
}

// getBytes reads exactly length bytes at off into a new slice.
func (r *Reader) getBytes(ctx context.Context, key string, off, length int64) ([]byte, error) {
	c, err := r.get(ctx, key, off, length)
	if err != nil {
		return nil, err
	}
	if c.pool == nil {
		return c.data, nil
	}
	defer c.release()
	return append([]byte(nil), c.data...), nil
}

// companion returns a segment's decoded companion: from the cache, the
// recent loads, a load in flight, or the store.
func (r *Reader) companion(ctx context.Context, p Partition, seg Segment) (*Companion, error) {
	key := r.cfg.Layout.CompanionKey(p, seg.BaseOffset, seg.ID)
	if c, ok := r.comps.Get(key); ok {
		return c, nil
	}
	if seg.CompanionSize <= 0 || seg.CompanionSize > maxCompanionSize {
		return nil, fmt.Errorf("%w: %s: size %d", ErrCorrupt, key, seg.CompanionSize)
	}
	r.mu.Lock()
	if c, ok := r.mu.recentComps[key]; ok {
		r.mu.Unlock()
		return c, nil
	}
	if ld, ok := r.mu.loads[key]; ok {
		r.mu.Unlock()
		select {
		case <-ld.done:
			return ld.comp, ld.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
	ld := &load{done: make(chan struct{})}
	r.mu.loads[key] = ld
	r.mu.Unlock()
	data, err := r.getBytes(ctx, key, 0, seg.CompanionSize)
	if err == nil {
		ld.comp, err = DecodeCompanion(data, &seg)
		if err != nil {
			err = fmt.Errorf("tiering: %s: %w", key, err)
		}
	}
	ld.err = err
	r.mu.Lock()
	delete(r.mu.loads, key)
	if err == nil {
		if len(r.mu.recentCompsLog) >= recentCompanions {
			delete(r.mu.recentComps, r.mu.recentCompsLog[0])
			r.mu.recentCompsLog = append(r.mu.recentCompsLog[:0], r.mu.recentCompsLog[1:]...)
		}
		r.mu.recentComps[key] = ld.comp
		r.mu.recentCompsLog = append(r.mu.recentCompsLog, key)
	}
	r.mu.Unlock()
	close(ld.done)
	if err != nil {
		return nil, err
	}
	r.comps.Set(key, ld.comp, ld.comp.memSize())
	return ld.comp, nil
}

// readAhead refills a stream's queue with the depth chunks after end in
// seg, going on into the following segments, and starts its workers. It
// never waits: the following segments are looked up (perhaps in a
// spilled manifest part) in the background, and what that finds is
// queued only if no later read of the stream has refilled the queue.
//
// With align above 1, a refill takes place only when a chunk of the
// window is missing (not read ahead, loading or read already) or chunks
// are still queued, and goes on past the window to a chunk whose index
// in its object is a multiple of align: a reader whose reads are
// smaller than a chunk moves its window a chunk every few reads, and
// refilling it then with the one chunk it moved made one GET per chunk;
// refilled to the next multiple, it gets its read-ahead align chunks at
// a time, in one GET (takeRunLocked), each run starting where the one
// before ended, at a multiple of align or an object's start.
func (r *Reader) readAhead(p Partition, m *Manifest, seg Segment, end int64, st *stream, depth, align int) {
	if depth <= 0 || st == nil {
		return
	}
	cb, al := r.cfg.ChunkBytes, int64(max(align, 1))
	key := r.cfg.Layout.SegmentKey(p, seg.BaseOffset, seg.ID)
	// at is the place in the window of the next chunk; those at depth
	// and past complete the last run to a multiple of align.
	at := 0
	var queue []aheadReq
	for i := (end-1)/cb + 1; i <= (seg.Size-1)/cb && (at < depth || i%al != 0); i, at = i+1, at+1 {
		queue = append(queue, aheadReq{key, i, r.chunkLen(seg, i)})
	}
	r.mu.Lock()
	if st.gone {
		r.mu.Unlock()
		return
	}
	refill := al == 1 || len(st.queue) > 0 || r.anyMissingLocked(queue[:min(len(queue), depth)])
	if !refill && at >= depth {
		// The window lies in seg and is there or coming: nothing to
		// queue, and a lookup of the following segments an earlier
		// refill started may still queue the rest of its run.
		r.mu.Unlock()
		return
	}
	if !refill {
		// The window goes on into the following segments: the refill
		// takes place if a chunk of it there is missing.
		queue = nil
	}
	st.gen++
	gen := st.gen
	st.queue = r.missingLocked(queue)
	r.spawnLocked(st)
	r.mu.Unlock()
	if at >= depth || seg.NextOffset >= m.End() || r.ctx.Err() != nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for from := seg.NextOffset; at < depth && from < m.End(); {
			next, ok, err := FindSegment(r.ctx, r, p, m, from)
			if err != nil || !ok {
				return
			}
			key := r.cfg.Layout.SegmentKey(p, next.BaseOffset, next.ID)
			var more []aheadReq
			first := at
			for i := int64(0); i <= (next.Size-1)/cb && (at < depth || i%al != 0); i, at = i+1, at+1 {
				more = append(more, aheadReq{key, i, r.chunkLen(next, i)})
			}
			r.mu.Lock()
			if st.gone || st.gen != gen {
				r.mu.Unlock()
				return
			}
			if !refill && r.anyMissingLocked(more[:min(len(more), depth-first)]) {
				refill = true
			}
			if refill {
				st.queue = append(st.queue, r.missingLocked(more)...)
				r.spawnLocked(st)
			}
			r.mu.Unlock()
			if !refill && at >= depth {
				return // the window is there or coming
			}
			// The stream reads the segment from its first offset, which
			// needs no companion (see ReadShared).
			from = next.NextOffset
		}
	}()
}

// anyMissingLocked reports whether a chunk of q is not read ahead,
// loading or read already. Requires mu.
func (r *Reader) anyMissingLocked(q []aheadReq) bool {
	return slices.ContainsFunc(q, func(q aheadReq) bool { return !r.haveLocked(q) })
}

// missingLocked drops from q the chunks read ahead, loading or recently
// read already, so that the chunks queued next to each other are those a
// GET worker fetches together (takeRunLocked). Requires mu.
func (r *Reader) missingLocked(q []aheadReq) []aheadReq {
	return slices.DeleteFunc(q, r.haveLocked)
}

// haveLocked reports whether q's chunk is read ahead, loading or
// recently read. Requires mu.
func (r *Reader) haveLocked(q aheadReq) bool {
	ck := chunkKey(q.key, q.idx)
	_, recent := r.mu.recent[ck]
	_, ahead := r.mu.ahead[ck]
	_, loading := r.mu.loads[ck]
	return recent || ahead || loading
}

// spawnLocked puts a stream with chunks queued in line for the GET
// workers, and starts workers while read-ahead GET slots are free.
// Requires mu.
func (r *Reader) spawnLocked(st *stream) {
	r.enqueueLocked(st)
	r.startWorkersLocked()
}

// enqueueLocked puts st at the back of the workers' line if it has
// chunks queued, room for another GET and is not in line. Requires mu.
func (r *Reader) enqueueLocked(st *stream) {
	_, per := r.gets(time.Now())
	if !st.ready && !st.gone && len(st.queue) > 0 && st.workers < per {
		st.ready = true
		r.mu.ready = append(r.mu.ready, st)
	}
}

// startWorkersLocked starts GET workers for the chunks in line that no
// running worker will take next, while slots are free. Requires mu.
func (r *Reader) startWorkersLocked() {
	all, per := r.gets(time.Now())
	if r.mu.aheadGets >= all || len(r.mu.ready) == 0 || r.ctx.Err() != nil {
		return
	}
	want := 0
	for _, st := range r.mu.ready {
		want += max(0, min(len(st.queue), per-st.workers))
	}
	for r.mu.starting < want && r.mu.aheadGets < all {
		r.mu.starting++
		r.mu.aheadGets++
		r.wg.Add(1)
		go r.aheadWorker()
	}
}

// nextAheadLocked takes the next chunk to fetch: the first chunk of the
// first stream in line, which goes to the back of the line if it has
// more and room for another GET. Requires mu.
func (r *Reader) nextAheadLocked() (*stream, aheadReq, bool) {
	all, per := r.gets(time.Now())
	// A worker past the bound (hot traffic came back) stops.
	for len(r.mu.ready) > 0 && r.ctx.Err() == nil && r.mu.aheadGets <= all {
		st := r.mu.ready[0]
		r.mu.ready[0] = nil
		r.mu.ready = r.mu.ready[1:]
		st.ready = false
		if st.gone || len(st.queue) == 0 || st.workers >= per {
			continue
		}
		q := st.queue[0]
		st.queue = st.queue[1:]
		st.workers++
		r.enqueueLocked(st)
		return st, q, true
	}
	return nil, aheadReq{}, false
}

// aheadWorker holds one read-ahead GET slot: it fetches a chunk of each
// stream in line in turn until the line is empty, or the slots taken are
// more than the GETs allowed now (see gets).
func (r *Reader) aheadWorker() {
	defer r.wg.Done()
	r.mu.Lock()
	r.mu.starting--
	for {
		st, q, ok := r.nextAheadLocked()
		if !ok {
			r.mu.aheadGets--
			r.mu.Unlock()
			return
		}
		run := r.takeRunLocked(st, q)
		r.mu.Unlock()
		fetched := r.fetchAhead(run, st)
		r.mu.Lock()
		st.workers--
		if !fetched {
			st.queue = nil // the budget is spent or the stream gone
		}
		r.enqueueLocked(st)
	}
}

// takeRunLocked returns q and the chunks queued next in st that follow it
// in the same object, taken off the queue, while their bytes stay within
// cfg.ReadAheadSpan: the chunks of one read-ahead GET. Requires mu.
func (r *Reader) takeRunLocked(st *stream, q aheadReq) []aheadReq {
	run := []aheadReq{q}
	n := q.length
	for len(st.queue) > 0 {
		next, last := st.queue[0], run[len(run)-1]
		if next.key != last.key || next.idx != last.idx+1 || n+next.length > r.cfg.ReadAheadSpan {
			break
		}
		run = append(run, next)
		n += next.length
		st.queue = st.queue[1:]
	}
	return run
}

// startAhead starts a GET of a chunk for read-ahead in the background
// unless it is read, loading or cached already. It returns false when the
// read-ahead budget or every GET slot is spent (and counts the chunk
// skipped).
func (r *Reader) startAhead(q aheadReq) bool {
	r.mu.Lock()
	if all, _ := r.gets(time.Now()); r.mu.aheadGets >= all {
		r.mu.Unlock()
		r.cfg.Metrics.readAheadSkipped()
		return false
	}
	r.mu.aheadGets++
	r.mu.Unlock()
	ld, ok := r.beginAhead(q, nil)
	if ld == nil {
		r.releaseAheadGet()
		return ok
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.endAhead([]aheadReq{q}, []*load{ld})
		r.releaseAheadGet()
	}()
	return true
}

// releaseAheadGet gives back a prefetch's GET slot, to a worker if
// streams wait for one.
func (r *Reader) releaseAheadGet() {
	r.mu.Lock()
	r.mu.aheadGets--
	r.startWorkersLocked()
	r.mu.Unlock()
}

// fetchAhead GETs a run of consecutive chunks (takeRunLocked) for a
// stream's read-ahead, in the calling worker, skipping those read,
// loading or cached already: each stretch of the run that needs fetching
// is one ranged GET. It returns false when the read-ahead budget is spent
// or the stream is gone.
func (r *Reader) fetchAhead(run []aheadReq, st *stream) bool {
	for i := 0; i < len(run); {
		ld, ok := r.beginAhead(run[i], st)
		if ld == nil {
			if !ok {
				return false
			}
			i++
			continue
		}
		lds := []*load{ld}
		j, stop := i+1, false
		for ; j < len(run); j++ {
			ld, ok := r.beginAhead(run[j], st)
			if ld == nil {
				stop = !ok
				j++ // there or coming already (or skipped)
				break
			}
			lds = append(lds, ld)
		}
		r.endAhead(run[i:i+len(lds)], lds)
		if stop {
			return false
		}
		i = j
	}
	return true
}

// beginAhead registers a read-ahead load of a chunk and charges the
// budget. It returns a nil load when there is nothing to fetch: true when
// the chunk is there or coming already, false when the budget is spent
// (counted) or the stream (if not nil) is gone.
func (r *Reader) beginAhead(q aheadReq, st *stream) (*load, bool) {
	ck := chunkKey(q.key, q.idx)
	if _, ok := r.chunks.Get(ck); ok {
		return nil, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if (st != nil && st.gone) || r.ctx.Err() != nil {
		return nil, false
	}
	_, recent := r.mu.recent[ck]
	_, ahead := r.mu.ahead[ck]
	_, loading := r.mu.loads[ck]
	if recent || ahead || loading {
		return nil, true
	}
	for r.mu.aheadBytes+q.length > r.cfg.ReadAheadBytes {
		if !r.evictStaleAheadLocked(time.Now()) {
			r.cfg.Metrics.readAheadSkipped()
			return nil, false
		}
	}
	r.mu.aheadBytes += q.length
	ld := &load{done: make(chan struct{}), ahead: true}
	r.mu.loads[ck] = ld
	return ld, true
}

// endAhead runs the read-ahead loads begun by beginAhead of consecutive
// chunks of one object: one GET, each chunk into ahead as soon as its
// bytes are in (or the budget back on failure).
func (r *Reader) endAhead(run []aheadReq, lds []*load) {
	lengths := make([]int64, len(run))
	for i, q := range run {
		lengths[i] = q.length
	}
	r.getChunks(r.ctx, run[0].key, run[0].idx*r.cfg.ChunkBytes, lengths, func(i int, c *chunk, err error) {
		q, ld := run[i], lds[i]
		ck := chunkKey(q.key, q.idx)
		ld.err = err
		r.mu.Lock()
		delete(r.mu.loads, ck)
		if err == nil {
			// The GET's reference is read-ahead's now.
			r.mu.ahead[ck] = aheadChunk{c: c, at: time.Now()}
			r.mu.aheadLog = append(r.mu.aheadLog, ck)
			if len(r.mu.aheadLog) > 2*len(r.mu.ahead)+64 {
				r.compactAheadLogLocked()
			}
		} else {
			r.mu.aheadBytes -= q.length
		}
		r.mu.Unlock()
		close(ld.done)
	})
}

// evictStaleAheadLocked drops the oldest chunk read ahead if no read took
// it within aheadMaxAge (its reader went away), and counts it. It returns
// false when there is none. Requires mu.
func (r *Reader) evictStaleAheadLocked(now time.Time) bool {
	for len(r.mu.aheadLog) > 0 {
		ck := r.mu.aheadLog[0]
		a, ok := r.mu.ahead[ck]
		if !ok {
			r.mu.aheadLog = r.mu.aheadLog[1:]
			continue
		}
		if now.Sub(a.at) < aheadMaxAge {
			return false
		}
		r.mu.aheadLog = r.mu.aheadLog[1:]
		delete(r.mu.ahead, ck)
		r.mu.aheadBytes -= int64(len(a.c.data))
		a.c.release()
		r.cfg.Metrics.readAheadEvicted()
		return true
	}
	return false
}

// compactAheadLogLocked drops the keys of chunks already taken from the
// read-ahead log. Requires mu.
func (r *Reader) compactAheadLogLocked() {
	r.mu.aheadLog = compactKeyLog(r.mu.aheadLog, len(r.mu.ahead), func(ck string) bool {
		_, ok := r.mu.ahead[ck]
		return ok
	})
}

// compactKeyLog returns the keys of log that live reports, each once, in
// the order of their first place in log; n, the count of live keys, sizes
// the result.
func compactKeyLog(log []string, n int, live func(string) bool) []string {
	kept := make(map[string]bool, n)
	out := make([]string, 0, n)
	for _, k := range log {
		if live(k) && !kept[k] {
			kept[k] = true
			out = append(out, k)
		}
	}
	return out
}
