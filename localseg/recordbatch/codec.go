package recordbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Bounds on decompression.
const (
	// MinMaxDecompressed is the decompressed size every topic allows a
	// batch, whatever its max.message.bytes.
	MinMaxDecompressed = 64 << 20
	// MaxMaxDecompressed caps the decompressed size of a batch even when
	// max.message.bytes is larger.
	MaxMaxDecompressed = 256 << 20
	// zstdMaxWindow is the largest zstd window accepted: what compression
	// levels up to 19 use (Kafka's clients use 3 by default). A streaming
	// decoder keeps about one window of history.
	zstdMaxWindow = 8 << 20
	// lz4MaxBlock is the largest lz4 frame block (the 4 MiB block size);
	// the reader keeps a compressed and a decompressed block.
	lz4MaxBlock = 4 << 20
)

// MaxDecompressedFor is the decompressed size allowed for a batch of a
// topic whose max.message.bytes is maxMessageBytes: at least
// MinMaxDecompressed, at most MaxMaxDecompressed.
func MaxDecompressedFor(maxMessageBytes int) int {
	return min(max(MinMaxDecompressed, maxMessageBytes), MaxMaxDecompressed)
}

// decoderMemory is what a streaming decompression of body may allocate
// beyond the walker's window: the charge taken from a Budget. For snappy
// it is the largest block the body declares (snappy blocks are decoded
// whole); a body declaring a block over limit is refused here, before
// anything is allocated.
func decoderMemory(codec Codec, body []byte, limit int) (int64, error) {
	switch codec {
	case CodecNone:
		return 0, nil
	case CodecGzip:
		return 128 << 10, nil // deflate window, tables and bufio
	case CodecLZ4:
		return 2*lz4MaxBlock + 64<<10, nil
	case CodecZstd:
		return zstdMaxWindow + 512<<10, nil // history, block buffers, tables
	case CodecSnappy:
		largest := 0
		if isXerial(body) {
			for b := body[16:]; len(b) >= 4; {
				n := int(binary.BigEndian.Uint32(b))
				if n > len(b)-4 {
					break // corrupt: the decoder says so
				}
				if l, err := s2.DecodedLen(b[4 : 4+n]); err == nil {
					if l > limit {
						return 0, fmt.Errorf("%w: a snappy block expands to %d bytes, the limit is %d", ErrDecompressTooLarge, l, limit)
					}
					largest = max(largest, l)
				}
				b = b[4+n:]
			}
		} else if l, err := s2.DecodedLen(body); err == nil {
			if l > limit {
				return 0, fmt.Errorf("%w: snappy block expands to %d bytes, the limit is %d", ErrDecompressTooLarge, l, limit)
			}
			largest = l
		}
		return int64(largest), nil
	}
	return 0, fmt.Errorf("%w: unknown compression codec %d", ErrCorrupt, codec)
}

// decompressor is a pooled set of streaming decoders, one of each codec,
// built on first use and reset for each body.
type decompressor struct {
	src     bytes.Reader // not a *bytes.Buffer: zstd would decode it whole
	codec   Codec
	gz      *gzip.Reader
	lz      *lz4.Reader
	zd      *zstd.Decoder // from zstdDecoders, only while open
	zdLimit int
	sn      snappyReader
	r       io.Reader // the current codec's reader
	closed  bool
}

var decompressors = sync.Pool{New: func() any { return new(decompressor) }}

// zstdDecoders pools zstd decoders per decompression limit: their window
// and memory bounds are fixed when they are built. A frame is refused when
// its window exceeds the limit (as decoding it whole would be) or
// zstdMaxWindow.
var zstdDecoders sync.Map // limit int -> *sync.Pool of *zstd.Decoder

func getZstd(limit int) (*zstd.Decoder, error) {
	p, ok := zstdDecoders.Load(limit)
	if !ok {
		p, _ = zstdDecoders.LoadOrStore(limit, new(sync.Pool))
	}
	if d, ok := p.(*sync.Pool).Get().(*zstd.Decoder); ok {
		return d, nil
	}
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(max(zstd.MinWindowSize, min(limit, zstdMaxWindow)))),
		zstd.WithDecoderMaxMemory(uint64(max(1, limit))))
	if err != nil {
		return nil, fmt.Errorf("recordbatch: zstd decoder: %w", err)
	}
	return d, nil
}

func putZstd(limit int, d *zstd.Decoder) {
	if p, ok := zstdDecoders.Load(limit); ok {
		p.(*sync.Pool).Put(d)
	}
}

// openDecompressor returns a reader of body's decompressed bytes. The
// caller must close it.
func openDecompressor(codec Codec, body []byte, limit int) (*decompressor, error) {
	d := decompressors.Get().(*decompressor)
	d.codec, d.closed = codec, false
	d.src.Reset(body)
	var err error
	switch codec {
	case CodecGzip:
		if d.gz == nil {
			d.gz, err = gzip.NewReader(&d.src)
		} else {
			err = d.gz.Reset(&d.src)
		}
		if err != nil {
			d.close()
			return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		d.r = d.gz
	case CodecLZ4:
		if d.lz == nil {
			d.lz = lz4.NewReader(&d.src)
		} else {
			d.lz.Reset(&d.src)
		}
		d.r = d.lz
	case CodecZstd:
		if d.zd, err = getZstd(limit); err != nil {
			d.close()
			return nil, err
		}
		d.zdLimit = limit
		if err := d.zd.Reset(&d.src); err != nil {
			d.close()
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		d.r = d.zd
	case CodecSnappy:
		d.sn.reset(body, limit)
		d.r = &d.sn
	default:
		d.close()
		return nil, fmt.Errorf("%w: unknown compression codec %d", ErrCorrupt, codec)
	}
	return d, nil
}

func (d *decompressor) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = codecError(d.codec, err)
	}
	return n, err
}

