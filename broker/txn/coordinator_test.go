package txn

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestPartitionForMatchesKafka(t *testing.T) {
	for _, tc := range []struct {
		id   string
		n    int32
		want int32
	}{
		{"hello", 50, 99162322 % 50},                // "hello".hashCode() == 99162322
		{"Aa", 50, 2112 % 50},                       // "Aa" and "BB" collide in Java
		{"BB", 50, 2112 % 50},                       //
		{"é", 50, 233 % 50},                         // one UTF-16 unit
		{"😀", 50, (55357*31 + 56832) % 50},          // a surrogate pair: two units
		{"polygenelubricants", 50, 0},               // hashCode() == Integer.MIN_VALUE: Utils.abs gives 0
		{"txn-1", 1, 0},                             //
		{"", 50, 0},                                 //
		{"my-transactional-id", 50, 959806496 % 50}, // hashCode() == -959806496: abs, then modulo
	} {
		if got := PartitionFor(tc.id, tc.n); got != tc.want {
			t.Errorf("PartitionFor(%q, %d) = %d, want %d", tc.id, tc.n, got, tc.want)
		}
	}
	if h := javaStringHash("polygenelubricants"); h != -1<<31 {
		t.Fatalf("hash of polygenelubricants = %d", h)
	}
}

func TestInitProducerIDNewTransactionalID(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if pid != 1000 || epoch != 0 {
		t.Fatalf("got %d/%d, want 1000/0", pid, epoch)
	}
	recs := e.log.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	want := txnMeta{producerID: 1000, producerEpoch: 0, timeoutMs: 60_000, state: stateEmpty, startMs: -1, updateMs: e.clock.Now().UnixMilli()}
	if recs[0].id != "t1" || !reflect.DeepEqual(recs[0].meta, want) {
		t.Fatalf("record %+v, want %+v", recs[0], want)
	}
}

func TestInitProducerIDValidation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxTimeout = time.Minute })
	for _, tc := range []struct {
		name      string
		version   int16
		id        string
		timeout   int32
		pid       int64
		epoch     int16
		wantCode  int16
		wantEpoch int16
	}{
		{"zero timeout", 4, "t", 0, -1, -1, codeInvalidTransactionTimeout, -1},
		{"negative timeout", 4, "t", -5, -1, -1, codeInvalidTransactionTimeout, -1},
		{"timeout above max", 4, "t", 60_001, -1, -1, codeInvalidTransactionTimeout, -1},
		{"empty id", 4, "", 1000, -1, -1, codeInvalidRequest, -1},
		{"producer id without epoch", 4, "t", 1000, 5, -1, codeInvalidRequest, -1},
		{"epoch without producer id", 4, "t", 1000, -1, 3, codeInvalidRequest, -1},
		{"idempotent producer", 4, "\x00", 0, -1, -1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.initReq(tc.version, tc.id, tc.timeout, tc.pid, tc.epoch)
			if r.ErrorCode != tc.wantCode || r.ProducerEpoch != tc.wantEpoch {
				t.Fatalf("code %d epoch %d, want %d %d", r.ErrorCode, r.ProducerEpoch, tc.wantCode, tc.wantEpoch)
			}
		})
	}
	if _, _, n := e.log.stats(); n != 0 {
		t.Fatalf("%d appends, want none", n)
	}
}

func TestInitProducerIDBumpsEpochAndFencesOldProducer(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	pid2, epoch2 := e.init("t1")
	if pid2 != pid || epoch2 != epoch+1 {
		t.Fatalf("second init %d/%d, want %d/%d", pid2, epoch2, pid, epoch+1)
	}
	// The old producer is fenced everywhere; older request versions get
	// INVALID_PRODUCER_EPOCH, as Kafka answers them.
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != codeProducerFenced {
		t.Fatalf("add with old epoch: %d", c)
	}
	if c := addCodes(e.addReq(1, "t1", pid, epoch, map[string][]int32{"a": {0}})); c[TopicPartition{"a", 0}] != codeInvalidProducerEpoch {
		t.Fatalf("add v1 with old epoch: %v", c)
	}
	if c := e.end(1, "t1", pid, epoch, true); c != codeInvalidProducerEpoch {
		t.Fatalf("end v1 with old epoch: %d", c)
	}
	if c := e.end(3, "t1", pid, epoch, true); c != codeProducerFenced {
		t.Fatalf("end v3 with old epoch: %d", c)
	}
	if c := e.addOffsets("t1", pid, epoch, "g"); c != codeProducerFenced {
		t.Fatalf("add offsets with old epoch: %d", c)
	}
	if e.pids.calls.Load() != 1 {
		t.Fatalf("%d producer ids allocated, want 1", e.pids.calls.Load())
	}
}

