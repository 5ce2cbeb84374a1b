package localseg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// ErrRepairMismatch is returned by Repair when the bytes offered do not
// fit the damaged stretch exactly.
var ErrRepairMismatch = errors.New("localseg: replacement does not match the damaged range")

// Repair puts back the batches of a lost range [r.From, r.To) of the
// sealed segment r.SegmentBase from a good copy (a replica, the bucket):
// batches must be whole batches, each passing its CRC-32C, with offsets
// increasing from r.From and the last ending at r.To, and exactly as long
// as the damaged stretch (a replica's and the bucket's copies of a batch
// are byte for byte the leader's, so any other length is not a copy of
// what was lost), with a batch of the same base offset wherever the
// segment's offset index says one began. The damaged bytes are overwritten in place and the file
// fsynced: the rest of the segment never changes, so readers of it are
// undisturbed, and a crash midway leaves at worst the same damage, which a
// later scan finds again. The segment is then verified whole; once it
// checks out, reads serve the range again and it leaves the lost-ranges
// file. Nothing changes when the range is no longer recorded as damaged
// (repaired already, or the segment is gone).
func (l *Log) Repair(r LostRange, batches []byte) error {
	var s *segment
	segs := l.segments()
	for _, c := range segs[:len(segs)-1] {
		if c.base == r.SegmentBase {
			s = c
		}
	}
	if s == nil {
		for _, c := range segs {
			if c.base == r.SegmentBase {
				return fmt.Errorf("localseg: repairing [%d, %d): segment %d is the active one", r.From, r.To, r.SegmentBase)
			}
		}
		// The segment is gone (retention, truncation): nothing to
		// repair, nothing for reads to skip.
		l.log.Info("a lost range's segment is gone: no longer recorded", "dir", l.dir, "from", r.From, "to", r.To, "segment_base", r.SegmentBase)
		return l.forgetLost(r)
	}
	if err := l.Offline(); err != nil {
		return err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.damage == nil {
		// Not scanned since the log opened: scan now.
		f, err := l.fs.OpenFile(s.path(".log"), os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("localseg: repairing %s: %w", s.path(".log"), err)
		}
		ds, err := ScanSegment(f, s.base, s.size.Load(), s.next.Load())
		f.Close()
		if err != nil {
			return fmt.Errorf("localseg: repairing %s: %w", s.path(".log"), err)
		}
		s.damage = &ds
	}
	next := s.next.Load()
	var d *Damage
	for i, c := range *s.damage {
		to := c.NextGood
		if to < 0 {
			to = next
		}
		if c.FirstOffset == r.From && to == r.To {
			d = &(*s.damage)[i]
		}
	}
	if d == nil {
		return l.forgetLost(r) // repaired already
	}
	if err := checkReplacement(batches, r.From, r.To, d.NextPos-d.Pos); err != nil {
		return err
	}
	if err := l.checkAgainstIndex(s, batches, d.Pos, d.NextPos); err != nil {
		return err
	}
	f, err := l.fs.OpenFile(s.path(".log"), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("localseg: repairing %s: %w", s.path(".log"), err)
	}
	defer f.Close()
	if err := writeFull(f, batches, d.Pos); err != nil {
		return fmt.Errorf("localseg: repairing %s: %w", s.path(".log"), err)
	}
	if err := f.Sync(); err != nil {
		// The pages may be dropped: the log must not trust them again.
		return l.goOffline(fmt.Errorf("localseg: syncing the repaired %s: %w", s.path(".log"), err))
	}
	ds, err := ScanSegment(f, s.base, s.size.Load(), next)
	if err != nil {
		return fmt.Errorf("localseg: verifying the repaired %s: %w", s.path(".log"), err)
	}
	s.damage = &ds
	for _, o := range ds {
		if o.FirstOffset <= r.From && (o.NextGood < 0 || o.NextGood > r.From) {
			return fmt.Errorf("%w: %s still fails its scan at byte %d: %v", ErrRepairMismatch, s.path(".log"), o.Pos, o.Err)
		}
	}
	l.log.Info("repaired a damaged range of a sealed segment: reads serve it again", "segment", s.path(".log"), "from", r.From, "to", r.To, "bytes", len(batches))
	return l.forgetLost(r)
}

// checkReplacement verifies that batches are whole, intact batches
// covering [from, to) in order and exactly n bytes long.
func checkReplacement(batches []byte, from, to, n int64) error {
	if int64(len(batches)) != n {
		return fmt.Errorf("%w: %d bytes offered for a damaged stretch of %d", ErrRepairMismatch, len(batches), n)
	}
	expect := from
	first := true
	for rest := batches; len(rest) > 0; {
		b, r, err := recordbatch.Next(rest)
		if err != nil || b == nil {
			return fmt.Errorf("%w: not whole batches: %v", ErrRepairMismatch, err)
		}
		if err := recordbatch.Check(b); err != nil {
			return fmt.Errorf("%w: %w", ErrRepairMismatch, err)
		}
		if (first && b.BaseOffset() != from) || b.BaseOffset() < expect || b.LastOffset() < b.BaseOffset() {
			return fmt.Errorf("%w: batch [%d, %d] where offsets from %d were expected", ErrRepairMismatch, b.BaseOffset(), b.LastOffset(), expect)
		}
		expect, first, rest = b.NextOffset(), false, r
	}
	if expect != to {
		return fmt.Errorf("%w: the batches end at %d, the range at %d", ErrRepairMismatch, expect, to)
	}
	return nil
}

// checkAgainstIndex compares a replacement for the bytes [from, to) of
// sealed segment s with the segment's offset index, written when it was
// sealed and checked by its checksum: every entry there says a batch with
// that base offset began at that position, and the copy must have the
// same batch there. An index that is missing or does not check out says
// nothing (the length and offset checks still apply).
func (l *Log) checkAgainstIndex(s *segment, batches []byte, from, to int64) error {
	s.waitRollFiles()
	idx, err := readOffsetIndexFile(l.fs, s.path(".index"), s.size.Load())
	if err != nil {
		return nil
	}
	starts := map[int64]int64{} // position in the copy -> base offset
	for pos, rest := int64(0), batches; len(rest) > 0; {
		b, r, err := recordbatch.Next(rest)
		if err != nil || b == nil {
			return fmt.Errorf("%w: not whole batches: %v", ErrRepairMismatch, err)
		}
		starts[pos] = b.BaseOffset()
		pos += int64(len(b))
		rest = r
	}
	for _, e := range idx {
		p := int64(e.pos)
		if p < from || p >= to {
			continue
		}
		want := s.base + int64(e.rel)
		if got, ok := starts[p-from]; !ok || got != want {
			return fmt.Errorf("%w: the offset index has a batch of base offset %d at byte %d of %s, the copy does not", ErrRepairMismatch, want, p, s.path(".log"))
		}
	}
	return nil
}

// forgetLost removes a repaired range from the lost-ranges file.
func (l *Log) forgetLost(r LostRange) error {
	return l.keepLost(func(o LostRange) bool {
		return o.From != r.From || o.To != r.To || o.SegmentBase != r.SegmentBase
	})
}

// forgetLostOf removes the ranges of segments that are gone (retention,
// truncation): nothing is left to skip or repair, and records of them
// must not pile up.
func (l *Log) forgetLostOf(segs []*segment) {
	if !l.hasLost.Load() {
		return
	}
	bases := make(map[int64]bool, len(segs))
	for _, s := range segs {
		bases[s.base] = true
	}
	if err := l.keepLost(func(o LostRange) bool { return !bases[o.SegmentBase] }); err != nil {
		l.log.Warn("pruning the lost ranges of deleted segments", "dir", l.dir, "err", err)
	}
}

// pruneLostAtOpen forgets the ranges of segments that no longer exist (a
// crash between a segment's deletion and its ranges' removal).
func (l *Log) pruneLostAtOpen() {
	l.hasLost.Store(true) // keepLost clears it when there is no file
	live := map[int64]bool{}
	for _, s := range l.segments() {
		live[s.base] = true
	}
	if err := l.keepLost(func(o LostRange) bool { return live[o.SegmentBase] }); err != nil {
		l.log.Warn("pruning the lost ranges of deleted segments", "dir", l.dir, "err", err)
	}
}

// keepLost rewrites the lost-ranges file with the ranges keep accepts,
// removing it when none is left.
func (l *Log) keepLost(keep func(LostRange) bool) error {
	l.lostMu.Lock()
	defer l.lostMu.Unlock()
	rs, err := l.readLostLocked()
	if err != nil {
		return fmt.Errorf("localseg: reading the lost ranges: %w", err)
	}
	if len(rs) == 0 {
		l.hasLost.Store(false)
		return nil
	}
	kept := make([]LostRange, 0, len(rs))
	for _, o := range rs {
		if keep(o) {
			kept = append(kept, o)
		}
	}
	if len(kept) == len(rs) {
		return nil
	}
	path := filepath.Join(l.dir, lostRangesFile)
	if len(kept) == 0 {
		l.hasLost.Store(false)
		if err := l.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("localseg: removing the lost ranges: %w", err)
		}
		return l.fs.SyncDir(l.dir)
	}
	return writeFileAtomic(l.fs, path, encodeLostRanges(kept))
}

// RangeOf is the lost range a Damage leaves in its segment (d.Segment):
// [FirstOffset, NextGood), or to the segment's end when no intact batch
// follows; false when the segment is no longer in the log.
func (l *Log) RangeOf(d Damage) (LostRange, bool) {
	for _, s := range l.segments() {
		if s.path(".log") == d.Segment {
			to := d.NextGood
			if to < 0 {
				to = s.next.Load()
			}
			return LostRange{From: d.FirstOffset, To: to, SegmentBase: s.base}, true
		}
	}
	return LostRange{}, false
}
