package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestHighWatermarkWaitsAreAnsweredByWhatMovesIt: an acks=all produce's
// wait is called back by the follower fetch that moves the high watermark
// past it (no goroutine parked per produce), with errNotLeader when the
// broker stops leading first; a wait given up (its produce timed out) is
// never called and not kept.
func TestHighWatermarkWaitsAreAnsweredByWhatMovesIt(t *testing.T) {
	p := newReplicatedPartition(t, "hw")
	leadWithAll(p, 1)
	produce := func() int64 {
		t.Helper()
		return appendOneRecord(t, p).LastOffset + 1
	}
	fetch := func(id int32, offset int64) {
		t.Helper()
		if _, err := p.followerFetch(id, 1, offset, 0, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	type call struct{ err error }
	calls := make(chan call, 10)
	done := func(err error) { calls <- call{err} }
	expect := func(what string, want error) {
		t.Helper()
		select {
		case c := <-calls:
			if !errors.Is(c.err, want) {
				t.Fatalf("%s: called with %v, want %v", what, c.err, want)
			}
		default:
			t.Fatalf("%s: not called back", what)
		}
	}
	expectNone := func(what string) {
		t.Helper()
		select {
		case c := <-calls:
			t.Fatalf("%s: called back with %v", what, c.err)
		default:
		}
	}

	end := produce()
	w, reached, err := p.whenHW(end, 0, done)
	if reached || err != nil {
		t.Fatalf("wait past the high watermark: reached %v, %v", reached, err)
	}
	fetch(2, end)
	expectNone("one follower of two has the batch")
	fetch(3, end)
	expect("both followers have the batch", nil)
	if _, reached, err := p.whenHW(end, 0, done); !reached || err != nil {
		t.Fatalf("wait at the high watermark: reached %v, %v; want reached at once", reached, err)
	}

	// A wait given up is dropped, and not called when the mark passes.
	end = produce()
	w, _, _ = p.whenHW(end, 0, done)
	p.cancelHW(w)
	if n := len(p.mu.hwWaits); n != 0 {
		t.Fatalf("%d waits kept after the only one was given up", n)
	}
	fetch(2, end)
	fetch(3, end)
	expectNone("a wait given up")

	// Leadership lost first: errNotLeader, and nothing is kept.
	end = produce()
	if _, reached, _ := p.whenHW(end, 0, done); reached {
		t.Fatal("wait past the high watermark reached at once")
	}
	p.setLeadership(leadership{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3}, partitionEpoch: 1})
	expect("leadership moved", errNotLeader)
	if n := len(p.mu.hwWaits); n != 0 {
		t.Fatalf("%d waits kept after leadership moved", n)
	}
	if _, reached, err := p.whenHW(end+1, 0, done); !reached || !errors.Is(err, errNotLeader) {
		t.Fatalf("wait on a follower: reached %v, %v; want errNotLeader at once", reached, err)
	}
}

// TestOffsetsLogWaitsAsAHighWatermarkCallback: the group coordinator's
// append waits for the high watermark the way an acks=all produce does,
// as a callback the follower fetch that moves the mark runs, not as a
// waiter woken (and looking again) on every append and fetch; a wait
// given up (its context ended) is not kept, a commit the ISR's shrink
// below min.insync.replicas passes is not committed (and none is appended
// below it), and a leadership lost first answers group.ErrNotLeader.
func TestOffsetsLogWaitsAsAHighWatermarkCallback(t *testing.T) {
	p := newReplicatedPartition(t, offsetsTopic)
	leadWithAll(p, 1)
	l := &offsetsLog{p: p}
	type result struct {
		off int64
		err error
	}
	appendAsync := func(ctx context.Context) <-chan result {
		out := make(chan result, 1)
		go func() {
			off, err := l.Append(ctx, []recordbatch.Record{{Key: []byte("k"), Value: []byte("v")}})
			out <- result{off, err}
		}()
		// Parked once its wait is registered, one way or the other.
		for {
			p.mu.Lock()
			hw, woken := len(p.mu.hwWaits), len(p.mu.waiters)
			p.mu.Unlock()
			if woken > 0 {
				t.Fatalf("the append waits as a waiter woken on every change (%d), not as a high watermark callback", woken)
			}
			if hw == 1 {
				return out
			}
			select {
			case r := <-out:
				t.Fatalf("the append returned (%d, %v) before the followers had its record", r.off, r.err)
			default:
			}
			time.Sleep(time.Millisecond)
		}
	}
	fetch := func(id int32, offset int64) {
		t.Helper()
		if _, err := p.followerFetch(id, 1, offset, 0, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	got := appendAsync(context.Background())
	end := p.log.LogEndOffset()
	fetch(2, end)
	fetch(3, end)
	if r := <-got; r.err != nil || r.off != end-1 {
		t.Fatalf("append answered (%d, %v), want (%d, nil)", r.off, r.err, end-1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	got = appendAsync(ctx)
	cancel()
	if r := <-got; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("append whose context ended answered (%d, %v)", r.off, r.err)
	}
	if n := len(p.mu.hwWaits); n != 0 {
		t.Fatalf("%d waits kept after the only one was given up", n)
	}

	// With min.insync.replicas=2: a commit the ISR's shrink below it
	// passes is not committed, and none is appended while it is below.
	cfg := *p.cfg.Load()
	cfg.minInsyncReplicas = 2
	p.cfg.Store(&cfg)
	got = appendAsync(context.Background())
	fetch(2, p.log.LogEndOffset())
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: []int32{1}, partitionEpoch: 2})
	if r := <-got; !errors.Is(r.err, errNotEnoughReplicasAfterAppend) {
		t.Fatalf("append the ISR's shrink below min.insync.replicas passed answered (%d, %v), want errNotEnoughReplicasAfterAppend", r.off, r.err)
	}
	end = p.log.LogEndOffset()
	if _, err := l.Append(context.Background(), []recordbatch.Record{{Key: []byte("k"), Value: []byte("v")}}); !errors.Is(err, errNotEnoughReplicas) || p.log.LogEndOffset() != end {
		t.Fatalf("append below min.insync.replicas: %v, log end %d (was %d); want errNotEnoughReplicas, nothing appended", err, p.log.LogEndOffset(), end)
	}
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 3})
	fetch(3, end)

	got = appendAsync(context.Background())
	p.setLeadership(leadership{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3}, partitionEpoch: 4})
	if r := <-got; !errors.Is(r.err, group.ErrNotLeader) {
		t.Fatalf("append whose leadership moved answered (%d, %v), want group.ErrNotLeader", r.off, r.err)
	}
}

