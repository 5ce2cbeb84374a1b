package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
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
//
// # Acknowledging only a leadership it can prove
//
// A leader cut from etcd and from every follower as well hears no such
// proof, yet the controller elects one of its in-sync followers once the
// lease has expired in etcd; whatever the old leader appends after that
// is truncated when it comes back as a follower, so an acks=1 write it
// acknowledged is lost. Kafka accepts that loss: a ZooKeeper-era leader
// and a KRaft broker fenced by the controller (its heartbeats missed for
// broker.session.timeout.ms) keep leading in their own eyes until they
// hear of the new epoch. Their acks=all writes stall, since the
// followers have moved on and the ISR cannot shrink without the
// controller (the same holds here), but acks=1 writes are acknowledged
// there until then. Shale's leader instead stops accepting writes once
// it can prove neither of the two things that rule out another leader,
// as etcd's raft leader steps down under CheckQuorum when it has not
// heard from a quorum for an election timeout:
//
//   - its lease: until ProvenUntil (the send time of the newest renewal
//     etcd answered, plus the TTL) etcd cannot have expired it, and the
//     controller elects a new leader only for a broker whose lease is
//     gone;
//   - the word of its followers, asked less than contactHolds ago, that
//     they name this broker leader at its epoch, so have seen no newer
//     leader. One word does when it comes from an in-sync follower whose
//     own lease was proven as it answered (it says so in a tagged field
//     of its Metadata answer, leaseProvenTag): the controller keeps a
//     registered broker in the ISR when it elects a new leader, so that
//     leader's commits wait for this follower's fetches, and it would see
//     the new leader within a watch's delay. A follower cut from etcd
//     proves nothing alone: the controller may have dropped it from the
//     ISR with this broker and elected the third replica, whose commits
//     need no word from it. Without such a word, the words of every
//     replica the controller could elect (electable) do: none of them
//     leads, and none can lead without learning it. With etcd down for
//     everyone the followers keep answering so, and the leader keeps
//     leading, as no controller can elect another meanwhile.
//
// Neither proven, the partition answers produce NOT_LEADER_OR_FOLLOWER
// (retriable: a client refreshes its metadata and tries again) until one
// is proven again, with no leader hint; this broker's Metadata names no
// leader for it (LEADER_NOT_AVAILABLE), so that a client asks another
// broker rather than come back; a group coordinator on it answers
// NOT_COORDINATOR (FindCoordinator: COORDINATOR_NOT_AVAILABLE), since its
// state may lack commits the coordinator elected in its place has
// acknowledged, and a committed offset read from it would move backwards;
// clients' ListOffsets and OffsetForLeaderEpoch are refused likewise, and
// DeleteRecords, a write. This applies only where another replica could be
// elected: an ISR with another member (pending additions counted), or
// unclean.leader.election.enable with another replica. A partition whose
// only in-sync replica is this broker (replication factor 1 among them)
// keeps serving: the controller marks it offline when the lease expires
// (replication.ElectLeader elects no one from outside the ISR) and this
// broker leads it again, log intact, when it registers again. Fetches are
// not refused: what is below the high watermark is on every in-sync
// replica, and a deposed leader's high watermark only lags. A consumer's
// fetch past its log end is answered NOT_LEADER_OR_FOLLOWER rather than
// OFFSET_OUT_OF_RANGE: the leader elected in its place may have appended
// that far, and a consumer that sends no leader epoch would reset.
//
// A follower whose own lease is unproven still counts towards the words
// of every electable replica: with etcd away for everyone, a leader whose
// other follower is down too refuses writes, where a registered follower's
// word alone would have done.

// supersedeCheckInterval is how often a broker whose registration is
// unproven asks its followers; supersedeAskTimeout bounds one ask.
const (
	supersedeCheckInterval = 250 * time.Millisecond
	supersedeAskTimeout    = time.Second
	// supersedeMetadataVersion: leader epochs (v7+), topic ids (v10+).
	supersedeMetadataVersion = 12
	// contactHolds is how long a follower's answer naming this
	// broker leader at its epoch proves the leadership, counted
	// from when it was asked: long enough to cover the next ask.
	contactHolds = supersedeAskTimeout + 2*supersedeCheckInterval
	// readFenceWait bounds how long a read waits for an in-sync
	// follower's word asked after it arrived (offsetsLog.ReadFence), and
	// readFencePoll is how often it looks.
	readFenceWait = contactHolds + supersedeAskTimeout
	readFencePoll = 20 * time.Millisecond
)

// errLeadershipUnproven: neither the lease nor an in-sync follower
// proves the leadership; the client is told NOT_LEADER_OR_FOLLOWER.
var errLeadershipUnproven = fmt.Errorf("%w: its lease may have expired and no in-sync follower answers", errNotLeader)

