package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sys/unix"
)

// maxInflightPerConn bounds the requests a connection may have read but not
// yet answered; the reader stops reading past it (backpressure), so one
// client cannot park unbounded work.
const maxInflightPerConn = 64

// maxUnsentPerConn is the encoded response bytes a connection may have
// waiting to be sent and still have more requests read (its share of
// QueuedMaxResponseBytes); past it, or while that budget is spent, its
// reader waits until the writer has sent them.
const maxUnsentPerConn = 1 << 20

// conn serves one client connection. One goroutine reads and handles
// requests in order; a second writes their responses in the same order as
// each becomes ready. Handlers that wait (acks=all, long-poll fetch, group
// joins) return without a response and answer later, so only the response
// order, not the work, is serialized. An answer ready when its handler
// returns, with nothing queued before it, is written by the reader itself.
type conn struct {
	b      *Broker
	nc     net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *pending
	log    *slog.Logger
	w      *connWriter
	// inflight counts requests read and not yet answered; lastWrite is
	// when a response was last written (unix ns). Both tell an idle
	// connection from one waiting on a long poll.
	inflight  atomic.Int32
	lastWrite atomic.Int64
	// queued counts requests handed to the writer and not yet written
	// (or dropped). While it is zero the writer has nothing to write and
	// takes nothing new, so the reader may write an answer ready when
	// its handler returns itself, sparing the writer's wake-up.
	queued atomic.Int32
	// held are answers ready when their handlers returned, with nothing
	// queued before them, kept by the reader to be written together
	// (flushHeld); heldBufs is their write's vector. Owned by the reader.
	// writerBufs is the writer's.
	held                 []*pending
	heldBufs, writerBufs iovec
	// group holds pipelined produce requests read together, validated
	// and not yet appended (endGroup); owned by the reader.
	group produceGroup
	// waits are the produce waits not answered yet, and their timer.
	waits waitDeadlines
	// parked are produce requests waiting for a leader to read its
	// tiered partitions' manifests (park).
	parked parkedProduces
	// broken: the client is gone or broke the protocol, or a write
	// failed; nothing more is written.
	broken atomic.Bool
	// clientID is the client id of the last request read, and
	// refusalLogged is set once a refusal that closes the connection was
	// logged (both owned by the reader).
	clientID      string
	refusalLogged bool
	// fetchOwner is fetchClient(fetchOwnerID, the remote address), once
	// fetchOwnerSet (owned by the reader).
	fetchOwnerID, fetchOwner string
	fetchOwnerSet            bool
	// unreadAsks counts unreadBytes' calls (owned by the reader).
	unreadAsks int
	// peer is 1 + the id of the broker this connection authenticated
	// as with the cluster secret (SaslAuthenticate), 0 for a client.
	// Only a broker's connection may fetch as a follower.
	peer atomic.Int32
	// user is the user the client authenticated as (nil: none, user
	// ANONYMOUS); sasl is the exchange that gets there (client_auth.go).
	user atomic.Pointer[string]
	sasl saslState
	// host is the client's IP address, as ACLs name hosts; principalOf
	// is the principal of user (authorize.go).
	host        string
	principalOf atomic.Pointer[userPrincipal]
	// requestTime is the time the reader spent on the client's requests
	// not yet charged to its request_percentage (chargeRequestTime; owned
	// by the reader).
	requestTime time.Duration
	// mutedUntil is when a client quota's throttle ends (Unix
	// nanoseconds; 0: never throttled): the reader reads nothing from
	// the connection until then (chargeProduce, chargeFetch).
	mutedUntil atomic.Int64
	// unsent is the encoded response bytes queued and not yet written
	// (charged to the broker's response budget); sent is signalled
	// whenever the writer gives some back. encodeHint is the size of the
	// last encoded response: the next buffer is taken from its class.
	unsent     atomic.Int64
	sent       chan struct{}
	encodeHint atomic.Int64
	// answers wakes the writer when the answer it waits for is made
	// (awaitAnswer): at most one signal pending, checked again after
	// each, so a stale one costs a look.
	answers chan struct{}
	// calls are produce calls nothing refers to any more, for the
	// reader's next produce requests (newCall).
	calls chan *produceCall
}

