package recordbatch

import (
	"context"
	"fmt"
	"io"
)

// ValidateOptions bounds how much a look inside a batch may cost.
type ValidateOptions struct {
	// MaxDecompressed caps the size a compressed batch may expand to;
	// zero means MinMaxDecompressed. See MaxDecompressedFor.
	MaxDecompressed int
	// Budget is charged with the memory the decoders may use while the
	// walk runs; nil means no shared bound.
	Budget *Budget
	// RequireKeys makes ValidateProduce refuse a record with a null key
	// (ErrNoKey; an empty key is a key): a compacted topic keeps the last
	// record of each key, and a record without one would only be dropped
	// by the next cleaning. The readers of stored batches (WalkRecords,
	// Records, Filter) ignore it: a log may hold records older than the
	// rule.
	RequireKeys bool
}

func (o ValidateOptions) limit() int {
	if o.MaxDecompressed <= 0 {
		return MinMaxDecompressed
	}
	return o.MaxDecompressed
}

// ValidateProduce checks a batch a producer sent: everything Check does,
// plus what a producer's batch must satisfy (a non-empty batch with offsets
// numbered from 0 and dense, as many records as offsets, no control batch
// outside a transaction) and then each record, compressed or not: well
// formed, numbered in order, as many as the header claims and nothing after
// them. Compressed records are decompressed as a stream through a small
// window, never whole, and refused past opts.MaxDecompressed. It allocates
// nothing for an uncompressed batch. With opts.RequireKeys a record with
// a null key is refused (ErrNoKey). The summary carries the records'
// timestamps, which the header's may not match.
func ValidateProduce(ctx context.Context, b Batch, opts ValidateOptions) (Summary, error) {
	if err := Check(b); err != nil {
		return Summary{}, err
	}
	count := b.RecordCount()
	if count == 0 {
		return Summary{}, fmt.Errorf("%w: batch holds no records", ErrInvalidRecord)
	}
	if count != b.LastOffsetDelta()+1 {
		return Summary{}, fmt.Errorf("%w: %d records but last offset delta %d", ErrInvalidRecord, count, b.LastOffsetDelta())
	}
	if b.Control() && !b.Transactional() {
		return Summary{}, fmt.Errorf("%w: control batch outside a transaction", ErrInvalidRecord)
	}
	spec := specFor(b, true)
	spec.requireKeys = opts.RequireKeys
	return walkBatch(ctx, b, opts, spec, nil)
}

// WalkRecords calls fn with the absolute offset and timestamp of each
// record of a stored batch (a LogAppendTime batch's records all carry its
// max timestamp) until fn returns false, decompressing as a stream under
// opts. It checks the batch (Check) and its records as ValidateProduce
// does, except that offsets may have gaps (compaction).
func WalkRecords(ctx context.Context, b Batch, opts ValidateOptions, fn func(offset, timestamp int64) bool) error {
	if err := Check(b); err != nil {
		return err
	}
	_, err := walkBatch(ctx, b, opts, specFor(b, false), recordVisitor(b, fn))
	if err == errStopped {
		err = nil
	}
	return err
}

// WalkUncompressedRecords is WalkRecords for an uncompressed batch read
// from body (the bytes after its header, as from a file) through a small
// window instead of from memory. hdr holds at least the header. The CRC is
// not checked (that needs the bytes twice).
func WalkUncompressedRecords(hdr Batch, body io.Reader, fn func(offset, timestamp int64) bool) error {
	if len(hdr) < HeaderSize {
		return fmt.Errorf("%w: %d bytes is shorter than a batch header", ErrCorrupt, len(hdr))
	}
	if c := hdr.Codec(); c != CodecNone {
		return fmt.Errorf("recordbatch: %s batch walked as uncompressed", c)
	}
	size, err := Size(hdr)
	if err != nil {
		return err
	}
	w := newStreamWalker(io.LimitReader(body, int64(size-HeaderSize)), int64(size-HeaderSize))
	defer w.release()
	_, err = w.walk(specFor(hdr, false), recordVisitor(hdr, fn))
	if err == errStopped {
		err = nil
	}
	return err
}

func recordVisitor(b Batch, fn func(offset, timestamp int64) bool) recordFn {
	base, baseTs, maxTs, lat := b.BaseOffset(), b.BaseTimestamp(), b.MaxTimestamp(), b.LogAppendTime()
	return func(od int32, td int64) bool {
		ts := baseTs + td
		if lat {
			ts = maxTs
		}
		return fn(base+int64(od), ts)
	}
}

func specFor(b Batch, dense bool) walkSpec {
	return walkSpec{count: b.RecordCount(), lastOffsetDelta: b.LastOffsetDelta(), baseTimestamp: b.BaseTimestamp(), dense: dense}
}