func TestInitProducerIDKIP360Retry(t *testing.T) {
	e := newEnv(t)
	pid, _ := e.init("t1")
	// A producer recovering from an error bumps its own epoch.
	r := e.initReq(4, "t1", 60_000, pid, 0)
	if r.ErrorCode != 0 || r.ProducerID != pid || r.ProducerEpoch != 1 {
		t.Fatalf("bump: %+v", r)
	}
	// Its retry (the answer was lost) gets the same epoch, no second bump.
	r = e.initReq(4, "t1", 60_000, pid, 0)
	if r.ErrorCode != 0 || r.ProducerID != pid || r.ProducerEpoch != 1 {
		t.Fatalf("retry: %+v", r)
	}
	// Continuing from the current epoch bumps again.
	r = e.initReq(4, "t1", 60_000, pid, 1)
	if r.ErrorCode != 0 || r.ProducerEpoch != 2 {
		t.Fatalf("bump from current: %+v", r)
	}
	// A new producer instance (no expected epoch) fences the old one:
	// its retries no longer match.
	if _, ep := e.init("t1"); ep != 3 {
		t.Fatalf("new instance got epoch %d", ep)
	}
	for _, tc := range []struct {
		version int16
		pid     int64
		epoch   int16
		want    int16
	}{
		{4, pid, 1, codeProducerFenced},
		{3, pid, 1, codeInvalidProducerEpoch},
		{4, pid + 77, 3, codeProducerFenced},
	} {
		if r := e.initReq(tc.version, "t1", 60_000, tc.pid, tc.epoch); r.ErrorCode != tc.want {
			t.Errorf("v%d %d/%d: code %d, want %d", tc.version, tc.pid, tc.epoch, r.ErrorCode, tc.want)
		}
	}
}

func TestInitProducerIDRotatesExhaustedEpoch(t *testing.T) {
	e := newEnv(t)
	e.seed("t1", txnMeta{producerID: 500, producerEpoch: 32765, timeoutMs: 1000, state: stateCompleteCommit, partitions: []TopicPartition{}, startMs: 1, updateMs: 2})
	e.seed("t2", txnMeta{producerID: 600, producerEpoch: 32766, timeoutMs: 1000, state: stateEmpty, startMs: -1, updateMs: 2})
	e.start()
	// 32765 -> 32766 is the last bump; then a new producer id at 0.
	if pid, ep := e.init("t1"); pid != 500 || ep != 32766 {
		t.Fatalf("last bump %d/%d", pid, ep)
	}
	if pid, ep := e.init("t1"); pid != 1000 || ep != 0 {
		t.Fatalf("rotation %d/%d", pid, ep)
	}
	// KIP-360: the producer holding the exhausted epoch rotates, and its
	// retry gets the same new producer id.
	r := e.initReq(4, "t2", 1000, 600, 32766)
	if r.ErrorCode != 0 || r.ProducerID != 1001 || r.ProducerEpoch != 0 {
		t.Fatalf("rotation with expected epoch: %+v", r)
	}
	r = e.initReq(4, "t2", 1000, 600, 32766)
	if r.ErrorCode != 0 || r.ProducerID != 1001 || r.ProducerEpoch != 0 {
		t.Fatalf("retry of the rotation: %+v", r)
	}
}

func TestAddPartitionsAndCommitDeliversMarkers(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	start := e.clock.Now().UnixMilli()
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {1, 0}, "b": {1}}); c != 0 {
		t.Fatalf("add: %d", c)
	}
	en, _ := e.entry("t1")
	if en.meta.state != stateOngoing || en.meta.startMs != start || !reflect.DeepEqual(en.meta.partitions, []TopicPartition{{"a", 0}, {"a", 1}, {"b", 1}}) {
		t.Fatalf("after add: %+v", en.meta)
	}
	// Partitions already in the transaction: success without a write.
	_, _, before := e.log.stats()
	e.clock.Advance(time.Second)
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatalf("re-add: %d", c)
	}
	if _, _, after := e.log.stats(); after != before {
		t.Fatalf("re-adding wrote %d appends", after-before)
	}
	// A new partition keeps the start time.
	if c := e.addOffsets("t1", pid, epoch, "group-x"); c != 0 {
		t.Fatalf("add offsets: %d", c)
	}
	offsets := TopicPartition{offsetsTopic, PartitionFor("group-x", 50)}
	en, _ = e.entry("t1")
	if en.meta.startMs != start || len(en.meta.partitions) != 4 {
		t.Fatalf("after add offsets: %+v", en.meta)
	}
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatalf("end: %d", c)
	}
	e.idle()
	calls := e.markers.snapshot()
	want := markerCall{pid: pid, epoch: epoch, coordinatorEpoch: 7, commit: true,
		partitions: []TopicPartition{offsets, {"a", 0}, {"a", 1}, {"b", 1}}}
	if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
		t.Fatalf("marker calls %+v, want %+v", calls, want)
	}
	en, _ = e.entry("t1")
	if en.meta.state != stateCompleteCommit || len(en.meta.partitions) != 0 || en.meta.producerEpoch != epoch {
		t.Fatalf("after commit: %+v", en.meta)
	}
	// The log holds Prepare then Complete.
	recs := e.log.records(t)
	if n := len(recs); recs[n-2].meta.state != statePrepareCommit || recs[n-1].meta.state != stateCompleteCommit || len(recs[n-2].meta.partitions) != 4 {
		t.Fatalf("last records %+v %+v", recs[n-2].meta, recs[n-1].meta)
	}
	// A retry of the commit succeeds, an abort is refused.
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatalf("commit retry: %d", c)
	}
	if c := e.end(3, "t1", pid, epoch, false); c != codeInvalidTxnState {
		t.Fatalf("abort after commit: %d", c)
	}
	// The next transaction starts anew.
	e.clock.Advance(time.Minute)
	if c := e.add("t1", pid, epoch, map[string][]int32{"b": {0}}); c != 0 {
		t.Fatalf("next add: %d", c)
	}
	en, _ = e.entry("t1")
	if en.meta.startMs != e.clock.Now().UnixMilli() || !reflect.DeepEqual(en.meta.partitions, tps("b", 0)) {
		t.Fatalf("next transaction %+v", en.meta)
	}
}

