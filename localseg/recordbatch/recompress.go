package recordbatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Recompression is how a broker applies a topic's compression.type: a
// producer's batch whose codec differs from the topic's is rewritten with
// the topic's codec, at the level of compression.<codec>.level (KIP-390).
// A v2 batch's payload is its records concatenated, so the payload is
// decompressed as a stream and compressed again; no record is parsed.

// LevelRange returns the bounds and the default of a topic's
// compression.<codec>.level, as Kafka's (KIP-390): gzip 1..9, default 6
// (Kafka's default is -1, the library's default, which is 6); lz4 1..17,
// default 9; zstd -131072..22, default 3. ok is false for a codec without
// levels (none, snappy).
func LevelRange(c Codec) (min, max, def int, ok bool) {
	switch c {
	case CodecGzip:
		return gzip.BestSpeed, gzip.BestCompression, 6, true
	case CodecLZ4:
		return 1, 17, 9, true
	case CodecZstd:
		return -131072, 22, 3, true
	}
	return 0, 0, 0, false
}

// Recompress returns a copy of b whose records are compressed with codec to
// (CodecNone: stored uncompressed) at level (see LevelRange), every header
// field kept as it was except the codec bits of the attributes, the batch
// length and the CRC. Level 0 is the codec's default, and so is gzip's -1
// (Kafka's own default); a codec without levels takes only 0. b is a
// producer's batch that ValidateProduce has accepted under opts: Recompress
// checks its header and CRC (Check) but not its records, which it carries
// over as they are, byte for byte once decompressed.
//
// The payload is decompressed as a stream, as ValidateProduce does, and
// more than opts.MaxDecompressed bytes of records is ErrDecompressTooLarge,
// as is an uncompressed payload larger than that (its compressed copy could
// not be read under the same bound). A payload the decoders refuse is
// ErrCorrupt.
//
// With opts.Budget, Recompress first takes the decoder's and the encoder's
// working memory and a first size of the output, waiting for them (until
// ctx ends); the output then grows only once the budget has granted its new
// size. Holding bytes while waiting for more could deadlock two
// recompressions, so when a buffer cannot grow at once Recompress gives
// back everything it holds, waits for the whole amount and starts again
// with the larger buffer. The working memory is given back before
// returning; the returned batch's memory stays charged: charged is how many
// bytes of opts.Budget out holds (its capacity), for the caller to Release
// once done with out. On error nothing stays charged and charged is 0; a
// nil Budget charges nothing.
//
// Encoders are pooled per codec and level. gzip is klauspost/compress's;
// snappy is one raw block (s2.EncodeSnappy), as franz-go and librdkafka
// write it and every client reads it; lz4 is a standard frame of 64 KiB
// independent blocks (what Kafka's Java producer writes) with a content
// checksum, from pierrec/lz4; zstd is klauspost/compress's, with a window of
// at most 1 MiB, so that any consumer's decoder accepts it.
func Recompress(ctx context.Context, b Batch, to Codec, level int, opts ValidateOptions) (out Batch, charged int64, err error) {
	if err := Check(b); err != nil {
		return nil, 0, err
	}
	limit := min(opts.limit(), maxRecompressed)
	enc, err := newEncoding(to, level, limit)
	if err != nil {
		return nil, 0, err
	}
	from, body := b.Codec(), []byte(b[HeaderSize:])
	if from == CodecNone && len(body) > limit {
		return nil, 0, fmt.Errorf("%w: %d bytes of records, the limit is %d", ErrDecompressTooLarge, len(body), limit)
	}
	decoder, err := decoderMemory(from, body, limit)
	if err != nil {
		return nil, 0, err
	}
	r := recompression{ctx: ctx, b: b, from: from, enc: enc, limit: limit}
	work := decoder + enc.memory()
	if r.pumps() {
		work += walkWindow
	}
	p := r.firstPlan()
	for {
		need := work + int64(p.out) + int64(p.raw)
		if err := opts.Budget.Acquire(ctx, need); err != nil {
			return nil, 0, err
		}
		a := attempt{budget: opts.Budget, held: need, out: make([]byte, 0, p.out)}
		if p.raw > 0 {
			a.raw = make([]byte, 0, p.raw)
		}
		err := r.run(&a)
		if err == nil {
			out, charged := a.finish()
			return out, charged, nil
		}
		opts.Budget.Release(a.held)
		if a.more == nil {
			return nil, 0, err
		}
		// A buffer could not grow without waiting: start again once the
		// budget grants the buffers at the sizes they reached and the
		// one at the size it needs.
		p.out, p.raw = max(p.out, cap(a.out)), max(p.raw, cap(a.raw))
		if a.more.raw {
			p.raw = a.more.size
		} else {
			p.out = a.more.size
		}
	}
}

