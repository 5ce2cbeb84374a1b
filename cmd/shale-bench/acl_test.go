package main

import (
	"testing"

	"github.com/shale-log/shale/broker/acl"
)

const aclTestTopic = "raw-acl-1712345678901234567"

func TestOtherACLsAreValidAndDistinct(t *testing.T) {
	bs := otherACLs(1000, aclTestTopic)
	if len(bs) != 1000 {
		t.Fatalf("%d ACLs, want 1000", len(bs))
	}
	seen := map[acl.Binding]bool{}
	for _, b := range bs {
		if err := b.Check(); err != nil {
			t.Errorf("%s: %v", b, err)
		}
		if seen[b] {
			t.Errorf("%s twice: the broker would keep one", b)
		}
		seen[b] = true
	}
}

// The other ACLs neither let the raw load's connections do anything nor
// keep them from what their grants allow: the runs measure the grants,
// read beside the others.
func TestOtherACLsLeaveTheRawPrincipalToItsGrants(t *testing.T) {
	others := otherACLs(1000, aclTestTopic)
	req := acl.Request{Principal: rawPrincipal, Host: "127.0.0.1"}
	alone := acl.NewSet(others)
	granted := acl.NewSet(append(others, rawGrants(aclTestTopic)...))
	for _, op := range []acl.Operation{acl.Write, acl.Read, acl.Describe} {
		if alone.Allowed(req, op, acl.Topic, aclTestTopic, false) {
			t.Errorf("the other ACLs alone allow %s %v on the topic", rawPrincipal, op)
		}
		if !granted.Allowed(req, op, acl.Topic, aclTestTopic, false) {
			t.Errorf("with its grants, %s may not %v the topic", rawPrincipal, op)
		}
		if granted.Allowed(req, op, acl.Topic, "orders.events-010", false) {
			t.Errorf("%s may %v another team's topic", rawPrincipal, op)
		}
	}
	// The topic's own DENY applies to the principal it names.
	for _, b := range others {
		if b.Resource.Name == aclTestTopic && b.Entry.Permission == acl.Deny {
			p := acl.Request{Principal: b.Entry.Principal, Host: "127.0.0.1"}
			if granted.Allowed(p, b.Entry.Operation, acl.Topic, aclTestTopic, false) {
				t.Errorf("%s is allowed despite %s", b.Entry.Principal, b)
			}
		}
	}
}

// A check of the topic meets the ACLs a cluster's would hold: some on
// the topic itself, on a prefix of it and on every topic, and prefixed
// patterns on both sides of it for the index to pass over.
func TestOtherACLsMix(t *testing.T) {
	m := mixOf(otherACLs(1000, aclTestTopic), aclTestTopic)
	if got := m.literalTopics + m.prefixedTopics + m.others; got != 1000 {
		t.Errorf("mix counts %d ACLs, want 1000: %s", got, m)
	}
	for _, c := range []struct {
		name string
		n    int
	}{
		{"literal topic", m.literalTopics}, {"prefixed topic", m.prefixedTopics}, {"group or transactional id", m.others},
		{"DENY", m.deny}, {"on the topic", m.onTopic}, {"on a prefix of the topic", m.coveringTopic},
		{"on every topic", m.everyTopic}, {"prefix before the topic", m.prefixesBefore},
		{"prefix after the topic", m.prefixes - m.prefixesBefore},
	} {
		if c.n == 0 {
			t.Errorf("no %s ACL: %s", c.name, m)
		}
	}
}

func TestMixOfCountsPrefixesBeforeTheTopic(t *testing.T) {
	bind := func(p acl.PatternType, name string) acl.Binding {
		return acl.Binding{Resource: acl.Resource{Type: acl.Topic, Pattern: p, Name: name},
			Entry: acl.Entry{Principal: "User:a", Host: acl.Wildcard, Operation: acl.Read, Permission: acl.Allow}}
	}
	m := mixOf([]acl.Binding{
		bind(acl.Prefixed, "a."), bind(acl.Prefixed, "a."), bind(acl.Prefixed, "m"), bind(acl.Prefixed, "z."),
		bind(acl.Literal, "m-topic"), bind(acl.Literal, acl.Wildcard), bind(acl.Literal, "other"),
	}, "m-topic")
	want := aclMix{literalTopics: 3, prefixedTopics: 4, onTopic: 1, coveringTopic: 1, everyTopic: 1, prefixes: 3, prefixesBefore: 2}
	if m != want {
		t.Errorf("mixOf = %+v, want %+v", m, want)
	}
}
