package broker

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/metadata"
)

// Authorization (Kafka's StandardAuthorizer, KIP-11). With Config.ACLs
// every request is checked against the ACLs in etcd (CreateAcls,
// DeleteAcls, `shale acl`) as Kafka's KafkaApis checks it: each API asks
// for the operations Kafka's asks for, on the same resources, and answers
// a refusal with the same error (TOPIC_AUTHORIZATION_FAILED for a topic,
// GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED, ...), or
// leaves out what the client may not see (topics in a Metadata listing,
// groups in ListGroups). Super users (Config.SuperUsers, and the SASL
// bootstrap user, who must be able to grant the first ACLs) and the
// brokers' own connections may do anything. A resource no ACL names is
// closed to everyone else unless Config.AllowEveryoneIfNoACLFound.
// Without Config.ACLs everyone may do anything, and the ACL APIs answer
// SECURITY_DISABLED, as Kafka's without an authorizer.
//
// The principal is "User:" and the connection's user: the SASL user, a
// client certificate's subject, or ANONYMOUS. The host is the client's
// IP address.

// principal is the connection's Kafka principal, built once for each
// user the connection has.
func (c *conn) principal() string {
	u := c.user.Load()
	if p := c.principalOf.Load(); p != nil && p.user == u {
		return p.principal
	}
	p := &userPrincipal{user: u, principal: "User:" + anonymousUser}
	if u != nil {
		p.principal = "User:" + *u
	}
	c.principalOf.Store(p)
	return p.principal
}

// userPrincipal is the principal of the user a connection's user
// pointer names.
type userPrincipal struct {
	user      *string
	principal string
}

// authorized reports whether the request's client may do op on the
// resource of typ named name.
func (r *request) authorized(op acl.Operation, typ acl.ResourceType, name string) bool {
	return r.conn.authorized(op, typ, name)
}

// authorizedTopic, authorizedGroup and authorizedCluster are authorized
// for one type of resource.
func (r *request) authorizedTopic(op acl.Operation, topic string) bool {
	return r.authorized(op, acl.Topic, topic)
}

func (r *request) authorizedGroup(op acl.Operation, group string) bool {
	return r.authorized(op, acl.Group, group)
}

func (r *request) authorizedCluster(op acl.Operation) bool {
	return r.authorized(op, acl.Cluster, acl.ClusterName)
}

// unrestricted reports whether the ACLs do not apply to the connection:
// the broker enforces none, or its client is a broker or a super user.
func (c *conn) unrestricted() bool {
	return !c.b.cfg.ACLs || c.peer.Load() != 0 || c.b.superUsers[c.principal()]
}

// allowed asks the ACLs, without logging a refusal.
func (c *conn) allowed(op acl.Operation, typ acl.ResourceType, name string) bool {
	return c.unrestricted() || c.b.meta.snapshot().acls.Allowed(acl.Request{Principal: c.principal(), Host: c.host}, op, typ, name, c.b.cfg.AllowEveryoneIfNoACLFound)
}

func (c *conn) authorized(op acl.Operation, typ acl.ResourceType, name string) bool {
	if c.allowed(op, typ, name) {
		return true
	}
	b, p := c.b, c.principal()
	b.metrics.authorizationDenied.WithLabelValues(typ.String(), op.String()).Inc()
	b.refusedLog.log(c.log, "authorization denied", "principal", p, "host", c.host,
		"operation", op.String(), "resource_type", typ.String(), "resource", name)
	return false
}

// Operations a resource of each type supports, as Kafka lists them for
// the authorized-operations fields of Metadata, DescribeCluster,
// DescribeGroups and DescribeTopicPartitions.
var (
	topicOperations   = []acl.Operation{acl.Read, acl.Write, acl.Create, acl.Describe, acl.Delete, acl.Alter, acl.DescribeConfigs, acl.AlterConfigs}
	groupOperations   = []acl.Operation{acl.Read, acl.Describe, acl.Delete}
	clusterOperations = []acl.Operation{acl.Create, acl.ClusterAction, acl.DescribeConfigs, acl.AlterConfigs, acl.IdempotentWrite, acl.Alter, acl.Describe}
)

// authorizedOperations is the bit field of the operations among ops the
// client may do on the resource (bit n: operation n), without logging the
// ones it may not: the client asked what it may do, it did not try.
func (r *request) authorizedOperations(typ acl.ResourceType, name string, ops []acl.Operation) int32 {
	var bits int32
	for _, op := range ops {
		if r.conn.allowed(op, typ, name) {
			bits |= 1 << op
		}
	}
	return bits
}

