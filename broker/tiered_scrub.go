package broker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/shale-log/shale/tiering"
)

// The remote logs are scrubbed as the local ones are (scrubLoop): about
// once per RemoteScrubInterval, at most ScrubBytesPerSecond, by each
// partition's leader, which reads every segment object whole and checks
// its batches and companion (tiering.VerifyPartition, what `shale tier
// verify` runs).
// A scrub goes a bounded stretch at a time and records where it is in the
// partition's scrub note in the bucket, so that neither a restart nor a
// leader change starts it over or puts it off. What it finds is logged,
// object by object, and counted in shale_remote_damaged_objects: the
// bucket holds the only copy of most of a remote log, so damage there is
// for an operator (the objects' own store may hold earlier versions).

// remoteScrubStep bounds the segment bytes one step of a partition's
// scrub reads before its note records where the next goes on (a variable
// for tests).
var remoteScrubStep int64 = 1 << 30

// remoteScrubCall bounds a step's object-store calls other than the
// segment reads (which ScrubBytesPerSecond paces).
const remoteScrubCall = time.Minute

// scrubNoteCache is a partition's scrub note as the leader of one epoch
// read or wrote it.
type scrubNoteCache struct {
	epoch int32
	note  *tiering.ScrubNote // nil: none
}

// remoteScrubs holds what the scrubs of the partitions this broker leads
// found: damaged objects by partition.
type remoteScrubs struct {
	mu      sync.Mutex
	damaged map[tiering.Partition]int
}

// scrubRemote scrubs the remote logs of the partitions this broker leads
// whose scrub is under way or due (RemoteScrubInterval after the last
// complete one, or never done), the longest waiting first, a step each.
func (s *tierService) scrubRemote(ctx context.Context, now time.Time) {
	b := s.b
	type due struct {
		p     *partition
		epoch int32
		note  *tiering.ScrubNote
	}
	var ps []due
	led := map[tiering.Partition]bool{}
	for _, p := range b.replicas.all() {
		t := p.tier
		leader, epoch := p.leaderState()
		if cfg := p.cfg.Load(); t == nil || leader != p.nodeID || !t.ready.Load() || p.state.Load().unarchived || cfg == nil || !cfg.remoteStorage {
			continue // not tiered, not led, or its remote log being deleted
		}
		led[t.part] = true
		note, err := t.scrubNoteOf(ctx, epoch)
		if err != nil {
			b.log.Warn("reading a remote log's scrub note", "topic", t.part.Topic, "partition", t.part.Index, "err", err)
			continue
		}
		if note != nil && note.Next == 0 && now.Sub(note.CompletedAt) < b.cfg.RemoteScrubInterval {
			continue
		}
		ps = append(ps, due{p, epoch, note})
	}
	s.forgetScrubs(led)
	waited := func(d due) time.Time {
		if d.note == nil {
			return time.Time{}
		}
		if d.note.Next > 0 {
			return d.note.StartedAt
		}
		return d.note.CompletedAt
	}
	slices.SortFunc(ps, func(a, b due) int { return waited(a).Compare(waited(b)) })
	for _, d := range ps {
		if ctx.Err() != nil {
			return
		}
		d.p.tier.scrubStep(ctx, d.p, d.epoch, d.note)
	}
}

// scrubNoteOf returns the partition's scrub note, read from the bucket
// once per leader epoch.
func (t *partitionTier) scrubNoteOf(ctx context.Context, epoch int32) (*tiering.ScrubNote, error) {
	if c := t.scrubNote.Load(); c != nil && c.epoch == epoch {
		return c.note, nil
	}
	ctx, cancel := context.WithTimeout(ctx, remoteScrubCall)
	defer cancel()
	note, err := tiering.ReadScrubNote(ctx, t.svc.bucket, t.svc.layout, t.part)
	if err != nil {
		return nil, err
	}
	t.scrubNote.Store(&scrubNoteCache{epoch: epoch, note: note})
	return note, nil
}

