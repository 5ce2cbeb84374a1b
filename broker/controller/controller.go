// Package controller is the cluster's controller: one broker at a time,
// elected through etcd, that moves partition leadership when brokers come
// and go. When a broker's lease expires (or it registers again after a
// restart) the controller removes it from the ISR of every partition and
// elects a new leader for the partitions it led, bumping the leader epoch.
// Every write is a compare-and-swap on the partition epoch, fenced on the
// controller's election (metadata.Leadership.UpdatePartition): a deposed
// controller's writes fail. What to write is decided by Plan, a pure
// function of a metadata snapshot.
package controller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// UncleanElectionConfig is the topic config that allows a leader from
// outside the ISR.
const UncleanElectionConfig = "unclean.leader.election.enable"

// MinInsyncReplicasConfig is the topic config (and broker default) that
// an acks=all write needs that many in-sync replicas.
const MinInsyncReplicasConfig = "min.insync.replicas"

// Change is one partition write the controller makes: Next replaces the
// stored partition if its partition epoch is still Expected.
type Change struct {
	Next     metadata.Partition
	Expected int32
}

// Plan decides the partition changes for a snapshot. silent names
// registered brokers that did not answer Kafka requests when asked
// (Controller.silentKeepers): a partition some of whose in-sync replicas
// are back from a machine crash does not count on them as members that
// kept their logs. restarted names
// brokers that registered again since the controller last acted on them:
// they count as gone for this round (their in-memory state, and maybe
// their unflushed tail, is lost), so they leave ISRs and leadership and
// rejoin as followers; a restarted leader that is its partition's only
// live in-sync replica leads again, at a new epoch, so that what it
// appends from now on is told apart from what its previous incarnation
// wrote at the same offsets. A partition whose leader is live keeps it and only
// sheds dead ISR members; one whose leader is gone gets a new one from its
// live ISR (clean shutdowns first, then replica order), or goes offline
// (leader -1) with its ISR kept, unless unclean election is enabled.
//
// A broker in a controlled shutdown hands its leaderships to another live
// ISR member (keeping those no other member can take) and leaves every ISR
// that has another member, so that acks=all stops waiting for it.
//
// Members that leave an ISR smaller than the topic's min.insync.replicas
// (topicDefaults gives the brokers' default) become its eligible leader
// replicas (metadata.Partition.Eligible, KIP-966): the leader's high
// watermark holds still while the ISR is that small, so every record
// below it is on them. When no member of such an ISR is live (and no
// restarted leader leads again), a live eligible one leads, in a clean
// election; what the ISR's last member appended since (acks=1 records
// above the high watermark, never read) is cut from its log when it
// follows. With unclean election enabled another live replica leads then
// (electUnclean): with recovery, the one whose log holds the latest
// history, once every replica has said where its log ends or the wait is
// over; without, any live one, an eligible one first, as Kafka elects.
func Plan(snap *metadata.Snapshot, restarted, silent map[int32]bool, topicDefaults map[string]string, recovery *UncleanRecovery) []Change {
	cands := make([]replication.Candidate, 0, len(snap.Brokers))
	live := map[int32]bool{}
	leaving := map[int32]bool{}
	for _, b := range snap.Brokers {
		ok := !restarted[b.ID]
		live[b.ID] = ok
		leaving[b.ID] = b.ShuttingDown
		cands = append(cands, replication.Candidate{ID: b.ID, Live: ok, UncleanShutdown: b.UncleanShutdown, ShuttingDown: b.ShuttingDown})
	}
	// staying is the ISR without the dead and, when someone else
	// remains, without those shutting down.
	staying := func(isr []int32) []int32 {
		var alive, kept []int32
		for _, id := range isr {
			if live[id] {
				alive = append(alive, id)
				if !leaving[id] {
					kept = append(kept, id)
				}
			}
		}
		if len(kept) == 0 {
			return alive
		}
		return kept
	}
	names := slices.Sorted(maps.Keys(snap.Topics))
	var out []Change
	for _, n := range names {
		ts := snap.Topics[n]
		unclean := ts.Configs[UncleanElectionConfig] == "true"
		minISR := MinInsyncReplicas(ts.Configs, topicDefaults)
		for _, p := range ts.Partitions {
			if len(p.Recovering) > 0 {
				if next, ok := planRecovering(p, cands, live, silent, unclean, minISR, recovery.ends(Ref(p))); ok {
					out = append(out, Change{Next: next, Expected: p.PartitionEpoch})
				}
				continue
			}
			next := p
			leaderOK := p.Leader >= 0 && live[p.Leader] && slices.Contains(p.ISR, p.Leader)
			if leaderOK && leaving[p.Leader] && !slices.Contains(staying(p.ISR), p.Leader) {
				leaderOK = false // another in-sync replica can take over
			}
			if leaderOK {
				next.SetISR(staying(p.ISR), minISR)
			} else {
				e := replication.ElectLeader(p.Replicas, p.ISR, cands, false)
				next.Leader = e.Leader
				switch {
				case e.Leader >= 0:
					next.SetISR(staying(e.ISR), minISR)
				case p.Leader >= 0 && restarted[p.Leader]:
					// The restarted count as live here: a restarted
					// leader that is its partition's only live
					// in-sync replica leads again, at a new epoch, in
					// one write rather than going offline for a round.
					registered := slices.Clone(cands)
					for i := range registered {
						registered[i].Live = true
					}
					if again := replication.ElectLeader(p.Replicas, p.ISR, registered, false); again.Leader >= 0 {
						next.Leader = again.Leader
						next.SetISR(again.ISR, minISR)
					}
				}
				if next.Leader < 0 {
					// The ISR's members join the eligible ones (SetISR).
					if el := electEligible(p, cands, minISR); el >= 0 {
						next.Leader = el
						next.SetISR([]int32{el}, minISR)
					}
				}
				if next.Leader < 0 && unclean {
					if ue := electUnclean(p, cands, recovery); ue.Leader >= 0 {
						e = ue
						next.Leader, next.ISR, next.Eligible = e.Leader, e.ISR, nil
					}
				}
				if next.Leader < 0 {
					next.SetISR(e.ISR, minISR)
				}
				if next.Leader != p.Leader || next.Leader >= 0 && restarted[next.Leader] {
					next.LeaderEpoch = p.LeaderEpoch + 1
				}
				if e.Unclean {
					next.UncleanEpoch = next.LeaderEpoch
				}
			}
			if next.Leader == p.Leader && next.LeaderEpoch == p.LeaderEpoch && slices.Equal(next.ISR, p.ISR) && slices.Equal(next.Eligible, p.Eligible) {
				continue
			}
			next.Replicas = slices.Clone(p.Replicas)
			out = append(out, Change{Next: next, Expected: p.PartitionEpoch})
		}
	}
	return out
}

