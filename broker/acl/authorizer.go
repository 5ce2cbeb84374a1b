package acl

import (
	"fmt"
	"sort"
	"strings"
)

// Set is the bindings in force, indexed for Allowed. It is built once for
// each change of the bindings and read by every request after: never
// changed.
type Set struct {
	// literal are the literal bindings' entries by resource type and
	// name (the wildcard under "*").
	literal map[typeName][]Entry
	// prefixed are the prefixed bindings by resource type, sorted by
	// prefix.
	prefixed map[ResourceType][]prefixEntries
	n        int
}

type typeName struct {
	typ  ResourceType
	name string
}

type prefixEntries struct {
	prefix  string
	entries []Entry
}

// NewSet indexes bindings.
func NewSet(bindings []Binding) *Set {
	s := &Set{literal: map[typeName][]Entry{}, prefixed: map[ResourceType][]prefixEntries{}, n: len(bindings)}
	byPrefix := map[typeName][]Entry{}
	for _, b := range bindings {
		k := typeName{b.Resource.Type, b.Resource.Name}
		if b.Resource.Pattern == Prefixed {
			byPrefix[k] = append(byPrefix[k], b.Entry)
		} else {
			s.literal[k] = append(s.literal[k], b.Entry)
		}
	}
	for k, entries := range byPrefix {
		s.prefixed[k.typ] = append(s.prefixed[k.typ], prefixEntries{k.name, entries})
	}
	for _, ps := range s.prefixed {
		sort.Slice(ps, func(i, j int) bool { return ps[i].prefix < ps[j].prefix })
	}
	return s
}

// Len is the number of bindings in s.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Request is who asks: the principal ("User:alice") and the host (the
// client's IP address).
type Request struct {
	Principal string
	Host      string
}

// Allowed reports whether the bindings let req do op on the resource of
// typ named name: no binding that applies denies it, and one allows it.
// When no binding at all applies to the resource, whoever asks,
// allowIfNone decides (Kafka's allow.everyone.if.no.acl.found).
func (s *Set) Allowed(req Request, op Operation, typ ResourceType, name string, allowIfNone bool) bool {
	found, allowed := false, false
	visit := func(entries []Entry) bool {
		for _, e := range entries {
			found = true
			if !e.applies(req) {
				continue
			}
			switch {
			case e.Permission == Deny && (e.Operation == op || e.Operation == All):
				return false
			case e.Permission == Allow && implies(e.Operation, op):
				allowed = true
			}
		}
		return true
	}
	if s != nil {
		if !visit(s.literal[typeName{typ, name}]) || !visit(s.literal[typeName{typ, Wildcard}]) {
			return false
		}
		ps := s.prefixed[typ]
		// The prefixes of name sort at or before it: walk back from
		// where name would go (the prefixes are few, and usually none).
		for i := sort.Search(len(ps), func(i int) bool { return ps[i].prefix > name }) - 1; i >= 0; i-- {
			if strings.HasPrefix(name, ps[i].prefix) && !visit(ps[i].entries) {
				return false
			}
		}
	}
	if !found {
		return allowIfNone
	}
	return allowed
}

// applies reports whether e names req's principal and host.
func (e Entry) applies(req Request) bool {
	return (e.Principal == req.Principal || e.Principal == WildcardPrincipal) &&
		(e.Host == req.Host || e.Host == Wildcard)
}

// implies reports whether allowing granted allows op: ALL allows every
// operation, READ, WRITE, DELETE and ALTER allow DESCRIBE, ALTER_CONFIGS
// allows DESCRIBE_CONFIGS.
func implies(granted, op Operation) bool {
	switch {
	case granted == op, granted == All:
		return true
	case op == Describe:
		return granted == Read || granted == Write || granted == Delete || granted == Alter
	case op == DescribeConfigs:
		return granted == AlterConfigs
	}
	return false
}

// ParsePrincipals reads Kafka's super.users: principals separated by
// semicolons ("User:admin;User:ops").
func ParsePrincipals(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ";") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if typ, name, ok := strings.Cut(p, ":"); !ok || typ == "" || name == "" {
			return nil, fmt.Errorf("could not parse principal %q: it is Type:Name, as User:alice", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// AllowedAny reports whether req may do op on some resource of typ
// (Kafka's authorizeByResourceType, KIP-679: an idempotent producer needs
// WRITE on some topic): some binding allows it on a resource no binding
// denies it on, and no binding denies it on every resource of typ (the
// wildcard). When no binding names a resource of typ at all, allowIfNone
// decides.
func (s *Set) AllowedAny(req Request, op Operation, typ ResourceType, allowIfNone bool) bool {
	if s == nil {
		return allowIfNone
	}
	denies := func(entries []Entry) bool {
		for _, e := range entries {
			if e.Permission == Deny && e.applies(req) && (e.Operation == op || e.Operation == All) {
				return true
			}
		}
		return false
	}
	allows := func(entries []Entry) bool {
		for _, e := range entries {
			if e.Permission == Allow && e.applies(req) && implies(e.Operation, op) {
				return true
			}
		}
		return false
	}
	if denies(s.literal[typeName{typ, Wildcard}]) {
		return false
	}
	found := false
	for k, entries := range s.literal {
		if k.typ != typ {
			continue
		}
		found = true
		if allows(entries) && s.Allowed(req, op, typ, k.name, false) {
			return true
		}
	}
	for _, p := range s.prefixed[typ] {
		found = true
		// Allowed on the prefix's name itself: no longer prefix, no
		// literal binding of that name, denies it.
		if allows(p.entries) && s.Allowed(req, op, typ, p.prefix, false) {
			return true
		}
	}
	return !found && allowIfNone
}
