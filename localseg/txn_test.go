package localseg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs/crashfs"
)

// txnBatch builds a transactional batch of n records from producer pid,
// starting at sequence seq.
func txnBatch(pid int64, epoch int16, seq int32, n int) Batch {
	recs := make([]recordbatch.Record, n)
	for i := range recs {
		recs[i].Value = []byte(fmt.Sprint(seq + int32(i)))
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Transactional: true, ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq, BaseTimestamp: 1}, recs)
	if err != nil {
		panic(err)
	}
	return Batch(b)
}

// marker appends a transaction marker of producer pid (coordinator epoch 0)
// and returns its offset.
func (h *harness) marker(pid int64, epoch int16, commit bool) int64 {
	h.t.Helper()
	res, err := h.log.AppendMarker(Marker{ProducerID: pid, ProducerEpoch: epoch, Commit: commit, Timestamp: 5}, 0)
	if err != nil {
		h.t.Fatalf("marker of producer %d: %v", pid, err)
	}
	if res.FirstOffset != res.LastOffset || res.MaxTimestamp != 5 {
		h.t.Fatalf("marker appended as %+v", res)
	}
	return res.FirstOffset
}

func requireUnstable(t *testing.T, l *Log, want int64) {
	t.Helper()
	got, ok := l.FirstUnstableOffset()
	if want < 0 && ok {
		t.Fatalf("first unstable offset %d, want none", got)
	}
	if want >= 0 && (!ok || got != want) {
		t.Fatalf("first unstable offset %d (%v), want %d", got, ok, want)
	}
}

func requireAborted(t *testing.T, l *Log, from, to int64, want ...AbortedTxn) {
	t.Helper()
	if got := l.AbortedTxns(from, to); !slices.Equal(got, want) {
		t.Fatalf("aborted transactions in [%d, %d): %+v, want %+v", from, to, got, want)
	}
}

// threeTxns writes, from offset 0: a plain batch; producers 1 and 2 open
// transactions; 1 commits; 2 aborts; 1 opens another, 3 opens one; 1
// aborts; 3 aborts; producer 5 writes outside transactions; 4 opens one
// and leaves it open (offset 12, the last). The log rolls before the
// offsets in rollAt. It returns the aborted transactions and the open
// one's first offset.
func threeTxns(t *testing.T, h *harness, rollAt ...int64) ([]AbortedTxn, int64) {
	t.Helper()
	step := func(want int64, f func() int64) {
		t.Helper()
		if slices.Contains(rollAt, h.log.LogEndOffset()) {
			if err := h.log.Roll(); err != nil {
				t.Fatal(err)
			}
		}
		if got := f(); got != want {
			t.Fatalf("appended at %d, want %d", got, want)
		}
	}
	add := func(b Batch) func() int64 { return func() int64 { return h.append(b).FirstOffset } }
	mark := func(pid int64, commit bool) func() int64 { return func() int64 { return h.marker(pid, 0, commit) } }
	requireUnstable(t, h.log, -1)
	step(0, add(batch(1, 10, 0)))
	step(1, add(txnBatch(1, 0, 0, 2)))
	requireUnstable(t, h.log, 1)
	step(3, add(txnBatch(2, 0, 0, 1)))
	step(4, add(txnBatch(1, 0, 2, 1)))
	step(5, mark(1, true))
	requireUnstable(t, h.log, 3)
	step(6, mark(2, false))
	requireUnstable(t, h.log, -1)
	step(7, add(txnBatch(1, 0, 3, 1)))
	step(8, add(txnBatch(3, 0, 0, 1)))
	step(9, mark(1, false))
	requireUnstable(t, h.log, 8)
	step(10, mark(3, false))
	step(11, add(idemBatch(5, 0, 0, 1)))
	step(12, add(txnBatch(4, 0, 0, 1)))
	requireUnstable(t, h.log, 12)
	return []AbortedTxn{
		{ProducerID: 2, FirstOffset: 3, LastOffset: 6, LastStableOffset: 7},
		{ProducerID: 1, FirstOffset: 7, LastOffset: 9, LastStableOffset: 8},
		{ProducerID: 3, FirstOffset: 8, LastOffset: 10, LastStableOffset: 11},
	}, 12
}

