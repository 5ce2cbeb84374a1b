package broker

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
)

// waitTestPartition is a partition led by broker 1 with followers 2 and 3
// in sync: an acks=all produce waits for the high watermark until both
// fetch.
func waitTestPartition(t *testing.T) *partition {
	t.Helper()
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	p := newPartition("hw", [16]byte{1}, 0, 1, log, &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62, minInsyncReplicas: 1})
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 0})
	return p
}

// startProduceWait appends a batch to p and starts its acks=all wait as a
// produce request (v7) on c read at start, timing out after timeout. It
// returns the request's place in the response order and the offset the
// wait needs the high watermark at.
func startProduceWait(t *testing.T, c *conn, p *partition, corr int32, start time.Time, timeout time.Duration) (*pending, int64) {
	t.Helper()
	res := appendOneRecord(t, p)
	h := requestHeader{key: int16(kmsg.Produce), version: 7, correlationID: corr}
	pe := &pending{header: h, start: start, observed: true}
	c.inflight.Add(1)
	c.queued.Add(1)
	c.queue <- pe
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 7
	resp.Topics = []kmsg.ProduceResponseTopic{{Topic: "hw", Partitions: []kmsg.ProduceResponseTopicPartition{{Partition: 0, BaseOffset: res.FirstOffset}}}}
	w := &produceWait{r: &request{conn: c, header: h, p: pe}, resp: resp, slots: []waitSlot{{p: p, offset: res.LastOffset + 1}}}
	w.start(timeout)
	return pe, res.LastOffset + 1
}

// produceErrorCode decodes a v7 produce answer's one partition error.
func produceErrorCode(t *testing.T, body []byte) int16 {
	t.Helper()
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 7
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func listedWaits(c *conn) int {
	c.waits.mu.Lock()
	defer c.waits.mu.Unlock()
	return len(c.waits.waits)
}

func hwWaitsOf(p *partition) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.hwWaits)
}

// The produce waits of a connection share one timer: each still answers
// REQUEST_TIMED_OUT at its own deadline (its timeout from when the request
// was read), a shorter one after a longer one included, and its high
// watermark wait is dropped; a wait answered in time leaves the list.
func TestProduceWaitsTimeOutAtTheirOwnDeadlines(t *testing.T) {
	p := waitTestPartition(t)
	client, c, writerDone := startWriter(t, 8)
	now := time.Now()
	long, _ := startProduceWait(t, c, p, 1, now, 2*time.Second)
	short, _ := startProduceWait(t, c, p, 2, now, 100*time.Millisecond)
	answeredInTime, end := startProduceWait(t, c, p, 3, now, time.Minute)
	// Read a while ago: its timeout counts from then.
	late, _ := startProduceWait(t, c, p, 4, now.Add(-time.Hour), time.Second)

	waitAnswered(t, late)
	if n := listedWaits(c); n != 3 {
		t.Fatalf("%d waits listed after the one past its deadline was answered, want 3", n)
	}
	waitAnswered(t, short)
	if d := time.Since(now); d < 100*time.Millisecond {
		t.Fatalf("the 100ms wait answered after %s", d)
	}
	if answered(long) {
		t.Fatal("the 2s wait answered with the 100ms one")
	}
	waitAnswered(t, long)
	if d := time.Since(now); d < 2*time.Second {
		t.Fatalf("the 2s wait answered after %s", d)
	}
	if n := listedWaits(c); n != 1 {
		t.Fatalf("%d waits listed after two expired, want 1", n)
	}
	if n := hwWaitsOf(p); n != 1 {
		t.Fatalf("%d high watermark waits kept after two expired, want 1", n)
	}
	for _, id := range []int32{2, 3} {
		if _, err := p.followerFetch(id, 1, end, 0, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	waitAnswered(t, answeredInTime)
	if n := listedWaits(c); n != 0 {
		t.Fatalf("%d waits listed after the last was answered", n)
	}
	wants := []int16{kerr.RequestTimedOut.Code, kerr.RequestTimedOut.Code, 0, kerr.RequestTimedOut.Code}
	for i, want := range wants {
		if got := produceErrorCode(t, readAnswer(t, client, int32(i+1))); got != want {
			t.Fatalf("answer %d: error %d, want %d", i+1, got, want)
		}
	}
	stopWriter(t, c, writerDone)
}

// A connection that closes ends its produce waits at once (nothing is
// sent, what they hold is given back, their high watermark waits are
// dropped), and a wait started after it is answered at once and never
// listed.
func TestClosedConnectionReleasesItsProduceWaits(t *testing.T) {
	p := waitTestPartition(t)
	_, c, writerDone := startWriter(t, 8)
	var ps []*pending
	for corr := int32(1); corr <= 3; corr++ {
		pe, _ := startProduceWait(t, c, p, corr, time.Now(), time.Minute)
		ps = append(ps, pe)
	}
	c.markBroken()
	for _, pe := range ps {
		waitAnswered(t, pe)
	}
	after, _ := startProduceWait(t, c, p, 4, time.Now(), time.Minute)
	waitAnswered(t, after)
	if n := listedWaits(c); n != 0 {
		t.Fatalf("%d waits listed on a closed connection", n)
	}
	if n := hwWaitsOf(p); n != 0 {
		t.Fatalf("%d high watermark waits kept on a closed connection", n)
	}
	stopWriter(t, c, writerDone)
}
