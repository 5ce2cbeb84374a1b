//go:build linux

package objectstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// stepGate is a gate of n steps that counts the steps held and the holds;
// with step set, it answers Step with it (GateStep).
type stepGate struct {
	steps chan struct{}
	step  int
	mu    sync.Mutex
	held  int
	holds int
}

func (g *stepGate) Step() int { return g.step }

func newStepGate(n int) *stepGate { return &stepGate{steps: make(chan struct{}, n)} }

func (g *stepGate) Hold() {
	g.steps <- struct{}{}
	g.mu.Lock()
	g.held++
	g.holds++
	g.mu.Unlock()
}

func (g *stepGate) Release() {
	g.mu.Lock()
	g.held--
	g.mu.Unlock()
	<-g.steps
}

func (g *stepGate) counts() (held, holds int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held, g.holds
}

// contend holds the gate's steps in turn from other goroutines until stop.
func (g *stepGate) contend() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range cap(g.steps) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				g.Hold()
				time.Sleep(20 * time.Microsecond)
				g.Release()
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// bulkClient returns an HTTP client whose connections are bulkConns,
// and the connections it dialled.
func bulkClient(t *testing.T) (*http.Client, func() []*bulkConn) {
	t.Helper()
	var mu sync.Mutex
	var conns []*bulkConn
	dial := bulkDial((&net.Dialer{}).DialContext)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if bc, ok := c.(*bulkConn); ok {
			mu.Lock()
			conns = append(conns, bc)
			mu.Unlock()
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, func() []*bulkConn {
		mu.Lock()
		defer mu.Unlock()
		return append([]*bulkConn(nil), conns...)
	}
}

// gatedGet sends a GET whose body reads go through g.
func gatedGet(ctx context.Context, t *testing.T, cl *http.Client, url string, g Gate) (io.ReadCloser, error) {
	t.Helper()
	gb := &gatedBody{g: g}
	req, err := http.NewRequestWithContext(gb.trace(ctx), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	return &stallReader{body: resp.Body, gate: gb, timer: time.NewTimer(time.Hour), cancel: func() {}, timeout: time.Hour}, nil
}

// A body read through a gate whose one step others hold in turn, arriving
// in pieces apart, is the body byte for byte; its reads hold the gate, at
// most GateReadMax bytes a step, and none is held once it ends. The
// connection then serves an ungated request.
func TestGatedBodyReadIsTheBody(t *testing.T) {
	data := make([]byte, 5<<20+777)
	rand.New(rand.NewSource(2)).Read(data)
	srv := piecewiseServer(data, 300<<10, 4)
	defer srv.Close()
	cl, conns := bulkClient(t)
	g := newStepGate(1)
	stop := g.contend()
	defer stop()
	for _, n := range []int{len(data), 10, GateReadMax + 1, 0} {
		body, err := gatedGet(context.Background(), t, cl, srv.URL+"/?n="+strconv.Itoa(n), g)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8<<20) // one read asks for more than the body
		got, err := io.ReadFull(body, buf)
		body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) && !(n == 0 && errors.Is(err, io.EOF)) {
			t.Fatalf("body of %d: %v", n, err)
		}
		if got != n || !bytes.Equal(buf[:got], data[:n]) {
			t.Fatalf("body of %d: read %d bytes, not the body", n, got)
		}
	}
	stop()
	held, holds := g.counts()
	if held != 0 {
		t.Fatalf("%d steps held after the reads", held)
	}
	mine := holds
	// Without the others' holds: the reads' own.
	g2 := newStepGate(1)
	body, err := gatedGet(context.Background(), t, cl, srv.URL+"/?n="+strconv.Itoa(len(data)), g2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), not the body", len(got), err)
	}
	if _, holds := g2.counts(); holds < len(data)/GateReadMax {
		t.Fatalf("%d holds for %d bytes: the reads did not pass the gate, %d bytes a step", holds, len(data), GateReadMax)
	}
	if mine == 0 {
		t.Fatal("no holds at all")
	}
	// A gate that says its step: the reads keep to it.
	g3 := newStepGate(1)
	g3.step = 64 << 10
	body, err = gatedGet(context.Background(), t, cl, srv.URL+"/?n="+strconv.Itoa(len(data)), g3)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), not the body", len(got), err)
	}
	if _, holds := g3.counts(); holds < len(data)/g3.step {
		t.Fatalf("%d holds for %d bytes: the reads were larger than the gate's step of %d bytes", holds, len(data), g3.step)
	}
	resp, err := cl.Get(srv.URL + "/?n=1000")
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatalf("ungated read after gated ones: %d bytes, %v", len(got), err)
	}
	if c := conns(); len(c) != 1 {
		t.Fatalf("%d connections, want 1 kept alive through every request", len(c))
	}
}

// A gated read waiting for bytes holds no step (the test holds the only
// one meanwhile), and a cancellation of its request ends the wait with
// an error, leaving no step held.
func TestGatedBodyReadWaitsReleasedAndIsCanceled(t *testing.T) {
	first := bytes.Repeat([]byte("a"), 100<<10)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2*len(first)))
		w.Write(first)
		w.(http.Flusher).Flush()
		select { // the rest never comes
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cl, _ := bulkClient(t)
	g := newStepGate(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, err := gatedGet(ctx, t, cl, srv.URL, g)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	buf := make([]byte, 2*len(first))
	if _, err := io.ReadFull(body, buf[:len(first)]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(body, buf[len(first):])
		done <- err
	}()
	g.Hold() // a waiting read holds no step: this does not wait for it
	cancel()
	g.Release()
	if err := <-done; err == nil {
		t.Fatal("read of a canceled request's body succeeded")
	}
	if held, _ := g.counts(); held != 0 {
		t.Fatalf("%d steps held after the canceled read", held)
	}
}

// A gated read honours the connection's read deadline while it waits,
// with the error TCPConn.Read gives, and reads on once it is lifted.
func TestGatedReadHonoursTheReadDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			peer <- c
		}
		close(peer)
	}()
	c, err := bulkDial((&net.Dialer{}).DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-peer
	if srv == nil {
		t.Fatal("no connection accepted")
	}
	defer srv.Close()
	bc := c.(*bulkConn)
	g := newStepGate(1)
	gb := &gatedBody{g: g}
	bc.gateOn(gb)
	defer bc.gateOff(gb)
	bc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	buf := make([]byte, bulkReadMin)
	n, err := bc.Read(buf)
	var ne net.Error
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %d bytes, %v", n, err)
	}
	bc.SetReadDeadline(time.Time{})
	want := bytes.Repeat([]byte("xyz"), 1000)
	if _, err := srv.Write(want); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	got, err := io.ReadAll(bc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(want))
	}
	if held, holds := g.counts(); held != 0 || holds == 0 {
		t.Fatalf("%d steps held, %d holds", held, holds)
	}
}

// A body cut short by the connection's end (the store died mid-body)
// yields the bytes that came, byte for byte, then io.ErrUnexpectedEOF.
func TestGatedBodyReadCutShort(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(3)).Read(data)
	cut := 600<<10 + 3
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:cut])
		w.(http.Flusher).Flush()
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	cl, _ := bulkClient(t)
	g := newStepGate(1)
	stop := g.contend()
	defer stop()
	body, err := gatedGet(context.Background(), t, cl, srv.URL, g)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut body: %v", err)
	}
	if !bytes.Equal(got, data[:cut]) {
		t.Fatalf("cut body: read %d bytes, not the %d sent", len(got), cut)
	}
	stop()
	if held, _ := g.counts(); held != 0 {
		t.Fatalf("%d steps held after the cut read", held)
	}
}