func TestAbortDeliversAbortMarkers(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {2}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.end(3, "t1", pid, epoch, false); c != 0 {
		t.Fatal(c)
	}
	e.idle()
	calls := e.markers.snapshot()
	if len(calls) != 1 || calls[0].commit || !reflect.DeepEqual(calls[0].partitions, tps("a", 2)) {
		t.Fatalf("calls %+v", calls)
	}
	if c := e.end(3, "t1", pid, epoch, false); c != 0 {
		t.Fatalf("abort retry: %d", c)
	}
	if c := e.end(3, "t1", pid, epoch, true); c != codeInvalidTxnState {
		t.Fatalf("commit after abort: %d", c)
	}
}

func TestAddPartitionsToTxnErrors(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	// Missing partitions: UNKNOWN_TOPIC_OR_PARTITION for them, the rest
	// not attempted; nothing is written.
	_, _, before := e.log.stats()
	codes := addCodes(e.addReq(3, "t1", pid, epoch, map[string][]int32{"a": {0, 5}, "nope": {0}}))
	want := map[TopicPartition]int16{{"a", 0}: codeOperationNotAttempted, {"a", 5}: codeUnknownTopicOrPartition, {"nope", 0}: codeUnknownTopicOrPartition}
	if !reflect.DeepEqual(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if _, _, after := e.log.stats(); after != before {
		t.Fatal("a refused add wrote")
	}
	for _, tc := range []struct {
		name  string
		id    string
		pid   int64
		epoch int16
		want  int16
	}{
		{"unknown id", "nobody", pid, epoch, codeInvalidProducerIDMapping},
		{"wrong producer id", "t1", pid + 1, epoch, codeInvalidProducerIDMapping},
		{"newer epoch", "t1", pid, epoch + 1, codeProducerFenced},
		{"empty id", "", pid, epoch, codeInvalidRequest},
	} {
		if c := e.add(tc.id, tc.pid, tc.epoch, map[string][]int32{"a": {0}}); c != tc.want {
			t.Errorf("%s: code %d, want %d", tc.name, c, tc.want)
		}
	}
	// Ending no transaction.
	if c := e.end(3, "t1", pid, epoch, true); c != codeInvalidTxnState {
		t.Fatalf("end from Empty: %d", c)
	}
	if c := e.end(3, "nobody", 1, 0, true); c != codeInvalidProducerIDMapping {
		t.Fatalf("end of unknown id: %d", c)
	}
}

func TestConcurrentTransactionsWhileCompleting(t *testing.T) {
	e := newEnv(t)
	gate := make(chan struct{})
	e.markers.setGate(gate)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	// The answer comes once PrepareCommit is written, before the markers.
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatalf("end: %d", c)
	}
	if d := e.describe("t1"); d.State != "PrepareCommit" {
		t.Fatalf("state %q", d.State)
	}
	for name, code := range map[string]int16{
		"commit retry": e.end(3, "t1", pid, epoch, true),
		"abort":        e.end(3, "t1", pid, epoch, false),
		"init":         e.initReq(4, "t1", 60_000, -1, -1).ErrorCode,
	} {
		if code != codeConcurrentTransactions {
			t.Errorf("%s while completing: code %d", name, code)
		}
	}
	// Adding partitions waits for the markers, at most maxPark, before
	// it answers CONCURRENT_TRANSACTIONS.
	parked := make(chan int16, 2)
	go func() { parked <- e.add("t1", pid, epoch, map[string][]int32{"a": {1}}) }()
	go func() { parked <- e.addOffsets("t1", pid, epoch, "g") }()
	waitParked := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			got := 0
			e.onLoop(func(s *shard) { got = len(s.txns["t1"].parked) })
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests parked, want %d", got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitParked(2)
	e.clock.Advance(maxPark - time.Millisecond)
	e.onLoop(func(*shard) {})
	select {
	case c := <-parked:
		t.Fatalf("a parked request answered %d before maxPark", c)
	default:
	}
	e.clock.Advance(time.Millisecond)
	for range 2 {
		if c := <-parked; c != codeConcurrentTransactions {
			t.Errorf("add while completing, after maxPark: code %d", c)
		}
	}
	// Fencing checks still come first.
	if c := e.end(3, "t1", pid, epoch-1, true); c != codeProducerFenced {
		t.Errorf("old epoch while completing: %d", c)
	}
	// A request parked when the markers are written goes on at once.
	go func() { parked <- e.add("t1", pid, epoch, map[string][]int32{"a": {1}}) }()
	waitParked(1)
	close(gate)
	if c := <-parked; c != 0 {
		t.Fatalf("add parked until the completion: %d", c)
	}
	e.idle()
	if d := e.describe("t1"); d.State != "Ongoing" || len(d.Topics) != 1 || len(d.Topics[0].Partitions) != 1 || d.Topics[0].Partitions[0] != 1 {
		t.Fatalf("after the parked add: %+v", d)
	}
}

func TestMarkerRetriesWithBackoff(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0, 1}}); c != 0 {
		t.Fatal(c)
	}
	a0 := TopicPartition{"a", 0}
	e.markers.failWith(a0, kerr.NotLeaderForPartition.Code, kerr.NotEnoughReplicas.Code, kerr.KafkaStorageError.Code)
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatal(c)
	}
	for i, backoff := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		e.waitCalls(i + 1)
		e.waitRetryTimer()
		e.clock.Advance(backoff - time.Millisecond)
		e.onLoop(func(*shard) {})
		if n := len(e.markers.snapshot()); n != i+1 {
			t.Fatalf("retry %d sent before its backoff (%d calls)", i+1, n)
		}
		e.clock.Advance(time.Millisecond)
	}
	calls := e.waitCalls(4)
	e.idle()
	if !reflect.DeepEqual(calls[0].partitions, tps("a", 0, 1)) {
		t.Fatalf("first call %+v", calls[0])
	}
	for _, c := range calls[1:] {
		if !reflect.DeepEqual(c.partitions, []TopicPartition{a0}) || c.epoch != epoch || !c.commit {
			t.Fatalf("retry %+v", c)
		}
	}
	if d := e.describe("t1"); d.State != "CompleteCommit" {
		t.Fatalf("state %q", d.State)
	}
}

