package recordbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sizes and field positions of the v2 batch header.
const (
	HeaderSize = 61 // bytes before the first record
	// LengthOffset is the end of the fields every batch magic shares
	// (baseOffset, batchLength): a reader needs this many bytes to know a
	// batch's size.
	LengthOffset = 12

	offBaseOffset      = 0
	offBatchLength     = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57
)

// Attribute bits.
const (
	CodecMask            = 0x07
	TimestampTypeBit     = 0x08
	TransactionalBit     = 0x10
	ControlBit           = 0x20
	DeleteHorizonBit     = 0x40
	NoProducerID         = -1
	NoProducerEpoch      = -1
	NoSequence           = -1
	NoPartitionLeaderEpo = -1
	// NoTimestamp is a record's timestamp when its producer set none.
	NoTimestamp = -1
)

// Codec is the compression codec in the low attribute bits.
type Codec int8

// The codecs Kafka defines.
const (
	CodecNone   Codec = 0
	CodecGzip   Codec = 1
	CodecSnappy Codec = 2
	CodecLZ4    Codec = 3
	CodecZstd   Codec = 4
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecGzip:
		return "gzip"
	case CodecSnappy:
		return "snappy"
	case CodecLZ4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", int8(c))
}

// Errors returned by validation. The broker maps ErrCorrupt to
// CORRUPT_MESSAGE and ErrInvalidRecord to INVALID_RECORD.
var (
	// ErrCorrupt means the bytes are not a well-formed batch: short,
	// wrong magic, bad CRC, or a length that does not add up.
	ErrCorrupt = errors.New("recordbatch: corrupt batch")
	// ErrInvalidRecord means the batch is well formed but its records
	// break a rule (offset deltas out of order, count mismatch).
	ErrInvalidRecord = errors.New("recordbatch: invalid record")
	// ErrDecompressTooLarge means a compressed batch expands beyond the cap.
	ErrDecompressTooLarge = errors.New("recordbatch: decompressed batch exceeds limit")
	// ErrNoKey means a record has a null key where keys are required
	// (ValidateOptions.RequireKeys). It wraps ErrInvalidRecord.
	ErrNoKey = fmt.Errorf("%w: a compacted topic cannot accept a record without a key", ErrInvalidRecord)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch is one v2 record batch as bytes. Accessors read the header in place;
// setters patch the fields that sit outside the CRC. A Batch is only valid
// for reading after Validate or Check has accepted it (or after Next returned
// it, which checks the header size).
type Batch []byte

func (b Batch) BaseOffset() int64  { return int64(binary.BigEndian.Uint64(b[offBaseOffset:])) }
func (b Batch) BatchLength() int32 { return int32(binary.BigEndian.Uint32(b[offBatchLength:])) }
func (b Batch) PartitionLeaderEpoch() int32 {
	return int32(binary.BigEndian.Uint32(b[offLeaderEpoch:]))
}
func (b Batch) Magic() int8            { return int8(b[offMagic]) }
func (b Batch) CRC() uint32            { return binary.BigEndian.Uint32(b[offCRC:]) }
func (b Batch) Attributes() int16      { return int16(binary.BigEndian.Uint16(b[offAttributes:])) }
func (b Batch) LastOffsetDelta() int32 { return int32(binary.BigEndian.Uint32(b[offLastOffsetDelta:])) }
func (b Batch) BaseTimestamp() int64   { return int64(binary.BigEndian.Uint64(b[offBaseTimestamp:])) }
func (b Batch) MaxTimestamp() int64    { return int64(binary.BigEndian.Uint64(b[offMaxTimestamp:])) }
func (b Batch) ProducerID() int64      { return int64(binary.BigEndian.Uint64(b[offProducerID:])) }
func (b Batch) ProducerEpoch() int16   { return int16(binary.BigEndian.Uint16(b[offProducerEpoch:])) }
func (b Batch) BaseSequence() int32    { return int32(binary.BigEndian.Uint32(b[offBaseSequence:])) }
func (b Batch) RecordCount() int32     { return int32(binary.BigEndian.Uint32(b[offRecordCount:])) }

// LastOffset is the offset of the batch's last record.
func (b Batch) LastOffset() int64 { return b.BaseOffset() + int64(b.LastOffsetDelta()) }

// NextOffset is the offset after the batch's last record.
func (b Batch) NextOffset() int64 { return b.LastOffset() + 1 }

// Codec is the batch's compression codec.
func (b Batch) Codec() Codec { return Codec(b.Attributes() & CodecMask) }

// LogAppendTime reports whether the batch's timestamps are the broker's.
func (b Batch) LogAppendTime() bool { return b.Attributes()&TimestampTypeBit != 0 }

// Transactional reports whether the batch belongs to a transaction.
func (b Batch) Transactional() bool { return b.Attributes()&TransactionalBit != 0 }

// Control reports whether the batch is a control batch (commit/abort markers).
func (b Batch) Control() bool { return b.Attributes()&ControlBit != 0 }

// DeleteHorizon is the time (unix ms) from which log compaction may drop
// the batch's tombstones and transaction markers: its base timestamp, when
// DeleteHorizonBit is set (KIP-534). Without the bit it returns 0, false.
func (b Batch) DeleteHorizon() (int64, bool) {
	if b.Attributes()&DeleteHorizonBit == 0 {
		return 0, false
	}
	return b.BaseTimestamp(), true
}

// HasProducerID reports whether the batch was written by an idempotent or
// transactional producer.
func (b Batch) HasProducerID() bool { return b.ProducerID() >= 0 }

// LastSequence is the sequence number of the batch's last record, wrapping
// at MaxInt32 as Kafka's producers do.
func (b Batch) LastSequence() int32 {
	seq := b.BaseSequence()
	if seq == NoSequence {
		return NoSequence
	}
	return IncrementSequence(seq, b.LastOffsetDelta())
}

// IncrementSequence adds n to a sequence number, wrapping to 0 past MaxInt32.
func IncrementSequence(seq, n int32) int32 {
	if seq > int32(^uint32(0)>>1)-n {
		return n - (int32(^uint32(0)>>1) - seq) - 1
	}
	return seq + n
}

// SetBaseOffset patches the base offset (outside the CRC).
func (b Batch) SetBaseOffset(off int64) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(off))
}