// planRecovering decides for a partition some of whose ISR members are
// back from a machine crash (metadata.Partition.Recovering), and may lack
// what the ISR counted on. They count as gone while a member that kept its
// log can lead: the live leader stays, or one of those members is
// elected, and the recovering ones leave the ISR (they follow, and rejoin
// once caught up). When no such member is live, the partition is offline
// until every ISR member is back (and, while the ISR is below
// min.insync.replicas, every eligible leader replica): a member that did
// not crash leads once back; when all crashed, the longest recovered log
// leads (the first in replica order among equals), alone in the ISR, once
// every one has reported its end. A topic that allows unclean election
// does not wait: the longest log among the live members that reported
// leads, else the live replica with the longest log reported (ends), else
// any live replica, as an unclean election, and no replica is eligible
// after it. Recovering members out of the ISR (a leader shrank
// it) are forgotten. A registered member that is
// silent (registered, not answering) is not counted on as one that kept
// its log: a registration outlives a crashed broker by up to its lease,
// and the machine, booted again, may be starting that broker, its own
// marks not yet written; taking the recovering members out of the ISR
// for it could leave the longest log out. A silent leader is left as it
// is until it answers or its registration lapses. When no ISR member that
// kept its log is live, a live eligible leader replica that kept its log
// leads (an ISR below min.insync.replicas), before any comparison of
// recovered logs. Members that leave the ISR recovering are not eligible
// leader replicas (metadata.Partition.SetISR): their logs may lack what
// it counted on. It reports false when nothing changes.
func planRecovering(p metadata.Partition, cands []replication.Candidate, live, silent map[int32]bool, unclean bool, minISR int32, ends map[int32]replication.LogEnd) (metadata.Partition, bool) {
	next := p
	next.Replicas = slices.Clone(p.Replicas)
	next.Recovering = slices.DeleteFunc(slices.Clone(p.Recovering), func(r metadata.RecoveringReplica) bool { return !slices.Contains(p.ISR, r.ID) })
	if len(next.Recovering) == 0 {
		next.Recovering = nil
		return next, true // the next round plans it as any other
	}
	recovering := func(id int32) bool { _, ok := next.Recovering.End(id); return ok }
	var lost []int32
	for _, r := range next.Recovering {
		lost = append(lost, r.ID)
	}
	kept := slices.Clone(cands)
	for i := range kept {
		if recovering(kept[i].ID) || silent[kept[i].ID] {
			kept[i].Live = false
		}
	}
	if p.Leader >= 0 && live[p.Leader] && slices.Contains(p.ISR, p.Leader) && !recovering(p.Leader) {
		if silent[p.Leader] {
			// A crashed leader's registration lapses within its
			// lease, a restarted one marks itself or answers, and a
			// slow one answers later: nothing changes until then.
			return p, false
		}
		next.SetISR(slices.DeleteFunc(slices.Clone(p.ISR), func(id int32) bool { return recovering(id) || !live[id] }), minISR, lost...)
		next.Recovering = nil
		return next, true
	}
	if e := replication.ElectLeader(p.Replicas, p.ISR, kept, false); e.Leader >= 0 {
		next.Leader, next.LeaderEpoch = e.Leader, p.LeaderEpoch+1
		next.SetISR(e.ISR, minISR, lost...)
		next.Recovering = nil
		return next, true
	}
	// An eligible leader replica that kept its log leads rather than the
	// longest of the recovered logs, which may all have lost
	// acknowledged records with their page caches.
	if el := electEligible(p, kept, minISR); el >= 0 {
		next.Leader, next.LeaderEpoch = el, p.LeaderEpoch+1
		next.SetISR([]int32{el}, minISR, lost...)
		next.Recovering = nil
		return next, true
	}
	// No member that kept its log is up. The longest recovered log
	// leads once every member is back, recovering, and has reported;
	// while the ISR is below min.insync.replicas, once every eligible
	// leader replica is back too: each holds every acknowledged record
	// (KIP-966), and a down one may hold what every recovered log lost.
	// Back from a crash of its own, it joins the ISR, recovering, to be
	// compared (markRecovering); back with its log, it leads (above).
	waitFor := p.ISR
	if int32(len(p.ISR)) < minISR {
		waitFor = p.Counted()
	}
	best, bestEnd := int32(-1), int64(-1)
	for _, id := range p.Replicas {
		if !slices.Contains(waitFor, id) {
			continue
		}
		end, ok := next.Recovering.End(id)
		if !ok || end < 0 || !live[id] {
			best = -1
			break
		}
		if end > bestEnd {
			best, bestEnd = id, end
		}
	}
	if best < 0 && unclean {
		bestEnd = -1
		for _, id := range p.Replicas {
			if end, ok := next.Recovering.End(id); ok && end > bestEnd && live[id] {
				best, bestEnd = id, end
			}
		}
		if best < 0 {
			best = replication.Longest(p.Replicas, cands, ends)
		}
		if best < 0 {
			if e := replication.ElectLeader(p.Replicas, p.ISR, cands, true); e.Leader >= 0 {
				best = e.Leader
			}
		}
		if best >= 0 {
			// As Plan's unclean election: alone in the ISR, none
			// eligible (a down one left eligible would keep the
			// elected broker, whose log is marked lost, from leading).
			next.Leader, next.LeaderEpoch = best, p.LeaderEpoch+1
			next.ISR, next.Eligible = []int32{best}, nil
			next.UncleanEpoch = next.LeaderEpoch
			next.Recovering = nil
			return next, true
		}
	}
	if best < 0 {
		// Offline meanwhile: the recovering lead nothing.
		if p.Leader < 0 && len(next.Recovering) == len(p.Recovering) {
			return p, false
		}
		if p.Leader >= 0 {
			next.Leader, next.LeaderEpoch = -1, p.LeaderEpoch+1
		}
		return next, true
	}
	next.Leader, next.LeaderEpoch = best, p.LeaderEpoch+1
	next.SetISR([]int32{best}, minISR, lost...)
	next.Recovering = nil
	return next, true
}

