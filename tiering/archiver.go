package tiering

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

// Source is what the archiver reads from: a partition's local log.
type Source interface {
	Segments() []localseg.SegmentInfo
	OpenSealed(base int64) (*localseg.SealedSegment, error)
}

var _ Source = (*localseg.Log)(nil)

// ArchiverConfig configures one partition's archiver.
type ArchiverConfig struct {
	Bucket    objectstore.Bucket
	Layout    Layout
	Partition Partition
	Manifest  *ManifestStore
	Source    Source
	Logger    *slog.Logger
	Metrics   *Metrics // nil: none
	// CallTimeout bounds each object-store call (default 30s, plus a
	// second per MiB for segment uploads).
	CallTimeout time.Duration
	// OnCommit is called after every manifest commit, with the new
	// manifest (the broker moves the local retention guard).
	OnCommit func(*Manifest)
	// Fault, when set, is called at the points of an upload where
	// crash tests kill the process (FaultUploaded, FaultCommitted), once
	// per batch.
	Fault func(point string)
	// MaxBatch is the most segments one UploadNext uploads at once and
	// commits in one manifest write (default GOMAXPROCS, at most 4: on
	// 2 cores, 2 in flight caught up with the ingest sooner than 4).
	MaxBatch int
	// SealedAt, when set, says when the segment at a base offset was
	// sealed (zero: unknown), so that the wait before its upload starts
	// is measured.
	SealedAt func(base int64) time.Time
	// SweepEvery, when above 0, is about how often Run deletes the
	// partition's orphaned objects, each wait drawn from [SweepEvery/2,
	// 3*SweepEvery/2) so that partitions do not all LIST at once. It
	// needs Spills.
	SweepEvery time.Duration
	// FullSweepEvery, when above 0, is about how often (jittered the
	// same way) a sweep lists all of the partition's objects, as
	// CleanOrphans does; the sweeps between list only the tail where
	// this archiver's own uploads can have left orphans (maybeSweep), a
	// page or two where a full listing of a year of history is hundreds
	// of pages. 0: every sweep lists everything.
	FullSweepEvery time.Duration
	// SweepAtStart makes Run's first look sweep: a new leader's, for the
	// orphans its predecessors left. Their failed uploads lie from where
	// the partition's sweep note says (SweepNote), everything when there
	// is none; the failed deletes of their remote retention lie below the
	// manifest's first segment, which every sweep lists.
	SweepAtStart bool
	// OrphanGrace is how old an object the manifest does not name must be
	// before a sweep deletes it, counted back from the start of the
	// oldest upload in flight (whose objects, and those of the uploads
	// after it, a commit may still name).
	OrphanGrace time.Duration
	// Spills reads the manifest's spilled parts for the sweep.
	Spills SpillLoader
	// Spare, when set, keeps from the sweeps the unnamed objects it
	// returns true for: those a compaction of the remote log replaced,
	// whose deletion waits until reads begun before its commit are done
	// (CompactResult.Replaced).
	Spare func(key string) bool
}

// Fault points of an upload (ArchiverConfig.Fault).
const (
	// FaultUploaded: the segment and its companion are in the bucket,
	// the manifest does not name them yet.
	FaultUploaded = "uploaded"
	// FaultCommitted: the manifest names the segment; the local log
	// has not been told yet (its copy cannot be deleted yet).
	FaultCommitted = "committed"
)

// Archiver uploads one partition's sealed segments and commits them to its
// manifest. The partition's leader runs it; a new leader runs a new one.
type Archiver struct {
	cfg ArchiverConfig
	// nextSweep is when Run next sweeps orphans, and nextFullSweep when
	// that sweep lists everything (Run's goroutine only; kept across Run
	// calls so that failing uploads do not postpone them).
	nextSweep, nextFullSweep time.Time
	// readNote: the next sweep first reads the sweep note of the leaders
	// before (SweepAtStart). noted: this term has written its note, and
	// notedFloor is the base offset it wrote.
	readNote, noted bool
	notedFloor      int64
	// coveredBelow: a sweep has looked at every object below this base
	// offset that is older than the grace (none has yet: 0). Objects
	// there the manifest does not name are those remote retention dropped
	// and failed to delete (or a late write of an older leader): the
	// next sweep lists from coveredBelow to the manifest's first segment.
	coveredBelow int64
	// sweeping is the sweep on its own goroutine (nil: none), whose end
	// the next maybeSweep takes in.
	sweeping *sweep
	// What a tail sweep must cover of this archiver's uploads (the
	// caller's goroutine: start and maybeSweep). open: the uploads
	// started that may still be committed (Run's every look drops the
	// others: settleOpen). leftover: by base offset, when the last upload
	// of that base ended that was never committed, until a sweep has
	// looked at its objects.
	open     []*upload
	leftover map[int64]time.Time
}

