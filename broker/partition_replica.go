package broker

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/shale-log/shale/broker/fetcher"
	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/localseg"
)

// replicaState is what a partition knows of replication beyond the
// metadata. Guarded by partition.repl.
type replicaState struct {
	// partitionEpoch is the metadata's; ISR writes compare-and-swap on
	// it. -1 before the first metadata is applied.
	partitionEpoch int32
	// As leader: each follower's fetch position and catch-up time, the
	// log end at which this leader's epoch began, and the ISR change sent
	// to the metadata store and not seen back yet (nil when none; it was
	// sent against partition epoch pendingFrom).
	followers   []replication.Follower
	epochStart  int64
	pendingISR  []int32
	pendingFrom int32
}

// replicaHost is what a partition asks of its broker for replication.
type replicaHost interface {
	// follow hands p to the replica fetcher for leader at leaderEpoch;
	// a leader of -1 or this broker takes it away from every fetcher.
	follow(p *partition, leader, leaderEpoch int32)
	// alterISR writes p's new ISR as its leader, in the background; on
	// failure it calls p.isrWriteFailed.
	alterISR(p *partition, isr []int32, leaderEpoch, partitionEpoch int32)
	// replicaLagMax is replica.lag.time.max.ms.
	replicaLagMax() time.Duration
	// isrIneligible reports a broker that may not join an ISR: one in a
	// controlled shutdown (KIP-841), or one without a live registration
	// (stopped, or its session lost), whose last fetch says nothing of
	// what it holds now.
	isrIneligible(id int32) bool
	// leaseProvenUntil is when this broker's registration may have
	// expired at the earliest, as far as it knows (zero: lost).
	leaseProvenUntil() time.Time
}

// applyReplicationLocked brings the replication state in line with new
// metadata. A leader that just took the role (or a new epoch) starts from
// fresh follower state, giving every follower replica.lag.time.max.ms to
// show up, and records its epoch's start in the log so followers can find
// where their divergent tails begin. Requires appendMu (exclusive) and
// repl.
func (p *partition) applyReplicationLocked(l leadership, roleChanged bool, now time.Time) {
	r := &p.repl.replicaState
	if r.pendingISR != nil && l.partitionEpoch > r.pendingFrom {
		r.pendingISR = nil
	}
	r.partitionEpoch = l.partitionEpoch
	if l.leader != p.nodeID {
		r.followers, r.pendingISR = nil, nil
		if leo := p.log.LogEndOffset(); roleChanged && p.hw.Load() > leo {
			p.setHW(leo)
		}
		return
	}
	if roleChanged {
		r.followers, r.pendingISR = nil, nil
		r.epochStart = p.log.LogEndOffset()
		// A failure here leaves the log offline; appends report it.
		_ = p.log.AssignEpoch(l.leaderEpoch)
	}
	for _, id := range l.replicas {
		if id == p.nodeID {
			continue
		}
		if !slices.ContainsFunc(r.followers, func(f replication.Follower) bool { return f.ID == id }) {
			r.followers = append(r.followers, replication.NewFollower(id, now.UnixMilli()))
		}
	}
}

// setHW sets the high watermark (a follower's from its leader, or a cut
// after truncation) and hands it to the log's checkpoint. Requires appendMu
// (exclusive).
func (p *partition) setHW(hw int64) {
	p.hw.Store(hw)
	p.log.SetHighWatermark(hw)
}

// roleChanged tells the broker's fetchers of a new leader or epoch. Called
// without locks.
func (p *partition) roleChanged(l leadership) {
	if p.host != nil {
		p.host.follow(p, l.leader, l.leaderEpoch)
	}
}

// maximalISRLocked is the ISR the high watermark waits for: the committed
// one plus the members of a change in flight. Requires repl.
func (p *partition) maximalISRLocked(s *partitionState) []int32 {
	isr := s.isr
	for _, id := range p.repl.pendingISR {
		if !slices.Contains(isr, id) {
			isr = append(slices.Clone(isr), id)
		}
	}
	return isr
}