// leaseProvenTag is the tagged field of a Metadata answer (v9+) to
// another broker that says the answering broker's own lease was proven as
// it answered. Kafka's own tags are small numbers; this one stays clear
// of them.
const leaseProvenTag = 0x5348

// contactProof is what the other replicas said of this broker's
// leadership at epoch: each one's latest word that it names this broker
// leader at that epoch. Never modified once stored.
type contactProof struct {
	epoch int32
	words map[int32]followerWord // by replica id
}

// followerWord is a replica's word, asked at asked, that this broker
// leads; registered: the replica's own lease was proven as it answered.
type followerWord struct {
	asked      time.Time
	registered bool
}

// leaseValid reports whether this broker's registration cannot have
// expired at now (always, for a partition with no replica host).
func (p *partition) leaseValid(now time.Time) bool {
	return p.host == nil || now.Before(p.host.leaseProvenUntil())
}

// leadershipProven reports whether this broker may append as the leader
// of state s at now (see above): its lease is proven, or its followers'
// words asked less than contactHolds ago prove it, or no other replica
// can be elected. Requires appendMu (shared).
func (p *partition) leadershipProven(s *partitionState, now time.Time) bool {
	return p.leadershipProvenSince(s, now, now.Add(-contactHolds))
}

// leadershipProvenSince is leadershipProven with the followers' words
// counted from since. Requires appendMu (shared).
func (p *partition) leadershipProvenSince(s *partitionState, now, since time.Time) bool {
	if p.leaseValid(now) {
		return true
	}
	others := p.electable(s)
	return len(others) == 0 || p.vouchedSince(s, others, since)
}

// vouchedSince reports whether followers' words asked at or after since
// prove the leadership of state s: one from an in-sync follower
// registered as it answered, or one from each of others (electable).
// Requires appendMu (shared).
func (p *partition) vouchedSince(s *partitionState, others []int32, since time.Time) bool {
	c := p.contact.Load()
	if c == nil || c.epoch != s.leaderEpoch {
		return false
	}
	p.repl.Lock()
	isr := p.minimalISRLocked(s)
	p.repl.Unlock()
	for id, w := range c.words {
		if w.registered && !w.asked.Before(since) && slices.Contains(isr, id) {
			return true
		}
	}
	for _, id := range others {
		if w, ok := c.words[id]; !ok || w.asked.Before(since) {
			return false
		}
	}
	return true
}

// leadsProvably reports whether this broker leads the partition as far as
// it can prove now: it is the leader in its metadata, no peer has named a
// newer one, and leadershipProven holds. The group coordinator answers
// from the state it loaded from the partition only while this holds: a
// coordinator whose leadership is over, or unproven, may hold commits
// older than those another coordinator has acknowledged since.
func (p *partition) leadsProvably() bool {
	if p.writable(p.state.Load()) != nil {
		return false
	}
	if p.leaseValid(time.Now()) {
		return true // the common case, without a lock
	}
	p.appendMu.RLock()
	defer p.appendMu.RUnlock()
	s := p.state.Load()
	return p.writable(s) == nil && p.leadershipProven(s, time.Now())
}

// provenSince reports whether this broker leads the partition and proves
// it for reads that arrived at since: by its lease, valid now, or by its
// followers' words asked at or after since (vouchedSince), or because no
// other replica can be elected. A word asked before since does not do:
// the follower may have been elected just after it answered, and, once it
// has seen that, never names this broker at its epoch again, so no commit
// it acknowledged as the new leader can predate a word asked after since.
// maybe reports that such a word may still come (it leads, proven by an
// older word).
func (p *partition) provenSince(since time.Time) (proven, maybe bool) {
	if !p.leadsProvably() {
		return false, false
	}
	if p.leaseValid(time.Now()) {
		return true, false // without a lock
	}
	p.appendMu.RLock()
	defer p.appendMu.RUnlock()
	return p.leadershipProvenSince(p.state.Load(), time.Now(), since), true
}

// leadershipLapsed reports whether this broker leads partition index of
// topic in its own metadata but cannot prove it now (leadsProvably), and
// knows of no newer leader (supersededView names it when it does). Its
// Metadata and FindCoordinator answers then name no leader, rather than
// itself, so that clients ask another broker, which may know the new one.
func (b *Broker) leadershipLapsed(topic string, index int32) bool {
	p, ok := b.replicas.lookupByName(topic, index)
	return ok && p.leadershipLapsed()
}

