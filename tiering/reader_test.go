package tiering

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

func newTestReader(t testing.TB, b objectstore.Bucket, chunk int64) *Reader {
	t.Helper()
	// A GET per chunk: these tests count GETs as chunks. Hot traffic or
	// not, a stream has 4 GETs.
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunk, CacheBytes: 64 << 20,
		ReadAhead: 4, ReadAheadGets: 8, IdleGets: 4, ReadAheadSpan: chunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// readRemoteAll reads every batch from offset from through r.
func readRemoteAll(t testing.TB, r *Reader, m *Manifest, from int64, maxBytes int) [][]byte {
	t.Helper()
	var out [][]byte
	for off := from; off < m.End(); {
		parts, err := r.Read(context.Background(), testPartition, m, off, maxBytes, math.MaxInt64, true)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if parts == nil {
			t.Fatalf("nothing at %d below the end %d", off, m.End())
		}
		buf := bytes.Join(parts, nil)
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("batch at %d: %v", b.BaseOffset(), err)
			}
			if b.LastOffset() >= off {
				out = append(out, append([]byte(nil), b...))
				off = b.NextOffset()
			}
			buf = rest
		}
	}
	return out
}

func TestReaderReturnsTheUploadedBatchesByteForByte(t *testing.T) {
	log, batches := testLog(t, 3000, 60)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, fb, 1024) // chunks smaller than a segment and unaligned to batches
	for _, maxBytes := range []int{1, 700, 5000} {
		got := readRemoteAll(t, r, m, 0, maxBytes)
		var want [][]byte
		for _, b := range batches {
			if recordbatch.Batch(b).NextOffset() <= m.End() {
				want = append(want, b)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("maxBytes %d: %d batches, want %d", maxBytes, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("maxBytes %d: batch %d differs", maxBytes, i)
			}
		}
	}
	// Everything is cached now: reading again costs no GET.
	r.Wait()
	before := fb.getCount()
	readRemoteAll(t, r, m, 0, 5000)
	if n := fb.getCount() - before; n != 0 {
		t.Fatalf("a warm replay made %d GETs", n)
	}
}

func TestReaderStopsAtMaxOffsetAndMidSegmentOffsets(t *testing.T) {
	log, batches := testLog(t, 3000, 30)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, b, 4<<20)
	// An offset inside a batch starts at that batch.
	target := recordbatch.Batch(batches[4])
	parts, err := r.Read(context.Background(), testPartition, m, target.LastOffset(), 1<<20, math.MaxInt64, true)
	if err != nil || !bytes.HasPrefix(bytes.Join(parts, nil), batches[4]) {
		t.Fatalf("read inside a batch: %v", err)
	}
	// maxOffset excludes the batch reaching it.
	parts, err = r.Read(context.Background(), testPartition, m, target.BaseOffset(), 1<<20, target.NextOffset(), true)
	if err != nil || !bytes.Equal(bytes.Join(parts, nil), batches[4]) {
		t.Fatalf("bounded read returned %d bytes (%v)", len(bytes.Join(parts, nil)), err)
	}
	// Past the end: nothing (the local log has it).
	if parts, err := r.Read(context.Background(), testPartition, m, m.End(), 1<<20, math.MaxInt64, true); parts != nil || err != nil {
		t.Fatalf("past the end: %v %v", parts, err)
	}
	mm := m.Clone()
	mm.LogStartOffset = m.Segments[1].BaseOffset
	if _, err := r.Read(context.Background(), testPartition, mm, 0, 1<<20, math.MaxInt64, true); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("below the log start: %v", err)
	}
}

func TestReaderReportsAnUnavailableStore(t *testing.T) {
	log, _ := testLog(t, 3000, 30)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	r := newTestReader(t, fb, 4<<20)
	fb.add(&fault{op: "get", n: 1})
	if _, err := r.Read(context.Background(), testPartition, ms.Current(), 0, 1<<20, math.MaxInt64, true); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store down: %v", err)
	}
	// And recovers when it is back.
	if parts, err := r.Read(context.Background(), testPartition, ms.Current(), 0, 1<<20, math.MaxInt64, true); err != nil || parts == nil {
		t.Fatalf("store back: %v", err)
	}
}

