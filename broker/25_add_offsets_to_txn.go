package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.AddOffsetsToTxn, 0, 3, handleAddOffsetsToTxn)
}

// handleAddOffsetsToTxn adds the group's __consumer_offsets partition to
// the producer's transaction, so that its TxnOffsetCommits commit or abort
// with it. It needs WRITE on the transactional id and READ on the group.
func handleAddOffsetsToTxn(b *Broker, r *request, req *kmsg.AddOffsetsToTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	if !r.authorized(acl.Write, acl.TransactionalID, req.TransactionalID) {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	if !r.authorizedGroup(acl.Read, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	go func() { r.respond(b.txns.c.AddOffsetsToTxn(r.ctx(), req)) }()
	return nil
}