func TestMarkersForDeletedTopicAreDropped(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}, "b": {0}}); c != 0 {
		t.Fatal(c)
	}
	// While "b" exists, UNKNOWN_TOPIC_OR_PARTITION is metadata catching
	// up: retried.
	b0 := TopicPartition{"b", 0}
	e.markers.failWith(b0, codeUnknownTopicOrPartition, codeUnknownTopicOrPartition)
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatal(c)
	}
	e.waitCalls(1)
	e.waitRetryTimer()
	e.topics.remove("b")
	e.clock.Advance(100 * time.Millisecond)
	e.waitCalls(2)
	e.idle()
	if d := e.describe("t1"); d.State != "CompleteCommit" {
		t.Fatalf("state %q", d.State)
	}
	if n := len(e.markers.snapshot()); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
}

func TestFencedMarkersStopCompletionUntilReload(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	e.markers.failWith(TopicPartition{"a", 0}, codeTransactionCoordinatorFenced)
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatal(c)
	}
	e.waitCalls(1)
	e.waitFor("completion stopped", func() bool {
		stopped := false
		e.onLoop(func(s *shard) { stopped = s.txns["t1"].completion.stopped })
		return stopped
	})
	e.clock.Advance(time.Minute)
	e.onLoop(func(*shard) {})
	if n := len(e.markers.snapshot()); n != 1 {
		t.Fatalf("%d calls after a fence, want 1", n)
	}
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {1}}); c != codeConcurrentTransactions {
		t.Fatalf("add: %d", c)
	}
	// The next load (with a newer coordinator epoch) resumes it.
	e.epoch = 9
	e.start()
	calls := e.waitCalls(2)
	e.idle()
	if c := calls[1]; c.coordinatorEpoch != 9 || !c.commit || c.epoch != epoch {
		t.Fatalf("resumed call %+v", c)
	}
	if d := e.describe("t1"); d.State != "CompleteCommit" {
		t.Fatalf("state %q", d.State)
	}
}

func TestTimedOutTransactionIsAbortedWithEpochBump(t *testing.T) {
	e := newEnv(t)
	r := e.initReq(4, "t1", 60_000, -1, -1)
	pid, epoch := r.ProducerID, r.ProducerEpoch
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	e.advance(60 * time.Second) // start + timeout is not yet past
	if d := e.describe("t1"); d.State != "Ongoing" {
		t.Fatalf("state %q at the timeout", d.State)
	}
	e.advance(10 * time.Second)
	e.idle()
	calls := e.markers.snapshot()
	if len(calls) != 1 || calls[0].commit || calls[0].epoch != epoch+1 || calls[0].pid != pid {
		t.Fatalf("calls %+v", calls)
	}
	d := e.describe("t1")
	if d.State != "CompleteAbort" || d.ProducerEpoch != epoch+1 {
		t.Fatalf("after timeout %+v", d)
	}
	// The timed-out producer is fenced.
	if c := e.end(3, "t1", pid, epoch, true); c != codeProducerFenced {
		t.Fatalf("commit after timeout: %d", c)
	}
	if c := e.end(1, "t1", pid, epoch, true); c != codeInvalidProducerEpoch {
		t.Fatalf("v1 commit after timeout: %d", c)
	}
	if _, ep := e.init("t1"); ep != epoch+2 {
		t.Fatalf("next init epoch %d", ep)
	}
	if e.stats().timedOut != 1 {
		t.Fatalf("stats %+v", e.stats())
	}
}

func TestInitProducerIDAbortsOngoingTransaction(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0, 2}}); c != 0 {
		t.Fatal(c)
	}
	gate := make(chan struct{})
	e.markers.setGate(gate)
	if r := e.initReq(4, "t1", 60_000, -1, -1); r.ErrorCode != codeConcurrentTransactions {
		t.Fatalf("init over an ongoing transaction: %+v", r)
	}
	if d := e.describe("t1"); d.State != "PrepareAbort" || d.ProducerEpoch != epoch+1 {
		t.Fatalf("while aborting %+v", d)
	}
	// The old producer is fenced at once.
	if c := e.end(3, "t1", pid, epoch, true); c != codeProducerFenced {
		t.Fatalf("old producer commit: %d", c)
	}
	if r := e.initReq(4, "t1", 60_000, -1, -1); r.ErrorCode != codeConcurrentTransactions {
		t.Fatalf("init while aborting: %+v", r)
	}
	close(gate)
	e.idle()
	calls := e.markers.snapshot()
	if len(calls) != 1 || calls[0].commit || calls[0].epoch != epoch+1 || !reflect.DeepEqual(calls[0].partitions, tps("a", 0, 2)) {
		t.Fatalf("calls %+v", calls)
	}
	if p, ep := e.init("t1"); p != pid || ep != epoch+2 {
		t.Fatalf("retried init %d/%d", p, ep)
	}
}