// minimalISRLocked is the ISR as sure as this broker can be of it: the
// committed one less the members a change in flight drops (it may have
// landed unseen). Requires repl.
func (p *partition) minimalISRLocked(s *partitionState) []int32 {
	if p.repl.pendingISR == nil {
		return s.isr
	}
	var isr []int32
	for _, id := range s.isr {
		if slices.Contains(p.repl.pendingISR, id) {
			isr = append(isr, id)
		}
	}
	return isr
}

// followerFetch decides a follower's fetch as leader (fencing, divergence)
// and, when accepted, records the follower's position, which may advance
// the high watermark and add the follower to the ISR.
func (p *partition) followerFetch(replicaID, currentEpoch int32, fetchOffset, logStartOffset int64, lastFetchedEpoch int32, now time.Time) (replication.FetchAnswer, error) {
	endFor, err := p.fetchEpochEnds(lastFetchedEpoch)
	if err != nil {
		return replication.FetchAnswer{}, err
	}
	p.appendMu.RLock()
	s := p.state.Load()
	if err := p.writable(s); err != nil {
		p.appendMu.RUnlock()
		return replication.FetchAnswer{}, err
	}
	if err := p.log.Offline(); err != nil {
		p.appendMu.RUnlock()
		return replication.FetchAnswer{}, err
	}
	leo := p.log.LogEndOffset()
	ans, err := replication.AcceptFollowerFetch(replication.Leader{
		Epoch:          s.leaderEpoch,
		Replicas:       s.replicas,
		LogStartOffset: p.logStartOffset(), // the whole log's: below the local one, the follower restores from the bucket
		LogEndOffset:   leo,
		EndOffsetFor:   endFor,
	}, replication.FetchRequest{ReplicaID: replicaID, CurrentLeaderEpoch: currentEpoch, FetchOffset: fetchOffset, LastFetchedEpoch: lastFetchedEpoch})
	if err != nil || ans.Diverging {
		p.appendMu.RUnlock()
		return ans, replicationError(err)
	}
	p.repl.Lock()
	r := &p.repl.replicaState
	i := slices.IndexFunc(r.followers, func(f replication.Follower) bool { return f.ID == replicaID })
	if i < 0 {
		r.followers = append(r.followers, replication.NewFollower(replicaID, now.UnixMilli()))
		i = len(r.followers) - 1
	}
	r.followers[i] = replication.RecordFetch(r.followers[i], fetchOffset, leo, now.UnixMilli())
	// A moved log start may complete a DeleteRecords waiting on it.
	startMoved := r.followers[i].LogStartOffset != logStartOffset
	r.followers[i].LogStartOffset = logStartOffset
	p.repl.Unlock()
	old := p.hw.Load()
	p.maybeAdvanceHW()
	moved := p.hw.Load() != old
	p.repl.Lock()
	p.maybeExpandISRLocked(s, replicaID, now)
	p.repl.Unlock()
	p.appendMu.RUnlock()
	if moved || startMoved {
		p.wake()
	}
	return ans, nil
}

// lowWatermark is Kafka's Partition.lowWatermarkIfLeader: the lowest log
// start among this leader (the whole log's) and the followers alive says
// are live, each as its last fetch reported it (-1, so the lowest, until
// it has fetched since this broker took leadership). DeleteRecords answers
// once it reaches the requested offset: only then are the records gone
// from every live replica, and none that takes over can serve them.
func (p *partition) lowWatermark(alive func(id int32) bool) int64 {
	lw := p.logStartOffset()
	s := p.state.Load()
	p.repl.Lock()
	defer p.repl.Unlock()
	for _, f := range p.repl.followers {
		if f.LogStartOffset < lw && slices.Contains(s.replicas, f.ID) && alive(f.ID) {
			lw = f.LogStartOffset
		}
	}
	return lw
}

