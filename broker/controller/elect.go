package controller

import (
	"errors"
	"maps"
	"slices"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// Outcomes of an election asked for (ElectLeaders), matched with errors.Is.
var (
	// ErrElectionNotNeeded: the preferred replica leads already, or (an
	// unclean election) the partition has a live leader.
	ErrElectionNotNeeded = errors.New("controller: election not needed")
	// ErrPreferredNotAvailable: the preferred replica is not live, in the
	// ISR and staying.
	ErrPreferredNotAvailable = errors.New("controller: the preferred replica is not a live in-sync replica")
	// ErrEligibleNotAvailable: no live replica can lead.
	ErrEligibleNotAvailable = errors.New("controller: no live replica can lead")
)

// LeaderImbalancePerBrokerPercentage is Kafka's
// leader.imbalance.per.broker.percentage default: a broker's preferred
// partitions are moved back to it when more than this share of them is
// led by others.
const LeaderImbalancePerBrokerPercentage = 10

func brokerIndex(snap *metadata.Snapshot) map[int32]metadata.Broker {
	m := make(map[int32]metadata.Broker, len(snap.Brokers))
	for _, b := range snap.Brokers {
		m[b.ID] = b
	}
	return m
}

// ElectPreferred makes p's preferred replica (the first in its replica
// list) its leader, as Kafka's preferred leader election: only when that
// replica is live, not shutting down and in the ISR. The leader epoch is
// bumped; the ISR is kept.
func ElectPreferred(snap *metadata.Snapshot, p metadata.Partition) (metadata.Partition, error) {
	return electPreferred(brokerIndex(snap), p)
}

func electPreferred(live map[int32]metadata.Broker, p metadata.Partition) (metadata.Partition, error) {
	if len(p.Replicas) == 0 {
		return p, ErrPreferredNotAvailable
	}
	pref := p.Replicas[0]
	if p.Leader == pref {
		return p, ErrElectionNotNeeded
	}
	b, ok := live[pref]
	if _, recovering := p.Recovering.End(pref); !ok || b.ShuttingDown || !slices.Contains(p.ISR, pref) || recovering {
		return p, ErrPreferredNotAvailable
	}
	next := p
	next.Replicas, next.ISR = slices.Clone(p.Replicas), slices.Clone(p.ISR)
	next.Leader, next.LeaderEpoch = pref, p.LeaderEpoch+1
	return next, nil
}

// ElectUnclean elects a leader for p when it has none that is live: from
// its live ISR if it can, else the live replica whose log holds the latest
// history of those ends reports (replication.Longest), else the first live
// replica, whatever the topic's unclean.leader.election.enable (an
// operator asked for it; records the old leader acknowledged may be lost).
// Members recovering from a machine crash count as any other: the operator
// does not wait for the others to come back. The eligible leader replicas
// count as the ISR.
func ElectUnclean(snap *metadata.Snapshot, p metadata.Partition, ends map[int32]replication.LogEnd) (metadata.Partition, error) {
	live := brokerIndex(snap)
	if _, ok := live[p.Leader]; ok && p.Leader >= 0 {
		return p, ErrElectionNotNeeded
	}
	cands := make([]replication.Candidate, 0, len(snap.Brokers))
	for _, b := range snap.Brokers {
		cands = append(cands, replication.Candidate{ID: b.ID, Live: true, UncleanShutdown: b.UncleanShutdown, ShuttingDown: b.ShuttingDown})
	}
	e := replication.ElectLeader(p.Replicas, p.Counted(), cands, false)
	if e.Leader < 0 {
		if l := replication.Longest(p.Replicas, cands, ends); l >= 0 {
			e = replication.Election{Leader: l, ISR: []int32{l}, Unclean: true}
		}
	}
	if e.Leader < 0 {
		e = replication.ElectLeader(p.Replicas, p.Counted(), cands, true)
	}
	if e.Leader < 0 {
		return p, ErrEligibleNotAvailable
	}
	next := p
	next.Replicas = slices.Clone(p.Replicas)
	next.Leader, next.ISR, next.LeaderEpoch = e.Leader, e.ISR, p.LeaderEpoch+1
	next.Recovering = nil // the operator chose over the comparison
	next.Eligible = nil
	if e.Unclean || !slices.Contains(p.ISR, e.Leader) {
		// An eligible leader replica holds every record below the high
		// watermark, unless min.insync.replicas came down since (which
		// the operator's election does not look at): marked unclean, a
		// tiered leader reads its manifest before it appends.
		next.UncleanEpoch = next.LeaderEpoch
	}
	return next, nil
}

// PlanPreferredLeaders is the automatic rebalance
// (auto.leader.rebalance.enable): for each broker that more than
// LeaderImbalancePerBrokerPercentage of whose preferred partitions are led
// by others, it moves those it can back to it (it must be live, staying
// and in their ISR).
func PlanPreferredLeaders(snap *metadata.Snapshot) []Change {
	live := brokerIndex(snap)
	preferred := map[int32]int{}
	var away []metadata.Partition
	names := slices.Sorted(maps.Keys(snap.Topics))
	for _, n := range names {
		for _, p := range snap.Topics[n].Partitions {
			if len(p.Replicas) == 0 {
				continue
			}
			preferred[p.Replicas[0]]++
			if p.Leader != p.Replicas[0] {
				away = append(away, p)
			}
		}
	}
	awayOf := map[int32]int{}
	for _, p := range away {
		awayOf[p.Replicas[0]]++
	}
	var out []Change
	for _, p := range away {
		pref := p.Replicas[0]
		if awayOf[pref]*100 <= preferred[pref]*LeaderImbalancePerBrokerPercentage {
			continue
		}
		if next, err := electPreferred(live, p); err == nil {
			out = append(out, Change{Next: next, Expected: p.PartitionEpoch})
		}
	}
	return out
}