// TestReloadInEveryState writes ids in every state, reloads the partition
// on a new coordinator epoch, and checks that each comes back as it was
// and that Prepare states resume their markers.
func TestReloadInEveryState(t *testing.T) {
	e := newEnv(t)
	type ids struct {
		pid   int64
		epoch int16
	}
	got := map[string]ids{}
	for _, id := range []string{"empty", "ongoing", "committed", "aborted", "preparecommit", "prepareabort"} {
		p, ep := e.init(id)
		got[id] = ids{p, ep}
	}
	for _, id := range []string{"ongoing", "committed", "aborted", "preparecommit", "prepareabort"} {
		if c := e.add(id, got[id].pid, got[id].epoch, map[string][]int32{"a": {0}, "b": {1}}); c != 0 {
			t.Fatal(c)
		}
	}
	for id, commit := range map[string]bool{"committed": true, "aborted": false} {
		if c := e.end(3, id, got[id].pid, got[id].epoch, commit); c != 0 {
			t.Fatal(c)
		}
	}
	e.idle()
	gate := make(chan struct{})
	e.markers.setGate(gate)
	for id, commit := range map[string]bool{"preparecommit": true, "prepareabort": false} {
		if c := e.end(3, id, got[id].pid, got[id].epoch, commit); c != 0 {
			t.Fatal(c)
		}
	}
	before := map[string]kmsg.DescribeTransactionsResponseTransactionState{}
	for id := range got {
		before[id] = e.describe(id)
	}
	e.epoch = 12
	e.markers.setGate(nil)
	e.start() // the blocked marker calls end with the old shard
	after := map[string]kmsg.DescribeTransactionsResponseTransactionState{}
	for id := range got {
		after[id] = e.describe(id)
	}
	for id, d := range before {
		a := after[id]
		if id == "preparecommit" || id == "prepareabort" {
			// Resumed: compare what the log held.
			a.State, a.Topics = d.State, d.Topics
		}
		if !reflect.DeepEqual(d, a) {
			t.Errorf("%s: before %+v after %+v", id, d, a)
		}
	}
	e.idle()
	var resumed []markerCall
	for _, c := range e.markers.snapshot() {
		if c.coordinatorEpoch == 12 {
			resumed = append(resumed, c)
		}
	}
	if len(resumed) != 2 {
		t.Fatalf("resumed calls %+v", resumed)
	}
	for _, c := range resumed {
		if !reflect.DeepEqual(c.partitions, []TopicPartition{{"a", 0}, {"b", 1}}) {
			t.Fatalf("resumed partitions %+v", c)
		}
	}
	for id, want := range map[string]string{"empty": "Empty", "ongoing": "Ongoing", "committed": "CompleteCommit", "aborted": "CompleteAbort", "preparecommit": "CompleteCommit", "prepareabort": "CompleteAbort"} {
		if d := e.describe(id); d.State != want {
			t.Errorf("%s: state %q, want %q", id, d.State, want)
		}
	}
	// The ongoing transaction still carries on with its producer.
	if c := e.end(3, "ongoing", got["ongoing"].pid, got["ongoing"].epoch, true); c != 0 {
		t.Fatalf("commit after reload: %d", c)
	}
}

func TestExpiredTransactionalIDsAreTombstoned(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.TransactionalIDExpiration = 2 * time.Hour
		c.MaxTimeout = 24 * time.Hour
	})
	pOld, eOld := e.init("old")
	e.init("empty")
	r := e.initReq(4, "long", 20*3600_000, -1, -1)
	if c := e.add("long", r.ProducerID, r.ProducerEpoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.add("old", pOld, eOld, map[string][]int32{"a": {1}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.end(3, "old", pOld, eOld, true); c != 0 {
		t.Fatal(c)
	}
	e.idle()
	e.advance(time.Hour) // check at 1h: nothing is 2h old
	e.clock.Advance(30 * time.Minute)
	e.init("fresh")
	e.advance(30 * time.Minute) // check at 2h: "old" and "empty" are 2h old
	e.advance(time.Hour)        // check at 3h: "fresh" is 1.5h old
	e.idle()
	for id, want := range map[string]int16{"old": codeTransactionalIDNotFound, "empty": codeTransactionalIDNotFound, "fresh": 0, "long": 0} {
		if d := e.describe(id); d.ErrorCode != want {
			t.Errorf("%s: code %d, want %d", id, d.ErrorCode, want)
		}
	}
	tombstones := map[string]bool{}
	for _, r := range e.log.records(t) {
		if r.tombstone {
			tombstones[r.id] = true
		}
	}
	if !reflect.DeepEqual(tombstones, map[string]bool{"old": true, "empty": true}) {
		t.Fatalf("tombstones %v", tombstones)
	}
	e.start()
	if d := e.describe("old"); d.ErrorCode != codeTransactionalIDNotFound {
		t.Fatalf("old after reload: %+v", d)
	}
	if d := e.describe("fresh"); d.ErrorCode != 0 {
		t.Fatalf("fresh after reload: %+v", d)
	}
	// An expired id starts over with a new producer id.
	if p, ep := e.init("old"); p == pOld || ep != 0 {
		t.Fatalf("re-init of an expired id %d/%d", p, ep)
	}
}

func TestSnapshotBoundsLogAndKeepsState(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SnapshotMinBytes = 4 << 10 })
	want := map[string]int16{}
	for round := 0; round < 60; round++ {
		for i := 0; i < 5; i++ {
			id := fmt.Sprintf("t%d", i)
			_, want[id] = e.init(id)
		}
	}
	e.settle()
	st := e.stats()
	start, _, _ := e.log.stats()
	if st.snapshots == 0 || start == 0 {
		t.Fatalf("no snapshot: stats %+v, log start %d", st, start)
	}
	var live int64
	e.onLoop(func(s *shard) { live = s.liveBytes })
	var logBytes int64
	for _, r := range e.log.records(t) {
		logBytes += int64(len(appendKey(nil, r.id))+len(appendValue(nil, &r.meta))) + recordOverhead
	}
	if logBytes > 2*live+e.cfg.SnapshotMinBytes+int64(maxBatchBytes) {
		t.Fatalf("log holds %d bytes for %d live", logBytes, live)
	}
	e.start()
	for id, ep := range want {
		if d := e.describe(id); d.ErrorCode != 0 || d.ProducerEpoch != ep {
			t.Fatalf("%s after reload: %+v, want epoch %d", id, d, ep)
		}
	}
}

