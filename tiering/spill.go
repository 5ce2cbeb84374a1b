package tiering

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/shale-log/shale/objectstore"
)

// SpillLoader reads a partition's spilled manifest parts. Parts are
// immutable, so an implementation may cache them without bound of time.
type SpillLoader interface {
	LoadSpill(ctx context.Context, p Partition, s Spill) (*Manifest, error)
}

// BucketSpills reads spilled parts straight from a bucket (no cache).
type BucketSpills struct {
	Bucket objectstore.Bucket
	Layout Layout
}

var (
	_ SpillLoader = BucketSpills{}
	_ SpillLoader = (*Reader)(nil)
)

// LoadSpill reads and checks one spilled part.
func (b BucketSpills) LoadSpill(ctx context.Context, p Partition, s Spill) (*Manifest, error) {
	if s.part != nil {
		return s.part, nil
	}
	return readSpill(ctx, b.Bucket, b.Layout.SpillKey(p, s.BaseOffset, s.ID), s)
}

func readSpill(ctx context.Context, b objectstore.Bucket, key string, s Spill) (*Manifest, error) {
	data, err := objectstore.ReadAll(ctx, b, key, maxManifestSize)
	if err != nil {
		if errors.Is(err, objectstore.ErrNotFound) {
			return nil, fmt.Errorf("%w: spilled manifest part %s is missing", ErrCorrupt, key)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, key, err)
	}
	part, err := DecodeManifest(data, true)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s: %w", key, err)
	}
	if err := s.matches(part); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return part, nil
}

// matches checks that a decoded part is the one its reference describes.
func (s Spill) matches(part *Manifest) error {
	n := len(part.Segments)
	if n == 0 || uint32(n) != s.Count || part.Segments[0].BaseOffset != s.BaseOffset || part.Segments[n-1].NextOffset != s.NextOffset {
		return fmt.Errorf("the part does not match its reference [%d, %d) of %d segments", s.BaseOffset, s.NextOffset, s.Count)
	}
	var bytes int64
	for i := range part.Segments {
		bytes += part.Segments[i].Size
	}
	if bytes != s.Bytes {
		return fmt.Errorf("the part holds %d bytes, its reference %d", bytes, s.Bytes)
	}
	return nil
}

// newSpill makes the reference (and pending content) of a new spilled part
// holding segs, which must not be empty.
func newSpill(segs []Segment, epoch int32, nowMs int64) (Spill, error) {
	s := Spill{BaseOffset: segs[0].BaseOffset, NextOffset: segs[len(segs)-1].NextOffset, Count: uint32(len(segs)), MaxTimestamp: -1}
	for i := range segs {
		s.Bytes += segs[i].Size
		s.MaxTimestamp = max(s.MaxTimestamp, segs[i].MaxTimestamp)
	}
	if _, err := rand.Read(s.ID[:]); err != nil {
		return Spill{}, err
	}
	s.part = &Manifest{CommitID: s.ID, LeaderEpoch: epoch, CommittedAtMs: nowMs, Segments: segs}
	return s, nil
}

// spillOverflow moves the oldest segments of a manifest larger than
// spillThreshold into a new spilled part (pending: Commit writes it),
// keeping about spillKeep bytes of segment entries and at least one
// segment in the manifest.
func spillOverflow(m *Manifest, epoch int32, nowMs int64) error {
	if m.encodedSize() <= spillThreshold {
		return nil
	}
	keep, n := 0, len(m.Segments)
	for n > 1 && keep+m.Segments[n-1].encodedSize() <= spillKeep {
		keep += m.Segments[n-1].encodedSize()
		n--
	}
	if n == len(m.Segments) {
		n-- // keep the newest entry even if it is alone larger than spillKeep
	}
	if n <= 0 {
		return nil
	}
	s, err := newSpill(append([]Segment(nil), m.Segments[:n]...), epoch, nowMs)
	if err != nil {
		return err
	}
	m.Spills = append(m.Spills, s)
	m.Segments = append([]Segment(nil), m.Segments[n:]...)
	return nil
}

// spillKeyFor names a spilled part next to the manifest at manifestKey.
func spillKeyFor(manifestKey string, base int64, id [16]byte) string {
	return strings.TrimSuffix(manifestKey, manifestName) + "spill-" + objectBase(base, id) + ".manifest"
}

// FindSegment returns the manifest entry holding offset, or the first one
// after it when offset falls in a gap, looking in the spilled parts
// through l when offset is below the manifest's own entries; ok is false
// when offset is at or past the manifest's end.
func FindSegment(ctx context.Context, l SpillLoader, p Partition, m *Manifest, offset int64) (Segment, bool, error) {
	if i := sort.Search(len(m.Spills), func(i int) bool { return m.Spills[i].NextOffset > offset }); i < len(m.Spills) {
		part, err := l.LoadSpill(ctx, p, m.Spills[i])
		if err != nil {
			return Segment{}, false, err
		}
		if seg, ok := findIn(part.Segments, offset); ok {
			return seg, true, nil
		}
	}
	seg, ok := findIn(m.Segments, offset)
	return seg, ok, nil
}

func findIn(segs []Segment, offset int64) (Segment, bool) {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].NextOffset > offset })
	if i == len(segs) {
		return Segment{}, false
	}
	return segs[i], true
}

// WalkSegments calls fn with every manifest entry whose next offset is
// above from, in order: those of the spilled parts (read through l; a part
// whose reference skip returns true for is not read), then the manifest's
// own. fn returns false to stop.
func WalkSegments(ctx context.Context, l SpillLoader, p Partition, m *Manifest, from int64, skip func(Spill) bool, fn func(Segment) bool) error {
	for _, s := range m.Spills {
		if s.NextOffset <= from || (skip != nil && skip(s)) {
			continue
		}
		part, err := l.LoadSpill(ctx, p, s)
		if err != nil {
			return err
		}
		for _, seg := range part.Segments {
			if seg.NextOffset > from && !fn(seg) {
				return nil
			}
		}
	}
	for _, seg := range m.Segments {
		if seg.NextOffset > from && !fn(seg) {
			return nil
		}
	}
	return nil
}

// SegmentCount is the number of remote segments, spilled ones included.
func (m *Manifest) SegmentCount() int {
	n := len(m.Segments)
	for _, s := range m.Spills {
		n += int(s.Count)
	}
	return n
}