// replayFrom reads every batch from offset from in reads of maxBytes, as
// a consumer does.
func replayFrom(t *testing.T, r *Reader, m *Manifest, from int64, reads, maxBytes int) int64 {
	t.Helper()
	off := from
	for range reads {
		if off >= m.End() {
			break
		}
		parts, err := r.Read(context.Background(), testPartition, m, off, maxBytes, math.MaxInt64, true)
		if err != nil || parts == nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		off = lastWholeBatchEnd(parts, off)
	}
	return off
}

func aheadHas(r *Reader, key string, idx int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.mu.ahead[chunkKey(key, idx)]
	return ok
}

func TestReaderReadsAheadFromTheFirstReadAndThenTheWholeWindow(t *testing.T) {
	log, _ := testLog(t, 64<<10, 400)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	r := newTestReader(t, fb, 4096)
	seg := m.Segments[0]
	key := r.cfg.Layout.SegmentKey(testPartition, seg.BaseOffset, seg.ID)
	// A first read inside chunk 0 fetches chunk 1 ahead, no more.
	off := replayFrom(t, r, m, 0, 1, 600)
	r.Wait()
	if !aheadHas(r, key, 1) || aheadHas(r, key, 2) {
		t.Fatalf("after the first read: chunk 1 ahead %v, chunk 2 %v; want only chunk 1", aheadHas(r, key, 1), aheadHas(r, key, 2))
	}
	// Its continuation makes it sequential: the whole window (4 chunks).
	replayFrom(t, r, m, off, 1, 600)
	r.Wait()
	for i := int64(1); i <= 4; i++ {
		if !aheadHas(r, key, i) {
			t.Fatalf("chunk %d not read ahead", i)
		}
	}
	// A chunk read ahead enters the cache only once a read takes it.
	if _, ok := r.chunks.Get(chunkKey(key, 3)); ok {
		t.Fatal("a chunk read ahead is in the cache before any read used it")
	}
}

func TestReaderReadsAheadAcrossSegmentsAndFetchesEachObjectOnce(t *testing.T) {
	log, _ := testLog(t, 6000, 600) // many segments, each smaller than a chunk
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	if len(m.Segments) < 8 {
		t.Fatalf("%d segments", len(m.Segments))
	}
	r := newTestReader(t, fb, 8192)
	// Two reads in segment 0: the window of 4 chunks covers segments 1-4
	// (one chunk each), not only the next one.
	replayFrom(t, r, m, 0, 2, 1000)
	r.Wait()
	for i, seg := range m.Segments[1:5] {
		if !aheadHas(r, r.cfg.Layout.SegmentKey(testPartition, seg.BaseOffset, seg.ID), 0) {
			t.Fatalf("segment %d not read ahead", i+1)
		}
	}
	// A whole replay makes one GET per chunk, none twice, however
	// read-ahead and reads race, and none of a companion: each segment
	// is read from its first offset, which needs no index.
	fb2 := &faultyBucket{Bucket: fb.Bucket}
	r2 := newTestReader(t, fb2, 8192)
	if end := replayFrom(t, r2, m, 0, 1<<20, 1000); end != m.End() {
		t.Fatalf("replay ended at %d, want %d", end, m.End())
	}
	r2.Wait()
	want := 0
	for _, seg := range m.Segments {
		want += int((seg.Size + 8191) / 8192)
	}
	if n := fb2.getCount(); n != want {
		t.Fatalf("a replay made %d GETs, want %d (one per chunk)", n, want)
	}
}

