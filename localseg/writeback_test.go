package localseg

import (
	"os"
	"sync"
	"testing"

	"github.com/shale-log/shale/localseg/vfs"
)

// writeBackFS records, per segment file, the ranges handed to background
// write-back and, at each fsync, how many bytes of the file had not been:
// what that fsync had to write itself.
type writeBackFS struct {
	vfs.FS
	mu     sync.Mutex
	ranges map[string][][2]int64 // WriteBehind calls: from, to
	synced map[string][]int64    // per fsync: file size minus the end handed to write-back
}

func newWriteBackFS() *writeBackFS {
	return &writeBackFS{FS: vfs.OSFS{}, ranges: map[string][][2]int64{}, synced: map[string][]int64{}}
}

func (g *writeBackFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return openSegment(g.FS, name, flag, perm, func(f vfs.File) vfs.File { return &writeBackFile{File: f, g: g, name: name} })
}

type writeBackFile struct {
	vfs.File
	g    *writeBackFS
	name string
}

func (f *writeBackFile) WriteBehind(off, n int64) error {
	f.g.mu.Lock()
	f.g.ranges[f.name] = append(f.g.ranges[f.name], [2]int64{off, off + n})
	f.g.mu.Unlock()
	return vfs.WriteBehind(f.File, off, n)
}

func (f *writeBackFile) Sync() error {
	size, err := f.Size()
	if err != nil {
		return err
	}
	f.g.mu.Lock()
	var end int64
	if r := f.g.ranges[f.name]; len(r) > 0 {
		end = r[len(r)-1][1]
	}
	f.g.synced[f.name] = append(f.g.synced[f.name], size-end)
	f.g.mu.Unlock()
	return f.File.Sync()
}

// A log that takes appends nobody waits to be durable (acks=1) hands them
// to the disk's write-back as it goes, so that the next fsync (an acks=all
// producer's, flush.ms) writes at most about writeBehindBytes itself
// instead of the whole backlog. Before, nothing was written back until the
// kernel's dirty thresholds: the fsync here had 48 MiB to write.
func TestWriteBackBoundsWhatAnFsyncWrites(t *testing.T) {
	fs := newWriteBackFS()
	l, err := Open(t.TempDir(), Config{SegmentBytes: 1 << 30}, Options{FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := batch(64, 1000, 0)
	for l.Size() < 48<<20 {
		if _, err := l.AppendAsLeader(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	l.writeBacks.Wait() // the last write-back started has been handed over
	res, err := l.AppendAsLeader(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitDurable(l, res.LastOffset+1); err != nil {
		t.Fatal(err)
	}
	name := l.active().path(".log")
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ranges, synced := fs.ranges[name], fs.synced[name]
	if len(synced) != 1 {
		t.Fatalf("%d fsyncs of the segment, want 1", len(synced))
	}
	if bound := writeBehindBytes + writeBehindAlign + int64(2*len(b)); synced[0] > bound {
		t.Fatalf("the fsync had %d bytes of a %d-byte segment to write itself, want at most %d (write-back ranges: %v)", synced[0], l.Size(), bound, ranges)
	}
	// The ranges follow each other from the start of the file, each at
	// least writeBehindBytes long, and end on a multiple of
	// writeBehindAlign: never in the page (or large folio) an append
	// writes into next.
	var at int64
	for _, r := range ranges {
		if r[0] != at || r[1]-r[0] < writeBehindBytes || r[1]%writeBehindAlign != 0 {
			t.Fatalf("write-back ranges %v: [%d, %d) after %d", ranges, r[0], r[1], at)
		}
		at = r[1]
	}
}

// What fsyncs cover is never handed to write-back again: a log whose
// appends are all synced (acks=all, flush.messages=1) makes no write-back
// calls.
func TestSyncedAppendsAreNotWrittenBack(t *testing.T) {
	fs := newWriteBackFS()
	l, err := Open(t.TempDir(), Config{SegmentBytes: 1 << 30, FlushMessages: 1}, Options{FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := batch(64, 1000, 0)
	for l.Size() < 3*writeBehindBytes {
		res, err := l.AppendAsLeader(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitDurable(l, res.LastOffset+1); err != nil {
			t.Fatal(err)
		}
	}
	l.writeBacks.Wait()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if r := fs.ranges[l.active().path(".log")]; len(r) > 0 {
		t.Fatalf("synced appends handed to write-back: %v", r)
	}
}
