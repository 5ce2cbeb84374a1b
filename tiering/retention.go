package tiering

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// RetentionPolicy is a topic's total retention (local plus remote), with
// Kafka's meaning: -1 keeps forever / without a size limit.
type RetentionPolicy struct {
	RetentionMs    int64
	RetentionBytes int64
}

// RetentionPlan is what remote retention removes from a manifest.
type RetentionPlan struct {
	// DropSpills leading spilled parts go whole.
	DropSpills int
	// Trim, when set, replaces the first remaining spilled part: its
	// entries TrimDropped expired and go, the rest stay in a new part
	// (Trim's pending content).
	Trim         *Spill
	TrimDropped  []Segment
	DropSegments int   // leading entries of the manifest itself that go
	LogStart     int64 // the new log start offset
}

func (p *RetentionPlan) empty() bool {
	return p.DropSpills == 0 && p.Trim == nil && p.DropSegments == 0
}

// retentionBatch bounds the segments one remote retention pass drops
// (ApplyRetention): a pass commits the manifest, then deletes two objects
// a segment, and keeps their names meanwhile. Lowering the retention of a
// topic with a year of history expires hundreds of thousands of segments
// at once; in passes of this size each commit is followed by deletes of a
// few seconds, and what a failure leaves is one pass's objects. Policy,
// not format: a variable only so that tests can make it small.
var retentionBatch = 2000

// PlanRetention decides which remote segments have expired: those older
// than retention.ms (by their largest timestamp), those that push the
// partition's total size (remote plus localBytes, the local data not in
// the manifest) past retention.bytes (oldest first), and those wholly
// below the log start (DeleteRecords). Spilled parts go whole when all
// their segments expired; the first part that expired only in part is
// read through l and replaced by a smaller one. The plan drops at most
// retentionBatch segments (but always the first whole spilled part that
// expired, however many it holds): the oldest, so that the log start
// moves up to them; what else expired is left to the next plan. Apart
// from reading that part, it is pure: the caller commits the manifest,
// then deletes the objects.
func PlanRetention(ctx context.Context, l SpillLoader, p Partition, m *Manifest, pol RetentionPolicy, nowMs, localBytes int64) (RetentionPlan, error) {
	plan := RetentionPlan{LogStart: m.LogStartOffset}
	total := m.Bytes() + localBytes
	expired := func(next, size, ts int64) bool {
		return next <= m.LogStartOffset ||
			(pol.RetentionMs >= 0 && ts >= 0 && nowMs-ts > pol.RetentionMs) ||
			(pol.RetentionBytes >= 0 && total-size >= pol.RetentionBytes)
	}
	dropped := 0 // segments
	full := func(n int) bool { return dropped > 0 && dropped+n > retentionBatch }
	for _, s := range m.Spills {
		if expired(s.NextOffset, s.Bytes, s.MaxTimestamp) {
			if full(int(s.Count)) {
				return plan, nil
			}
			dropped += int(s.Count)
			total -= s.Bytes
			plan.DropSpills++
			plan.LogStart = max(plan.LogStart, s.NextOffset)
			continue
		}
		if full(1) {
			return plan, nil
		}
		part, err := l.LoadSpill(ctx, p, s)
		if err != nil {
			return RetentionPlan{}, err
		}
		k := 0
		for _, seg := range part.Segments {
			if !expired(seg.NextOffset, seg.Size, seg.MaxTimestamp) || full(1) {
				break
			}
			total -= seg.Size
			k++
			dropped++
			plan.LogStart = max(plan.LogStart, seg.NextOffset)
		}
		switch {
		case k == len(part.Segments): // every entry expired on its own
			plan.DropSpills++
			continue
		case k > 0:
			ns, err := newSpill(append([]Segment(nil), part.Segments[k:]...), m.LeaderEpoch, nowMs)
			if err != nil {
				return RetentionPlan{}, err
			}
			plan.Trim = &ns
			plan.TrimDropped = part.Segments[:k]
		}
		return plan, nil
	}
	for _, s := range m.Segments {
		if !expired(s.NextOffset, s.Size, s.MaxTimestamp) || full(1) {
			break
		}
		total -= s.Size
		dropped++
		plan.DropSegments++
		plan.LogStart = max(plan.LogStart, s.NextOffset)
	}
	return plan, nil
}

