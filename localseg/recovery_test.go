package localseg

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// abandon drops the log without closing it, as kill -9 would (background
// flushes are let finish so the test is deterministic).
func (h *harness) abandon() {
	h.t.Helper()
	h.log.flushes.Wait()
	h.log.retireAll()
	h.log.zeroers.Wait()
	h.log = nil
}

func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if at < 0 {
		at += len(data)
	}
	data[at] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCleanRestartSkipsTheScan(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 3})
	for i := 0; i < 9; i++ {
		h.append(batch(1, 100, int64(i)))
	}
	if err := h.log.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage a record payload (inside the CRC) of a sealed segment: a
	// clean open trusts the segment and does not notice.
	flipByte(t, filepath.Join(h.dir, segmentName(3, ".log")), -5)
	h.open()
	if h.log.LogEndOffset() != 9 || len(h.log.Segments()) != 3 {
		t.Fatalf("clean open: log end %d, %d segments", h.log.LogEndOffset(), len(h.log.Segments()))
	}
	// The same damage after a crash, with the recovery point below it,
	// is found and cut.
	h.abandon()
	writeFile(t, filepath.Join(h.dir, recoveryPointFile), encodeOffsetCheckpoint("recovery-point", 0))
	h.open()
	if h.log.LogEndOffset() != 5 {
		t.Fatalf("recovery kept the log up to %d, want 5", h.log.LogEndOffset())
	}
}

func TestCleanRestartResumesTheActiveSegmentFromItsIndexes(t *testing.T) {
	h := newHarness(t, Config{IndexIntervalBytes: 300})
	for i := 0; i < 50; i++ {
		h.append(batch(2, 50, int64(1000+i)))
	}
	h.restart()
	if h.log.LogEndOffset() != 100 {
		t.Fatalf("log end %d", h.log.LogEndOffset())
	}
	act := h.log.active()
	if n := act.activeIdx.Load().len(); n == 0 {
		t.Fatal("active index not loaded")
	}
	// Appends continue the index as if there had been no restart.
	for i := 50; i < 60; i++ {
		h.append(batch(2, 50, int64(1000+i)))
	}
	fresh, tfresh, err := rebuildIndexes(act.w, act.base, act.size.Load(), act.interval)
	if err != nil {
		t.Fatal(err)
	}
	got := act.activeIdx.Load().entries()
	if len(got) != len(fresh) {
		t.Fatalf("index after restart has %d entries, a rebuild %d", len(got), len(fresh))
	}
	for i := range got {
		if got[i] != fresh[i] {
			t.Fatalf("entry %d: %+v, rebuilt %+v", i, got[i], fresh[i])
		}
	}
	if off, ts, _, ok, _ := h.log.MaxTimestamp(context.Background()); !ok || ts != tfresh[len(tfresh)-1].ts || off != 119 {
		t.Fatalf("max timestamp %d at %d", ts, off)
	}
	if got := h.readAll(0); len(got) != 60 {
		t.Fatalf("%d batches", len(got))
	}
}

func TestCorruptActiveIndexAfterCleanShutdownIsRebuilt(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		at   int
	}{
		{"offset index entry", ".index", 0},
		{"offset index trailer", ".index", -3},
		{"time index entry", ".timeindex", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, Config{IndexIntervalBytes: 200})
			for i := 0; i < 30; i++ {
				h.append(batch(1, 100, int64(i)))
			}
			h.log.Close()
			flipByte(t, filepath.Join(h.dir, segmentName(0, c.file)), c.at)
			h.open()
			if h.log.LogEndOffset() != 30 {
				t.Fatalf("log end %d", h.log.LogEndOffset())
			}
			for off := int64(0); off < 30; off += 3 {
				r, err := h.log.Read(off, 1<<20, 1<<62, false)
				if err != nil {
					t.Fatal(err)
				}
				buf, _ := r.Bytes()
				r.Release()
				if Batch(buf).BaseOffset() != off {
					t.Fatalf("read at %d found %d", off, Batch(buf).BaseOffset())
				}
			}
		})
	}
}

