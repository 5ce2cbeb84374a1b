package broker

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A leader cut off from etcd keeps the leadership its metadata names
// (etcd restarted under load must not stop every leader), but once its
// registration may have expired (ProvenUntil has passed) the controller
// may have elected another replica. It then asks the other replicas of
// the partitions it leads for their metadata: one that names a higher
// leader epoch is proof that this broker's leadership is over. From then
// on, until its own metadata moves on, the partition refuses produce with
// NOT_LEADER_OR_FOLLOWER and Metadata names the newer leader, so clients
// leave the cut broker at once. Without that proof (every replica sees
// the same epoch: etcd itself is away) nothing changes.

// supersedeCheckInterval is how often a broker whose registration is
// unproven asks its followers; supersedeAskTimeout bounds one ask.
const (
	supersedeCheckInterval = 250 * time.Millisecond
	supersedeAskTimeout    = time.Second
	// supersedeMetadataVersion: leader epochs (v7+), topic ids (v10+).
	supersedeMetadataVersion = 12
)

// supersession is a peer's word that a partition's leadership at epoch
// has ended: the peer's metadata names leader at leaderEpoch.
type supersession struct {
	epoch       int32 // this broker's leader epoch it ends
	leader      int32
	leaderEpoch int32
	replicas    []int32
	isr         []int32
}

// supersededAt is the proof that the partition's leadership at epoch
// has ended, or nil.
func (p *partition) supersededAt(epoch int32) *supersession {
	if s := p.superseded.Load(); s != nil && s.epoch == epoch {
		return s
	}
	return nil
}

// watchSupersession asks peers, while the registration is unproven,
// whether this broker's leaderships have been superseded, until the
// broker closes.
func (b *Broker) watchSupersession(provenUntil func() time.Time) {
	t := time.NewTicker(supersedeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if until := provenUntil(); until.IsZero() || time.Now().Before(until) {
			continue
		}
		b.askPeersForLeaders()
	}
}

// askPeersForLeaders asks the other replicas of every partition this
// broker leads (and has no proof against yet) for their metadata, and
// records the partitions whose leadership a peer shows superseded.
func (b *Broker) askPeersForLeaders() {
	self := b.cfg.NodeID
	byPeer := map[int32][]*partition{}
	for _, p := range b.replicas.all() {
		s := p.state.Load()
		if s.closed || s.leader != self || p.supersededAt(s.leaderEpoch) != nil {
			continue
		}
		for _, r := range s.replicas {
			if r != self {
				byPeer[r] = append(byPeer[r], p)
			}
		}
	}
	if len(byPeer) == 0 {
		return
	}
	view := b.meta.snapshot()
	ctx, cancel := context.WithTimeout(b.ctx, supersedeAskTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for peer, parts := range byPeer {
		bv, ok := view.broker(peer)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := b.askPeerMetadata(ctx, net.JoinHostPort(bv.host, strconv.Itoa(int(bv.port))), parts)
			if err != nil {
				b.log.Debug("asking a follower for its metadata (leadership unproven)", "peer", peer, "err", err)
				return
			}
			b.recordSupersessions(peer, parts, resp)
		}()
	}
	wg.Wait()
}

func (b *Broker) askPeerMetadata(ctx context.Context, addr string, parts []*partition) (*kmsg.MetadataResponse, error) {
	pc, err := dialPeer(ctx, b.cfg.DialPeer, addr, b.cfg.NodeID, b.secret)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	req := kmsg.NewPtrMetadataRequest()
	req.Version = supersedeMetadataVersion
	seen := map[string]bool{}
	for _, p := range parts {
		if !seen[p.topic] {
			seen[p.topic] = true
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(p.topic)
			req.Topics = append(req.Topics, rt)
		}
	}
	resp, err := pc.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.MetadataResponse), nil
}

// recordSupersessions marks the partitions of parts whose leader epoch
// in peer's answer is above this broker's.
func (b *Broker) recordSupersessions(peer int32, parts []*partition, resp *kmsg.MetadataResponse) {
	type key struct {
		topic string
		index int32
	}
	theirs := map[key]kmsg.MetadataResponseTopicPartition{}
	ids := map[string][16]byte{}
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 || rt.Topic == nil {
			continue
		}
		ids[*rt.Topic] = rt.TopicID
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 {
				theirs[key{*rt.Topic, rp.Partition}] = rp
			}
		}
	}
	for _, p := range parts {
		rp, ok := theirs[key{p.topic, p.index}]
		if !ok || ids[p.topic] != p.topicID {
			continue
		}
		s := p.state.Load()
		if s.closed || s.leader != b.cfg.NodeID || rp.LeaderEpoch <= s.leaderEpoch {
			continue
		}
		p.superseded.Store(&supersession{epoch: s.leaderEpoch, leader: rp.Leader, leaderEpoch: rp.LeaderEpoch, replicas: rp.Replicas, isr: rp.ISR})
		b.log.Warn("leadership superseded while cut off from etcd: refusing writes until the metadata catches up",
			"topic", p.topic, "partition", p.index, "epoch", s.leaderEpoch, "peer", peer, "leader", rp.Leader, "leader_epoch", rp.LeaderEpoch)
	}
}

// supersededView is the proof against this broker's leadership of
// partition index of topic at leaderEpoch, if it hosts it and has one.
func (b *Broker) supersededView(topic string, index, leader, leaderEpoch int32) *supersession {
	if leader != b.cfg.NodeID {
		return nil
	}
	p, ok := b.replicas.lookupByName(topic, index)
	if !ok {
		return nil
	}
	return p.supersededAt(leaderEpoch)
}