// apply removes the planned entries from m.
func (p *RetentionPlan) apply(m *Manifest) {
	m.Spills = append([]Spill(nil), m.Spills[p.DropSpills:]...)
	if p.Trim != nil {
		m.Spills[0] = *p.Trim
	}
	m.Segments = append([]Segment(nil), m.Segments[p.DropSegments:]...)
	m.LogStartOffset = p.LogStart
}

// ApplyRetention runs remote retention for one partition as leader of
// epoch: it commits the manifest without the expired segments (and with
// the new log start) and then deletes their objects, and the spilled parts
// dropped or replaced. A crash between the two leaves orphans, which
// PlanOrphans finds. It returns the committed manifest (nil when nothing
// expired). One call drops at most about retentionBatch segments, the
// oldest: while it returns a manifest, more may have expired, and the
// caller calls again.
func ApplyRetention(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, ms *ManifestStore, spills SpillLoader, epoch int32, pol RetentionPolicy, now time.Time, localBytes int64, metrics *Metrics) (*Manifest, error) {
	// First a plan on the manifest as it stands, without the store's
	// commit lock: the lock is held by an upload's commit in flight, and
	// the archive loop, which runs retention between the starts of
	// uploads, must not wait for that commit when nothing has expired (as
	// almost always). A commit in flight only adds segments at the end;
	// what it makes expire is found at the next run.
	// A commit of unknown outcome (DeleteRecords' moving the log start,
	// say) is read back first: the plan must see it.
	if err := ms.Settle(ctx); err != nil {
		return nil, err
	}
	if plan, err := PlanRetention(ctx, spills, p, ms.Current(), pol, now.UnixMilli(), localBytes); err == nil && plan.empty() {
		return nil, nil
	}
	var plan RetentionPlan
	var doomedHead []Segment
	var old []Spill // the spilled parts the plan drops or replaces
	m, err := ms.Commit(ctx, epoch, func(m *Manifest) error {
		var err error
		plan, err = PlanRetention(ctx, spills, p, m, pol, now.UnixMilli(), localBytes)
		if err != nil {
			return err
		}
		if plan.empty() {
			return errNothingToDo
		}
		old = append([]Spill(nil), m.Spills[:plan.DropSpills]...)
		if plan.Trim != nil {
			old = append(old, m.Spills[plan.DropSpills])
		}
		doomedHead = append(doomedHead[:0], m.Segments[:plan.DropSegments]...)
		plan.apply(m)
		return nil
	})
	if errors.Is(err, errNothingToDo) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Every object goes, whatever the others' outcome: a delete whose
	// response was lost took effect, and one that failed is left for
	// orphan cleanup; the first error is returned.
	var keys []string
	var first error
	addSegments := func(segs []Segment) {
		for _, s := range segs {
			keys = append(keys, l.SegmentKey(p, s.BaseOffset, s.ID), l.CompanionKey(p, s.BaseOffset, s.ID))
		}
	}
	for i, s := range old {
		var segs []Segment
		if plan.Trim != nil && i == len(old)-1 {
			segs = plan.TrimDropped
		} else {
			part, err := spills.LoadSpill(ctx, p, s)
			if err != nil {
				// The part and its segments are left for orphan
				// cleanup (no manifest names them now).
				if first == nil {
					first = fmt.Errorf("tiering: reading a dropped spilled part (left for orphan cleanup): %w", err)
				}
				continue
			}
			segs = part.Segments
		}
		addSegments(segs)
		keys = append(keys, l.SpillKey(p, s.BaseOffset, s.ID))
	}
	addSegments(doomedHead)
	if _, err := deleteEach(ctx, b, keys, metrics); err != nil && first == nil {
		first = fmt.Errorf("%w (left for orphan cleanup)", err)
	}
	return m, first
}

