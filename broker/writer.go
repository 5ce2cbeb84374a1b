package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/tiering"
)

// connWriter writes response frames to one connection; only the
// connection's writer goroutine uses it. Responses are encoded (when
// answered) into buffers from the shared pools, given back once written,
// so an idle connection holds no encode buffer.
type connWriter struct {
	nc  net.Conn
	raw syscall.RawConn // nil when the connection cannot sendfile
	hdr [16]byte        // a raw response's header
	// more holds what writeMore sends before a file range.
	more []byte
	// iov gathers what writeRaw sends with one writev.
	iov net.Buffers
	// The send in progress, for the callbacks raw.Write takes: each is
	// made once, in newConnWriter, where a closure made per call (and
	// the variables it captured) cost allocations on every fetch.
	// moreBuf and moreErr are writeMore's; sfIn, sfOff, sfLeft,
	// sfCached and sfErr are sendfile's.
	moreStep, sendfileStep func(fd uintptr) bool
	moreBuf                []byte
	moreErr                error
	sfIn                   int
	sfOff, sfLeft          int64
	sfCached               bool
	sfErr                  error
	// cold, while a response holding record data read from the object
	// store is written (writeRawCold), gates its writes: see coldWritev.
	// coldStep is coldWritev's callback, coldBufs what it has left to
	// send, coldIov its vector, coldErr its error, coldMax the bytes of
	// a step (cold.Step(), taken once per writev).
	cold     *tiering.ColdThreads
	coldStep func(fd uintptr) bool
	coldMax  int
	coldBufs net.Buffers
	coldIov  []syscall.Iovec
	coldErr  error
	// timeout: each response (or batch of responses written together)
	// must be sent at a MiB or more per timeout, or the connection is
	// given up (a client that stops reading cannot hold its responses'
	// memory forever).
	timeout time.Duration
	// deadline is the write deadline set on the connection (zero: none).
	deadline time.Time
}

// arm makes sure the write deadline lets n bytes be sent (a response, or
// a batch of responses written together), before their first write: a
// timeout per MiB from now, at least. The writes of a raw response (its
// bytes between file ranges, each range) are not armed one by one. The
// deadline is moved only when it falls short, and then a quarter of the
// timeout further, so that a stream of answers moves it a few times per
// timeout instead of once per answer (each a change of the runtime's
// timer, under its lock); it is also moved when it lies more than a
// timeout beyond what n needs, so that the allowance of a large response
// does not stay with the small ones after it. A response thus gets
// between its own allowance and a timeout more.
func (w *connWriter) arm(n int64) { w.armAt(n, time.Now()) }

// armAt is arm at now, read already by the caller (time.Now is about
// 0.4 us on a kvm-clock virtual machine, and an answer's write also needs
// it for the requests metric and the connection's last write).
func (w *connWriter) armAt(n int64, now time.Time) {
	if w.timeout <= 0 {
		return
	}
	want := now.Add(w.timeout * time.Duration(1+n>>20))
	if w.deadline.Before(want) || w.deadline.After(want.Add(w.timeout)) {
		w.deadline = want.Add(w.timeout / 4)
		w.nc.SetWriteDeadline(w.deadline)
	}
}

// moreSize bounds the bytes writeMore sends ahead of a file range: a
// response's header and its first partition's fields, or the fields
// between two partitions' records.
const moreSize = 512

func newConnWriter(nc net.Conn, timeout time.Duration) *connWriter {
	w := &connWriter{nc: nc, timeout: timeout}
	if sc, ok := nc.(syscall.Conn); ok {
		if _, isTCP := nc.(*net.TCPConn); isTCP {
			w.raw, _ = sc.SyscallConn()
			w.more = make([]byte, moreSize)
			w.moreStep, w.sendfileStep, w.coldStep = w.sendMore, w.sendFileRange, w.sendCold
		}
	}
	return w
}

func appendResponseHeader(dst []byte, h requestHeader) []byte {
	dst = append(dst, 0, 0, 0, 0) // size, back-filled
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.correlationID))
	if responseHeaderFlexible(h.key, h.version) {
		dst = append(dst, 0) // no tagged fields
	}
	return dst
}

// writeFrame writes an encoded response frame, at now.
func (w *connWriter) writeFrame(buf []byte, now time.Time) error {
	w.armAt(int64(len(buf)), now)
	_, err := w.nc.Write(buf)
	return err
}