// SetPartitionLeaderEpoch patches the leader epoch (outside the CRC).
func (b Batch) SetPartitionLeaderEpoch(epoch int32) {
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(epoch))
}

// SetLogAppendTime turns the batch's timestamps into the broker's: it sets
// the timestamp-type bit and the max timestamp, and recomputes the CRC. The
// records stay as they are (Kafka's consumers read every record's timestamp
// as maxTimestamp when the bit is set).
func (b Batch) SetLogAppendTime(now int64) {
	attrs := uint16(b.Attributes()) | TimestampTypeBit
	binary.BigEndian.PutUint16(b[offAttributes:], attrs)
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(now))
	b.updateCRC()
}

// SetMaxTimestamp sets a CreateTime batch's max timestamp (to what its
// records hold, as Kafka's broker does when the producer's header
// disagrees) and recomputes the CRC.
func (b Batch) SetMaxTimestamp(ts int64) {
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(ts))
	b.updateCRC()
}

func (b Batch) updateCRC() {
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
}

// Size returns the total size of the batch at the start of buf, as its
// length field claims, or an error if buf is too short to hold the field or
// the claim is impossible. It does not require the whole batch to be present.
func Size(buf []byte) (int, error) {
	if len(buf) < LengthOffset {
		return 0, fmt.Errorf("%w: %d bytes cannot hold a batch length", ErrCorrupt, len(buf))
	}
	n := int64(int32(binary.BigEndian.Uint32(buf[offBatchLength:])))
	if n < HeaderSize-LengthOffset {
		return 0, fmt.Errorf("%w: batch length %d below the header size", ErrCorrupt, n)
	}
	return int(n) + LengthOffset, nil
}

// Next splits the first batch off buf. It checks that the whole batch is
// present and that its header is v2, but not the CRC: call Check for that.
// At the end of buf it returns nil, nil, nil.
func Next(buf []byte) (Batch, []byte, error) {
	if len(buf) == 0 {
		return nil, nil, nil
	}
	n, err := Size(buf)
	if err != nil {
		return nil, nil, err
	}
	if n > len(buf) {
		return nil, nil, fmt.Errorf("%w: batch of %d bytes truncated to %d", ErrCorrupt, n, len(buf))
	}
	b := Batch(buf[:n:n])
	if m := b.Magic(); m != 2 {
		return nil, nil, fmt.Errorf("%w: magic %d, only v2 is supported", ErrCorrupt, m)
	}
	return b, buf[n:], nil
}

// WholePrefix returns the whole batches at the start of buf, dropping
// what follows the first batch that is cut short or unreadable (a fetch
// answer or a read may end mid-batch).
func WholePrefix(buf []byte) []byte {
	n := 0
	for rest := buf; len(rest) > 0; {
		batch, next, err := Next(rest)
		if err != nil || batch == nil {
			break
		}
		n += len(batch)
		rest = next
	}
	return buf[:n]
}

// Check verifies the parts of a batch that a log needs to trust it: the
// size matches len(b), magic 2, the CRC, and header fields that must agree
// with each other. It does not look at the records; Validate does.
func Check(b Batch) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("%w: %d bytes is shorter than a batch header", ErrCorrupt, len(b))
	}
	if n, err := Size(b); err != nil {
		return err
	} else if n != len(b) {
		return fmt.Errorf("%w: batch length says %d bytes, have %d", ErrCorrupt, n, len(b))
	}
	if m := b.Magic(); m != 2 {
		return fmt.Errorf("%w: magic %d, only v2 is supported", ErrCorrupt, m)
	}
	if got, want := crc32.Checksum(b[offAttributes:], castagnoli), b.CRC(); got != want {
		return fmt.Errorf("%w: crc %08x, header says %08x", ErrCorrupt, got, want)
	}
	count, delta := b.RecordCount(), b.LastOffsetDelta()
	if count < 0 || delta < 0 {
		return fmt.Errorf("%w: record count %d, last offset delta %d", ErrInvalidRecord, count, delta)
	}
	// Compacted batches may have fewer records than offsets, never more;
	// an empty batch (all records compacted away) keeps its offset range.
	if count > delta+1 {
		return fmt.Errorf("%w: %d records in %d offsets", ErrInvalidRecord, count, delta+1)
	}
	if c := b.Codec(); c > CodecZstd {
		return fmt.Errorf("%w: unknown compression codec %d", ErrCorrupt, c)
	}
	return nil
}
