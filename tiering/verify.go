package tiering

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

// VerifyOptions say how deep VerifyPartition looks.
type VerifyOptions struct {
	// Deep reads every segment object whole and checks its batches
	// (lengths, magic, CRC-32C, offsets within the manifest entry, in
	// order) and its companion's offset index and aborted transactions
	// against them. Without it the manifests, the spilled parts and the
	// companions are read, and the segments' presence and sizes are
	// checked from a listing.
	Deep bool
	// BytesPerSecond bounds how fast segment bytes are read (0: no
	// bound).
	BytesPerSecond int64
	// Segment, when set, is called after each segment is checked.
	Segment func(Segment)
	// From leaves out the segments that end at or below it (a scrub
	// that goes on where an earlier one stopped).
	From int64
	// MaxReadBytes ends the run once it has read that many segment
	// bytes (0: no bound); Verification.Next says where to go on.
	MaxReadBytes int64
}

// Problem is damage VerifyPartition found: an object missing, of the
// wrong size, or whose bytes do not check out.
type Problem struct {
	// Key is the object's key.
	Key string `json:"key"`
	// BaseOffset and NextOffset are the offsets the damaged object
	// holds by the manifest: a segment's or a spilled part's (-1 for the
	// manifest itself).
	BaseOffset int64  `json:"base_offset"`
	NextOffset int64  `json:"next_offset"`
	What       string `json:"problem"`
}

// Verification is what VerifyPartition found in a partition's remote log.
type Verification struct {
	Partition Partition `json:"-"`
	// Start and End are the remote log's offsets by its manifest (-1
	// and the log start when it holds no segment).
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Segments and Bytes count the segments checked and their size;
	// ReadBytes the segment bytes read and checked (Deep).
	Segments  int   `json:"segments"`
	Bytes     int64 `json:"bytes"`
	ReadBytes int64 `json:"read_bytes"`
	// Unnamed counts the segment, companion and spill objects under the
	// partition's prefix that no manifest names (a failed upload's, a
	// pass's replaced objects, or ones uploaded since the manifest was
	// read): the leader's sweeps delete them. Not damage.
	Unnamed      int   `json:"unnamed_objects"`
	UnnamedBytes int64 `json:"unnamed_bytes"`
	// Problems is the damage found, confirmed against the manifest read
	// again at the end (an entry retention or compaction replaced
	// meanwhile is not damage).
	Problems []Problem `json:"problems"`
	// Next is the offset after the last segment checked (From when
	// none was), and Complete whether every segment from From was: a
	// run ended by MaxReadBytes goes on from Next.
	Next     int64 `json:"-"`
	Complete bool  `json:"-"`
}