// maxRecompressed caps the records Recompress takes, whatever
// opts.MaxDecompressed says: twice MaxMaxDecompressed, small enough that
// no buffer size it computes overflows an int and that the new batch's
// length fits its int32 field.
const maxRecompressed = 2 * MaxMaxDecompressed

// Working memory of the encoders: their live heap after compressing a
// 4 MiB stream (klauspost/compress v1.20, pierrec/lz4 v4.1), rounded up.
// Recompress takes it from the Budget while an encoder runs; pooled
// encoders keep it between runs.
const (
	// gzipEncoderMemory covers deflate's window, hash chains and tokens
	// (level 9 holds 1.4 MiB, level 1 0.8 MiB).
	gzipEncoderMemory = 1536 << 10
	// lz4EncoderMemory covers a 64 KiB block, its compressed copy and the
	// HC match tables.
	lz4EncoderMemory = 512 << 10
	// snappyEncoderMemory covers the hash table (on the encoder's stack);
	// the records, encoded as one block, are held whole besides.
	snappyEncoderMemory = 64 << 10
)

// zstdEncoderMemory is a zstd encoder's working memory per klauspost
// level, with a 1 MiB window: history, block buffers and match tables
// (the best level's tables make most of its 37 MiB).
var zstdEncoderMemory = [...]int64{
	zstd.SpeedFastest:           3584 << 10,
	zstd.SpeedDefault:           4608 << 10,
	zstd.SpeedBetterCompression: 7680 << 10,
	zstd.SpeedBestCompression:   40 << 20,
}

// zstdMaxEncoderWindow is the largest window of the zstd frames Recompress
// writes: the history a consumer's decoder must keep. Frames of batches
// under 1 MiB declare a smaller one.
const (
	zstdMaxEncoderWindowLog = 20
	zstdMaxEncoderWindow    = 1 << zstdMaxEncoderWindowLog
	zstdMinWindowLog        = 10 // zstd.MinWindowSize is 1 KiB
)

// encoding is a codec at a resolved level: which pooled encoder compresses.
type encoding struct {
	codec      Codec
	gzipLevel  int               // 1..9
	lz4Index   int               // 0: lz4.Fast; n: lz4.Level<n>
	zstdLevel  zstd.EncoderLevel // SpeedFastest..SpeedBestCompression
	zstdWindow int               // a power of two, 1 KiB..zstdMaxEncoderWindow
}

