package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.FindCoordinator, 0, 6, handleFindCoordinator)
}

// Coordinator key types.
const (
	coordinatorGroup       = 0
	coordinatorTransaction = 1
	coordinatorShare       = 2
)

// handleFindCoordinator answers for group keys with the leader of the
// group's __consumer_offsets partition, for transactional ids with the
// leader of the id's __transaction_state partition (creating the topic on
// first use),
// one key or, from v4, many (KIP-699). A key the client may not DESCRIBE
// is answered GROUP_AUTHORIZATION_FAILED or
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, before anything else.
func handleFindCoordinator(b *Broker, r *request, req *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	find := func(key string) (brokerView, int16, *string) {
		switch req.CoordinatorType {
		case coordinatorGroup:
			// DESCRIBE on the group.
			if !r.authorizedGroup(acl.Describe, key) {
				return brokerView{}, kerr.GroupAuthorizationFailed.Code, nil
			}
			if key == "" {
				return brokerView{}, kerr.InvalidRequest.Code, strPtr("the group id must not be empty")
			}
			bv, code := b.groups.coordinatorFor(key)
			return bv, code, nil
		case coordinatorTransaction:
			// DESCRIBE on the transactional id.
			if !r.authorized(acl.Describe, acl.TransactionalID, key) {
				return brokerView{}, kerr.TransactionalIDAuthorizationFailed.Code, nil
			}
			if key == "" {
				return brokerView{}, kerr.InvalidRequest.Code, strPtr("the transactional id must not be empty")
			}
			bv, code := b.txns.coordinatorFor(key)
			return bv, code, nil
		}
		return brokerView{}, kerr.InvalidRequest.Code, strPtr("unsupported coordinator type")
	}
	if req.Version < 4 {
		bv, code, msg := find(req.CoordinatorKey)
		resp.ErrorCode, resp.ErrorMessage = code, msg
		resp.NodeID, resp.Host, resp.Port = -1, "", -1
		if code == 0 {
			resp.NodeID, resp.Host, resp.Port = bv.id, bv.host, bv.port
			resp.ErrorMessage = nil
		} else if msg == nil {
			resp.ErrorMessage = strPtr(kerr.ErrorForCode(code).Error())
		}
		return resp
	}
	for _, key := range req.CoordinatorKeys {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key = key
		bv, code, msg := find(key)
		c.ErrorCode, c.ErrorMessage = code, msg
		c.NodeID, c.Host, c.Port = -1, "", -1
		if code == 0 {
			c.NodeID, c.Host, c.Port = bv.id, bv.host, bv.port
		}
		resp.Coordinators = append(resp.Coordinators, c)
	}
	return resp
}

func strPtr(s string) *string { return &s }