// scrubStep scrubs a stretch of p's remote log, from where its note says
// the scrub under way is (its start when none is), and writes the note.
func (t *partitionTier) scrubStep(ctx context.Context, p *partition, epoch int32, note *tiering.ScrubNote) {
	s := t.svc
	log := s.b.log.With("topic", t.part.Topic, "partition", t.part.Index)
	next := tiering.ScrubNote{LeaderEpoch: epoch, StartedAt: time.Now()}
	if note != nil {
		next.CompletedAt = note.CompletedAt
		if note.Next > 0 {
			next.Next, next.StartedAt, next.Damaged = note.Next, note.StartedAt, note.Damaged
		}
	}
	// The step ends with the term (another leader goes on from the
	// note), and within twice the time its reads take at the budget: a
	// store that hangs holds the scrubs no longer.
	limit := 30 * time.Minute
	if rate := s.b.cfg.ScrubBytesPerSecond; rate > 0 {
		limit = 5*time.Minute + 2*time.Duration(float64(remoteScrubStep)/float64(rate)*float64(time.Second))
	}
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
				if l, e := p.leaderState(); l != p.nodeID || e != epoch {
					cancel()
					return
				}
			}
		}
	}()
	v, err := tiering.VerifyPartition(sctx, s.bucket, s.layout, t.part, tiering.VerifyOptions{
		Deep: true, BytesPerSecond: s.b.cfg.ScrubBytesPerSecond, From: next.Next, MaxReadBytes: remoteScrubStep,
	})
	if v != nil {
		s.b.metrics.remoteScrubbedBytes.Add(float64(v.ReadBytes))
	}
	if err != nil {
		if ctx.Err() == nil {
			if l, e := p.leaderState(); l == p.nodeID && e == epoch {
				log.Warn("scrubbing the remote log", "from", next.Next, "err", err)
			}
		}
		return
	}
	for _, pr := range v.Problems {
		log.Error("an object of the remote log is damaged", "key", pr.Key, "base_offset", pr.BaseOffset, "next_offset", pr.NextOffset, "problem", pr.What)
	}
	next.Damaged += len(v.Problems)
	next.Next = v.Next
	if v.Complete {
		next.Next, next.CompletedAt = 0, time.Now()
		if next.Damaged > 0 {
			log.Error("the remote log's scrub found damaged objects", "damaged", next.Damaged, "began", next.StartedAt)
		} else {
			log.Info("the remote log's scrub found nothing damaged", "began", next.StartedAt)
		}
	}
	s.setScrubDamage(t.part, next.Damaged)
	pctx, pcancel := context.WithTimeout(ctx, remoteScrubCall)
	defer pcancel()
	if err := tiering.PutScrubNote(pctx, s.bucket, s.layout, t.part, next); err != nil {
		log.Warn("writing the remote log's scrub note", "err", err)
		t.scrubNote.Store(nil) // read it again
		return
	}
	t.scrubNote.Store(&scrubNoteCache{epoch: epoch, note: &next})
}

// setScrubDamage records what the scrub of part found, and the gauge their
// sum.
func (s *tierService) setScrubDamage(part tiering.Partition, n int) {
	s.scrubs.mu.Lock()
	defer s.scrubs.mu.Unlock()
	if s.scrubs.damaged == nil {
		s.scrubs.damaged = map[tiering.Partition]int{}
	}
	s.scrubs.damaged[part] = n
	s.setScrubGaugeLocked()
}

// forgetScrubs drops what the scrubs of the partitions this broker no
// longer leads found: their new leaders report it.
func (s *tierService) forgetScrubs(led map[tiering.Partition]bool) {
	s.scrubs.mu.Lock()
	defer s.scrubs.mu.Unlock()
	for part := range s.scrubs.damaged {
		if !led[part] {
			delete(s.scrubs.damaged, part)
		}
	}
	s.setScrubGaugeLocked()
}

func (s *tierService) setScrubGaugeLocked() {
	total := 0
	for _, n := range s.scrubs.damaged {
		total += n
	}
	s.b.metrics.remoteDamaged.Set(float64(total))
}
