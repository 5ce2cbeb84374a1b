package tiering

import (
	"context"
	"io"
	"math"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shale-log/shale/objectstore"
)

// threadNice returns the calling thread's id and niceness.
func threadNice(t testing.TB) (int, int) {
	tid := unix.Gettid()
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		t.Error(err)
	}
	return tid, 20 - raw
}

func TestColdThreadsRunWorkOnNicedThreadsOfTheirOwn(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid, nice := threadNice(t)
	p := NewColdThreads(5, 2)
	t.Cleanup(p.Close)
	for range 2 {
		var coldTid, coldNice int
		p.Run(func() { coldTid, coldNice = threadNice(t) })
		if coldTid == tid || coldNice != min(nice+5, 19) {
			t.Fatalf("work ran on thread %d niced %d; the caller's is %d niced %d (want another thread, niced 5 more)", coldTid, coldNice, tid, nice)
		}
	}
	// Disabled, work runs where it is asked.
	var inTid, inNice int
	NewColdThreads(0, 2).Run(func() { inTid, inNice = threadNice(t) })
	if inTid != tid || inNice != nice {
		t.Fatalf("with nice 0, work ran on thread %d niced %d; the caller's is %d niced %d", inTid, inNice, tid, nice)
	}
}

// niceBucket records the niceness of the threads its GETs are made on,
// and of those their bodies are read on.
type niceBucket struct {
	objectstore.Bucket
	t     testing.TB
	mu    sync.Mutex
	nices map[int]int // of Gets
	reads map[int]int // of their bodies' reads
}

func (b *niceBucket) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	b.record(b.nices)
	body, err := b.Bucket.Get(ctx, key, off, length)
	if err != nil {
		return nil, err
	}
	return niceBody{body, b}, nil
}

func (b *niceBucket) record(m map[int]int) {
	_, nice := threadNice(b.t)
	b.mu.Lock()
	m[nice]++
	b.mu.Unlock()
}

type niceBody struct {
	io.ReadCloser
	b *niceBucket
}

func (n niceBody) Read(p []byte) (int, error) {
	n.b.record(n.b.reads)
	return n.ReadCloser.Read(p)
}

// A replay's GET bodies are read on the reader's cold threads, niced by
// ColdNice; the requests themselves are made at the process's niceness.
func TestReaderGETBodiesAreReadOnItsColdThreads(t *testing.T) {
	log, _ := testLog(t, 64<<10, 400)
	_, nice := threadNice(t)
	for _, tc := range []struct {
		coldNice, want int
	}{{0, min(nice+10, 19)}, {3, min(nice+3, 19)}, {-1, nice}} {
		nb := &niceBucket{Bucket: objectstore.NewMem(), t: t, nices: map[int]int{}, reads: map[int]int{}}
		a, ms := newTestArchiver(t, nb, log)
		uploadAll(t, a, 0, log.LogEndOffset())
		m := ms.Current()
		r, err := NewReader(ReaderConfig{Bucket: nb, Layout: Layout{Prefix: "archive"}, ChunkBytes: 4096, CacheBytes: 64 << 20, ColdNice: tc.coldNice})
		if err != nil {
			t.Fatal(err)
		}
		nb.mu.Lock()
		clear(nb.nices) // the archiver's
		clear(nb.reads)
		nb.mu.Unlock()
		// A replay: companions, chunks read and read ahead.
		for off := int64(0); off < m.End(); {
			parts, err := r.Read(context.Background(), testPartition, m, off, 20000, math.MaxInt64, true)
			if err != nil || parts == nil {
				t.Fatalf("read at %d: %v", off, err)
			}
			off = lastWholeBatchEnd(parts, off)
		}
		r.Close()
		nb.mu.Lock()
		if len(nb.reads) != 1 || nb.reads[tc.want] == 0 {
			t.Errorf("ColdNice %d: GET bodies read by thread niceness %v, want all at %d", tc.coldNice, nb.reads, tc.want)
		}
		if len(nb.nices) != 1 || nb.nices[nice] == 0 {
			t.Errorf("ColdNice %d: GETs made by thread niceness %v, want all at the process's %d", tc.coldNice, nb.nices, nice)
		}
		nb.mu.Unlock()
	}
}
