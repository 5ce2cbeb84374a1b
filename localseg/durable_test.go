package localseg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/vfs"
	"github.com/shale-log/shale/localseg/vfs/crashfs"
	"github.com/shale-log/shale/localseg/vfs/errorfs"
)

// newFaultyHarness is a harness whose log runs on an errorfs.
func newFaultyHarness(t *testing.T, cfg Config) (*harness, *errorfs.FS) {
	t.Helper()
	ffs := errorfs.New(nil)
	h := newHarness(t, cfg)
	h.opts.FS = ffs
	h.restart()
	return h, ffs
}

func TestFailedWriteIsCutAndTakesTheLogOffline(t *testing.T) {
	h, ffs := newFaultyHarness(t, Config{})
	h.append(batch(1, 100, 0))
	size := h.log.Size()
	ffs.FailWrites(1, syscall.ENOSPC)
	_, err := h.log.AppendAsLeader(batch(1, 100, 0), 0)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrOffline) {
		t.Fatalf("failed write: %v", err)
	}
	if !errors.Is(h.log.Offline(), ErrOffline) || h.log.LogEndOffset() != 1 {
		t.Fatalf("offline %v, log end %d", h.log.Offline(), h.log.LogEndOffset())
	}
	// The torn half-batch is cut: the file ends at the last whole batch.
	if st, err := os.Stat(filepath.Join(h.dir, segmentName(0, ".log"))); err != nil || st.Size() != size {
		t.Fatalf("segment file %v after the cut, want %d bytes", st, size)
	}
	// Nothing changes an offline log.
	if _, err := h.log.AppendAsLeader(batch(1, 100, 0), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("append to an offline log: %v", err)
	}
	for name, fn := range map[string]func() error{
		"flush": h.log.Flush, "roll": h.log.Roll,
		"truncate":  func() error { return h.log.TruncateTo(0) },
		"retention": func() error { _, err := h.log.ApplyRetention(h.clock.Now()); return err },
	} {
		if err := fn(); !errors.Is(err, ErrOffline) {
			t.Fatalf("%s of an offline log: %v", name, err)
		}
	}
	if err := h.log.Close(); !errors.Is(err, ErrOffline) {
		t.Fatalf("close of an offline log: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, cleanShutdownFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an offline log wrote its clean-shutdown marker: %v", err)
	}
	// Reopened (space came back), it recovers and takes appends.
	h.open()
	if res := h.append(batch(1, 100, 0)); res.FirstOffset != 1 {
		t.Fatalf("append after reopening at %d", res.FirstOffset)
	}
	if got := h.readAll(0); len(got) != 2 {
		t.Fatalf("%d batches after reopening", len(got))
	}
}

// A failed fsync must never be followed by another fsync of the same
// pages (the kernel may have dropped them and marked them clean: a later
// fsync succeeds without writing them), nor by an acknowledgement.
func TestFailedFsyncTakesTheLogOfflineAndNeverSyncsAgain(t *testing.T) {
	h, ffs := newFaultyHarness(t, Config{FlushMessages: 1})
	first := h.append(batch(1, 10, 0))
	// The sync flush.messages started for it ends before the fault is
	// armed (it would otherwise take the fault).
	if err := waitDurable(h.log, first.LastOffset+1); err != nil {
		t.Fatal(err)
	}
	rp := h.log.RecoveryPoint()
	ffs.FailSyncs(1, syscall.EIO)
	res := h.append(batch(1, 10, 0))
	if err := waitDurable(h.log, res.LastOffset+1); !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrOffline) {
		t.Fatalf("durability of an append whose fsync failed: %v", err)
	}
	// Every sync from now on would be counted, once the syncs that
	// were running when the fsync failed are over (their outcomes are
	// discarded).
	h.log.flushes.Wait()
	ffs.Inject(errorfs.Fault{Op: errorfs.OpSync, Times: -1, Err: syscall.EIO})
	ffs.Inject(errorfs.Fault{Op: errorfs.OpSyncDir, Times: -1, Err: syscall.EIO})
	fired := ffs.Fired()
	if _, err := h.log.AppendAsLeader(batch(1, 10, 0), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("append after a failed fsync: %v", err)
	}
	if err := h.log.Flush(); !errors.Is(err, ErrOffline) {
		t.Fatalf("flush after a failed fsync: %v", err)
	}
	h.log.Close()
	if ffs.Fired() != fired {
		t.Fatalf("%d more syncs after the failed one", ffs.Fired()-fired)
	}
	if h.log.RecoveryPoint() != rp {
		t.Fatalf("recovery point moved from %d to %d past a failed fsync", rp, h.log.RecoveryPoint())
	}
	ffs.Clear()
	h.open()
	// Recovery starts from the last persisted recovery point, which the
	// group commit's in-memory one may be ahead of, never behind.
	if h.log.Offline() != nil || h.log.RecoveryPoint() > rp {
		t.Fatalf("reopened: offline %v, recovery point %d (at most %d)", h.log.Offline(), h.log.RecoveryPoint(), rp)
	}
	if h.log.LogEndOffset() < rp {
		t.Fatalf("reopened: log end %d below the durable %d", h.log.LogEndOffset(), rp)
	}
	h.append(batch(1, 10, 0))
}

