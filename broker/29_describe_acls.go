package broker

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeACLs, 0, 3, handleDescribeACLs)
}

var (
	errSecurityDisabled             = errors.New("broker: no authorizer is configured (the broker runs without --acls)")
	errClusterAuthorization         = errors.New("broker: cluster authorization failed")
	errTopicAuthorization           = errors.New("broker: topic authorization failed")
	errGroupAuthorization           = errors.New("broker: group authorization failed")
	errTransactionalIDAuthorization = errors.New("broker: transactional id authorization failed")
)

// handleDescribeACLs lists the ACLs a filter selects (kafka-acls --list),
// grouped by resource pattern: for a client allowed DESCRIBE on the
// cluster, on a broker that enforces ACLs.
func handleDescribeACLs(b *Broker, r *request, req *kmsg.DescribeACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	f := acl.Filter{
		Type: acl.ResourceType(req.ResourceType), Pattern: acl.PatternType(req.ResourcePatternType), Name: req.ResourceName,
		Principal: req.Principal, Host: req.Host,
		Operation: acl.Operation(req.Operation), Permission: acl.Permission(req.PermissionType),
	}
	var err error
	switch {
	case !b.cfg.ACLs:
		err = errSecurityDisabled
	case !r.authorizedCluster(acl.Describe):
		err = errClusterAuthorization
	default:
		if ferr := f.Check(); ferr != nil {
			err = fmt.Errorf("%w: %w", errInvalidRequest, ferr)
		}
	}
	if err != nil {
		resp.ErrorCode, resp.ErrorMessage = kafkaError(err), errorMessage(err)
		return resp
	}
	for _, bd := range sortedBindings(b.meta.snapshot().aclEntries) {
		if !f.Matches(bd) {
			continue
		}
		n := len(resp.Resources)
		if n == 0 || resp.Resources[n-1].ResourceType != kmsg.ACLResourceType(bd.Resource.Type) ||
			resp.Resources[n-1].ResourcePatternType != kmsg.ACLResourcePatternType(bd.Resource.Pattern) ||
			resp.Resources[n-1].ResourceName != bd.Resource.Name {
			res := kmsg.NewDescribeACLsResponseResource()
			res.ResourceType = kmsg.ACLResourceType(bd.Resource.Type)
			res.ResourcePatternType = kmsg.ACLResourcePatternType(bd.Resource.Pattern)
			res.ResourceName = bd.Resource.Name
			resp.Resources = append(resp.Resources, res)
			n++
		}
		a := kmsg.NewDescribeACLsResponseResourceACL()
		a.Principal, a.Host = bd.Entry.Principal, bd.Entry.Host
		a.Operation, a.PermissionType = kmsg.ACLOperation(bd.Entry.Operation), kmsg.ACLPermissionType(bd.Entry.Permission)
		resp.Resources[n-1].ACLs = append(resp.Resources[n-1].ACLs, a)
	}
	return resp
}