func TestCorruptCheckpointsFallBackSafely(t *testing.T) {
	one := batch(1, 100, 0)
	setup := func(t *testing.T) *harness {
		h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 4, RetentionMs: -1})
		for i := 0; i < 10; i++ {
			if _, err := h.log.AppendAsLeader(idemBatch(7, 0, int32(i), 1), int32(i/3)); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.log.SetLogStartOffset(2); err != nil {
			t.Fatal(err)
		}
		h.log.Flush()
		return h
	}
	for _, c := range []struct {
		name  string
		file  string
		check func(t *testing.T, h *harness)
	}{
		{"recovery point: recovery from the first segment", recoveryPointFile, func(t *testing.T, h *harness) {
			if h.log.LogEndOffset() != 10 {
				t.Fatalf("log end %d", h.log.LogEndOffset())
			}
		}},
		{"log start: the first segment's base", logStartFile, func(t *testing.T, h *harness) {
			if h.log.LogStartOffset() != 0 {
				t.Fatalf("log start %d", h.log.LogStartOffset())
			}
		}},
		{"leader epochs: rebuilt from the batches", epochCheckpointFile, func(t *testing.T, h *harness) {
			eps := h.log.Epochs()
			if len(eps) != 4 || eps[3] != (EpochEntry{3, 9}) {
				t.Fatalf("epochs %+v", eps)
			}
		}},
		{"clean-shutdown marker: recovery", cleanShutdownFile, func(t *testing.T, h *harness) {
			if h.log.LogEndOffset() != 10 {
				t.Fatalf("log end %d", h.log.LogEndOffset())
			}
			if h.log.OpenedClean() {
				t.Fatal("a log whose clean-shutdown marker was damaged says it was opened clean")
			}
		}},
		{"producer snapshot: an older one or the log", segmentName(10, snapshotExt), func(t *testing.T, h *harness) {
			if res, err := h.log.AppendAsLeader(idemBatch(7, 0, 9, 1), 3); err != nil || !res.Duplicate {
				t.Fatalf("retry of the last batch: %+v %v", res, err)
			}
			if _, err := h.log.AppendAsLeader(idemBatch(7, 0, 11, 1), 3); err == nil {
				t.Fatal("a sequence gap was accepted")
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := setup(t)
			if err := h.log.Close(); err != nil {
				t.Fatal(err)
			}
			h.log = nil
			path := filepath.Join(h.dir, c.file)
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("no %s to corrupt: %v", c.file, err)
			}
			flipByte(t, path, 0)
			h.open()
			c.check(t, h)
			// And the same with the file emptied (a torn write).
			h.log.Close()
			h.log = nil
			writeFile(t, path, nil)
			h.open()
			c.check(t, h)
		})
	}
}

func TestRecoveryReplaysEpochsTheCheckpointMissed(t *testing.T) {
	h := newHarness(t, Config{})
	for i := 0; i < 6; i++ {
		if _, err := h.log.AppendAsLeader(batch(1, 10, 0), int32(i/2)); err != nil {
			t.Fatal(err)
		}
	}
	h.abandon()
	// An epoch checkpoint that knows only the first epoch (as a crash of
	// an older version between the data and the checkpoint would leave).
	stale := epochCache{entries: []EpochEntry{{0, 0}}}
	writeFile(t, filepath.Join(h.dir, epochCheckpointFile), stale.encode())
	h.open()
	eps := h.log.Epochs()
	want := []EpochEntry{{0, 0}, {1, 2}, {2, 4}}
	if len(eps) != len(want) {
		t.Fatalf("epochs %+v, want %+v", eps, want)
	}
	for i := range want {
		if eps[i] != want[i] {
			t.Fatalf("epochs %+v, want %+v", eps, want)
		}
	}
}

