package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.EndTxn, 0, 3, handleEndTxn)
}

// handleEndTxn commits or aborts the producer's transaction: answered once
// the coordinator has logged the decision; the markers follow. It needs
// WRITE on the transactional id.
func handleEndTxn(b *Broker, r *request, req *kmsg.EndTxnRequest) kmsg.Response {
	if !r.authorized(acl.Write, acl.TransactionalID, req.TransactionalID) {
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	go func() { r.respond(b.txns.c.EndTxn(r.ctx(), req)) }()
	return nil
}
