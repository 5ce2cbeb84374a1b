package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KIP-951: a Produce (v10+) or Fetch (v12+ for the leader, v16+ for its
// address) answered with NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH
// names the partition's current leader and epoch as this broker's metadata
// knows them, and the leaders' endpoints, so the client moves on without
// waiting for a metadata refresh.

// leaderHint is a partition's leader and leader epoch in view (ok false
// when the partition is unknown or has no leader). The topic is found by
// id when it is set, else by name.
func leaderHint(view *metaView, topic string, id [16]byte, index int32) (leader, epoch int32, ok bool) {
	tv := view.topics[topic]
	if id != ([16]byte{}) {
		tv = view.topicsByID[id]
	}
	if tv == nil || index < 0 || int(index) >= len(tv.partitions) {
		return -1, -1, false
	}
	pv := tv.partitions[index]
	if pv.index != index || pv.leader < 0 {
		return -1, -1, false
	}
	return pv.leader, pv.leaderEpoch, true
}

// isLeaderHintCode: the error codes that carry the current leader.
func isLeaderHintCode(code int16) bool {
	return code == kerr.NotLeaderForPartition.Code || code == kerr.FencedLeaderEpoch.Code
}

// nodeEndpoints lists ids' endpoints from view, by id, skipping brokers
// not registered.
func nodeEndpoints[T any](view *metaView, ids []int32, mk func(brokerView) T) []T {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var out []T
	for _, id := range ids {
		if bv, ok := view.broker(id); ok {
			out = append(out, mk(bv))
		}
	}
	return out
}

// addProduceLeaderHints fills CurrentLeader of the partitions answered with
// NOT_LEADER_OR_FOLLOWER and the leaders' NodeEndpoints (Produce v10+).
func (b *Broker) addProduceLeaderHints(resp *kmsg.ProduceResponse) {
	if resp.Version < 10 {
		return
	}
	var view *metaView
	var leaders []int32
	for ti := range resp.Topics {
		rt := &resp.Topics[ti]
		for pi := range rt.Partitions {
			sp := &rt.Partitions[pi]
			if !isLeaderHintCode(sp.ErrorCode) {
				continue
			}
			if view == nil {
				view = b.meta.snapshot()
			}
			id := [16]byte{}
			if resp.Version >= 13 {
				id = rt.TopicID
			}
			if l, e, ok := leaderHint(view, rt.Topic, id, sp.Partition); ok {
				name := b.topicName(rt.Topic, id)
				if sup := b.supersededView(name, sp.Partition, l, e); sup != nil {
					l, e = sup.leader, sup.leaderEpoch
				} else if l == b.cfg.NodeID && b.leadershipLapsed(name, sp.Partition) {
					continue // no hint: the client asks for metadata
				}
				sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = l, e
				leaders = append(leaders, l)
			}
		}
	}
	if len(leaders) > 0 {
		resp.Brokers = nodeEndpoints(view, leaders, func(bv brokerView) kmsg.ProduceResponseBroker {
			return kmsg.ProduceResponseBroker{NodeID: bv.id, Host: bv.host, Port: bv.port, Rack: bv.rack}
		})
	}
}

// fetchLeaderHint fills a fetch partition's CurrentLeader after err, from
// the hosted replica p when there is one, else from the metadata. It
// returns the leader named (-1: none).
func (b *Broker) fetchLeaderHint(view **metaView, p *partition, topic string, id [16]byte, index int32, fp *fetchPart) int32 {
	if !isLeaderHintCode(fp.ErrorCode) {
		return -1
	}
	l, e := int32(-1), int32(-1)
	if p != nil {
		l, e = p.leaderState()
		if sup := p.supersededAt(e); sup != nil && l == b.cfg.NodeID {
			l, e = sup.leader, sup.leaderEpoch
		}
	} else {
		if *view == nil {
			*view = b.meta.snapshot()
		}
		l, e, _ = leaderHint(*view, topic, id, index)
	}
	if l < 0 {
		return -1
	}
	fp.CurrentLeader.LeaderID, fp.CurrentLeader.LeaderEpoch = l, e
	return l
}

// fetchNodeEndpoints are the endpoints of the leaders a fetch response
// names (Fetch v16+).
func (b *Broker) fetchNodeEndpoints(view *metaView, leaders []int32) []kmsg.FetchResponseBroker {
	if view == nil {
		view = b.meta.snapshot()
	}
	return nodeEndpoints(view, leaders, func(bv brokerView) kmsg.FetchResponseBroker {
		return kmsg.FetchResponseBroker{NodeID: bv.id, Host: bv.host, Port: bv.port, Rack: bv.rack}
	})
}