// tryWrite writes what the socket takes of buf now, without waiting for
// room: n < len(buf) with a nil error when it is full. Requires raw.
func (w *connWriter) tryWrite(buf []byte) (n int, err error) {
	rerr := w.raw.Write(func(fd uintptr) bool {
		for n < len(buf) {
			m, e := syscall.Write(int(fd), buf[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return true
			case e != nil:
				err = e
				return true
			case m <= 0:
				return true
			}
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	return n, err
}

// rawResponse is an encoded response body with file ranges spliced in:
// bytes up to each cut, then that cut's range, then the bytes after the last
// cut. The fetch path builds it so that record data goes from the segment
// file to the socket with sendfile, never through user space.
type rawResponse struct {
	body []byte
	cuts []rawCut
	// errCode is the first partition error code (the requests metric).
	errCode int16
	// cutBuf and bodyBuf hold the cuts and body of a small response
	// (a fetch of up to 4 partitions), which then takes one allocation
	// instead of three or more.
	cutBuf  [4]rawCut
	bodyBuf [256]byte
}

type rawCut struct {
	at  int // position in body where the range goes
	rng localseg.Range
	// data, when set, is written instead of rng: record data read from
	// the object store.
	data tiering.Data
}

func (c *rawCut) len() int64 {
	if c.data.Bufs != nil {
		return c.data.Len()
	}
	return c.rng.Len()
}

func (r *rawResponse) size() int64 {
	n := int64(len(r.body))
	for i := range r.cuts {
		n += r.cuts[i].len()
	}
	return n
}

// remote reports whether the response holds record data read from the
// object store.
func (r *rawResponse) remote() bool {
	for i := range r.cuts {
		if r.cuts[i].data.Bufs != nil {
			return true
		}
	}
	return false
}

func (r *rawResponse) release() {
	for i := range r.cuts {
		r.cuts[i].rng.Release()
		// Written or dropped: no write holds the chunks any more.
		r.cuts[i].data.Release()
	}
	clear(r.cuts)
	r.cuts = nil
}

func (w *connWriter) writeRaw(h requestHeader, r *rawResponse) error {
	defer r.release()
	// Not corked: with TCP_CORK set over the response, the partial last
	// packet of each file range waited for the bytes after it, but a
	// corked sendfile cost more than the packet it saved (hot fetches of
	// 4 partitions x 1 MiB: 0.54-0.68 broker CPU ms/MB corked, 0.38-0.53
	// not, and so less of a plain sendfile server's MB/s).
	hdr := appendResponseHeader(w.hdr[:0], h)
	size := r.size()
	binary.BigEndian.PutUint32(hdr, uint32(int64(len(hdr)-4)+size))
	w.arm(int64(len(hdr)) + size)
	// The bytes in memory up to the next file range (the header, the
	// body's pieces and record data read from the object store) are
	// gathered and sent with one writev: a remote read's answer is one
	// system call (more only while the socket is full), not one for the
	// bytes before its records, one for them and one after.
	iov := append(w.iov[:0], hdr)
	defer func() { clear(iov[:cap(iov)]); w.iov = iov[:0] }()
	prev := 0
	for i := range r.cuts {
		c := &r.cuts[i]
		iov = append(iov, r.body[prev:c.at])
		prev = c.at
		if c.data.Bufs != nil {
			iov = append(iov, c.data.Bufs...)
			continue
		}
		if err := w.writeMore(iov); err != nil {
			return err
		}
		iov = iov[:0]
		if err := w.sendfile(&c.rng); err != nil {
			return err
		}
	}
	iov = append(iov, r.body[prev:])
	return w.writev(iov)
}

// writeRawCold is writeRaw for a response holding record data read from
// the object store, run on one of cold's threads: its bytes in memory go
// out in steps of at most cold.Step() (coldWriteMax beside hot traffic),
// each passing cold's gate, so that a replay's writes never hold every
// processor.
func (w *connWriter) writeRawCold(h requestHeader, r *rawResponse, cold *tiering.ColdThreads) error {
	w.cold = cold
	defer func() { w.cold = nil }()
	return w.writeRaw(h, r)
}

// writev sends bufs with one system call (more while the socket is full).
// It consumes bufs. The caller has armed the deadline.
func (w *connWriter) writev(bufs net.Buffers) error {
	switch {
	case buffersLen(bufs) == 0:
		return nil
	case w.cold != nil && w.raw != nil:
		return w.coldWritev(bufs)
	case len(bufs) == 1:
		_, err := w.nc.Write(bufs[0])
		return err
	}
	_, err := bufs.WriteTo(w.nc)
	return err
}

// writeMore sends bufs ahead of a file range, as writev does, but with
// MSG_MORE: they wait in the socket for the file range sent next, so they
// go out in its first packet instead of one of their own (on loopback, a
// wake-up of the client for a few bytes). Larger than the scratch buffer,
// they are sent as writev sends them. It consumes bufs.
func (w *connWriter) writeMore(bufs net.Buffers) error {
	n := buffersLen(bufs)
	if w.raw == nil || n > len(w.more) || n == 0 {
		return w.writev(bufs)
	}
	w.moreBuf = w.more[:0]
	for _, b := range bufs {
		w.moreBuf = append(w.moreBuf, b...)
	}
	w.moreErr = nil
	err := w.raw.Write(w.moreStep)
	w.moreBuf = nil
	if err != nil {
		return err
	}
	return w.moreErr
}

// coldWriteMax bounds what one gated write of cold bytes sends: a copy
// into the socket of some tens of microseconds, where an unbounded writev
// of a 16 MiB fetch's records copied megabytes in one system call. In
// shale-bench's produce latency rounds (4 runs of each, alternating, on a
// loaded 2-core machine), a produce's p50 beside a cold replay lay 0.3 ms
// above its p50 alone with 256 KiB, 0.7 ms with 4 MiB and 0.9 ms without
// the gate, for the same replay rate (medians 363, 387 and 360 MB/s).
// With no hot traffic seen, steps are tiering.ColdStepIdle.
const coldWriteMax = tiering.ColdStepHot

// coldIovMax bounds the buffers of one gated write (Linux's UIO_MAXIOV is
// 1024).
const coldIovMax = 1024

// coldWritev sends bufs as writev does, in non-blocking writes of at most
// w.cold.Step() bytes, each holding a step of w.cold's gate: a write that
// finds the socket full waits for room with its step released, so a slow
// client holds no processor either.
func (w *connWriter) coldWritev(bufs net.Buffers) error {
	w.coldBufs, w.coldErr, w.coldMax = bufs, nil, w.cold.Step()
	err := w.raw.Write(w.coldStep)
	w.coldBufs = nil
	clear(w.coldIov[:cap(w.coldIov)]) // the buffers go back to their pools
	if err != nil {
		return err
	}
	return w.coldErr
}

// sendCold is coldWritev's callback for raw.Write: it sends what is left
// of coldBufs, false when the socket is full.
func (w *connWriter) sendCold(fd uintptr) bool {
	for {
		iov, n := w.coldIov[:0], 0
		for _, b := range w.coldBufs {
			if n >= w.coldMax || len(iov) == coldIovMax {
				break
			}
			if len(b) == 0 {
				continue
			}
			take := min(len(b), w.coldMax-n)
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(take)
			iov = append(iov, v)
			n += take
		}
		w.coldIov = iov
		if n == 0 {
			return true
		}
		w.cold.Hold()
		m, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		w.cold.Release()
		switch {
		case e == syscall.EAGAIN:
			return false // wait, released, until the socket is writable
		case e == syscall.EINTR:
			continue
		case e != 0:
			w.coldErr = fmt.Errorf("broker: writev: %w", e)
			return true
		}
		w.coldBufs = consumeBuffers(w.coldBufs, int(m))
	}
}

// consumeBuffers drops the first n bytes of bufs, as net.Buffers' own
// consume does.
func consumeBuffers(bufs net.Buffers, n int) net.Buffers {
	for len(bufs) > 0 && n > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs[0] = nil
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs[0] = nil
		bufs = bufs[1:]
	}
	return bufs
}

// sendMore is writeMore's callback for raw.Write: it sends moreBuf with
// MSG_MORE, false when the socket is full.
func (w *connWriter) sendMore(fd uintptr) bool {
	for len(w.moreBuf) > 0 {
		m, err := syscall.SendmsgN(int(fd), w.moreBuf, nil, nil, syscall.MSG_MORE)
		if m > 0 {
			w.moreBuf = w.moreBuf[m:]
		}
		switch {
		case err == syscall.EAGAIN:
			return false
		case err == syscall.EINTR:
			continue
		case err != nil:
			w.moreErr = fmt.Errorf("broker: send: %w", err)
			return true
		}
	}
	return true
}

var errShortFile = errors.New("broker: segment file ended before the range it promised")

// sendfile copies a file range to the socket in the kernel. Connections
// that cannot (not TCP) get a copying fallback.
//
// A range of at least cachedSendfileMin bytes wholly in the page cache is
// sent without the runtime's system call bookkeeping (sendfileCached), a
// MiB per call: a sendfile of a MiB takes some hundreds of microseconds,
// long enough for the runtime to hand the goroutine's P to another thread
// while it runs and to take one back after, a few thread switches per
// fetch. A range that may need the disk goes through syscall.Sendfile, so
// that a slow read never holds a P.
func (w *connWriter) sendfile(rng *localseg.Range) error {
	off, n := rng.Offset(), rng.Len()
	if n == 0 {
		return nil
	}
	if w.raw == nil {
		_, err := io.Copy(w.nc, io.NewSectionReader(rng.File(), off, n))
		return err
	}
	infd, err := fileFd(rng.File())
	if err != nil {
		return err
	}
	w.sfIn, w.sfOff, w.sfLeft, w.sfErr = infd, off, n, nil
	w.sfCached = n >= cachedSendfileMin && pageCached(infd, off, n)
	if err := w.raw.Write(w.sendfileStep); err != nil {
		return err
	}
	return w.sfErr
}

// sendFileRange is sendfile's callback for raw.Write: it sends what is
// left of the range, false when the socket is full.
func (w *connWriter) sendFileRange(fd uintptr) bool {
	send, most := syscall.Sendfile, int64(1<<30)
	if w.sfCached {
		send, most = sendfileCached, 1<<20
	}
	for w.sfLeft > 0 {
		chunk := min(w.sfLeft, most)
		written, err := send(int(fd), w.sfIn, &w.sfOff, int(chunk))
		if written > 0 {
			w.sfLeft -= int64(written)
		}
		switch {
		case err == syscall.EAGAIN:
			return false // wait until the socket is writable
		case err == syscall.EINTR:
			continue
		case err != nil:
			w.sfErr = fmt.Errorf("broker: sendfile: %w", err)
			return true
		case written == 0:
			w.sfErr = errShortFile
			return true
		}
	}
	return true
}

// cachedSendfileMin is the smallest file range sendfile checks for in the
// page cache: a shorter one is sent before the runtime would take the P.
const cachedSendfileMin = 64 << 10

// sendfileCached is syscall.Sendfile without entering the runtime's system
// call state: the thread keeps its P, as it does for any short call. Only
// for a range in the page cache, to a non-blocking socket, a MiB at most:
// it returns without waiting for the disk or the client (EAGAIN when the
// socket is full), and between calls the goroutine can be preempted.
func sendfileCached(outfd, infd int, off *int64, count int) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDFILE, uintptr(outfd), uintptr(infd), uintptr(unsafe.Pointer(off)), uintptr(count), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// cachestatMissing is set once cachestat(2) failed for want of the call
// (Linux before 6.5, or a filter refusing it): pageCached then answers
// false without asking again.
var cachestatMissing atomic.Bool

// pageCached reports whether every page of the file range [off, off+n) is
// in the page cache (cachestat(2)); false when it cannot tell.
func pageCached(fd int, off, n int64) bool {
	if n <= 0 || off < 0 || cachestatMissing.Load() {
		return false
	}
	var st unix.Cachestat_t
	err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &st, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) {
			cachestatMissing.Store(true)
		}
		return false
	}
	page := int64(os.Getpagesize())
	pages := (off+n+page-1)/page - off/page
	return st.Cache >= uint64(pages)
}

// fileFd returns the descriptor of f without switching it to blocking mode
// (which *os.File.Fd does).
func fileFd(f *os.File) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd int
	if err := sc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return 0, err
	}
	return fd, nil
}

// buffersLen is the bytes bufs hold.
func buffersLen(bufs net.Buffers) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}
