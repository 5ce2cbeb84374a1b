package localseg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Damage is a stretch of a segment file whose batches do not check out:
// a length out of bounds, a bad magic byte or CRC-32C, or offsets that do
// not increase from batch to batch or leave the segment's range.
type Damage struct {
	Segment string // path of the .log file
	Pos     int64  // byte position of the first bad batch
	// FirstOffset is the first offset the damage may hide (the offset
	// after the last good batch); NextGood is the base offset of the
	// first intact batch after it, or -1 when none was found before the
	// end of the segment.
	FirstOffset, NextGood int64
	// NextPos is the byte position of that intact batch (the segment
	// size when none).
	NextPos int64
	Err     error
}

func (d Damage) String() string {
	return fmt.Sprintf("%s at byte %d (offsets from %d, next intact batch at %d): %v", d.Segment, d.Pos, d.FirstOffset, d.NextGood, d.Err)
}

// maxScanBatch bounds the buffer a scan allocates for one batch; a length
// field beyond it is damage (the broker's batches are far smaller: a
// produce request is bounded by socket.request.max.bytes).
const maxScanBatch = 128 << 20

// ScanSegment verifies every batch of a segment file of size bytes whose
// first offset is base, reading through r: each length within the file and
// the bound, magic 2, the CRC-32C, base offsets increasing and within
// [base, next) when next >= 0. It returns the damaged stretches found (each
// followed, where possible, by the next batch that checks out, found by
// sliding forward one byte at a time), and an error only when reading
// fails. It allocates at most one batch's bytes at a time.
func ScanSegment(r io.ReaderAt, base, size, next int64) ([]Damage, error) {
	var out []Damage
	var buf []byte
	expect := base
	var hdr [recordbatch.HeaderSize]byte
	for pos := int64(0); pos < size; {
		b, err := readBatchAt(r, pos, size, expect, hdr[:], &buf)
		if err == nil {
			err = checkScanned(b, expect, next)
		}
		if errors.Is(err, errReadFailed) {
			return out, err
		}
		if err == nil {
			expect = recordbatch.Batch(b).NextOffset()
			pos += int64(len(b))
			continue
		}
		d := Damage{Pos: pos, FirstOffset: expect, NextGood: -1, NextPos: size, Err: err}
		// Slide forward to the next batch that checks out.
		resumed := false
		for p := pos + 1; p+recordbatch.HeaderSize <= size; p++ {
			b, rerr := readBatchAt(r, p, size, expect, hdr[:], &buf)
			if errors.Is(rerr, errReadFailed) {
				return append(out, d), rerr
			}
			if rerr == nil && checkScanned(b, expect, next) == nil {
				d.NextGood = recordbatch.Batch(b).BaseOffset()
				d.NextPos = p
				pos = p
				resumed = true
				break
			}
		}
		out = append(out, d)
		if !resumed {
			break
		}
	}
	return out, nil
}

var errReadFailed = errors.New("localseg: reading a segment to verify it")

// readBatchAt reads the whole batch at pos (below size) into *buf.
func readBatchAt(r io.ReaderAt, pos, size, minBase int64, hdr []byte, buf *[]byte) ([]byte, error) {
	if size-pos < recordbatch.HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes left, less than a batch header", recordbatch.ErrCorrupt, size-pos)
	}
	if _, err := r.ReadAt(hdr, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %w", errReadFailed, err)
	}
	n, err := recordbatch.Size(hdr)
	if err != nil {
		return nil, err
	}
	// Cheap checks before reading the body: a resync slides over
	// garbage one byte at a time and must not read a claimed length at
	// each position.
	if hdr[16] != 2 {
		return nil, fmt.Errorf("%w: magic %d at %d", recordbatch.ErrCorrupt, hdr[16], pos)
	}
	if base := int64(binary.BigEndian.Uint64(hdr)); base < minBase {
		return nil, fmt.Errorf("%w: base offset %d at %d, expected at least %d", recordbatch.ErrCorrupt, base, pos, minBase)
	}
	if n < recordbatch.HeaderSize || int64(n) > size-pos || n > maxScanBatch {
		return nil, fmt.Errorf("%w: batch length %d at %d", recordbatch.ErrCorrupt, n, pos)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := r.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %w", errReadFailed, err)
	}
	return b, nil
}

