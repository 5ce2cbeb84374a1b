package recordbatch

import (
	"encoding/binary"
	"fmt"
)

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record of a batch. Slices point into the batch (or its
// decompressed body) and must be copied to outlive the callback that gave
// them. Key and Value are nil when null on the wire.
type Record struct {
	Attributes     int8
	TimestampDelta int64
	OffsetDelta    int32
	Key            []byte
	Value          []byte
	Headers        []Header

	// Offset and Timestamp are absolute, filled by Records.
	Offset    int64
	Timestamp int64
}

// parseRecord reads one record from the front of b. Every length is checked
// against the bytes left before it is used.
func parseRecord(b []byte) (Record, []byte, error) {
	var r Record
	length, n := binary.Varint(b)
	if n <= 0 || length < 0 || length > int64(len(b)-n) {
		return r, nil, fmt.Errorf("%w: bad record length", ErrInvalidRecord)
	}
	body, rest := b[n:n+int(length)], b[n+int(length):]
	d := decoder{b: body}
	r.Attributes = int8(d.byte())
	r.TimestampDelta = d.varlong()
	r.OffsetDelta = d.varint()
	r.Key = d.nullableBytes()
	r.Value = d.nullableBytes()
	nh := d.varint()
	if nh < 0 || int(nh) > len(d.b) { // each header takes at least two bytes
		return r, nil, fmt.Errorf("%w: bad header count %d", ErrInvalidRecord, nh)
	}
	if nh > 0 {
		r.Headers = make([]Header, 0, nh)
	}
	for i := int32(0); i < nh && !d.bad; i++ {
		k := d.nullableBytes()
		if k == nil {
			d.bad = true
			break
		}
		r.Headers = append(r.Headers, Header{Key: string(k), Value: d.nullableBytes()})
	}
	if d.bad || len(d.b) != 0 {
		return r, nil, fmt.Errorf("%w: record body does not match its length", ErrInvalidRecord)
	}
	return r, rest, nil
}

// decoder is a sticky-error reader: after the first short read every getter
// returns zero and bad stays set.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) varlong() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int32 {
	v := d.varlong()
	if v < -1<<31 || v > 1<<31-1 {
		d.bad, d.b = true, nil
		return 0
	}
	return int32(v)
}

func (d *decoder) nullableBytes() []byte {
	l := d.varint()
	if d.bad || l < -1 || int(l) > len(d.b) {
		d.bad, d.b = true, nil
		return nil
	}
	if l == -1 {
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}

// AppendRecord appends r in wire form (with its length prefix) to dst.
// Offset and Timestamp are ignored; OffsetDelta and TimestampDelta are used.
func AppendRecord(dst []byte, r Record) []byte {
	body := recordBodySize(r)
	dst = binary.AppendVarint(dst, int64(body))
	dst = append(dst, byte(r.Attributes))
	dst = binary.AppendVarint(dst, r.TimestampDelta)
	dst = binary.AppendVarint(dst, int64(r.OffsetDelta))
	dst = appendNullableBytes(dst, r.Key)
	dst = appendNullableBytes(dst, r.Value)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullableBytes(dst, h.Value)
	}
	return dst
}

func appendNullableBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

func varintSize(v int64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutVarint(buf[:], v)
}

func nullableSize(b []byte) int {
	if b == nil {
		return varintSize(-1)
	}
	return varintSize(int64(len(b))) + len(b)
}

func recordBodySize(r Record) int {
	n := 1 + varintSize(r.TimestampDelta) + varintSize(int64(r.OffsetDelta))
	n += nullableSize(r.Key) + nullableSize(r.Value)
	n += varintSize(int64(len(r.Headers)))
	for _, h := range r.Headers {
		n += varintSize(int64(len(h.Key))) + len(h.Key) + nullableSize(h.Value)
	}
	return n
}

// BuildOptions describes a batch to build.
type BuildOptions struct {
	BaseOffset           int64
	PartitionLeaderEpoch int32
	Codec                Codec
	LogAppendTime        bool
	Transactional        bool
	Control              bool
	ProducerID           int64 // NoProducerID for plain producers
	ProducerEpoch        int16
	BaseSequence         int32
	// BaseTimestamp is the first record's timestamp; each record's
	// TimestampDelta is relative to it.
	BaseTimestamp int64
}