var errNothingToDo = errors.New("tiering: nothing to do")

// PlanOrphans returns the keys under a partition's prefix that are
// segment, companion or spill objects that neither the manifest nor one of
// its spilled parts (parts, read by the caller) names and that were last
// modified before now-grace (an upload in progress is younger). Pure:
// listing is the partition prefix's listing.
func PlanOrphans(m *Manifest, parts []*Manifest, listing []objectstore.Attrs, now time.Time, grace time.Duration) []string {
	var keys []string
	o := newOrphanPlan(m, parts, now, grace, func(key string) { keys = append(keys, key) })
	for _, a := range listing {
		o.consider(a)
	}
	return keys
}

// orphanPlan finds a partition's orphaned objects in its listing, one
// object at a time, and hands each to found: what it holds is the names
// the manifest and its parts keep, not the listing (a partition with a
// year of history lists hundreds of thousands of objects), nor the
// orphans.
type orphanPlan struct {
	live   map[[16]byte]bool
	before time.Time
	found  func(key string)
	young  func(key string)
	spare  func(key string) bool
	// unread: the segments of base offsets in [unread.from, unread.to)
	// may be named by spilled parts not read; their objects are kept.
	unread struct{ from, to int64 }
}

func newOrphanPlan(m *Manifest, parts []*Manifest, now time.Time, grace time.Duration, found func(key string)) *orphanPlan {
	live := map[[16]byte]bool{}
	for _, s := range m.Segments {
		live[s.ID] = true
	}
	for _, s := range m.Spills {
		live[s.ID] = true
	}
	for _, part := range parts {
		for _, s := range part.Segments {
			live[s.ID] = true
		}
	}
	return &orphanPlan{live: live, before: now.Add(-grace), found: found}
}

// consider hands a's key to found if a is an orphan, and to young (when
// set) if it would be but for its age.
func (o *orphanPlan) consider(a objectstore.Attrs) {
	id, ok := parseObjectID(a.Key)
	if base, isSegment := keyBase(a.Key); isSegment && base >= o.unread.from && base < o.unread.to {
		return
	}
	switch {
	case !ok || o.live[id]:
	case o.spare != nil && o.spare(a.Key):
	case a.LastModified.Before(o.before):
		o.found(a.Key)
	case o.young != nil:
		o.young(a.Key)
	}
}

// CleanOrphans deletes a partition's orphaned objects (see PlanOrphans),
// reading every spilled part of m through spills. Only the partition's
// leader runs it, after loading the manifest.
func CleanOrphans(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, m *Manifest, spills SpillLoader, now time.Time, grace time.Duration, metrics *Metrics) (int, error) {
	return cleanOrphans(ctx, b, l, p, m, nil, sweepScope{ranges: []keyRange{{}}}, spills, now, grace, metrics)
}

// keyRange is a range of a partition's keys: those after after ("": from
// the first) and before before ("": to the last).
type keyRange struct{ after, before string }

// sweepScope is what of a partition's keys an orphan sweep looks at.
type sweepScope struct {
	ranges []keyRange
	// namesFrom: only the spilled parts that name segments of this base
	// offset or above are read (a tail needs the last one or two, where a
	// year of history has hundreds); the objects of the segments the
	// others may name are kept unread.
	namesFrom int64
	// young, when set, is handed the orphans passed over as younger
	// than the grace.
	young func(key string)
	// spare, when set, keeps the orphans it returns true for
	// (ArchiverConfig.Spare).
	spare func(key string) bool
}

