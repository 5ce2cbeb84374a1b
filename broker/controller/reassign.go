package controller

import (
	"maps"
	"slices"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// AssignmentOf is a partition's replicas as reassignment sees them.
func AssignmentOf(p metadata.Partition) replication.Assignment {
	return replication.Assignment{Replicas: p.Replicas, ISR: p.ISR, Leader: p.Leader,
		Adding: p.AddingReplicas, Removing: p.RemovingReplicas, Retired: p.RetiredReplicas}
}

// WithAssignment is p with a's replicas, and a new leader epoch when the
// leader changed. Eligible leader replicas no longer replicas are dropped.
// A leader a elected uncleanly (an unclean revert) is recorded as such
// (metadata.Partition.UncleanEpoch), alone in the ISR with none eligible,
// as Plan's unclean elections are.
func WithAssignment(p metadata.Partition, a replication.Assignment) metadata.Partition {
	next := p
	next.Replicas, next.ISR = slices.Clone(a.Replicas), slices.Clone(a.ISR)
	next.AddingReplicas, next.RemovingReplicas, next.RetiredReplicas = slices.Clone(a.Adding), slices.Clone(a.Removing), slices.Clone(a.Retired)
	next.Eligible = slices.DeleteFunc(slices.Clone(p.Eligible), func(id int32) bool { return !slices.Contains(next.Replicas, id) || slices.Contains(next.ISR, id) })
	if a.Leader != p.Leader || a.Unclean {
		next.Leader = a.Leader
		next.LeaderEpoch = p.LeaderEpoch + 1
	}
	if a.Unclean {
		next.UncleanEpoch, next.Eligible = next.LeaderEpoch, nil
	}
	return next
}

// Candidates are the snapshot's brokers as leader election sees them;
// restarted brokers count as not live.
func Candidates(snap *metadata.Snapshot, restarted map[int32]bool) []replication.Candidate {
	out := make([]replication.Candidate, 0, len(snap.Brokers))
	for _, b := range snap.Brokers {
		out = append(out, replication.Candidate{ID: b.ID, Live: !restarted[b.ID], UncleanShutdown: b.UncleanShutdown})
	}
	return out
}

// PlanReassignments completes the reassignments whose target replicas
// have all joined the ISR (the leader adds them once they caught up): the
// replicas become the target, the removed ones are retired, and a removed
// leader hands over (replication.CompleteReassignment). Partitions that
// planned already changes this round are left for the next one.
func PlanReassignments(snap *metadata.Snapshot, restarted map[int32]bool, planned []Change) []Change {
	cands := Candidates(snap, restarted)
	busy := map[string]map[int32]bool{}
	for _, ch := range planned {
		if busy[ch.Next.Topic] == nil {
			busy[ch.Next.Topic] = map[int32]bool{}
		}
		busy[ch.Next.Topic][ch.Next.Index] = true
	}
	names := slices.Sorted(maps.Keys(snap.Topics))
	var out []Change
	for _, n := range names {
		for _, p := range snap.Topics[n].Partitions {
			if busy[n][p.Index] || (len(p.AddingReplicas) == 0 && len(p.RemovingReplicas) == 0) || len(p.Recovering) > 0 {
				// (A partition recovering from a machine crash
				// completes its reassignment once it has a leader.)
				continue
			}
			a, done := replication.CompleteReassignment(AssignmentOf(p), cands)
			if !done {
				continue
			}
			out = append(out, Change{Next: WithAssignment(p, a), Expected: p.PartitionEpoch})
		}
	}
	return out
}