func TestRecoveryPointFollowsBackgroundFlushes(t *testing.T) {
	one := batch(1, 100, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for i := 0; i < 7; i++ {
		h.append(batch(1, 100, 0))
	}
	h.log.flushes.Wait()
	// Three sealed segments [0,2) [2,4) [4,6): flushed in the background.
	if rp := h.log.RecoveryPoint(); rp != 6 {
		t.Fatalf("recovery point %d after rolls, want 6", rp)
	}
	if err := h.log.Flush(); err != nil {
		t.Fatal(err)
	}
	if rp := h.log.RecoveryPoint(); rp != 7 {
		t.Fatalf("recovery point %d after Flush, want 7", rp)
	}
	h.abandon()
	h.open()
	if rp := h.log.RecoveryPoint(); rp != 7 {
		t.Fatalf("recovery point %d after reopen", rp)
	}
}

func TestFlushPolicy(t *testing.T) {
	t.Run("flush.messages", func(t *testing.T) {
		h := newHarness(t, Config{FlushMessages: 5})
		for i := 0; i < 4; i++ {
			if res := h.append(batch(1, 10, 0)); res.FlushDue {
				t.Fatalf("flush due at %d", res.LastOffset)
			}
		}
		if rp := h.log.RecoveryPoint(); rp != 0 {
			t.Fatalf("recovery point %d before flush.messages", rp)
		}
		res := h.append(batch(1, 10, 0))
		if !res.FlushDue {
			t.Fatal("flush.messages reached without a flush due")
		}
		if err := waitDurable(h.log, res.LastOffset+1); err != nil {
			t.Fatal(err)
		}
		if rp := h.log.RecoveryPoint(); rp != 5 {
			t.Fatalf("recovery point %d at flush.messages, want 5", rp)
		}
	})
	t.Run("flush.ms", func(t *testing.T) {
		// A timer flushes, with no append or retention pass after.
		h := newHarness(t, Config{FlushMs: 20})
		for want := int64(1); want <= 3; want++ {
			h.append(batch(1, 10, 0))
			deadline := time.Now().Add(5 * time.Second)
			for h.log.RecoveryPoint() < want {
				if time.Now().After(deadline) {
					t.Fatalf("recovery point %d 5s after an append with flush.ms 20, want %d", h.log.RecoveryPoint(), want)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
}

// waitDurable waits for WhenDurable's answer.
func waitDurable(l *Log, offset int64) error {
	ch := make(chan error, 1)
	if l.WhenDurable(offset, func(err error) { ch <- err }) {
		return nil
	}
	return <-ch
}

func TestProducerStateRebuiltWithoutSnapshots(t *testing.T) {
	one := idemBatch(4, 2, 0, 1)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for seq := int32(0); seq < 9; seq++ {
		if _, err := h.log.AppendAsLeader(idemBatch(4, 2, seq, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	h.abandon()
	for _, off := range (&Log{fs: OSFS{}, dir: h.dir}).snapshotOffsets() {
		os.Remove(filepath.Join(h.dir, segmentName(off, snapshotExt)))
	}
	h.open()
	if res, err := h.log.AppendAsLeader(idemBatch(4, 2, 8, 1), 0); err != nil || !res.Duplicate || res.FirstOffset != 8 {
		t.Fatalf("retry after a replay: %+v %v", res, err)
	}
	if _, err := h.log.AppendAsLeader(idemBatch(4, 1, 9, 1), 0); err == nil {
		t.Fatal("an old epoch was accepted after a replay")
	}
}

func TestStraySnapshotsAreRemovedOnOpen(t *testing.T) {
	one := batch(1, 10, 0)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2})
	for i := 0; i < 5; i++ {
		h.append(batch(1, 10, 0))
	}
	h.restart() // a snapshot at 5 (the log end), and at 2 and 4 (segment bases)
	h.append(batch(1, 10, 0))
	h.restart() // and one at 6: the one at 5 is a stray now
	got := h.log.snapshotOffsets()
	want := []int64{2, 4, 6}
	if len(got) != len(want) {
		t.Fatalf("snapshots %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("snapshots %v, want %v", got, want)
		}
	}
}

// A log whose segment files are gone while its checkpoints say its start
// had moved (a crash in the middle of a truncation that empties it) opens
// empty at that start, and says its segments were lost: its end says
// nothing of where it ended. A new log, and one whose start never moved,
// say nothing.
func TestALogWhoseSegmentsWereLostSaysSo(t *testing.T) {
	h := newHarness(t, Config{})
	if h.log.LostSegmentsAtOpen() {
		t.Fatal("a new log reports lost segments")
	}
	for range 4 {
		h.append(batch(1, 10, 0))
	}
	if err := h.log.SetLogStartOffset(2); err != nil {
		t.Fatal(err)
	}
	h.abandon()
	logs, err := filepath.Glob(filepath.Join(h.dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("segments %v, %v", logs, err)
	}
	for _, f := range logs {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	h.open()
	if !h.log.LostSegmentsAtOpen() || h.log.LogStartOffset() != 2 || h.log.LogEndOffset() != 2 {
		t.Fatalf("lost %v, log [%d, %d), want lost at [2, 2)", h.log.LostSegmentsAtOpen(), h.log.LogStartOffset(), h.log.LogEndOffset())
	}
	h.restart()
	if h.log.LostSegmentsAtOpen() {
		t.Fatal("the log reopened with its active segment reports lost segments")
	}
}

// A roll's producer snapshot is written by its background flush; a crash
// before it leaves none at the new segment's base. The recovery that
// replays past that base writes it, so that once retention deletes the
// segments below it, the producers whose batches were there are still
// known (a retry of their last batch is a duplicate, not new records).
func TestRecoveryWritesTheSnapshotsARollLost(t *testing.T) {
	h := lostRollSnapshot(t)
	h.crash()
	if got := h.log.snapshotOffsets(); len(got) == 0 || got[len(got)-1] != 4 {
		t.Fatalf("snapshots after the recovery %v, want one at 4", got)
	}
	h.log.SetLogStartOffset(4)
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("retention deleted %d segments: %v", n, err)
	}
	h.crash()
	requireRetryIsDuplicate(t, h)
}

// lostRollSnapshot returns a log of producer 4's sequences 0 to 3 in
// segments at 0 and 2, and an empty active segment at 4 whose producer
// snapshot the roll did not leave (a crash before its background flush
// wrote it, or a write that failed).
func lostRollSnapshot(t *testing.T) *harness {
	one := idemBatch(4, 2, 0, 1)
	h := newHarness(t, Config{SegmentBytes: int64(len(one)) * 2, RetentionMs: -1})
	for seq := int32(0); seq < 4; seq++ {
		if _, err := h.log.AppendAsLeader(idemBatch(4, 2, seq, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.log.Roll(); err != nil {
		t.Fatal(err)
	}
	h.log.waitRollFiles()
	if err := os.Remove(filepath.Join(h.dir, segmentName(4, snapshotExt))); err != nil {
		t.Fatal(err)
	}
	return h
}

// requireRetryIsDuplicate fails t unless a retry of producer 4's last
// batch (lostRollSnapshot) is answered as the duplicate it is.
func requireRetryIsDuplicate(t *testing.T, h *harness) {
	t.Helper()
	res, err := h.log.AppendAsLeader(idemBatch(4, 2, 3, 1), 0)
	if err != nil || !res.Duplicate || res.FirstOffset != 3 {
		t.Fatalf("retry of producer 4's last batch: %+v %v", res, err)
	}
}
