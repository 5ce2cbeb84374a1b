package controller

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// PartitionRef names a partition.
type PartitionRef struct {
	Topic string
	Index int32
}

// Ref names p.
func Ref(p metadata.Partition) PartitionRef { return PartitionRef{p.Topic, p.Index} }

// ReplicaLogs are where live replicas' logs end, as they answered, by
// partition and broker. An unclean election takes the replica whose log
// holds the latest history (replication.Longest), as KIP-966's unclean
// recovery does, rather than any live one: it loses the fewest records.
type ReplicaLogs map[PartitionRef]map[int32]replication.LogEnd

// AskReplicaLogs asks broker b where its logs of parts end (the broker
// answers Kafka's ListOffsets from the debugging replica id, -2, as any
// replica of a partition, leader or not). A partition it does not answer
// for is left out; an error leaves them all out.
type AskReplicaLogs func(ctx context.Context, b metadata.Broker, parts []PartitionRef) map[PartitionRef]replication.LogEnd

// UncleanRecovery is what an unclean election goes by, beyond the
// registered brokers (Plan): where the replicas' logs end, as they
// answered, and which partitions have waited long enough for those that
// did not.
type UncleanRecovery struct {
	Logs   ReplicaLogs
	Waited map[PartitionRef]bool
}

// ends returns where the replicas' logs of partition ref end; nil for a
// nil recovery.
func (r *UncleanRecovery) ends(ref PartitionRef) map[int32]replication.LogEnd {
	if r == nil {
		return nil
	}
	return r.Logs[ref]
}

// electUnclean chooses the leader of an unclean election of p, from
// outside its ISR (none of whose members is live), alone in the ISR:
// without recovery, as Kafka does, any live replica, an eligible leader
// replica first (left eligible by a larger min.insync.replicas, which the
// high watermark may since have passed). With recovery, the live replica
// whose log holds the latest history (replication.Longest): the fewest
// acknowledged records are lost. It waits (Leader -1) while a replica has
// not said where its log ends, which may be further, unless p has waited
// long enough; then the longest of those that did leads, or, when none
// did, any live replica.
func electUnclean(p metadata.Partition, cands []replication.Candidate, recovery *UncleanRecovery) replication.Election {
	ends := recovery.ends(Ref(p))
	if recovery != nil && !recovery.Waited[Ref(p)] && slices.ContainsFunc(p.Replicas, func(id int32) bool { _, ok := ends[id]; return !ok }) {
		return replication.Election{Leader: -1}
	}
	leader := replication.Longest(p.Replicas, cands, ends)
	if leader < 0 {
		leader = replication.ElectLeader(p.Replicas, p.Eligible, cands, false).Leader
	}
	if leader < 0 {
		leader = replication.ElectLeader(p.Replicas, p.ISR, cands, true).Leader
	}
	if leader < 0 {
		return replication.Election{Leader: -1}
	}
	return replication.Election{Leader: leader, ISR: []int32{leader}, Unclean: true}
}

// uncleanWaits are the partitions waiting for their replicas' log ends
// before an unclean election, with when the controller first found each
// waiting. A new controller starts them anew.
type uncleanWaits map[PartitionRef]time.Time

// waited records parts as waiting at now (those already waiting keep
// their start; others are forgotten) and returns those that have waited
// wait or longer.
func (w uncleanWaits) waited(parts []metadata.Partition, now time.Time, wait time.Duration) map[PartitionRef]bool {
	still := map[PartitionRef]bool{}
	out := map[PartitionRef]bool{}
	for _, p := range parts {
		ref := Ref(p)
		still[ref] = true
		since, ok := w[ref]
		if !ok {
			since, w[ref] = now, now
		}
		if now.Sub(since) >= wait {
			out[ref] = true
		}
	}
	maps.DeleteFunc(w, func(ref PartitionRef, _ time.Time) bool { return !still[ref] })
	return out
}