// newEncoding resolves level for codec. Kafka's lz4 levels are LZ4HC's,
// except its default (9), which it compresses with lz4's fast compressor;
// pierrec/lz4 has the fast compressor and HC searches of 2^8 to 2^16
// candidates (Level1..Level9). So 9 is lz4.Fast, 1..8 are lz4.Level1 (256
// candidates, LZ4HC's own level 9: the fewest pierrec/lz4 offers) and
// 10..17 step from lz4.Level2 to lz4.Level9. Kafka's zstd levels map onto
// klauspost's four with zstd.EncoderLevelFromZstd: below 3 (negative levels
// too) the fastest, 3..5 the default, 6..9 better, 10 and up the best.
//
// The zstd window is 1 MiB, or the largest power of two within limit when
// limit is smaller: this package's decoders refuse a window larger than
// their limit, so a reader under the same limit accepts the frames.
func newEncoding(c Codec, level, limit int) (encoding, error) {
	e := encoding{codec: c}
	lo, hi, def, ok := LevelRange(c)
	switch {
	case c > CodecZstd || c < CodecNone:
		return e, fmt.Errorf("recordbatch: cannot compress with %s", c)
	case !ok && level != 0:
		return e, fmt.Errorf("recordbatch: %s takes no compression level, got %d", c, level)
	case level == 0 || (c == CodecGzip && level == -1):
		level = def
	case level < lo || level > hi:
		return e, fmt.Errorf("recordbatch: %s compression level %d outside %d..%d", c, level, lo, hi)
	}
	switch c {
	case CodecGzip:
		e.gzipLevel = level
	case CodecLZ4:
		switch {
		case level == 9:
			e.lz4Index = 0
		case level < 9:
			e.lz4Index = 1
		default:
			e.lz4Index = level - 8
		}
	case CodecZstd:
		e.zstdLevel = zstd.EncoderLevelFromZstd(level)
		e.zstdWindow = zstdMaxEncoderWindow
		for e.zstdWindow > 1<<zstdMinWindowLog && e.zstdWindow > limit {
			e.zstdWindow >>= 1
		}
	}
	return e, nil
}

// memory is what the encoder holds while it runs.
func (e encoding) memory() int64 {
	switch e.codec {
	case CodecGzip:
		return gzipEncoderMemory
	case CodecLZ4:
		return lz4EncoderMemory
	case CodecSnappy:
		return snappyEncoderMemory
	case CodecZstd:
		return zstdEncoderMemory[e.zstdLevel]
	}
	return 0
}

// maxEncoded bounds the encoded size of n bytes: what an encoder writes for
// bytes it cannot compress (stored blocks and their headers), and more.
// It sizes buffers; nothing relies on it being exact.
func (e encoding) maxEncoded(n int) int {
	switch e.codec {
	case CodecNone:
		return n
	case CodecSnappy:
		if m := s2.MaxEncodedLen(n); m >= 0 {
			return m
		}
	}
	return n + n/64 + 1024
}

// streamEncoder is a pooled compressor writing one codec's stream.
type streamEncoder interface {
	io.WriteCloser
	Reset(io.Writer)
}

// Encoder pools, one per codec and level (and zstd window: it is fixed
// when an encoder is built): gzip by level, lz4 by lz4Index, zstd by
// klauspost level and window log.
var (
	gzipEncoders [gzip.BestCompression + 1]sync.Pool
	lz4Encoders  [10]sync.Pool
	zstdEncoders [zstd.SpeedBestCompression + 1][zstdMaxEncoderWindowLog - zstdMinWindowLog + 1]sync.Pool
)

func (e encoding) pool() *sync.Pool {
	switch e.codec {
	case CodecGzip:
		return &gzipEncoders[e.gzipLevel]
	case CodecLZ4:
		return &lz4Encoders[e.lz4Index]
	case CodecZstd:
		log := bits.Len(uint(e.zstdWindow)) - 1
		return &zstdEncoders[e.zstdLevel][log-zstdMinWindowLog]
	}
	return nil
}

// getEncoder returns a pooled encoder writing to w; size is the number of
// bytes that will be written, when known (-1 if not), which zstd records in
// its frame header. putEncoder gives it back.
func (e encoding) getEncoder(w io.Writer, size int64) (streamEncoder, error) {
	switch e.codec {
	case CodecGzip:
		if gz, ok := e.pool().Get().(*gzip.Writer); ok {
			gz.Reset(w)
			return gz, nil
		}
		gz, err := gzip.NewWriterLevel(w, e.gzipLevel)
		if err != nil {
			return nil, fmt.Errorf("recordbatch: gzip encoder: %w", err)
		}
		return gz, nil
	case CodecLZ4:
		if lw, ok := e.pool().Get().(*lz4.Writer); ok {
			lw.Reset(w)
			return lw, nil
		}
		level := lz4.Fast
		if e.lz4Index > 0 {
			level = lz4.Level1 << (e.lz4Index - 1)
		}
		lw := lz4.NewWriter(w)
		if err := lw.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.CompressionLevelOption(level)); err != nil {
			return nil, fmt.Errorf("recordbatch: lz4 encoder: %w", err)
		}
		return lw, nil
	case CodecZstd:
		zw, ok := e.pool().Get().(*zstd.Encoder)
		if !ok {
			var err error
			zw, err = zstd.NewWriter(nil,
				zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderLevel(e.zstdLevel),
				zstd.WithWindowSize(e.zstdWindow),
				zstd.WithZeroFrames(true))
			if err != nil {
				return nil, fmt.Errorf("recordbatch: zstd encoder: %w", err)
			}
		}
		zw.ResetContentSize(w, size)
		return zw, nil
	}
	return nil, fmt.Errorf("recordbatch: no stream encoder for %s", e.codec)
}

