package group

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Transactional offset commits (KIP-98, KIP-447). TxnOffsetCommit writes
// the offsets as one transactional batch of the producer; they stay
// pending (invisible to OffsetFetch) until the broker reports the
// producer's marker in the partition (CompleteTxn). On COMMIT each becomes
// the committed offset unless the committed one's record came later in
// the log; on ABORT they are dropped. Load replays the same from the
// batches and markers.

// TxnOffsetCommit handles a TxnOffsetCommit request (v0-v4; topic ids
// from v6). It returns once the batch is committed to the log (or failed);
// the offsets are then pending in the producer's transaction.
func (c *Coordinator) TxnOffsetCommit(ctx context.Context, req *kmsg.TxnOffsetCommitRequest) *kmsg.TxnOffsetCommitResponse {
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.TxnOffsetCommitResponse)) { s.txnOffsetCommit(req, reply) })
	if code != 0 {
		return txnCommitResponse(req, code)
	}
	return resp
}

// txnCommitResponse answers every partition of the request with code.
func txnCommitResponse(req *kmsg.TxnOffsetCommitRequest, code int16) *kmsg.TxnOffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	resp.Topics = make([]kmsg.TxnOffsetCommitResponseTopic, len(req.Topics))
	for i, t := range req.Topics {
		rt := &resp.Topics[i]
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.TxnOffsetCommitResponseTopicPartition, len(t.Partitions))
		for j, p := range t.Partitions {
			rt.Partitions[j] = kmsg.TxnOffsetCommitResponseTopicPartition{Partition: p.Partition, ErrorCode: code}
		}
	}
	return resp
}

func (s *shard) txnOffsetCommit(req *kmsg.TxnOffsetCommitRequest, reply func(*kmsg.TxnOffsetCommitResponse)) {
	if req.ProducerID < 0 {
		reply(txnCommitResponse(req, codeInvalidProducerIDMapping))
		return
	}
	e, code := s.validateTxnCommit(req)
	if code != 0 {
		reply(txnCommitResponse(req, code))
		return
	}
	resp := txnCommitResponse(req, 0)
	cfg := s.c.cfg
	nowMs := s.now().UnixMilli()
	type commit struct {
		tp topicPartition
		o  *offsetEntry
	}
	var commits []commit
	var records []recordbatch.Record
	added := map[topicPartition]bool{}
	known := -1 // partitions the group holds, counted on the first new one
	for ti, t := range req.Topics {
		for pi, p := range t.Partitions {
			out := &resp.Topics[ti].Partitions[pi].ErrorCode
			name, code := s.c.topicName(t.Topic, t.TopicID, req.Version >= 6, p.Partition)
			if code != 0 {
				*out = code
				continue
			}
			if p.Metadata != nil && len(*p.Metadata) > cfg.OffsetMetadataMaxBytes {
				*out = codeOffsetMetadataTooLarge
				continue
			}
			tp := topicPartition{name, p.Partition}
			if !added[tp] && !e.holds(tp) {
				if known < 0 {
					known = e.partitionCount()
				}
				if known+len(added) >= cfg.MaxOffsetsPerGroup {
					*out = codePolicyViolation
					continue
				}
				added[tp] = true
			}
			o := &offsetEntry{offset: p.Offset, leaderEpoch: -1, metadata: deref(p.Metadata), commitTs: nowMs, expireTs: -1}
			if req.Version >= 2 {
				o.leaderEpoch = p.LeaderEpoch
			}
			r := recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp), Value: appendOffsetValue(nil, o)}
			o.size = recordBytes(r)
			records = append(records, r)
			commits = append(commits, commit{tp, o})
		}
	}
	if len(records) == 0 {
		reply(resp)
		return
	}
	if e.pendingCommits == nil {
		e.pendingCommits = map[topicPartition]int{}
	}
	if e.txnInFlight == nil {
		e.txnInFlight = map[topicPartition]int{}
	}
	for _, c := range commits {
		e.pendingCommits[c.tp]++
		e.txnInFlight[c.tp]++
	}
	producer := req.ProducerID
	s.appendWrite(records, &txnProducer{id: producer, epoch: req.ProducerEpoch}, func(at logAt, err error) {
		for _, c := range commits {
			if e.pendingCommits[c.tp]--; e.pendingCommits[c.tp] <= 0 {
				delete(e.pendingCommits, c.tp)
			}
			if e.txnInFlight[c.tp]--; e.txnInFlight[c.tp] <= 0 {
				delete(e.txnInFlight, c.tp)
			}
		}
		if err != nil {
			code := appendErrorCode(err)
			for ti := range resp.Topics {
				for pi := range resp.Topics[ti].Partitions {
					if p := &resp.Topics[ti].Partitions[pi]; p.ErrorCode == 0 {
						p.ErrorCode = code
					}
				}
			}
			reply(resp)
			return
		}
		// The group cannot have been deleted meanwhile (deletion waits
		// for transactions); a reload would find the batch by group id.
		ge := s.groups[e.id]
		if ge == nil {
			ge = s.loadEntry(e.id)
		}
		for _, c := range commits {
			c.o.at = at
			s.addTxnOffset(ge, producer, c.tp, c.o)
		}
		reply(resp)
	})
}

