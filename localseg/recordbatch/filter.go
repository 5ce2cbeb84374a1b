package recordbatch

import (
	"context"
	"encoding/binary"
	"fmt"
)

// FilterOptions says how Filter rewrites a batch.
type FilterOptions struct {
	ValidateOptions
	// Horizon, when positive, is the delete horizon (unix ms) to stamp on
	// a batch that keeps a tombstone (a record with a null value) and has
	// none yet: the rewritten batch carries DeleteHorizonBit and Horizon
	// as its base timestamp (KIP-534), its records' timestamp deltas
	// taken from it.
	Horizon int64
}

// Filter appends to dst the stored batch b (one Check accepts) with only
// the records keep accepts, as log compaction rewrites a batch. keep sees
// every record in order, read as Records reads it (Offset and Timestamp
// absolute, Key and Value nil when null; the slices valid only during the
// call), and under opts.ValidateOptions: a compressed body is decompressed
// under opts.MaxDecompressed, charged to opts.Budget until Filter returns
// (the kept records and their compressed copy are not charged: they are
// the caller's batch). RequireKeys is ignored: keep decides what becomes of a record without a
// key. dst (its spare capacity too) must not share memory with b.
//
// When keep accepts every record and no horizon is stamped, b is appended
// as it is. When it accepts none, dst is returned as it is and kept is 0:
// the caller decides whether the batch leaves an EmptyBatch behind. Else
// the new batch has b's header but for the record count (kept), the max
// timestamp and the length and CRC: the same base offset and last offset
// delta (the offset range of a batch never shrinks), producer fields,
// codec and attribute bits. Each kept record keeps its bytes, its offset
// delta included; the body is compressed again with b's codec. A
// CreateTime batch's max timestamp is its largest kept record's.
//
// The horizon is stamped when opts.Horizon > 0, b is not a control batch,
// has no delete horizon yet, and a kept record is a tombstone (null
// value): the batch, rebuilt even if every record is kept, gets
// DeleteHorizonBit and opts.Horizon as its base timestamp, and a CreateTime
// batch's records get timestamp deltas from it, so that each reads the
// timestamp it had (a LogAppendTime batch's records read its max
// timestamp, and keep their deltas).
//
// A malformed record is an error wrapping ErrInvalidRecord (ErrCorrupt or
// ErrDecompressTooLarge for a body that does not decompress, ctx's error
// when it ends while waiting for the budget); on error dst is returned as
// it is.
func Filter(ctx context.Context, dst []byte, b Batch, opts FilterOptions, keep func(*Record) bool) (out []byte, kept int32, err error) {
	err = withRecords(ctx, b, opts.ValidateOptions, func(records []byte) error {
		var ferr error
		out, kept, ferr = filter(dst, b, records, opts.Horizon, keep)
		return ferr
	})
	if err != nil {
		return dst, 0, err
	}
	return out, kept, nil
}

