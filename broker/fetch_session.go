package broker

import (
	"container/list"
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Incremental fetch sessions (KIP-227). A client with many partitions sends
// the full list once; later fetches name only the partitions whose fetch
// position changed, and responses carry only the partitions with something
// new (records, a moved high watermark, log start or last stable offset, or
// an error). The broker keeps each session's partitions and the values it
// last sent for them.

// The special session epochs.
const (
	sessionEpochInitial = 0
	sessionEpochFinal   = -1
)

// fetchSessionSlots bounds the sessions a broker keeps
// (max.incremental.fetch.session.cache.slots); the least recently used is
// evicted, and its client falls back to a full fetch.
const fetchSessionSlots = 1000

type sessionKey struct {
	topic string // empty when the session uses topic ids
	id    [16]byte
	index int32
}

// sessionPartition is what a session remembers of one partition: the
// client's last request parameters and the values last sent back.
type sessionPartition struct {
	key                sessionKey
	fetchOffset        int64
	maxBytes           int32
	currentLeaderEpoch int32
	lastFetchedEpoch   int32 // a follower's, v12+ (-1: not sent)
	logStartOffset     int64 // a follower's, v5+
	// last sent; -1 before the first response
	hw, lso, lss int64
}

// fetchSession is one client's session. Its mutex guards the partition
// list and the values last sent, and is held only while a request is
// planned or its response recorded, never through a long poll: a second
// fetch on the session is answered (or refused for its epoch) at once.
type fetchSession struct {
	id    int32
	owner string // the client the session is bound to
	mu    sync.Mutex
	epoch int32 // the epoch the next request must carry
	parts []*sessionPartition
	index map[sessionKey]*sessionPartition
	// Guarded by the cache's mutex.
	elem     *list.Element
	lastUsed time.Time
}

// fetchSessionEvictionAge is how long a session must go unused before a
// new one may evict it (min.incremental.fetch.session.eviction.ms): a
// client creating sessions in a loop cannot push out the ones in use.
const fetchSessionEvictionAge = 120 * time.Second

type fetchSessionCache struct {
	mu       sync.Mutex
	byID     map[int32]*fetchSession
	lru      *list.List // front = most recently used
	evictAge time.Duration
	now      func() time.Time
}

func newFetchSessionCache() *fetchSessionCache {
	return &fetchSessionCache{byID: map[int32]*fetchSession{}, lru: list.New(), evictAge: fetchSessionEvictionAge, now: time.Now}
}

// fetchClient identifies a session's owner: the client id and the host it
// connects from (so that a client keeps its session across reconnects, and
// no other client can use or close it).
func fetchClient(clientID string, remote net.Addr) string {
	host := remote.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return clientID + "@" + host
}

// fetchClient is fetchClient of the connection's remote address, kept for
// the last client id seen: formatting the address cost two allocations
// per fetch. Only the reader calls it (fetches are handled there).
func (c *conn) fetchClient(clientID string) string {
	if !c.fetchOwnerSet || clientID != c.fetchOwnerID {
		c.fetchOwnerID, c.fetchOwner = clientID, fetchClient(clientID, c.nc.RemoteAddr())
		c.fetchOwnerSet = true
	}
	return c.fetchOwner
}

// randomSessionID is an unguessable positive session id.
func randomSessionID() int32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return int32(binary.BigEndian.Uint32(b[:]) & 0x7fffffff)
}

// create makes a session for owner, or returns nil when the cache is full
// of sessions used within the eviction age (the client then fetches
// without a session, as Kafka's do).
func (c *fetchSessionCache) create(owner string) *fetchSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.lru.Len() >= fetchSessionSlots {
		oldest := c.lru.Back().Value.(*fetchSession)
		if now.Sub(oldest.lastUsed) < c.evictAge && oldest.owner != owner {
			return nil
		}
		c.lru.Remove(oldest.elem)
		delete(c.byID, oldest.id)
	}
	id := randomSessionID()
	for id == 0 || c.byID[id] != nil {
		id = randomSessionID()
	}
	s := &fetchSession{id: id, owner: owner, epoch: 1, index: map[sessionKey]*sessionPartition{}, lastUsed: now}
	s.elem = c.lru.PushFront(s)
	c.byID[s.id] = s
	return s
}

// get returns owner's session id; another client's is as good as unknown.
func (c *fetchSessionCache) get(id int32, owner string) *fetchSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.byID[id]
	if s == nil || s.owner != owner {
		return nil
	}
	c.lru.MoveToFront(s.elem)
	s.lastUsed = c.now()
	return s
}

// remove closes owner's session id; another client's is left alone.
func (c *fetchSessionCache) remove(id int32, owner string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.byID[id]; s != nil && s.owner == owner {
		c.lru.Remove(s.elem)
		delete(c.byID, id)
	}
}

// fetchPlan is the list of partitions a fetch reads, either straight from
// the request (full fetch) or from its session. For a session the parts
// are copies taken when the request was planned, so the long poll reads
// them without the session's lock.
type fetchPlan struct {
	session     *fetchSession // nil for sessionless fetches
	incremental bool
	parts       []*sessionPartition
	partBuf     [4]*sessionPartition
	// partVals hold the parts of a sessionless fetch of up to 4
	// partitions, sparing an allocation each.
	partVals [4]sessionPartition
}

