package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxInflightPerConn bounds the requests a connection may have read but not
// yet answered; the reader stops reading past it (backpressure), so one
// client cannot park unbounded work.
const maxInflightPerConn = 64

// conn serves one client connection. One goroutine reads and handles
// requests in order; a second writes their responses in the same order as
// each becomes ready. Handlers that wait (acks=all, long-poll fetch, group
// joins) return without a response and answer later, so only the response
// order, not the work, is serialized.
type conn struct {
	b      *Broker
	nc     net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *pending
	log    *slog.Logger
	w      *connWriter
}

// pending is a request's place in the response order.
type pending struct {
	header requestHeader
	done   chan struct{}
	once   sync.Once
	resp   kmsg.Response
	raw    *rawResponse // a response with sendfile parts (fetch), instead of resp
	// silent: no response is sent (acks=0 produce).
	silent bool
	// closeConn: close the connection instead of answering.
	closeConn bool
}

// request is what a handler sees of one request.
type request struct {
	conn   *conn
	header requestHeader
	p      *pending
}

// ctx is cancelled when the connection closes.
func (r *request) ctx() context.Context { return r.conn.ctx }

// respond answers the request (at most once; later calls are ignored).
func (r *request) respond(resp kmsg.Response) {
	r.p.once.Do(func() {
		r.p.resp = resp
		close(r.p.done)
	})
}

// respondRaw answers with a response whose body is written with sendfile.
func (r *request) respondRaw(raw *rawResponse) {
	r.p.once.Do(func() {
		r.p.raw = raw
		close(r.p.done)
	})
}

// respondNothing completes the request without sending anything.
func (r *request) respondNothing() {
	r.p.once.Do(func() {
		r.p.silent = true
		close(r.p.done)
	})
}

// closeConnection completes the request by closing the connection once the
// responses before it are written (acks=0 produce errors, as Kafka does).
func (r *request) closeConnection() {
	r.p.once.Do(func() {
		r.p.closeConn = true
		close(r.p.done)
	})
}

func (b *Broker) serveConn(nc net.Conn) {
	ctx, cancel := context.WithCancel(b.ctx)
	c := &conn{
		b:      b,
		nc:     nc,
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan *pending, maxInflightPerConn),
		log:    b.log.With("remote", nc.RemoteAddr().String()),
		w:      newConnWriter(nc),
	}
	b.metrics.connections.Inc()
	defer b.metrics.connections.Dec()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	err := c.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
		c.log.Debug("closing connection", "err", err)
	}
	// A read error means the client is gone or broke the protocol:
	// waiting handlers give up, the writer releases what is queued.
	cancel()
	nc.Close()
	close(c.queue)
	<-writerDone
}

func (c *conn) readLoop() error {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var sizeBuf [4]byte
	for {
		if _, err := io.ReadFull(br, sizeBuf[:]); err != nil {
			return err
		}
		size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
		if size < 0 || int64(size) > c.b.cfg.SocketRequestMaxBytes {
			return fmt.Errorf("%w: frame of %d bytes (limit %d)", errBadRequest, size, c.b.cfg.SocketRequestMaxBytes)
		}
		release, err := c.b.requestMemory.acquire(c.ctx, int64(size))
		if err != nil {
			return err
		}
		frame := make([]byte, size)
		if _, err = io.ReadFull(br, frame); err != nil {
			release()
			return err
		}
		err = c.handleFrame(frame)
		release() // the handler has appended or copied what it keeps
		if err != nil {
			return err
		}
	}
}

// handleFrame decodes and dispatches one request frame.
func (c *conn) handleFrame(frame []byte) error {
	h, req, err := decodeRequest(frame)
	if err != nil {
		return err
	}
	c.b.metrics.requests.WithLabelValues(kmsg.NameForKey(h.key)).Inc()
	p := &pending{header: h, done: make(chan struct{})}
	if req == nil {
		if h.key != int16(kmsg.ApiVersions) {
			return fmt.Errorf("%w: unsupported API %d v%d", errBadRequest, h.key, h.version)
		}
		// An ApiVersions version we do not know is answered at v0
		// with UNSUPPORTED_VERSION and our ranges, so the client can
		// retry with one we do.
		resp := apiVersionsResponse(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		p.resp = resp
		p.header.version = 0
		close(p.done)
		if !c.enqueue(p) {
			return c.ctx.Err()
		}
		return nil
	}
	if !c.enqueue(p) {
		return c.ctx.Err()
	}
	r := &request{conn: c, header: h, p: p}
	if resp := apis[h.key].handle(c.b, r, req); resp != nil {
		r.respond(resp)
	}
	return nil
}

func (c *conn) enqueue(p *pending) bool {
	select {
	case c.queue <- p:
		return true
	case <-c.ctx.Done():
		return false
	}
}

func (c *conn) writeLoop() {
	defer c.w.release()
	for p := range c.queue {
		select {
		case <-p.done:
		case <-c.ctx.Done():
			// Handlers finish promptly once the connection's context
			// is cancelled; wait so that what they hold is released.
			c.nc.Close()
			<-p.done
		}
		if p.closeConn {
			c.cancel()
			c.nc.Close()
		}
		if p.silent || p.closeConn || c.ctx.Err() != nil {
			p.releaseRaw()
			continue
		}
		var err error
		if p.raw != nil {
			err = c.w.writeRaw(p.header, p.raw)
		} else {
			err = c.w.writeResponse(p.header, p.resp)
		}
		if err != nil {
			c.log.Debug("write failed", "err", err)
			c.cancel()
			c.nc.Close()
		}
	}
}

func (p *pending) releaseRaw() {
	if p.raw != nil {
		p.raw.release()
	}
}

// responseHeaderFlexible reports whether a response to key at version uses
// the flexible response header (v1, with tagged fields). ApiVersions always
// answers with header v0 so that clients can parse it before they know the
// versions.
func responseHeaderFlexible(key, version int16) bool {
	if key == int16(kmsg.ApiVersions) {
		return false
	}
	req := kmsg.RequestForKey(key)
	if req == nil {
		return false
	}
	req.SetVersion(version)
	return req.IsFlexible()
}
