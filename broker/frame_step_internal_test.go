package broker

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// A frame larger than a chunk is read into one buffer of its size once a
// quarter of it has arrived; before, its buffer grew from 64 KiB whatever
// had arrived, copying at each step. What a client that stops sending can
// hold stays bounded by what it sent.
func TestFrameStepSizesFromWhatArrived(t *testing.T) {
	for _, c := range []struct {
		name                string
		size, arrived, prev int
		limit               int
		want                int
	}{
		{"a pipelined 1 MiB frame, a quarter arrived", 1 << 20, 256 << 10, 0, 100 << 20, 1 << 20},
		{"a 1 MiB frame, all arrived", 1 << 20, 1 << 20, 0, 100 << 20, 1 << 20},
		{"a declared 100 MiB, 4 bytes sent", 100 << 20, 4, 0, 100 << 20, firstFrameStep},
		{"a declared 100 MiB, 3 MiB sent", 100 << 20, 3 << 20, 0, 100 << 20, 12 << 20},
		{"growing past the last buffer", 100 << 20, 65 << 10, 64 << 10, 100 << 20, 260 << 10},
		{"the last step is the frame", 300 << 10, 80 << 10, 64 << 10, 100 << 20, 300 << 10},
		// Regression: a clean-clone CI run saw a stalled client that had
		// sent 3 MiB of a declared 100 MiB hold 16 MiB of a 4 MiB budget.
		{"3 MiB sent of 100 MiB, a 4 MiB budget", 100 << 20, 3 << 20, 0, 4 << 20, 4 << 20},
		{"past the budget, a step beyond what arrived", 100 << 20, 5 << 20, 5 << 20, 4 << 20, 5<<20 + firstFrameStep},
		{"no budget", 100 << 20, 3 << 20, 0, 0, 12 << 20},
	} {
		if got := frameStep(c.size, c.arrived, c.prev, c.limit); got != c.want {
			t.Errorf("%s: frameStep(%d, %d, %d, %d) = %d, want %d", c.name, c.size, c.arrived, c.prev, c.limit, got, c.want)
		}
	}
	for _, limit := range []int{0, 1 << 20, 4 << 20, 100 << 20} {
		for size := chunkSize + 1; size < 64<<20; size = size*3 + 7 {
			for arrived := 0; arrived <= size; arrived = arrived*2 + 1 {
				got := frameStep(size, arrived, 0, limit)
				if got > size || got > max(firstFrameStep, frameGrowth*arrived) || got < min(size, firstFrameStep) {
					t.Fatalf("frameStep(%d, %d, 0, %d) = %d", size, arrived, limit, got)
				}
				if limit > 0 && got > max(limit, arrived+firstFrameStep) {
					t.Fatalf("frameStep(%d, %d, 0, %d) = %d: past the budget for bytes not arrived", size, arrived, limit, got)
				}
				// Every step reads something: a frame's buffer never
				// stops growing before it holds the frame.
				if got < size && got <= arrived && arrived > 0 && got == arrived {
					t.Fatalf("frameStep(%d, %d, 0, %d) = %d: no room to read", size, arrived, limit, got)
				}
			}
		}
	}
}

// unreadBytes reads what the socket holds: without it, frames are sized
// from the reader's buffer alone and grow in steps again.
func TestUnreadBytesCountsWhatTheSocketHolds(t *testing.T) {
	client, server := tcpPair(t)
	c := &conn{nc: server, w: newConnWriter(server, 0)}
	if n := c.unreadBytes(); n != 0 {
		t.Fatalf("%d bytes unread before any were sent", n)
	}
	const sent = 48 << 10
	if _, err := client.Write(make([]byte, sent)); err != nil {
		t.Fatal(err)
	}
	for n := c.unreadBytes(); n != sent; n = c.unreadBytes() {
		if n > sent {
			t.Fatalf("%d bytes unread, %d sent", n, sent)
		}
		time.Sleep(time.Millisecond) // until the bytes are delivered
	}
	if _, err := io.ReadFull(server, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if n := c.unreadBytes(); n != sent-1000 {
		t.Fatalf("%d bytes unread after reading 1000 of %d", n, sent)
	}
}

// tcpPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if client, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// The socket is asked what has arrived (SIOCINQ, a system call) at most
// once per step of a frame larger than a chunk, and not when the step is
// the whole frame anyway; frames that fit a chunk, the produce requests of
// a pipelining client, never ask. The first step of a large frame asked
// twice before.
func TestFramesAskTheSocketOnlyWhenTheStepDependsOnIt(t *testing.T) {
	client, server := tcpPair(t)
	c := &conn{b: &Broker{requestMemory: newByteBudget(64 << 20)}, nc: server, w: newConnWriter(server, 0), ctx: context.Background()}
	deadline := time.Now().Add(time.Minute)
	send := func(n int) {
		go client.Write(bytes.Repeat([]byte{'x'}, n))
	}

	// A chunk-sized frame, through the frame reader.
	fr := newFrameReader(c)
	send(300 << 10)
	if buf, _, inPlace, err := fr.frame(300<<10, deadline); err != nil || !inPlace || len(buf) != 300<<10 {
		t.Fatalf("chunk-sized frame: %d bytes, in place %v, %v", len(buf), inPlace, err)
	}
	fr.close()
	if c.unreadAsks != 0 {
		t.Fatalf("a frame that fits a chunk asked the socket %d times", c.unreadAsks)
	}

	for _, tc := range []struct {
		name        string
		size, first int
		asks        int
	}{
		// Its first step (256 KiB) depends on what arrived: one ask;
		// the next is the whole frame whatever arrived.
		{"64 KiB of 1 MiB read already", 1 << 20, 64 << 10, 1},
		// A quarter read: the first step is the frame.
		{"a quarter of 1 MiB read already", 1 << 20, 256 << 10, 0},
	} {
		c.unreadAsks = 0
		send(tc.size - tc.first)
		first := bytes.Repeat([]byte{'x'}, tc.first)
		buf, reserved, err := c.readFrame(first, func() {}, tc.size, deadline)
		if err != nil || len(buf) != tc.size || bytes.Count(buf, []byte{'x'}) != tc.size {
			t.Fatalf("%s: %d bytes, %v", tc.name, len(buf), err)
		}
		c.releaseBuf(buf, reserved)
		if c.unreadAsks != tc.asks {
			t.Errorf("%s: asked the socket %d times, want %d", tc.name, c.unreadAsks, tc.asks)
		}
	}
}