// pending is a request's place in the response order.
type pending struct {
	header requestHeader
	// state tells whether the request is answered: open, then taken
	// by the one answer that counts (take), then done once the answer
	// is made (finishAnswer). Once done, the writer may write and let
	// go of p at any time: a p that lies in a produce call is then
	// reused, so whoever answers one holds a reference to its call.
	state atomic.Int32
	// enc is the encoded response frame (a pooled buffer), encoded when
	// the request is answered so that the memory a queued response holds
	// is counted (charged) in the response budget.
	enc     []byte
	errCode int16
	raw     *rawResponse // a response with sendfile parts (fetch), instead of enc
	charged int64
	// silent: no response is sent (acks=0 produce).
	silent bool
	// throttle is the client quota throttle its answer carries.
	throttle time.Duration
	// closeConn: close the connection instead of answering.
	closeConn bool
	// reserved: request budget the frame holds until the request is
	// answered (0 when it was given back when the handler returned).
	reserved int64
	// start is when the request was read (the duration metric);
	// observed: the metric already counts it.
	start    time.Time
	observed bool
	// handoff says who writes an answer that comes after its handler
	// returned (see awaitAnswer); sentOff is how much of enc the
	// answering goroutine wrote when the socket took only part of it.
	handoff atomic.Int32
	sentOff int
	// req is the request a handler answers p through (in p, to save an
	// allocation per request).
	req request
	// call is the produce call p lies in when it came from the
	// connection's calls (newCall): the response order holds one of
	// its references, given back once p is written or dropped
	// (sentOrDropped).
	call *produceCall
}

// The states of pending.state.
const (
	answerOpen  = iota
	answerTaken // an answer is being made
	answerDone  // answered
)

// take reports whether the caller makes p's answer: only the first to
// ask does.
func (p *pending) take() bool { return p.state.CompareAndSwap(answerOpen, answerTaken) }

// finishAnswer marks p answered and wakes the writer if it waits for p.
// The writer sets handoff before it looks at state, and this looks at
// handoff after setting state: one of the two sees the other, so a writer
// that waits is always woken.
func (c *conn) finishAnswer(p *pending) {
	p.state.Store(answerDone)
	if p.handoff.Load() != handoffNone {
		select {
		case c.answers <- struct{}{}:
		default:
		}
	}
}

// sentOrDropped is called once p's answer is written or dropped, when
// nothing of the response order refers to p any more: the produce call p
// lies in loses the response order's reference.
func (p *pending) sentOrDropped() {
	if p.call != nil {
		p.call.unref()
	}
}

// The states of pending.handoff.
const (
	handoffNone        = iota // the writer writes the answer
	handoffWriterWaits        // the writer waits for this answer alone, everything before it written
	handoffWritten            // the answering goroutine wrote it all
	handoffPartial            // it wrote enc[:sentOff]; the writer writes the rest
)

// errorCode is the response's first error code, for the requests metric.
func (p *pending) errorCode() int16 {
	if p.raw != nil {
		return p.raw.errCode
	}
	return p.errCode
}

// answer completes p with resp, encoded now and charged to the response
// budget until the writer has sent it. When the writer waits for p alone,
// the answering goroutine writes it itself (writeAnswer), unless gather is
// set: then the writer writes it, with the answers after it that are
// ready by then (see answerGathered).
func (c *conn) answer(p *pending, resp kmsg.Response) { c.answerTo(p, resp, false) }

func (c *conn) answerTo(p *pending, resp kmsg.Response, gather bool) {
	p.errCode = responseErrorCode(resp)
	setThrottle(resp, p.throttle)
	if !c.broken.Load() {
		resp.SetVersion(p.header.version)
		buf := appendResponseHeader(getBuf(int(c.encodeHint.Load()))[:0], p.header)
		buf = resp.AppendTo(buf)
		binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
		c.encodeHint.Store(int64(len(buf)))
		p.enc = buf
		c.charge(p, int64(cap(buf)))
		if !gather && p.handoff.CompareAndSwap(handoffWriterWaits, handoffWritten) {
			c.writeAnswer(p)
		}
	}
	c.finishAnswer(p)
}

// writeAnswer writes p's encoded answer from the goroutine that answered
// it, while the writer waits for it with every answer before it written:
// an acks=all produce answered when a follower's fetch moves the high
// watermark goes out from that fetch's goroutine, instead of waking the
// writer first, a hand-off that took about as long as the replication's
// own round trip on a loaded machine. It never waits: what the socket
// does not take now (a client that stopped reading) is left to the
// writer, so the answering goroutine, which may be serving a follower,
// is never held by this connection.
func (c *conn) writeAnswer(p *pending) {
	if c.broken.Load() || c.w.raw == nil {
		// The writer still waits for p, and writes or drops it: the
		// state must tell finishAnswer to wake it (handoffNone would
		// not, and a connection broken between answerTo's look and
		// this one left its writer, and so Close, waiting forever).
		p.handoff.Store(handoffWriterWaits)
		return
	}
	now := time.Now()
	c.observeAt(p, now)
	p.observed = true
	c.w.armAt(int64(len(p.enc)), now)
	n, err := c.w.tryWrite(p.enc)
	if err == nil && n < len(p.enc) {
		p.sentOff = n
		p.handoff.Store(handoffPartial)
		return
	}
	c.uncharge(p)
	c.releaseReserved(p)
	c.wroteAt(err, now)
}