// ScanStream verifies the batches of a segment read as a stream of size
// bytes whose first offset is base, with ScanSegment's checks, calling fn
// with each batch that checks out and its byte position (fn must not keep
// the batch). It stops at the first damage and returns it (nil when there
// is none), without looking for the next intact batch, which would need
// the stream to go back; err is a failure to read r. It allocates at most
// one batch's bytes at a time.
func ScanStream(r io.Reader, base, size, next int64, fn func(pos int64, b recordbatch.Batch)) (*Damage, error) {
	var hdr [recordbatch.HeaderSize]byte
	var buf []byte
	expect := base
	for pos := int64(0); pos < size; {
		bad := func(err error) (*Damage, error) {
			return &Damage{Pos: pos, FirstOffset: expect, NextGood: -1, NextPos: size, Err: err}, nil
		}
		if size-pos < recordbatch.HeaderSize {
			return bad(fmt.Errorf("%w: %d bytes left, less than a batch header", recordbatch.ErrCorrupt, size-pos))
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("%w: %w", errReadFailed, err)
		}
		n, err := recordbatch.Size(hdr[:])
		switch {
		case err != nil:
			return bad(err)
		case hdr[16] != 2:
			return bad(fmt.Errorf("%w: magic %d at %d", recordbatch.ErrCorrupt, hdr[16], pos))
		case n < recordbatch.HeaderSize || int64(n) > size-pos || n > maxScanBatch:
			return bad(fmt.Errorf("%w: batch length %d at %d", recordbatch.ErrCorrupt, n, pos))
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		b := buf[:n]
		copy(b, hdr[:])
		if _, err := io.ReadFull(r, b[recordbatch.HeaderSize:]); err != nil {
			return nil, fmt.Errorf("%w: %w", errReadFailed, err)
		}
		if err := checkScanned(b, expect, next); err != nil {
			return bad(err)
		}
		fn(pos, b)
		expect = recordbatch.Batch(b).NextOffset()
		pos += int64(n)
	}
	return nil, nil
}

func checkScanned(b []byte, expect, next int64) error {
	if err := recordbatch.Check(recordbatch.Batch(b)); err != nil {
		return err
	}
	rb := recordbatch.Batch(b)
	if rb.BaseOffset() < expect || rb.LastOffset() < rb.BaseOffset() || (next >= 0 && rb.NextOffset() > next) {
		return fmt.Errorf("%w: batch offsets [%d, %d] out of order (expected from %d, segment ends at %d)",
			recordbatch.ErrCorrupt, rb.BaseOffset(), rb.LastOffset(), expect, next)
	}
	return nil
}

// Scrub verifies the log's sealed segments (see ScanSegment), reading at
// most bytesPerSecond (no limit when zero or less), and returns what it
// newly found: damage is recorded as a read that meets it records it
// (lost-ranges file, OnDamage, reads skip it), and a segment's damage
// already known is not reported again. The active segment is left to
// recovery. It stops early when ctx ends. A scrub that verified every
// sealed segment records its start in the scrubbed file (LastScrubbed).
//
// The record only says when the next scrub is due, so it is written
// without fsync: a crash that loses or tears it makes the next scrub come
// early, nothing worse. A log with no sealed segment (every new partition)
// verified nothing, and its scrub is recorded in memory alone: a broker
// that creates thousands of partitions does not write a file for each,
// and after a restart their scrub, due at once, costs nothing again.
func (l *Log) Scrub(ctx context.Context, bytesPerSecond int64) ([]Damage, error) {
	started := l.now()
	verified, ds, err := l.scrub(ctx, bytesPerSecond)
	if err == nil {
		ms := started.UnixMilli()
		if verified > 0 {
			if werr := writeFileNoSync(l.fs, filepath.Join(l.dir, scrubbedFile), encodeOffsetCheckpoint("scrubbed", ms)); werr != nil {
				return ds, fmt.Errorf("localseg: recording the scrub: %w", werr)
			}
		}
		l.scrubbed.Store(ms)
	}
	return ds, err
}

const scrubbedFile = "scrubbed"

// LastScrubbed is when the last Scrub that verified every sealed segment
// started, as recorded in the scrubbed file (kept across restarts), or the
// zero time when none is recorded (or the file does not check out).
func (l *Log) LastScrubbed() time.Time {
	ms := l.scrubbed.Load()
	if ms < 0 {
		ms = 0
		data, err := readFile(l.fs, filepath.Join(l.dir, scrubbedFile), maxCheckpointSize)
		if err == nil {
			if v, derr := decodeOffsetCheckpoint("scrubbed", data); derr == nil {
				ms = v
			}
		}
		l.scrubbed.CompareAndSwap(-1, ms)
		ms = l.scrubbed.Load()
	}
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// scrub verifies the sealed segments and returns how many it verified
// and the damage newly found.
func (l *Log) scrub(ctx context.Context, bytesPerSecond int64) (verified int, out []Damage, err error) {
	segs := l.segments()
	for _, s := range segs[:len(segs)-1] {
		if err := ctx.Err(); err != nil {
			return verified, out, err
		}
		size := s.size.Load()
		f, err := l.fs.OpenFile(s.path(".log"), os.O_RDONLY, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted by retention meanwhile
			}
			return verified, out, fmt.Errorf("localseg: scrubbing %s: %w", s.path(".log"), err)
		}
		start := time.Now()
		next := s.next.Load()
		ds, err := ScanSegment(f, s.base, size, next)
		f.Close()
		if err == nil {
			out = append(out, l.noteDamage(s, ds, next)...)
		}
		if err != nil {
			return verified, out, fmt.Errorf("localseg: scrubbing %s: %w", s.path(".log"), err)
		}
		verified++
		if bytesPerSecond > 0 {
			want := time.Duration(float64(size) / float64(bytesPerSecond) * float64(time.Second))
			select {
			case <-ctx.Done():
				return verified, out, ctx.Err()
			case <-time.After(want - time.Since(start)):
			}
		}
	}
	return verified, out, nil
}

// damageOf scans a sealed segment once, on the first read that met a
// corrupt batch in it, and keeps what it found. The caller holds a
// reference on s and its file f.
func (l *Log) damageOf(s *segment, f File, size, next int64) []Damage {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.damage == nil {
		ds, err := ScanSegment(f, s.base, size, next)
		if err != nil {
			l.log.Error("verifying a segment after a corrupt read", "segment", s.path(".log"), "err", err)
			return nil // not cached: a later read tries again
		}
		l.recordDamageLocked(s, ds, next)
	}
	return *s.damage
}

// noteDamage records what a scrub of s found, unless its damage is
// already known, and returns the damage newly recorded.
func (l *Log) noteDamage(s *segment, ds []Damage, next int64) []Damage {
	if len(ds) == 0 {
		return nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.damage != nil && len(*s.damage) > 0 {
		return nil
	}
	l.recordDamageLocked(s, ds, next)
	return ds
}

// recordDamageLocked makes ds the known damage of s: logged, added to the
// lost-ranges file, and then told to OnDamage, whose repairs read that
// file (told first, a repair could find nothing recorded yet and leave
// the range lost until its next retry). Requires s.loadMu.
func (l *Log) recordDamageLocked(s *segment, ds []Damage, next int64) {
	for i := range ds {
		ds[i].Segment = s.path(".log")
		l.log.Error("corrupt batches in a sealed segment: reads skip them", "damage", ds[i].String())
	}
	s.damage = &ds
	if len(ds) > 0 {
		if err := l.recordLost(s, ds, next); err != nil {
			l.log.Error("recording lost ranges", "dir", l.dir, "err", err)
		}
	}
	if l.onDamage != nil {
		for _, d := range ds {
			l.onDamage(d)
		}
	}
}

// LostRange is a recorded stretch of offsets [From, To) that reads skip
// because the batches holding them in segment SegmentBase are damaged.
type LostRange struct {
	From, To, SegmentBase int64
	FoundMs               int64
}

const lostRangesFile = "lost-ranges"

func encodeLostRanges(rs []LostRange) []byte {
	lines := make([]string, len(rs))
	for i, r := range rs {
		lines[i] = fmt.Sprintf("%d %d %d %d", r.From, r.To, r.SegmentBase, r.FoundMs)
	}
	return encodeCheckpoint(lostRangesFile, 1, lines)
}

func decodeLostRanges(data []byte) ([]LostRange, error) {
	lines, err := decodeCheckpoint(lostRangesFile, 1, data)
	if err != nil {
		return nil, err
	}
	out := make([]LostRange, 0, len(lines))
	for _, line := range lines {
		var r LostRange
		if n, err := fmt.Sscanf(line, "%d %d %d %d", &r.From, &r.To, &r.SegmentBase, &r.FoundMs); err != nil || n != 4 || r.From < 0 || r.To < r.From {
			return nil, fmt.Errorf("%w: lost-ranges line %q", errBadCheckpoint, line)
		}
		out = append(out, r)
	}
	return out, nil
}

// LostRanges lists the recorded lost ranges of the log (see doc.go).
func (l *Log) LostRanges() ([]LostRange, error) {
	l.lostMu.Lock()
	defer l.lostMu.Unlock()
	return l.readLostLocked()
}

func (l *Log) readLostLocked() ([]LostRange, error) {
	data, err := readFile(l.fs, filepath.Join(l.dir, lostRangesFile), maxCheckpointSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeLostRanges(data)
}

// recordLost adds a segment's damage to the lost-ranges file.
func (l *Log) recordLost(s *segment, ds []Damage, next int64) error {
	l.lostMu.Lock()
	defer l.lostMu.Unlock()
	rs, err := l.readLostLocked()
	if err != nil {
		l.log.Warn("rewriting an unreadable lost-ranges file", "dir", l.dir, "err", err)
		rs = nil
	}
	now := l.now().UnixMilli()
	for _, d := range ds {
		to := d.NextGood
		if to < 0 {
			to = next
		}
		r := LostRange{From: d.FirstOffset, To: to, SegmentBase: s.base, FoundMs: now}
		dup := false
		for _, o := range rs {
			if o.From == r.From && o.To == r.To && o.SegmentBase == r.SegmentBase {
				dup = true
			}
		}
		if !dup {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].From < rs[j].From })
	l.hasLost.Store(true)
	return writeFileAtomic(l.fs, filepath.Join(l.dir, lostRangesFile), encodeLostRanges(rs))
}

// errSkipTo tells Read that the offset it looked for lies in a damaged
// stretch that runs to the end of its segment: read on from the next one.
type errSkipTo struct{ offset int64 }

func (e errSkipTo) Error() string { return fmt.Sprintf("localseg: damaged up to %d", e.offset) }

// skipDamage finds where a read at offset resumes when offset lies in a
// damaged stretch of the sealed segment s: the position and size of the
// next intact batch, and the end of the intact run that follows it.
func (l *Log) skipDamage(s *segment, f File, offset, size, next int64) (start, firstSize, end int64, err error) {
	ds := l.damageOf(s, f, size, next)
	for i, d := range ds {
		if offset < d.FirstOffset || (d.NextGood >= 0 && offset >= d.NextGood) {
			continue
		}
		if d.NextGood < 0 {
			return 0, 0, 0, errSkipTo{offset: next}
		}
		h, herr := readHeader(f, d.NextPos, size)
		if herr != nil {
			return 0, 0, 0, herr
		}
		end = size
		if i+1 < len(ds) {
			end = ds[i+1].Pos
		}
		return d.NextPos, h.size, end, nil
	}
	// Not in a damaged stretch: read up to the next one.
	start, firstSize, err = l.findBatchBefore(s, f, offset, size, next, ds)
	if err != nil {
		return 0, 0, 0, err
	}
	end = size
	for _, d := range ds {
		if d.Pos > start {
			end = d.Pos
			break
		}
	}
	return start, firstSize, end, nil
}

// findBatchBefore is findBatch for a damaged segment: it walks batch
// headers from the last intact position at or below offset, never through
// a damaged stretch.
func (l *Log) findBatchBefore(s *segment, f File, offset, size, next int64, ds []Damage) (int64, int64, error) {
	pos := int64(0)
	for _, d := range ds {
		if d.NextGood >= 0 && offset >= d.NextGood {
			pos = d.NextPos
		}
	}
	for pos < size {
		h, err := readHeader(f, pos, size)
		if err != nil {
			return 0, 0, fmt.Errorf("localseg: %s at %d: %w", s.path(".log"), pos, err)
		}
		if h.last >= offset {
			return pos, h.size, nil
		}
		pos += h.size
	}
	return size, 0, nil
}
