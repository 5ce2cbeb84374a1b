package broker

import (
	"encoding/binary"
	"io"
	"time"
)

// frameReader takes size-prefixed frames from a connection. An idle
// connection reads into a small buffer of its own; one whose frames do not
// fit there reads into a pooled chunk of chunkSize bytes, reserved in the
// request budget, so that the requests a client pipelines arrive with one
// read system call and each frame lying whole in the chunk is handled where
// it lies. The chunk goes back to the pool once what is left unread fits
// the small buffer. Frames larger than a chunk are read into buffers of
// their own, sized from the bytes that have arrived (readFrame).
type frameReader struct {
	c   *conn
	own []byte // readBufferSize bytes, the connection's for its life
	// buf is own or a chunk; buf[r:w] is read and not yet taken.
	buf  []byte
	r, w int
	// chunked: buf is a pooled chunk whose budget is held.
	chunked bool
	// deadline bounds the reads of the frame being taken: the frame's
	// own once its size prefix is taken (frame), and until then the
	// idle time counted from the first read that waits for the prefix
	// (zero until that read). armed is the socket's read deadline as
	// last set. The socket's deadline is set only before a read, and
	// only when it differs, so that frames read already cost no timer
	// (two per frame cost a few percent of the broker's CPU under
	// pipelined produce).
	deadline, armed time.Time
}

// chunkSize is the buffer a busy connection reads into: 8 pipelined
// Produce requests of 32 KiB batches come with one read (with their
// headers they are a little more than 256 KiB, so that a chunk of 256 KiB
// always left the eighth torn between two reads).
const chunkSize = 512 << 10

func newFrameReader(c *conn) *frameReader {
	own := make([]byte, readBufferSize)
	return &frameReader{c: c, own: own, buf: own}
}

// settle gives the chunk back once what is unread fits the small buffer,
// moving those bytes there. Call it only when no frame taken in place is
// still in use.
func (f *frameReader) settle() {
	if !f.chunked || f.w-f.r > len(f.own) {
		return
	}
	n := copy(f.own, f.buf[f.r:f.w])
	f.dropChunk()
	f.r, f.w = 0, n
}

func (f *frameReader) dropChunk() {
	putBuf(f.buf)
	f.c.b.requestMemory.release(int64(cap(f.buf)))
	f.buf, f.chunked = f.own, false
}

// close gives the chunk back, if held.
func (f *frameReader) close() {
	if f.chunked {
		f.dropChunk()
	}
	f.r, f.w = 0, 0
}

// fill makes at least n bytes (n <= len(f.buf)) available unread. Answers
// the reader holds are written first: each read may wait for the client.
func (f *frameReader) fill(n int) error {
	if f.w-f.r >= n {
		return nil
	}
	f.c.flushHeld()
	if len(f.buf)-f.r < n {
		f.w = copy(f.buf, f.buf[f.r:f.w])
		f.r = 0
	}
	for f.w-f.r < n {
		if err := f.arm(); err != nil {
			return err
		}
		m, err := f.c.nc.Read(f.buf[f.w:])
		f.w += m
		if err != nil {
			f.armed = time.Time{} // a timeout or stopReading may have moved it
			if f.w-f.r >= n {
				return nil
			}
			if err == io.EOF && f.w > f.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// arm sets the socket's read deadline to the frame reader's before a read
// that may wait, if it is not set already, and reports whether the
// connection is done (checked after setting it: shutdown cancels the
// context and then sets the deadline to now, stopReading).
func (f *frameReader) arm() error {
	if f.deadline.IsZero() {
		f.deadline = time.Now().Add(f.c.b.cfg.ConnectionsMaxIdle)
	}
	if !f.deadline.Equal(f.armed) {
		f.c.nc.SetReadDeadline(f.deadline)
		f.armed = f.deadline
	}
	return f.c.ctx.Err()
}

// header reads the next frame's size prefix, waiting at most the idle time
// (connections.max.idle.ms) from the first read that waits for it; partial
// reports, with an error, that some of it had arrived.
func (f *frameReader) header() (h [4]byte, partial bool, err error) {
	f.deadline = time.Time{}
	if err := f.fill(4); err != nil {
		return h, f.w > f.r, err
	}
	copy(h[:], f.buf[f.r:])
	f.r += 4
	return h, false, nil
}

// frame reads the size bytes of the frame whose prefix header took, each
// read waiting at most until deadline. A frame that fits a chunk is
// returned in place (inPlace; valid until the next call to settle, fill
// or frame, and reserved by the buffer it lies in); a larger one is read
// into a pooled buffer of its own whose budget, reserved, releaseBuf
// gives back.
func (f *frameReader) frame(size int, deadline time.Time) (buf []byte, reserved int64, inPlace bool, err error) {
	f.deadline = deadline
	if size > len(f.buf) && size <= chunkSize {
		// Answers held are written before waiting for budget.
		f.c.flushHeld()
		if err := f.c.b.requestMemory.acquire(f.c.ctx, int64(bufCap(chunkSize)), deadline); err != nil {
			return nil, 0, false, err
		}
		chunk := getBuf(chunkSize)
		n := copy(chunk, f.buf[f.r:f.w])
		f.buf, f.r, f.w, f.chunked = chunk, 0, n, true
	}
	if size <= len(f.buf) {
		if err := f.fill(size); err != nil {
			return nil, 0, false, err
		}
		buf = f.buf[f.r : f.r+size : f.r+size]
		f.r += size
		return buf, 0, true, nil
	}
	// Larger than a chunk: what is unread is the frame's beginning,
	// copied into the frame's buffer, after which the chunk goes back.
	f.c.flushHeld()
	if err := f.arm(); err != nil {
		return nil, 0, false, err
	}
	buf, reserved, err = f.c.readFrame(f.buf[f.r:f.w], f.close, size, deadline)
	f.armed = time.Time{} // read on the socket directly: not tracked
	f.close()
	return buf, reserved, false, err
}

// buffered is how many bytes were read and not yet taken.
func (f *frameReader) buffered() int { return f.w - f.r }

// next returns the first bytes of the next frame (its api key and
// version) when the whole frame is read already, and nil otherwise. It
// takes nothing.
func (f *frameReader) next() []byte {
	if f.w-f.r < 8 {
		return nil
	}
	size := int64(binary.BigEndian.Uint32(f.buf[f.r:]))
	if size < 4 || int64(f.w-f.r-4) < size {
		return nil
	}
	return f.buf[f.r+4 : f.r+8]
}