// awaitAnswer waits for p's answer. Every answer before p is written, so
// when p is not answered yet its answering goroutine may write it itself
// (writeAnswer). It reports whether that wrote it all.
func (c *conn) awaitAnswer(p *pending) (written bool) {
	if !answered(p) {
		p.handoff.CompareAndSwap(handoffNone, handoffWriterWaits)
		for !answered(p) {
			<-c.answers
		}
	}
	return p.handoff.Load() == handoffWritten
}

// charge counts n bytes of p's response as queued.
func (c *conn) charge(p *pending, n int64) {
	p.charged = n
	c.unsent.Add(n)
	c.b.responseMemory.charge(n)
}

// uncharge gives back what p's response held, once written or dropped.
func (c *conn) uncharge(p *pending) {
	if p.enc != nil {
		putBuf(p.enc)
		p.enc = nil
	}
	if p.charged == 0 {
		return
	}
	c.unsent.Add(-p.charged)
	c.b.responseMemory.release(p.charged)
	p.charged = 0
	select {
	case c.sent <- struct{}{}:
	default:
	}
}

// awaitResponseRoom waits, before the next request is read, until the
// connection's unsent responses fit its share and the response budget
// has room. A connection with nothing unsent is always read.
func (c *conn) awaitResponseRoom() error {
	for first := true; ; first = false {
		u := c.unsent.Load()
		if u == 0 || (u < maxUnsentPerConn && !c.b.responseMemory.full()) {
			return nil
		}
		if first && len(c.held) > 0 {
			// Some of what is unsent is the reader's own.
			c.flushHeld()
			continue
		}
		t := time.NewTimer(50 * time.Millisecond) // other connections free budget too
		select {
		case <-c.sent:
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return c.ctx.Err()
		}
		t.Stop()
	}
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
	if r.p.take() {
		r.conn.answer(r.p, resp)
	}
}

// respondGathered answers the request as respond does, but never writes
// the answer from the calling goroutine: the writer does, with the
// answers queued after it that are ready when it runs, in one write. A
// group commit's sync answers the requests of a connection's whole
// window one after the other: written by the syncing goroutine one by
// one, each was a system call and a wake-up of the writer, which found
// the next one not yet answered and waited again; left to the writer,
// which runs once the sync's callbacks are done, they go out together.
func (r *request) respondGathered(resp kmsg.Response) {
	if r.p.take() {
		r.conn.answerTo(r.p, resp, true)
	}
}

// respondRaw answers with a response whose body is written with sendfile.
func (r *request) respondRaw(raw *rawResponse) {
	taken := r.p.take()
	if taken {
		r.p.raw = raw
		// The body and any record data read from the object store are
		// in memory until sent; file ranges are not.
		n := int64(cap(raw.body))
		for i := range raw.cuts {
			if raw.cuts[i].data.Bufs != nil {
				n += raw.cuts[i].len()
			}
		}
		r.conn.charge(r.p, n)
		r.conn.finishAnswer(r.p)
	}
	if !taken {
		raw.release() // answered already: never sent
	}
}

// respondNothing completes the request without sending anything.
func (r *request) respondNothing() {
	if r.p.take() {
		r.p.silent = true
		r.conn.finishAnswer(r.p)
	}
}

// closeConnection completes the request by closing the connection once the
// responses before it are written (acks=0 produce errors, as Kafka does).
// resp, never sent, is what the requests metric counts.
func (r *request) closeConnection(resp kmsg.Response) {
	if r.p.take() {
		r.p.errCode = responseErrorCode(resp)
		r.p.closeConn = true
		r.conn.finishAnswer(r.p)
	}
}

func (b *Broker) serveConn(nc net.Conn) {
	ctx, cancel := context.WithCancel(b.ctx)
	c := &conn{
		b:        b,
		nc:       nc,
		ctx:      ctx,
		cancel:   cancel,
		queue:    make(chan *pending, maxInflightPerConn),
		log:      b.log.With("remote", nc.RemoteAddr().String()),
		host:     connIP(nc),
		w:        newConnWriter(nc, b.cfg.ResponseWriteTimeout),
		sent:     make(chan struct{}, 1),
		answers:  make(chan struct{}, 1),
		calls:    make(chan *produceCall, maxInflightPerConn),
		held:     make([]*pending, 0, maxWriteBatch),
		heldBufs: iovec{base: make(net.Buffers, 0, maxWriteBatch)},
	}
	c.lastWrite.Store(time.Now().UnixNano())
	if u := certificateUser(nc); u != "" && !b.saslRequired() {
		c.user.Store(&u)
	}
	if !b.trackConn(c, true) {
		nc.Close()
		return
	}
	defer b.trackConn(c, false)
	b.metrics.connections.Inc()
	defer b.metrics.connections.Dec()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	err := c.readLoop()
	if b.ctx.Err() != nil {
		// Shutdown: no more requests are read; the handlers of those
		// in flight answer promptly (their context is cancelled) and
		// the writer sends what it can until the shutdown deadline,
		// when Close closes the socket.
		close(c.queue)
		<-writerDone
		c.parked.wg.Wait()
		nc.Close()
		return
	}
	switch {
	case errors.Is(err, errBadRequest) && !c.refusalLogged:
		b.refusedLog.log(c.log, "refused a malformed request: closing the connection", "client_id", c.clientID, "err", err)
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		c.log.Debug("closing connection", "err", err)
	}
	// A read error means the client is gone or broke the protocol:
	// waiting handlers give up, the writer releases what is queued.
	c.markBroken()
	close(c.queue)
	<-writerDone
	c.parked.wg.Wait()
}

