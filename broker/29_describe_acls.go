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

// aclAdmin is whether the client may list (op DESCRIBE) or change (ALTER)
// the ACLs: errSecurityDisabled on a broker that enforces none,
// errClusterAuthorization without op on the cluster, asked once for a
// request however many creations or filters it carries.
func (b *Broker) aclAdmin(r *request, op acl.Operation) error {
	switch {
	case !b.cfg.ACLs:
		return errSecurityDisabled
	case !r.authorizedCluster(op):
		return errClusterAuthorization
	}
	return nil
}

// aclFilter is the filter of DescribeAcls and of a DeleteAcls filter.
func aclFilter(typ kmsg.ACLResourceType, pat kmsg.ACLResourcePatternType, name, principal, host *string, op kmsg.ACLOperation, perm kmsg.ACLPermissionType) acl.Filter {
	return acl.Filter{
		Type: acl.ResourceType(typ), Pattern: acl.PatternType(pat), Name: name,
		Principal: principal, Host: host,
		Operation: acl.Operation(op), Permission: acl.Permission(perm),
	}
}

// checkFilter is f.Check as INVALID_REQUEST.
func checkFilter(f acl.Filter) error {
	if err := f.Check(); err != nil {
		return fmt.Errorf("%w: %w", errInvalidRequest, err)
	}
	return nil
}

// handleDescribeACLs lists the ACLs a filter selects (kafka-acls --list),
// grouped by resource pattern: for a client allowed DESCRIBE on the
// cluster, on a broker that enforces ACLs.
func handleDescribeACLs(b *Broker, r *request, req *kmsg.DescribeACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	f := aclFilter(req.ResourceType, req.ResourcePatternType, req.ResourceName, req.Principal, req.Host, req.Operation, req.PermissionType)
	err := b.aclAdmin(r, acl.Describe)
	if err == nil {
		err = checkFilter(f)
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