// Build appends a batch holding records to dst. Record offset deltas are
// assigned 0..n-1 in order; their TimestampDelta fields are kept. It is used
// for the broker's own writes (internal topics, control batches) and tests;
// producer batches are never rebuilt.
func Build(dst []byte, opts BuildOptions, records []Record) ([]byte, error) {
	if len(records) == 0 {
		return dst, fmt.Errorf("%w: a batch needs at least one record", ErrInvalidRecord)
	}
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	maxTs := opts.BaseTimestamp
	var body []byte
	for i, r := range records {
		r.OffsetDelta = int32(i)
		body = AppendRecord(body, r)
		if ts := opts.BaseTimestamp + r.TimestampDelta; ts > maxTs {
			maxTs = ts
		}
	}
	if opts.Codec != CodecNone {
		var err error
		if body, err = Compress(opts.Codec, body); err != nil {
			return dst[:start], err
		}
	}
	dst = append(dst, body...)
	h := header{
		baseOffset:      opts.BaseOffset,
		leaderEpoch:     opts.PartitionLeaderEpoch,
		attributes:      uint16(opts.Codec) & CodecMask,
		lastOffsetDelta: int32(len(records) - 1),
		baseTimestamp:   opts.BaseTimestamp,
		maxTimestamp:    maxTs,
		producerID:      opts.ProducerID,
		producerEpoch:   opts.ProducerEpoch,
		baseSequence:    opts.BaseSequence,
		recordCount:     int32(len(records)),
	}
	if opts.LogAppendTime {
		h.attributes |= TimestampTypeBit
	}
	if opts.Transactional {
		h.attributes |= TransactionalBit
	}
	if opts.Control {
		h.attributes |= ControlBit
	}
	h.put(Batch(dst[start:]))
	return dst, nil
}

// header is what a batch header holds but its length, magic and CRC,
// which put derives.
type header struct {
	baseOffset      int64
	leaderEpoch     int32
	attributes      uint16
	lastOffsetDelta int32
	baseTimestamp   int64
	maxTimestamp    int64
	producerID      int64
	producerEpoch   int16
	baseSequence    int32
	recordCount     int32
}

// headerOf reads the header of b, which holds at least HeaderSize bytes.
func headerOf(b Batch) header {
	return header{
		baseOffset:      b.BaseOffset(),
		leaderEpoch:     b.PartitionLeaderEpoch(),
		attributes:      uint16(b.Attributes()),
		lastOffsetDelta: b.LastOffsetDelta(),
		baseTimestamp:   b.BaseTimestamp(),
		maxTimestamp:    b.MaxTimestamp(),
		producerID:      b.ProducerID(),
		producerEpoch:   b.ProducerEpoch(),
		baseSequence:    b.BaseSequence(),
		recordCount:     b.RecordCount(),
	}
}

// put writes h over the first HeaderSize bytes of b, the whole batch
// (header and records): the batch length is len(b), the magic 2, and the
// CRC is computed last, over the records too.
func (h header) put(b Batch) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(h.baseOffset))
	binary.BigEndian.PutUint32(b[offBatchLength:], uint32(len(b)-LengthOffset))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(h.leaderEpoch))
	b[offMagic] = 2
	binary.BigEndian.PutUint16(b[offAttributes:], h.attributes)
	binary.BigEndian.PutUint32(b[offLastOffsetDelta:], uint32(h.lastOffsetDelta))
	binary.BigEndian.PutUint64(b[offBaseTimestamp:], uint64(h.baseTimestamp))
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(h.maxTimestamp))
	binary.BigEndian.PutUint64(b[offProducerID:], uint64(h.producerID))
	binary.BigEndian.PutUint16(b[offProducerEpoch:], uint16(h.producerEpoch))
	binary.BigEndian.PutUint32(b[offBaseSequence:], uint32(h.baseSequence))
	binary.BigEndian.PutUint32(b[offRecordCount:], uint32(h.recordCount))
	b.updateCRC()
}