// Answers one move of the high watermark releases together are written
// by the connection's writer, in one write and in order, not each by the
// follower fetch that moved it (as the group commit's are, see
// TestGatheredAnswersAreWrittenByTheWriter); one released alone while
// the writer waits for it is written by that fetch.
func TestAnswersReleasedByOneHighWatermarkMoveAreGathered(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p := newPartition("hw", [16]byte{1}, 0, 1, log, &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62, minInsyncReplicas: 1})
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 0})
	client, c, writerDone := startWriter(t, 8)
	var ps []*pending
	// produce appends a batch and registers its acks=all wait as a
	// produce request on c whose answer the writer waits for.
	produce := func(corr int32) int64 {
		t.Helper()
		res := appendOneRecord(t, p)
		h := requestHeader{key: int16(kmsg.Produce), version: 9, correlationID: corr}
		pe := &pending{header: h, start: time.Now(), observed: true}
		c.inflight.Add(1)
		c.queued.Add(1)
		c.queue <- pe
		ps = append(ps, pe)
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = 9
		resp.Topics = []kmsg.ProduceResponseTopic{{Topic: "hw", Partitions: []kmsg.ProduceResponseTopicPartition{{Partition: 0, BaseOffset: res.FirstOffset}}}}
		w := &produceWait{r: &request{conn: c, header: h, p: pe}, resp: resp, slots: []waitSlot{{p: p, offset: res.LastOffset + 1}}}
		w.start(time.Minute)
		return res.LastOffset + 1
	}
	fetch := func(id int32, offset int64) {
		t.Helper()
		if _, err := p.followerFetch(id, 1, offset, 0, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	writerWaits := func(pe *pending) {
		for pe.handoff.Load() != handoffWriterWaits {
			time.Sleep(time.Millisecond)
		}
	}

	var end int64
	for corr := int32(1); corr <= 4; corr++ {
		end = produce(corr)
	}
	writerWaits(ps[0])
	fetch(2, end)
	fetch(3, end) // moves the high watermark past all four
	for i, pe := range ps {
		waitAnswered(t, pe)
		if got := pe.handoff.Load(); got == handoffWritten {
			t.Fatalf("answer %d of 4 released together written by the fetch", i+1)
		}
	}
	for corr := int32(1); corr <= 4; corr++ {
		readAnswer(t, client, corr)
	}

	end = produce(5)
	writerWaits(ps[4])
	fetch(2, end)
	fetch(3, end)
	waitAnswered(t, ps[4])
	if got := ps[4].handoff.Load(); got != handoffWritten {
		t.Fatalf("an answer released alone, the writer waiting for it: hand-off state %d, want written by the fetch (%d)", got, handoffWritten)
	}
	readAnswer(t, client, 5)
	stopWriter(t, c, writerDone)
}

// newReplicatedPartition opens a log in a temporary directory (closed at
// the test's end) and returns a partition of it on broker 1, one of the
// replicas 1, 2 and 3.
func newReplicatedPartition(t *testing.T, topic string) *partition {
	t.Helper()
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return newPartition(topic, [16]byte{1}, 0, 1, log, &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62})
}

