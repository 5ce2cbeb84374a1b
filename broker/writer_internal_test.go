package broker

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/tiering"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestWriterMovesItsDeadlineOnlyWhenItFallsShort: a stream of small
// answers sets the write deadline once, not once per answer; each write
// still gets at least its allowance (a timeout per MiB from when it is
// armed) and at most a timeout more; a large write moves it further, and
// the small write after it brings it back.
func TestWriterMovesItsDeadlineOnlyWhenItFallsShort(t *testing.T) {
	const timeout = time.Minute
	nc := &deadlineConn{}
	w := newConnWriter(nc, timeout)
	check := func(n int64) {
		t.Helper()
		before := time.Now()
		w.arm(n)
		after := time.Now()
		allow := timeout * time.Duration(1+n>>20)
		if len(nc.set) == 0 {
			t.Fatal("no deadline set")
		}
		d := nc.set[len(nc.set)-1]
		if d.Before(before.Add(allow)) || d.After(after.Add(allow+timeout)) {
			t.Fatalf("%d bytes: deadline %v from now, want %v to %v", n, d.Sub(after), allow, allow+timeout)
		}
	}
	for range 1000 {
		check(100)
	}
	if len(nc.set) != 1 {
		t.Fatalf("%d deadlines set for 1000 small writes, want 1", len(nc.set))
	}
	check(10 << 20)
	if len(nc.set) != 2 {
		t.Fatalf("%d deadlines set after a 10 MiB write, want 2", len(nc.set))
	}
	check(100)
	if len(nc.set) != 3 {
		t.Fatalf("%d deadlines set after a small write behind a large one, want 3", len(nc.set))
	}
	// Once the deadline falls short of a small write's allowance (a
	// quarter of the timeout has passed), it moves again.
	w.deadline = w.deadline.Add(-timeout / 2)
	check(100)
	if len(nc.set) != 4 {
		t.Fatalf("%d deadlines set after the deadline fell short, want 4", len(nc.set))
	}
}

// TestRawResponseMixesRemoteBytesAndFileRanges writes a response whose
// record data is, in turn, bytes read from the object store (several
// slices), a file range, object-store bytes again and a file range last,
// over a real TCP connection (sendfile and MSG_MORE take their own
// paths), and checks the client gets the frame byte for byte: the bytes
// in memory between two file ranges go out in one writev.
func TestRawResponseMixesRemoteBytesAndFileRanges(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for range 3 {
		b, _ := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: bytes.Repeat([]byte("v"), 3000)}})
		if _, err := log.AppendAsLeader(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	client, server := tcpPair(t)
	w := newConnWriter(server, time.Minute)
	if w.raw == nil {
		t.Fatal("a TCP connection has no raw connection")
	}
	remote := func(n int) ([][]byte, []byte) {
		var bufs [][]byte
		var all []byte
		for i := range n {
			b := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
			bufs = append(bufs, b)
			all = append(all, b...)
		}
		return bufs, all
	}
	body := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	r := &rawResponse{body: body}
	var want []byte
	prev := 0
	for i, at := range []int{4, 10, 20, 30} {
		want = append(want, body[prev:at]...)
		prev = at
		if i%2 == 0 {
			bufs, all := remote(3 + i)
			r.cuts = append(r.cuts, rawCut{at: at, data: tiering.Data{Bufs: bufs}})
			want = append(want, all...)
			continue
		}
		rng, err := log.Read(0, 1<<20, math.MaxInt64, true)
		if err != nil {
			t.Fatal(err)
		}
		records, err := rng.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		r.cuts = append(r.cuts, rawCut{at: at, rng: rng})
		want = append(want, records...)
	}
	want = append(want, body[prev:]...)
	h := requestHeader{key: 1, version: 11, correlationID: 42}
	frame := appendResponseHeader(nil, h)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4+len(want)))
	frame = append(frame, want...)
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(frame))
		_, err := io.ReadFull(client, buf)
		if err != nil {
			buf = nil
		}
		got <- buf
	}()
	if err := w.writeRaw(h, r); err != nil {
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, frame) {
		t.Fatalf("the client read %d bytes that differ from the %d of the response", len(g), len(frame))
	}
}

// TestColdResponseReleasesItsStepWhileTheClientDoesNotRead checks that
// a response holding record data read from the object store goes out
// whole through the cold threads' gate, and that a write waiting for
// room in the socket holds no step of it: a slow consumer of a replay
// must not keep the other cold work (or, through it, hot traffic) from
// a processor.
func TestColdResponseReleasesItsStepWhileTheClientDoesNotRead(t *testing.T) {
	client, server := tcpPair(t)
	client.(*net.TCPConn).SetReadBuffer(64 << 10)
	server.(*net.TCPConn).SetWriteBuffer(64 << 10)
	w := newConnWriter(server, time.Minute)
	cold := tiering.NewColdThreads(5, 2)
	defer cold.Close()

	// Several times the socket's buffers, in buffers of uneven sizes.
	var bufs [][]byte
	var want []byte
	for i := range 40 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 100<<10+i*777)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	body := []byte("0123456789")
	r := &rawResponse{body: body, cuts: []rawCut{{at: 4, data: tiering.Data{Bufs: bufs}}}}
	h := requestHeader{key: 1, version: 11, correlationID: 7}
	frame := appendResponseHeader(nil, h)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4+len(body)+len(want)))
	frame = append(frame, body[:4]...)
	frame = append(frame, want...)
	frame = append(frame, body[4:]...)

	wrote := make(chan error, 1)
	go func() {
		var err error
		cold.Run(func() { err = w.writeRawCold(h, r, cold) })
		wrote <- err
	}()
	// The socket fills: the write waits for room.
	sc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for queued := 0; queued < 32<<10; {
		if time.Now().After(deadline) {
			t.Fatalf("the response's first bytes never filled the socket (%d queued)", queued)
		}
		time.Sleep(time.Millisecond)
		sc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	}
	// Every step of the gate can be held meanwhile.
	steps := max(runtime.GOMAXPROCS(0)-1, 1)
	held := make(chan struct{})
	go func() {
		for range steps {
			cold.Hold()
		}
		close(held)
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("a write waiting for room in the socket holds a step of the cold gate")
	}
	for range steps {
		cold.Release()
	}
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, frame) {
		t.Fatalf("the client read %d bytes that differ from the %d of the response", len(got), len(frame))
	}
	if w.cold != nil || w.coldBufs != nil {
		t.Fatal("the writer kept the gate or the buffers of a response it wrote")
	}
}

func TestConsumeBuffersDropsWhatWasWritten(t *testing.T) {
	for _, c := range []struct {
		lens []int
		n    int
		want []int
	}{
		{[]int{3, 4}, 0, []int{3, 4}},
		{[]int{3, 4}, 2, []int{1, 4}},
		{[]int{3, 4}, 3, []int{4}},
		{[]int{3, 0, 4}, 3, []int{4}},
		{[]int{3, 4}, 7, nil},
	} {
		var bufs net.Buffers
		for _, n := range c.lens {
			bufs = append(bufs, make([]byte, n))
		}
		var got []int
		for _, b := range consumeBuffers(bufs, c.n) {
			got = append(got, len(b))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%v less %d: %v, want %v", c.lens, c.n, got, c.want)
		}
	}
}
