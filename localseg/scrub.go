package localseg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
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
	Err                   error
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
		d := Damage{Pos: pos, FirstOffset: expect, NextGood: -1, Err: err}
		// Slide forward to the next batch that checks out.
		resumed := false
		for p := pos + 1; p+recordbatch.HeaderSize <= size; p++ {
			b, rerr := readBatchAt(r, p, size, expect, hdr[:], &buf)
			if errors.Is(rerr, errReadFailed) {
				return append(out, d), rerr
			}
			if rerr == nil && checkScanned(b, expect, next) == nil {
				d.NextGood = recordbatch.Batch(b).BaseOffset()
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
// found. The active segment is left to recovery. It stops early when ctx
// ends.
func (l *Log) Scrub(ctx context.Context, bytesPerSecond int64) ([]Damage, error) {
	segs := l.segments()
	var out []Damage
	for _, s := range segs[:len(segs)-1] {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		size := s.size.Load()
		f, err := l.fs.OpenFile(s.path(".log"), os.O_RDONLY, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted by retention meanwhile
			}
			return out, fmt.Errorf("localseg: scrubbing %s: %w", s.path(".log"), err)
		}
		start := time.Now()
		ds, err := ScanSegment(f, s.base, size, s.next.Load())
		f.Close()
		for i := range ds {
			ds[i].Segment = s.path(".log")
			l.log.Error("corrupt batches in a sealed segment", "damage", ds[i].String())
		}
		out = append(out, ds...)
		if err != nil {
			return out, fmt.Errorf("localseg: scrubbing %s: %w", s.path(".log"), err)
		}
		if bytesPerSecond > 0 {
			want := time.Duration(float64(size) / float64(bytesPerSecond) * float64(time.Second))
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(want - time.Since(start)):
			}
		}
	}
	return out, nil
}
