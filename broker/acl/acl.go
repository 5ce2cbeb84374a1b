// Package acl decides what a client may do: Kafka's ACL bindings (KIP-11,
// prefixed patterns from KIP-290), their filters, and the rules by which
// Kafka's standard authorizer reads them. It knows nothing of the wire
// protocol or of where the bindings are kept; the values of its types are
// Kafka's, so a request's fields convert to them directly.
//
// A binding allows or denies one principal ("User:alice", or "User:*"
// for everyone), from one host (an IP address, or "*"), one operation on
// the resources its pattern names: a LITERAL pattern names one resource
// (or, as "*", every resource of its type), a PREFIXED one every resource
// whose name starts with it. A request is allowed when some binding
// allows it and none denies it: a DENY always wins. Allowing READ, WRITE,
// DELETE or ALTER also allows DESCRIBE, and allowing ALTER_CONFIGS also
// allows DESCRIBE_CONFIGS, as in Kafka.
package acl

import (
	"fmt"
	"strings"
)

// ResourceType is the kind of resource a binding names (Kafka's values).
type ResourceType int8

const (
	AnyResource     ResourceType = 1 // filters only
	Topic           ResourceType = 2
	Group           ResourceType = 3
	Cluster         ResourceType = 4
	TransactionalID ResourceType = 5
	DelegationToken ResourceType = 6
	User            ResourceType = 7
)

// ClusterName is the one name of the cluster resource.
const ClusterName = "kafka-cluster"

// Wildcard is the resource name, principal and host that match all.
const Wildcard = "*"

// WildcardPrincipal is the principal that matches every user.
const WildcardPrincipal = "User:*"

// PatternType is how a binding's resource name matches (Kafka's values).
type PatternType int8

const (
	AnyPattern PatternType = 1 // filters: every pattern type, names equal
	Match      PatternType = 2 // filters: the bindings that apply to a name
	Literal    PatternType = 3
	Prefixed   PatternType = 4
)

// Operation is what a binding allows or denies (Kafka's values).
type Operation int8

const (
	AnyOperation    Operation = 1 // filters only
	All             Operation = 2
	Read            Operation = 3
	Write           Operation = 4
	Create          Operation = 5
	Delete          Operation = 6
	Alter           Operation = 7
	Describe        Operation = 8
	ClusterAction   Operation = 9
	DescribeConfigs Operation = 10
	AlterConfigs    Operation = 11
	IdempotentWrite Operation = 12
	CreateTokens    Operation = 13
	DescribeTokens  Operation = 14
)

// Permission is whether a binding allows or denies (Kafka's values).
type Permission int8

const (
	AnyPermission Permission = 1 // filters only
	Deny          Permission = 2
	Allow         Permission = 3
)

// Resource is a binding's resource pattern.
type Resource struct {
	Type    ResourceType
	Pattern PatternType
	Name    string
}

// Entry is what a binding allows or denies, and to whom.
type Entry struct {
	Principal  string
	Host       string
	Operation  Operation
	Permission Permission
}

// Binding is one ACL: an entry on a resource pattern.
type Binding struct {
	Resource Resource
	Entry    Entry
}

// Check reports why b cannot be created (Kafka's checks: a concrete
// resource type, pattern, operation and permission, a name, a principal
// of the form Type:Name, a host, the cluster named kafka-cluster).
func (b Binding) Check() error {
	r, e := b.Resource, b.Entry
	switch {
	case r.Type < Topic || r.Type > User:
		return fmt.Errorf("invalid resource type %d", r.Type)
	case r.Pattern != Literal && r.Pattern != Prefixed:
		return fmt.Errorf("invalid pattern type %d", r.Pattern)
	case e.Operation < All || e.Operation > DescribeTokens:
		return fmt.Errorf("invalid operation %d", e.Operation)
	case e.Permission != Deny && e.Permission != Allow:
		return fmt.Errorf("invalid permission type %d", e.Permission)
	case r.Name == "":
		return fmt.Errorf("resource name should not be empty")
	case r.Type == Cluster && r.Name != ClusterName:
		return fmt.Errorf("the only valid name for the CLUSTER resource is %s", ClusterName)
	case e.Host == "":
		return fmt.Errorf("host should not be empty (%q matches every host)", Wildcard)
	}
	typ, name, ok := strings.Cut(e.Principal, ":")
	if !ok || typ == "" || name == "" {
		return fmt.Errorf("could not parse principal %q: it is Type:Name, as User:alice", e.Principal)
	}
	return nil
}

// Filter selects bindings (DescribeAcls, DeleteAcls): each field either
// matches any value (AnyResource, AnyPattern, AnyOperation,
// AnyPermission, a nil string) or names one. Pattern Match selects the
// bindings that apply to the resource Name names: its literal binding,
// the wildcard's, and every prefix's.
type Filter struct {
	Type       ResourceType
	Pattern    PatternType
	Name       *string
	Principal  *string
	Host       *string
	Operation  Operation
	Permission Permission
}

// Check reports why f is not a filter.
func (f Filter) Check() error {
	switch {
	case f.Type < AnyResource || f.Type > User:
		return fmt.Errorf("invalid resource type %d", f.Type)
	case f.Pattern < AnyPattern || f.Pattern > Prefixed:
		return fmt.Errorf("invalid pattern type %d", f.Pattern)
	case f.Operation < AnyOperation || f.Operation > DescribeTokens:
		return fmt.Errorf("invalid operation %d", f.Operation)
	case f.Permission < AnyPermission || f.Permission > Allow:
		return fmt.Errorf("invalid permission type %d", f.Permission)
	}
	return nil
}

// Matches reports whether f selects b.
func (f Filter) Matches(b Binding) bool {
	r, e := b.Resource, b.Entry
	if f.Type != AnyResource && f.Type != r.Type {
		return false
	}
	if !f.matchesPattern(r) {
		return false
	}
	return (f.Principal == nil || *f.Principal == e.Principal) &&
		(f.Host == nil || *f.Host == e.Host) &&
		(f.Operation == AnyOperation || f.Operation == e.Operation) &&
		(f.Permission == AnyPermission || f.Permission == e.Permission)
}

func (f Filter) matchesPattern(r Resource) bool {
	switch f.Pattern {
	case AnyPattern:
		return f.Name == nil || *f.Name == r.Name
	case Match:
		if f.Name == nil {
			return true
		}
		if r.Pattern == Prefixed {
			return strings.HasPrefix(*f.Name, r.Name)
		}
		return r.Name == *f.Name || r.Name == Wildcard
	default:
		return f.Pattern == r.Pattern && (f.Name == nil || *f.Name == r.Name)
	}
}
