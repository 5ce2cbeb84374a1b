package localseg

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs"
)

func dirFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestRetentionRenamesToDeletedThenRemovesAfterTheDelay(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2, RetentionMs: -1, FileDeleteDelayMs: 60_000})
	for i := 0; i < 6; i++ {
		h.append(batch(1, 100, 0))
	}
	if err := h.log.SetLogStartOffset(4); err != nil {
		t.Fatal(err)
	}
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("deleted %d (%v)", n, err)
	}
	deleted := dirFiles(t, h.dir, deletedExt)
	if len(deleted) != 6 { // .log, .index, .timeindex of two segments
		t.Fatalf("files awaiting deletion: %v", deleted)
	}
	if logs := dirFiles(t, h.dir, ".log"); len(logs) != 1 {
		t.Fatalf("segments left: %v", logs)
	}
	h.clock.advance(30 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	if n := len(dirFiles(t, h.dir, deletedExt)); n != 6 {
		t.Fatalf("%d .deleted files before the delay", n)
	}
	h.clock.advance(31 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	if n := len(dirFiles(t, h.dir, deletedExt)); n != 0 {
		t.Fatalf("%d .deleted files after the delay", n)
	}
}

func TestDeletedFilesAreRemovedOnOpenAndClose(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)), RetentionMs: -1})
	for i := 0; i < 3; i++ {
		h.append(batch(1, 100, 0))
	}
	h.log.SetLogStartOffset(2)
	h.log.ApplyRetention(h.clock.Now())
	if len(dirFiles(t, h.dir, deletedExt)) == 0 {
		t.Fatal("nothing awaits deletion")
	}
	h.restart()
	if n := len(dirFiles(t, h.dir, deletedExt)); n != 0 {
		t.Fatalf("%d .deleted files after Close", n)
	}
	h.log.SetLogStartOffset(3)
	h.log.Roll()
	h.log.ApplyRetention(h.clock.Now())
	h.abandon()
	h.open()
	if n := len(dirFiles(t, h.dir, deletedExt)); n != 0 {
		t.Fatalf("%d .deleted files after a crash and open", n)
	}
	if h.log.LogStartOffset() != 3 || h.log.LogEndOffset() != 3 {
		t.Fatalf("start %d end %d", h.log.LogStartOffset(), h.log.LogEndOffset())
	}
}

func TestRetentionBySizeKeepsTheNewestAndNeverTheActiveAlone(t *testing.T) {
	one := batch(1, 100, 0)
	size := int64(len(one))
	h := newHarness(t, Config{SegmentBytes: size * 2, RetentionMs: -1, RetentionBytes: size * 3})
	for i := 0; i < 7; i++ {
		h.append(batch(1, 100, 0))
	}
	// Segments of 2, 2, 2, 1 batches: keeping at most 3 batches' worth
	// deletes the first two (4 batches), leaving 3.
	n, err := h.log.ApplyRetention(h.clock.Now())
	if err != nil || n != 2 {
		t.Fatalf("deleted %d (%v)", n, err)
	}
	if h.log.Size() != size*3 || h.log.LogStartOffset() != 4 {
		t.Fatalf("size %d start %d", h.log.Size(), h.log.LogStartOffset())
	}
	// A second pass changes nothing.
	if n, _ := h.log.ApplyRetention(h.clock.Now()); n != 0 {
		t.Fatalf("second pass deleted %d", n)
	}
}

func TestRetentionByTimeUsesTheLargestTimestamp(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: 60_000})
	now := h.clock.Now().UnixMilli()
	// One old batch and one recent in the same segment: it stays.
	h.append(batch(1, 10, now-120_000))
	h.append(batch(1, 10, now-1_000))
	h.log.Roll()
	h.append(batch(1, 10, now-120_000))
	if n, _ := h.log.ApplyRetention(h.clock.Now()); n != 0 {
		t.Fatalf("deleted %d segments holding a recent record", n)
	}
	h.clock.advance(2 * time.Minute)
	// Now both segments are expired: the active one is rolled and both go.
	if n, _ := h.log.ApplyRetention(h.clock.Now()); n != 2 {
		t.Fatalf("deleted %d, want 2", n)
	}
	if h.log.LogStartOffset() != 3 || h.log.LogEndOffset() != 3 {
		t.Fatalf("start %d end %d", h.log.LogStartOffset(), h.log.LogEndOffset())
	}
}

