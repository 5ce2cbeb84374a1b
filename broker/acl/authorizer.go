package acl

import (
	"fmt"
	"slices"
	"strings"
)

// Set is the bindings in force, indexed for Allowed. It is built once for
// each change of the bindings and read by every request after: never
// changed.
type Set struct {
	// literal are the literal bindings' entries by resource type and
	// name (the wildcard under "*").
	literal map[typeName][]Entry
	// prefixed are the prefixed bindings' entries by resource type and
	// prefix, and prefixLens the lengths of a type's prefixes, each
	// once, shortest first: a name's prefixes are found by looking up
	// its own prefixes of those lengths, whatever the number of
	// prefixed bindings.
	prefixed   map[typeName][]Entry
	prefixLens map[ResourceType][]int
	n          int
}

type typeName struct {
	typ  ResourceType
	name string
}

// NewSet indexes bindings.
func NewSet(bindings []Binding) *Set {
	s := &Set{literal: map[typeName][]Entry{}, prefixed: map[typeName][]Entry{}, prefixLens: map[ResourceType][]int{}, n: len(bindings)}
	for _, b := range bindings {
		k := typeName{b.Resource.Type, b.Resource.Name}
		if b.Resource.Pattern != Prefixed {
			s.literal[k] = append(s.literal[k], b.Entry)
			continue
		}
		if _, ok := s.prefixed[k]; !ok {
			s.prefixLens[k.typ] = append(s.prefixLens[k.typ], len(k.name))
		}
		s.prefixed[k] = append(s.prefixed[k], b.Entry)
	}
	for typ, lens := range s.prefixLens {
		slices.Sort(lens)
		s.prefixLens[typ] = slices.Compact(lens)
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
		for _, n := range s.prefixLens[typ] {
			if n > len(name) {
				break
			}
			if !visit(s.prefixed[typeName{typ, name[:n]}]) {
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
	for k, entries := range s.prefixed {
		if k.typ != typ {
			continue
		}
		found = true
		// Allowed on the prefix's name itself: no longer prefix, no
		// literal binding of that name, denies it.
		if allows(entries) && s.Allowed(req, op, typ, k.name, false) {
			return true
		}
	}
	return !found && allowIfNone
}