// VerifyPartition checks a partition's remote log in the bucket, from the
// bucket alone: its manifest decodes; every spilled part it names exists,
// decodes and matches its reference; the entries ascend; every segment and
// companion object named exists with the size the manifest records; every
// companion decodes; and, with opts.Deep, every segment's batches and its
// companion's indexes check out. It runs beside a live cluster: damage is
// reported only for what the manifest still names once the checks end. A
// store that fails is an error (wrapping ErrUnavailable); damage is not.
func VerifyPartition(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, opts VerifyOptions) (*Verification, error) {
	v := &Verification{Partition: p, Start: -1, Problems: []Problem{}}
	mkey := l.ManifestKey(p)
	m, err := LoadManifest(ctx, b, l, p)
	if errors.Is(err, ErrCorrupt) {
		v.Problems = append(v.Problems, Problem{Key: mkey, BaseOffset: -1, NextOffset: -1, What: err.Error()})
		return v, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	v.Start, v.End, v.Next = m.Start(), m.End(), max(opts.From, 0)
	named := map[string]bool{mkey: true}
	var segs []Segment
	// parts: the spilled parts read, by key; unread: the ranges of those
	// that do not read, whose objects are neither checked nor counted as
	// unnamed (the sweeps leave them too).
	parts := map[string]*Manifest{}
	var unread []Spill
	for _, s := range m.Spills {
		key := l.SpillKey(p, s.BaseOffset, s.ID)
		named[key] = true
		if s.NextOffset <= opts.From {
			continue
		}
		part, err := readSpill(ctx, b, key, s)
		if errors.Is(err, ErrCorrupt) {
			v.problem(key, s.BaseOffset, s.NextOffset, err.Error())
			unread = append(unread, s)
			continue
		}
		if err != nil {
			return nil, err
		}
		parts[key] = part
		segs = append(segs, part.Segments...)
	}
	segs = append(segs, m.Segments...)
	segs = slices.DeleteFunc(segs, func(s Segment) bool { return s.NextOffset <= opts.From })
	// A run bounded by MaxReadBytes checks the segments up to the one
	// whose bytes reach the bound; the rest, and the objects they name,
	// are for the next run, from v.Next.
	plan := segs
	if opts.Deep && opts.MaxReadBytes > 0 {
		var n int64
		for i, s := range segs {
			if n += s.Size; n >= opts.MaxReadBytes {
				plan = segs[:i+1]
				break
			}
		}
	}
	for _, rest := range segs[len(plan):] {
		named[l.SegmentKey(p, rest.BaseOffset, rest.ID)], named[l.CompanionKey(p, rest.BaseOffset, rest.ID)] = true, true
	}
	// One listing gives every object's size: a HEAD per object would cost
	// a request per segment and companion. It starts at the first segment
	// checked and, for a bounded run, ends after the last (the keys begin
	// with base offsets, fixed-width, and the other names sort after).
	sizes := map[string]int64{}
	after := ""
	if opts.From > 0 {
		lo := opts.From
		if len(segs) > 0 {
			lo = min(lo, segs[0].BaseOffset)
		}
		after = l.TailAfter(p, lo)
	}
	errListed := errors.New("listed")
	if err := b.ListAfter(ctx, l.PartitionPrefix(p), after, func(a objectstore.Attrs) error {
		if len(plan) < len(segs) {
			if base, ok := keyBase(a.Key); !ok || base > plan[len(plan)-1].BaseOffset {
				return errListed
			}
		}
		sizes[a.Key] = a.Size
		return nil
	}); err != nil && !errors.Is(err, errListed) {
		return nil, fmt.Errorf("%w: listing %s: %w", ErrUnavailable, l.PartitionPrefix(p), err)
	}
	st := &segChecker{b: b, opts: opts, v: v, began: time.Now()}
	prev := int64(-1)
	v.Complete = len(plan) == len(segs)
	for _, seg := range plan {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		key, ckey := l.SegmentKey(p, seg.BaseOffset, seg.ID), l.CompanionKey(p, seg.BaseOffset, seg.ID)
		named[key], named[ckey] = true, true
		v.Segments++
		v.Bytes += seg.Size
		if seg.NextOffset <= prev {
			v.problem(key, seg.BaseOffset, seg.NextOffset, fmt.Sprintf("the manifest's entries do not ascend: this one ends at or below %d", prev))
		}
		prev = max(prev, seg.NextOffset)
		if err := st.check(ctx, seg, key, ckey, sizes); err != nil {
			return nil, err
		}
		v.Next = max(v.Next, seg.NextOffset)
		if opts.Segment != nil {
			opts.Segment(seg)
		}
	}
	for key, size := range sizes {
		if named[key] {
			continue
		}
		if base, ok := keyBase(key); ok && slices.ContainsFunc(unread, func(s Spill) bool { return base >= s.BaseOffset && base < s.NextOffset }) {
			continue
		}
		if _, ok := parseObjectID(key); ok {
			v.Unnamed++
			v.UnnamedBytes += size
		}
	}
	if len(v.Problems) == 0 {
		return v, nil
	}
	// Retention, compaction or a drain may have replaced entries since
	// the manifest was read, and deleted their objects: what the manifest
	// no longer names is not damage.
	now, err := LoadManifest(ctx, b, l, p)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			v.problem(mkey, -1, -1, err.Error())
			return v, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	still := map[string]bool{mkey: true}
	keep := func(seg Segment) {
		still[l.SegmentKey(p, seg.BaseOffset, seg.ID)] = true
		still[l.CompanionKey(p, seg.BaseOffset, seg.ID)] = true
	}
	for _, s := range now.Spills {
		key := l.SpillKey(p, s.BaseOffset, s.ID)
		still[key] = true
		if s.NextOffset <= opts.From {
			continue
		}
		// A part read before is immutable; a new one (retention or
		// compaction rewrote a part) may name entries found damaged.
		part := parts[key]
		if part == nil {
			if part, err = readSpill(ctx, b, key, s); errors.Is(err, ErrCorrupt) {
				continue // reported if it is damage found
			} else if err != nil {
				return nil, err
			}
		}
		for _, seg := range part.Segments {
			keep(seg)
		}
	}
	for _, seg := range now.Segments {
		keep(seg)
	}
	kept := v.Problems[:0]
	for _, pr := range v.Problems {
		if still[pr.Key] {
			kept = append(kept, pr)
		}
	}
	v.Problems = kept
	return v, nil
}

func (v *Verification) problem(key string, base, next int64, what string) {
	v.Problems = append(v.Problems, Problem{Key: key, BaseOffset: base, NextOffset: next, What: what})
}

// segChecker checks one segment and its companion at a time.
type segChecker struct {
	b    objectstore.Bucket
	opts VerifyOptions
	v    *Verification
	// began and paced: when the reads began and the bytes read since,
	// for BytesPerSecond.
	began time.Time
	paced int64
}

func (c *segChecker) check(ctx context.Context, seg Segment, key, ckey string, sizes map[string]int64) error {
	size, ok := sizes[key]
	switch {
	case !ok:
		c.v.problem(key, seg.BaseOffset, seg.NextOffset, "the segment object is missing")
	case size != seg.Size:
		c.v.problem(key, seg.BaseOffset, seg.NextOffset, fmt.Sprintf("the segment object holds %d bytes, the manifest says %d", size, seg.Size))
		ok = false
	}
	var comp *Companion
	csize, cok := sizes[ckey]
	switch {
	case !cok:
		c.v.problem(ckey, seg.BaseOffset, seg.NextOffset, "the companion object is missing")
	case csize != seg.CompanionSize:
		c.v.problem(ckey, seg.BaseOffset, seg.NextOffset, fmt.Sprintf("the companion object holds %d bytes, the manifest says %d", csize, seg.CompanionSize))
	default:
		data, err := objectstore.ReadAll(ctx, c.b, ckey, min(seg.CompanionSize, maxCompanionSize))
		if errors.Is(err, objectstore.ErrNotFound) {
			c.v.problem(ckey, seg.BaseOffset, seg.NextOffset, "the companion object is missing")
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading %s: %w", ErrUnavailable, ckey, err)
		}
		if comp, err = DecodeCompanion(data, &seg); err != nil {
			c.v.problem(ckey, seg.BaseOffset, seg.NextOffset, err.Error())
		}
	}
	if !ok || !c.opts.Deep {
		return nil
	}
	return c.deep(ctx, seg, key, ckey, comp)
}

// deep reads the segment whole and checks its batches as they arrive
// (localseg.ScanStream), then the companion's offset index and aborted
// transactions against them.
func (c *segChecker) deep(ctx context.Context, seg Segment, key, ckey string, comp *Companion) error {
	body, err := c.b.Get(ctx, key, 0, -1)
	if errors.Is(err, objectstore.ErrNotFound) {
		c.v.problem(key, seg.BaseOffset, seg.NextOffset, "the segment object is missing")
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: reading %s: %w", ErrUnavailable, key, err)
	}
	defer body.Close()
	pr := &pacedReader{r: body, c: c, ctx: ctx}
	var batches []batchHead
	damage, err := localseg.ScanStream(bufio.NewReaderSize(pr, 256<<10), seg.BaseOffset, seg.Size, seg.NextOffset, func(pos int64, b recordbatch.Batch) {
		batches = append(batches, batchHead{pos: pos, base: b.BaseOffset(), last: b.LastOffset(), producerID: b.ProducerID(), control: b.Control()})
	})
	c.v.ReadBytes += pr.n
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: reading %s: %w", ErrUnavailable, key, err)
	}
	if damage != nil {
		c.v.problem(key, seg.BaseOffset, seg.NextOffset, fmt.Sprintf("byte %d (offsets from %d): %v", damage.Pos, damage.FirstOffset, damage.Err))
		return nil
	}
	if comp == nil {
		return nil
	}
	for _, what := range checkCompanion(seg, comp, batches) {
		c.v.problem(ckey, seg.BaseOffset, seg.NextOffset, what)
	}
	return nil
}

