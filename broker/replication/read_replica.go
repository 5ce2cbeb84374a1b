package replication

import "slices"

// ReadReplica is a replica as rack-aware read selection sees it.
type ReadReplica struct {
	ID             int32
	Rack           string // "" when the broker has none
	LogStartOffset int64
	LogEndOffset   int64
	LastCaughtUpMs int64
}

// PreferredReadReplica chooses where a consumer in clientRack should read
// fetchOffset from (KIP-392, Kafka's RackAwareReplicaSelector): -1 (the
// leader itself) when the client names no rack, when the leader is in its
// rack, or when no in-sync follower in that rack holds fetchOffset;
// otherwise the in-sync follower of that rack with the largest log end,
// then the most recently caught up, then the lowest id. Followers outside
// the ISR are never chosen: they may lag without bound, and a consumer
// pointed at one would fall behind with it.
func PreferredReadReplica(clientRack string, leader ReadReplica, isr []int32, followers []ReadReplica, fetchOffset int64) int32 {
	if clientRack == "" || leader.Rack == clientRack {
		return -1
	}
	best := -1
	for i, f := range followers {
		if f.ID == leader.ID || f.Rack != clientRack || !slices.Contains(isr, f.ID) ||
			f.LogEndOffset < fetchOffset || f.LogStartOffset > fetchOffset || f.LogStartOffset < 0 {
			continue
		}
		if best < 0 || better(f, followers[best]) {
			best = i
		}
	}
	if best < 0 {
		return -1
	}
	return followers[best].ID
}

func better(a, b ReadReplica) bool {
	switch {
	case a.LogEndOffset != b.LogEndOffset:
		return a.LogEndOffset > b.LogEndOffset
	case a.LastCaughtUpMs != b.LastCaughtUpMs:
		return a.LastCaughtUpMs > b.LastCaughtUpMs
	}
	return a.ID < b.ID
}
