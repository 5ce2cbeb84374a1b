package txn

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

const (
	// Marker delivery and Complete-record retries back off from
	// minMarkerBackoff, doubling to maxMarkerBackoff.
	minMarkerBackoff = 100 * time.Millisecond
	maxMarkerBackoff = 5 * time.Second
)

// completion is the second half of ending a transaction, once its
// PrepareCommit or PrepareAbort record is committed: deliver a marker to
// every partition of the transaction, then write CompleteCommit or
// CompleteAbort (Kafka's TransactionMarkerChannelManager). While it runs
// the id answers CONCURRENT_TRANSACTIONS.
type completion struct {
	commit    bool
	pid       int64
	epoch     int16
	remaining []TopicPartition // partitions still without their marker
	backoff   time.Duration
	ended     time.Time // when the Prepare state was decided (metrics)
	// stopped: a partition fenced the markers (a newer coordinator or
	// producer epoch) or the log was lost; the transaction stays in its
	// Prepare state until the partition is loaded again.
	stopped bool
}

// startCompletion begins delivering the markers of e's Prepare state.
func (s *shard) startCompletion(e *txnEntry) {
	c := &completion{
		commit:    e.meta.state == statePrepareCommit,
		pid:       e.meta.producerID,
		epoch:     e.meta.producerEpoch,
		remaining: append([]TopicPartition(nil), e.meta.partitions...),
		backoff:   minMarkerBackoff,
		ended:     endedAt(&e.meta),
	}
	e.completion = c
	s.sendMarkers(e, c)
}

// sendMarkers asks the Markers for the remaining partitions, off the loop;
// the outcome comes back to markersWritten.
func (s *shard) sendMarkers(e *txnEntry, c *completion) {
	if len(c.remaining) == 0 {
		s.markersDone(c)
		s.writeComplete(e, c)
		return
	}
	parts := append([]TopicPartition(nil), c.remaining...)
	s.stats.markerCalls++
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.c.cfg.RequestTimeout)
		res := s.c.markers.WriteMarkers(ctx, c.pid, c.epoch, s.coordinatorEpoch, c.commit, parts)
		cancel()
		s.post(func() { s.markersWritten(e, c, parts, res) })
	}()
}

// markerOutcome is what a partition's WriteTxnMarkers code means for the
// completion.
type markerOutcome int

const (
	markerDone markerOutcome = iota
	markerRetry
	markerStop
)

// classifyMarker maps a partition's code as Kafka's
// TransactionMarkerRequestCompletionHandler does: written (or a partition
// whose format has no markers, or one deleted since), fenced (a newer
// coordinator or producer epoch wrote to the partition: stop), or retry.
// Codes Kafka treats as impossible are retried too, with a louder log,
// rather than leave the partition's transaction open.
func (s *shard) classifyMarker(tp TopicPartition, code int16) (markerOutcome, bool) {
	switch code {
	case 0, codeUnsupportedForMessageFormat:
		return markerDone, true
	case codeUnknownTopicOrPartition:
		if s.c.topicGone(tp) {
			return markerDone, true
		}
		return markerRetry, true
	case codeTransactionCoordinatorFenced, codeInvalidProducerEpoch, codeProducerFenced:
		return markerStop, true
	}
	return markerRetry, kerr.IsRetriable(kerr.ErrorForCode(code)) || code == codeCoordinatorNotAvailable || code == codeNotCoordinator
}

// markersWritten applies one WriteMarkers outcome: written partitions are
// done, retriable failures are tried again after the backoff, a fenced
// partition stops the completion.
func (s *shard) markersWritten(e *txnEntry, c *completion, sent []TopicPartition, res map[TopicPartition]int16) {
	if e.completion != c || c.stopped {
		return
	}
	var retry []TopicPartition
	for _, tp := range sent {
		code, ok := res[tp]
		if !ok {
			code = codeRequestTimedOut
		}
		outcome, expected := s.classifyMarker(tp, code)
		switch outcome {
		case markerStop:
			c.stopped = true
			s.c.log.Error("txn: transaction markers fenced; leaving the transaction to the next coordinator",
				"transactional_id", e.id, "producer_id", c.pid, "producer_epoch", c.epoch, "coordinator_epoch", s.coordinatorEpoch,
				"topic", tp.Topic, "partition", tp.Partition, "code", code)
			return
		case markerRetry:
			retry = append(retry, tp)
			s.c.metrics.markerRetries.Inc()
			if !expected {
				s.c.log.Warn("txn: unexpected error writing a transaction marker; retrying", "transactional_id", e.id,
					"topic", tp.Topic, "partition", tp.Partition, "code", code)
			}
		case markerDone:
			if code == codeUnknownTopicOrPartition {
				s.c.log.Info("txn: dropping the marker of a deleted partition", "transactional_id", e.id, "topic", tp.Topic, "partition", tp.Partition)
			} else {
				s.c.metrics.markersWritten.Inc()
			}
		}
	}
	c.remaining = retry
	if len(retry) == 0 {
		s.markersDone(c)
		s.writeComplete(e, c)
		return
	}
	s.c.log.Debug("txn: retrying transaction markers", "transactional_id", e.id, "partitions", len(retry), "backoff", c.backoff)
	s.after(c.backoff, func() { s.sendMarkers(e, c) })
	c.backoff = min(2*c.backoff, maxMarkerBackoff)
}

// writeComplete appends CompleteCommit or CompleteAbort once every marker
// is written; a failed append is retried with the backoff unless the
// partition was lost.
func (s *shard) writeComplete(e *txnEntry, c *completion) {
	next := e.meta
	next.state = stateCompleteAbort
	if c.commit {
		next.state = stateCompleteCommit
	}
	next.partitions = []TopicPartition{}
	next.updateMs = s.nowMs()
	s.persist(e, next, func(err error) {
		if err == nil {
			e.completion = nil
			s.stats.completions++
			return
		}
		if errors.Is(err, ErrNotLeader) || s.ctx.Err() != nil {
			c.stopped = true
			s.c.log.Info("txn: lost the transaction state partition while completing a transaction", "transactional_id", e.id, "err", err)
			return
		}
		s.c.log.Warn("txn: writing a transaction's completion failed; retrying", "transactional_id", e.id, "err", err, "backoff", c.backoff)
		s.after(c.backoff, func() { s.writeComplete(e, c) })
		c.backoff = min(2*c.backoff, maxMarkerBackoff)
	})
}