// electEligible returns the live one (of cands) of p's eligible leader
// replicas that a clean election takes when no ISR member can lead, or -1.
// Only while the ISR is below min.insync.replicas: the high watermark has
// held still since they left (KIP-966), so each holds every record below
// it, every acknowledged one among them. Once min.insync.replicas is down
// to the ISR's size they are left over: it may have moved past them.
func electEligible(p metadata.Partition, cands []replication.Candidate, minISR int32) int32 {
	if int32(len(p.ISR)) >= minISR {
		return -1
	}
	return replication.ElectLeader(p.Replicas, p.Eligible, cands, false).Leader
}

// MinInsyncReplicas is a topic's min.insync.replicas: its own config (of
// configs), else the brokers' default (of topicDefaults), else 1.
func MinInsyncReplicas(configs, topicDefaults map[string]string) int32 {
	for _, m := range []map[string]string{configs, topicDefaults} {
		if v, err := strconv.ParseInt(m[MinInsyncReplicasConfig], 10, 32); err == nil && v >= 1 {
			return int32(v)
		}
	}
	return 1
}

// Config configures a controller candidate.
type Config struct {
	BrokerID int32
	// SessionTTL is the controller lease: how long a dead controller
	// holds the role before another broker takes it.
	SessionTTL time.Duration
	// LeaderImbalanceCheckInterval is
	// leader.imbalance.check.interval.seconds: how often the controller
	// moves leaderships back to preferred replicas (PlanPreferredLeaders).
	// Zero or negative: never (auto.leader.rebalance.enable=false).
	LeaderImbalanceCheckInterval time.Duration
	// DeletedTopicRetention is how long the tombstone of a deleted topic
	// stays in etcd (default 7 days; negative: for ever). A broker that
	// was down longer than this keeps the topic's directories as strays
	// (logged and counted) rather than removing them: data is never
	// removed without a recorded deletion.
	DeletedTopicRetention time.Duration
	// Answers reports whether a registered broker answers Kafka requests
	// (see Controller.silentKeepers); nil: every registered broker does.
	Answers func(ctx context.Context, b metadata.Broker) bool
	// AskReplicaLogs asks a broker where its logs end, for unclean
	// elections (see CollectReplicaLogs); nil: none is asked, and an
	// unclean election takes any live replica, as Kafka's does.
	AskReplicaLogs AskReplicaLogs
	// UncleanRecoveryWait bounds how long an unclean election waits for
	// replicas that have not said where their logs end (not registered,
	// or not answering) before the longest log of those that did leads
	// (default SessionTTL: the time a broker's registration takes to
	// appear or lapse).
	UncleanRecoveryWait time.Duration
	// OnUncleanElection is called for each unclean election written
	// (nil: none): a metric's counter.
	OnUncleanElection func()
	// TopicDefaults are the brokers' defaults of topic configs
	// (min.insync.replicas, read for the eligible leader replicas).
	TopicDefaults map[string]string
	Logger        *slog.Logger
}