// leadWithAll makes broker 1 the leader of p at epoch, all three replicas
// in sync.
func leadWithAll(p *partition, epoch int32) {
	p.setLeadership(leadership{leader: 1, leaderEpoch: epoch, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: epoch})
}

// followersFetch has both followers of p fetch from offset at epoch,
// telling the leader they hold everything below it.
func followersFetch(t *testing.T, p *partition, epoch int32, offset int64) {
	t.Helper()
	for _, id := range []int32{2, 3} {
		if _, err := p.followerFetch(id, epoch, offset, 0, epoch, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// appendOneRecord appends a batch of one record to p as its leader and
// wakes the waits on it.
func appendOneRecord(t *testing.T, p *partition) localseg.AppendResult {
	t.Helper()
	raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]recordbatch.Record{{Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := p.appendProduce(recordbatch.Batch(raw), recordbatch.Summary{Records: 1, MinTimestamp: recordbatch.NoTimestamp, MaxTimestamp: recordbatch.NoTimestamp}, -1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.wake()
	return res
}

// An acks=all produce's high watermark wait (followers in sync) lies in
// its slot, which is also what the partition tells: registering and
// dropping it allocate nothing (a wait and a closure per request before).
func TestProduceHighWatermarkWaitAllocatesNothing(t *testing.T) {
	p := waitTestPartition(t)
	end := appendOneRecord(t, p).LastOffset + 1
	var sl waitSlot
	if allocs := testing.AllocsPerRun(100, func() {
		if reached, err := p.whenHWInto(&sl.hwBuf, end, 0, nil, &sl); reached || err != nil {
			t.Fatalf("reached %v, %v, with the followers behind", reached, err)
		}
		if !p.cancelHW(&sl.hwBuf) {
			t.Fatal("the wait was not registered")
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per high watermark wait", allocs)
	}
}

// TestAnAcksAllWaitPassedOnlyAfterTheISRShrankBelowMinInsyncIsNotAcknowledged:
// an acks=all produce appended while the ISR had min.insync.replicas
// members, whose high watermark wait the ISR's shrink below it ends, is
// answered NOT_ENOUGH_REPLICAS_AFTER_APPEND, as Kafka's delayed produce
// is: fewer replicas than min.insync.replicas hold it, and those that
// left the ISR (its eligible leader replicas) may lack it. A shrink that
// keeps min.insync.replicas acknowledges it.
func TestAnAcksAllWaitPassedOnlyAfterTheISRShrankBelowMinInsyncIsNotAcknowledged(t *testing.T) {
	for _, tc := range []struct {
		name string
		isr  []int32
		want error
	}{
		{"shrunk below min.insync.replicas", []int32{1}, errNotEnoughReplicasAfterAppend},
		{"shrunk to min.insync.replicas", []int32{1, 2}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newReplicatedPartition(t, "after-append")
			leadWithAll(p, 1)
			end := appendOneRecord(t, p).LastOffset + 1
			if _, err := p.followerFetch(2, 1, end, 0, 1, time.Now()); err != nil {
				t.Fatal(err)
			}
			calls := make(chan error, 1)
			var w hwWait
			if reached, err := p.whenHWInto(&w, end, 2, nil, hwFunc(func(err error, _ bool) { calls <- err })); reached || err != nil {
				t.Fatalf("wait past the high watermark: reached %v, %v", reached, err)
			}
			p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: tc.isr, partitionEpoch: 2})
			select {
			case err := <-calls:
				if !errors.Is(err, tc.want) {
					t.Fatalf("ISR %v: answered %v, want %v", tc.isr, err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("ISR %v: the wait was never answered", tc.isr)
			}
			var again hwWait
			if reached, err := p.whenHWInto(&again, end, 2, nil, hwFunc(func(error, bool) {})); !reached || !errors.Is(err, tc.want) {
				t.Fatalf("ISR %v: a wait at the high watermark: reached %v, %v; want reached, %v", tc.isr, reached, err, tc.want)
			}
		})
	}
}

// TestTheHighWatermarkHoldsStillWhileTheISRIsBelowMinInsyncReplicas:
// KIP-966's strict min ISR. acks=1 appends go on while the ISR is below
// min.insync.replicas, but the high watermark does not pass them until
// the ISR is back (or min.insync.replicas comes down to it), so that the
// members that left hold every record below it; an acks=all wait
// registered meanwhile ends at once, NOT_ENOUGH_REPLICAS_AFTER_APPEND. A
// partition with fewer replicas than min.insync.replicas needs all of
// them.
func TestTheHighWatermarkHoldsStillWhileTheISRIsBelowMinInsyncReplicas(t *testing.T) {
	p := newReplicatedPartition(t, "hw")
	setMinISR := func(n int32) {
		cfg := *p.cfg.Load()
		cfg.minInsyncReplicas = n
		p.cfg.Store(&cfg)
	}
	setMinISR(2)
	epoch := int32(0)
	lead := func(replicas, isr []int32) {
		epoch++
		p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: replicas, isr: isr, partitionEpoch: epoch})
	}
	appendAcks1 := func() int64 {
		t.Helper()
		raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("v")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.appendProduce(recordbatch.Batch(raw), recordbatch.Summary{Records: 1, MinTimestamp: recordbatch.NoTimestamp, MaxTimestamp: recordbatch.NoTimestamp}, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
		p.wake()
		return p.log.LogEndOffset()
	}
	fetch := func(id int32, offset int64) {
		t.Helper()
		if _, err := p.followerFetch(id, 1, offset, 0, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	wantHW := func(what string, want int64) {
		t.Helper()
		if hw := p.highWatermark(); hw != want {
			t.Fatalf("%s: high watermark %d, want %d", what, hw, want)
		}
	}
	all := []int32{1, 2, 3}

	lead(all, all)
	end := appendAcks1()
	fetch(2, end)
	fetch(3, end)
	wantHW("ISR [1 2 3]", end)
	lead(all, []int32{1, 2})
	end = appendAcks1()
	fetch(2, end)
	wantHW("ISR [1 2], at min.insync.replicas", end)

	lead(all, []int32{1})
	held := end
	end = appendAcks1()
	end = appendAcks1()
	fetch(2, end)
	wantHW("ISR [1], below min.insync.replicas, after acks=1 appends", held)
	if _, reached, err := p.whenHW(end, 2, func(error) {}); !reached || !errors.Is(err, errNotEnoughReplicasAfterAppend) {
		t.Fatalf("an acks=all wait registered below min.insync.replicas: reached %v, %v; want errNotEnoughReplicasAfterAppend at once", reached, err)
	}
	if _, reached, err := p.whenHW(end, 0, func(error) {}); reached || err != nil {
		t.Fatalf("a wait without min.insync.replicas below it: reached %v, %v; want it kept", reached, err)
	}
	// min.insync.replicas down to 1: the next metadata applied moves it.
	setMinISR(1)
	lead(all, []int32{1})
	wantHW("ISR [1], min.insync.replicas=1", end)
	setMinISR(2)
	end = appendAcks1()
	lead(all, []int32{1})
	wantHW("ISR [1] again below min.insync.replicas=2", end-1)
	// 3 back in the ISR (it fetched up to the end first).
	fetch(3, end)
	wantHW("3 caught up, not yet in the ISR", end-1)
	lead(all, []int32{1, 3})
	wantHW("ISR [1 3]", end)

	// A replica set smaller than min.insync.replicas needs all of it.
	lead([]int32{1, 2}, []int32{1, 2})
	end = appendAcks1()
	fetch(2, end)
	wantHW("two replicas in sync, min.insync.replicas=2", end)
	setMinISR(3)
	end = appendAcks1()
	fetch(2, end)
	wantHW("two replicas in sync, min.insync.replicas=3", end)
	lead([]int32{1, 2}, []int32{1})
	end = appendAcks1()
	wantHW("one of two replicas in sync, min.insync.replicas=3", end-1)
}