// superUserSet is the principals that may do anything: Config.SuperUsers
// and the SASL bootstrap user.
func superUserSet(cfg *Config) map[string]bool {
	m := map[string]bool{}
	for _, p := range cfg.SuperUsers {
		m[p] = true
	}
	if cfg.SASLBootstrapUser != "" {
		m["User:"+cfg.SASLBootstrapUser] = true
	}
	return m
}

// aclSet indexes the snapshot's ACLs, reusing prev's index when they did
// not change (entries are replaced, never changed, so the same slices
// are the same entries).
func aclSet(acls map[metadata.ACLResource][]metadata.ACLEntry, prev *metaView) *acl.Set {
	if prev != nil && len(prev.aclEntries) == len(acls) && maps.EqualFunc(prev.aclEntries, acls, sameEntries) {
		return prev.acls
	}
	var bindings []acl.Binding
	for r, entries := range acls {
		for _, e := range entries {
			bindings = append(bindings, aclBinding(r, e))
		}
	}
	return acl.NewSet(bindings)
}

func sameEntries(a, b []metadata.ACLEntry) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// aclBinding converts an ACL from the metadata, and aclRecord back.
func aclBinding(r metadata.ACLResource, e metadata.ACLEntry) acl.Binding {
	return acl.Binding{
		Resource: acl.Resource{Type: acl.ResourceType(r.Type), Pattern: acl.PatternType(r.Pattern), Name: r.Name},
		Entry:    acl.Entry{Principal: e.Principal, Host: e.Host, Operation: acl.Operation(e.Operation), Permission: acl.Permission(e.Permission)},
	}
}

func aclRecord(b acl.Binding) (metadata.ACLResource, metadata.ACLEntry) {
	return metadata.ACLResource{Type: int8(b.Resource.Type), Pattern: int8(b.Resource.Pattern), Name: b.Resource.Name},
		metadata.ACLEntry{Principal: b.Entry.Principal, Host: b.Entry.Host, Operation: int8(b.Entry.Operation), Permission: int8(b.Entry.Permission)}
}

// sortedBindings are the snapshot's ACLs in a stable order (by resource,
// then as stored).
func sortedBindings(acls map[metadata.ACLResource][]metadata.ACLEntry) []acl.Binding {
	rs := slices.SortedFunc(maps.Keys(acls), func(a, b metadata.ACLResource) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Pattern, b.Pattern), strings.Compare(a.Name, b.Name))
	})
	var out []acl.Binding
	for _, r := range rs {
		for _, e := range acls[r] {
			out = append(out, aclBinding(r, e))
		}
	}
	return out
}

// authorizedAnyTopic reports whether the client may do op on some topic
// (acl.Set.AllowedAny).
func (r *request) authorizedAnyTopic(op acl.Operation) bool {
	c := r.conn
	if c.unrestricted() {
		return true
	}
	return c.b.meta.snapshot().acls.AllowedAny(acl.Request{Principal: c.principal(), Host: c.host}, op, acl.Topic, c.b.cfg.AllowEveryoneIfNoACLFound)
}

// aclVerdicts asks the ACLs once per resource of a request whether the
// client may do op on it (request.authorized): a resource the request
// names twice is refused, logged and counted once.
type aclVerdicts struct {
	r   *request
	op  acl.Operation
	typ acl.ResourceType
	// all: the ACLs do not restrict the client, nothing is asked.
	all   bool
	asked map[string]bool
}

func newACLVerdicts(r *request, op acl.Operation, typ acl.ResourceType) aclVerdicts {
	return aclVerdicts{r: r, op: op, typ: typ, all: r.conn.unrestricted()}
}

func (v *aclVerdicts) allowed(name string) bool {
	if v.all {
		return true
	}
	ok, asked := v.asked[name]
	if !asked {
		ok = v.r.authorized(v.op, v.typ, name)
		if v.asked == nil {
			v.asked = map[string]bool{}
		}
		v.asked[name] = ok
	}
	return ok
}

// allowedTopic is allowed for a topic a request names by name, or by id
// (byID, the versions that do). An id that names no topic is allowed: the
// coordinator answers it UNKNOWN_TOPIC_ID.
func (v *aclVerdicts) allowedTopic(b *Broker, name string, id [16]byte, byID bool) bool {
	if v.all {
		return true
	}
	if byID {
		tv := b.meta.snapshot().topicsByID[id]
		if tv == nil {
			return true
		}
		name = tv.name
	}
	return v.allowed(name)
}
