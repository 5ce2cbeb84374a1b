package txn

import (
	"context"
	"math"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// initAttempts bounds the rounds of InitProducerID that find a new
// producer id needed (each allocates one off the shard's goroutine).
const initAttempts = 3

// producerIDAndEpoch is what a KIP-360 client (InitProducerId v3+) says it
// holds.
type producerIDAndEpoch struct {
	id    int64
	epoch int16
}

type initResult struct {
	code    int16
	pid     int64
	epoch   int16
	needPID bool // a new producer id is needed: allocate one and retry
}

// InitProducerID answers InitProducerId (v0-5). A request without a
// transactional id (an idempotent producer) gets a fresh producer id at
// epoch 0. For a transactional id it fences the id's previous producer:
// the epoch is bumped (a new producer id past epoch 32766), an ongoing
// transaction is aborted first (CONCURRENT_TRANSACTIONS meanwhile: the
// client retries), and the new state is persisted before the answer.
func (c *Coordinator) InitProducerID(ctx context.Context, req *kmsg.InitProducerIDRequest) *kmsg.InitProducerIDResponse {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = noProducerID, noProducerEpoch
	fail := func(code int16) *kmsg.InitProducerIDResponse {
		resp.ErrorCode = fencedCode(code, req.Version, 4)
		return resp
	}
	var expected *producerIDAndEpoch
	switch {
	case req.ProducerID == noProducerID && req.ProducerEpoch == noProducerEpoch:
	case req.ProducerID == noProducerID || req.ProducerEpoch == noProducerEpoch:
		return fail(codeInvalidRequest)
	default:
		expected = &producerIDAndEpoch{req.ProducerID, req.ProducerEpoch}
	}
	if req.TransactionalID == nil {
		pid, err := c.pids.NextProducerID(ctx)
		if err != nil || pid < 0 {
			c.log.Warn("txn: allocating a producer id failed", "err", err, "producer_id", pid)
			return fail(codeCoordinatorLoadInProgress)
		}
		resp.ProducerID, resp.ProducerEpoch = pid, 0
		return resp
	}
	id := *req.TransactionalID
	switch {
	case id == "":
		return fail(codeInvalidRequest)
	case req.TransactionTimeoutMillis <= 0 || int64(req.TransactionTimeoutMillis) > c.cfg.MaxTimeout.Milliseconds():
		return fail(codeInvalidTransactionTimeout)
	}
	newPID := int64(noProducerID)
	for attempt := 1; ; attempt++ {
		r, code := onTxnShard(ctx, c, id, func(s *shard, reply func(initResult)) {
			s.initProducerID(id, req.TransactionTimeoutMillis, expected, newPID, reply)
		})
		switch {
		case code != 0:
			return fail(code)
		case r.needPID && attempt < initAttempts:
			pid, err := c.pids.NextProducerID(ctx)
			if err != nil || pid < 0 {
				c.log.Warn("txn: allocating a producer id failed", "transactional_id", id, "err", err, "producer_id", pid)
				return fail(codeCoordinatorLoadInProgress)
			}
			newPID = pid
			continue
		case r.needPID:
			return fail(codeConcurrentTransactions)
		case r.code != 0:
			return fail(r.code)
		}
		resp.ProducerID, resp.ProducerEpoch = r.pid, r.epoch
		return resp
	}
}

// initProducerID is Kafka's prepareInitProducerIdTransit and what follows
// it, on the loop. newPID is a producer id allocated for this request, or
// -1; when one is needed and there is none, it replies needPID.
func (s *shard) initProducerID(id string, timeoutMs int32, expected *producerIDAndEpoch, newPID int64, reply func(initResult)) {
	e := s.txns[id]
	if e == nil {
		if newPID < 0 {
			reply(initResult{needPID: true})
			return
		}
		// Not stored until its first write commits; epoch -1 so that
		// the bump below gives 0.
		e = &txnEntry{id: id, lastProducerID: noProducerID, lastProducerEpoch: noProducerEpoch}
		e.meta = txnMeta{producerID: newPID, producerEpoch: noProducerEpoch, state: stateEmpty, startMs: -1}
		s.txns[id] = e
		newPID = noProducerID
	} else if e.pending() {
		reply(initResult{code: codeConcurrentTransactions})
		return
	}
	m := e.meta
	if expected != nil && m.producerEpoch != noProducerEpoch && expected.id != m.producerID &&
		!(expected.id == e.lastProducerID && epochExhausted(expected.epoch)) {
		reply(initResult{code: codeProducerFenced})
		return
	}
	switch m.state {
	case statePrepareCommit, statePrepareAbort:
		reply(initResult{code: codeConcurrentTransactions})
		return
	case stateOngoing:
		// Abort the ongoing transaction under a bumped epoch, which is
		// never handed out: the client retries and gets the next one.
		s.fenceAndAbort(e, func(code int16) {
			if code == 0 {
				code = codeConcurrentTransactions
			}
			reply(initResult{code: code})
		})
		return
	}
	next := txnMeta{producerID: m.producerID, timeoutMs: timeoutMs, state: stateEmpty, startMs: -1, updateMs: s.nowMs()}
	lastEpoch := int16(noProducerEpoch)
	switch {
	case epochExhausted(m.producerEpoch) && (expected == nil || expected.epoch == m.producerEpoch):
		if newPID < 0 {
			reply(initResult{needPID: true})
			return
		}
		next.producerID, next.producerEpoch = newPID, 0
		if expected != nil {
			lastEpoch = m.producerEpoch
		}
	case expected == nil:
		next.producerEpoch = m.producerEpoch + 1
	case m.producerEpoch == noProducerEpoch || expected.epoch == m.producerEpoch:
		if epochExhausted(m.producerEpoch) {
			reply(initResult{code: codeProducerFenced})
			return
		}
		next.producerEpoch, lastEpoch = m.producerEpoch+1, m.producerEpoch
	case expected.epoch == e.lastProducerEpoch:
		// A retry of a bump whose answer the producer never got: the
		// same epoch again.
		next.producerEpoch, lastEpoch = m.producerEpoch, e.lastProducerEpoch
	default:
		reply(initResult{code: codeProducerFenced})
		return
	}
	lastPID := m.producerID
	s.persist(e, next, func(err error) {
		if err != nil {
			reply(initResult{code: appendErrorCode(err)})
			return
		}
		e.lastProducerID, e.lastProducerEpoch = lastPID, lastEpoch
		s.c.log.Debug("txn: initialized transactional id", "transactional_id", id, "producer_id", next.producerID, "producer_epoch", next.producerEpoch)
		reply(initResult{pid: next.producerID, epoch: next.producerEpoch})
	})
}

// fenceAndAbort aborts e's ongoing transaction under a bumped epoch, so
// that its producer is fenced (Kafka's PrepareEpochFence): PrepareAbort
// is written with epoch+1, then the markers go out with that epoch and
// CompleteAbort follows. done gets the PrepareAbort append's code.
func (s *shard) fenceAndAbort(e *txnEntry, done func(code int16)) {
	next := e.meta
	if next.producerEpoch < math.MaxInt16 {
		next.producerEpoch++
	}
	next.state = statePrepareAbort
	next.updateMs = s.nowMs()
	s.persist(e, next, func(err error) {
		if err != nil {
			done(appendErrorCode(err))
			return
		}
		e.lastProducerEpoch = noProducerEpoch
		s.c.metrics.timeouts.Inc()
		done(0)
		s.startCompletion(e)
	})
}
