package recordbatch

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// Summary is what a walk learns from a batch's records.
type Summary struct {
	// Records is the number of records found (equal to the header's
	// record count once a walk has accepted the batch).
	Records int32
	// MinTimestamp and MaxTimestamp are the smallest and largest record
	// timestamps (base timestamp plus each record's delta), whatever the
	// batch's timestamp type; MinTimestamp leaves out records without a
	// timestamp (NoTimestamp, -1), which Kafka's timestamp bounds skip.
	// Both are -1 for a batch without records.
	MinTimestamp int64
	MaxTimestamp int64
	// MaxTimestampOffsetDelta is the offset delta of the first record
	// holding MaxTimestamp.
	MaxTimestampOffsetDelta int32
}

// walkWindow is the size of the window a streaming walk reads decompressed
// bytes into: records larger than it are checked without being held whole.
const walkWindow = 64 << 10

var windows = sync.Pool{New: func() any { b := make([]byte, walkWindow); return &b }}

// walker reads records from a batch body without building them: varints
// are decoded inline, keys, values and headers are stepped over. The body
// is either all in buf (an uncompressed batch in memory) or streamed
// through buf from r (a decompressor, or a file), in which case a record
// may be larger than buf.
type walker struct {
	buf []byte // buf[pos:] is read but not consumed
	pos int
	r   io.Reader // nil: buf holds the whole body
	// rerr is r's sticky error: io.EOF at the end of the body.
	rerr error
	// read counts bytes taken from r; more than limit is refused.
	read, limit int64
	win         *[]byte // pooled window backing buf, if any
	// stepNullKey says whether the record recordStepwise last stepped
	// through has a null key.
	stepNullKey bool
}

// fill makes at least want bytes available after pos, or as many as the
// body has. It returns false when fewer than want are available.
func (w *walker) fill(want int) bool {
	if len(w.buf)-w.pos >= want {
		return true
	}
	if w.r == nil || w.rerr != nil {
		return false
	}
	// Slide what is left to the front of the window and read after it.
	n := copy(w.buf[:cap(w.buf)], w.buf[w.pos:])
	w.buf, w.pos = w.buf[:n], 0
	for len(w.buf) < want && w.rerr == nil {
		m, err := w.r.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+m]
		w.read += int64(m)
		if w.read > w.limit {
			w.rerr = ErrDecompressTooLarge
			return false
		}
		if err != nil {
			w.rerr = err
		} else if m == 0 {
			w.rerr = io.ErrNoProgress
		}
	}
	return len(w.buf) >= want
}