// NewArchiver returns an archiver.
func NewArchiver(cfg ArchiverConfig) *Archiver {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = min(runtime.GOMAXPROCS(0), 4)
	}
	a := &Archiver{cfg: cfg, leftover: map[int64]time.Time{}}
	if cfg.SweepEvery > 0 && !cfg.SweepAtStart {
		a.nextSweep = time.Now().Add(sweepWait(cfg.SweepEvery))
	}
	a.readNote = cfg.SweepAtStart
	if cfg.FullSweepEvery > 0 {
		a.nextFullSweep = time.Now().Add(sweepWait(cfg.FullSweepEvery))
	}
	return a
}

// sweepWait is a wait in [every/2, 3*every/2).
func sweepWait(every time.Duration) time.Duration {
	return every/2 + mrand.N(every)
}

// upload is one segment of a batch on its way to the bucket.
type upload struct {
	base    int64 // the segment's base offset
	next    int64 // the segment's next offset
	started time.Time
	// committed is set once a manifest commit named the upload's objects
	// (by the goroutine that committed it).
	committed atomic.Bool
	done      chan struct{} // closed when the fields below are set
	seg       Segment
	logKey    string
	compKey   string
	err       error
	phases    [numPhases]time.Duration
	// uploaded is when the segment and its companion were in the
	// bucket (set with err, before done is closed).
	uploaded time.Time
}

// UploadNext uploads the oldest sealed local segments that end above the
// manifest's end and at or below limit (the high watermark, or the last
// stable offset), up to MaxBatch of them at once, then commits them to the
// manifest in one write as leader of epoch. It returns how many segments
// it committed. ErrFenced means a newer leader has taken over: stop.
//
// The segments of a batch and their companions are PUT in parallel; the
// commit names the longest run of them, from the oldest, whose objects
// are all in the bucket, so the manifest never has a gap. The objects of
// the others are deleted (the next call uploads them again under new
// names).
func (a *Archiver) UploadNext(ctx context.Context, epoch int32, limit int64) (int, error) {
	if err := a.settle(ctx); err != nil {
		return 0, err
	}
	m := a.cfg.Manifest.Current()
	end := m.End()
	var ups []*upload
	for _, s := range a.cfg.Source.Segments() {
		if s.Active || s.NextOffset > limit || len(ups) == a.cfg.MaxBatch {
			break
		}
		if s.NextOffset > end && s.Size > 0 {
			ups = append(ups, a.start(ctx, epoch, s, len(ups) == 0 && m.SegmentCount() > 0, end, nil))
		}
	}
	if len(ups) == 0 {
		return 0, nil
	}
	for _, u := range ups {
		<-u.done
	}
	// The committable run: from the oldest, up to the first failure.
	n := 0
	for n < len(ups) && ups[n].err == nil {
		n++
	}
	var failed error
	if n < len(ups) {
		failed = ups[n].err
		for _, u := range ups[n+1:] {
			if u.err == nil {
				a.deleteQuietly(ctx, u.logKey, u.compKey)
			}
		}
	}
	if n == 0 {
		if errors.Is(failed, localseg.ErrNotSealed) {
			return 0, nil // deleted or truncated meanwhile: look again next time
		}
		return 0, failed
	}
	committed, nm, err := a.commit(ctx, epoch, ups[:n])
	if err != nil {
		return 0, err
	}
	a.onCommit(nm)
	if failed != nil && !errors.Is(failed, localseg.ErrNotSealed) {
		a.cfg.Logger.Warn("segment upload failed; retrying", "partition", a.cfg.Partition.String(), "err", failed)
	}
	return committed, nil
}

// RunHooks are what Run needs of its caller.
type RunHooks struct {
	// Limit is the offset uploads may reach (the broker's: the last
	// stable offset, and no further than what its disk has fsynced); read
	// before each pick.
	Limit func() int64
	// Wake signals that a segment was sealed or the limit moved.
	Wake <-chan struct{}
	// Idle is how long Run waits without a wake before it looks again.
	Idle time.Duration
	// Tick, when set, is called after every commit and wake (remote
	// retention, leadership checks); false stops Run.
	Tick func() bool
}