func TestFailedBackgroundFlushTakesTheLogOffline(t *testing.T) {
	one := batch(1, 100, 0)
	h, ffs := newFaultyHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	ffs.Inject(errorfs.Fault{Op: errorfs.OpSync, PathContains: segmentName(0, ".log"), Err: syscall.EIO})
	for i := 0; i < 3; i++ {
		// The background flush may fail before the last appends.
		if _, err := h.log.AppendAsLeader(batch(1, 100, 0), 0); err != nil && !errors.Is(err, ErrOffline) {
			t.Fatal(err)
		}
	}
	h.log.flushes.Wait()
	if !errors.Is(h.log.Offline(), syscall.EIO) || h.log.RecoveryPoint() != 0 {
		t.Fatalf("offline %v, recovery point %d", h.log.Offline(), h.log.RecoveryPoint())
	}
	if _, err := h.log.AppendAsLeader(batch(1, 100, 0), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("append after a failed background flush: %v", err)
	}
}

// openSegment opens name on fs, wrapped by wrap when it is a segment file
// (the files the fault-injecting test filesystems watch).
func openSegment(fs vfs.FS, name string, flag int, perm os.FileMode, wrap func(vfs.File) vfs.File) (vfs.File, error) {
	f, err := fs.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return wrap(f), nil
}

// syncGateFS counts the fsyncs of segment files (or, with name set, of
// the files of that base name) and can hold the next one.
type syncGateFS struct {
	vfs.FS
	name       string
	mu         sync.Mutex
	syncs      int
	gate, held chan struct{}
}

func (g *syncGateFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	wrap := func(f vfs.File) vfs.File { return &syncGateFile{File: f, g: g} }
	if g.name == "" {
		return openSegment(g.FS, name, flag, perm, wrap)
	}
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != g.name {
		return f, err
	}
	return wrap(f), nil
}

type syncGateFile struct {
	vfs.File
	g *syncGateFS
}

func (f *syncGateFile) Sync() error {
	f.g.mu.Lock()
	f.g.syncs++
	gate, held := f.g.gate, f.g.held
	f.g.gate = nil
	f.g.mu.Unlock()
	if gate != nil {
		close(held)
		<-gate
	}
	return f.File.Sync()
}

// Producers that wait for durability while an fsync runs share the next
// one, and appends go on during an fsync.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	gate := make(chan struct{})
	g := &syncGateFS{FS: vfs.OSFS{}, gate: gate, held: make(chan struct{})}
	l, err := Open(t.TempDir(), Config{}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	first := make(chan error, 1)
	res, err := l.AppendAsLeader(batch(1, 100, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() { first <- waitDurable(l, res.LastOffset+1) }()
	<-g.held // the first fsync is running
	const producers = 8
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		go func() {
			res, err := l.AppendAsLeader(batch(1, 100, 0), 0)
			if err == nil {
				err = waitDurable(l, res.LastOffset+1)
			}
			errs <- err
		}()
	}
	// Every append is in (none waited for the fsync) before it ends.
	for deadline := time.Now().Add(5 * time.Second); l.LogEndOffset() != producers+1; {
		if time.Now().After(deadline) {
			t.Fatalf("log end %d while an fsync runs: appends wait for it", l.LogEndOffset())
		}
		time.Sleep(time.Millisecond)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for p := 0; p < producers; p++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// The first; at most maxSyncsInFlight-1 started by producers that
	// arrived while it ran; then one shared by the rest.
	if g.syncs < 2 || g.syncs > maxSyncsInFlight+1 {
		t.Fatalf("%d fsyncs of the segment for %d durable appends, want 2 to %d", g.syncs, producers+1, maxSyncsInFlight+1)
	}
}

// Every append acknowledged as durable survives a machine crash, at many
// random points (during appends, rolls, fsyncs), with torn tails.
func TestDurableAppendsSurviveRandomCrashes(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { crashOnce(t, uint64(seed), false) })
	}
}