// uvarint decodes an unsigned varint at the front of b, as
// encoding/binary.Uvarint does (n == 0: b too short; n < 0: overflow).
func uvarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	if len(b) > 1 && b[1] < 0x80 { // two bytes: lengths and deltas up to 8191
		return uint64(b[0]&0x7f) | uint64(b[1])<<7, 2
	}
	var x uint64
	var s uint
	for i, c := range b {
		if i == 10 {
			return 0, -(i + 1)
		}
		if c < 0x80 {
			if i == 9 && c > 1 {
				return 0, -(i + 1)
			}
			return x | uint64(c)<<s, i + 1
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, 0
}

// varlong reads a zigzag varint from at most limit bytes.
func (w *walker) varlong(limit int) (int64, bool) {
	want := min(limit, 10)
	if len(w.buf)-w.pos < want && !w.fill(want) && len(w.buf)-w.pos == 0 {
		return 0, false
	}
	b := w.buf[w.pos:]
	if len(b) > limit {
		b = b[:limit]
	}
	ux, n := uvarint(b)
	if n <= 0 {
		return 0, false
	}
	w.pos += n
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, true
}

// skip steps over n bytes.
func (w *walker) skip(n int) bool {
	avail := len(w.buf) - w.pos
	if n <= avail {
		w.pos += n
		return true
	}
	n -= avail
	w.pos = len(w.buf)
	for n > 0 {
		if !w.fill(1) {
			return false
		}
		m := min(n, len(w.buf)-w.pos)
		w.pos += m
		n -= m
	}
	return true
}

// atEnd reports whether the body has no bytes left, reading r to its end
// (so that a decoder's trailing checksum is verified).
func (w *walker) atEnd() (bool, error) {
	if w.pos < len(w.buf) {
		return false, nil
	}
	if w.r == nil {
		return true, nil
	}
	if w.fill(1) {
		return false, nil
	}
	return true, w.streamErr()
}

// streamErr is r's error, if it is more than the end of the body.
func (w *walker) streamErr() error {
	switch {
	case w.rerr == nil || w.rerr == io.EOF:
		return nil
	case w.rerr == ErrDecompressTooLarge:
		return fmt.Errorf("%w: more than %d bytes", ErrDecompressTooLarge, w.limit)
	case w.rerr == io.ErrNoProgress:
		return fmt.Errorf("%w: decoder made no progress", ErrCorrupt)
	}
	return w.rerr
}

// recordFn sees each record's offset delta and timestamp delta during a
// walk; returning false stops it.
type recordFn func(offsetDelta int32, timestampDelta int64) bool

// walkSpec says what a walk checks.
type walkSpec struct {
	count           int32 // records the header claims
	lastOffsetDelta int32
	baseTimestamp   int64
	dense           bool // offset deltas must be 0..count-1
	requireKeys     bool // a null key is refused (ErrNoKey)
}

// errStopped is returned by walk when fn stopped it.
var errStopped = errors.New("recordbatch: walk stopped")

// walk checks count records and that nothing follows them, with the same
// rules as parsing each record: every length within the record's bytes,
// no null header key, offset deltas increasing (and dense when asked) and
// within the batch, and no null key when asked.
func (w *walker) walk(spec walkSpec, fn recordFn) (Summary, error) {
	sum := Summary{MinTimestamp: -1, MaxTimestamp: -1}
	last := int32(-1)
	// In memory (an uncompressed batch at produce) each record is walked
	// in line, without the calls of record. A walk that requires keys
	// takes recordKeyed, so that the others do not pay for it.
	inline := w.r == nil && !spec.requireKeys
	for i := int32(0); i < spec.count; i++ {
		var od int32
		var td int64
		var ok bool
		if inline {
			var next int
			if od, td, next, ok = recordAt(w.buf, w.pos); next >= 0 {
				w.pos = next
			}
		} else if !spec.requireKeys {
			od, td, ok = w.record()
		} else {
			var nullKey bool
			if od, td, nullKey, ok = w.recordKeyed(); ok && nullKey {
				return sum, fmt.Errorf("record %d: %w", i, ErrNoKey)
			}
		}
		if !ok {
			if err := w.streamErr(); err != nil {
				return sum, fmt.Errorf("record %d: %w", i, err)
			}
			return sum, fmt.Errorf("%w: record %d does not match its length", ErrInvalidRecord, i)
		}
		if od <= last || od > spec.lastOffsetDelta || (spec.dense && od != i) {
			return sum, fmt.Errorf("%w: record %d has offset delta %d", ErrInvalidRecord, i, od)
		}
		last = od
		ts := spec.baseTimestamp + td
		if ts != NoTimestamp && (sum.MinTimestamp == NoTimestamp || ts < sum.MinTimestamp) {
			sum.MinTimestamp = ts
		}
		if i == 0 || ts > sum.MaxTimestamp {
			sum.MaxTimestamp, sum.MaxTimestampOffsetDelta = ts, od
		}
		sum.Records++
		if fn != nil && !fn(od, td) {
			return sum, errStopped
		}
	}
	end, err := w.atEnd()
	if err != nil {
		return sum, err
	}
	if !end {
		return sum, fmt.Errorf("%w: bytes after the last record", ErrInvalidRecord)
	}
	return sum, nil
}

// record steps over one record, returning its offset and timestamp
// deltas; false when the record is malformed or the body ends inside it.
func (w *walker) record() (int32, int64, bool) {
	if w.r == nil {
		return w.recordInMemory()
	}
	// Streaming: most records lie whole in the window, and those are
	// walked on the slice as in memory. A record the window cuts, and
	// any the fast walk refuses, is stepped through field by field.
	if len(w.buf)-w.pos < streamFastMin {
		w.fill(streamFastMin)
	}
	pos := w.pos
	if od, td, ok := w.recordInMemory(); ok {
		return od, td, true
	}
	w.pos = pos
	return w.recordStepwise()
}

// recordKeyed is record, also reporting whether the record has a null key
// (meaningful only when it is accepted).
func (w *walker) recordKeyed() (od int32, td int64, nullKey, ok bool) {
	if w.r != nil && len(w.buf)-w.pos < streamFastMin {
		w.fill(streamFastMin)
	}
	pos := w.pos
	if od, td, ok = w.recordInMemory(); ok {
		return od, td, nullKeyAt(w.buf, pos), true
	}
	if w.r == nil {
		return od, td, false, false
	}
	w.pos = pos
	od, td, ok = w.recordStepwise()
	return od, td, w.stepNullKey, ok
}

// streamFastMin is what a streaming walk keeps in its window before trying
// the fast walk on the next record.
const streamFastMin = 4 << 10

// recordStepwise is record for a streamed body: each field is read through
// fill, so a record may be larger than the window.
func (w *walker) recordStepwise() (int32, int64, bool) {
	// The length prefix may run to the end of the body.
	length, ok := w.varlong(10)
	if !ok || length < 0 || length > 1<<31-1 {
		return 0, 0, false
	}
	rem := int(length)
	// attributes
	if rem < 1 || !w.fill(1) {
		return 0, 0, false
	}
	w.pos++
	rem--
	start := w.pos
	td, ok := w.varlong(rem)
	if !ok {
		return 0, 0, false
	}
	rem -= w.pos - start
	od, ok := w.varint(&rem)
	if !ok {
		return 0, 0, false
	}
	// key and value
	for f := range 2 {
		l, ok := w.nullableBytes(&rem)
		if !ok {
			return 0, 0, false
		}
		if f == 0 {
			w.stepNullKey = l < 0
		}
	}
	nh, ok := w.varint(&rem)
	if !ok || nh < 0 || int(nh) > rem {
		return 0, 0, false
	}
	for range nh {
		// A null header key is refused, as Kafka does.
		k, ok := w.varint(&rem)
		if !ok || k < 0 || int(k) > rem || !w.skip(int(k)) {
			return 0, 0, false
		}
		rem -= int(k)
		if _, ok := w.nullableBytes(&rem); !ok {
			return 0, 0, false
		}
	}
	return od, td, rem == 0
}

// nullableBytes steps over a length-prefixed byte string (-1: null) within
// the record's remaining *rem bytes, returning its length.
func (w *walker) nullableBytes(rem *int) (int32, bool) {
	l, ok := w.varint(rem)
	if !ok || l < -1 || int(l) > *rem {
		return 0, false
	}
	if l > 0 {
		if !w.skip(int(l)) {
			return 0, false
		}
		*rem -= int(l)
	}
	return l, true
}

// varint reads a zigzag varint that must fit an int32 from the record's
// remaining *rem bytes, and counts them off.
func (w *walker) varint(rem *int) (int32, bool) {
	start := w.pos
	v, ok := w.varlong(*rem)
	if !ok || v < -1<<31 || v > 1<<31-1 {
		return 0, false
	}
	*rem -= w.pos - start
	return int32(v), true
}

// newWalker returns a walker over an in-memory body.
func newWalker(body []byte) walker { return walker{buf: body} }

// newStreamWalker returns a walker reading from r through a pooled window.
// release gives the window back.
func newStreamWalker(r io.Reader, limit int64) walker {
	win := windows.Get().(*[]byte)
	return walker{buf: (*win)[:0], r: r, limit: limit, win: win}
}

func (w *walker) release() {
	if w.win != nil {
		windows.Put(w.win)
		w.win, w.buf, w.r = nil, nil, nil
	}
}