// DefaultDeletedTopicRetention is DeletedTopicRetention's default.
const DefaultDeletedTopicRetention = 7 * 24 * time.Hour

// PlanTombstonePrune returns the ids of the deleted-topic tombstones older
// than retention at now, sorted.
func PlanTombstonePrune(snap *metadata.Snapshot, now time.Time, retention time.Duration) []metadata.UUID {
	if retention < 0 {
		return nil
	}
	var out []metadata.UUID
	for id, d := range snap.DeletedTopics {
		if now.Sub(d.DeletedAt) >= retention {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b metadata.UUID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// Controller campaigns for the role and, while it holds it, reconciles
// partition leadership with the live brokers.
type Controller struct {
	store  *metadata.Store
	cache  *metadata.Cache
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start runs a controller candidate until Close.
func Start(store *metadata.Store, cache *metadata.Cache, cfg Config) *Controller {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UncleanRecoveryWait <= 0 {
		cfg.UncleanRecoveryWait = cfg.SessionTTL
	}
	if cfg.DeletedTopicRetention == 0 {
		cfg.DeletedTopicRetention = DefaultDeletedTopicRetention
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{store: store, cache: cache, cfg: cfg, log: cfg.Logger.With("controller", cfg.BrokerID), ctx: ctx, cancel: cancel}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run()
	}()
	return c
}

// Close resigns the role (so another broker takes it at once) and waits.
// Safe to call more than once.
func (c *Controller) Close() {
	c.cancel()
	c.wg.Wait()
}

func (c *Controller) run() {
	for c.ctx.Err() == nil {
		lead, err := c.store.Campaign(c.ctx, c.cfg.BrokerID, c.cfg.SessionTTL)
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("controller campaign", "err", err)
				sleep(c.ctx, time.Second)
			}
			continue
		}
		c.log.Info("elected controller")
		c.lead(lead)
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		lead.Resign(rctx)
		cancel()
	}
}

// lead reconciles until leadership is lost or the controller closes.
func (c *Controller) lead(lead *metadata.Leadership) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	changes := c.cache.Subscribe(ctx)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var rebalance <-chan time.Time
	if c.cfg.LeaderImbalanceCheckInterval > 0 {
		t := time.NewTicker(c.cfg.LeaderImbalanceCheckInterval)
		defer t.Stop()
		rebalance = t.C
	}
	preferred := false
	// Tombstones are looked at every pruneEvery (a tenth of their
	// retention, at most a minute).
	pruneEvery := min(max(c.cfg.DeletedTopicRetention/10, time.Millisecond), time.Minute)
	nextPrune := time.Now()
	// The partitions waiting for their replicas' log ends before an
	// unclean election, since when.
	waiting := uncleanWaits{}
	// Incarnations this controller has acted on. It starts from those
	// the previous controller recorded acting on, so that a broker that
	// registered again after that controller's last round is handled as
	// restarted: the previous controller may have died before it could
	// (it was that broker, say, back at once on an empty disk, still
	// named leader and in-sync), and this controller's first snapshot
	// already shows the new registration. With no record (the cluster's
	// first controller) it starts from the snapshot it was elected with.
	seen, recorded, err := c.startingIncarnations(ctx)
	if err != nil {
		c.log.Warn("reading the broker incarnations the last controller acted on; campaigning again", "err", err)
		sleep(ctx, time.Second)
		return
	}
	for {
		snap := c.cache.Snapshot()
		if lead.Gone(snap) {
			// Its lease may still be renewed, but the candidacy key
			// is gone (etcd expired the lease unrenewed after a
			// restart): no other broker sees this one as controller
			// and every write would fail. Campaign again.
			c.log.Warn("controller candidacy deleted from etcd (its lease expired unrenewed); campaigning again")
			return
		}
		restarted := map[int32]bool{}
		for _, b := range snap.Brokers {
			if inc, ok := seen[b.ID]; ok && inc != b.Incarnation {
				restarted[b.ID] = true
			}
		}
		ok := true
		// Changes that depend on what brokers answer are decided last:
		// those of partitions recovering from a machine crash (which
		// members answer Kafka requests) and of those that need an
		// unclean election (where their replicas' logs end). Asking
		// may take a broker's whole timeout (one registered but hung),
		// and the other partitions' changes, clean failovers among
		// them, are written first, without waiting for the answers.
		// Plan decides each partition on its own.
		plan := Plan(snap, restarted, nil, c.cfg.TopicDefaults, nil)
		pending := slices.Concat(recoveringPartitions(snap), uncleanElections(snap, plan))
		var written []Change
		written, plan = splitChanges(plan, pending)
		applied, lost := c.write(ctx, lead, snap, written)
		if lost {
			return
		}
		ok = ok && applied
		var asked []metadata.Partition
		if len(pending) > 0 {
			silent := c.silentKeepers(ctx, snap, restarted)
			_, plan = splitChanges(Plan(snap, restarted, silent, c.cfg.TopicDefaults, nil), pending)
			if asked = uncleanElections(snap, plan); len(asked) > 0 && c.cfg.AskReplicaLogs != nil {
				// Decided again with the replicas' log ends: the
				// longest log leads, once every replica has answered
				// or the wait is over.
				now := time.Now()
				recovery := &UncleanRecovery{Logs: CollectReplicaLogs(ctx, snap, asked, restarted, c.cfg.AskReplicaLogs), Waited: waiting.waited(asked, now, c.cfg.UncleanRecoveryWait)}
				_, plan = splitChanges(Plan(snap, restarted, silent, c.cfg.TopicDefaults, recovery), pending)
				c.logUncleanElections(asked, plan, recovery, waiting, now)
			}
		}
		if len(asked) == 0 || c.cfg.AskReplicaLogs == nil {
			clear(waiting) // none waits any more
		}
		plan = append(plan, PlanReassignments(snap, restarted, slices.Concat(written, plan))...)
		if preferred && len(written)+len(plan) == 0 {
			plan = PlanPreferredLeaders(snap)
		}
		preferred = false
		applied, lost = c.write(ctx, lead, snap, plan)
		if lost {
			return
		}
		ok = ok && applied
		if now := time.Now(); !now.Before(nextPrune) {
			nextPrune = now.Add(pruneEvery)
			if ids := PlanTombstonePrune(snap, now, c.cfg.DeletedTopicRetention); len(ids) > 0 {
				if err := lead.PruneDeletedTopics(ctx, ids); err != nil {
					c.log.Warn("pruning deleted-topic tombstones", "err", err)
				} else {
					c.log.Info("pruned deleted-topic tombstones past their retention", "count", len(ids), "retention", c.cfg.DeletedTopicRetention)
				}
			}
			// Partition records of topic creations (or additions)
			// that stopped half-way, their creator gone.
			if n, err := lead.CleanAbandonedCreations(ctx); err != nil {
				c.log.Warn("cleaning the leftovers of abandoned topic creations", "err", err)
			} else if n > 0 {
				c.log.Info("cleaned the leftovers of abandoned topic creations", "topics", n)
			}
		}
		if ok {
			seen = map[int32]int64{}
			for _, b := range snap.Brokers {
				seen[b.ID] = b.Incarnation
			}
			if !maps.Equal(seen, recorded) {
				if err := lead.RecordActedIncarnations(ctx, seen); err != nil {
					if errors.Is(err, metadata.ErrNotLeader) {
						c.log.Warn("controller role lost", "err", err)
						return
					}
					c.log.Warn("recording the broker incarnations acted on", "err", err)
				} else {
					recorded = seen
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-lead.Done():
			c.log.Warn("controller lease lost")
			return
		case <-changes:
		case <-tick.C:
		case <-rebalance:
			preferred = true
		}
	}
}

// write writes the changes planned on snap, one after the other. applied
// is false when one was not (a conflict: a leader changed the ISR
// meanwhile, or an etcd error; the next round decides again); lost, when
// the controller role is lost and the round must end.
func (c *Controller) write(ctx context.Context, lead *metadata.Leadership, snap *metadata.Snapshot, plan []Change) (applied, lost bool) {
	applied = true
	for _, ch := range plan {
		_, _, err := lead.UpdatePartition(ctx, ch.Next, ch.Expected)
		switch {
		case err == nil:
			c.log.Info("partition state changed", "topic", ch.Next.Topic, "partition", ch.Next.Index,
				"leader", ch.Next.Leader, "leaderEpoch", ch.Next.LeaderEpoch, "isr", ch.Next.ISR)
			if c.cfg.OnUncleanElection != nil && isUncleanElection(snap, ch) {
				c.cfg.OnUncleanElection()
			}
		case errors.Is(err, metadata.ErrNotLeader):
			c.log.Warn("controller role lost", "err", err)
			return false, true
		default:
			applied = false
			c.log.Debug("partition change not applied", "topic", ch.Next.Topic, "partition", ch.Next.Index, "err", err)
		}
	}
	return applied, false
}

// recoveringPartitions returns the partitions of snap some of whose
// in-sync replicas are back from a machine crash.
func recoveringPartitions(snap *metadata.Snapshot) []metadata.Partition {
	var out []metadata.Partition
	for _, ts := range snap.Topics {
		for _, p := range ts.Partitions {
			if len(p.Recovering) > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// splitChanges splits plan into the changes of partitions other than
// those of parts and the changes of parts, each in plan's order.
func splitChanges(plan []Change, parts []metadata.Partition) (others, theirs []Change) {
	of := map[PartitionRef]bool{}
	for _, p := range parts {
		of[Ref(p)] = true
	}
	for _, ch := range plan {
		if of[Ref(ch.Next)] {
			theirs = append(theirs, ch)
		} else {
			others = append(others, ch)
		}
	}
	return others, theirs
}

// silentKeepers returns the brokers that Plan would count on as in-sync
// replicas that kept their logs, for a partition some of whose members
// are back from a machine crash, and that do not answer Kafka requests
// (Config.Answers). Only those are asked, once a round each and all at
// once: a partition in that state is rare and short-lived.
func (c *Controller) silentKeepers(ctx context.Context, snap *metadata.Snapshot, restarted map[int32]bool) map[int32]bool {
	if c.cfg.Answers == nil {
		return nil
	}
	// The brokers to ask, each with the first partition it is asked for.
	ask := map[int32]metadata.Partition{}
	for _, ts := range snap.Topics {
		for _, p := range ts.Partitions {
			if len(p.Recovering) == 0 {
				continue
			}
			for _, id := range p.ISR {
				if _, r := p.Recovering.End(id); r || restarted[id] {
					continue
				}
				// One not registered is not live anyway.
				if _, done := ask[id]; !done && slices.ContainsFunc(snap.Brokers, func(b metadata.Broker) bool { return b.ID == id }) {
					ask[id] = p
				}
			}
		}
	}
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		silent map[int32]bool
	)
	for _, b := range snap.Brokers {
		p, ok := ask[b.ID]
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.cfg.Answers(ctx, b) {
				return
			}
			c.log.Info("a registered in-sync replica does not answer; a partition whose other members are back from a machine crash does not count on it until it does",
				"broker", b.ID, "topic", p.Topic, "partition", p.Index)
			mu.Lock()
			defer mu.Unlock()
			if silent == nil {
				silent = map[int32]bool{}
			}
			silent[b.ID] = true
		}()
	}
	wg.Wait()
	return silent
}

// startingIncarnations returns the broker incarnations a newly elected
// controller starts from (see lead), and what etcd holds of them (nil when
// nothing), once the cache has caught up with the record: a snapshot
// older than it would show a broker's previous registration and count it
// as restarted.
func (c *Controller) startingIncarnations(ctx context.Context) (seen, recorded map[int32]int64, err error) {
	acted, rev, err := c.store.ActedIncarnations(ctx)
	if errors.Is(err, metadata.ErrUnreadable) {
		c.log.Error("ignoring the broker incarnations the last controller acted on", "err", err)
	} else if err != nil {
		return nil, nil, err
	}
	if err := c.cache.WaitForRevision(ctx, rev); err != nil {
		return nil, nil, err
	}
	if acted != nil {
		return maps.Clone(acted), acted, nil
	}
	seen = map[int32]int64{}
	for _, b := range c.cache.Snapshot().Brokers {
		seen[b.ID] = b.Incarnation
	}
	return seen, nil, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