func TestReaderReadAheadStaysWithinItsBoundAndCountsWhatItSkips(t *testing.T) {
	log, _ := testLog(t, 64<<10, 400)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	reg := prometheus.NewRegistry()
	r, err := NewReader(ReaderConfig{Bucket: fb, Layout: Layout{Prefix: "archive"}, ChunkBytes: 1024, CacheBytes: 64 << 20,
		ReadAhead: 8, ReadAheadBytes: 3 * 1024, ReadAheadSpan: 1024, Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	replayFrom(t, r, m, 0, 2, 300)
	r.Wait()
	r.mu.Lock()
	held, n := r.mu.aheadBytes, len(r.mu.ahead)
	r.mu.Unlock()
	if held > 3*1024 || n != 3 {
		t.Fatalf("read-ahead holds %d bytes in %d chunks; want 3 chunks within 3072 bytes", held, n)
	}
	if got := counterValue(t, reg, "shale_remote_readahead_skipped_total"); got < 1 {
		t.Fatalf("skipped read-ahead counted %v times", got)
	}
	// Reads take what was read ahead and free the budget for more.
	replayFrom(t, r, m, 0, 20, 300)
	r.Wait()
	r.mu.Lock()
	held = r.mu.aheadBytes
	r.mu.Unlock()
	if held > 3*1024 {
		t.Fatalf("read-ahead holds %d bytes", held)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// gatedBucket holds GETs of segment objects that block says to hold until
// release gives them a token, and counts the GETs in flight.
type gatedBucket struct {
	objectstore.Bucket
	block   func(key string, off int64) bool
	release chan struct{}

	mu                  sync.Mutex
	inFlight, maxFlight int
	started             int
	keys                []string // the keys of the GETs held, in order
	// heldNow and maxHeld count the GETs waiting for a token (read-ahead
	// past the unheld chunks), apart from the reads' own quick ones.
	heldNow, maxHeld int
}

func (g *gatedBucket) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if !strings.HasSuffix(key, ".log") {
		return g.Bucket.Get(ctx, key, off, n)
	}
	g.mu.Lock()
	g.started++
	g.inFlight++
	g.maxFlight = max(g.maxFlight, g.inFlight)
	hold := g.block(key, off)
	if hold {
		g.keys = append(g.keys, key)
		g.heldNow++
		g.maxHeld = max(g.maxHeld, g.heldNow)
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		if hold {
			g.heldNow--
		}
		g.mu.Unlock()
	}()
	if hold {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Bucket.Get(ctx, key, off, n)
}

// heldCount is how many GETs were held for a token, and the most held at
// once.
func (g *gatedBucket) heldCount() (held, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.keys), g.maxHeld
}

func (g *gatedBucket) counts() (inFlight, maxFlight, started int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.maxFlight, g.started
}

// gatedArchive archives a log of batches in segments of 64 KiB into a
// gatedBucket, and returns the bucket and the manifest.
func gatedArchive(t *testing.T, batches int) (*gatedBucket, *Manifest) {
	t.Helper()
	log, _ := testLog(t, 64<<10, batches)
	g := &gatedBucket{Bucket: objectstore.NewMem(), release: make(chan struct{})}
	a, ms := newTestArchiver(t, g, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	return g, ms.Current()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// A sequential reader's read-ahead works as ReadAhead GET workers do: as
// one GET ends the next chunk starts, with no read in between. It started
// a window of GETs at each read and nothing until the next one, so a
// replay left the store idle while the last GET of each window ended and
// the consumer came back.
func TestReaderReadAheadStartsTheNextGETAsEachEnds(t *testing.T) {
	g, m := gatedArchive(t, 400)
	r := newTestReader(t, g, 4096)
	t.Cleanup(func() { close(g.release) }) // before r.Close, which waits
	first := r.cfg.Layout.SegmentKey(testPartition, m.Segments[0].BaseOffset, m.Segments[0].ID)
	// Chunks 0 and 1 of the first segment come at once; the rest wait.
	g.block = func(key string, off int64) bool { return key != first || off >= 2*4096 }
	off := replayFrom(t, r, m, 0, 1, 600)
	r.Wait()
	// The second read makes the stream sequential: chunks 2.. are
	// queued, four fetched at a time.
	replayFrom(t, r, m, off, 1, 600)
	waitFor(t, "4 GETs in flight", func() bool { n, _, _ := g.counts(); return n == 4 })
	_, _, started := g.counts()
	for i := range 3 {
		g.release <- struct{}{}
		waitFor(t, "the next GET", func() bool { n, _, s := g.counts(); return n == 4 && s == started+i+1 })
	}
	if _, peak, _ := g.counts(); peak > 4 {
		t.Fatalf("%d GETs in flight; ReadAhead is 4", peak)
	}
}

// A sequential reader whose reads span several chunks has the chunks of
// its next two reads fetched ahead, not only twice ReadAhead chunks: with
// one read's worth ahead, the GETs stopped while an answer was written
// and the next read waited for all of its own.
func TestReaderReadAheadCoversTheNextTwoReadsOfTheirSize(t *testing.T) {
	log, _ := testLog(t, 64<<10, 400)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	const chunk = 4096
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunk, CacheBytes: 64 << 20,
		ReadAhead: 1, ReadAheadGets: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	// Two reads of four chunks' bytes: the second continues the first.
	replayFrom(t, r, m, 0, 2, 4*chunk)
	r.Wait()
	r.mu.Lock()
	ahead := len(r.mu.ahead)
	r.mu.Unlock()
	if ahead < 8 {
		t.Fatalf("%d chunks read ahead of a reader reading four at a time, want the next two reads' 8 or more", ahead)
	}
}

// A read that spans several chunks of a segment nothing has read fetches
// them together, not one after the other as its walk reaches each.
func TestReaderFirstReadFetchesItsChunksTogether(t *testing.T) {
	g, m := gatedArchive(t, 400)
	r := newTestReader(t, g, 4096)
	g.block = func(string, int64) bool { return true }
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(g.release) }) })
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(context.Background(), testPartition, m, 0, 3*4096, math.MaxInt64, true)
		done <- err
	}()
	waitFor(t, "the read's 3 chunks in flight together", func() bool { n, _, _ := g.counts(); return n == 3 })
	once.Do(func() { close(g.release) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Read-ahead GETs are a budget of the reader, shared by its sequential
// readers in turn, not a number per reader: six replays at once keep
// ReadAheadGets GETs in flight, not six times ReadAhead, and each gets its
// turn as GETs end. Before, every stream ran its own ReadAhead workers.
func TestReaderReadAheadGETsAreSharedByAllReaders(t *testing.T) {
	g, m := gatedArchive(t, 1000)
	const streams, gets = 6, 3
	if len(m.Segments) < streams {
		t.Fatalf("%d segments", len(m.Segments))
	}
	r, err := NewReader(ReaderConfig{Bucket: g, Layout: Layout{Prefix: "archive"}, ChunkBytes: 4096, CacheBytes: 64 << 20,
		ReadAhead: 4, ReadAheadGets: gets, IdleGets: gets, ReadAheadSpan: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	open := func() { once.Do(func() { close(g.release) }) }
	t.Cleanup(func() { open(); r.Close() })
	// Chunks 0 and 1 of every segment come at once (the reads use
	// them); every read-ahead GET past them waits for a token.
	g.block = func(_ string, off int64) bool { return off >= 2*4096 }
	keys := map[string]int{}
	for i, seg := range m.Segments[:streams] {
		keys[r.cfg.Layout.SegmentKey(testPartition, seg.BaseOffset, seg.ID)] = i
		// Two reads in chunk 0 make the stream sequential: it queues
		// its whole window.
		replayFrom(t, r, m, seg.BaseOffset, 2, 600)
	}
	waitFor(t, "the shared GETs in flight", func() bool { held, _ := g.heldCount(); return held == gets })
	held, _ := g.heldCount()
	// As each GET ends its worker goes to the next stream in line, a
	// chunk each: every stream gets GETs while the budget holds. Held
	// GETs are counted, not all started: the unheld first chunks of the
	// segments the read-ahead moves on to pass at once, sooner or later.
	for i := range 2 * streams {
		g.release <- struct{}{}
		waitFor(t, "the next GET", func() bool {
			n, _ := g.heldCount()
			g.mu.Lock()
			defer g.mu.Unlock()
			return n == held+i+1 && g.heldNow == gets
		})
	}
	// The reads' own GETs (chunks 0 and 1) are not in the budget; the
	// held ones, all read-ahead, are.
	if _, peak := g.heldCount(); peak > gets {
		t.Fatalf("%d read-ahead GETs in flight at once; ReadAheadGets is %d", peak, gets)
	}
	g.mu.Lock()
	served := map[int]bool{}
	for _, k := range g.keys {
		served[keys[k]] = true
	}
	g.mu.Unlock()
	if len(served) != streams {
		t.Fatalf("read-ahead GETs went to %d of %d streams: %v", len(served), streams, served)
	}
}

// TestReaderHoldsNoMoreThanItsCacheBytesDuringAReplay replays a log twice
// the size of the reader's budget and checks, after each read (its
// read-ahead ended, the caches' sets applied, a collection run), that the
// live heap grew by no more than CacheBytes since the reader was made: the
// chunk cache, recent and read-ahead chunks, loads and companions together.
func TestReaderHoldsNoMoreThanItsCacheBytesDuringAReplay(t *testing.T) {
	const cacheBytes = 4 << 20
	log, _ := testLog(t, 1<<20, 20000)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	var total int64
	for _, seg := range m.Segments {
		total += seg.Size
	}
	if total < 2*cacheBytes {
		t.Fatalf("%d bytes uploaded, want more than twice the cache", total)
	}
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: 64 << 10, CacheBytes: cacheBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	live := func() int64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	base := live()
	var peak int64
	off := m.Start()
	for reads := 0; off < m.End(); reads++ {
		parts, err := r.Read(context.Background(), testPartition, m, off, 256<<10, math.MaxInt64, true)
		if err != nil || parts == nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		off = lastWholeBatchEnd(parts, off)
		if reads%8 == 0 {
			r.Wait()
			peak = max(peak, live()-base)
		}
	}
	r.Wait()
	peak = max(peak, live()-base)
	t.Logf("replayed %d MiB; the reader held at most %d KiB (budget %d KiB)", total>>20, peak>>10, cacheBytes>>10)
	if peak > cacheBytes {
		t.Fatalf("the reader held %d bytes during a replay, above its CacheBytes %d", peak, cacheBytes)
	}
}

// The read-ahead's defaults keep its GET workers below GOMAXPROCS (one
// on a single processor): a processor is left to hot traffic. With 8
// workers on 2 processors, a produce at 10 MB/s beside a cold replay
// waited 13 to 39 ms at the median (runs at load 14 and 24), against
// about 1 ms alone, for its reader to be scheduled behind workers reading
// bodies MinIO sent faster than they were read; with 2, 4.6 ms, the
// replay at 370 MB/s against 399; with 1 (GETs of up to 16 MiB), the
// produce's own time in the broker lower still, and the replay as fast.
func TestReaderReadAheadDefaultsStayWithinTheProcessors(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tc := range []struct{ procs, ahead, gets int }{
		{1, 1, 1}, {2, 2, 1}, {3, 3, 2}, {4, 4, 3}, {8, 4, 7}, {64, 4, 8},
	} {
		runtime.GOMAXPROCS(tc.procs)
		var c ReaderConfig
		c.ensureDefaults()
		if c.ReadAhead != tc.ahead || c.ReadAheadGets != tc.gets {
			t.Errorf("GOMAXPROCS %d: ReadAhead %d, ReadAheadGets %d; want %d, %d", tc.procs, c.ReadAhead, c.ReadAheadGets, tc.ahead, tc.gets)
		}
		// Without hot traffic, twice ReadAhead.
		if c.IdleGets != 2*tc.ahead {
			t.Errorf("GOMAXPROCS %d: IdleGets %d; want %d", tc.procs, c.IdleGets, 2*tc.ahead)
		}
		// Set explicitly, they are kept.
		c = ReaderConfig{ReadAhead: 4, ReadAheadGets: 8}
		c.ensureDefaults()
		if c.ReadAhead != 4 || c.ReadAheadGets != 8 {
			t.Errorf("GOMAXPROCS %d: explicit 4 and 8 became %d and %d", tc.procs, c.ReadAhead, c.ReadAheadGets)
		}
	}
}

// cachedChunks counts the chunks of m's segments in r's chunk cache.
func cachedChunks(r *Reader, m *Manifest) (cached, total int) {
	cb := r.cfg.ChunkBytes
	for _, seg := range m.Segments {
		key := r.cfg.Layout.SegmentKey(testPartition, seg.BaseOffset, seg.ID)
		for i := int64(0); i <= (seg.Size-1)/cb; i++ {
			total++
			if _, ok := r.chunks.Get(chunkKey(key, i)); ok {
				cached++
			}
		}
	}
	return cached, total
}

// A replay's chunks stay out of the cache the first time (its buffers go
// back to the pool instead of filling the cache with fresh memory),
// whether read ahead or, by reads larger than the read-ahead window,
// fetched by the reads themselves; a second replay of the range fetches
// them again and admits them; a third reads them from the cache.
func TestReaderAdmitsAReplaysChunksOnlyWhenTheyAreReadAgain(t *testing.T) {
	log, _ := testLog(t, 64<<10, 1200)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	for _, tc := range []struct {
		name                string
		ahead, gets, readSz int
	}{
		{"reads within a chunk", 4, 8, 3000},
		{"reads of four chunks, one GET ahead", 1, 1, 4 * 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(ReaderConfig{Bucket: fb, Layout: Layout{Prefix: "archive"}, ChunkBytes: 4096, CacheBytes: 64 << 20,
				ReadAhead: tc.ahead, ReadAheadGets: tc.gets, ReadAheadSpan: 4096})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			replay := func() (gets, cached, total int) {
				t.Helper()
				before := fb.getCount()
				if end := replayFrom(t, r, m, 0, 1<<20, tc.readSz); end != m.End() {
					t.Fatalf("replay ended at %d, want %d", end, m.End())
				}
				r.Wait()
				cached, total = cachedChunks(r, m)
				return fb.getCount() - before, cached, total
			}
			gets1, cached1, total := replay()
			t.Logf("%d chunks in %d segments; first replay: %d GETs, %d chunks cached", total, len(m.Segments), gets1, cached1)
			if total < 100 {
				t.Fatalf("only %d chunks", total)
			}
			// The chunks of a stream's first read are cached; those read
			// ahead or by the reads that continue it are not.
			if cached1 > total/4 {
				t.Fatalf("the first replay left %d of %d chunks in the cache", cached1, total)
			}
			gets2, cached2, _ := replay()
			t.Logf("second replay: %d GETs, %d chunks cached", gets2, cached2)
			if gets2 < (total-cached1)*3/4 {
				t.Fatalf("the second replay made %d GETs; %d chunks were not cached", gets2, total-cached1)
			}
			if cached2 < total*9/10 {
				t.Fatalf("after a second replay %d of %d chunks are cached", cached2, total)
			}
			gets3, _, _ := replay()
			if gets3 > total/10 {
				t.Fatalf("the third replay made %d GETs for %d chunks, most cached", gets3, total)
			}
		})
	}
}

// TestAReplayReusesChunkBuffersOnlyOnceNoReadHoldsThem replays a log many
// times the reader's cache with one reader that keeps what it read across
// its next reads, and a second reader trailing it, checking every batch
// byte for byte when it releases it. A replay's chunks stay out of the
// cache, so their buffers go back to the pool as reads release them and
// the replay's next GETs take them again: a buffer reused while a read
// still held it would show (poisoned on release) in the bytes checked.
// Run with -race.
func TestAReplayReusesChunkBuffersOnlyOnceNoReadHoldsThem(t *testing.T) {
	log, batches := testLog(t, 96<<10, 8000)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	want := map[int64][]byte{}
	for _, b := range batches {
		want[recordbatch.Batch(b).BaseOffset()] = b
	}
	const chunkBytes = 16 << 10
	r, err := NewReader(ReaderConfig{Bucket: b, Layout: Layout{Prefix: "archive"}, ChunkBytes: chunkBytes, CacheBytes: 4 << 20,
		ReadAhead: 4, ReadAheadGets: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.pool.poison = true
	check := func(d Data, from int64) {
		buf := bytes.Join(d.Bufs, nil)
		for len(buf) > 0 {
			bt, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch
			}
			if w, ok := want[bt.BaseOffset()]; !ok || !bytes.Equal(bt, w) {
				t.Errorf("read from %d: the batch at %d differs from the one uploaded", from, bt.BaseOffset())
				return
			}
			buf = rest
		}
	}
	replay := func(maxBytes, keep int) {
		type held struct {
			d    Data
			from int64
		}
		var hold []held
		for off := m.Start(); off < m.End(); {
			d, err := r.ReadShared(context.Background(), testPartition, m, off, maxBytes, math.MaxInt64, true)
			if err != nil || d.Bufs == nil {
				t.Errorf("read at %d: %v", off, err)
				return
			}
			next := lastWholeBatchEnd(d.Bufs, off)
			if next <= off {
				t.Errorf("no whole batch at %d", off)
				return
			}
			hold = append(hold, held{d, off})
			if len(hold) > keep {
				check(hold[0].d, hold[0].from)
				hold[0].d.Release()
				hold = hold[1:]
			}
			off = next
		}
		for _, h := range hold {
			check(h.d, h.from)
			h.d.Release()
		}
	}
	// One replay alone: its buffers cycle through the pool, so it makes
	// about as many as its read-ahead, recent reads, held reads and the
	// free pool hold at once, not one per chunk.
	replay(40<<10, 3)
	r.Wait()
	_, total := cachedChunks(r, m)
	made, reused, _ := r.pool.counts()
	t.Logf("%d chunks; one replay: pool buffers made %d, reused %d", total, made, reused)
	if made > int64(total)/3 || reused == 0 {
		t.Fatalf("one replay of %d chunks made %d buffers and reused %d", total, made, reused)
	}
	// Then two at once, the second admitting to the cache what it reads
	// ahead again, and the cache evicting.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); replay(40<<10, 3) }()
	go func() { defer wg.Done(); replay(9<<10, 1) }()
	wg.Wait()
	r.Wait()
	made2, reused2, _ := r.pool.counts()
	t.Logf("two replays: pool buffers made %d, reused %d", made2-made, reused2-reused)
}

// A read continuing a stream starts where the stream's last read left
// off, and one at a segment's first offset at its first byte: neither
// needs the segment's offset index, so a replay in reads of any size
// (whole batches, a batch cut at maxBytes, a first batch cut without
// minOneBatch) reads no companion object, and returns the same batches.
func TestReaderStreamReadsNeedNoCompanion(t *testing.T) {
	log, batches := testLog(t, 3000, 60)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	uploadAll(t, a, 0, log.LogEndOffset())
	m := ms.Current()
	if len(m.Segments) < 3 {
		t.Fatalf("%d segments", len(m.Segments))
	}
	// Every GET of a companion fails from now on.
	fb.add(&fault{op: "get", match: ".indexes", n: 1 << 30})
	r := newTestReader(t, fb, 1024)
	var want [][]byte
	for _, b := range batches {
		if recordbatch.Batch(b).NextOffset() <= m.End() {
			want = append(want, b)
		}
	}
	for _, maxBytes := range []int{1, 700, 5000} {
		got := readRemoteAll(t, r, m, 0, maxBytes)
		if len(got) != len(want) {
			t.Fatalf("maxBytes %d: %d batches, want %d", maxBytes, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("maxBytes %d: batch %d differs", maxBytes, i)
			}
		}
	}
	// A read cut inside its first batch (no minOneBatch) leaves the
	// stream at that batch: the read at the same offset returns it.
	seg := m.Segments[1]
	parts, err := r.Read(context.Background(), testPartition, m, seg.BaseOffset, 700, math.MaxInt64, true)
	if err != nil || parts == nil {
		t.Fatalf("read at %d: %v", seg.BaseOffset, err)
	}
	off := lastWholeBatchEnd(parts, seg.BaseOffset)
	if parts, err := r.Read(context.Background(), testPartition, m, off, 10, math.MaxInt64, false); err != nil || len(bytes.Join(parts, nil)) != 10 {
		t.Fatalf("cut read at %d: %d bytes, %v", off, len(bytes.Join(parts, nil)), err)
	}
	parts, err = r.Read(context.Background(), testPartition, m, off, 1, math.MaxInt64, true)
	if err != nil {
		t.Fatalf("read at %d: %v", off, err)
	}
	var at []byte
	for _, b := range want {
		if recordbatch.Batch(b).BaseOffset() == off {
			at = b
		}
	}
	if at == nil || !bytes.Equal(bytes.Join(parts, nil), at) {
		t.Fatalf("read at %d after a cut read: not the batch there", off)
	}
	// A read in the middle of a segment that no stream left there looks
	// its place up in the index, whose GET fails.
	r2 := newTestReader(t, fb, 1024)
	if _, err := r2.Read(context.Background(), testPartition, m, off, 5000, math.MaxInt64, true); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a random read inside a segment with its index unreadable: %v, want ErrUnavailable", err)
	}
}

// While no hot traffic is seen, a replay's read-ahead takes IdleGets GETs
// at once; once a produce is seen (NoteHot), the workers past
// ReadAheadGets stop as their GET ends, and no more start until the
// traffic has been quiet for HotQuiet.
func TestReaderReadAheadTakesIdleGETsOnlyWithoutHotTraffic(t *testing.T) {
	g, m := gatedArchive(t, 1000)
	const idle = 3
	r, err := NewReader(ReaderConfig{Bucket: g, Layout: Layout{Prefix: "archive"}, ChunkBytes: 4096, CacheBytes: 64 << 20,
		ReadAhead: 1, ReadAheadGets: 1, IdleGets: idle, ReadAheadSpan: 4096, HotQuiet: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	open := func() { once.Do(func() { close(g.release) }) }
	t.Cleanup(func() { open(); r.Close() })
	// Chunks 0 and 1 come at once (the reads use them); read-ahead GETs
	// past them wait for a token.
	g.block = func(_ string, off int64) bool { return off >= 2*4096 }
	replayFrom(t, r, m, 0, 2, 600)
	waitFor(t, "IdleGets GETs in flight", func() bool { held, _ := g.heldCount(); return held == idle })
	// Hot traffic: as the GETs end, the workers past ReadAheadGets stop
	// and start no other.
	r.NoteHot(time.Now())
	for range idle - 1 {
		g.release <- struct{}{}
	}
	waitFor(t, "one GET in flight", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.heldNow == 1 })
	time.Sleep(20 * time.Millisecond)
	if held, _ := g.heldCount(); held != idle {
		t.Fatalf("%d read-ahead GETs started, want no more than the %d in flight when hot traffic came", held, idle)
	}
	// The one left goes on to the next chunk as its GET ends.
	g.release <- struct{}{}
	waitFor(t, "the next GET", func() bool {
		held, _ := g.heldCount()
		g.mu.Lock()
		defer g.mu.Unlock()
		return held == idle+1 && g.heldNow == 1
	})
}