// planFetch applies the session rules of a request from owner (see
// fetchClient). It returns a top-level error code when the session is
// unknown or out of step.
func (c *fetchSessionCache) planFetch(req *kmsg.FetchRequest, owner string) (*fetchPlan, int16) {
	return c.planFetchInto(req, owner, &fetchPlan{})
}

// planFetchInto is planFetch filling plan, which must be zero (the fetch's
// own, sparing its allocation); it returns plan, or nil with an error code.
func (c *fetchSessionCache) planFetchInto(req *kmsg.FetchRequest, owner string, plan *fetchPlan) (*fetchPlan, int16) {
	useIDs := req.Version >= 13
	// fromRequest gives add each partition of the request; into, when
	// not nil, is where the part is made (a new one otherwise).
	fromRequest := func(into func(i int) *sessionPartition, add func(*sessionPartition)) {
		i := 0
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				k := sessionKey{index: rp.Partition}
				if useIDs {
					k.id = rt.TopicID
				} else {
					k.topic = rt.Topic
				}
				var p *sessionPartition
				if into != nil {
					p = into(i)
				}
				if p == nil {
					p = new(sessionPartition)
				}
				*p = sessionPartition{key: k, fetchOffset: rp.FetchOffset, maxBytes: rp.PartitionMaxBytes,
					currentLeaderEpoch: rp.CurrentLeaderEpoch, lastFetchedEpoch: rp.LastFetchedEpoch, logStartOffset: rp.LogStartOffset, hw: -1, lso: -1, lss: -1}
				add(p)
				i++
			}
		}
	}
	if req.Version < 7 || req.SessionEpoch == sessionEpochFinal || req.SessionEpoch == sessionEpochInitial {
		if req.Version >= 7 && req.SessionID != 0 {
			c.remove(req.SessionID, owner)
		}
		if req.Version >= 7 && req.SessionEpoch == sessionEpochInitial {
			plan.session = c.create(owner)
		}
		s := plan.session
		if s == nil {
			// Sessionless: the parts are read once, into the plan
			// (up to 4 without an allocation of their own).
			plan.parts = plan.partBuf[:0]
			into := func(i int) *sessionPartition {
				if i < len(plan.partVals) {
					return &plan.partVals[i]
				}
				return nil
			}
			fromRequest(into, func(p *sessionPartition) { plan.parts = append(plan.parts, p) })
			return plan, 0
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		fromRequest(nil, func(p *sessionPartition) {
			if old := s.index[p.key]; old != nil {
				*old = *p
				return
			}
			s.index[p.key] = p
			s.parts = append(s.parts, p)
		})
		plan.parts = s.snapshotLocked()
		return plan, 0
	}
	s := c.get(req.SessionID, owner)
	if s == nil {
		return nil, kerr.FetchSessionIDNotFound.Code
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.SessionEpoch != s.epoch {
		return nil, kerr.InvalidFetchSessionEpoch.Code
	}
	if s.epoch++; s.epoch <= 0 {
		s.epoch = 1
	}
	fromRequest(nil, func(p *sessionPartition) {
		if old := s.index[p.key]; old != nil {
			old.fetchOffset, old.maxBytes, old.currentLeaderEpoch, old.logStartOffset = p.fetchOffset, p.maxBytes, p.currentLeaderEpoch, p.logStartOffset
			old.lastFetchedEpoch = p.lastFetchedEpoch
			return
		}
		s.index[p.key] = p
		s.parts = append(s.parts, p)
	})
	for _, ft := range req.ForgottenTopics {
		for _, idx := range ft.Partitions {
			k := sessionKey{index: idx}
			if useIDs {
				k.id = ft.TopicID
			} else {
				k.topic = ft.Topic
			}
			if p := s.index[k]; p != nil {
				delete(s.index, k)
				for i, q := range s.parts {
					if q == p {
						s.parts = append(s.parts[:i], s.parts[i+1:]...)
						break
					}
				}
			}
		}
	}
	return &fetchPlan{session: s, incremental: true, parts: s.snapshotLocked()}, 0
}

// snapshotLocked copies the session's partitions. Requires s.mu.
func (s *fetchSession) snapshotLocked() []*sessionPartition {
	out := make([]*sessionPartition, len(s.parts))
	for i, p := range s.parts {
		cp := *p
		out[i] = &cp
	}
	return out
}

func (p *fetchPlan) sessionID() int32 {
	if p.session == nil {
		return 0
	}
	return p.session.id
}

// record runs fn with the session's partitions locked (the values last
// sent are updated there), or at once without a session.
func (p *fetchPlan) record(fn func()) {
	if p.session != nil {
		p.session.mu.Lock()
		defer p.session.mu.Unlock()
	}
	fn()
}

// include decides whether an incremental response carries a partition and
// records what was sent in the session. Full responses carry every
// partition. Call it inside record.
func (p *fetchPlan) include(sp *sessionPartition, fp *fetchPart) bool {
	last := sp
	if p.session != nil {
		if live := p.session.index[sp.key]; live != nil {
			last = live
		}
	}
	changed := fp.ErrorCode != 0 || fp.size() > 0 || fp.PreferredReadReplica >= 0 ||
		last.hw != fp.HighWatermark || last.lso != fp.LastStableOffset || last.lss != fp.LogStartOffset
	last.hw, last.lso, last.lss = fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset
	return !p.incremental || changed
}