// batchHead is what the companion checks need of one batch.
type batchHead struct {
	pos, base, last, producerID int64
	control                     bool
}

// checkCompanion checks a companion's offset index (each entry at the
// start of the batch holding its offset) and aborted transactions (each
// marker a control batch of its producer in the segment) against the
// segment's batches.
func checkCompanion(seg Segment, comp *Companion, batches []batchHead) []string {
	var out []string
	for _, e := range comp.OffsetIndex {
		i := sort.Search(len(batches), func(i int) bool { return batches[i].pos >= int64(e.Position) })
		off := seg.BaseOffset + int64(e.RelOffset)
		if i == len(batches) || batches[i].pos != int64(e.Position) || off < batches[i].base || off > batches[i].last {
			out = append(out, fmt.Sprintf("offset index entry (offset %d, byte %d) is not at the start of the batch holding the offset", off, e.Position))
			break
		}
	}
	for _, t := range comp.AbortedTxns {
		i := sort.Search(len(batches), func(i int) bool { return batches[i].last >= t.LastOffset })
		if i == len(batches) || batches[i].base > t.LastOffset || !batches[i].control || batches[i].producerID != t.ProducerID {
			out = append(out, fmt.Sprintf("aborted transaction of producer %d: no marker of it at offset %d", t.ProducerID, t.LastOffset))
			break
		}
	}
	return out
}