// followerNeedsLogStart reports whether follower id, whose fetch says its
// log starts at reported and asks from fetchOffset, should be answered at
// once with the leader's log start: it can move its own there (it holds
// the offsets up to it) and was not sent it already.
func (p *partition) followerNeedsLogStart(id int32, start, reported, fetchOffset int64) bool {
	if reported < 0 || reported >= start || fetchOffset < start {
		return false
	}
	p.repl.Lock()
	defer p.repl.Unlock()
	for _, f := range p.repl.followers {
		if f.ID == id {
			return start > f.LastSentLogStart
		}
	}
	return false
}

// fetchEpochEnds is where the leader looks up the end of a follower's last
// fetched epoch: its local leader epochs, or, for an epoch older than
// them, the whole log's (the remote epochs first, as OffsetForLeaderEpoch
// answers). A tiered log's local epochs start at its local log start, or
// at the entry a restore from the bucket brought, so they alone would put
// an older epoch's end at their first entry and keep a follower's
// divergent tail. The remote lookup may read the object store: it is done
// here, before any lock is taken, and waits RemoteFetchMaxWait at most
// (remoteEpochs). It fails, and the fetch with it, while the remote epochs
// cannot be read: accepting the fetch on the local epochs alone could keep
// a divergent tail.
func (p *partition) fetchEpochEnds(lastFetchedEpoch int32) (replication.EndOffsetForEpoch, error) {
	if p.tier == nil || lastFetchedEpoch < 0 {
		return p.log.EndOffsetForEpoch, nil
	}
	if local := p.log.Epochs(); len(local) > 0 && lastFetchedEpoch >= local[0].Epoch {
		return p.log.EndOffsetForEpoch, nil
	}
	// The fetch of the follower's other partitions waits with it: no
	// longer than a consumer's fetch waits for a remote read.
	ctx, cancel := context.WithTimeout(p.tier.svc.b.ctx, p.tier.svc.cfg.RemoteFetchMaxWait)
	defer cancel()
	e, end, ok, err := p.endOffsetForEpoch(ctx, lastFetchedEpoch)
	if err != nil {
		return nil, err
	}
	return func(epoch int32) (int32, int64, bool) {
		if epoch != lastFetchedEpoch {
			return p.log.EndOffsetForEpoch(epoch)
		}
		return e, end, ok
	}, nil
}

// replicationError maps the replication package's errors to the broker's.
func replicationError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, replication.ErrFencedLeaderEpoch):
		return errFencedLeaderEpoch
	case errors.Is(err, replication.ErrUnknownLeaderEpoch):
		return errUnknownLeaderEpoch
	case errors.Is(err, replication.ErrOffsetOutOfRange):
		return localseg.ErrOffsetOutOfRange
	case errors.Is(err, replication.ErrNotReplica):
		return errNotLeader
	case errors.Is(err, replication.ErrNotEnoughReplicas):
		return errNotEnoughReplicas
	}
	return err
}

// maybeExpandISRLocked sends an ISR change adding replicaID when its fetch
// just showed it caught up, as Kafka's leader does on a follower's fetch:
// only the fetching follower's state is current (another's may be that of a
// broker since stopped). Requires repl.
func (p *partition) maybeExpandISRLocked(s *partitionState, replicaID int32, now time.Time) {
	r := &p.repl.replicaState
	if r.pendingISR != nil || p.host == nil || r.partitionEpoch < 0 || slices.Contains(s.isr, replicaID) {
		return
	}
	i := slices.IndexFunc(r.followers, func(f replication.Follower) bool { return f.ID == replicaID })
	if i < 0 {
		return
	}
	isr, changed := replication.ExpandISR(s.isr, s.replicas, r.followers[i:i+1], p.hw.Load(), r.epochStart, now.UnixMilli(), p.host.replicaLagMax().Milliseconds())
	if changed && !p.host.isrIneligible(replicaID) {
		p.sendISRLocked(s, isr)
	}
}

