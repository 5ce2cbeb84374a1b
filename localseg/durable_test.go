package localseg

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

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
	h.append(batch(1, 10, 0))
	rp := h.log.RecoveryPoint()
	ffs.FailSyncs(1, syscall.EIO)
	_, err := h.log.AppendAsLeader(batch(1, 10, 0), 0)
	if !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrOffline) {
		t.Fatalf("append whose fsync failed: %v", err)
	}
	// Every sync from now on would be counted.
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
	if h.log.Offline() != nil || h.log.RecoveryPoint() != rp {
		t.Fatalf("reopened: offline %v, recovery point %d", h.log.Offline(), h.log.RecoveryPoint())
	}
	h.append(batch(1, 10, 0))
}

func TestFailedBackgroundFlushTakesTheLogOffline(t *testing.T) {
	one := batch(1, 100, 0)
	h, ffs := newFaultyHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	ffs.Inject(errorfs.Fault{Op: errorfs.OpSync, PathContains: segmentName(0, ".log"), Err: syscall.EIO})
	for i := 0; i < 3; i++ {
		h.append(batch(1, 100, 0))
	}
	h.log.flushes.Wait()
	if !errors.Is(h.log.Offline(), syscall.EIO) || h.log.RecoveryPoint() != 0 {
		t.Fatalf("offline %v, recovery point %d", h.log.Offline(), h.log.RecoveryPoint())
	}
	if _, err := h.log.AppendAsLeader(batch(1, 100, 0), 0); !errors.Is(err, ErrOffline) {
		t.Fatalf("append after a failed background flush: %v", err)
	}
}