func TestFailedAppendLeavesStateUnchanged(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	errTimeout := errors.New("replication timed out")

	e.log.failNext(1, fmt.Errorf("append: %w", ErrNotLeader))
	if r := e.initReq(4, "t1", 60_000, -1, -1); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("init: %+v", r)
	}
	if d := e.describe("t1"); d.ProducerEpoch != epoch {
		t.Fatalf("epoch moved to %d", d.ProducerEpoch)
	}

	e.log.failNext(1, errTimeout)
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != codeCoordinatorNotAvailable {
		t.Fatalf("add: %d", c)
	}
	if d := e.describe("t1"); d.State != "Empty" || len(d.Topics) != 0 {
		t.Fatalf("after failed add %+v", d)
	}

	e.log.failNext(1, ErrRecordTooLarge)
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != codeUnknownServerError {
		t.Fatalf("add too large: %d", c)
	}

	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	e.log.failNext(1, errTimeout)
	if c := e.end(3, "t1", pid, epoch, true); c != codeCoordinatorNotAvailable {
		t.Fatalf("end: %d", c)
	}
	if d := e.describe("t1"); d.State != "Ongoing" {
		t.Fatalf("after failed end %+v", d)
	}
	if n := len(e.markers.snapshot()); n != 0 {
		t.Fatalf("markers sent after a failed prepare: %d", n)
	}

	// A new id whose first write fails is not kept.
	e.log.failNext(1, errTimeout)
	if r := e.initReq(4, "t2", 60_000, -1, -1); r.ErrorCode != codeCoordinatorNotAvailable {
		t.Fatalf("init new: %+v", r)
	}
	if d := e.describe("t2"); d.ErrorCode != codeTransactionalIDNotFound {
		t.Fatalf("failed new id: %+v", d)
	}
	if p, _ := e.init("t2"); p == 0 {
		t.Fatal("no producer id")
	}

	// A failed fence (timeout abort) leaves the transaction Ongoing at its
	// epoch; the next check tries again.
	e.log.failNext(1, errTimeout)
	e.advance(70 * time.Second)
	if d := e.describe("t1"); d.State != "Ongoing" || d.ProducerEpoch != epoch {
		t.Fatalf("after failed fence %+v", d)
	}
	e.advance(10 * time.Second)
	e.idle()
	if d := e.describe("t1"); d.State != "CompleteAbort" || d.ProducerEpoch != epoch+1 {
		t.Fatalf("after fence %+v", d)
	}
}

func TestFailedCompleteAppendIsRetried(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	gate := make(chan struct{})
	e.markers.setGate(gate)
	if c := e.end(3, "t1", pid, epoch, true); c != 0 {
		t.Fatal(c)
	}
	e.log.failNext(2, errors.New("replication timed out"))
	gate <- struct{}{}
	e.waitRetryTimer()
	e.clock.Advance(100 * time.Millisecond)
	e.waitRetryTimer()
	if d := e.describe("t1"); d.State != "PrepareCommit" {
		t.Fatalf("state %q", d.State)
	}
	e.clock.Advance(200 * time.Millisecond)
	e.idle()
	if d := e.describe("t1"); d.State != "CompleteCommit" {
		t.Fatalf("state %q", d.State)
	}
	if n := len(e.markers.snapshot()); n != 1 {
		t.Fatalf("%d marker calls, want 1", n)
	}
}

func TestRoutingCodes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NumPartitions = 2 })
	var local, remote string
	for i := 0; local == "" || remote == ""; i++ {
		id := fmt.Sprintf("id-%d", i)
		if PartitionFor(id, 2) == 0 {
			local = id
		} else {
			remote = id
		}
	}
	if r := e.initReq(4, remote, 1000, -1, -1); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("remote id: %+v", r)
	}
	e.log.unproven.Store(true)
	if r := e.initReq(4, local, 1000, -1, -1); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("unproven leadership: %+v", r)
	}
	e.log.unproven.Store(false)

	gate := make(chan struct{})
	e.log.scanGate = gate
	e.c.Load(0, 8, e.log)
	if r := e.initReq(4, local, 1000, -1, -1); r.ErrorCode != codeCoordinatorLoadInProgress {
		t.Fatalf("loading: %+v", r)
	}
	lr := e.c.ListTransactions(ctx, kmsg.NewPtrListTransactionsRequest())
	if lr.ErrorCode != codeCoordinatorLoadInProgress {
		t.Fatalf("list while loading: %+v", lr)
	}
	close(gate)
	e.waitLoaded(0)
	if r := e.initReq(4, local, 1000, -1, -1); r.ErrorCode != 0 {
		t.Fatalf("loaded: %+v", r)
	}
	e.c.Unload(0)
	if d := e.describe(local); d.ErrorCode != codeNotCoordinator {
		t.Fatalf("unloaded: %+v", d)
	}
}