// maybeShrinkISR sends an ISR change removing the followers that have not
// caught up within replica.lag.time.max.ms, when this broker leads.
func (p *partition) maybeShrinkISR(now time.Time) {
	s := p.state.Load()
	if s.closed || s.leader != p.nodeID || p.host == nil {
		return
	}
	p.repl.Lock()
	defer p.repl.Unlock()
	r := &p.repl.replicaState
	if r.pendingISR != nil || r.partitionEpoch < 0 {
		return
	}
	isr, changed := replication.ShrinkISR(s.isr, p.nodeID, r.followers, now.UnixMilli(), p.host.replicaLagMax().Milliseconds())
	if changed {
		p.sendISRLocked(s, isr)
	}
}

// Requires repl.
func (p *partition) sendISRLocked(s *partitionState, isr []int32) {
	r := &p.repl.replicaState
	r.pendingISR, r.pendingFrom = isr, r.partitionEpoch
	p.host.alterISR(p, slices.Clone(isr), s.leaderEpoch, r.partitionEpoch)
}

// isrWriteFailed drops the ISR change sent against partitionEpoch, so the
// next fetch or check decides again.
func (p *partition) isrWriteFailed(partitionEpoch int32) {
	p.repl.Lock()
	defer p.repl.Unlock()
	if r := &p.repl.replicaState; r.pendingISR != nil && r.pendingFrom == partitionEpoch {
		r.pendingISR = nil
	}
}

// asFollower runs fn with appends excluded while this broker follows leader
// at leaderEpoch, then wakes waiters.
func (p *partition) asFollower(leader, leaderEpoch int32, fn func() error) error {
	p.appendMu.Lock()
	s := p.state.Load()
	var err error
	switch {
	case s.closed:
		err = errPartitionClosed
	case s.leader != leader || s.leaderEpoch != leaderEpoch || leader == p.nodeID:
		err = fetcher.ErrNotFollower
	default:
		err = fn()
	}
	p.appendMu.Unlock()
	p.wake()
	return err
}

// followerAppend appends batches fetched from leader at leaderEpoch, and
// takes the leader's high watermark and log start (each capped at the
// local log end), as Kafka's follower does: without the log start, records
// the leader deleted (DeleteRecords, retention) stayed on the followers and
// came back readable when one of them took over. A tiered leader sends the
// whole log's start, at or below its local one: it moves this log only
// past what the whole log no longer holds.
func (p *partition) followerAppend(leader, leaderEpoch int32, batches []byte, leaderHW, leaderLogStart int64) error {
	return p.asFollower(leader, leaderEpoch, func() error {
		if len(batches) > 0 {
			if _, err := p.log.AppendAsFollower(batches); err != nil {
				return err
			}
			p.counters.replicationIn.Add(float64(len(batches)))
		}
		if hw := min(leaderHW, p.log.LogEndOffset()); hw != p.hw.Load() {
			p.setHW(hw)
		}
		if err := p.log.SetLogStartOffset(min(leaderLogStart, p.log.LogEndOffset())); err != nil {
			return err
		}
		return nil
	})
}

// followerTruncate cuts the log at offset (a divergent tail) while this
// broker follows leader at leaderEpoch.
func (p *partition) followerTruncate(leader, leaderEpoch int32, offset int64) error {
	return p.asFollower(leader, leaderEpoch, func() error {
		if err := p.log.TruncateTo(offset); err != nil {
			return err
		}
		if leo := p.log.LogEndOffset(); p.hw.Load() > leo {
			p.setHW(leo)
		}
		return nil
	})
}

// followerRestart empties the log and starts it at offset: the leader's log
// starts past this replica's end.
func (p *partition) followerRestart(leader, leaderEpoch int32, offset int64) error {
	return p.asFollower(leader, leaderEpoch, func() error {
		if err := p.log.TruncateFullyAndStartAt(offset); err != nil {
			return err
		}
		p.setHW(offset)
		return nil
	})
}

// latestEpoch is the newest leader epoch in the local log (-1: none).
func (p *partition) latestEpoch() int32 {
	e, ok := p.log.LatestEpoch()
	if !ok {
		return replication.NoEpoch
	}
	return e.Epoch
}
