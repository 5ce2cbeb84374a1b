package txn

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// EndTxn answers EndTxn v0-3. An ongoing transaction gets PrepareCommit or
// PrepareAbort persisted, then the answer; its markers and Complete record
// follow in the background. A retry of the decision already completed
// succeeds; one still completing gets CONCURRENT_TRANSACTIONS; the
// opposite decision, or ending no transaction, INVALID_TXN_STATE.
func (c *Coordinator) EndTxn(ctx context.Context, req *kmsg.EndTxnRequest) *kmsg.EndTxnResponse {
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ProducerID, resp.ProducerEpoch = noProducerID, noProducerEpoch
	if req.TransactionalID == "" {
		resp.ErrorCode = codeInvalidRequest
		return resp
	}
	code, wait := onTxnShard(ctx, c, req.TransactionalID, func(s *shard, reply func(int16)) {
		s.endTxn(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit, reply)
	})
	if wait != 0 {
		code = wait
	}
	resp.ErrorCode = fencedCode(code, req.Version, 2)
	return resp
}

// endTxn is Kafka's endTransaction for a client's request, on the loop.
func (s *shard) endTxn(id string, pid int64, epoch int16, commit bool, reply func(int16)) {
	e, code := s.checkProducer(id, pid, epoch)
	if code != 0 {
		reply(code)
		return
	}
	// retry answers a decision already taken: a retry of the same one is
	// fine (or still completing), the opposite one is not.
	retry := func(committed bool, ok int16) {
		if committed == commit {
			reply(ok)
		} else {
			reply(codeInvalidTxnState)
		}
	}
	switch e.meta.state {
	case stateOngoing:
		next := e.meta
		next.state = statePrepareAbort
		if commit {
			next.state = statePrepareCommit
		}
		next.updateMs = s.nowMs()
		s.persist(e, next, func(err error) {
			if err != nil {
				reply(appendErrorCode(err))
				return
			}
			if commit {
				s.c.metrics.commits.Inc()
			} else {
				s.c.metrics.aborts.Inc()
			}
			reply(0)
			s.startCompletion(e)
		})
	case stateCompleteCommit:
		retry(true, 0)
	case stateCompleteAbort:
		retry(false, 0)
	case statePrepareCommit:
		retry(true, codeConcurrentTransactions)
	case statePrepareAbort:
		retry(false, codeConcurrentTransactions)
	default: // Empty: no transaction to end
		reply(codeInvalidTxnState)
	}
}