// validateTxnCommit is Kafka's transactional offset-commit validation
// (GroupCoordinator.validateOffsetCommit with isTransactional). A commit
// without a generation to a group that does not exist creates a group that
// only stores offsets, as OffsetCommit does; a classic group takes
// commits without member and generation whatever its state, since
// the transaction's producer need not be a member.
func (s *shard) validateTxnCommit(req *kmsg.TxnOffsetCommitRequest) (*groupEntry, int16) {
	gen, member, instance := req.Generation, req.MemberID, deref(req.InstanceID)
	if req.Version < 3 {
		gen, member, instance = -1, "", ""
	}
	e := s.groups[req.Group]
	if e == nil {
		if gen >= 0 {
			return nil, codeIllegalGeneration
		}
		if s.groupsFull() {
			return nil, codePolicyViolation
		}
		return s.loadEntry(req.Group), 0
	}
	if e.dead {
		return nil, codeCoordinatorNotAvailable
	}
	if cg := e.consumer; cg != nil {
		// The member epoch is the generation; a stale epoch is
		// ILLEGAL_GENERATION to a transactional producer (Kafka's
		// validateTransactionalOffsetCommit).
		code := cg.validateCommit(txnAsCommit(req, gen, member))
		switch code {
		case 0:
			return e, 0
		case codeStaleMemberEpoch:
			return nil, codeIllegalGeneration
		}
		return nil, code
	}
	g := e.classic
	if gen < 0 && g.state == stateEmpty {
		return e, 0
	}
	if gen >= 0 || member != "" || instance != "" {
		if code := g.validateMember(member, instance); code != 0 {
			return nil, code
		}
		if gen != g.generation {
			return nil, codeIllegalGeneration
		}
	}
	return e, 0
}

// txnAsCommit is the OffsetCommit a consumer group's member check reads:
// the member, its epoch and the partitions.
func txnAsCommit(req *kmsg.TxnOffsetCommitRequest, gen int32, member string) *kmsg.OffsetCommitRequest {
	oc := kmsg.NewPtrOffsetCommitRequest()
	oc.Version = 9
	if req.Version >= 6 {
		oc.Version = 10
	}
	oc.Group, oc.Generation, oc.MemberID = req.Group, gen, member
	for _, t := range req.Topics {
		ot := kmsg.NewOffsetCommitRequestTopic()
		ot.Topic, ot.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			op := kmsg.NewOffsetCommitRequestTopicPartition()
			op.Partition = p.Partition
			ot.Partitions = append(ot.Partitions, op)
		}
		oc.Topics = append(oc.Topics, ot)
	}
	return oc
}

// CompleteTxn applies a transaction's outcome to the groups of offsets
// partition `partition`: the broker calls it once it has appended, and
// the partition has committed, a COMMIT or ABORT marker of the producer at
// markerOffset. On COMMIT the producer's pending offsets in that
// partition's groups become the committed offsets, unless a committed
// offset's record came later in the log; on ABORT they are dropped. Only
// offsets whose batch precedes the marker are concerned.
//
// It returns at once; the shard's goroutine applies it before any
// request submitted after it returns, and after the load when the
// partition is loading (a marker the load already read applies once
// only). A partition this coordinator does not hold ignores it: its next
// load reads the marker from the log.
func (c *Coordinator) CompleteTxn(partition int32, producerID int64, commit bool, markerOffset int64) {
	c.mu.RLock()
	s := c.mu.shards[partition]
	c.mu.RUnlock()
	if s == nil {
		return
	}
	s.completions.Lock()
	s.completions.q = append(s.completions.q, txnCompletion{producerID, commit, markerOffset})
	s.completions.Unlock()
	select {
	case s.completionsReady <- struct{}{}:
	default:
	}
}

// txnCompletion is a marker the broker reported.
type txnCompletion struct {
	producer int64
	commit   bool
	offset   int64
}