// stopReading makes the connection's reader return (shutdown).
func (c *conn) stopReading() { c.nc.SetReadDeadline(time.Now()) }

// Frame reading. A frame larger than a chunk is read into a buffer of its
// own, whose memory is reserved in the broker's request budget before it
// is allocated: the whole frame at once when enough of it has arrived,
// otherwise frameGrowth times what has (at least firstFrameStep), growing
// by frameGrowth as more comes (frameStep).
const (
	firstFrameStep = 64 << 10
	frameGrowth    = 4
	readBufferSize = 4 << 10 // an idle connection's buffer (frameReader)
)

// frameStep is the size of the buffer a frame of size bytes is read into
// next, when arrived of its bytes have been received (read, or queued in
// the socket) and its last buffer had prev bytes (0: none yet), under a
// request budget of limit bytes (0: none). It never exceeds frameGrowth
// times what arrived (nor firstFrameStep, before anything has), and never
// the budget's limit for bytes that have not arrived: a client that
// declares a large frame and stops sending holds little of the budget, and
// at most firstFrameStep beyond it (the budget grants a lone reservation of
// any size, so that a frame larger than the whole budget can be read at
// all; past the limit it grows a step at a time as its bytes arrive).
func frameStep(size, arrived, prev, limit int) int {
	step := min(size, max(firstFrameStep, frameGrowth*prev, frameGrowth*arrived))
	if limit > 0 && step > limit {
		step = min(step, max(limit, arrived+firstFrameStep))
	}
	return step
}

// errIdle: the connection was idle for connections.max.idle.ms.
var errIdle = errors.New("broker: connection idle")

func (c *conn) readLoop() error {
	fr := newFrameReader(c)
	defer fr.close()
	// Answers still held when reading stops are written (or, once the
	// connection is marked broken, dropped) before the writer is told.
	defer c.flushHeld()
	// A group of produce requests still open is appended and answered
	// first (its frames lie in the reader's chunk).
	defer c.endGroup()
	for {
		if len(c.group.calls) == 0 {
			// The frame handled last is done with: the chunk it lay
			// in may go back to the pool.
			fr.settle()
		}
		if d := c.muteLeft(); d > 0 {
			// Throttled by a client quota (KIP-219): what was read is
			// answered, and nothing more is read until the throttle
			// time has passed.
			c.endGroup()
			c.flushHeld()
			if !sleepCtx(c.ctx, d) {
				return c.ctx.Err()
			}
		}
		// The frame reader checks it again after arming the socket's
		// read deadline, before each read.
		if err := c.ctx.Err(); err != nil {
			return err
		}
		// A group open is bounded by the chunk its frames lie in; the
		// next frame, read already, joins it without waiting.
		if len(c.group.calls) == 0 {
			if err := c.awaitResponseRoom(); err != nil {
				return err
			}
		}
		sizeBuf, partial, err := fr.header()
		if err != nil {
			if !partial && isTimeout(err) {
				if c.busy() {
					continue
				}
				return errIdle
			}
			return err
		}
		size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
		if size < 0 || int64(size) > c.b.cfg.SocketRequestMaxBytes {
			return fmt.Errorf("%w: frame of %d bytes (limit %d)", errBadRequest, size, c.b.cfg.SocketRequestMaxBytes)
		}
		// A frame read already is handled at once: the reading taken
		// for its deadline is when it was read. Otherwise its reads may
		// wait, and handleFrame reads the clock again.
		now := time.Now()
		deadline := now.Add(c.b.cfg.RequestReadTimeout)
		if fr.buffered() < int(size) {
			now = time.Time{}
		}
		buf, reserved, inPlace, err := fr.frame(int(size), deadline)
		if err != nil {
			if isTimeout(err) {
				return fmt.Errorf("broker: a %d-byte request did not arrive within %s: %w", size, c.b.cfg.RequestReadTimeout, err)
			}
			return err
		}
		if inPlace && !pooledAfterHandle(buf) {
			// Kept past the handler: copied out of the shared
			// buffer, with its own reservation.
			if buf, reserved, err = c.copyFrame(buf, deadline); err != nil {
				return err
			}
			inPlace = false
		}
		if reserved, err = c.reserveDecoded(buf, reserved, deadline); err != nil {
			if !inPlace {
				c.releaseBuf(buf, 0)
			}
			return err
		}
		grouped := inPlace && c.groupProduce(buf, fr)
		if !grouped {
			c.endGroup()
		}
		if err := c.handleFrame(buf, reserved, inPlace, grouped, now); err != nil {
			return err
		}
		if grouped && (len(c.group.calls) >= maxProduceGroup || !groupableProduce(fr.next())) {
			c.endGroup()
		}
	}
}