func TestDescribeAndListTransactions(t *testing.T) {
	e := newEnv(t)
	p1, e1 := e.init("t1")
	p2, _ := e.init("t2")
	p3, e3 := e.init("t3")
	start := e.clock.Now().UnixMilli()
	if c := e.add("t1", p1, e1, map[string][]int32{"b": {1, 0}, "a": {2}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.add("t3", p3, e3, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.end(3, "t3", p3, e3, false); c != 0 {
		t.Fatal(c)
	}
	e.idle()
	e.clock.Advance(5 * time.Second)

	d := e.describe("t1")
	want := kmsg.NewDescribeTransactionsResponseTransactionState()
	want.TransactionalID, want.State, want.TimeoutMillis, want.StartTimestamp = "t1", "Ongoing", 60_000, start
	want.ProducerID, want.ProducerEpoch = p1, e1
	want.Topics = []kmsg.DescribeTransactionsResponseTransactionStateTopic{{Topic: "a", Partitions: []int32{2}}, {Topic: "b", Partitions: []int32{0, 1}}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("describe %+v\nwant %+v", d, want)
	}
	r := kmsg.NewPtrDescribeTransactionsRequest()
	r.TransactionalIDs = []string{"t2", "nobody", ""}
	resp := e.c.DescribeTransactions(ctx, r)
	if s := resp.TransactionStates; len(s) != 3 || s[0].State != "Empty" || s[0].StartTimestamp != -1 || s[1].ErrorCode != codeTransactionalIDNotFound || s[1].TransactionalID != "nobody" || s[2].ErrorCode != codeInvalidRequest {
		t.Fatalf("describe many %+v", resp.TransactionStates)
	}

	list := func(version int16, states []string, pids []int64, duration int64, pattern *string) (*kmsg.ListTransactionsResponse, []string) {
		r := kmsg.NewPtrListTransactionsRequest()
		r.Version = version
		r.StateFilters, r.ProducerIDFilters, r.DurationFilterMillis, r.TransactionalIDPattern = states, pids, duration, pattern
		resp := e.c.ListTransactions(ctx, r)
		var ids []string
		for _, s := range resp.TransactionStates {
			ids = append(ids, s.TransactionalID+"="+s.TransactionState)
		}
		return resp, ids
	}
	pat := func(s string) *string { return &s }
	for _, tc := range []struct {
		name     string
		version  int16
		states   []string
		pids     []int64
		duration int64
		pattern  *string
		want     []string
	}{
		{"all", 1, nil, nil, -1, nil, []string{"t1=Ongoing", "t2=Empty", "t3=CompleteAbort"}},
		{"by state", 0, []string{"Ongoing", "CompleteAbort"}, nil, -1, nil, []string{"t1=Ongoing", "t3=CompleteAbort"}},
		{"by producer id", 0, nil, []int64{p2}, -1, nil, []string{"t2=Empty"}},
		{"by both", 0, []string{"Ongoing"}, []int64{p2}, -1, nil, nil},
		{"running longer than 4s", 1, []string{"Ongoing"}, nil, 4000, nil, []string{"t1=Ongoing"}},
		{"running longer than 5s", 1, []string{"Ongoing"}, nil, 5000, nil, nil},
		{"duration ignored before v1", 0, []string{"Ongoing"}, nil, 5000, nil, []string{"t1=Ongoing"}},
		{"pattern", 2, nil, nil, -1, pat("t[13]"), []string{"t1=Ongoing", "t3=CompleteAbort"}},
		{"pattern matches whole ids", 2, nil, nil, -1, pat("t"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, ids := list(tc.version, tc.states, tc.pids, tc.duration, tc.pattern)
			if resp.ErrorCode != 0 || !reflect.DeepEqual(ids, tc.want) {
				t.Fatalf("code %d ids %v, want %v", resp.ErrorCode, ids, tc.want)
			}
		})
	}
	resp2, _ := list(0, []string{"Ongoing", "Bogus"}, nil, -1, nil)
	if !reflect.DeepEqual(resp2.UnknownStateFilters, []string{"Bogus"}) {
		t.Fatalf("unknown filters %v", resp2.UnknownStateFilters)
	}
	if resp3, _ := list(2, nil, nil, -1, pat("(")); resp3.ErrorCode != codeInvalidRegularExpression {
		t.Fatalf("bad pattern: %d", resp3.ErrorCode)
	}
}

func TestConfigValidateAndSet(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Set("transaction.max.timeout.ms", "60000"); err != nil || cfg.MaxTimeout != time.Minute {
		t.Fatalf("set: %v %v", err, cfg.MaxTimeout)
	}
	if err := cfg.Set("transaction.state.log.num.partitions", "0"); err == nil {
		t.Fatal("0 partitions accepted")
	}
	if err := cfg.Set("no.such.key", "1"); err == nil {
		t.Fatal("unknown key accepted")
	}
	for name, mutate := range map[string]func(*Config){
		"zero expiration":   func(c *Config) { c.TransactionalIDExpiration = 0 },
		"zero max timeout":  func(c *Config) { c.MaxTimeout = 0 },
		"huge max timeout":  func(c *Config) { c.MaxTimeout = 1000 * time.Hour },
		"zero partitions":   func(c *Config) { c.NumPartitions = 0 },
		"zero abort check":  func(c *Config) { c.AbortTimedOutInterval = 0 },
		"zero expiry check": func(c *Config) { c.RemoveExpiredInterval = 0 },
	} {
		c := DefaultConfig()
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(DefaultConfig(), Options{Markers: newFakeMarkers()}); err == nil {
		t.Fatal("New without ProducerIDs accepted")
	}
}

func TestLoadRetriesAfterScanFailure(t *testing.T) {
	e := newEnv(t)
	pid, epoch := e.init("t1")
	e.log.scanFails.Store(2)
	e.c.Load(0, 8, e.log)
	if r := e.initReq(4, "t1", 1000, -1, -1); r.ErrorCode != codeCoordinatorLoadInProgress {
		t.Fatalf("while failing to load: %+v", r)
	}
	for _, backoff := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		e.waitFor("a load retry timer", func() bool { return e.clock.pending() == 1 })
		e.clock.Advance(backoff - time.Millisecond)
		if e.c.Loaded(0) {
			t.Fatal("loaded before the backoff")
		}
		e.clock.Advance(time.Millisecond)
	}
	e.waitLoaded(0)
	if d := e.describe("t1"); d.ProducerID != pid || d.ProducerEpoch != epoch {
		t.Fatalf("after retried load %+v", d)
	}
}

func TestProducerIDAllocationFailure(t *testing.T) {
	e := newEnv(t)
	e.pids.fail.Store(true)
	if r := e.initReq(4, "t1", 1000, -1, -1); r.ErrorCode != codeCoordinatorLoadInProgress || r.ProducerID != -1 {
		t.Fatalf("transactional: %+v", r)
	}
	if r := e.initReq(4, "\x00", 0, -1, -1); r.ErrorCode != codeCoordinatorLoadInProgress {
		t.Fatalf("idempotent: %+v", r)
	}
	if d := e.describe("t1"); d.ErrorCode != codeTransactionalIDNotFound {
		t.Fatalf("id kept after a failed allocation: %+v", d)
	}
	e.pids.fail.Store(false)
	if pid, ep := e.init("t1"); pid < 0 || ep != 0 {
		t.Fatalf("init %d/%d", pid, ep)
	}
}

// oddMarkers answers without some partitions, or with codes Kafka deems
// impossible, on its first call.
type oddMarkers struct {
	*fakeMarkers
	first atomic.Bool
}

func (m *oddMarkers) WriteMarkers(ctx context.Context, pid int64, epoch int16, ce int32, commit bool, parts []TopicPartition) map[TopicPartition]int16 {
	res := m.fakeMarkers.WriteMarkers(ctx, pid, epoch, ce, commit, parts)
	if !m.first.Swap(true) {
		delete(res, TopicPartition{"a", 0})
		res[TopicPartition{"a", 1}] = kerr.CorruptMessage.Code
	}
	return res
}

func TestOddMarkerResultsAreRetried(t *testing.T) {
	e := newEnv(t)
	odd := &oddMarkers{fakeMarkers: e.markers}
	e.opts.Markers = odd
	e.start()
	pid, epoch := e.init("t1")
	if c := e.add("t1", pid, epoch, map[string][]int32{"a": {0, 1, 2}}); c != 0 {
		t.Fatal(c)
	}
	if c := e.end(3, "t1", pid, epoch, false); c != 0 {
		t.Fatal(c)
	}
	e.waitCalls(1)
	e.waitRetryTimer()
	e.clock.Advance(100 * time.Millisecond)
	calls := e.waitCalls(2)
	e.idle()
	if !reflect.DeepEqual(calls[1].partitions, tps("a", 0, 1)) {
		t.Fatalf("retry %+v", calls[1])
	}
	if d := e.describe("t1"); d.State != "CompleteAbort" {
		t.Fatalf("state %q", d.State)
	}
}

// TestSnapshotWaitsForEveryCallbackOfTheLastAppend: a write made by the
// done callback of one record must not start a snapshot before the
// callbacks of the records after it in the same batch have applied their
// state; otherwise the snapshot misses them and DeleteBefore drops their
// records.
func TestSnapshotWaitsForEveryCallbackOfTheLastAppend(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"x", "a", "b", "c"} {
		e.init(id)
	}
	gate := make(chan struct{})
	e.log.mu.Lock()
	e.log.gate = gate
	e.log.mu.Unlock()
	e.onLoop(func(s *shard) {
		var bump func(id string, then func())
		bump = func(id string, then func()) {
			en := s.txns[id]
			next := en.meta
			next.producerEpoch++
			s.persist(en, next, func(error) {
				if then != nil {
					then()
				}
			})
		}
		bump("x", nil)                       // in flight alone
		bump("a", func() { bump("b", nil) }) // next batch, first record
		bump("c", nil)                       // next batch, second record
	})
	gate <- struct{}{}
	e.waitFor("second batch in flight", func() bool {
		inFlight := false
		e.onLoop(func(s *shard) { inFlight = s.appending && len(s.pending) == 0 && s.txns["x"].meta.producerEpoch == 1 })
		return inFlight
	})
	e.onLoop(func(s *shard) { s.snapshotDue = true })
	close(gate)
	e.idle()
	if e.stats().snapshots != 1 {
		t.Fatalf("stats %+v", e.stats())
	}
	e.log.mu.Lock()
	e.log.gate = nil
	e.log.mu.Unlock()
	e.start()
	for _, id := range []string{"x", "a", "b", "c"} {
		if d := e.describe(id); d.ProducerEpoch != 1 {
			t.Errorf("%s: epoch %d after reload, want 1", id, d.ProducerEpoch)
		}
	}
}
