package broker

import (
	"slices"

	"github.com/shale-log/shale/broker/replication"
)

// Replica selectors (replica.selector.class): where a consumer that names
// its rack (client.rack, Fetch v11+) is told to read from (KIP-392).
const (
	// RackAwareSelector points the consumer at an in-sync replica in its
	// rack, as Kafka's RackAwareReplicaSelector. The default: clients
	// that name no rack read from the leader either way.
	RackAwareSelector = "rack-aware"
	// LeaderSelector keeps every read on the leader (Kafka's default).
	LeaderSelector = "leader"
)

// kafkaSelectorClass is the replica.selector.class DescribeConfigs shows.
func kafkaSelectorClass(s string) string {
	if s == LeaderSelector {
		return ""
	}
	return "org.apache.kafka.common.replica.RackAwareReplicaSelector"
}

// preferredReadReplica is the replica a consumer in clientRack should
// read fetchOffset from, when this broker leads p and another replica
// suits the client better; -1 otherwise (this broker serves the read).
func (b *Broker) preferredReadReplica(p *partition, clientRack string, fetchOffset int64) int32 {
	if clientRack == "" || b.cfg.ReplicaSelector == LeaderSelector {
		return -1
	}
	s := p.state.Load()
	if s.closed || s.leader != p.nodeID {
		return -1
	}
	view := b.meta.snapshot()
	rack := func(id int32) (string, bool) {
		bv, ok := view.broker(id)
		if !ok {
			return "", false
		}
		if bv.rack == nil {
			return "", true
		}
		return *bv.rack, true
	}
	leaderRack, _ := rack(p.nodeID)
	leader := replication.ReadReplica{ID: p.nodeID, Rack: leaderRack, LogStartOffset: p.logStartOffset(), LogEndOffset: p.log.LogEndOffset()}
	p.repl.Lock()
	followers := slices.Clone(p.repl.followers)
	p.repl.Unlock()
	cands := make([]replication.ReadReplica, 0, len(followers))
	for _, f := range followers {
		r, live := rack(f.ID)
		if !live {
			continue // not registered: clients could not reach it
		}
		cands = append(cands, replication.ReadReplica{ID: f.ID, Rack: r, LogStartOffset: f.LogStartOffset, LogEndOffset: f.LogEndOffset, LastCaughtUpMs: f.LastCaughtUpMs})
	}
	return replication.PreferredReadReplica(clientRack, leader, s.isr, cands, fetchOffset)
}

// checkClientRead returns nil when a client may read p on this broker: as
// its leader, or, when followerReads (Fetch v11+, KIP-392), as one of its
// followers, which serve up to the high watermark their leader sent them.
// The client's leader epoch (if any) must match, and the log be online.
func (p *partition) checkClientRead(clientEpoch int32, followerReads bool) error {
	s := p.state.Load()
	switch {
	case s.closed:
		return errPartitionClosed
	case s.leader == p.nodeID:
	case followerReads && s.leader >= 0 && slices.Contains(s.replicas, p.nodeID):
	default:
		return errNotLeader
	}
	if err := p.log.Offline(); err != nil {
		return err
	}
	return s.checkLeaderEpoch(clientEpoch)
}

// servesReads reports whether consumers may be pointed at broker id to
// read (KIP-392): the rack-aware selector only chooses a follower in the
// client's rack, so never one without a rack.
func (b *Broker) servesReads(id int32) bool {
	if b.cfg.ReplicaSelector == LeaderSelector {
		return false
	}
	bv, ok := b.meta.snapshot().broker(id)
	return ok && bv.rack != nil && *bv.rack != ""
}

// followerNeedsHW reports whether follower id was last sent a high
// watermark below hw: a fetch of a follower that serves reads is then
// answered without waiting for data, so that the consumers it serves see
// records as soon as they are committed (Kafka's followerNeedsHwUpdate).
// Other followers learn it with their next data or at the end of their
// wait, as Kafka's do: answering each high watermark move at once doubles
// the replica fetches of a loaded partition (KAFKA-9731, KAFKA-9952).
func (p *partition) followerNeedsHW(id int32, hw int64) bool {
	p.repl.Lock()
	defer p.repl.Unlock()
	for _, f := range p.repl.followers {
		if f.ID == id {
			return hw > f.LastSentHW
		}
	}
	return false
}

// sentHW records the high watermark and log start sent to follower id.
func (p *partition) sentHW(id int32, hw, logStart int64) {
	p.repl.Lock()
	defer p.repl.Unlock()
	for i := range p.repl.followers {
		if p.repl.followers[i].ID == id {
			p.repl.followers[i].LastSentHW = hw
			p.repl.followers[i].LastSentLogStart = logStart
		}
	}
}