// Run uploads sealed segments as they come, as leader of epoch, until ctx
// ends, Tick says stop (nil), or an upload or commit fails (the error; the
// caller backs off and runs it again). Up to MaxBatch uploads are in flight
// at once, each started as soon as its segment is sealed below the limit;
// whenever the oldest ones are in the bucket, one manifest commit names
// them all. The commit runs on its own goroutine, one at a time: the
// slots its uploads held take new uploads at once, so a slow commit does
// not hold the next uploads back. An upload that is in the bucket frees
// its slot too, as soon as it ends, though it waits for an older one (or
// the commit in flight) to be committed: only the commits keep the order
// of offsets, never the uploads (at most 2*MaxBatch are uploading or
// waiting). The manifest never has a gap: a failed upload stops Run, and
// the younger uploads' objects are deleted.
func (a *Archiver) Run(ctx context.Context, epoch int32, h RunHooks) error {
	var (
		inflight   []*upload // uploading, or uploaded and not yet committing
		committing []*upload // named by the commit in flight (nil: none)
		commitDone chan commitResult
	)
	drain := func() {
		for _, u := range inflight {
			<-u.done
			if u.err == nil {
				a.deleteQuietly(ctx, u.logKey, u.compKey)
			}
		}
		inflight = nil
	}
	defer drain()
	defer func() {
		// A sweep in flight goes on past a failed Run, and ends with
		// the caller's ctx.
		if s := a.sweeping; s != nil && ctx.Err() != nil {
			<-s.done
		}
	}()
	if err := a.settle(ctx); err != nil {
		return err
	}
	defer func() {
		// The commit in flight is waited for: the objects it names
		// are left to it (deleted if it is fenced).
		if commitDone != nil {
			if r := <-commitDone; r.err == nil {
				a.onCommit(r.m)
			}
		}
	}()
	idle := time.NewTimer(h.Idle)
	defer idle.Stop()
	// ended has a signal whenever an upload ends (one pending at most).
	ended := make(chan struct{}, 1)
	for {
		// Start what the limit and the slots allow.
		m := a.cfg.Manifest.Current()
		picked := m.End()
		if n := len(committing); n > 0 {
			picked = max(picked, committing[n-1].next)
		}
		if n := len(inflight); n > 0 {
			picked = inflight[n-1].next
		}
		limit := h.Limit()
		uploading := 0
		for _, u := range inflight {
			if !isDone(u) {
				uploading++
			}
		}
		for _, s := range a.cfg.Source.Segments() {
			if s.Active || s.NextOffset > limit || uploading == a.cfg.MaxBatch || len(inflight) == 2*a.cfg.MaxBatch {
				break
			}
			if s.NextOffset > picked && s.Size > 0 {
				first := len(inflight) == 0 && len(committing) == 0
				inflight = append(inflight, a.start(ctx, epoch, s, first && m.SegmentCount() > 0, picked, ended))
				picked = s.NextOffset
				uploading++
			}
		}
		if commitDone == nil && len(inflight) > 0 && isDone(inflight[0]) {
			// The oldest is done: commit it with every done one after it.
			n := 0
			for n < len(inflight) && isDone(inflight[n]) && inflight[n].err == nil {
				n++
			}
			if n == 0 {
				err := inflight[0].err
				inflight = inflight[1:]
				drain()
				if errors.Is(err, localseg.ErrNotSealed) {
					continue // deleted or truncated meanwhile: look again
				}
				return err
			}
			committing = slices.Clone(inflight[:n])
			inflight = slices.Clone(inflight[n:])
			commitDone = make(chan commitResult, 1)
			go func(ups []*upload, done chan<- commitResult) {
				_, nm, err := a.commit(ctx, epoch, ups)
				done <- commitResult{m: nm, err: err}
			}(committing, commitDone)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.Wake:
			if h.Tick != nil && !h.Tick() {
				return nil
			}
			if err := a.maybeSweep(ctx, epoch, slices.Concat(committing, inflight)); err != nil {
				return err
			}
		case <-idle.C:
			idle.Reset(h.Idle)
			if h.Tick != nil && !h.Tick() {
				return nil
			}
			if err := a.maybeSweep(ctx, epoch, slices.Concat(committing, inflight)); err != nil {
				return err
			}
		case r := <-commitDone:
			committing, commitDone = nil, nil
			if r.err != nil {
				return r.err
			}
			a.onCommit(r.m)
			if h.Tick != nil && !h.Tick() {
				return nil
			}
			if err := a.maybeSweep(ctx, epoch, inflight); err != nil {
				return err
			}
		case <-ended:
			// A slot is free, or the oldest can be committed: look.
		}
	}
}

