package recordbatch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Decompress expands a batch body compressed with codec, refusing to
// produce more than max bytes (ErrDecompressTooLarge). Snappy accepts both
// raw blocks and the xerial framing the Java client writes.
func Decompress(codec Codec, src []byte, max int) ([]byte, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: no decompression budget", ErrDecompressTooLarge)
	}
	var r io.Reader
	switch codec {
	case CodecNone:
		return src, nil
	case CodecSnappy:
		return decompressSnappy(src, max)
	case CodecZstd:
		return decompressZstd(src, max)
	case CodecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		r = zr
	case CodecLZ4:
		r = lz4.NewReader(bytes.NewReader(src))
	default:
		return nil, fmt.Errorf("%w: unknown compression codec %d", ErrCorrupt, codec)
	}
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, codec, err)
	}
	if n > int64(max) {
		return nil, ErrDecompressTooLarge
	}
	return out.Bytes(), nil
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func decompressSnappy(src []byte, max int) ([]byte, error) {
	if len(src) >= 16 && bytes.HasPrefix(src, xerialMagic) {
		// Header: magic, version, compatible version; then blocks of a
		// big-endian length and a raw snappy block.
		var out []byte
		for b := src[16:]; len(b) > 0; {
			if len(b) < 4 {
				return nil, fmt.Errorf("%w: snappy: truncated xerial block", ErrCorrupt)
			}
			n := int(binary.BigEndian.Uint32(b))
			if n > len(b)-4 || n < 0 {
				return nil, fmt.Errorf("%w: snappy: xerial block overruns input", ErrCorrupt)
			}
			block := b[4 : 4+n]
			b = b[4+n:]
			l, err := s2.DecodedLen(block)
			if err != nil {
				return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
			}
			if len(out)+l > max {
				return nil, ErrDecompressTooLarge
			}
			if out, err = appendSnappy(out, block, l); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	l, err := s2.DecodedLen(src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	if l > max {
		return nil, ErrDecompressTooLarge
	}
	return appendSnappy(nil, src, l)
}

func appendSnappy(dst, block []byte, l int) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, l)...)
	if _, err := snappy.Decode(dst[start:], block); err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	return dst, nil
}

// zstd decoders are expensive to build; they are pooled per size cap
// because WithDecoderMaxMemory is fixed at construction.
var zstdDecoders sync.Map // max int -> *sync.Pool

func decompressZstd(src []byte, max int) ([]byte, error) {
	p, _ := zstdDecoders.LoadOrStore(max, &sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(max)))
		return d
	}})
	pool := p.(*sync.Pool)
	d := pool.Get().(*zstd.Decoder)
	defer pool.Put(d)
	out, err := d.DecodeAll(src, nil)
	if err != nil {
		if err == zstd.ErrDecoderSizeExceeded || err == zstd.ErrWindowSizeExceeded {
			return nil, ErrDecompressTooLarge
		}
		return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	if len(out) > max {
		return nil, ErrDecompressTooLarge
	}
	return out, nil
}

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