func TestTransactionsMoveTheFirstUnstableOffsetAndListTheAborted(t *testing.T) {
	h := newHarness(t, Config{})
	aborted, _ := threeTxns(t, h)
	requireAborted(t, h.log, 0, 100, aborted...)
	for _, c := range []struct {
		from, to int64
		want     []AbortedTxn
	}{
		{0, 3, nil},                     // before every transaction: the first entry's LSO ends the search
		{4, 5, aborted[:1]},             // inside producer 2's
		{6, 7, aborted[:1]},             // 2's marker; 1's second starts at the bound
		{7, 8, aborted[1:2]},            // 1's second; 3's starts at the bound
		{7, 9, aborted[1:3]},            // both
		{10, 11, aborted[2:3]},          // 3's marker
		{11, 100, nil},                  // after every marker
		{0, math.MaxInt64, aborted[:3]}, // all
	} {
		requireAborted(t, h.log, c.from, c.to, c.want...)
	}
	ps := h.log.Producers()
	want := map[int64]int64{1: -1, 2: -1, 3: -1, 4: 12, 5: -1}
	for _, p := range ps {
		if p.CurrentTxnStartOffset != want[p.ID] {
			t.Fatalf("producer %d: transaction open at %d, want %d", p.ID, p.CurrentTxnStartOffset, want[p.ID])
		}
		if p.ID <= 3 && p.CoordinatorEpoch != 0 {
			t.Fatalf("producer %d: coordinator epoch %d", p.ID, p.CoordinatorEpoch)
		}
	}
	// The files hold the entries in Kafka's format.
	data, err := os.ReadFile(filepath.Join(h.dir, segmentName(0, txnIndexExt)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, EncodeTxnIndex(aborted)) || len(data) != 3*34 || data[1] != 0 || data[9] != 2 {
		t.Fatalf("transaction index %x", data)
	}
}

func TestTransactionMarkersAreFenced(t *testing.T) {
	h := newHarness(t, Config{})
	appendErr := func(b Batch) error {
		t.Helper()
		_, err := h.log.AppendAsLeader(b, 0)
		return err
	}
	markerErr := func(pid int64, epoch int16, coordinator int32) error {
		t.Helper()
		_, err := h.log.AppendMarker(Marker{ProducerID: pid, ProducerEpoch: epoch, Commit: true, CoordinatorEpoch: coordinator}, 0)
		return err
	}
	if err := appendErr(txnBatch(1, 1, 0, 2)); err != nil {
		t.Fatal(err)
	}
	// A batch outside the transaction, in its epoch or a newer one.
	if err := appendErr(idemBatch(1, 1, 2, 1)); !errors.Is(err, ErrInvalidTxnState) {
		t.Fatalf("non-transactional batch in an open transaction: %v", err)
	}
	if err := appendErr(idemBatch(1, 2, 0, 1)); !errors.Is(err, ErrInvalidTxnState) {
		t.Fatalf("non-transactional batch of a new epoch in an open transaction: %v", err)
	}
	// A marker of an older producer epoch.
	if err := markerErr(1, 0, 5); !errors.Is(err, ErrInvalidProducerEpoch) {
		t.Fatalf("marker of an old epoch: %v", err)
	}
	requireUnstable(t, h.log, 0)
	if err := markerErr(1, 1, 5); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, -1)
	// A coordinator of an older epoch; the same one again is not fenced.
	if err := markerErr(1, 1, 4); !errors.Is(err, ErrTransactionCoordinatorFenced) {
		t.Fatalf("marker of an old coordinator: %v", err)
	}
	if err := markerErr(1, 1, 5); err != nil {
		t.Fatalf("retried marker: %v", err)
	}
	// Outside a transaction, the producer writes as an idempotent one.
	if err := appendErr(idemBatch(1, 1, 2, 1)); err != nil {
		t.Fatal(err)
	}
	// A marker of a newer epoch (the coordinator bumped it to abort) is
	// taken: the epoch starts over at sequence 0.
	if err := markerErr(1, 2, 6); err != nil {
		t.Fatal(err)
	}
	if err := appendErr(txnBatch(1, 2, 3, 1)); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("sequence 3 after the epoch's marker: %v", err)
	}
	if err := appendErr(txnBatch(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	// A producer the log does not know.
	if err := markerErr(9, 0, 3); err != nil {
		t.Fatalf("marker of an unknown producer: %v", err)
	}
	if ps := h.log.Producers(); len(ps) != 2 || ps[1].ID != 9 || ps[1].CoordinatorEpoch != 3 || ps[1].CurrentTxnStartOffset != -1 {
		t.Fatalf("producers %+v", ps)
	}
	// Clients do not write control batches.
	b, err := buildMarker(Marker{ProducerID: 1, ProducerEpoch: 2, CoordinatorEpoch: 6})
	if err != nil {
		t.Fatal(err)
	}
	if err := appendErr(b); !errors.Is(err, recordbatch.ErrInvalidRecord) {
		t.Fatalf("a client's control batch: %v", err)
	}
	if _, err := h.log.AppendMarker(Marker{ProducerID: -1}, 0); err == nil {
		t.Fatal("a marker without a producer id was appended")
	}
}

func TestReadMarker(t *testing.T) {
	for _, m := range []Marker{{ProducerID: 1, Commit: true, CoordinatorEpoch: 7}, {ProducerID: 2, CoordinatorEpoch: -1}} {
		b, err := buildMarker(m)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Control() || !b.Transactional() || b.BaseSequence() != -1 || b.RecordCount() != 1 || recordbatch.Check(b) != nil {
			t.Fatalf("marker batch %x", []byte(b))
		}
		got, err := readMarker(b)
		if err != nil || got.commit != m.Commit || got.coordinatorEpoch != m.CoordinatorEpoch || got.empty {
			t.Fatalf("read %+v (%v) from %+v", got, err, m)
		}
	}
	build := func(key, value []byte) recordbatch.Batch {
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Transactional: true, Control: true, ProducerID: 1, BaseSequence: -1}, []recordbatch.Record{{Key: key, Value: value}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, b := range map[string]recordbatch.Batch{
		"short key":        build([]byte{0, 0, 0}, []byte{0, 0, 0, 0, 0, 1}),
		"negative version": build([]byte{0xff, 0xff, 0, 0}, []byte{0, 0, 0, 0, 0, 1}),
		"other type":       build([]byte{0, 0, 0, 2}, []byte{0, 0, 0, 0, 0, 1}),
		"short value":      build([]byte{0, 0, 0, 1}, []byte{0, 0, 0, 0, 1}),
		"header only":      build([]byte{0, 0, 0, 1}, []byte{0, 0, 0, 0, 0, 1})[:recordbatch.HeaderSize],
	} {
		if _, err := readMarker(b); !errors.Is(err, recordbatch.ErrCorrupt) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// A later version is read as version 0 (Kafka's forward compatibility).
	if m, err := readMarker(build([]byte{0, 1, 0, 1}, []byte{0, 1, 0, 0, 0, 9, 0xaa})); err != nil || !m.commit || m.coordinatorEpoch != 9 {
		t.Fatalf("later versions: %+v %v", m, err)
	}
}

// A follower takes the leader's batches as they are: a control batch that
// is no transaction marker changes no producer state, and fails nothing.
func TestFollowerSkipsAControlBatchThatIsNoMarker(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := h.log.AppendAsFollower(txnBatch(1, 0, 0, 2)); err != nil {
		t.Fatal(err)
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: 2, Transactional: true, Control: true, ProducerID: 1, BaseSequence: -1},
		[]recordbatch.Record{{Key: []byte{0, 0, 0, 7}, Value: []byte{0, 0, 0, 0, 0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.log.AppendAsFollower(b); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, 0)
	h.crash()
	requireUnstable(t, h.log, 0)
	if h.log.LogEndOffset() != 3 {
		t.Fatalf("log end %d", h.log.LogEndOffset())
	}
}

// Regression: a follower's append that rolled took the producer snapshot
// before the producer state had the batches below the roll.
func TestFollowerAppendGivesTheLeadersState(t *testing.T) {
	one := len(txnBatch(1, 0, 0, 1))
	cfg := Config{SegmentBytes: int64(one * 4), RetentionMs: -1}
	leader := newHarness(t, cfg)
	aborted, open := threeTxns(t, leader)
	leader.log.waitRollFiles()
	var all []byte
	for _, b := range leader.readAll(0) {
		all = append(all, b...)
	}
	follower := newHarness(t, cfg)
	if _, err := follower.log.AppendAsFollower(all); err != nil {
		t.Fatal(err)
	}
	follower.log.waitRollFiles()
	requireUnstable(t, follower.log, open)
	requireAborted(t, follower.log, 0, math.MaxInt64, aborted...)
	if !slices.Equal(leader.log.Producers(), follower.log.Producers()) {
		t.Fatalf("producers: leader %+v, follower %+v", leader.log.Producers(), follower.log.Producers())
	}
	ls, fs := leader.log.Segments(), follower.log.Segments()
	if len(ls) < 3 || len(ls) != len(fs) {
		t.Fatalf("segments: leader %+v, follower %+v", ls, fs)
	}
	for i := range ls {
		if ls[i].BaseOffset != fs[i].BaseOffset {
			t.Fatalf("segments: leader %+v, follower %+v", ls, fs)
		}
		for _, name := range []string{segmentName(ls[i].BaseOffset, txnIndexExt), segmentName(ls[i].BaseOffset, snapshotExt)} {
			l, lerr := os.ReadFile(filepath.Join(leader.dir, name))
			f, ferr := os.ReadFile(filepath.Join(follower.dir, name))
			if !bytes.Equal(l, f) || (lerr == nil) != (ferr == nil) {
				t.Fatalf("%s differs: leader %x (%v), follower %x (%v)", name, l, lerr, f, ferr)
			}
		}
	}
}

func TestTransactionsSurviveRestartsAndCrashes(t *testing.T) {
	for _, c := range []struct {
		name string
		// before damages the directory of the closed or crashed log.
		before func(t *testing.T, h *harness)
		crash  bool
		// seal rolls the log before it is closed or crashed.
		seal bool
	}{
		{name: "clean restart", before: func(*testing.T, *harness) {}},
		{name: "crash", before: func(*testing.T, *harness) {}, crash: true},
		{name: "crash without snapshots", crash: true, before: func(t *testing.T, h *harness) {
			for _, name := range dirFiles(t, h.dir, snapshotExt) {
				os.Remove(filepath.Join(h.dir, name))
			}
		}},
		{name: "crash with a torn transaction index", crash: true, before: func(t *testing.T, h *harness) {
			appendTo(t, activeTxnIndex(h), []byte{0, 0, 0, 0, 0, 0, 0, 1, 2})
		}},
		{name: "crash with the entry of a cut marker", crash: true, before: func(t *testing.T, h *harness) {
			appendTo(t, activeTxnIndex(h), EncodeTxnIndex([]AbortedTxn{{ProducerID: 7, FirstOffset: 11, LastOffset: 14, LastStableOffset: 15}}))
		}},
		{name: "crash without the active transaction index", crash: true, before: func(t *testing.T, h *harness) {
			os.Remove(activeTxnIndex(h))
		}},
		{name: "crash losing the transaction index of a segment above the recovery point", crash: true, seal: true, before: func(t *testing.T, h *harness) {
			// The flush of the segment at 8 did not end (the recovery
			// point stayed at 8), that of the one at 13 wrote its
			// snapshot, which recovery must not start from.
			os.Remove(activeTxnIndex(h))
			if err := writeFileAtomic(OSFS{}, filepath.Join(h.dir, recoveryPointFile), encodeOffsetCheckpoint("recovery-point", 8)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "clean restart with a transaction index of a segment that has none", seal: true, before: func(t *testing.T, h *harness) {
			writeFile(t, filepath.Join(h.dir, segmentName(13, txnIndexExt)), []byte{1, 2, 3})
		}},
		{name: "clean restart with a corrupt transaction index", before: func(t *testing.T, h *harness) {
			flipByte(t, filepath.Join(h.dir, segmentName(0, txnIndexExt)), 1) // the version
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, Config{RetentionMs: -1})
			aborted, open := threeTxns(t, h, 8)
			if c.seal {
				if err := h.log.Roll(); err != nil {
					t.Fatal(err)
				}
			}
			files := txnIndexFiles(t, h.dir)
			if len(files) != 2 {
				t.Fatalf("transaction indexes %v", files)
			}
			if c.crash {
				h.abandon()
			} else if err := h.log.Close(); err != nil {
				t.Fatal(err)
			}
			c.before(t, h)
			h.open()
			requireUnstable(t, h.log, open)
			requireAborted(t, h.log, 0, math.MaxInt64, aborted...)
			if got := txnIndexFiles(t, h.dir); !maps2Equal(got, files) {
				t.Fatalf("transaction index files %q, want %q", got, files)
			}
			// The open transaction goes on where it was.
			h.marker(4, 0, false)
			requireUnstable(t, h.log, -1)
			requireAborted(t, h.log, 11, 100, AbortedTxn{ProducerID: 4, FirstOffset: 12, LastOffset: 13, LastStableOffset: 14})
		})
	}
}

// activeTxnIndex is the path of the transaction index of a log's last
// segment, which threeTxns fills (rolling at 8).
func activeTxnIndex(h *harness) string {
	return filepath.Join(h.dir, segmentName(8, txnIndexExt))
}

func appendTo(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// txnIndexFiles maps the names of a directory's transaction indexes to
// their bytes.
func txnIndexFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range dirFiles(t, dir, txnIndexExt) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(data)
	}
	return out
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestTruncationDropsTheAbortedTransactionsItCuts(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: -1})
	aborted, _ := threeTxns(t, h, 4, 8)
	// Cut producer 1's second abort (at 9) and what follows: its
	// transaction, opened at 7, is open again, and so is 3's.
	if err := h.log.TruncateTo(9); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, 7)
	requireAborted(t, h.log, 0, math.MaxInt64, aborted[0])
	for name := range txnIndexFiles(t, h.dir) {
		if name != segmentName(4, txnIndexExt) {
			t.Fatalf("transaction index %s left", name)
		}
	}
	h.restart()
	requireUnstable(t, h.log, 7)
	requireAborted(t, h.log, 0, math.MaxInt64, aborted[0])
	// A cut inside the segment that holds an entry.
	if err := h.log.TruncateTo(6); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, 3)
	requireAborted(t, h.log, 0, math.MaxInt64)
	if files := dirFiles(t, h.dir, txnIndexExt); len(files) != 0 {
		t.Fatalf("transaction indexes left: %v", files)
	}
	h.crash()
	requireUnstable(t, h.log, 3)
	requireAborted(t, h.log, 0, math.MaxInt64)
	if err := h.log.TruncateFullyAndStartAt(50); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, -1)
	if ps := h.log.Producers(); len(ps) != 0 {
		t.Fatalf("producers %+v", ps)
	}
}

func TestRetentionDeletesTheTransactionIndex(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: -1, FileDeleteDelayMs: 60_000})
	aborted, _ := threeTxns(t, h, 4, 8)
	if files := dirFiles(t, h.dir, txnIndexExt); len(files) != 2 {
		t.Fatalf("transaction indexes %v", files)
	}
	if err := h.log.SetLogStartOffset(8); err != nil {
		t.Fatal(err)
	}
	if n, err := h.log.ApplyRetention(h.clock.Now()); err != nil || n != 2 {
		t.Fatalf("deleted %d (%v)", n, err)
	}
	if files := dirFiles(t, h.dir, txnIndexExt+deletedExt); len(files) != 1 || files[0] != segmentName(4, txnIndexExt+deletedExt) {
		t.Fatalf("transaction indexes awaiting deletion %v", files)
	}
	requireAborted(t, h.log, 8, math.MaxInt64, aborted[1:]...)
	h.clock.advance(61 * time.Second)
	h.log.ApplyRetention(h.clock.Now())
	if files := dirFiles(t, h.dir, txnIndexExt+deletedExt); len(files) != 0 {
		t.Fatalf("transaction indexes left after the delay %v", files)
	}
	// A transaction left open below the log start (producer 4's, at 12)
	// holds the last stable offset at the log start, as Kafka's does.
	for i := 0; i < 3; i++ {
		h.append(batch(1, 10, 0))
	}
	if err := h.log.SetLogStartOffset(14); err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, h.log, 14)
}

