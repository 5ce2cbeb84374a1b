package txn

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// offsetsTopic is the internal topic AddOffsetsToTxn adds a partition of.
const offsetsTopic = "__consumer_offsets"

// AddPartitionsToTxn answers AddPartitionsToTxn v0-3 (the client's form).
// Partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION and the
// others OPERATION_NOT_ATTEMPTED, as Kafka answers; otherwise the
// partitions join the transaction (which becomes Ongoing), persisted
// before the answer, and every partition gets the outcome's code.
func (c *Coordinator) AddPartitionsToTxn(ctx context.Context, req *kmsg.AddPartitionsToTxnRequest) *kmsg.AddPartitionsToTxnResponse {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	answer := func(codeFor func(TopicPartition) int16) *kmsg.AddPartitionsToTxnResponse {
		for _, t := range req.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition = p
				rp.ErrorCode = codeFor(TopicPartition{t.Topic, p})
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	all := func(code int16) *kmsg.AddPartitionsToTxnResponse {
		code = fencedCode(code, req.Version, 2)
		return answer(func(TopicPartition) int16 { return code })
	}
	if req.TransactionalID == "" {
		return all(codeInvalidRequest)
	}
	var parts []TopicPartition
	missing := map[TopicPartition]bool{}
	for _, t := range req.Topics {
		n, ok := int32(0), c.topics == nil
		if !ok {
			n, ok = c.topics.Partitions(t.Topic)
		}
		for _, p := range t.Partitions {
			tp := TopicPartition{t.Topic, p}
			if p < 0 || (c.topics != nil && (!ok || p >= n)) {
				missing[tp] = true
			}
			parts = append(parts, tp)
		}
	}
	if len(missing) > 0 {
		return answer(func(tp TopicPartition) int16 {
			if missing[tp] {
				return codeUnknownTopicOrPartition
			}
			return codeOperationNotAttempted
		})
	}
	parts = normalizePartitions(parts)
	code, wait := onTxnShard(ctx, c, req.TransactionalID, func(s *shard, reply func(int16)) {
		s.addPartitions(req.TransactionalID, req.ProducerID, req.ProducerEpoch, parts, true, reply)
	})
	if wait != 0 {
		code = wait
	}
	return all(code)
}

// AddOffsetsToTxn answers AddOffsetsToTxn v0-3: the group's
// __consumer_offsets partition joins the transaction, so that its
// transactional offset commits get the transaction's marker.
func (c *Coordinator) AddOffsetsToTxn(ctx context.Context, req *kmsg.AddOffsetsToTxnRequest) *kmsg.AddOffsetsToTxnResponse {
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	if req.TransactionalID == "" {
		resp.ErrorCode = codeInvalidRequest
		return resp
	}
	tp := TopicPartition{offsetsTopic, PartitionFor(req.Group, c.cfg.OffsetsTopicNumPartitions)}
	code, wait := onTxnShard(ctx, c, req.TransactionalID, func(s *shard, reply func(int16)) {
		s.addPartitions(req.TransactionalID, req.ProducerID, req.ProducerEpoch, []TopicPartition{tp}, true, reply)
	})
	if wait != 0 {
		code = wait
	}
	resp.ErrorCode = fencedCode(code, req.Version, 2)
	return resp
}

// checkProducer is the check every client request after InitProducerId
// starts with: the id exists with this producer id
// (INVALID_PRODUCER_ID_MAPPING) at this epoch (PRODUCER_FENCED), and no
// transition of it is in flight (CONCURRENT_TRANSACTIONS).
func (s *shard) checkProducer(id string, pid int64, epoch int16) (*txnEntry, int16) {
	e := s.txns[id]
	switch {
	case e == nil || !e.stored || e.meta.producerID != pid:
		return nil, codeInvalidProducerIDMapping
	case e.meta.producerEpoch != epoch:
		return nil, codeProducerFenced
	case e.pending():
		return nil, codeConcurrentTransactions
	}
	return e, 0
}

// addPartitions is Kafka's handleAddPartitionsToTransaction on the loop;
// parts is sorted and free of duplicates. With mayPark, a request that
// finds the id in a transition waits for it to end (park), once.
func (s *shard) addPartitions(id string, pid int64, epoch int16, parts []TopicPartition, mayPark bool, reply func(int16)) {
	e, code := s.checkProducer(id, pid, epoch)
	if busy := s.txns[id]; code == codeConcurrentTransactions && mayPark && (busy.completion == nil || !busy.completion.stopped) {
		// A stopped completion waits for the partition's next load:
		// longer than any request.
		s.park(busy, func() { s.addPartitions(id, pid, epoch, parts, false, reply) }, func() { reply(code) })
		return
	}
	if code != 0 {
		reply(code)
		return
	}
	m := e.meta
	switch {
	case m.state == statePrepareCommit || m.state == statePrepareAbort:
		reply(codeConcurrentTransactions)
		return
	case m.state == stateOngoing && containsAll(m.partitions, parts):
		reply(0)
		return
	}
	now := s.nowMs()
	next := m
	next.state = stateOngoing
	next.partitions = union(m.partitions, parts)
	next.updateMs = now
	if m.state != stateOngoing {
		next.startMs = now
	}
	s.persist(e, next, func(err error) { reply(appendErrorCode(err)) })
}
