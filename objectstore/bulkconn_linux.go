//go:build linux

package objectstore

import (
	"context"
	"net"
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
type bulkConn struct {
	*net.TCPConn
	rc    syscall.RawConn
	lowat atomic.Int32 // the socket's SO_RCVLOWAT as last set
}

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
	return c.TCPConn.Read(p)
}