// pooledAfterHandle reports whether the frame's request keeps nothing of
// it once its handler returns (framePooledAfterHandle).
func pooledAfterHandle(frame []byte) bool {
	return len(frame) >= 2 && framePooledAfterHandle[int16(binary.BigEndian.Uint16(frame))]
}

// copyFrame copies a frame read in place into a pooled buffer of its own,
// reserved in the request budget (waiting at most until deadline).
func (c *conn) copyFrame(frame []byte, deadline time.Time) ([]byte, int64, error) {
	c.flushHeld() // answers held are written before waiting for budget
	want := int64(bufCap(len(frame)))
	if err := c.b.requestMemory.acquire(c.ctx, want, deadline); err != nil {
		return nil, 0, err
	}
	buf := getBuf(len(frame))
	copy(buf, frame)
	return buf, want, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// busy reports whether the connection has requests in flight or wrote
// recently: a connection is idle only when neither side does anything.
func (c *conn) busy() bool {
	if c.inflight.Load() > 0 {
		return true
	}
	return time.Since(time.Unix(0, c.lastWrite.Load())) < c.b.cfg.ConnectionsMaxIdle
}

// readFrame reads a frame of size bytes whose first bytes, first, were
// read already (done is called once they are copied), reserving its memory
// in the request budget before each buffer is allocated (waiting at most
// until deadline for budget). It returns the frame and the bytes reserved
// for it, which releaseBuf gives back.
func (c *conn) readFrame(first []byte, done func(), size int, deadline time.Time) ([]byte, int64, error) {
	budget := c.b.requestMemory
	var buf []byte
	var reserved int64
	have := 0
	for {
		// Reserve and allocate the next buffer, then read into it. The
		// previous one's reservation is given back first, so that a
		// frame larger than the whole budget can still grow alone.
		// The socket is asked what has arrived (a system call) once per
		// step, and only when it may make the step larger: frameStep
		// grows with what arrived, and never past the frame.
		limit := int(min(budget.limit, math.MaxInt32))
		arrived := have
		if buf == nil {
			arrived = len(first)
		}
		step := frameStep(size, arrived, len(buf), limit)
		if step < size {
			step = frameStep(size, arrived+c.unreadBytes(), len(buf), limit)
		}
		budget.release(reserved)
		reserved = 0
		want := int64(bufCap(step))
		if err := budget.acquire(c.ctx, want, deadline); err != nil {
			c.releaseBuf(buf, 0)
			return nil, 0, err
		}
		next := getBuf(step)
		if buf == nil {
			have = copy(next, first)
			done()
		} else {
			copy(next, buf[:have])
			c.releaseBuf(buf, 0)
		}
		buf, reserved = next, want
		n, err := io.ReadFull(c.nc, buf[have:])
		have += n
		if err != nil {
			c.releaseBuf(buf, reserved)
			return nil, 0, err
		}
		if step == size {
			return buf, reserved, nil
		}
	}
}

// unreadBytes is how many bytes the connection's socket has received that
// were not read yet (0 when it cannot tell): an ioctl (SIOCINQ), asked
// only while reading a frame larger than a chunk (readFrame), never for
// the frames read into the frame reader's buffers.
func (c *conn) unreadBytes() int {
	c.unreadAsks++
	if c.w.raw == nil {
		return 0
	}
	n := 0
	c.w.raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
			n = v
		}
	})
	return n
}

// decodeExpansion bounds how many bytes of decoded request one frame byte
// may become: kmsg turns an array of empty topic or group names into
// structs 16-24 times the bytes on the wire (measured for Metadata,
// DescribeGroups, Fetch and CreateTopics). Produce is the exception that
// matters: its record batches alias the frame.
const decodeExpansion = 24