// sweep is an orphan sweep running on its own goroutine: a full listing
// of a year of history takes a minute, which the uploads and commits of
// Run's loop do not wait for.
type sweep struct {
	done    chan struct{} // closed when deleted and err are set
	started time.Time
	full    bool
	// eligible: the objects written before it were old enough to go.
	// swept: the uploads that ended before it are done with once the
	// sweep has succeeded.
	eligible, swept time.Time
	// floor: the tail floor it listed from (a full sweep: where the tail
	// would have). covers: it lists every object below this base offset.
	// young: the lowest base offset below covers of an object it passed
	// over as too young (-1: none).
	floor, covers, young int64
	// note: it writes the sweep note when it succeeds; noteErr is how
	// that went.
	note    bool
	deleted int
	err     error
	noteErr error
}

// commitResult is the outcome of a commit run on its own goroutine.
type commitResult struct {
	m   *Manifest
	err error
}

// maybeSweep starts a sweep of the partition's orphaned objects on its own
// goroutine when one is due and none is in flight, and takes in the end of
// the one before. A sweep never deletes an object that a commit may still
// name:
//   - the names come from the manifest read from the bucket now (the
//     copy in memory may miss a commit whose outcome was unknown) and
//     from the one in memory; a manifest of a newer leader stops it
//     (ErrFenced) before it deletes anything;
//   - the grace is counted back from the start of the oldest upload in
//     flight, not from now: the uploads in flight (up to MaxBatch) wait
//     for the oldest one to be committed with it, however long it takes;
//   - a commit of this leader's whose outcome is unknown and which may
//     still land postpones the sweep until it is settled (fenced).
//
// Between full sweeps (FullSweepEvery), a sweep lists two ranges of the
// partition's objects, a page or two each whatever the history:
//   - the tail (Layout.TailAfter): the segments from the lowest base
//     offset of the stored manifest's end and of the uploads that may
//     have left objects behind (tailFloor), the manifest and the spilled
//     parts. Every orphan an upload can leave is there: an upload starts
//     at or above the manifest's end, and one never committed counts
//     until a sweep that began well after it ended (its objects old
//     enough, and listed) has passed. The uploads of the leaders before
//     count from where their sweep note says (SweepAtStart);
//   - the objects below the first segment the manifest names, from where
//     the sweeps before have looked (coveredBelow): those remote
//     retention dropped and could not delete.
//
// What both miss waits for the next full sweep: writes of an older leader
// that landed late, below the tail. A sweep that succeeds writes the sweep
// note for the next leader when it is full, the term's first, or when the
// note written last lags a page of segments behind (noteStale).
//
// The sweep runs concurrently with the commits (which name only objects
// younger than its cutoff, or already named) and with remote retention
// (which only drops names, and deletes the objects itself). Failures are
// logged: the next sweep retries.
func (a *Archiver) maybeSweep(ctx context.Context, epoch int32, inflight []*upload) error {
	if !a.sweeps() {
		return nil
	}
	a.settleOpen(inflight)
	if s := a.sweeping; s != nil {
		if !isClosed(s.done) {
			return nil // one at a time
		}
		a.sweeping = nil
		a.sweepEnded(s)
	}
	now := time.Now()
	if now.Before(a.nextSweep) || a.cfg.Manifest.hasPending() {
		// A commit of unknown outcome may still land and name
		// objects no stored manifest names: the next settle fences
		// it, and the sweep waits until then.
		return nil
	}
	a.nextSweep = now.Add(sweepWait(a.cfg.SweepEvery))
	cutoff := now
	for _, u := range inflight {
		if u.started.Before(cutoff) {
			cutoff = u.started
		}
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	stored, _, err := a.cfg.Manifest.read(rctx)
	cancel()
	if err != nil {
		a.cfg.Logger.Warn("orphan sweep: reading the manifest", "partition", a.cfg.Partition.String(), "err", err)
		return nil
	}
	if stored.LeaderEpoch > epoch {
		return fmt.Errorf("%w: manifest at epoch %d, leader at %d", ErrFenced, stored.LeaderEpoch, epoch)
	}
	if a.readNote {
		a.readNote = false
		a.inheritNote(ctx, now)
	}
	full := a.cfg.FullSweepEvery <= 0 || !now.Before(a.nextFullSweep)
	floor, first := a.tailFloor(stored), stored.firstBase()
	l, p := a.cfg.Layout, a.cfg.Partition
	var ranges []keyRange
	switch {
	case full:
		ranges = []keyRange{{}}
	case a.coveredBelow >= first:
		ranges = []keyRange{{after: l.TailAfter(p, floor)}}
	case floor <= first:
		ranges = []keyRange{{after: l.TailAfter(p, min(floor, a.coveredBelow))}}
	default:
		ranges = []keyRange{{after: l.TailAfter(p, a.coveredBelow), before: l.TailAfter(p, first)}, {after: l.TailAfter(p, floor)}}
	}
	// Segments the copy in memory names and the stored one does not (none
	// unless a commit raced the read) are kept too.
	extra := &Manifest{Segments: a.cfg.Manifest.Current().Segments}
	// An upload that ended a grace before the objects this sweep may
	// delete were written is done with once it succeeds: its objects, if
	// any are left, were old enough, and listed. (A grace more than
	// needed: the store's clock stamps the objects, not this one.)
	s := &sweep{done: make(chan struct{}), started: now, full: full,
		eligible: cutoff.Add(-a.cfg.OrphanGrace), swept: cutoff.Add(-2 * a.cfg.OrphanGrace),
		floor: floor, covers: first, young: -1, note: full || !a.noted || a.noteStale(stored, floor)}
	a.sweeping = s
	go func() {
		defer close(s.done)
		young := func(key string) {
			if base, ok := keyBase(key); ok && base < s.covers && (s.young < 0 || base < s.young) {
				s.young = base
			}
		}
		// No deadline on the whole: each call has its own, and a full
		// listing of a year of history is hundreds of them.
		scope := sweepScope{ranges: ranges, young: young, spare: a.cfg.Spare}
		if !full {
			// Nothing below the first segment is named, and the tail
			// starts at floor.
			scope.namesFrom = floor
		}
		s.deleted, s.err = cleanOrphans(ctx, a.cfg.Bucket, l, p, stored, []*Manifest{extra}, scope, a.cfg.Spills, cutoff, a.cfg.OrphanGrace, a.cfg.Metrics)
		if s.err == nil && s.note {
			nctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
			s.noteErr = putJSON(nctx, a.cfg.Bucket, l.SweepNoteKey(p), SweepNote{LeaderEpoch: epoch, UploadsFrom: floor, SweptAt: now.UTC()}, objectstore.PutOptions{})
			cancel()
		}
	}()
	return nil
}

// notePage is about how many segments the tail a sweep note gives the
// next leader may hold besides the one it would list now before the note
// is written again: a page of a listing (two objects a segment). A note a
// few hundred segments: one PUT where a new leader saves a LIST. Policy,
// not format: a variable only so that tests can make it small.
var notePage = 500

// noteStale reports whether the note written last gives the next leader a
// tail of more than notePage segments below the floor a sweep lists from
// now, m being the stored manifest.
func (a *Archiver) noteStale(m *Manifest, floor int64) bool {
	if a.notedFloor >= floor {
		return false
	}
	if len(m.Spills) > 0 && a.notedFloor < m.Spills[len(m.Spills)-1].NextOffset {
		return true // hundreds of segments in a spilled part alone
	}
	n := 0
	for _, s := range m.Segments {
		if s.BaseOffset >= a.notedFloor && s.BaseOffset < floor {
			n++
		}
	}
	return n >= notePage
}

// inheritNote takes in the sweep note of the leaders before: their failed
// uploads count as one of this archiver's that ended now, at the note's
// base offset, or at 0 (everything) when there is no note to read.
func (a *Archiver) inheritNote(ctx context.Context, now time.Time) {
	from := int64(0)
	rctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	n, err := readSweepNote(rctx, a.cfg.Bucket, a.cfg.Layout, a.cfg.Partition)
	cancel()
	switch {
	case err == nil:
		from = n.UploadsFrom
	case errors.Is(err, objectstore.ErrNotFound):
		a.cfg.Logger.Info("no sweep note: this term's first orphan sweeps list everything", "partition", a.cfg.Partition.String())
	default:
		a.cfg.Logger.Warn("reading the sweep note: this term's first orphan sweeps list everything", "partition", a.cfg.Partition.String(), "err", err)
	}
	if at, ok := a.leftover[from]; !ok || at.Before(now) {
		a.leftover[from] = now
	}
}

// sweepEnded takes in the end of sweep s.
func (a *Archiver) sweepEnded(s *sweep) {
	switch {
	case s.err != nil:
		// A full sweep due is still due.
		a.cfg.Logger.Warn("orphan sweep", "partition", a.cfg.Partition.String(), "full", s.full, "deleted", s.deleted, "err", s.err)
		return
	case s.deleted > 0:
		a.cfg.Logger.Info("orphan sweep deleted objects no manifest names", "partition", a.cfg.Partition.String(), "full", s.full, "count", s.deleted)
	}
	if s.full && a.cfg.FullSweepEvery > 0 {
		a.nextFullSweep = s.started.Add(sweepWait(a.cfg.FullSweepEvery))
	}
	switch {
	case s.noteErr != nil:
		a.cfg.Logger.Warn("writing the sweep note", "partition", a.cfg.Partition.String(), "err", s.noteErr)
	case s.note:
		a.noted, a.notedFloor = true, s.floor
	}
	covered := s.covers
	if s.young >= 0 {
		covered = s.young
	}
	a.coveredBelow = max(a.coveredBelow, covered)
	maps.DeleteFunc(a.leftover, func(_ int64, ended time.Time) bool { return ended.Before(s.swept) })
}

// waitSweep waits for the sweep in flight, if any, and takes in its end.
func (a *Archiver) waitSweep() {
	if s := a.sweeping; s != nil {
		<-s.done
		a.sweeping = nil
		a.sweepEnded(s)
	}
}

func isDone(u *upload) bool { return isClosed(u.done) }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// start begins the upload of a sealed segment in its own goroutine. With
// checkGap, it warns when the segment does not start at end (the remote
// log's end). When the upload ends it sends on ended if ended has room
// (nil: no signal).
func (a *Archiver) start(ctx context.Context, epoch int32, s localseg.SegmentInfo, checkGap bool, end int64, ended chan<- struct{}) *upload {
	u := &upload{base: s.BaseOffset, next: s.NextOffset, started: time.Now(), done: make(chan struct{})}
	a.track(u)
	if a.cfg.SealedAt != nil {
		if at := a.cfg.SealedAt(s.BaseOffset); !at.IsZero() && at.Before(u.started) {
			u.phases[phaseWait] = u.started.Sub(at)
		}
	}
	gapAt := int64(-1)
	if checkGap {
		gapAt = end
	}
	go func() {
		u.err = a.uploadOne(ctx, epoch, s.BaseOffset, gapAt, u)
		u.uploaded = time.Now()
		close(u.done)
		if ended != nil {
			select {
			case ended <- struct{}{}:
			default:
			}
		}
	}()
	return u
}

// sweeps reports whether Run sweeps orphans.
func (a *Archiver) sweeps() bool { return a.cfg.SweepEvery > 0 && a.cfg.Spills != nil }

// track adds u to the uploads a tail sweep must cover (when Run sweeps).
func (a *Archiver) track(u *upload) {
	if a.sweeps() {
		a.open = append(a.open, u)
	}
}

// settleOpen moves out of open the uploads that are over: the committed
// ones go, and those done and no longer in flight (inflight: the ones a
// commit may still name) go to leftover.
func (a *Archiver) settleOpen(inflight []*upload) {
	a.open = slices.DeleteFunc(a.open, func(u *upload) bool {
		switch {
		case u.committed.Load():
			return true
		case !isDone(u) || slices.Contains(inflight, u):
			return false
		}
		if at, ok := a.leftover[u.base]; !ok || at.Before(u.uploaded) {
			a.leftover[u.base] = u.uploaded
		}
		return true
	})
}

// tailFloor is the lowest base offset a tail sweep lists from: the stored
// manifest's end (every upload after starts there or above), or the base
// of an upload that may have left objects behind.
func (a *Archiver) tailFloor(stored *Manifest) int64 {
	floor := stored.End()
	for _, u := range a.open {
		if !u.committed.Load() {
			floor = min(floor, u.base)
		}
	}
	for base := range a.leftover {
		floor = min(floor, base)
	}
	return floor
}

// commit names the uploaded segments ups (consecutive, the oldest first)
// in the manifest in one write, and returns how many it named (those a
// previous commit named already are not) and the manifest committed.
// Objects it does not name are deleted (when it is fenced, those the newer
// leader's manifest does not name). It does not call OnCommit.
func (a *Archiver) commit(ctx context.Context, epoch int32, ups []*upload) (int, *Manifest, error) {
	a.fault(FaultUploaded)
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	var committed []*upload
	commitStart := time.Now()
	nm, err := a.cfg.Manifest.Commit(cctx, epoch, func(m *Manifest) error {
		committed = committed[:0]
		for _, u := range ups {
			if m.End() >= u.seg.NextOffset {
				continue // someone committed this range already
			}
			m.Segments = append(m.Segments, u.seg)
			committed = append(committed, u)
		}
		return nil
	})
	cancel()
	commitTook := time.Since(commitStart)
	if err != nil {
		if errors.Is(err, ErrFenced) {
			a.deleteUnnamed(ctx, ups)
		}
		// Otherwise the commit may or may not have landed: the
		// objects stay; orphan cleanup removes them if it did not.
		a.cfg.Metrics.uploadError()
		return 0, nil, fmt.Errorf("tiering: committing %s at %d: %w", a.cfg.Partition, ups[0].seg.BaseOffset, err)
	}
	for _, u := range ups {
		if !slices.Contains(committed, u) {
			a.deleteQuietly(ctx, u.logKey, u.compKey)
		}
	}
	if len(committed) > 0 {
		a.fault(FaultCommitted)
		a.cfg.Metrics.committed()
		for _, u := range committed {
			u.committed.Store(true)
			took := time.Since(u.started)
			// The commit is shared: each segment is charged its part.
			u.phases[phaseCommit] = commitTook / time.Duration(len(committed))
			u.phases[phaseQueue] = max(0, commitStart.Sub(u.uploaded))
			a.cfg.Metrics.uploaded(u.seg.Size+u.seg.CompanionSize, took, u.phases)
			// One line per sealed segment: bounded by segment.bytes
			// and segment.ms, as Kafka's segment roll lines are.
			a.cfg.Logger.Info("segment uploaded", "partition", a.cfg.Partition.String(), "base", u.seg.BaseOffset, "next", u.seg.NextOffset,
				"bytes", u.seg.Size, "took", took.Round(time.Millisecond), "batch", len(committed))
		}
	}
	return len(committed), nm, nil
}

// deleteUnnamed deletes the objects of the uploads ups whose commit was
// fenced, except those the newer leader's manifest (the one the commit read
// back) names: the fenced write may have landed, its response lost, before
// the newer leader read it and built on it. An upload whose naming cannot
// be checked keeps its objects (orphan cleanup under the newer leader
// decides).
func (a *Archiver) deleteUnnamed(ctx context.Context, ups []*upload) {
	m := a.cfg.Manifest.Current()
	var spills SpillLoader = BucketSpills{Bucket: a.cfg.Bucket, Layout: a.cfg.Layout}
	if a.cfg.Spills != nil {
		spills = a.cfg.Spills
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	for _, u := range ups {
		seg, ok, err := FindSegment(ctx, spills, a.cfg.Partition, m, u.seg.BaseOffset)
		switch {
		case err != nil:
			a.cfg.Logger.Warn("keeping a fenced upload's objects: the newer manifest could not be read", "partition", a.cfg.Partition.String(), "base", u.seg.BaseOffset, "err", err)
		case ok && seg.ID == u.seg.ID:
			// The newer leader's manifest names it: it is theirs now.
		default:
			a.deleteQuietly(ctx, u.logKey, u.compKey)
		}
	}
}

// settle reads the manifest back when a commit's outcome is unknown, so
// that segments it committed are not uploaded again.
func (a *Archiver) settle(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	if err := a.cfg.Manifest.Settle(ctx); err != nil {
		return fmt.Errorf("tiering: reading back %s's manifest after a commit of unknown outcome: %w", a.cfg.Partition, err)
	}
	return nil
}

// onCommit tells the caller of a commit's new manifest, on the goroutine
// of UploadNext or Run.
func (a *Archiver) onCommit(nm *Manifest) {
	if a.cfg.OnCommit != nil {
		a.cfg.OnCommit(nm)
	}
}

// uploadOne PUTs one sealed segment and its companion (at once) under new
// names, recording in u what to commit and where its time went. It warns
// when the segment starts above gapAt (-1: no check).
func (a *Archiver) uploadOne(ctx context.Context, epoch int32, base, gapAt int64, u *upload) error {
	t0 := time.Now()
	ss, err := a.cfg.Source.OpenSealed(base)
	if err != nil {
		return err
	}
	defer ss.Close()
	if gapAt >= 0 && ss.BaseOffset > gapAt {
		a.cfg.Logger.Warn("remote log has a gap: local data below the segment was deleted before upload",
			"partition", a.cfg.Partition.String(), "remote_end", gapAt, "segment", ss.BaseOffset)
	}
	seg := Segment{BaseOffset: ss.BaseOffset, NextOffset: ss.NextOffset, Size: ss.Size, MaxTimestamp: ss.MaxTimestamp,
		UploadEpoch: epoch, Epochs: ss.Epochs}
	if _, err := rand.Read(seg.ID[:]); err != nil {
		return err
	}
	u.phases[phaseOpen] = time.Since(t0)
	p, l := a.cfg.Partition, a.cfg.Layout
	u.logKey, u.compKey = l.SegmentKey(p, seg.BaseOffset, seg.ID), l.CompanionKey(p, seg.BaseOffset, seg.ID)
	compDone := make(chan error, 1)
	go func() {
		t := time.Now()
		comp := EncodeCompanion(&Companion{OffsetIndex: ss.OffsetIndex, TimeIndex: ss.TimeIndex, ProducerSnapshot: ss.ProducerSnapshot,
			Epochs: ss.Epochs, AbortedTxns: ss.AbortedTxns})
		seg.CompanionSize = int64(len(comp))
		err := a.put(ctx, u.compKey, bytes.NewReader(comp), int64(len(comp)))
		u.phases[phaseCompanion] = time.Since(t)
		compDone <- err
	}()
	t := time.Now()
	r := &timedReader{r: io.NewSectionReader(ss, 0, ss.Size)}
	err = a.put(ctx, u.logKey, r, ss.Size)
	took := time.Duration(r.took.Load())
	u.phases[phaseRead] = took
	u.phases[phaseSegmentPut] = max(0, time.Since(t)-took) // parts read at once can add up past it
	if cerr := <-compDone; err == nil {
		err = cerr
	}
	if err != nil {
		// Not committed: nothing may name these objects.
		a.deleteQuietly(ctx, u.logKey, u.compKey)
		return err
	}
	u.seg = seg
	return nil
}

// timedReader adds up the time its reads take (the segment file's share
// of an upload). It seeks, so that a store can stream it and rewind it
// for a retry, and reads at offsets, so that a multipart upload reads its
// parts at once, straight from the file.
type timedReader struct {
	r    *io.SectionReader
	took atomic.Int64 // nanoseconds
}

func (t *timedReader) Read(p []byte) (int, error) {
	start := time.Now()
	n, err := t.r.Read(p)
	t.took.Add(int64(time.Since(start)))
	return n, err
}

func (t *timedReader) ReadAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := t.r.ReadAt(p, off)
	t.took.Add(int64(time.Since(start)))
	return n, err
}

func (t *timedReader) Seek(off int64, whence int) (int64, error) { return t.r.Seek(off, whence) }

func (a *Archiver) fault(point string) {
	if a.cfg.Fault != nil {
		a.cfg.Fault(point)
	}
}

// put uploads one object of an upload under its new key. A put whose
// outcome is unknown (its response lost) is settled by looking: the key is
// this upload's alone and the put is create-only and atomic, so an object
// of the size under it is this put's, whole, and need not go up again.
func (a *Archiver) put(ctx context.Context, key string, r io.Reader, size int64) error {
	err := putNew(ctx, a.cfg.Bucket, key, r, size, a.cfg.CallTimeout)
	if err != nil {
		a.cfg.Metrics.uploadError()
	}
	return err
}

// putNew uploads an object under a key no one else writes, create-only,
// within callTimeout plus a second per MiB. A put whose outcome is unknown
// is settled by looking: an object of the size under the key is this
// put's, whole.
func putNew(ctx context.Context, b objectstore.Bucket, key string, r io.Reader, size int64, callTimeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, callTimeout+time.Duration(size>>20)*time.Second)
	defer cancel()
	_, err := b.Put(pctx, key, r, size, objectstore.PutOptions{IfNoneMatch: true})
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		hctx, cancel := context.WithTimeout(ctx, callTimeout)
		at, herr := b.Head(hctx, key)
		cancel()
		if herr == nil && at.Size == size {
			return nil
		}
	}
	return fmt.Errorf("tiering: uploading %s: %w", key, err)
}

// deleteQuietly removes objects of an upload that will never be committed
// (best effort: orphan cleanup catches what remains), going on for a
// moment after ctx ends (objectstore.CleanupContext): a shutdown that
// ends an upload to a store that hangs is not held up for the call
// timeout.
func (a *Archiver) deleteQuietly(ctx context.Context, keys ...string) {
	ctx, cancel := objectstore.CleanupContext(ctx, a.cfg.CallTimeout)
	defer cancel()
	for _, k := range keys {
		if err := a.cfg.Bucket.Delete(ctx, k); err != nil {
			a.cfg.Logger.Warn("deleting an uncommitted upload", "key", k, "err", err)
		}
	}
}