func TestSnapshotsGoWithTheirSegments(t *testing.T) {
	one := idemBatch(1, 0, 0, 1)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)), RetentionMs: -1})
	// Recent timestamps: a producer expires by the timestamps it wrote.
	idem := func(seq int32) Batch {
		b := idemBatch(1, 0, seq, 1)
		b.SetLogAppendTime(h.clock.Now().UnixMilli())
		return b
	}
	for seq := int32(0); seq < 5; seq++ {
		if _, err := h.log.AppendAsLeader(idem(seq), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Segments at 0..4, snapshots at 1..4 (once the rolls' background
	// flushes wrote them).
	h.log.waitRollFiles()
	if got := h.log.snapshotOffsets(); len(got) != 4 || got[0] != 1 {
		t.Fatalf("snapshots %v", got)
	}
	h.log.SetLogStartOffset(3)
	h.log.ApplyRetention(h.clock.Now())
	if got := h.log.snapshotOffsets(); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("snapshots after retention %v, want [3 4]", got)
	}
	// The producer's state outlives its deleted batches (KIP-360).
	if res, err := h.log.AppendAsLeader(idem(4), 0); err != nil || !res.Duplicate {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if _, err := h.log.AppendAsLeader(idem(9), 0); err == nil {
		t.Fatal("a gap was accepted after retention")
	}
	h.crash()
	if _, err := h.log.AppendAsLeader(idem(9), 0); err == nil {
		t.Fatal("a gap was accepted after retention and a crash")
	}
}

func TestSetLogStartOffsetIsPersistedAndBounded(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: -1})
	for i := 0; i < 5; i++ {
		h.append(batch(1, 10, 0))
	}
	// Forward only: a move back leaves it; past the log end is refused.
	for _, c := range []struct {
		offset int64
		ok     bool
		start  int64
	}{{2, true, 2}, {2, true, 2}, {1, true, 2}, {6, false, 2}, {5, true, 5}} {
		err := h.log.SetLogStartOffset(c.offset)
		if (err == nil) != c.ok || h.log.LogStartOffset() != c.start {
			t.Fatalf("SetLogStartOffset(%d): %v, log start %d; want ok %v, log start %d", c.offset, err, h.log.LogStartOffset(), c.ok, c.start)
		}
	}
	h.abandon()
	h.open()
	if h.log.LogStartOffset() != 5 {
		t.Fatalf("log start %d after a crash", h.log.LogStartOffset())
	}
	if r, err := h.log.Read(5, 100, math.MaxInt64, true); err != nil || r.Len() != 0 {
		t.Fatalf("read at the log start = log end: %d %v", r.Len(), err)
	}
	if _, err := h.log.Read(4, 100, math.MaxInt64, true); err == nil {
		t.Fatal("read below the log start")
	}
}