// CollectReplicaLogs asks the registered replicas of parts, but those in
// skip (brokers restarted since the controller last acted: they count as
// gone), where their logs end: each broker once, all at the same time.
func CollectReplicaLogs(ctx context.Context, snap *metadata.Snapshot, parts []metadata.Partition, skip map[int32]bool, ask AskReplicaLogs) ReplicaLogs {
	byBroker := map[int32][]PartitionRef{}
	for _, p := range parts {
		for _, id := range p.Replicas {
			if !skip[id] && !slices.Contains(byBroker[id], Ref(p)) {
				byBroker[id] = append(byBroker[id], Ref(p))
			}
		}
	}
	out := ReplicaLogs{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, b := range snap.Brokers {
		refs := byBroker[b.ID]
		if len(refs) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := ask(ctx, b, refs)
			mu.Lock()
			defer mu.Unlock()
			for _, ref := range refs {
				end, ok := got[ref]
				if !ok {
					continue
				}
				if out[ref] == nil {
					out[ref] = map[int32]replication.LogEnd{}
				}
				out[ref][b.ID] = end
			}
		}()
	}
	wg.Wait()
	return out
}

// uncleanElections returns the partitions (as snap holds them) that plan
// elects a leader for uncleanly.
func uncleanElections(snap *metadata.Snapshot, plan []Change) []metadata.Partition {
	var out []metadata.Partition
	for _, ch := range plan {
		if isUncleanElection(snap, ch) {
			p, _ := partitionOf(snap, Ref(ch.Next))
			out = append(out, p)
		}
	}
	return out
}

// isUncleanElection reports whether ch elects a leader for a partition of
// snap uncleanly.
func isUncleanElection(snap *metadata.Snapshot, ch Change) bool {
	p, ok := partitionOf(snap, Ref(ch.Next))
	return ok && ch.Next.Leader >= 0 && ch.Next.UncleanEpoch == ch.Next.LeaderEpoch && ch.Next.UncleanEpoch != p.UncleanEpoch
}

// logUncleanElections says, for each partition of asked, which replica
// plan elects uncleanly and where the replicas' logs end (the records
// between its end and a longer one are what the election loses), or, the
// first time, that the election waits for the replicas that did not say.
func (c *Controller) logUncleanElections(asked []metadata.Partition, plan []Change, recovery *UncleanRecovery, waiting uncleanWaits, now time.Time) {
	for _, p := range asked {
		ends := recovery.ends(Ref(p))
		attrs := []any{"topic", p.Topic, "partition", p.Index}
		for _, id := range p.Replicas {
			if end, ok := ends[id]; ok {
				attrs = append(attrs, slog.Group("replica"+strconv.Itoa(int(id)), "lastEpoch", end.Epoch, "logEnd", end.Offset))
			}
		}
		i := slices.IndexFunc(plan, func(ch Change) bool { return Ref(ch.Next) == Ref(p) })
		switch {
		case i >= 0 && plan[i].Next.Leader >= 0 && plan[i].Next.UncleanEpoch == plan[i].Next.LeaderEpoch:
			attrs = append(attrs, "leader", plan[i].Next.Leader, "leaderEpoch", plan[i].Next.LeaderEpoch)
			if len(ends) == 0 {
				c.log.Warn("unclean election: no live replica said where its log ends; a live one leads", attrs...)
			} else {
				c.log.Warn("unclean election: the live replica whose log holds the latest history leads", attrs...)
			}
		case waiting[Ref(p)].Equal(now):
			attrs = append(attrs, "wait", c.cfg.UncleanRecoveryWait)
			c.log.Info("unclean election waits for every replica to say where its log ends, the longest to lead", attrs...)
		}
	}
}

// partitionOf finds a partition in snap.
func partitionOf(snap *metadata.Snapshot, ref PartitionRef) (metadata.Partition, bool) {
	ts, ok := snap.Topics[ref.Topic]
	if !ok {
		return metadata.Partition{}, false
	}
	i := slices.IndexFunc(ts.Partitions, func(p metadata.Partition) bool { return p.Index == ref.Index })
	if i < 0 {
		return metadata.Partition{}, false
	}
	return ts.Partitions[i], true
}