// putEncoder returns enc to its pool, reset (whatever state an error left
// it in) and holding no reference to the output.
func (e encoding) putEncoder(enc streamEncoder) {
	enc.Reset(nil)
	e.pool().Put(enc)
}

// recompression is one call of Recompress.
type recompression struct {
	ctx   context.Context
	b     Batch
	from  Codec
	enc   encoding
	limit int
}

// pumps reports whether the records are copied from a decoder to an
// encoder through a window (rather than read whole into a buffer).
func (r *recompression) pumps() bool {
	return r.from != CodecNone && r.enc.codec != CodecNone && r.enc.codec != CodecSnappy
}

// plan is the size of the buffers an attempt starts with.
type plan struct {
	out int // the batch
	raw int // the decompressed records (snappy from a compressed batch)
}

// firstPlan sizes the first attempt's buffers. From an uncompressed batch
// the output's largest size is known and taken at once; the output is
// trimmed to its length at the end. From a compressed one the records'
// size is what the payload declares (decompressedSize) or a guess, and
// the buffers grow as needed; a buffer receiving the records whole has one
// byte more, so that the read finding their end needs no larger one.
func (r *recompression) firstPlan() plan {
	n := len(r.b) - HeaderSize
	if r.from == CodecNone {
		return plan{out: HeaderSize + r.enc.maxEncoded(n)}
	}
	records, known := decompressedSize(r.from, r.b[HeaderSize:])
	if !known {
		records = 4 * min(n, r.limit/4)
	}
	records = min(records, r.limit) + 1
	switch r.enc.codec {
	case CodecNone:
		return plan{out: HeaderSize + records}
	case CodecSnappy:
		return plan{raw: records}
	}
	return plan{out: HeaderSize + min(2*min(n, records), r.enc.maxEncoded(records))}
}

// decompressedSize is the size a compressed payload declares its records
// to have, when it does: a raw snappy block's length prefix (or the sum of
// xerial blocks'), gzip's ISIZE trailer (the last member's size, modulo
// 2^32), a zstd frame header's content size (the first frame's). The
// decoders check these, so for a payload ValidateProduce accepted they are
// exact but for a stream of several gzip members or zstd frames; on other
// bytes they are a guess, which only sizes buffers.
func decompressedSize(codec Codec, body []byte) (int, bool) {
	switch codec {
	case CodecSnappy:
		if !isXerial(body) {
			n, err := s2.DecodedLen(body)
			return n, err == nil
		}
		total := 0
		for b := body[16:]; len(b) >= 4; {
			n := binary.BigEndian.Uint32(b)
			if uint64(n) > uint64(len(b)-4) {
				return 0, false
			}
			l, err := s2.DecodedLen(b[4 : 4+n])
			if err != nil {
				return 0, false
			}
			total = min(total+l, maxRecompressed+1)
			b = b[4+n:]
		}
		return total, true
	case CodecGzip:
		if len(body) >= 18 { // a gzip header and trailer
			return int(min(binary.LittleEndian.Uint32(body[len(body)-4:]), maxRecompressed+1)), true
		}
	case CodecZstd:
		var h zstd.Header
		if h.Decode(body) == nil && h.HasFCS {
			return int(min(h.FrameContentSize, maxRecompressed+1)), true
		}
	}
	return 0, false
}