func TestProducersExpireByTimeOnly(t *testing.T) {
	h := newHarness(t, Config{ProducerIDExpirationMs: 10_000, RetentionMs: -1})
	now := h.clock.Now().UnixMilli()
	b := idemBatch(3, 0, 0, 1)
	b.SetLogAppendTime(now)
	h.append(b)
	h.clock.advance(5 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	if _, err := h.log.AppendAsLeader(idemBatch(3, 0, 77, 1), 0); err == nil {
		t.Fatal("a gap was accepted from a live producer")
	}
	h.clock.advance(6 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	if _, err := h.log.AppendAsLeader(idemBatch(3, 0, 77, 1), 0); err != nil {
		t.Fatalf("expired producer: %v", err)
	}
}

// removeGateFS holds the next removal of a file whose name ends with
// suffix.
type removeGateFS struct {
	vfs.FS
	suffix     string
	mu         sync.Mutex
	gate, held chan struct{}
}

func (g *removeGateFS) Remove(name string) error {
	if strings.HasSuffix(name, g.suffix) {
		g.mu.Lock()
		gate, held := g.gate, g.held
		g.gate = nil
		g.mu.Unlock()
		if gate != nil {
			close(held)
			<-gate
		}
	}
	return g.FS.Remove(name)
}

// The files of deleted segments are removed, once their delay has passed,
// after ApplyRetention releases the log's lock: while an unlink hangs,
// appends go on. They are all gone when it returns.
func TestDeletedFilesAreRemovedOutsideTheLock(t *testing.T) {
	gate := make(chan struct{})
	g := &removeGateFS{FS: vfs.OSFS{}, suffix: deletedExt, gate: gate, held: make(chan struct{})}
	h := newHarness(t, Config{SegmentBytes: 4 << 10, FileDeleteDelayMs: 1000, RetentionMs: -1})
	h.log.Close()
	h.opts.FS = g
	h.open()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	for range 20 {
		h.append(batch(1, 1000, h.clock.Now().UnixMilli()))
	}
	if err := h.log.SetLogStartOffset(10); err != nil {
		t.Fatal(err)
	}
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n == 0 {
		t.Fatalf("retention deleted %d segments: %v", n, err)
	}
	h.clock.advance(2 * time.Second)
	applied := make(chan error, 1)
	go func() {
		_, err := h.log.ApplyRetention(h.clock.Now())
		applied <- err
	}()
	<-g.held
	appended := make(chan error, 1)
	go func() {
		_, err := h.log.AppendAsLeader(batch(1, 1000, h.clock.Now().UnixMilli()), 0)
		appended <- err
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an append waits for the removal of a deleted segment's files")
	}
	release()
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	names, err := os.ReadDir(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		if strings.HasSuffix(e.Name(), deletedExt) {
			t.Fatalf("%s left after the delay", e.Name())
		}
	}
}

// Retention writes the log-start checkpoint it moves with the log's lock
// released: while its fsync hangs, appends (and rolls) go on, and a
// DeleteRecords waits for it. The segments below go once it is written.
func TestRetentionWritesTheLogStartOutsideTheLock(t *testing.T) {
	gate := make(chan struct{})
	g := &syncGateFS{FS: vfs.OSFS{}, name: logStartFile + ".tmp", gate: gate, held: make(chan struct{})}
	h := newHarness(t, Config{SegmentBytes: 4 << 10, RetentionMs: -1, FileDeleteDelayMs: 1})
	h.log.Close()
	h.opts.FS = g
	h.open()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	for range 20 {
		h.append(batch(1, 1000, h.clock.Now().UnixMilli()))
	}
	h.log.flushes.Wait() // the directory holds every segment durably
	h.log.SetConfig(Config{SegmentBytes: 4 << 10, RetentionMs: -1, RetentionBytes: 8 << 10, FileDeleteDelayMs: 1})
	applied := make(chan int, 1)
	go func() {
		n, err := h.log.ApplyRetention(h.clock.Now())
		if err != nil {
			t.Error(err)
		}
		applied <- n
	}()
	<-g.held
	appended := make(chan error, 1)
	go func() {
		for range 8 { // a roll or two
			if _, err := h.log.AppendAsLeader(batch(1, 1000, h.clock.Now().UnixMilli()), 0); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("appends wait for the log-start checkpoint of retention")
	}
	deleted := make(chan error, 1)
	target := h.log.LogEndOffset() - 1
	go func() { deleted <- h.log.SetLogStartOffset(target) }()
	select {
	case err := <-deleted:
		t.Fatalf("DeleteRecords done (%v) while retention wrote the log start", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if n := <-applied; n == 0 {
		t.Fatal("retention deleted nothing")
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	start, first := h.log.LogStartOffset(), h.log.Segments()[0].BaseOffset
	if start != target || first == 0 || first > start {
		t.Fatalf("log start %d (DeleteRecords to %d), first segment at %d", start, target, first)
	}
	h.restart()
	if got := h.log.LogStartOffset(); got != start {
		t.Fatalf("log start %d after a restart, want %d", got, start)
	}
	if got := h.readAll(start); len(got) == 0 || got[len(got)-1].LastOffset() != h.log.LogEndOffset()-1 {
		t.Fatalf("%d batches from the log start after a restart", len(got))
	}
}

// renameGateFS holds the next rename to a name ending with suffix.
type renameGateFS struct {
	vfs.FS
	suffix     string
	mu         sync.Mutex
	gate, held chan struct{}
}

func (g *renameGateFS) Rename(from, to string) error {
	if strings.HasSuffix(to, g.suffix) {
		g.mu.Lock()
		gate, held := g.gate, g.held
		g.gate = nil
		g.mu.Unlock()
		if gate != nil {
			close(held)
			<-gate
		}
	}
	return g.FS.Rename(from, to)
}

// copyDir copies the regular files of a directory: the image a crash of
// the process would leave at this moment.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Retention renames the files of the segments it deletes to .deleted
// after releasing the log's lock: while a rename hangs, appends (with
// rolls) and reads of the log go on, and a read that held a deleted
// segment goes on reading it. A crash at that point (the segments out of
// the list, their files not renamed) opens at the new log start, and the
// next retention deletes what was left.
func TestRetentionRenamesOutsideTheLock(t *testing.T) {
	gate := make(chan struct{})
	g := &renameGateFS{FS: vfs.OSFS{}, suffix: ".log" + deletedExt, gate: gate, held: make(chan struct{})}
	cfg := Config{SegmentBytes: 4 << 10, RetentionMs: -1, FileDeleteDelayMs: 1000}
	h := newHarness(t, cfg)
	h.log.Close()
	h.opts.FS = g
	h.open()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	for range 20 {
		h.append(batch(1, 1000, h.clock.Now().UnixMilli()))
	}
	h.log.flushes.Wait()
	held, err := h.log.Read(0, 1<<20, math.MaxInt64, true)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	want, err := held.Bytes()
	if err != nil || len(want) == 0 {
		t.Fatalf("reading the first segment: %v (%d bytes)", err, len(want))
	}
	cfg.RetentionBytes = 8 << 10
	h.log.SetConfig(cfg)
	applied := make(chan int, 1)
	go func() {
		n, err := h.log.ApplyRetention(h.clock.Now())
		if err != nil {
			t.Error(err)
		}
		applied <- n
	}()
	<-g.held
	start := h.log.LogStartOffset()
	if start == 0 {
		t.Fatal("the log start did not move before the renames")
	}
	image := t.TempDir()
	copyDir(t, h.dir, image)
	appended := make(chan error, 1)
	go func() {
		for range 8 { // a roll or two
			if _, err := h.log.AppendAsLeader(batch(1, 1000, h.clock.Now().UnixMilli()), 0); err != nil {
				appended <- err
				return
			}
			r, err := h.log.Read(h.log.LogEndOffset()-1, 1<<20, math.MaxInt64, true)
			if err == nil && r.Len() == 0 {
				err = fmt.Errorf("empty read of the last batch")
			}
			r.Release()
			if err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("appends wait for the renames of retention's deleted segments")
	}
	if got, err := held.Bytes(); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("a range held across its segment's deletion read %d bytes (%v), want the %d it had", len(got), err, len(want))
	}
	release()
	if n := <-applied; n == 0 {
		t.Fatal("retention deleted nothing")
	}
	for _, s := range h.log.Segments() {
		if s.BaseOffset < start {
			t.Fatalf("segment %d left below the log start %d", s.BaseOffset, start)
		}
	}

	// The crash image: segments below the durable log start, still named
	// as live ones.
	l, err := Open(image, cfg, Options{Now: h.clock.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.LogStartOffset(); got != start {
		t.Fatalf("log start %d after the crash, want %d", got, start)
	}
	if n, err := l.ApplyRetention(h.clock.Now()); err != nil || n == 0 {
		t.Fatalf("retention after the crash deleted %d segments: %v", n, err)
	}
	if first := l.Segments()[0].BaseOffset; first > start {
		t.Fatalf("first segment at %d after retention, above the log start %d", first, start)
	}
	for off := start; off < l.LogEndOffset(); {
		r, err := l.Read(off, 1<<20, math.MaxInt64, true)
		if err != nil || r.Len() == 0 {
			t.Fatalf("read at %d after the crash: %v", off, err)
		}
		buf, err := r.Bytes()
		r.Release()
		if err != nil {
			t.Fatal(err)
		}
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			off, buf = b.NextOffset(), rest
		}
	}
}

// A roll's producer snapshot that its background flush could not write is
// rebuilt before retention deletes the segments below it, so a restart
// still knows their producers.
func TestRetentionRebuildsAMissingProducerSnapshotFirst(t *testing.T) {
	h := lostRollSnapshot(t)
	h.log.SetLogStartOffset(4)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("retention deleted %d segments: %v", n, err)
	}
	h.crash()
	requireRetryIsDuplicate(t, h)
}
