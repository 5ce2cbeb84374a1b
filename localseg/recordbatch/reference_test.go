package recordbatch

// The implementation the streaming walk replaced: batches decompressed
// whole, records built one by one. Kept here only so that the fuzz targets
// can hold the new walk to it: both must accept and refuse the same bytes.

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

// referenceValidateProduce is ValidateProduce as it was, with compressed
// records inspected under max.
func referenceValidateProduce(b Batch, max int) error {
	if err := Check(b); err != nil {
		return err
	}
	count := b.RecordCount()
	if count == 0 {
		return fmt.Errorf("%w: batch holds no records", ErrInvalidRecord)
	}
	if count != b.LastOffsetDelta()+1 {
		return fmt.Errorf("%w: %d records but last offset delta %d", ErrInvalidRecord, count, b.LastOffsetDelta())
	}
	if b.Control() && !b.Transactional() {
		return fmt.Errorf("%w: control batch outside a transaction", ErrInvalidRecord)
	}
	return referenceWalkRecords(b, max, true, nil)
}

func referenceWalkRecords(b Batch, maxDecompressed int, dense bool, fn func(Record) error) error {
	body := []byte(b[HeaderSize:])
	if c := b.Codec(); c != CodecNone {
		var err error
		if body, err = referenceDecompress(c, body, maxDecompressed); err != nil {
			return err
		}
	}
	count := int(b.RecordCount())
	base, baseTs := b.BaseOffset(), b.BaseTimestamp()
	lastDelta := int32(-1)
	for i := 0; i < count; i++ {
		rec, rest, err := parseRecord(body)
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		body = rest
		if rec.OffsetDelta <= lastDelta || rec.OffsetDelta > b.LastOffsetDelta() || (dense && rec.OffsetDelta != int32(i)) {
			return fmt.Errorf("%w: record %d has offset delta %d", ErrInvalidRecord, i, rec.OffsetDelta)
		}
		lastDelta = rec.OffsetDelta
		if fn != nil {
			rec.Offset = base + int64(rec.OffsetDelta)
			rec.Timestamp = baseTs + rec.TimestampDelta
			if b.LogAppendTime() {
				rec.Timestamp = b.MaxTimestamp()
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	if len(body) != 0 {
		return fmt.Errorf("%w: %d bytes after the last record", ErrInvalidRecord, len(body))
	}
	return nil
}

// referenceDecompress expands a batch body compressed with codec, refusing to
// produce more than max bytes (ErrDecompressTooLarge). Snappy accepts both
// raw blocks and the xerial framing the Java client writes.
func referenceDecompress(codec Codec, src []byte, max int) ([]byte, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: no decompression budget", ErrDecompressTooLarge)
	}
	var r io.Reader
	switch codec {
	case CodecNone:
		return src, nil
	case CodecSnappy:
		return refDecompressSnappy(src, max)
	case CodecZstd:
		return refDecompressZstd(src, max)
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

func refDecompressSnappy(src []byte, max int) ([]byte, error) {
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
			if out, err = refAppendSnappy(out, block, l); err != nil {
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
	return refAppendSnappy(nil, src, l)
}

func refAppendSnappy(dst, block []byte, l int) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, l)...)
	if _, err := snappy.Decode(dst[start:], block); err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	return dst, nil
}

// zstd decoders are expensive to build; they are pooled per size cap
// because WithDecoderMaxMemory is fixed at construction.
var refZstdDecoders sync.Map // max int -> *sync.Pool

func refDecompressZstd(src []byte, max int) ([]byte, error) {
	p, _ := refZstdDecoders.LoadOrStore(max, &sync.Pool{New: func() any {
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