// cleanOrphans is CleanOrphans that also keeps what keep names and looks
// only at what scope says. The spilled parts m names (those scope needs)
// are read before the listing, which is planned as it comes. A commit that lands meanwhile (the leader's own, on its
// commit goroutine) changes nothing: it names only objects written since
// the oldest upload in flight began, which now must precede by the grace,
// and it moves the names it already had into a new spilled part, never
// out of what was read. Remote retention, which may run meanwhile too,
// only drops names, and deletes their objects itself: what was read still
// keeps them.
func cleanOrphans(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, m *Manifest, keep []*Manifest, scope sweepScope, spills SpillLoader, now time.Time, grace time.Duration, metrics *Metrics) (int, error) {
	parts := append(make([]*Manifest, 0, len(m.Spills)+len(keep)), keep...)
	var unread struct{ from, to int64 }
	for _, s := range m.Spills {
		if s.NextOffset <= scope.namesFrom {
			if unread.to == 0 {
				unread.from = s.BaseOffset
			}
			unread.to = s.NextOffset
			continue
		}
		part, err := spills.LoadSpill(ctx, p, s)
		if err != nil {
			return 0, err // never guess what a part names
		}
		parts = append(parts, part)
	}
	d := pagedDeletes{ctx: ctx, b: b, metrics: metrics}
	plan := newOrphanPlan(m, parts, now, grace, d.add)
	plan.young, plan.spare, plan.unread = scope.young, scope.spare, unread
	var err error
	for _, r := range scope.ranges {
		err = b.ListAfter(ctx, l.PartitionPrefix(p), r.after, func(a objectstore.Attrs) error {
			if r.before != "" && a.Key >= r.before {
				return errRangeEnd
			}
			plan.consider(a)
			return nil
		})
		if errors.Is(err, errRangeEnd) {
			err = nil
		}
		if err != nil {
			break
		}
	}
	d.flush() // what was listed is orphaned all the same
	return d.result(err)
}

var errRangeEnd = errors.New("tiering: past the end of the range")

// pagedDeletes deletes the keys a listing hands it as the listing goes, a
// page (deletePage) at a time, each whatever the others' outcome: a
// caller that lists a year of history holds one page of names, not all of
// them.
type pagedDeletes struct {
	ctx     context.Context
	b       objectstore.Bucket
	metrics *Metrics
	keys    []string
	deleted int
	first   error
}

// add deletes key with the next page.
func (d *pagedDeletes) add(key string) {
	if d.keys = append(d.keys, key); len(d.keys) == deletePage {
		d.flush()
	}
}

// flush deletes the page gathered so far.
func (d *pagedDeletes) flush() {
	n, err := deleteEach(d.ctx, d.b, d.keys, d.metrics)
	d.deleted += n
	if err != nil && d.first == nil {
		d.first = err
	}
	d.keys = d.keys[:0]
}

// result returns how many objects were deleted and the listing's error
// (err), or else the first delete's.
func (d *pagedDeletes) result(err error) (int, error) {
	if err != nil {
		return d.deleted, err
	}
	return d.deleted, d.first
}

// DeleteTopic removes a deleted topic's objects: it writes the deletion
// marker first (so a reader of the bucket knows) and deletes every other
// object under the topic. The marker stays, a tombstone: a write still on
// its way when the topic was deleted (its descriptor, a segment) may land
// after, and with the marker a reader still skips the topic, and
// PendingDeletions finds what landed. Resumable: run it again after a
// crash (PendingDeletions finds the unfinished ones); a run again keeps
// the first marker's time.
func DeleteTopic(ctx context.Context, b objectstore.Bucket, l Layout, topic string, id [16]byte, now time.Time, metrics *Metrics) error {
	marker := l.DeletedKey(topic, id)
	err := putJSON(ctx, b, marker, DeletionMarker{Name: topic, ID: TopicDir(topic, id)[len(topic)+1:], DeletedAt: now.UTC()}, objectstore.PutOptions{IfNoneMatch: true})
	if err != nil && !errors.Is(err, objectstore.ErrPreconditionFailed) {
		return fmt.Errorf("tiering: marking %s deleted: %w", topic, err)
	}
	_, err = SweepDeletedTopic(ctx, b, l, topic, id, metrics)
	return err
}

