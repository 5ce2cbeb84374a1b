package localseg

import (
	"sync"
	"testing"

	"github.com/shale-log/shale/localseg/vfs"
)

// A read_committed fetch reads the first unstable offset (its upper
// bound, the last stable offset) and then the aborted transactions below
// it, without the log's lock. The first unstable offset must not move past
// an aborted transaction before its entry is listed: a fetch in between
// returned the transaction's records with no aborted transaction to drop
// them by, and a read_committed consumer returned them (found by
// shale-bench's txn read on a loaded machine).
func TestAbortIsListedBeforeTheFirstUnstableOffsetPassesIt(t *testing.T) {
	g := &openGateFS{FS: vfs.OSFS{}, suffix: txnIndexExt} // the ABORT marker's entry, held once armed
	l, err := Open(t.TempDir(), Config{}, Options{FS: g, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.AppendAsLeader(txnBatch(1, 0, 0, 3), 0); err != nil {
		t.Fatal(err)
	}
	if first, ok := l.FirstUnstableOffset(); !ok || first != 0 {
		t.Fatalf("first unstable offset %d (%v), want 0", first, ok)
	}
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate, g.held = gate, make(chan struct{})
	held := g.held
	g.mu.Unlock()
	release := sync.OnceFunc(func() { close(gate) })
	defer release()
	done := make(chan error, 1)
	go func() {
		_, err := l.AppendMarker(Marker{ProducerID: 1, ProducerEpoch: 0, Timestamp: 5}, 0)
		done <- err
	}()
	<-held // the ABORT's entry is being written
	// What a read_committed fetch sees now: the records up to the last
	// stable offset must come with the aborted transactions among them.
	upper := int64(3) // the high watermark: the marker is not written
	if first, ok := l.FirstUnstableOffset(); ok {
		upper = min(upper, first)
	}
	if upper > 0 && len(l.AbortedTxns(0, upper)) == 0 {
		t.Fatalf("while the ABORT is written, the last stable offset is %d and no aborted transaction is listed below it: its records would be read as committed", upper)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	requireUnstable(t, l, -1)
	requireAborted(t, l, 0, 4, AbortedTxn{ProducerID: 1, FirstOffset: 0, LastOffset: 3, LastStableOffset: 4})
}
