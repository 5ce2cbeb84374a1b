package broker

import (
	"container/list"
	"sync"

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
	logStartOffset     int64 // a follower's, v5+
	// last sent; -1 before the first response
	hw, lso, lss int64
}

type fetchSession struct {
	id    int32
	mu    sync.Mutex // one fetch at a time per session
	epoch int32      // the epoch the next request must carry
	parts []*sessionPartition
	index map[sessionKey]*sessionPartition
	elem  *list.Element
}

type fetchSessionCache struct {
	mu     sync.Mutex
	nextID int32
	byID   map[int32]*fetchSession
	lru    *list.List // front = most recently used
}

func newFetchSessionCache() *fetchSessionCache {
	return &fetchSessionCache{byID: map[int32]*fetchSession{}, lru: list.New(), nextID: 1}
}

func (c *fetchSessionCache) create() *fetchSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru.Len() >= fetchSessionSlots {
		oldest := c.lru.Back().Value.(*fetchSession)
		c.lru.Remove(oldest.elem)
		delete(c.byID, oldest.id)
	}
	for c.nextID <= 0 || c.byID[c.nextID] != nil {
		c.nextID++
		if c.nextID <= 0 {
			c.nextID = 1
		}
	}
	s := &fetchSession{id: c.nextID, epoch: 1, index: map[sessionKey]*sessionPartition{}}
	c.nextID++
	s.elem = c.lru.PushFront(s)
	c.byID[s.id] = s
	return s
}

func (c *fetchSessionCache) get(id int32) *fetchSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.byID[id]
	if s != nil {
		c.lru.MoveToFront(s.elem)
	}
	return s
}

func (c *fetchSessionCache) remove(id int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.byID[id]; s != nil {
		c.lru.Remove(s.elem)
		delete(c.byID, id)
	}
}

// fetchPlan is the list of partitions a fetch reads, either straight from
// the request (full fetch) or from its session.
type fetchPlan struct {
	session     *fetchSession // nil for sessionless fetches
	incremental bool
	parts       []*sessionPartition
}

// planFetch applies the session rules of a request. It returns a top-level
// error code when the session is unknown or out of step.
func (c *fetchSessionCache) planFetch(req *kmsg.FetchRequest) (*fetchPlan, int16) {
	useIDs := req.Version >= 13
	fromRequest := func(add func(*sessionPartition)) {
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				k := sessionKey{index: rp.Partition}
				if useIDs {
					k.id = rt.TopicID
				} else {
					k.topic = rt.Topic
				}
				add(&sessionPartition{key: k, fetchOffset: rp.FetchOffset, maxBytes: rp.PartitionMaxBytes,
					currentLeaderEpoch: rp.CurrentLeaderEpoch, logStartOffset: rp.LogStartOffset, hw: -1, lso: -1, lss: -1})
			}
		}
	}
	if req.Version < 7 || req.SessionEpoch == sessionEpochFinal || req.SessionEpoch == sessionEpochInitial {
		if req.Version >= 7 && req.SessionID != 0 {
			c.remove(req.SessionID)
		}
		plan := &fetchPlan{}
		if req.Version >= 7 && req.SessionEpoch == sessionEpochInitial {
			plan.session = c.create()
			plan.session.mu.Lock()
		}
		fromRequest(func(p *sessionPartition) {
			if plan.session != nil {
				if old := plan.session.index[p.key]; old != nil {
					*old = *p
					return
				}
				plan.session.index[p.key] = p
				plan.session.parts = append(plan.session.parts, p)
			}
			plan.parts = append(plan.parts, p)
		})
		return plan, 0
	}
	s := c.get(req.SessionID)
	if s == nil {
		return nil, kerr.FetchSessionIDNotFound.Code
	}
	s.mu.Lock()
	if req.SessionEpoch != s.epoch {
		s.mu.Unlock()
		return nil, kerr.InvalidFetchSessionEpoch.Code
	}
	if s.epoch++; s.epoch <= 0 {
		s.epoch = 1
	}
	fromRequest(func(p *sessionPartition) {
		if old := s.index[p.key]; old != nil {
			old.fetchOffset, old.maxBytes, old.currentLeaderEpoch, old.logStartOffset = p.fetchOffset, p.maxBytes, p.currentLeaderEpoch, p.logStartOffset
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
	return &fetchPlan{session: s, incremental: true, parts: append([]*sessionPartition(nil), s.parts...)}, 0
}

// done ends the plan's use of its session.
func (p *fetchPlan) done() {
	if p.session != nil {
		p.session.mu.Unlock()
	}
}

func (p *fetchPlan) sessionID() int32 {
	if p.session == nil {
		return 0
	}
	return p.session.id
}

// include decides whether an incremental response carries a partition and
// records what was sent. Full responses carry every partition.
func (p *fetchPlan) include(sp *sessionPartition, fp *fetchPart) bool {
	changed := fp.ErrorCode != 0 || fp.size() > 0 ||
		sp.hw != fp.HighWatermark || sp.lso != fp.LastStableOffset || sp.lss != fp.LogStartOffset
	sp.hw, sp.lso, sp.lss = fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset
	return !p.incremental || changed
}