// run recompresses r.b into a.out.
func (r *recompression) run(a *attempt) error {
	body := []byte(r.b[HeaderSize:])
	if err := a.grow(&a.out, HeaderSize, 0, false); err != nil {
		return err
	}
	a.out = append(a.out, r.b[:HeaderSize]...)
	var err error
	switch {
	case r.from == CodecNone && r.enc.codec == CodecNone:
		if err = a.grow(&a.out, len(body), 0, false); err == nil {
			a.out = append(a.out, body...)
		}
	case r.enc.codec == CodecNone:
		err = r.decode(a, &a.out, false)
	case r.enc.codec == CodecSnappy:
		err = r.snappy(a, body)
	default:
		err = r.encode(a, body)
	}
	if a.more != nil {
		return a.more
	}
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(a.out[offBatchLength:], uint32(len(a.out)-LengthOffset))
	attrs := uint16(r.b.Attributes())&^CodecMask | uint16(r.enc.codec)
	binary.BigEndian.PutUint16(a.out[offAttributes:], attrs)
	Batch(a.out).updateCRC()
	return nil
}

// decode appends the decompressed records to *buf.
func (r *recompression) decode(a *attempt, buf *[]byte, raw bool) error {
	d, err := openDecompressor(r.from, r.b[HeaderSize:], r.limit)
	if err != nil {
		return err
	}
	defer d.close()
	return a.readAll(r.ctx, buf, d, r.limit, raw)
}

// snappy encodes the records as one raw snappy block, which needs them
// whole: the payload itself, or decompressed into a.raw.
func (r *recompression) snappy(a *attempt, body []byte) error {
	raw := body
	if r.from != CodecNone {
		if err := r.decode(a, &a.raw, true); err != nil {
			return err
		}
		raw = a.raw
	}
	n := s2.MaxEncodedLen(len(raw))
	if n < 0 {
		return fmt.Errorf("%w: %d bytes is more than a snappy block holds", ErrDecompressTooLarge, len(raw))
	}
	if err := a.grow(&a.out, n, 0, false); err != nil {
		return err
	}
	block := s2.EncodeSnappy(a.out[HeaderSize:HeaderSize+n], raw)
	a.out = a.out[:HeaderSize+len(block)]
	a.dropRaw()
	return nil
}

// encodeChunk is how much of an uncompressed payload is handed to an
// encoder between looks at ctx.
const encodeChunk = 256 << 10

// encode streams the records through a pooled encoder into a.out.
func (r *recompression) encode(a *attempt, body []byte) error {
	size := int64(-1)
	if r.from == CodecNone {
		size = int64(len(body))
	}
	enc, err := r.enc.getEncoder(a, size)
	if err != nil {
		return err
	}
	defer r.enc.putEncoder(enc)
	if r.from == CodecNone {
		for p := body; len(p) > 0; {
			n := min(len(p), encodeChunk)
			if _, err := enc.Write(p[:n]); err != nil {
				return r.encodeError(err)
			}
			p = p[n:]
			if err := r.ctx.Err(); err != nil {
				return err
			}
		}
	} else if err := r.pump(enc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return r.encodeError(err)
	}
	return nil
}

func (r *recompression) encodeError(err error) error {
	return fmt.Errorf("recordbatch: %s encoder: %w", r.enc.codec, err)
}

// maxEmptyReads is how many reads in a row may return nothing before a
// decoder is taken to be stuck.
const maxEmptyReads = 100

