package txn

import (
	"context"
	"regexp"
	"sort"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeTransactions answers DescribeTransactions v0 from the loaded
// partitions: per id, TRANSACTIONAL_ID_NOT_FOUND when this coordinator
// holds no state for it, NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS
// when another broker coordinates it or its partition is loading.
func (c *Coordinator) DescribeTransactions(ctx context.Context, req *kmsg.DescribeTransactionsRequest) *kmsg.DescribeTransactionsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	type described = kmsg.DescribeTransactionsResponseTransactionState
	waits := make([]func() (described, int16), len(req.TransactionalIDs))
	for i, id := range req.TransactionalIDs {
		if id == "" {
			waits[i] = func() (described, int16) { return described{}, codeInvalidRequest }
			continue
		}
		waits[i] = submitToTxnShard(ctx, c, id, func(s *shard, reply func(described)) { reply(s.describe(id)) })
	}
	for i, wait := range waits {
		d, code := wait()
		if code != 0 {
			d = kmsg.NewDescribeTransactionsResponseTransactionState()
			d.ErrorCode = code
		}
		d.TransactionalID = req.TransactionalIDs[i]
		resp.TransactionStates = append(resp.TransactionStates, d)
	}
	return resp
}

func (s *shard) describe(id string) kmsg.DescribeTransactionsResponseTransactionState {
	d := kmsg.NewDescribeTransactionsResponseTransactionState()
	d.TransactionalID = id
	e := s.txns[id]
	if e == nil || !e.stored {
		d.ErrorCode = codeTransactionalIDNotFound
		return d
	}
	m := e.meta
	d.State = m.state.String()
	d.TimeoutMillis = m.timeoutMs
	d.StartTimestamp = m.startMs
	d.ProducerID = m.producerID
	d.ProducerEpoch = m.producerEpoch
	for _, tp := range m.partitions {
		if n := len(d.Topics); n == 0 || d.Topics[n-1].Topic != tp.Topic {
			t := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
			t.Topic = tp.Topic
			d.Topics = append(d.Topics, t)
		}
		t := &d.Topics[len(d.Topics)-1]
		t.Partitions = append(t.Partitions, tp.Partition)
	}
	return d
}

// listFilter is a ListTransactions request's filters.
type listFilter struct {
	states     map[txnState]bool // nil: any
	pids       map[int64]bool    // nil: any
	durationMs int64             // -1: any
	pattern    *regexp.Regexp    // nil: any
}

func (f *listFilter) includes(e *txnEntry, nowMs int64) bool {
	m := &e.meta
	switch {
	case !e.stored:
		return false
	case f.pids != nil && !f.pids[m.producerID]:
		return false
	case f.states != nil && !f.states[m.state]:
		return false
	case f.durationMs >= 0 && nowMs-m.startMs <= f.durationMs:
		return false
	case f.pattern != nil && !f.pattern.MatchString(e.id):
		return false
	}
	return true
}

// ListTransactions answers ListTransactions v0-2 with the transactions of
// every partition this broker coordinates, filtered as Kafka filters them
// (state names, producer ids, running longer than DurationFilterMillis,
// and v2's TransactionalIDPattern matched whole, with Go's regular
// expression syntax). COORDINATOR_LOAD_IN_PROGRESS while any partition is
// loading.
func (c *Coordinator) ListTransactions(ctx context.Context, req *kmsg.ListTransactionsRequest) *kmsg.ListTransactionsResponse {
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	f := listFilter{durationMs: -1}
	if req.Version >= 1 {
		f.durationMs = req.DurationFilterMillis
	}
	if len(req.StateFilters) > 0 {
		f.states = map[txnState]bool{}
		for _, name := range req.StateFilters {
			if st, ok := parseState(name); ok {
				f.states[st] = true
			} else {
				resp.UnknownStateFilters = append(resp.UnknownStateFilters, name)
			}
		}
	}
	if len(req.ProducerIDFilters) > 0 {
		f.pids = map[int64]bool{}
		for _, pid := range req.ProducerIDFilters {
			f.pids[pid] = true
		}
	}
	if req.Version >= 2 && req.TransactionalIDPattern != nil && *req.TransactionalIDPattern != "" {
		re, err := regexp.Compile("^(?:" + *req.TransactionalIDPattern + ")$")
		if err != nil {
			resp.ErrorCode = codeInvalidRegularExpression
			return resp
		}
		f.pattern = re
	}
	shards, loading := c.allShards()
	if loading {
		resp.ErrorCode = codeCoordinatorLoadInProgress
		return resp
	}
	type listed = []kmsg.ListTransactionsResponseTransactionState
	waits := make([]func() (listed, int16), 0, len(shards))
	for _, s := range shards {
		waits = append(waits, submit(ctx, s, func(reply func(listed)) {
			nowMs := s.nowMs()
			out := listed{}
			for _, e := range s.txns {
				if f.includes(e, nowMs) {
					st := kmsg.NewListTransactionsResponseTransactionState()
					st.TransactionalID = e.id
					st.ProducerID = e.meta.producerID
					st.TransactionState = e.meta.state.String()
					out = append(out, st)
				}
			}
			reply(out)
		}))
	}
	for _, wait := range waits {
		states, code := wait()
		if code != 0 {
			// The partition was unloaded meanwhile (or ctx ended):
			// its transactions belong to another coordinator now.
			continue
		}
		resp.TransactionStates = append(resp.TransactionStates, states...)
	}
	sort.Slice(resp.TransactionStates, func(i, j int) bool {
		return resp.TransactionStates[i].TransactionalID < resp.TransactionStates[j].TransactionalID
	})
	return resp
}