// pacedReader reads at most the verification's BytesPerSecond on average,
// counting what it read (n).
type pacedReader struct {
	r   io.Reader
	c   *segChecker
	ctx context.Context
	n   int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if rate := p.c.opts.BytesPerSecond; rate > 0 && n > 0 {
		p.c.paced += int64(n)
		due := p.c.began.Add(time.Duration(float64(p.c.paced) / float64(rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return n, p.ctx.Err()
			}
		}
	}
	return n, err
}

// VerifyTopic runs VerifyPartition on each partition of a topic the bucket
// describes.
func VerifyTopic(ctx context.Context, b objectstore.Bucket, l Layout, d *TopicDescriptor, opts VerifyOptions) ([]*Verification, error) {
	id, err := d.TopicID()
	if err != nil {
		return nil, err
	}
	var out []*Verification
	for i := int32(0); i < d.Partitions; i++ {
		v, err := VerifyPartition(ctx, b, l, Partition{Topic: d.Name, TopicID: id, Index: i}, opts)
		if err != nil {
			return out, fmt.Errorf("%s-%d: %w", d.Name, i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// scrubName is the partition's scrub note (JSON), beside the sweep note.
const scrubName = "scrubbed.json"

// ScrubNoteKey names a partition's scrub note.
func (l Layout) ScrubNoteKey(p Partition) string { return l.PartitionPrefix(p) + scrubName }

// ScrubNote is how far the leaders' scrubs of a partition's remote log
// (VerifyPartition, a bounded stretch at a time) have gone: where the
// scrub under way goes on (0: none is under way), when it began, and when
// the last complete one ended. Not part of the archive's data (a reader
// may ignore it): without it, the next leader scrubs from the start.
type ScrubNote struct {
	LeaderEpoch int32     `json:"leader_epoch"`
	Next        int64     `json:"next_offset"`
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at"`
	// Damaged counts the damaged objects the scrub under way found so
	// far (the last complete one's when none is under way).
	Damaged int `json:"damaged"`
}

// ReadScrubNote reads a partition's scrub note (nil when there is none,
// or it does not decode).
func ReadScrubNote(ctx context.Context, b objectstore.Bucket, l Layout, p Partition) (*ScrubNote, error) {
	return readPartitionNote(ctx, b, l.ScrubNoteKey(p), DecodeScrubNote)
}

// DecodeScrubNote decodes and checks a scrub note.
func DecodeScrubNote(data []byte) (*ScrubNote, error) {
	var n ScrubNote
	if err := decodeJSON(data, &n); err != nil {
		return nil, err
	}
	if n.LeaderEpoch < 0 || n.Next < 0 || n.Damaged < 0 {
		return nil, fmt.Errorf("%w: scrub note: epoch %d, next offset %d, %d damaged", ErrCorrupt, n.LeaderEpoch, n.Next, n.Damaged)
	}
	return &n, nil
}

// PutScrubNote writes a partition's scrub note.
func PutScrubNote(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, n ScrubNote) error {
	return putJSON(ctx, b, l.ScrubNoteKey(p), n, objectstore.PutOptions{})
}
