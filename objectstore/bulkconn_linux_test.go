//go:build linux

package objectstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A body read into a buffer larger than the body, or larger than the low
// water mark, while the body arrives in small pieces apart, returns every
// byte and ends: no read waits for bytes that will not come. The next
// request on the same connection (a small answer, read through net/http's
// header buffer) is answered too.
func TestBulkConnBodyReadsEndWithTheBody(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rand.New(rand.NewSource(1)).Read(data)
	// In pieces of 10 KiB, with a pause now and then, so the client's
	// reads find less queued than they ask.
	srv := piecewiseServer(data, 10<<10, 64)
	defer srv.Close()
	cl, dialled := bulkClient(t)
	for _, n := range []int{len(data), 100 << 10, 1 << 20, 70 << 10, 10, 0, bulkLowatMax + 1, 5 << 10} {
		resp, err := cl.Get(srv.URL + "/?n=" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4<<20) // more than any body: the read asks for all of it
		got, err := io.ReadFull(resp.Body, buf)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) && !(n == 0 && errors.Is(err, io.EOF)) {
			t.Fatalf("body of %d: %v", n, err)
		}
		if got != n || !bytes.Equal(buf[:got], data[:n]) {
			t.Fatalf("body of %d: read %d bytes, not the body", n, got)
		}
	}
	conns := dialled()
	if len(conns) != 1 {
		t.Fatalf("%d connections, want 1 kept alive through every request (and a bulkConn)", len(conns))
	}
	// The large reads set the mark.
	var lowat int
	conns[0].rc.Control(func(fd uintptr) { lowat, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT) })
	if want := int(conns[0].lowat.Load()); lowat != want {
		t.Fatalf("SO_RCVLOWAT %d, the connection's record %d", lowat, want)
	}
}

// piecewiseServer answers GET /?n=N with data's first N bytes, written in
// pieces of piece bytes, each flushed, with a millisecond's pause before
// every pauseEvery-th piece.
func piecewiseServer(data []byte, piece, pauseEvery int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := data[:n]
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for i := 0; len(body) > 0; i++ {
			p := body[:min(len(body), piece)]
			body = body[len(p):]
			w.Write(p)
			w.(http.Flusher).Flush()
			if i%pauseEvery == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}))
}
