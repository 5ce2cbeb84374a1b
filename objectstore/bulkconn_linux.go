//go:build linux

package objectstore

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// bulkReadMin is the smallest read a bulkConn treats as a body's: net/http
// reads headers through a 4 KiB buffer, and hands a read of a body
// straight to the connection only when it asks at least as much.
const bulkReadMin = 64 << 10

// bulkLowatMax bounds the receive low water mark a body's read sets.
const bulkLowatMax = 512 << 10

// bulkDial wraps dial so that the TCP connections it makes are bulkConns.
func bulkDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			return c, nil
		}
		bc := &bulkConn{TCPConn: tc, rc: rc}
		bc.lowat.Store(1)
		bc.gatedStep = bc.readGated
		return bc, nil
	}
}

// bulkConn is a plain-HTTP connection to the store whose large reads (a
// GET's body read into a chunk) wait until a large part of what they ask
// has arrived, instead of waking at every few segments the store writes.
//
// A read of at least bulkReadMin bytes sets the socket's receive low
// water mark (SO_RCVLOWAT) to its length, at most bulkLowatMax: the
// kernel then wakes the reader once that much is queued, not at each
// write of the store. Over loopback MinIO writes a body 128-256 KiB at a
// time, and each write woke the broker's GET worker for a read of it
// (7 reads and 12 context switches per MB replayed); the wake-ups cost
// more than the copies. A read never waits for more than it asks, and
// net/http never asks more of the connection than the body has left (its
// body reader cuts a read at the body's length, or its chunk's), so a
// read cannot wait for bytes that will not come; a read below
// bulkReadMin (headers, through net/http's 4 KiB buffer) sets the mark
// back to 1 first. A non-blocking read returns what is queued whatever
// the mark: only the wait for more is longer.
//
// Only for plain HTTP: over TLS, crypto/tls asks the connection for as
// much as its buffer holds, whatever the peer will send.
//
// While a gated body's read is in progress (gateOn), the connection reads
// through the gate instead (see readGated).
type bulkConn struct {
	*net.TCPConn
	rc    syscall.RawConn
	lowat atomic.Int32 // the socket's SO_RCVLOWAT as last set
	// gate is the gated body whose read is in progress, nil when none.
	gate atomic.Pointer[gatedBody]
	// The gated read in progress, for the callback rc.Read takes (made
	// once, at dial): gatedStep is readGated, gatedBuf what it reads
	// into, gatedN what it has read, gatedG its gate, gatedErr its error
	// and gatedEOF whether the peer closed its side; gatedMax bounds a
	// step (stepOf the gate, taken once per read).
	gatedStep func(fd uintptr) bool
	gatedMax  int
	gatedBuf  []byte
	gatedN    int
	gatedG    Gate
	gatedErr  error
	gatedEOF  bool
}

var _ gatedConn = (*bulkConn)(nil)

// gateOn makes the connection's reads, until gateOff(b), go through b's
// gate.
func (c *bulkConn) gateOn(b *gatedBody) { c.gate.Store(b) }

// gateOff ends gateOn(b); a later gateOn (the next request on the
// connection) is left as it is.
func (c *bulkConn) gateOff(b *gatedBody) { c.gate.CompareAndSwap(b, nil) }

func (c *bulkConn) Read(p []byte) (int, error) {
	want := 1
	if len(p) >= bulkReadMin {
		want = min(len(p), bulkLowatMax)
	}
	if int32(want) != c.lowat.Load() {
		var serr error
		err := c.rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, want)
		})
		if err == nil && serr == nil {
			c.lowat.Store(int32(want))
		} else if c.lowat.Load() != 1 {
			// The mark could not follow: a wait could outlast the bytes
			// to come. Close rather than hang (the request fails, and is
			// retried on a new connection).
			c.TCPConn.Close()
		}
	}
	if b := c.gate.Load(); b != nil && len(p) > 0 {
		return c.readThrough(b.g, p)
	}
	return c.TCPConn.Read(p)
}

// readThrough reads into p as TCPConn.Read does, in non-blocking reads
// of at most stepOf(g) bytes, each holding a step of g: a read that
// finds nothing queued waits for bytes (within the connection's read
// deadline, and until it is closed) with its step released. It reads on
// while bytes are queued and p has room, so a body's read into a large
// buffer is one wait and several steps, not a call per step.
func (c *bulkConn) readThrough(g Gate, p []byte) (int, error) {
	c.gatedBuf, c.gatedN, c.gatedG, c.gatedErr, c.gatedEOF = p, 0, g, nil, false
	c.gatedMax = stepOf(g)
	err := c.rc.Read(c.gatedStep)
	n, rerr, eof := c.gatedN, c.gatedErr, c.gatedEOF
	c.gatedBuf, c.gatedG, c.gatedErr = nil, nil, nil
	switch {
	case n > 0 && rerr != nil:
		return n, c.opError(rerr)
	case n > 0:
		return n, nil // the end shows again at the next read
	case err != nil:
		return 0, c.opError(err)
	case rerr != nil:
		return 0, c.opError(rerr)
	case eof:
		return 0, io.EOF
	}
	return 0, nil
}

// readGated is readThrough's callback for rc.Read: false when nothing is
// queued yet (rc.Read then waits until the socket is readable).
func (c *bulkConn) readGated(fd uintptr) bool {
	for c.gatedN < len(c.gatedBuf) {
		want := min(len(c.gatedBuf)-c.gatedN, c.gatedMax)
		c.gatedG.Hold()
		m, e := syscall.Read(int(fd), c.gatedBuf[c.gatedN:c.gatedN+want])
		c.gatedG.Release()
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return c.gatedN > 0
		case e != nil:
			c.gatedErr = os.NewSyscallError("read", e)
			return true
		case m == 0:
			c.gatedEOF = true
			return true
		}
		c.gatedN += m
		if m < want {
			return true // what was queued is read
		}
	}
	return true
}

// opError wraps err as TCPConn.Read's errors are.
func (c *bulkConn) opError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // rc.Read's own, as a "raw-read"
	}
	return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