// leadershipLapsed reports whether this broker leads the partition in its
// own metadata but cannot prove it now (leadsProvably): clients'
// ListOffsets and OffsetForLeaderEpoch are refused then, as the log end and
// high watermark they answer from may be behind what the leader elected
// in this broker's place has answered.
func (p *partition) leadershipLapsed() bool {
	if p.leaseValid(time.Now()) || !p.isLeader() {
		return false // the common case, without a lock
	}
	return !p.leadsProvably()
}

// electable is the replicas the controller could elect in this broker's
// place: the other in-sync ones (those of an ISR change in flight
// counted), or, with unclean.leader.election.enable, every other replica.
func (p *partition) electable(s *partitionState) []int32 {
	var others []int32
	set := s.replicas
	if !p.cfg.Load().uncleanLeaderElect {
		p.repl.Lock()
		set = p.maximalISRLocked(s)
		p.repl.Unlock()
	}
	for _, id := range set {
		if id != p.nodeID {
			others = append(others, id)
		}
	}
	return others
}

// provedBy records that replica peer named this broker leader at epoch
// when asked at asked; registered: its own lease was proven as it
// answered.
func (p *partition) provedBy(epoch, peer int32, asked time.Time, registered bool) {
	w := followerWord{asked: asked, registered: registered}
	for {
		cur := p.contact.Load()
		next := &contactProof{epoch: epoch, words: map[int32]followerWord{peer: w}}
		if cur != nil && cur.epoch == epoch {
			if old, ok := cur.words[peer]; ok && !old.asked.Before(asked) {
				return
			}
			for id, old := range cur.words {
				if id != peer {
					next.words[id] = old
				}
			}
		}
		if p.contact.CompareAndSwap(cur, next) {
			return
		}
	}
}

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

// watchSupersession asks peers, while the registration is unproven or
// about to be (less than half its TTL left: three renewals in a row have
// failed), whether this broker's leaderships have been superseded, and
// gathers its in-sync followers' word that they have not, until the
// broker closes. Asking before the lease is out keeps a leader whose
// followers answer from refusing writes for a moment as it runs out.
func (b *Broker) watchSupersession(provenUntil func() time.Time, ttl time.Duration) {
	t := time.NewTicker(supersedeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if time.Now().Before(provenUntil().Add(-ttl / 2)) {
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
		// Asked also for the followers' word that the leadership
		// holds (leadershipProven).
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
	sent := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, supersedeAskTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for peer, parts := range byPeer {
		// A follower whose registration vanished (its lease expired
		// unrenewed after an etcd restart) may still be in the ISR and
		// prove the leadership: asked at its last registered address.
		addr, ok := view.brokerAddr(peer)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := b.askPeerMetadata(ctx, addr, parts)
			if err != nil {
				b.log.Debug("asking a follower for its metadata (leadership unproven)", "peer", peer, "err", err)
				return
			}
			b.recordSupersessions(peer, parts, resp, sent)
		}()
	}
	wg.Wait()
}

func (b *Broker) askPeerMetadata(ctx context.Context, addr string, parts []*partition) (*kmsg.MetadataResponse, error) {
	pc, err := dialPeer(ctx, b.cfg.DialPeer, b.peerTLS(), addr, b.cfg.NodeID, b.secret)
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
// in peer's answer (asked at sent) is above this broker's, and records
// the word of a peer that names this broker leader at its epoch, with
// whether the peer's own lease was proven (leaseProvenTag).
func (b *Broker) recordSupersessions(peer int32, parts []*partition, resp *kmsg.MetadataResponse, sent time.Time) {
	type key struct {
		topic string
		index int32
	}
	registered := false
	resp.UnknownTags.Each(func(tag uint32, val []byte) {
		registered = registered || tag == leaseProvenTag && len(val) == 1 && val[0] == 1
	})
	theirs := map[key]kmsg.MetadataResponseTopicPartition{}
	ids := map[string][16]byte{}
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 || rt.Topic == nil {
			continue
		}
		ids[*rt.Topic] = rt.TopicID
		for _, rp := range rt.Partitions {
			// LEADER_NOT_AVAILABLE with the leader's epoch: the peer
			// no longer lists the leader as registered (its lease
			// expired while etcd was away), and names no other.
			if rp.ErrorCode == 0 || rp.ErrorCode == kerr.LeaderNotAvailable.Code {
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
		if s.closed || s.leader != b.cfg.NodeID || rp.LeaderEpoch < s.leaderEpoch {
			continue
		}
		if rp.LeaderEpoch == s.leaderEpoch {
			// One leader per epoch: a peer at this epoch that names
			// no leader (it does not list this broker as registered)
			// has not seen another either.
			if rp.Leader == b.cfg.NodeID || rp.Leader < 0 {
				p.provedBy(s.leaderEpoch, peer, sent, registered)
			}
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