func TestSealedSegmentsCarryTheirAbortedTransactions(t *testing.T) {
	h := newHarness(t, Config{RetentionMs: -1})
	aborted, _ := threeTxns(t, h, 4, 8)
	if err := h.log.Roll(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		base int64
		want []AbortedTxn
	}{{0, nil}, {4, aborted[:1]}, {8, aborted[1:]}} {
		ss, err := h.log.OpenSealed(c.base)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ss.AbortedTxns, c.want) {
			t.Fatalf("segment %d: %+v, want %+v", c.base, ss.AbortedTxns, c.want)
		}
		ss.Close()
		if len(c.want) > 0 {
			data, err := os.ReadFile(filepath.Join(h.dir, segmentName(c.base, txnIndexExt)))
			if err != nil || !bytes.Equal(data, EncodeTxnIndex(c.want)) {
				t.Fatalf("segment %d: file %x (%v)", c.base, data, err)
			}
		}
	}
}

// Every ABORT acknowledged as durable keeps its transaction index entry
// through a machine crash, at random points; no entry survives without its
// marker.
func TestDurableAbortsSurviveRandomCrashes(t *testing.T) {
	seeds := 16
	if testing.Short() {
		seeds = 4
	}
	for seed := 0; seed < seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { crashAborts(t, uint64(seed)) })
	}
}