// pump copies the decompressed records into enc through a pooled window,
// refusing more than r.limit bytes.
func (r *recompression) pump(enc io.Writer) error {
	d, err := openDecompressor(r.from, r.b[HeaderSize:], r.limit)
	if err != nil {
		return err
	}
	defer d.close()
	win := windows.Get().(*[]byte)
	defer windows.Put(win)
	total, empty := 0, 0
	for {
		n, err := d.Read(*win)
		total += n
		if total > r.limit {
			return fmt.Errorf("%w: more than %d bytes", ErrDecompressTooLarge, r.limit)
		}
		if n > 0 {
			empty = 0
			if _, werr := enc.Write((*win)[:n]); werr != nil {
				return r.encodeError(werr)
			}
		} else if empty++; empty > maxEmptyReads && err == nil {
			return fmt.Errorf("%w: decoder made no progress", ErrCorrupt)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
	}
}

// attempt is one try at a recompression under a budget: the bytes it
// holds and the buffers it fills. It is an io.Writer appending to out, for
// the encoders.
type attempt struct {
	budget *Budget
	held   int64  // bytes of budget taken
	out    []byte // the batch: header, then the records recompressed
	raw    []byte // the records decompressed whole (snappy's single block)
	more   *needBudget
}

// finish hands over a successful attempt's batch and what of the budget
// it holds: the batch's buffer, trimmed to its length when much of it is
// unused. Everything else is given back.
func (a *attempt) finish() (Batch, int64) {
	out := a.out
	if cap(out)-len(out) > len(out)/8 && a.budget.TryAcquire(int64(len(out))) {
		trimmed := make([]byte, len(out))
		copy(trimmed, out)
		a.held += int64(len(out))
		out = trimmed
	}
	keep := int64(cap(out))
	a.budget.Release(a.held - keep)
	if a.budget == nil {
		keep = 0
	}
	return Batch(out), keep
}

// needBudget stops an attempt whose buffer cannot grow without waiting for
// the budget: size is what the buffer (raw or out) needs.
type needBudget struct {
	raw  bool
	size int
}

func (*needBudget) Error() string { return "recordbatch: waiting for budget" }

// minGrow is the smallest buffer grow allocates.
const minGrow = 4 << 10

// grow makes room for n more bytes in *buf. A larger buffer (double, or
// as much as needed, but at most bound when bound allows n) is taken from
// the budget before it is allocated, the old one given back after the
// copy; when the budget cannot grant it at once, grow records what it
// needs in a.more and fails.
func (a *attempt) grow(buf *[]byte, n, bound int, raw bool) error {
	b := *buf
	if cap(b)-len(b) >= n {
		return nil
	}
	size := max(2*cap(b), len(b)+n, minGrow)
	if bound >= len(b)+n {
		size = min(size, bound)
	}
	if !a.budget.TryAcquire(int64(size)) {
		a.more = &needBudget{raw: raw, size: size}
		return a.more
	}
	nb := make([]byte, len(b), size)
	copy(nb, b)
	a.budget.Release(int64(cap(b)))
	a.held += int64(size - cap(b))
	*buf = nb
	return nil
}

// Write appends an encoder's output to the batch.
func (a *attempt) Write(p []byte) (int, error) {
	if err := a.grow(&a.out, len(p), 0, false); err != nil {
		return 0, err
	}
	a.out = append(a.out, p...)
	return len(p), nil
}

// readChunk is the least room readAll makes before a read.
const readChunk = 32 << 10

// readAll appends src to its end to *buf, refusing more than limit bytes.
func (a *attempt) readAll(ctx context.Context, buf *[]byte, src io.Reader, limit int, raw bool) error {
	start, empty := len(*buf), 0
	for {
		read := len(*buf) - start
		left := limit + 1 - read // one past the limit shows it is passed
		if cap(*buf) == len(*buf) {
			if err := a.grow(buf, min(readChunk, left), start+limit+1, raw); err != nil {
				return err
			}
		}
		b := *buf
		n, err := src.Read(b[len(b):min(cap(b), len(b)+left)])
		*buf = b[:len(b)+n]
		if read+n > limit {
			return fmt.Errorf("%w: more than %d bytes", ErrDecompressTooLarge, limit)
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty > maxEmptyReads && err == nil {
			return fmt.Errorf("%w: decoder made no progress", ErrCorrupt)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// dropRaw gives back the decompressed records once encoded.
func (a *attempt) dropRaw() {
	a.budget.Release(int64(cap(a.raw)))
	a.held -= int64(cap(a.raw))
	a.raw = nil
}

var _ io.Writer = (*attempt)(nil)