// reserveDecoded adds to a frame's reservation the memory its decoded
// request may take, beyond the frame itself, so that the request budget
// bounds what requests cost and not only their bytes. A frame whose
// decoded form could exceed the whole budget is refused: admitted alone,
// one such request could still take many times the budget.
func (c *conn) reserveDecoded(frame []byte, reserved int64, deadline time.Time) (int64, error) {
	if len(frame) < 2 || int16(binary.BigEndian.Uint16(frame)) == int16(kmsg.Produce) {
		return reserved, nil
	}
	budget := c.b.requestMemory
	extra := int64(len(frame)) * (decodeExpansion - 1)
	if budget.limit > 0 && reserved+extra > budget.limit {
		budget.release(reserved)
		return 0, fmt.Errorf("%w: a %d-byte %s request may decode to more than queued.max.request.bytes (%d)", errBadRequest, len(frame), kmsg.NameForKey(int16(binary.BigEndian.Uint16(frame))), budget.limit)
	}
	if err := budget.acquire(c.ctx, extra, deadline); err != nil {
		budget.release(reserved)
		return 0, err
	}
	return reserved + extra, nil
}

// releaseBuf gives a frame's budget back and its buffer to the pools.
func (c *conn) releaseBuf(buf []byte, reserved int64) {
	if buf != nil {
		putBuf(buf)
	}
	c.b.requestMemory.release(reserved)
}

// frameHold is what a handled frame holds until it is given back: its
// request budget, and its buffer unless the frame was read in place (the
// frame reader's memory).
type frameHold struct {
	frame    []byte
	reserved int64
	inPlace  bool
}

// releaseFrame gives back what fh holds.
func (c *conn) releaseFrame(fh frameHold) {
	if fh.inPlace {
		c.b.requestMemory.release(fh.reserved)
		return
	}
	c.releaseBuf(fh.frame, fh.reserved)
}

// framePooledAfterHandle: requests whose handlers keep nothing of the
// frame once they return (Produce appends its batch to the log before
// returning), so the frame goes back to the pool at once. Other frames are
// kept until their request is answered, then left to the garbage collector,
// since their decoded requests may be retained (group metadata, for one).
var framePooledAfterHandle = map[int16]bool{int16(kmsg.Produce): true}