func crashAborts(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	one := len(txnBatch(1, 0, 0, 1))
	cfg := Config{SegmentBytes: int64(one * (4 + rng.IntN(12)))}
	l, err := Open(dir, cfg, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []AbortedTxn
	var wg sync.WaitGroup
	for p := int64(1); p <= 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int32(0); ; seq++ {
				res, err := l.AppendAsLeader(txnBatch(p, 0, seq, 1), 0)
				if err != nil {
					return
				}
				m, err := l.AppendMarker(Marker{ProducerID: p, Commit: seq%3 == 0}, 0)
				if err != nil {
					return
				}
				if err := waitDurable(l, m.LastOffset+1); err != nil {
					return
				}
				if seq%3 != 0 {
					mu.Lock()
					acked = append(acked, AbortedTxn{ProducerID: p, FirstOffset: res.FirstOffset, LastOffset: m.LastOffset})
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(time.Duration(20_000+rng.IntN(200_000)) * time.Microsecond)
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
	got := l.AbortedTxns(0, math.MaxInt64)
	byMarker := map[int64]AbortedTxn{}
	for i, e := range got {
		if e.LastOffset >= l.LogEndOffset() || (i > 0 && e.LastOffset <= got[i-1].LastOffset) {
			t.Fatalf("seed %d: entry %+v past the log end %d or out of order", seed, e, l.LogEndOffset())
		}
		byMarker[e.LastOffset] = e
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range acked {
		e, ok := byMarker[want.LastOffset]
		if !ok || e.ProducerID != want.ProducerID || e.FirstOffset != want.FirstOffset {
			t.Fatalf("seed %d: the durable abort %+v is lost (found %+v; log end %d)", seed, want, e, l.LogEndOffset())
		}
	}
	// What recovery rebuilt is what the batches say.
	h := &harness{t: t, log: l}
	var all []byte
	for _, b := range h.readAll(0) {
		all = append(all, b...)
	}
	replay, err := Open(t.TempDir(), cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	if _, err := replay.AppendAsFollower(all); err != nil {
		t.Fatal(err)
	}
	if again := replay.AbortedTxns(0, math.MaxInt64); !slices.Equal(got, again) {
		t.Fatalf("seed %d: recovered %+v, the batches say %+v", seed, got, again)
	}
	if testing.Verbose() {
		t.Logf("%d aborts acknowledged, %d entries, log end %d", len(acked), len(got), l.LogEndOffset())
	}
}

// The transaction index of a segment is on stable storage once the
// segment's batches are: through the group commit, a sealed segment's
// flush and Flush (a crash here loses every byte not fsynced).
func TestAbortsAreDurableWithTheirSegment(t *testing.T) {
	root := t.TempDir()
	cfs, err := crashfs.New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "topic-0")
	l, err := Open(dir, Config{}, Options{FS: cfs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	abort := func(pid int64) AbortedTxn {
		t.Helper()
		res, err := l.AppendAsLeader(txnBatch(pid, 0, 0, 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		m, err := l.AppendMarker(Marker{ProducerID: pid}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return AbortedTxn{ProducerID: pid, FirstOffset: res.FirstOffset, LastOffset: m.LastOffset, LastStableOffset: m.LastOffset + 1}
	}
	var want []AbortedTxn
	want = append(want, abort(1))
	if err := waitDurable(l, 2); err != nil { // the group commit
		t.Fatal(err)
	}
	want = append(want, abort(2))
	if err := l.Roll(); err != nil { // the sealed segment's flush
		t.Fatal(err)
	}
	want = append(want, abort(3))
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := cfs.Crash(nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Open(dir, Config{}, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.RecoveryPoint() != 6 {
		t.Fatalf("recovery point %d after the crash, want 6", l.RecoveryPoint())
	}
	requireAborted(t, l, 0, math.MaxInt64, want...)
}

// The decoder of transaction index files takes only what the encoder
// writes (Kafka's format has no checksum: the entries are checked one by
// one instead), without panicking or allocating past the input.
func FuzzTxnIndex(f *testing.F) {
	f.Add(EncodeTxnIndex([]AbortedTxn{{1, 3, 6, 7}, {2, 7, 9, 8}}))
	f.Add(EncodeTxnIndex(nil))
	f.Add(EncodeTxnIndex([]AbortedTxn{{1, 3, 6, 7}})[:33])
	bad := EncodeTxnIndex([]AbortedTxn{{1, 3, 6, 7}})
	bad[1] = 1
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := decodeTxnIndex(data)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeTxnIndex(es), data) {
			t.Fatalf("%x decodes to %+v, which encodes differently", data, es)
		}
		for i, e := range es {
			if e.FirstOffset > e.LastOffset || e.LastStableOffset > e.LastOffset+1 || (i > 0 && e.LastOffset <= es[i-1].LastOffset) {
				t.Fatalf("accepted an impossible entry %+v", e)
			}
		}
	})
}

// The reader of transaction markers (a follower's batches, recovery's)
// refuses anything else without panicking.
func FuzzReadMarker(f *testing.F) {
	for _, m := range []Marker{{ProducerID: 1, Commit: true, CoordinatorEpoch: 7}, {ProducerID: 2}} {
		b, _ := buildMarker(m)
		f.Add([]byte(b))
	}
	f.Add([]byte(txnBatch(1, 0, 0, 2)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if n, err := recordbatch.Size(data); err != nil || n != len(data) || len(data) < recordbatch.HeaderSize {
			return
		}
		m, err := readMarker(recordbatch.Batch(data))
		if err == nil && !m.empty {
			s := newProducerState()
			s.update(recordbatch.Batch(data))
		}
	})
}

// TestCoordinatorTransactionalBatchesCarryNoSequence: the group
// coordinator writes a producer's transactional offset commits without a
// sequence, transaction after transaction in one epoch; they open the
// producer's transaction and pass no sequence check, and an older epoch is
// still refused.
func TestCoordinatorTransactionalBatchesCarryNoSequence(t *testing.T) {
	h := newHarness(t, Config{})
	for i := range 3 {
		res, err := h.log.AppendAsLeader(txnBatch(7, 2, recordbatch.NoSequence, 1), 0)
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		requireUnstable(t, h.log, res.FirstOffset)
		h.marker(7, 2, i%2 == 0)
		requireUnstable(t, h.log, -1)
	}
	if _, err := h.log.AppendAsLeader(txnBatch(7, 1, recordbatch.NoSequence, 1), 0); !errors.Is(err, ErrInvalidProducerEpoch) {
		t.Fatalf("a batch of an older epoch without a sequence: %v", err)
	}
}
