package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// An answer that comes while the writer waits for it alone (an acks=all
// produce answered when a follower's fetch moves the high watermark) is
// written by the answering goroutine, which never waits for the socket:
// with a client that stopped reading it writes what the socket takes and
// returns, and the writer sends the rest, once, in order.
func TestAnswerTheWriterWaitsForIsWrittenByItsAnswerer(t *testing.T) {
	client, c, writerDone := startWriter(t, 4)
	// queue hands p to the writer and waits until it waits for p's answer.
	queue := func(corr int32) *pending {
		p := &pending{header: requestHeader{key: int16(kmsg.Fetch), version: 12, correlationID: corr}, start: time.Now(), observed: true}
		c.inflight.Add(1)
		c.queued.Add(1)
		c.queue <- p
		for p.handoff.Load() != handoffWriterWaits {
			time.Sleep(time.Millisecond)
		}
		return p
	}
	fetchResponse := func(records int) *kmsg.FetchResponse {
		resp := kmsg.NewPtrFetchResponse()
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = "t"
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.RecordBatches = bytes.Repeat([]byte{'x'}, records)
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp
	}
	// Far more than the socket buffers hold while the client reads
	// nothing.
	const big = 64 << 20
	p1 := queue(1)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		c.answer(p1, fetchResponse(big))
	}()
	select {
	case <-answered:
	case <-time.After(30 * time.Second):
		t.Fatal("the answering goroutine waited for a client that reads nothing")
	}
	if got := p1.handoff.Load(); got != handoffPartial {
		t.Fatalf("handoff %d after answering with %d bytes to a client that reads nothing, want %d (partial)", got, big, handoffPartial)
	}
	// The writer sends the rest once the client reads; then a small
	// answer goes out whole from its answerer.
	decode := func(body []byte) *kmsg.FetchResponse {
		t.Helper()
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = 12
		body = body[1:] // the flexible header's empty tagged fields
		if err := resp.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if n := len(decode(readAnswer(t, client, 1)).Topics[0].Partitions[0].RecordBatches); n != big {
		t.Fatalf("%d record bytes in the first answer, want %d", n, big)
	}
	waitAnswered(t, p1)
	p2 := queue(2)
	c.answer(p2, fetchResponse(100))
	if got := p2.handoff.Load(); got != handoffWritten {
		t.Fatalf("handoff %d after a small answer, want %d (written by the answerer)", got, handoffWritten)
	}
	if n := len(decode(readAnswer(t, client, 2)).Topics[0].Partitions[0].RecordBatches); n != 100 {
		t.Fatalf("%d record bytes in the second answer, want 100", n)
	}
	// Nothing is written twice.
	client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d more bytes (err %v) after both answers", n, err)
	}
	stopWriter(t, c, writerDone)
}

// Answers a group commit gives (respondGathered) are never written by the
// answering goroutine, even while the writer waits for the first alone:
// the writer writes them, those ready by then together, in order.
func TestGatheredAnswersAreWrittenByTheWriter(t *testing.T) {
	client, c, writerDone := startWriter(t, 8)
	var ps []*pending
	for corr := int32(1); corr <= 4; corr++ {
		p := &pending{header: requestHeader{key: int16(kmsg.Produce), version: 9, correlationID: corr}, start: time.Now(), observed: true}
		c.inflight.Add(1)
		c.queued.Add(1)
		c.queue <- p
		ps = append(ps, p)
	}
	for ps[0].handoff.Load() != handoffWriterWaits {
		time.Sleep(time.Millisecond)
	}
	for _, p := range ps {
		r := &request{conn: c, header: p.header, p: p}
		r.respondGathered(kmsg.NewPtrProduceResponse())
		if got := p.handoff.Load(); got == handoffWritten {
			t.Fatalf("answer %d written by its answerer", p.header.correlationID)
		}
	}
	for corr := int32(1); corr <= 4; corr++ {
		readAnswer(t, client, corr)
	}
	stopWriter(t, c, writerDone)
}

// readAnswer reads the next answer frame from the client's end of the
// connection, checks that it answers wantCorr and returns its body.
func readAnswer(t *testing.T, client net.Conn, wantCorr int32) []byte {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(client, size[:]); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(client, frame); err != nil {
		t.Fatal(err)
	}
	if corr := int32(binary.BigEndian.Uint32(frame)); corr != wantCorr {
		t.Fatalf("correlation id %d, want %d", corr, wantCorr)
	}
	return frame[4:]
}

// startWriter starts the writer of a connection whose client end it
// returns, with a queue of queueLen requests.
func startWriter(t *testing.T, queueLen int) (client net.Conn, c *conn, writerDone <-chan struct{}) {
	client, server := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := &Broker{requestMemory: newByteBudget(64 << 20), responseMemory: newByteBudget(64 << 20)}
	c = &conn{b: b, nc: server, ctx: ctx, cancel: cancel, queue: make(chan *pending, queueLen), w: newConnWriter(server, time.Minute),
		sent: make(chan struct{}, 1), held: make([]*pending, 0, maxWriteBatch),
		answers: make(chan struct{}, 1), calls: make(chan *produceCall, maxInflightPerConn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	return client, c, done
}

// stopWriter ends the writer and checks that it left nothing queued, in
// flight, unsent or charged to the response budget.
func stopWriter(t *testing.T, c *conn, writerDone <-chan struct{}) {
	t.Helper()
	close(c.queue)
	<-writerDone
	if q, in, unsent, mem := c.queued.Load(), c.inflight.Load(), c.unsent.Load(), c.b.responseMemory.inUse(); q != 0 || in != 0 || unsent != 0 || mem != 0 {
		t.Fatalf("after the answers: %d queued, %d in flight, %d bytes unsent, %d of the response budget held", q, in, unsent, mem)
	}
}

// waitAnswered waits until p is answered (30 s at most).
func waitAnswered(t *testing.T, p *pending) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !answered(p) {
		if time.Now().After(deadline) {
			t.Fatalf("request %d not answered in 30s", p.header.correlationID)
		}
		time.Sleep(time.Millisecond)
	}
}

// brokenWhileEncoded is a response whose encoding sees the connection
// broken (its client gone) after the answerer looked.
type brokenWhileEncoded struct {
	*kmsg.HeartbeatResponse
	c *conn
}

func (r brokenWhileEncoded) AppendTo(dst []byte) []byte {
	r.c.markBroken()
	return r.HeartbeatResponse.AppendTo(dst)
}

// A connection broken while the answer the writer waits for is made still
// wakes the writer, which drops the answer and ends: the writer once
// waited forever there, and the broker's Close with it.
func TestAnswerOfAConnectionBrokenMeanwhileWakesTheWriter(t *testing.T) {
	_, c, writerDone := startWriter(t, 4)
	p := &pending{header: requestHeader{key: int16(kmsg.Heartbeat), version: 4, correlationID: 1}, start: time.Now(), observed: true}
	c.inflight.Add(1)
	c.queued.Add(1)
	c.queue <- p
	for p.handoff.Load() != handoffWriterWaits {
		time.Sleep(time.Millisecond)
	}
	c.answer(p, brokenWhileEncoded{kmsg.NewPtrHeartbeatResponse(), c})
	close(c.queue)
	select {
	case <-writerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer still waits for an answer given while the connection broke")
	}
	if q, in, unsent, mem := c.queued.Load(), c.inflight.Load(), c.unsent.Load(), c.b.responseMemory.inUse(); q != 0 || in != 0 || unsent != 0 || mem != 0 {
		t.Fatalf("after the writer ended: %d queued, %d in flight, %d bytes unsent, %d of the response budget held", q, in, unsent, mem)
	}
}
