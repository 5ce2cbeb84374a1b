package txn

import (
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// tombstonesPerWrite bounds the records of one expiry write, so that the
// pipeline can split a large expiry into batches under the topic's limit.
const tombstonesPerWrite = 1000

func (s *shard) scheduleAbortTimedOut() {
	s.after(s.c.cfg.AbortTimedOutInterval, func() {
		s.abortTimedOut(s.now())
		s.scheduleAbortTimedOut()
	})
}

func (s *shard) scheduleRemoveExpired() {
	s.after(s.c.cfg.RemoveExpiredInterval, func() {
		s.removeExpired(s.now())
		s.scheduleRemoveExpired()
	})
}

// abortTimedOut aborts, with an epoch bump that fences their producers,
// the ongoing transactions that started more than their timeout ago
// (Kafka's abortTimedOutTransactions).
func (s *shard) abortTimedOut(now time.Time) {
	nowMs := now.UnixMilli()
	for _, e := range s.txns {
		if !e.stored || e.pending() || e.meta.state != stateOngoing || e.meta.startMs+int64(e.meta.timeoutMs) >= nowMs {
			continue
		}
		s.stats.timedOut++
		s.c.log.Info("txn: aborting timed-out transaction", "transactional_id", e.id, "producer_id", e.meta.producerID,
			"producer_epoch", e.meta.producerEpoch, "timeout_ms", e.meta.timeoutMs)
		s.fenceAndAbort(e, func(code int16) {
			if code != 0 {
				s.c.log.Warn("txn: aborting timed-out transaction failed; retrying at the next check", "transactional_id", e.id, "code", code)
			}
		})
	}
}

// removeExpired forgets, with a tombstone, the transactional ids without a
// transaction (Empty, CompleteCommit, CompleteAbort) not updated for
// transactional.id.expiration.ms (Kafka's removeExpiredTransactionalIds).
// They are busy while the tombstones are written.
func (s *shard) removeExpired(now time.Time) {
	cutoff := now.UnixMilli() - s.c.cfg.TransactionalIDExpiration.Milliseconds()
	var batch []*txnEntry
	flush := func() {
		if len(batch) == 0 {
			return
		}
		entries := batch
		batch = nil
		records := make([]recordbatch.Record, len(entries))
		for i, e := range entries {
			e.busy = true
			records[i] = recordbatch.Record{Key: appendKey(nil, e.id)}
		}
		s.appendRecords(records, func(err error) {
			for _, e := range entries {
				e.busy = false
				if err == nil {
					s.removeEntry(e)
					s.stats.expired++
				}
			}
			if err != nil {
				s.c.log.Warn("txn: writing tombstones of expired transactional ids failed", "partition", s.partition, "ids", len(entries), "err", err)
			}
		})
	}
	for _, e := range s.txns {
		switch {
		case !e.stored || e.pending() || e.meta.updateMs > cutoff:
			continue
		case e.meta.state == stateEmpty, e.meta.state == stateCompleteCommit, e.meta.state == stateCompleteAbort:
			s.c.log.Debug("txn: expiring transactional id", "transactional_id", e.id, "producer_id", e.meta.producerID)
			batch = append(batch, e)
			if len(batch) == tombstonesPerWrite {
				flush()
			}
		}
	}
	flush()
}
