package broker

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.InitProducerID, 0, 5, handleInitProducerID)
}

// handleInitProducerID gives an idempotent producer a fresh producer id
// with epoch 0, as Kafka does for producers without a transactional id. A
// transactional producer's goes to the transaction coordinator, which
// keeps its id across sessions and bumps its epoch, fencing the producer's
// earlier instances; that needs WRITE on the transactional id.
func handleInitProducerID(b *Broker, r *request, req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		if !r.authorized(acl.Write, acl.TransactionalID, *req.TransactionalID) {
			resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			return resp
		}
		go func() { r.respond(b.txns.c.InitProducerID(r.ctx(), req)) }()
		return nil
	}
	// WRITE on some topic (KIP-679) or IDEMPOTENT_WRITE on the cluster (asked last: one refusal logged).
	if !r.authorizedAnyTopic(acl.Write) && !r.authorizedCluster(acl.IdempotentWrite) {
		resp.ErrorCode = kafkaError(errClusterAuthorization)
		return resp
	}
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx(), 10*time.Second)
		defer cancel()
		id, err := b.producerIDs.next(ctx)
		if err != nil {
			b.log.Warn("cannot allocate a producer id", "err", err)
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		} else {
			resp.ProducerID, resp.ProducerEpoch = id, 0
		}
		r.respond(resp)
	}()
	return nil
}