// handleFrame decodes and dispatches one request frame, read at read (zero:
// now). The frame's bytes
// are reserved until the request is answered. A frame read in place
// (inPlace) belongs to the frame reader and is not given back here. A
// grouped frame (a produce request, groupProduce) is validated and joins
// the open group.
func (c *conn) handleFrame(frame []byte, reserved int64, inPlace, grouped bool, read time.Time) error {
	if read.IsZero() {
		read = time.Now()
	}
	defer c.spent(read)
	fh := frameHold{frame: frame, reserved: reserved, inPlace: inPlace}
	release := func() { c.releaseFrame(fh) }
	var (
		h   requestHeader
		req kmsg.Request
		p   *pending
		pc  *produceCall
		err error
	)
	if groupableProduce(frame) {
		// Decoded into its call, which holds its pending too.
		pc = c.newCall()
		pc.prepareRequest()
		h, err = decodeProduce(frame, c.clientID, &pc.reqBuf, c.b.produceTopicName)
		req, p = &pc.reqBuf, &pc.pend
	} else {
		h, req, err = decodeRequest(frame, c.clientID)
		p = new(pending)
	}
	c.clientID = h.clientID
	if err != nil {
		release()
		return err
	}
	if !c.mayRequest(h.key) {
		release()
		return c.refuseBeforeAuth(h)
	}
	p.header, p.start = h, read
	p.req = request{conn: c, header: h, p: p}
	p.throttle = c.chargeRequestTime(h.clientID, read)
	if h.key == int16(kmsg.Produce) {
		p.throttle = max(p.throttle, c.chargeProduce(h.clientID, len(frame), read))
	}
	if req == nil {
		release()
		if h.key != int16(kmsg.ApiVersions) {
			if resp := unsupportedVersionResponse(h); resp != nil {
				c.answer(p, resp)
				if !c.enqueue(p) {
					c.uncharge(p)
					return c.ctx.Err()
				}
				return nil
			}
			// The response has no field to say so: close, as Kafka
			// does, and leave a trace of why.
			c.b.metrics.observeRequest(h.key, h.version, kerr.UnsupportedVersion.Code, time.Since(p.start))
			c.b.refusedLog.log(c.log, "unsupported API or version: closing the connection",
				"client_id", h.clientID, "api_key", h.key, "api", kmsg.NameForKey(h.key), "version", h.version)
			c.refusalLogged = true
			return fmt.Errorf("%w: unsupported API %d v%d", errBadRequest, h.key, h.version)
		}
		// An ApiVersions version we do not know is answered at v0
		// with UNSUPPORTED_VERSION and our ranges, so the client can
		// retry with one we do.
		resp := apiVersionsResponse(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		c.b.metrics.observeRequest(h.key, h.version, resp.ErrorCode, time.Since(p.start))
		p.observed = true
		p.header.version = 0
		c.answer(p, resp)
		if !c.enqueue(p) {
			c.uncharge(p)
			return c.ctx.Err()
		}
		return nil
	}
	if grouped {
		// Validated now, appended and placed in the response order
		// when the group ends; in flight until then.
		c.inflight.Add(1)
		pc.validate(c.b, &p.req, &pc.reqBuf)
		c.group.add(pc, fh) // endGroup gives the reader's reference back
		return nil
	}
	pooled := framePooledAfterHandle[h.key]
	if !pooled {
		p.reserved = reserved
	}
	// With nothing queued, the answer may go out from here if it is
	// ready when the handler returns; otherwise the request takes its
	// place in the writer's queue first.
	direct := c.queued.Load() == 0
	if direct {
		c.inflight.Add(1)
	} else if !c.enqueue(p) {
		release()
		return c.ctx.Err()
	}
	r := &p.req
	var resp kmsg.Response
	if pc != nil {
		pc.validate(c.b, r, &pc.reqBuf)
		if c.mustPark(pc) {
			c.park(pc)
		} else {
			resp = pc.handle()
		}
	} else {
		resp = apis[h.key].handle(c.b, r, req)
	}
	if resp != nil {
		r.respond(resp)
	}
	if pooled {
		release()
	}
	if direct {
		c.sendOrQueue(p)
	}
	if pc != nil {
		pc.unref() // the reader is done with it
	}
	return nil
}

// sendOrQueue holds p's answer for the reader to write if it is ready (or
// writes it at once, if it is a raw response), or else queues p for the
// writer. Requires that nothing be queued (queued ==
// 0), so the queue has room and the writer is not writing.
func (c *conn) sendOrQueue(p *pending) {
	if answered(p) && gatherable(p) {
		c.held = append(c.held, p)
		if len(c.held) == maxWriteBatch {
			c.flushHeld()
		}
		return
	}
	c.flushHeld()
	if answered(p) && p.raw != nil {
		// A fetch answered at once (hot data) is written from here,
		// after the answers before it: waking the writer for each
		// would cost a hand-off per response.
		c.send(p)
		c.inflight.Add(-1)
		return
	}
	c.queued.Add(1)
	c.queue <- p
}

// flushHeld writes the answers the reader holds, with one system call. The
// reader holds answers while it handles frames already read, and writes
// them before anything that may wait (a read, the request or response
// budget) and before queueing a request for the writer, which must not
// overtake them. Requires that nothing be queued (true while any are held).
func (c *conn) flushHeld() {
	if len(c.held) == 0 {
		return
	}
	if c.broken.Load() {
		for _, p := range c.held {
			c.send(p) // dropped
		}
	} else {
		c.sendBatch(c.held, &c.heldBufs)
	}
	c.inflight.Add(-int32(len(c.held)))
	clear(c.held)
	c.held = c.held[:0]
}

func (c *conn) enqueue(p *pending) bool {
	c.flushHeld()
	c.inflight.Add(1)
	c.queued.Add(1)
	select {
	case c.queue <- p:
		return true
	case <-c.ctx.Done():
		c.inflight.Add(-1)
		c.queued.Add(-1)
		return false
	}
}

func (c *conn) writeLoop() {
	var next *pending // taken off the queue while gathering, sent next
	batch := make([]*pending, 0, maxWriteBatch)
	c.writerBufs.base = make(net.Buffers, 0, maxWriteBatch)
	for {
		p := next
		next = nil
		if p == nil {
			var ok bool
			if p, ok = <-c.queue; !ok {
				return
			}
		}
		// Handlers finish promptly once the connection's context is
		// cancelled (client gone or broker shutting down); wait for
		// each so that what it holds is released.
		written := c.awaitAnswer(p)
		c.inflight.Add(-1)
		if written {
			c.queued.Add(-1)
			p.sentOrDropped()
			continue
		}
		if !gatherable(p) || c.broken.Load() {
			c.send(p)
			c.queued.Add(-1)
			continue
		}
		// Answers already waiting behind this one go out with it in
		// one system call (and, on loopback, one pass through the
		// client's TCP receive path), as a writer that fell behind
		// would otherwise send them one by one.
		batch = append(batch[:0], p)
		closed := false
	gather:
		for len(batch) < maxWriteBatch {
			select {
			case q, ok := <-c.queue:
				if !ok {
					closed = true
					break gather
				}
				if !answered(q) || !gatherable(q) {
					next = q
					break gather
				}
				c.inflight.Add(-1)
				batch = append(batch, q)
			default:
				break gather
			}
		}
		c.sendBatch(batch, &c.writerBufs)
		c.queued.Add(-int32(len(batch)))
		clear(batch)
		if closed {
			return
		}
	}
}

// maxWriteBatch bounds the answers sent with one system call.
const maxWriteBatch = 16

func answered(p *pending) bool { return p.state.Load() == answerDone }

// gatherable reports whether p's answer, once done, is encoded bytes (or
// nothing) that may go out in one write with others.
func gatherable(p *pending) bool {
	return p.raw == nil && !p.closeConn && p.handoff.Load() != handoffPartial
}

// sendBatch sends the answers in batch (gatherable, done, in order) with
// one write, as send does for one.
func (c *conn) sendBatch(batch []*pending, bufs *iovec) {
	if len(batch) == 1 {
		c.send(batch[0])
		return
	}
	var n int64
	now := time.Now() // one reading for the batch's metrics, deadline and write
	for _, p := range batch {
		// Counted before the write, as in send.
		c.observeAt(p, now)
		if !p.silent && p.enc != nil {
			bufs.base = append(bufs.base, p.enc)
			n += int64(len(p.enc))
		}
	}
	var err error
	if n > 0 {
		c.w.armAt(n, now)
		_, err = bufs.writeTo(c.nc)
	}
	for _, p := range batch {
		c.uncharge(p)
		c.releaseReserved(p)
		p.sentOrDropped()
	}
	c.wroteAt(err, now)
}

// iovec is a vector of buffers for one writev whose array is kept from one
// write to the next: net.Buffers' WriteTo takes the vector's address and
// consumes it, so that a vector on the stack or in a parameter was moved
// to the heap, an allocation per write.
type iovec struct {
	base, cur net.Buffers
}

// writeTo writes the buffers appended to base, then empties it.
func (v *iovec) writeTo(w io.Writer) (int64, error) {
	v.cur = v.base
	n, err := v.cur.WriteTo(w)
	v.cur = nil
	clear(v.base) // the buffers go back to their pools
	v.base = v.base[:0]
	return n, err
}

// send writes p's answer (unless there is none to write) and gives back
// what it held.
func (c *conn) send(p *pending) {
	if p.closeConn {
		c.markBroken()
	}
	now := time.Now()
	if p.silent || c.broken.Load() {
		c.observeAt(p, now)
		p.releaseRaw()
		c.uncharge(p)
		c.releaseReserved(p)
		p.sentOrDropped()
		return
	}
	// Counted before the write, so that a client that has its answer
	// finds it in the metrics.
	c.observeAt(p, now)
	var err error
	switch {
	case p.raw != nil && p.raw.remote() && c.b.tier != nil:
		// Record data read from the object store goes out from the
		// reader's cold threads, as it came in, through their gate: a
		// replay's writes yield to hot traffic, and never hold every
		// processor.
		cold := c.b.tier.reader.Cold()
		cold.Run(func() { err = c.w.writeRawCold(p.header, p.raw, cold) })
	case p.raw != nil:
		err = c.w.writeRaw(p.header, p.raw)
	default:
		err = c.w.writeFrame(p.enc[p.sentOff:], now)
	}
	c.uncharge(p)
	// Written: the request's memory is no longer needed (held until now
	// so that the budget also bounds answers queued for a client that
	// reads slowly).
	c.releaseReserved(p)
	p.sentOrDropped()
	c.wroteAt(err, now)
}

// wroteAt records the end of a write that began at now (the connection's
// last write, for idleness, need not be finer); a failed write breaks the
// connection.
func (c *conn) wroteAt(err error, now time.Time) {
	c.lastWrite.Store(now.UnixNano())
	if err != nil {
		c.log.Debug("write failed", "err", err)
		c.markBroken()
	}
}

// markBroken gives the connection up: waiting handlers stop (their context
// is cancelled), the reader returns (its socket is closed) and the writer
// releases what is queued instead of sending it.
func (c *conn) markBroken() {
	c.broken.Store(true)
	c.cancel()
	c.nc.Close()
}

// observeAt counts an answered request in the requests metrics, answered
// at now.
func (c *conn) observeAt(p *pending, now time.Time) {
	if !p.observed {
		c.b.metrics.observeRequest(p.header.key, p.header.version, p.errorCode(), now.Sub(p.start))
	}
}

func (c *conn) releaseReserved(p *pending) {
	c.b.requestMemory.release(p.reserved)
	p.reserved = 0
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
	if key < 0 || int(key) >= len(flexibleFrom) {
		return false
	}
	from := flexibleFrom[key]
	return from >= 0 && version >= from
}

// flexibleFrom is, by API key, the first version whose response header is
// flexible (-1: none), read once from kmsg: asked per response, kmsg
// allocates a request to answer.
var flexibleFrom = func() []int16 {
	var from []int16
	for key := int16(0); key <= kmsg.MaxKey; key++ {
		from = append(from, -1)
		req := kmsg.RequestForKey(key)
		if req == nil || key == int16(kmsg.ApiVersions) {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				from[key] = v
				break
			}
		}
	}
	return from
}()
