package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeTransactions, 0, 0, handleDescribeTransactions)
	handler(kmsg.ListTransactions, 0, 1, handleListTransactions)
}

// handleDescribeTransactions describes transactional ids this broker
// coordinates (kafka-transactions.sh describe). An id the client may not
// DESCRIBE is TRANSACTIONAL_ID_AUTHORIZATION_FAILED; the partitions of a
// transaction are shown only for the topics it may DESCRIBE, as Kafka
// filters them.
func handleDescribeTransactions(b *Broker, r *request, req *kmsg.DescribeTransactionsRequest) kmsg.Response {
	var refused []string
	ask := *req
	ask.TransactionalIDs = nil
	for _, id := range req.TransactionalIDs {
		if r.authorized(acl.Describe, acl.TransactionalID, id) {
			ask.TransactionalIDs = append(ask.TransactionalIDs, id)
		} else {
			refused = append(refused, id)
		}
	}
	go func() {
		resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
		if len(ask.TransactionalIDs) > 0 {
			resp = b.txns.c.DescribeTransactions(r.ctx(), &ask)
		}
		describable := newACLVerdicts(r, acl.Describe, acl.Topic)
		for i := range resp.TransactionStates {
			ts := &resp.TransactionStates[i]
			ts.Topics = slices.DeleteFunc(ts.Topics, func(t kmsg.DescribeTransactionsResponseTransactionStateTopic) bool {
				return !describable.allowed(t.Topic)
			})
		}
		for _, id := range refused {
			ts := kmsg.NewDescribeTransactionsResponseTransactionState()
			ts.TransactionalID, ts.ErrorCode = id, kerr.TransactionalIDAuthorizationFailed.Code
			ts.ProducerID, ts.ProducerEpoch = -1, -1
			resp.TransactionStates = append(resp.TransactionStates, ts)
		}
		r.respond(resp)
	}()
	return nil
}

// handleListTransactions lists the transactions this broker coordinates
// (kafka-transactions.sh list), with Kafka's state, producer id and (v1)
// duration filters. Ids the client may not DESCRIBE are left out,
// unlogged: it did not name them.
func handleListTransactions(b *Broker, r *request, req *kmsg.ListTransactionsRequest) kmsg.Response {
	go func() {
		resp := b.txns.c.ListTransactions(r.ctx(), req)
		if !r.conn.unrestricted() {
			resp.TransactionStates = slices.DeleteFunc(resp.TransactionStates, func(ts kmsg.ListTransactionsResponseTransactionState) bool {
				return !r.conn.allowed(acl.Describe, acl.TransactionalID, ts.TransactionalID)
			})
		}
		r.respond(resp)
	}()
	return nil
}