// WalkMemory is what walking b's records takes from a Budget beyond the
// batch itself: decoder state and a window for a compressed batch, nothing
// for an uncompressed one. It refuses a snappy body that declares a block
// larger than the limit.
func WalkMemory(b Batch, opts ValidateOptions) (int64, error) {
	codec := b.Codec()
	if codec == CodecNone {
		return 0, nil
	}
	need, err := decoderMemory(codec, b[HeaderSize:], opts.limit())
	return need + walkWindow, err
}

// walkBatch walks the records of a checked in-memory batch.
func walkBatch(ctx context.Context, b Batch, opts ValidateOptions, spec walkSpec, fn recordFn) (Summary, error) {
	body := []byte(b[HeaderSize:])
	codec := b.Codec()
	if codec == CodecNone {
		w := newWalker(body)
		return w.walk(spec, fn)
	}
	limit := opts.limit()
	need, err := WalkMemory(b, opts)
	if err != nil {
		return Summary{}, err
	}
	if err := opts.Budget.Acquire(ctx, need); err != nil {
		return Summary{}, err
	}
	defer opts.Budget.Release(need)
	d, err := openDecompressor(codec, body, limit)
	if err != nil {
		return Summary{}, err
	}
	defer d.close()
	w := newStreamWalker(d, int64(limit))
	defer w.release()
	return w.walk(spec, fn)
}

// Records calls fn for each record of the batch, built whole (for readers
// that need keys and values, such as the group coordinator's load). A
// compressed batch is decompressed into one buffer of at most
// opts.MaxDecompressed bytes, taken from opts.Budget first. Record slices
// point into the batch or that buffer and are valid only during fn.
func Records(ctx context.Context, b Batch, opts ValidateOptions, fn func(Record) error) error {
	return withRecords(ctx, b, opts, func(body []byte) error {
		return eachRecord(b, body, func(rec *Record, _ []byte) error { return fn(*rec) })
	})
}

// withRecords checks b and calls fn with its records' bytes: the body
// itself, or the body decompressed into one buffer of at most
// opts.MaxDecompressed bytes, which is charged to opts.Budget (with the
// decoder) until fn returns.
func withRecords(ctx context.Context, b Batch, opts ValidateOptions, fn func(records []byte) error) error {
	if err := Check(b); err != nil {
		return err
	}
	body := []byte(b[HeaderSize:])
	if c := b.Codec(); c != CodecNone {
		limit := opts.limit()
		need, err := decoderMemory(c, body, limit)
		if err != nil {
			return err
		}
		need += int64(limit)
		if err := opts.Budget.Acquire(ctx, need); err != nil {
			return err
		}
		defer opts.Budget.Release(need)
		buf := decompressBufs.Get().(*[]byte)
		if body, err = decompressInto(*buf, c, body, limit); err != nil {
			decompressBufs.Put(buf)
			return err
		}
		defer func() {
			if cap(body) <= maxPooledDecompress {
				*buf = body[:0]
			}
			decompressBufs.Put(buf)
		}()
	}
	return fn(body)
}

// eachRecord parses the records of a checked batch b from records (its
// body, decompressed) and calls fn with each, its Offset and Timestamp
// filled, and its bytes (length prefix included). It refuses offset deltas
// out of order or past the batch's last, a count short of the header's,
// and bytes after the last record.
func eachRecord(b Batch, records []byte, fn func(rec *Record, wire []byte) error) error {
	count := int(b.RecordCount())
	base, baseTs, lastOffsetDelta := b.BaseOffset(), b.BaseTimestamp(), b.LastOffsetDelta()
	lat, maxTs := b.LogAppendTime(), b.MaxTimestamp()
	lastDelta := int32(-1)
	for i := 0; i < count; i++ {
		rec, rest, err := parseRecord(records)
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		wire := records[:len(records)-len(rest)]
		records = rest
		if rec.OffsetDelta <= lastDelta || rec.OffsetDelta > lastOffsetDelta {
			return fmt.Errorf("%w: record %d has offset delta %d", ErrInvalidRecord, i, rec.OffsetDelta)
		}
		lastDelta = rec.OffsetDelta
		rec.Offset = base + int64(rec.OffsetDelta)
		rec.Timestamp = baseTs + rec.TimestampDelta
		if lat {
			rec.Timestamp = maxTs
		}
		if err := fn(&rec, wire); err != nil {
			return err
		}
	}
	if len(records) != 0 {
		return fmt.Errorf("%w: %d bytes after the last record", ErrInvalidRecord, len(records))
	}
	return nil
}