// filter is Filter on b's records, decompressed.
func filter(dst []byte, b Batch, records []byte, horizon int64, keep func(*Record) bool) ([]byte, int32, error) {
	codec, lat := b.Codec(), b.LogAppendTime()
	start := len(dst)
	// Until a record is dropped, the kept records are records[:prefix].
	// From the first drop they are copied to buf[at:]: after room for the
	// header in dst when the batch is uncompressed (the new batch built
	// in place), else apart, to be compressed.
	prefix, dropped := 0, false
	var buf []byte
	at := 0
	var n int32
	var maxTs int64
	tombstone := false
	err := eachRecord(b, records, func(rec *Record, wire []byte) error {
		ts, null := rec.Timestamp, rec.Value == nil // keep may change rec
		if !keep(rec) {
			if !dropped {
				dropped = true
				if codec == CodecNone {
					buf = append(dst, make([]byte, HeaderSize)...)
				}
				at = len(buf)
				buf = append(buf, records[:prefix]...)
			}
			return nil
		}
		if n == 0 || ts > maxTs {
			maxTs = ts
		}
		tombstone = tombstone || null
		n++
		if dropped {
			buf = append(buf, wire...)
		} else {
			prefix += len(wire)
		}
		return nil
	})
	if err != nil || n == 0 {
		return dst, 0, err
	}
	h := headerOf(b)
	stamp := horizon > 0 && tombstone && !b.Control() && h.attributes&DeleteHorizonBit == 0
	if !dropped && !stamp {
		return append(dst, b...), n, nil
	}
	body, inPlace := records[:prefix], false
	if dropped {
		body, inPlace = buf[at:], codec == CodecNone
	}
	if stamp {
		if !lat {
			// Each record's timestamp delta moves by the change of base
			// (wrapping as the reader's sum does), every other byte kept.
			var err error
			if body, err = rebase(nil, body, h.baseTimestamp-horizon); err != nil {
				return dst, 0, err
			}
			inPlace = false
		}
		h.attributes |= DeleteHorizonBit
		h.baseTimestamp = horizon
	}
	if codec != CodecNone {
		var err error
		if body, err = Compress(codec, body); err != nil {
			return dst, 0, err
		}
	}
	if len(body) > 1<<31-1-(HeaderSize-LengthOffset) {
		return dst, 0, fmt.Errorf("%w: %d bytes of records do not fit a batch", ErrInvalidRecord, len(body))
	}
	out := buf
	if !inPlace {
		out = append(append(dst, make([]byte, HeaderSize)...), body...)
	}
	h.recordCount = n
	if !lat {
		h.maxTimestamp = maxTs
	}
	h.put(Batch(out[start:]))
	return out, n, nil
}

// rebase appends records (whole, with their length prefixes, as a batch
// body holds them) to dst with shift added to each timestamp delta, every
// other byte as it was.
func rebase(dst, records []byte, shift int64) ([]byte, error) {
	for len(records) > 0 {
		l, n := binary.Varint(records)
		if n <= 0 || l < 1 || l > int64(len(records)-n) {
			return nil, fmt.Errorf("%w: bad record length", ErrInvalidRecord)
		}
		rec := records[n : n+int(l)]
		records = records[n+int(l):]
		td, m := binary.Varint(rec[1:]) // after the attributes
		if m <= 0 {
			return nil, fmt.Errorf("%w: bad timestamp delta", ErrInvalidRecord)
		}
		td += shift
		rest := rec[1+m:]
		dst = binary.AppendVarint(dst, int64(1+varintSize(td)+len(rest)))
		dst = append(dst, rec[0])
		dst = binary.AppendVarint(dst, td)
		dst = append(dst, rest...)
	}
	return dst, nil
}

// EmptyBatch appends to dst a batch of b's header without records: record
// count 0, no body, the codec bits cleared, and every other field b's
// (base offset, leader epoch, last offset delta, timestamps, producer id,
// epoch and base sequence, the other attribute bits), the length and CRC
// its own. Log compaction leaves one where it removed every record of a
// producer's last batch, so that the producer's sequence numbers survive.
// b must hold a whole header (as it does once Check accepted it); dst is
// returned as it is otherwise.
func EmptyBatch(dst []byte, b Batch) []byte {
	if len(b) < HeaderSize {
		return dst
	}
	h := headerOf(b)
	h.attributes &^= CodecMask
	h.recordCount = 0
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h.put(Batch(dst[start:]))
	return dst
}

// PlaceholderBatch appends to dst an empty batch that holds b's offsets
// and nothing else: b's base offset, leader epoch, last offset delta and
// timestamps, no records, no codec, and no producer (producer id, epoch
// and base sequence -1; neither transactional nor control), so that it
// changes no producer's state. Compaction of a remote log leaves one
// where it removed everything of a group of segments, which keeps the
// group's offsets accounted for. b must hold a whole header; dst is
// returned as it is otherwise.
func PlaceholderBatch(dst []byte, b Batch) []byte {
	if len(b) < HeaderSize {
		return dst
	}
	h := headerOf(b)
	h.attributes &^= CodecMask | TransactionalBit | ControlBit
	h.recordCount = 0
	h.producerID, h.producerEpoch, h.baseSequence = -1, -1, -1
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h.put(Batch(dst[start:]))
	return dst
}