// markerBytes is a marker record's size in the log-size estimate: a 4-byte
// key (ControlRecordKey) and a 6-byte value (EndTxnMarker).
const markerBytes = 4 + 6 + recordOverhead

// applyCompletions applies the markers CompleteTxn queued.
func (s *shard) applyCompletions() {
	s.completions.Lock()
	q := s.completions.q
	s.completions.q = nil
	s.completions.Unlock()
	for _, m := range q {
		if m.offset >= s.endOffset {
			s.endOffset = m.offset + 1
			s.logBytes += markerBytes
			s.counted += markerBytes
		}
		s.completeTxn(m.producer, m.commit, m.offset)
	}
	if len(q) > 0 {
		s.checkSnapshot()
	}
}

// completeTxn applies the producer's marker at markerOffset to its pending
// offsets whose batches came before it (Kafka's
// GroupMetadata.completePendingTxnOffsetCommit).
func (s *shard) completeTxn(producer int64, commit bool, markerOffset int64) {
	for id := range s.openTxns[producer] {
		e := s.groups[id]
		if e == nil {
			s.dropTxnGroup(producer, id)
			continue
		}
		pend := e.txnOffsets[producer]
		for tp, p := range pend {
			if p.at.offset >= markerOffset {
				continue // the producer's next transaction
			}
			delete(pend, tp)
			if !commit {
				continue
			}
			if cur := e.offsets[tp]; cur == nil || cur.at.offset < p.at.offset {
				s.setOffset(e, tp, p)
			}
		}
		if len(pend) == 0 {
			delete(e.txnOffsets, producer)
			s.dropTxnGroup(producer, id)
		}
	}
}

// addTxnOffset makes o a pending offset of the producer's transaction in
// the group (a later one of the same transaction replaces it).
func (s *shard) addTxnOffset(e *groupEntry, producer int64, tp topicPartition, o *offsetEntry) {
	if e.txnOffsets == nil {
		e.txnOffsets = map[int64]map[topicPartition]*offsetEntry{}
	}
	pend := e.txnOffsets[producer]
	if pend == nil {
		pend = map[topicPartition]*offsetEntry{}
		e.txnOffsets[producer] = pend
	}
	pend[tp] = o
	groups := s.openTxns[producer]
	if groups == nil {
		groups = map[string]struct{}{}
		s.openTxns[producer] = groups
	}
	groups[e.id] = struct{}{}
}

// dropTxnGroup forgets that the group holds offsets of the producer.
func (s *shard) dropTxnGroup(producer int64, group string) {
	if groups := s.openTxns[producer]; groups != nil {
		delete(groups, group)
		if len(groups) == 0 {
			delete(s.openTxns, producer)
		}
	}
}

// hasTxn reports whether a transaction holds offsets of the group, pending
// or being written: it is then neither deleted nor expired.
func (e *groupEntry) hasTxn() bool {
	return len(e.txnOffsets) > 0 || len(e.txnInFlight) > 0
}

// unstable reports whether the partition has a transactional offset
// pending or being written (OffsetFetch's UNSTABLE_OFFSET_COMMIT).
func (e *groupEntry) unstable(tp topicPartition) bool {
	if e.txnInFlight[tp] > 0 {
		return true
	}
	for _, pend := range e.txnOffsets {
		if pend[tp] != nil {
			return true
		}
	}
	return false
}

// pendingTxnAfter reports whether a pending transactional offset of the
// partition has its record after offset.
func (e *groupEntry) pendingTxnAfter(tp topicPartition, offset int64) bool {
	for _, pend := range e.txnOffsets {
		if p := pend[tp]; p != nil && p.at.offset > offset {
			return true
		}
	}
	return false
}

// holds reports whether the group has the partition committed, being
// committed or pending in a transaction.
func (e *groupEntry) holds(tp topicPartition) bool {
	if e.offsets[tp] != nil || e.pendingCommits[tp] > 0 {
		return true
	}
	for _, pend := range e.txnOffsets {
		if pend[tp] != nil {
			return true
		}
	}
	return false
}

// partitionCount is the number of partitions the group holds (see holds),
// for group.max.committed.offsets.
func (e *groupEntry) partitionCount() int {
	n := len(e.offsets)
	for tp := range e.pendingCommits {
		if e.offsets[tp] == nil {
			n++
		}
	}
	if len(e.txnOffsets) == 0 {
		return n
	}
	seen := map[topicPartition]bool{}
	for _, pend := range e.txnOffsets {
		for tp := range pend {
			if e.offsets[tp] == nil && e.pendingCommits[tp] == 0 && !seen[tp] {
				seen[tp] = true
				n++
			}
		}
	}
	return n
}