// crashOnce appends from four producers, each waiting for its batches to
// be durable, crashes the machine at a random moment and checks that every
// batch acknowledged as durable is read back; with preallocate, zeros are
// written ahead of the appends.
func crashOnce(t *testing.T, seed uint64, preallocate bool) {
	rng := rand.New(rand.NewPCG(seed, 7))
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	one := len(batch(1, 100, 0))
	cfg := Config{SegmentBytes: int64(one * (5 + rng.IntN(20))), Preallocate: preallocate}
	if preallocate {
		cfg.SegmentBytes *= 20 // rolls after several pieces of zeros
	}
	l, err := Open(dir, cfg, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[int64][]byte{} // first offset -> batch as appended
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b := batch(1+p, 50+p, int64(p))
				res, err := l.AppendAsLeader(b, 0)
				if err != nil {
					return
				}
				if err := waitDurable(l, res.LastOffset+1); err != nil {
					return
				}
				mu.Lock()
				acked[res.FirstOffset] = b
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Duration(rng.IntN(30000)) * time.Microsecond)
	if err := cfs.Crash(rng); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l.Close() // fails: the machine is gone
	l, err = Open(dir, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open after the crash: %v", err)
	}
	defer l.Close()
	h := &harness{t: t, log: l}
	got := map[int64][]byte{}
	for _, b := range h.readAll(0) {
		got[b.BaseOffset()] = b
	}
	mu.Lock()
	defer mu.Unlock()
	for off, b := range acked {
		if !bytes.Equal(got[off], b) {
			t.Fatalf("seed %d: the durable batch at %d is lost (log end %d after the crash, %d acknowledged)", seed, off, l.LogEndOffset(), len(acked))
		}
	}
	if testing.Verbose() {
		t.Logf("%d acknowledged, log end %d", len(acked), l.LogEndOffset())
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestHighWatermarkCheckpoint(t *testing.T) {
	h := newHarness(t, Config{})
	for i := 0; i < 10; i++ {
		h.append(batch(1, 10, 0))
	}
	if hw := h.log.HighWatermark(); hw != 0 {
		t.Fatalf("high watermark %d of a new log", hw)
	}
	h.log.SetHighWatermark(7)
	h.restart()
	if hw := h.log.HighWatermark(); hw != 7 {
		t.Fatalf("high watermark %d after a clean restart, want 7", hw)
	}
	// The periodic checkpoint survives a crash of the process.
	h.log.SetHighWatermark(9)
	if err := h.log.CheckpointHighWatermark(); err != nil {
		t.Fatal(err)
	}
	h.crash()
	if hw := h.log.HighWatermark(); hw != 9 {
		t.Fatalf("high watermark %d after a crash, want 9", hw)
	}
	// Never past the log end (a machine crash lost records the
	// checkpoint had counted), and lowered by truncation.
	writeFile(t, filepath.Join(h.dir, highWatermarkFile), encodeOffsetCheckpoint("high-watermark", 50))
	h.crash()
	if hw := h.log.HighWatermark(); hw != 10 {
		t.Fatalf("high watermark %d from a checkpoint past the log end 10", hw)
	}
	if err := h.log.TruncateTo(4); err != nil {
		t.Fatal(err)
	}
	if hw := h.log.HighWatermark(); hw != 4 {
		t.Fatalf("high watermark %d after truncating to 4", hw)
	}
	// A corrupt checkpoint reads as the log start.
	h.log.SetHighWatermark(3)
	h.restart()
	flipByte(t, filepath.Join(h.dir, highWatermarkFile), 30)
	h.crash()
	if hw := h.log.HighWatermark(); hw != 0 {
		t.Fatalf("high watermark %d from a corrupt checkpoint", hw)
	}
}

// writeGateFS holds the first write to a segment file and counts them.
type writeGateFS struct {
	vfs.FS
	mu         sync.Mutex
	writes     int
	gate, held chan struct{}
}

func (g *writeGateFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return openSegment(g.FS, name, flag, perm, func(f vfs.File) vfs.File { return &writeGateFile{File: f, g: g} })
}

type writeGateFile struct {
	vfs.File
	g *writeGateFS
}

func (f *writeGateFile) WriteAt(p []byte, off int64) (int, error) {
	f.g.mu.Lock()
	f.g.writes++
	gate, held := f.g.gate, f.g.held
	f.g.gate = nil
	f.g.mu.Unlock()
	if gate != nil {
		close(held)
		<-gate
	}
	return f.File.WriteAt(p, off)
}

// The pwrite happens outside the log's lock: while one append's write is
// stalled, the next append reserves its place and writes, and both are
// published in offset order once the first write ends.
func TestWritesOverlapAndPublishInOrder(t *testing.T) {
	gate := make(chan struct{})
	g := &writeGateFS{FS: vfs.OSFS{}, gate: gate, held: make(chan struct{})}
	l, err := Open(t.TempDir(), Config{}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	first, second := make(chan AppendResult, 1), make(chan AppendResult, 1)
	go func() {
		res, _ := l.AppendAsLeader(batch(1, 100, 0), 0)
		first <- res
	}()
	<-g.held
	go func() {
		res, _ := l.AppendAsLeader(batch(2, 100, 0), 0)
		second <- res
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		n := g.writes
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second append did not write while the first write was stalled")
		}
	}
	select {
	case <-second:
		t.Fatal("the second append returned before the first was published")
	case <-time.After(50 * time.Millisecond):
	}
	if l.LogEndOffset() != 0 {
		t.Fatalf("log end %d published past a write in progress", l.LogEndOffset())
	}
	release()
	if r1, r2 := <-first, <-second; r1.FirstOffset != 0 || r2.FirstOffset != 1 || l.LogEndOffset() != 3 {
		t.Fatalf("offsets %d and %d, log end %d", r1.FirstOffset, r2.FirstOffset, l.LogEndOffset())
	}
	h := &harness{t: t, log: l}
	if got := h.readAll(0); len(got) != 2 {
		t.Fatalf("%d batches read back", len(got))
	}
}

// A truncation is durable once TruncateTo returns: a machine crash right
// after it must not bring the cut batches back (they passed their CRCs, so
// recovery would keep them, and a follower would hold records its leader
// never had under offsets the leader reuses).
func TestTruncationSurvivesACrash(t *testing.T) {
	one := int64(len(batch(1, 100, 0)))
	for name, cfg := range map[string]Config{
		"within the active segment": {},
		"across segments":           {SegmentBytes: one * 3},
	} {
		t.Run(name, func(t *testing.T) { truncateAndCrash(t, cfg) })
	}
}

func truncateAndCrash(t *testing.T, cfg Config) {
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	l, err := Open(dir, cfg, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := l.AppendAsLeader(batch(1, 100, int64(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := l.TruncateTo(4); err != nil {
		t.Fatal(err)
	}
	if l.LogEndOffset() != 4 {
		t.Fatalf("log end %d after truncating to 4", l.LogEndOffset())
	}
	if err := cfs.Crash(nil); err != nil {
		t.Fatal(err)
	}
	l.Close() // fails: the machine is gone
	l, err = Open(dir, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open after the crash: %v", err)
	}
	defer l.Close()
	if l.LogEndOffset() != 4 {
		t.Fatalf("log end %d after a crash that followed a truncation to 4: the cut batches came back", l.LogEndOffset())
	}
}

// failFirstSyncFS holds the first fsync of a segment file until gate is
// closed and then fails it; later fsyncs succeed at once.
type failFirstSyncFS struct {
	vfs.FS
	mu         sync.Mutex
	syncs      int
	gate, held chan struct{}
}

func (g *failFirstSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return openSegment(g.FS, name, flag, perm, func(f vfs.File) vfs.File { return &failFirstSyncFile{File: f, g: g} })
}

type failFirstSyncFile struct {
	vfs.File
	g *failFirstSyncFS
}

func (f *failFirstSyncFile) Sync() error {
	f.g.mu.Lock()
	f.g.syncs++
	first := f.g.syncs == 1
	f.g.mu.Unlock()
	if first {
		close(f.g.held)
		<-f.g.gate
		return syscall.EIO
	}
	return f.File.Sync()
}

// Linux reports a writeback error once per open file description: an
// fsync through the same descriptor after the failed one succeeds (errorfs
// fails the one sync, as the kernel does). Every fsync of the segment after
// a failed one must fail too, whichever path asks for it.
func TestSegmentSyncAfterAFailedOneFails(t *testing.T) {
	efs := errorfs.New(nil)
	l, err := Open(t.TempDir(), Config{}, Options{FS: efs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.AppendAsLeader(batch(1, 100, 0), 0); err != nil {
		t.Fatal(err)
	}
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, PathContains: ".log", Err: syscall.EIO})
	s := l.active()
	for i := 0; i < 2; i++ {
		if err := l.syncSegment(s); !errors.Is(err, syscall.EIO) {
			t.Fatalf("sync %d after the failure: %v, want the failed fsync's EIO", i, err)
		}
	}
}

// A sealed segment's background flush fails while the group commit's sync,
// which covers that segment too (the recovery point is below it), waits
// for it: the waiter gets the failure, not an acknowledgement over it.
func TestGroupCommitBehindAFailedSealedFlushFails(t *testing.T) {
	g := &failFirstSyncFS{FS: vfs.OSFS{}, gate: make(chan struct{}), held: make(chan struct{})}
	l, err := Open(t.TempDir(), Config{}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := sync.OnceFunc(func() { close(g.gate) })
	defer release()
	if _, err := l.AppendAsLeader(batch(1, 100, 0), 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	<-g.held // the sealed segment's flush runs its fsync
	res, err := l.AppendAsLeader(batch(1, 100, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	if l.WhenDurable(res.LastOffset+1, func(err error) { done <- err }) {
		t.Fatal("durable before any sync succeeded")
	}
	select {
	case err := <-done:
		t.Fatalf("answered (%v) while the sealed segment's fsync still runs", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; !errors.Is(err, ErrOffline) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("waiter: %v, want the failed fsync", err)
	}
	if rp := l.RecoveryPoint(); rp != 0 {
		t.Fatalf("recovery point %d past a failed fsync", rp)
	}
}

// Every batch acknowledged as durable is, when its callback runs, in the
// bytes a crash would keep (crashfs's durable copy of its segment, entered
// durably in the directory), with producers that each keep a window of
// batches waiting (so that syncs are held for returning producers), and
// rolls (sealed segments flushed in the background).
func TestAcknowledgedBatchesWereCoveredByACompletedSync(t *testing.T) {
	checkAcksCovered(t)
}

func checkAcksCovered(t *testing.T) {
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	l, err := Open(dir, Config{SegmentBytes: 24 << 10}, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// covered reports whether the durable copy of the segment holding
	// off contains b.
	covered := func(off int64, b []byte) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		seg := ""
		for _, e := range entries { // sorted: the last base <= off wins
			var base int64
			if n, _ := fmt.Sscanf(e.Name(), "%020d.log", &base); n == 1 && strings.HasSuffix(e.Name(), ".log") && base <= off {
				seg = filepath.Join(dir, e.Name())
			}
		}
		data, ok := cfs.Durable(seg)
		if !ok {
			return fmt.Errorf("batch at %d acknowledged while its segment %s is not durably in the directory", off, seg)
		}
		if !bytes.Contains(data, b) {
			return fmt.Errorf("batch at %d acknowledged while not in the durable %d bytes of %s", off, len(data), seg)
		}
		return nil
	}
	const producers, window, perProducer = 4, 6, 120
	errs := make(chan error, producers*perProducer)
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, window)
			var acks sync.WaitGroup
			for i := 0; i < perProducer; i++ {
				sem <- struct{}{}
				b := batch(1+i%3, 150+p, int64(i))
				res, err := l.AppendAsLeader(b, 0)
				if err != nil {
					errs <- err
					return
				}
				kept := append([]byte(nil), b...) // as written, offsets set
				acks.Add(1)
				done := func(err error) {
					if err == nil {
						err = covered(res.FirstOffset, kept)
					}
					if err != nil {
						errs <- err
					}
					<-sem
					acks.Done()
				}
				if l.WhenDurable(res.LastOffset+1, done) {
					done(nil)
				}
			}
			acks.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// openHeldLog opens a log whose syncs wait for release (g.held tells when
// one does), with maxSyncHold at hold for the test's length.
// appendWait appends a batch and returns the channel its durability's
// outcome comes on.
func openHeldLog(t *testing.T, hold time.Duration) (l *Log, g *syncGateFS, release func(), appendWait func() chan error) {
	t.Helper()
	old := maxSyncHold
	maxSyncHold = hold
	t.Cleanup(func() { maxSyncHold = old })
	gate := make(chan struct{})
	g = &syncGateFS{FS: vfs.OSFS{}, gate: gate, held: make(chan struct{})}
	l, err := Open(t.TempDir(), Config{}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() { close(gate) })
	// Cleanups run last first: the gate opens before the log closes.
	t.Cleanup(func() { l.Close() })
	t.Cleanup(release)
	appendWait = func() chan error {
		ch := make(chan error, 1)
		res, err := l.AppendAsLeader(batch(1, 100, 0), 0)
		if err != nil {
			t.Fatal(err)
		}
		if l.WhenDurable(res.LastOffset+1, func(err error) { ch <- err }) {
			ch <- nil
		}
		return ch
	}
	return l, g, release, appendWait
}

// A sync that answers waiters holds the next one back until as many have
// come again, so that a producer's returning requests and those that
// waited share one fsync instead of the waiting ones starting a sync of
// their own at once.
func TestSyncHeldForReturningProducers(t *testing.T) {
	l, g, release, appendWait := openHeldLog(t, time.Minute)
	// The syncs have taken a minute, as far as the scheduler knows: it
	// holds the next sync back for up to half of that (and maxSyncHold),
	// so that the producer coming back below is in time on a machine
	// however loaded. (The first sync, held for a second here, made the
	// hold half a second, and a test goroutine slower than that to come
	// back saw a third sync.)
	// And its recent syncs answered windows of producers (a sync that
	// answers one holds the next only then).
	l.sync.mu.Lock()
	l.sync.mu.syncDur = time.Minute
	l.sync.mu.answeredAvg = 4 * 16
	l.sync.mu.Unlock()
	first := appendWait()
	<-g.held // the first sync runs
	var waiting []chan error
	for i := 0; i < 3; i++ {
		waiting = append(waiting, appendWait())
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The first sync answered one waiter: the next waits for one more,
	// here one that comes back after a while.
	time.Sleep(50 * time.Millisecond)
	g.mu.Lock()
	syncs := g.syncs
	g.mu.Unlock()
	if syncs != 1 {
		t.Fatalf("%d fsyncs before the answered producer came back, want 1", syncs)
	}
	waiting = append(waiting, appendWait())
	for _, ch := range waiting {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.syncs != 2 {
		t.Fatalf("%d fsyncs for 5 durable appends, want 2 (the held sync covers the waiting ones and the returning one)", g.syncs)
	}
}

// A sync that answers one waiter, where recent syncs answered one each
// (producers at a low rate), holds nothing: the waiter that arrived during
// it is synced at once, not after the next producer or the hold's deadline.
func TestLoneProducerIsNotHeld(t *testing.T) {
	l, g, release, appendWait := openHeldLog(t, time.Hour)
	// Syncs as long as an hour, as far as the scheduler knows: a hold
	// would last until a producer comes, which none does.
	l.sync.mu.Lock()
	l.sync.mu.syncDur = 2 * time.Hour
	l.sync.mu.Unlock()
	first := appendWait()
	<-g.held // the first sync runs
	second := appendWait()
	release()
	for i, ch := range []chan error{first, second} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("append %d not durable after a minute: the sync was held for a producer that never came", i)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.syncs != 2 {
		t.Fatalf("%d fsyncs for 2 durable appends, one during the other's sync: want 2", g.syncs)
	}
}

// A truncation forgets what the group commit's syncs covered above it: a
// waiter for records appended again there gets a sync of its own. The
// scheduler kept the old covered end, so a waiter at or below it started
// no sync and waited for one that would never come.
func TestWaiterForRecordsAppendedAfterATruncationIsSynced(t *testing.T) {
	h := newHarness(t, Config{})
	var ends []int64
	for i := 0; i < 4; i++ {
		ends = append(ends, h.append(batch(1, 100, 0)).LastOffset+1)
	}
	if err := waitDurable(h.log, ends[3]); err != nil {
		t.Fatal(err)
	}
	if err := h.log.TruncateTo(ends[0]); err != nil {
		t.Fatal(err)
	}
	end := h.append(batch(1, 100, 0)).LastOffset + 1
	if end > ends[3] {
		t.Fatalf("appended up to %d after the truncation, want at most %d", end, ends[3])
	}
	done := make(chan error, 1)
	if h.log.WhenDurable(end, func(err error) { done <- err }) {
		done <- nil
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no sync made offset %d durable after a truncation (recovery point %d)", end, h.log.RecoveryPoint())
	}
	if rp := h.log.RecoveryPoint(); rp < end {
		t.Fatalf("recovery point %d, want at least %d", rp, end)
	}
}

// A sealed segment's background flush writes the recovery-point file
// without holding rp: while that write's fsync hangs, rolls (which read rp
// under the log's lock, appends waiting behind them), the group commit and
// RecoveryPoint go on. A truncation meanwhile waits for the write, then
// lowers the point: the file never ends above it.
func TestRecoveryPointWriteHoldsNoRollOrTruncationBack(t *testing.T) {
	gate := make(chan struct{})
	g := &syncGateFS{FS: vfs.OSFS{}, name: recoveryPointFile + ".tmp", gate: gate, held: make(chan struct{})}
	dir := t.TempDir()
	l, err := Open(dir, Config{SegmentBytes: 4 << 10}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	for held := false; !held; {
		select {
		case <-g.held:
			held = true
		default:
			if _, err := l.AppendAsLeader(batch(1, 1000, 0), 0); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// A sealed segment's flush now holds the recovery-point write.
	done := make(chan error, 1)
	go func() {
		for range 20 { // several rolls
			res, err := l.AppendAsLeader(batch(1, 1000, 0), 0)
			if err == nil {
				err = waitDurable(l, res.LastOffset+1)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- l.Roll()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rolls and durable appends wait for a recovery-point write")
	}
	if rp, end := l.RecoveryPoint(), l.LogEndOffset(); rp != end {
		t.Fatalf("recovery point %d beside a log end of %d after durable appends", rp, end)
	}
	// A truncation waits for the write in flight, then lowers the point
	// and the file.
	truncated := make(chan error, 1)
	go func() { truncated <- l.TruncateTo(3) }()
	select {
	case err := <-truncated:
		t.Fatalf("truncation done (%v) while a recovery-point write was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-truncated; err != nil {
		t.Fatal(err)
	}
	l.flushes.Wait()
	if rp := l.RecoveryPoint(); rp > 3 {
		t.Fatalf("recovery point %d after a truncation to 3", rp)
	}
	if got := l.readOffsetCheckpoint(recoveryPointFile, "recovery-point"); got > 3 {
		t.Fatalf("recovery-point file at %d after a truncation to 3", got)
	}
}

// openGateFS holds the creation of the next file whose name ends with
// suffix.
type openGateFS struct {
	vfs.FS
	suffix     string
	mu         sync.Mutex
	gate, held chan struct{}
}

func (g *openGateFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
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
	return g.FS.OpenFile(name, flag, perm)
}

// A roll leaves the sealed segment's index files and the producer
// snapshot at its end to the segment's background flush: while their
// writing hangs, appends and further rolls go on, the indexes are read
// from memory, and OpenSealed (which ships the snapshot) and a truncation
// wait for them. The files are there after, and the log reopens whole.
func TestRollLeavesItsFileWritesToTheFlush(t *testing.T) {
	gate := make(chan struct{})
	g := &openGateFS{FS: vfs.OSFS{}, suffix: ".index.tmp", gate: gate, held: make(chan struct{})}
	dir := t.TempDir()
	l, err := Open(dir, Config{SegmentBytes: 4 << 10}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	seq := int32(0)
	appendOne := func() error {
		_, err := l.AppendAsLeader(idemBatch(7, 0, seq, 4), 0)
		seq += 4
		return err
	}
	done := make(chan error, 1)
	go func() {
		// Append until the first sealed segment's flush holds its
		// index write, then roll several times more.
		for held := false; !held; {
			select {
			case <-g.held:
				held = true
			default:
				if err := appendOne(); err != nil {
					done <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
		for range 20 {
			if err := appendOne(); err != nil {
				done <- err
				return
			}
		}
		done <- l.Roll()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("appends and rolls wait for a sealed segment's file writes")
	}
	first := l.Segments()[0]
	// Its records read (the indexes are in memory).
	if rng, err := l.Read(first.BaseOffset, 1<<20, first.NextOffset, true); err != nil || rng.Len() == 0 {
		t.Fatalf("reading the sealed segment: %v (%d bytes)", err, rng.Len())
	} else {
		rng.Release()
	}
	opened := make(chan *SealedSegment, 1)
	go func() {
		ss, err := l.OpenSealed(first.BaseOffset)
		if err != nil {
			t.Error(err)
		}
		opened <- ss
	}()
	select {
	case <-opened:
		t.Fatal("a sealed segment opened for upload before its producer snapshot was written")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	ss := <-opened
	if ss == nil {
		t.FailNow()
	}
	if len(ss.ProducerSnapshot) == 0 {
		t.Fatal("the sealed segment was opened without its producer snapshot")
	}
	ss.Close()
	if err := l.TruncateTo(first.NextOffset + 4); err != nil {
		t.Fatal(err)
	}
	end := l.LogEndOffset()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{segmentName(first.BaseOffset, ".index"), segmentName(first.BaseOffset, ".timeindex"), segmentName(first.NextOffset, snapshotExt)} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("after the roll: %v", err)
		}
	}
	l, err = Open(dir, Config{SegmentBytes: 4 << 10}, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.LogEndOffset(); got != end {
		t.Fatalf("log end %d after reopening, want %d", got, end)
	}
	// The producer state was rebuilt to the truncation: the producer goes
	// on from the sequence after its last kept batch.
	if _, err := l.AppendAsLeader(idemBatch(7, 0, int32(end), 4), 0); err != nil {
		t.Fatalf("appending the producer's next batch after reopening: %v", err)
	}
	l.Close()
}

// A sync is held only while the producers it answered come back within
// the hold's bound: once a watch saw them not come back in time (producers
// at a fixed rate), the next sync starts at once for the waiters that
// arrived during the last one, and producers that come back in time bring
// the hold back.
func TestHoldOnlyWhileProducersComeBack(t *testing.T) {
	l, g, release, appendWait := openHeldLog(t, time.Hour)
	// Syncs as long as two hours, as far as the scheduler knows, that
	// answered windows of producers: a hold would last until the
	// producer comes back, for an hour at most.
	l.sync.mu.Lock()
	l.sync.mu.syncDur = 2 * time.Hour
	l.sync.mu.answeredAvg = 4 * 16
	// The last watch saw producers not come back in time.
	l.sync.mu.noHold = true
	l.sync.mu.Unlock()
	first := appendWait()
	<-g.held // the first sync runs
	second := appendWait()
	release()
	for i, ch := range []chan error{first, second} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("waiter %d not answered: the sync after the first was held", i)
		}
	}
	// The producer the second sync answered comes back (within the
	// hour): the hold is back.
	if err := <-appendWait(); err != nil {
		t.Fatal(err)
	}
	l.sync.mu.Lock()
	noHold := l.sync.mu.noHold
	l.sync.mu.Unlock()
	if noHold {
		t.Fatal("no hold after the answered producer came back in time")
	}
	// A watch whose bound passes before the producer comes back ends
	// the hold again.
	l.sync.mu.Lock()
	l.sync.watchLocked(1)
	l.sync.mu.back.till = time.Millisecond
	l.sync.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	if err := <-appendWait(); err != nil {
		t.Fatal(err)
	}
	l.sync.mu.Lock()
	noHold = l.sync.mu.noHold
	l.sync.mu.Unlock()
	if !noHold {
		t.Fatal("the hold stays after the answered producer came back late")
	}
}

// A hold whose producers do not come back ends by its deadline, hold after
// hold on the scheduler's one timer, also when a hold is re-armed before
// the timer of the one before has fired.
func TestHoldsEndByTheirDeadlineOnOneTimer(t *testing.T) {
	old := maxSyncHold
	maxSyncHold = 40 * time.Millisecond
	defer func() { maxSyncHold = old }()
	l, err := Open(t.TempDir(), Config{}, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var timer *time.Timer
	for i := 0; i < 8; i++ {
		l.sync.mu.Lock()
		l.sync.mu.syncDur = time.Minute
		l.sync.holdLocked(100)
		if i%2 == 0 {
			l.sync.holdLocked(100)
		}
		if timer == nil {
			timer = l.sync.mu.holdTimer
		} else if l.sync.mu.holdTimer != timer {
			l.sync.mu.Unlock()
			t.Fatalf("hold %d has a timer of its own", i)
		}
		l.sync.mu.Unlock()
		res, err := l.AppendAsLeader(batch(1, 100, 0), 0)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		if l.WhenDurable(res.LastOffset+1, func(err error) { ch <- err }) {
			ch <- nil
		}
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("hold %d never ended", i)
		}
	}
}

// tellCount is a DurableWaiter that counts what it was told.
type tellCount struct {
	mu        sync.Mutex
	told, err int
}

func (c *tellCount) Durable(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.told++
	if err != nil {
		c.err++
	}
}

// An append as leader, alone or as a group, and a wait for its durability
// told to a waiter the caller has (WhenDurableTell) allocate nothing: the
// write's ticket is one a published append gave back, the queue of writes
// keeps its array, a group's vector is the array its first ticket keeps,
// and the waiter is not a new closure. Every waiter is told once when the
// sync covers it. (The files here have no vectored write: a group is
// written with a write per batch, which allocates nothing.)
func TestAppendsAndDurableWaitsAllocateNothing(t *testing.T) {
	l, g, release, _ := openHeldLog(t, time.Millisecond)
	bs := []Batch{batch(3, 100, 0), batch(2, 100, 0), batch(1, 100, 0), batch(4, 100, 0)}
	var w tellCount
	waits := 0
	appendTell := func(group int) {
		var res AppendResult
		var err error
		if group > 0 {
			var rs [4]AppendResult
			var errs [4]error
			l.AppendBatchesAsLeader(bs[:group], 0, rs[:], errs[:])
			for i := range group {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
			}
			res = rs[group-1]
		} else {
			res, err = l.AppendAsLeader(bs[0], 0)
		}
		if err != nil {
			t.Fatal(err)
		}
		waits++
		if l.WhenDurableTell(res.LastOffset+1, &w) {
			t.Fatal("durable already while the sync is held")
		}
	}
	appendTell(0)
	<-g.held // the first sync runs, and waits: the next waits queue
	for range 150 {
		appendTell(0) // the waiters' array grows to what follows
	}
	for _, group := range []int{0, 1, 4} {
		if allocs := testing.AllocsPerRun(30, func() { appendTell(group) }); allocs != 0 {
			t.Errorf("group of %d: %v allocations per append and wait", group, allocs)
		}
	}
	release()
	deadline := time.Now().Add(time.Minute)
	for {
		w.mu.Lock()
		told, errs := w.told, w.err
		w.mu.Unlock()
		if told == waits && errs == 0 {
			break
		}
		if told > waits || errs > 0 || time.Now().After(deadline) {
			t.Fatalf("%d waits told %d times (%d errors)", waits, told, errs)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEverySyncIsToldWithTheWaitersItAnswered: OnSync hears of each sync of
// the group commit, after it, with the waiters it answered (together, every
// durable wait) and, for a failed one, its error.
func TestEverySyncIsToldWithTheWaitersItAnswered(t *testing.T) {
	var (
		mu    sync.Mutex
		syncs []SyncStats
	)
	h, ffs := newFaultyHarness(t, Config{})
	h.opts.OnSync = func(s SyncStats) {
		mu.Lock()
		defer mu.Unlock()
		syncs = append(syncs, s)
	}
	h.restart()
	const producers = 6
	var waited atomic.Int32 // a producer whose append a sync already covered does not wait
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		go func() {
			res, err := h.log.AppendAsLeader(batch(1, 100, 0), 0)
			if err != nil {
				errs <- err
				return
			}
			ch := make(chan error, 1)
			if h.log.WhenDurable(res.LastOffset+1, func(err error) { ch <- err }) {
				errs <- nil
				return
			}
			waited.Add(1)
			errs <- <-ch
		}()
	}
	for p := 0; p < producers; p++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	h.log.flushes.Wait() // the last sync's note comes after its answers
	mu.Lock()
	answered := 0
	for _, s := range syncs {
		if s.Err != nil || s.Took <= 0 || s.Answered < 0 {
			t.Fatalf("a sync that succeeded was told as %+v", s)
		}
		answered += s.Answered
	}
	if len(syncs) == 0 || answered != int(waited.Load()) {
		t.Fatalf("%d syncs told, answering %d waiters in all, want at least one answering the %d that waited", len(syncs), answered, waited.Load())
	}
	syncs = nil
	mu.Unlock()

	ffs.FailSyncs(1, syscall.EIO)
	res := h.append(batch(1, 10, 0))
	if err := waitDurable(h.log, res.LastOffset+1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("durability of an append whose fsync failed: %v", err)
	}
	h.log.flushes.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(syncs) != 1 || !errors.Is(syncs[0].Err, syscall.EIO) || syncs[0].Answered != 1 {
		t.Fatalf("the failed sync was told as %+v, want one with its error and its one waiter", syncs)
	}
}

// stalledRenameFS holds the first rename onto a file named name until
// release is closed, telling stalled of it.
type stalledRenameFS struct {
	vfs.FS
	name    string
	armed   atomic.Bool
	stalled chan struct{}
	release chan struct{}
}

func (f *stalledRenameFS) Rename(from, to string) error {
	if filepath.Base(to) == f.name && f.armed.CompareAndSwap(true, false) {
		f.stalled <- struct{}{}
		<-f.release
	}
	return f.FS.Rename(from, to)
}

// readHighWatermarkFile is the offset the high watermark's checkpoint in
// dir holds.
func readHighWatermarkFile(t *testing.T, dir string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, highWatermarkFile))
	if err != nil {
		t.Fatal(err)
	}
	off, err := decodeOffsetCheckpoint("high-watermark", data)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// A checkpoint of the high watermark that takes long to write (a rename
// that waits for the discard of the old file's blocks) does not hold up
// the high watermark's moves, which the leader makes with its partition's
// appends held; what moved meanwhile is written by the next checkpoint.
func TestASlowHighWatermarkCheckpointDoesNotHoldUpItsMoves(t *testing.T) {
	fs := &stalledRenameFS{FS: vfs.OSFS{}, name: highWatermarkFile, stalled: make(chan struct{}), release: make(chan struct{})}
	dir := t.TempDir()
	l, err := Open(dir, Config{}, Options{FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := l.AppendAsLeader(batch(1, 10, 0), 0); err != nil {
			t.Fatal(err)
		}
	}
	l.SetHighWatermark(5)
	fs.armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- l.CheckpointHighWatermark() }()
	<-fs.stalled
	moved := make(chan struct{})
	go func() {
		l.SetHighWatermark(8)
		close(moved)
	}()
	select {
	case <-moved:
	case <-time.After(10 * time.Second):
		t.Fatal("SetHighWatermark waited for the checkpoint's write")
	}
	if hw := l.HighWatermark(); hw != 8 {
		t.Fatalf("high watermark %d, want 8", hw)
	}
	close(fs.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := readHighWatermarkFile(t, dir); got != 5 {
		t.Fatalf("checkpoint %d, want the 5 it started with", got)
	}
	if err := l.CheckpointHighWatermark(); err != nil {
		t.Fatal(err)
	}
	if got := readHighWatermarkFile(t, dir); got != 8 {
		t.Fatalf("checkpoint %d after the next, want 8", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// The periodic checkpoint of the high watermark overwrites the last one in
// place (no temporary, no rename: on a filesystem mounted with discard,
// freeing the old file's blocks waits for their discard); a checkpoint of
// another length (written before checkpoints had one length) is replaced
// whole. What is written reads back after a restart.
func TestTheHighWatermarkCheckpointIsOverwrittenInPlace(t *testing.T) {
	h := newHarness(t, Config{})
	for range 20 {
		h.append(batch(1, 10, 0))
	}
	path := filepath.Join(h.dir, highWatermarkFile)
	checkpoint := func(hw int64) os.FileInfo {
		t.Helper()
		h.log.SetHighWatermark(hw)
		if err := h.log.CheckpointHighWatermark(); err != nil {
			t.Fatal(err)
		}
		if got := readHighWatermarkFile(t, h.dir); got != hw {
			t.Fatalf("checkpoint holds %d, want %d", got, hw)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	first := checkpoint(3)
	if again := checkpoint(17); !os.SameFile(first, again) || again.Size() != first.Size() {
		t.Fatal("the checkpoint was replaced, not overwritten")
	}
	// A checkpoint of another length is replaced.
	writeFile(t, path, encodeOffsetCheckpoint("high-watermark", 12))
	old, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if replaced := checkpoint(19); os.SameFile(old, replaced) || replaced.Size() != first.Size() {
		t.Fatalf("a %d-byte checkpoint was overwritten in place", old.Size())
	}
	h.crash()
	if hw := h.log.HighWatermark(); hw != 19 {
		t.Fatalf("high watermark %d after a crash, want 19", hw)
	}
}