// SweepDeletedTopic deletes what lies under a deleted topic besides its
// deletion marker: a write that was on its way when the topic was deleted
// and landed after DeleteTopic ran. One LIST when nothing did. It deletes
// as the listing goes, a page's worth at a time (a topic with a year of
// history is millions of objects), and goes on past a failed delete. It
// returns how many objects it found (deleted, or not when err says so).
func SweepDeletedTopic(ctx context.Context, b objectstore.Bucket, l Layout, topic string, id [16]byte, metrics *Metrics) (int, error) {
	marker := l.DeletedKey(topic, id)
	d := pagedDeletes{ctx: ctx, b: b, metrics: metrics}
	found := 0
	err := b.List(ctx, l.TopicPrefix(topic, id), func(a objectstore.Attrs) error {
		if a.Key == marker {
			return nil
		}
		found++
		d.add(a.Key)
		return ctx.Err()
	})
	d.flush()
	_, err = d.result(err)
	return found, err
}

// deletePage is how many keys the deletes that go with a listing (orphan
// sweeps, a deleted topic's objects) gather before they delete them: one
// page of a listing, and one S3 DeleteObjects request.
const deletePage = 1000

// deleteEach deletes keys, each whatever the others' outcome (a delete
// that fails is left for the next sweep), in the store's batches
// (Bucket.DeleteMany), and returns how many went and the first error.
func deleteEach(ctx context.Context, b objectstore.Bucket, keys []string, metrics *Metrics) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	failed, err := b.DeleteMany(ctx, keys)
	deleted := len(keys) - len(failed)
	metrics.deleted(deleted)
	if err != nil {
		return deleted, fmt.Errorf("tiering: %d of %d deletes failed: %w", len(failed), len(keys), err)
	}
	return deleted, nil
}

// PendingDeletions lists the deleted topics whose directory holds objects
// besides the deletion marker: a deletion that has not finished, or a
// write that landed after it.
func PendingDeletions(ctx context.Context, b objectstore.Bucket, l Layout) ([]DeletionMarker, error) {
	return deletions(ctx, b, l, time.Time{})
}

// RecentDeletions lists PendingDeletions' topics and, besides them, those
// whose deletion marker was written at or after since: writes on their
// way when they were deleted may still land there.
func RecentDeletions(ctx context.Context, b objectstore.Bucket, l Layout, since time.Time) ([]DeletionMarker, error) {
	if since.IsZero() {
		since = time.Unix(0, 1) // every marker
	}
	return deletions(ctx, b, l, since)
}

// deletions lists the deleted topics with objects besides their marker,
// and those whose marker is not older than since (zero: none), in the
// order of their directories. It lists the bucket's directories and
// looks for each one's marker, and lists only a deleted topic's
// directory, as far as its first object besides the marker: its cost
// follows the topics, not the segments they hold.
func deletions(ctx context.Context, b objectstore.Bucket, l Layout, since time.Time) ([]DeletionMarker, error) {
	errOther := errors.New("an object besides the marker")
	found, err := eachTopicDir(ctx, b, l, func(ctx context.Context, dir string) (*DeletionMarker, error) {
		k := dir + deletedName
		a, err := b.Head(ctx, k)
		if errors.Is(err, objectstore.ErrNotFound) {
			return nil, nil // not deleted
		}
		if err != nil {
			return nil, err
		}
		if since.IsZero() || a.LastModified.Before(since) {
			err := b.List(ctx, dir, func(o objectstore.Attrs) error {
				if o.Key != k {
					return errOther
				}
				return nil
			})
			if err == nil {
				return nil, nil // finished: the tombstone alone
			}
			if err != errOther {
				return nil, err
			}
		}
		data, err := objectstore.ReadAll(ctx, b, k, maxDescriptorSize)
		if err != nil {
			return nil, err
		}
		d, err := DecodeDeletionMarker(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	var out []DeletionMarker
	for _, d := range found {
		out = append(out, *d)
	}
	return out, nil
}
