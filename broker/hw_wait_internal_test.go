package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestHighWatermarkWaitsAreAnsweredByWhatMovesIt: an acks=all produce's
// wait is called back by the follower fetch that moves the high watermark
// past it (no goroutine parked per produce), with errNotLeader when the
// broker stops leading first; a wait given up (its produce timed out) is
// never called and not kept.
func TestHighWatermarkWaitsAreAnsweredByWhatMovesIt(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p := newPartition("hw", [16]byte{1}, 0, 1, log, &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62})
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 0})
	produce := func() int64 {
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
		return res.LastOffset + 1
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
	w, reached, err := p.whenHW(end, done)
	if reached || err != nil {
		t.Fatalf("wait past the high watermark: reached %v, %v", reached, err)
	}
	fetch(2, end)
	expectNone("one follower of two has the batch")
	fetch(3, end)
	expect("both followers have the batch", nil)
	if _, reached, err := p.whenHW(end, done); !reached || err != nil {
		t.Fatalf("wait at the high watermark: reached %v, %v; want reached at once", reached, err)
	}

	// A wait given up is dropped, and not called when the mark passes.
	end = produce()
	w, _, _ = p.whenHW(end, done)
	p.cancelHW(w)
	if n := len(p.mu.hwWaits); n != 0 {
		t.Fatalf("%d waits kept after the only one was given up", n)
	}
	fetch(2, end)
	fetch(3, end)
	expectNone("a wait given up")

	// Leadership lost first: errNotLeader, and nothing is kept.
	end = produce()
	if _, reached, _ := p.whenHW(end, done); reached {
		t.Fatal("wait past the high watermark reached at once")
	}
	p.setLeadership(leadership{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3}, partitionEpoch: 1})
	expect("leadership moved", errNotLeader)
	if n := len(p.mu.hwWaits); n != 0 {
		t.Fatalf("%d waits kept after leadership moved", n)
	}
	if _, reached, err := p.whenHW(end+1, done); !reached || !errors.Is(err, errNotLeader) {
		t.Fatalf("wait on a follower: reached %v, %v; want errNotLeader at once", reached, err)
	}
}