// codecError classifies a decoder's error.
func codecError(codec Codec, err error) error {
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrDecompressTooLarge), errors.Is(err, ErrInvalidRecord):
		return err
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
		return fmt.Errorf("%w: zstd: %v", ErrDecompressTooLarge, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s: truncated", ErrCorrupt, codec)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, codec, err)
}

// close returns the decoders to the pool, dropping references to the body.
func (d *decompressor) close() {
	if d.closed {
		return
	}
	d.closed = true
	d.src.Reset(nil)
	if d.zd != nil {
		_ = d.zd.Reset(nil)
		putZstd(d.zdLimit, d.zd)
		d.zd = nil
	}
	d.sn.release()
	d.r = nil
	decompressors.Put(d)
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// isXerial reports whether a snappy body uses the xerial framing the Java
// client writes (magic, version, compatible version, then blocks of a
// big-endian length and a raw snappy block).
func isXerial(body []byte) bool { return len(body) >= 16 && bytes.HasPrefix(body, xerialMagic) }

// snappyReader decodes a raw snappy block, or xerial blocks one at a time,
// into a reused buffer.
type snappyReader struct {
	src    []byte // blocks not yet decoded
	xerial bool
	raw    bool // the raw block is still to decode
	out    []byte
	pos    int
	left   int // decompressed bytes still allowed
	err    error
}

func (s *snappyReader) reset(body []byte, limit int) {
	s.xerial = isXerial(body)
	s.src, s.raw = body, true
	if s.xerial {
		s.src, s.raw = body[16:], false
	}
	s.out, s.pos, s.left, s.err = s.out[:0], 0, limit, nil
}

// release keeps a small output buffer for the next body.
func (s *snappyReader) release() {
	s.src = nil
	if cap(s.out) > 1<<20 {
		s.out = nil
	}
}

func (s *snappyReader) Read(p []byte) (int, error) {
	for s.pos == len(s.out) {
		if s.err != nil {
			return 0, s.err
		}
		if err := s.next(); err != nil {
			// Nothing of a block that failed to decode is served.
			s.out, s.pos, s.err = s.out[:0], 0, err
		}
	}
	n := copy(p, s.out[s.pos:])
	s.pos += n
	return n, nil
}

// next decodes the next block into out; io.EOF after the last.
func (s *snappyReader) next() error {
	var block []byte
	switch {
	case s.raw:
		block, s.raw = s.src, false
		s.src = nil
	case s.xerial && len(s.src) > 0:
		if len(s.src) < 4 {
			return fmt.Errorf("%w: snappy: truncated xerial block", ErrCorrupt)
		}
		n := int(binary.BigEndian.Uint32(s.src))
		if n > len(s.src)-4 {
			return fmt.Errorf("%w: snappy: xerial block overruns input", ErrCorrupt)
		}
		block, s.src = s.src[4:4+n], s.src[4+n:]
	default:
		return io.EOF
	}
	l, err := s2.DecodedLen(block)
	if err != nil {
		return fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	if l > s.left {
		return fmt.Errorf("%w: snappy", ErrDecompressTooLarge)
	}
	s.left -= l
	if cap(s.out) < l {
		s.out = make([]byte, l)
	}
	s.out, s.pos = s.out[:l], 0
	if _, err := snappy.Decode(s.out, block); err != nil {
		return fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	return nil
}

// Decompress expands a batch body compressed with codec, refusing to
// produce more than max bytes (ErrDecompressTooLarge). Snappy accepts both
// raw blocks and the xerial framing the Java client writes. It allocates
// the output: callers bound max and take it from a Budget first.
func Decompress(codec Codec, src []byte, max int) ([]byte, error) {
	return decompressInto(nil, codec, src, max)
}

// decompressInto is Decompress writing into dst's array (from its start)
// while it fits.
func decompressInto(dst []byte, codec Codec, src []byte, max int) ([]byte, error) {
	if codec == CodecNone {
		return src, nil
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: no decompression budget", ErrDecompressTooLarge)
	}
	if _, err := decoderMemory(codec, src, max); err != nil {
		return nil, err
	}
	d, err := openDecompressor(codec, src, max)
	if err != nil {
		return nil, err
	}
	defer d.close()
	out := bytes.NewBuffer(dst[:0])
	if n, ok := decompressedSize(codec, src); ok && n <= max {
		out.Grow(n + bytes.MinRead) // ReadFrom wants MinRead spare at the end
	}
	n, err := out.ReadFrom(io.LimitReader(d, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(max) {
		return nil, ErrDecompressTooLarge
	}
	return out.Bytes(), nil
}

// decompressBufs are the buffers withRecords decompresses into, for the
// time of its callback; ones past maxPooledDecompress are dropped.
var decompressBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledDecompress = 4 << 20

var zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// Compress compresses a batch body with codec.
func Compress(codec Codec, src []byte) ([]byte, error) {
	switch codec {
	case CodecNone:
		return src, nil
	case CodecSnappy:
		return snappy.Encode(nil, src), nil
	case CodecZstd:
		return zstdEncoder.EncodeAll(src, nil), nil
	case CodecGzip:
		var out bytes.Buffer
		w := gzip.NewWriter(&out)
		if _, err := w.Write(src); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	case CodecLZ4:
		var out bytes.Buffer
		w := lz4.NewWriter(&out)
		if _, err := w.Write(src); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	return nil, fmt.Errorf("recordbatch: cannot compress with %s", codec)
}
