package acl

import (
	"fmt"
	"strings"
	"testing"
)

func allow(typ ResourceType, pat PatternType, name, principal string, op Operation) Binding {
	return Binding{Resource{typ, pat, name}, Entry{principal, Wildcard, op, Allow}}
}

func deny(typ ResourceType, pat PatternType, name, principal string, op Operation) Binding {
	return Binding{Resource{typ, pat, name}, Entry{principal, Wildcard, op, Deny}}
}

func TestAllowed(t *testing.T) {
	alice := Request{Principal: "User:alice", Host: "10.0.0.1"}
	fromHost := func(host string) Binding {
		b := allow(Topic, Literal, "hosted", "User:alice", Read)
		b.Entry.Host = host
		return b
	}
	cases := []struct {
		name        string
		bindings    []Binding
		req         Request
		op          Operation
		typ         ResourceType
		resource    string
		allowIfNone bool
		want        bool
	}{
		{"no bindings", nil, alice, Read, Topic, "t", false, false},
		{"no bindings, allow if none", nil, alice, Read, Topic, "t", true, true},
		{"literal allow", []Binding{allow(Topic, Literal, "t", "User:alice", Read)}, alice, Read, Topic, "t", false, true},
		{"another operation", []Binding{allow(Topic, Literal, "t", "User:alice", Read)}, alice, Write, Topic, "t", false, false},
		{"another topic", []Binding{allow(Topic, Literal, "t", "User:alice", Read)}, alice, Read, Topic, "u", false, false},
		{"another type", []Binding{allow(Group, Literal, "t", "User:alice", Read)}, alice, Read, Topic, "t", false, false},
		{"another user's binding closes the resource", []Binding{allow(Topic, Literal, "t", "User:bob", Read)}, alice, Read, Topic, "t", true, false},
		{"wildcard resource", []Binding{allow(Topic, Literal, "*", "User:alice", Write)}, alice, Write, Topic, "anything", false, true},
		{"wildcard principal", []Binding{allow(Topic, Literal, "t", "User:*", Read)}, alice, Read, Topic, "t", false, true},
		{"prefixed", []Binding{allow(Topic, Prefixed, "orders-", "User:alice", Read)}, alice, Read, Topic, "orders-eu", false, true},
		{"prefixed, not a prefix", []Binding{allow(Topic, Prefixed, "orders-", "User:alice", Read)}, alice, Read, Topic, "order", false, false},
		{"prefixed beside others", []Binding{
			allow(Topic, Prefixed, "a", "User:alice", Read), allow(Topic, Prefixed, "or", "User:bob", Read),
			allow(Topic, Prefixed, "orders-", "User:alice", Read), allow(Topic, Prefixed, "orders-z", "User:alice", Read),
		}, alice, Read, Topic, "orders-eu", false, true},
		{"deny wins", []Binding{allow(Topic, Literal, "t", "User:alice", Read), deny(Topic, Literal, "t", "User:alice", Read)}, alice, Read, Topic, "t", false, false},
		{"deny by prefix wins over a literal allow", []Binding{allow(Topic, Literal, "secret-t", "User:alice", Read), deny(Topic, Prefixed, "secret-", "User:*", All)}, alice, Read, Topic, "secret-t", false, false},
		{"deny on the wildcard", []Binding{allow(Topic, Literal, "t", "User:alice", Read), deny(Topic, Literal, "*", "User:alice", Read)}, alice, Read, Topic, "t", false, false},
		{"deny of another operation", []Binding{allow(Topic, Literal, "t", "User:alice", Read), deny(Topic, Literal, "t", "User:alice", Write)}, alice, Read, Topic, "t", false, true},
		{"deny of READ leaves DESCRIBE", []Binding{allow(Topic, Literal, "t", "User:alice", All), deny(Topic, Literal, "t", "User:alice", Read)}, alice, Describe, Topic, "t", false, true},
		{"ALL allows", []Binding{allow(Topic, Literal, "t", "User:alice", All)}, alice, AlterConfigs, Topic, "t", false, true},
		{"READ allows DESCRIBE", []Binding{allow(Topic, Literal, "t", "User:alice", Read)}, alice, Describe, Topic, "t", false, true},
		{"WRITE allows DESCRIBE", []Binding{allow(Topic, Literal, "t", "User:alice", Write)}, alice, Describe, Topic, "t", false, true},
		{"DESCRIBE allows not READ", []Binding{allow(Topic, Literal, "t", "User:alice", Describe)}, alice, Read, Topic, "t", false, false},
		{"ALTER_CONFIGS allows DESCRIBE_CONFIGS", []Binding{allow(Cluster, Literal, ClusterName, "User:alice", AlterConfigs)}, alice, DescribeConfigs, Cluster, ClusterName, false, true},
		{"host matches", []Binding{fromHost("10.0.0.1")}, alice, Read, Topic, "hosted", false, true},
		{"host does not match", []Binding{fromHost("10.0.0.2")}, alice, Read, Topic, "hosted", false, false},
		{"any host", []Binding{fromHost("*")}, alice, Read, Topic, "hosted", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewSet(c.bindings)
			if got := s.Allowed(c.req, c.op, c.typ, c.resource, c.allowIfNone); got != c.want {
				t.Errorf("Allowed(%s %s on %s %q) = %v, want %v", c.req.Principal, c.op, c.typ, c.resource, got, c.want)
			}
			if got := reference(c.bindings, c.req, c.op, c.typ, c.resource, c.allowIfNone); got != c.want {
				t.Errorf("the reference says %v, want %v", got, c.want)
			}
		})
	}
}

func TestAllowedAny(t *testing.T) {
	alice := Request{Principal: "User:alice", Host: "10.0.0.1"}
	cases := []struct {
		name        string
		bindings    []Binding
		allowIfNone bool
		want        bool
	}{
		{"nothing", nil, false, false},
		{"nothing, allow if none", nil, true, true},
		{"one topic", []Binding{allow(Topic, Literal, "t", "User:alice", Write)}, false, true},
		{"a prefix", []Binding{allow(Topic, Prefixed, "p-", "User:alice", All)}, false, true},
		{"someone else's", []Binding{allow(Topic, Literal, "t", "User:bob", Write)}, true, false},
		{"read only", []Binding{allow(Topic, Literal, "t", "User:alice", Read)}, false, false},
		{"denied on that topic", []Binding{allow(Topic, Literal, "t", "User:alice", Write), deny(Topic, Literal, "t", "User:alice", Write)}, false, false},
		{"denied on every topic", []Binding{allow(Topic, Literal, "t", "User:alice", Write), deny(Topic, Literal, "*", "User:*", All)}, false, false},
		{"denied by a prefix", []Binding{allow(Topic, Literal, "p-t", "User:alice", Write), deny(Topic, Prefixed, "p-", "User:alice", Write)}, false, false},
		{"denied elsewhere", []Binding{allow(Topic, Literal, "t", "User:alice", Write), deny(Topic, Literal, "u", "User:alice", Write)}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := NewSet(c.bindings).AllowedAny(alice, Write, Topic, c.allowIfNone); got != c.want {
				t.Errorf("AllowedAny = %v, want %v", got, c.want)
			}
		})
	}
}

func TestFilterMatches(t *testing.T) {
	str := func(s string) *string { return &s }
	lit := allow(Topic, Literal, "orders", "User:alice", Read)
	wild := allow(Topic, Literal, "*", "User:alice", Read)
	pre := allow(Topic, Prefixed, "ord", "User:alice", Read)
	other := allow(Topic, Prefixed, "x", "User:bob", Write)
	group := allow(Group, Literal, "orders", "User:alice", Read)
	all := []Binding{lit, wild, pre, other, group}
	any := Filter{Type: AnyResource, Pattern: AnyPattern, Operation: AnyOperation, Permission: AnyPermission}
	cases := []struct {
		name string
		f    func(Filter) Filter
		want []Binding
	}{
		{"everything", func(f Filter) Filter { return f }, all},
		{"topics", func(f Filter) Filter { f.Type = Topic; return f }, []Binding{lit, wild, pre, other}},
		{"literal name", func(f Filter) Filter { f.Pattern, f.Name = Literal, str("orders"); return f }, []Binding{lit, group}},
		{"any pattern, a name", func(f Filter) Filter { f.Name = str("ord"); return f }, []Binding{pre}},
		{"match", func(f Filter) Filter { f.Type, f.Pattern, f.Name = Topic, Match, str("orders"); return f }, []Binding{lit, wild, pre}},
		{"prefixed", func(f Filter) Filter { f.Pattern = Prefixed; return f }, []Binding{pre, other}},
		{"principal", func(f Filter) Filter { f.Principal = str("User:bob"); return f }, []Binding{other}},
		{"host", func(f Filter) Filter { f.Host = str("10.1.1.1"); return f }, nil},
		{"operation", func(f Filter) Filter { f.Operation = Write; return f }, []Binding{other}},
		{"permission", func(f Filter) Filter { f.Permission = Deny; return f }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.f(any)
			if err := f.Check(); err != nil {
				t.Fatal(err)
			}
			var got []Binding
			for _, b := range all {
				if f.Matches(b) {
					got = append(got, b)
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("selected %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("selected %v, want %v", got, c.want)
				}
			}
		})
	}
	if err := (Filter{Type: 0, Pattern: AnyPattern, Operation: AnyOperation, Permission: AnyPermission}).Check(); err == nil {
		t.Error("a filter of resource type UNKNOWN checked")
	}
}

func TestBindingCheck(t *testing.T) {
	good := allow(Topic, Literal, "t", "User:alice", Read)
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(*Binding){
		"resource type ANY":      func(b *Binding) { b.Resource.Type = AnyResource },
		"resource type UNKNOWN":  func(b *Binding) { b.Resource.Type = 0 },
		"pattern MATCH":          func(b *Binding) { b.Resource.Pattern = Match },
		"pattern ANY":            func(b *Binding) { b.Resource.Pattern = AnyPattern },
		"operation ANY":          func(b *Binding) { b.Entry.Operation = AnyOperation },
		"operation 15":           func(b *Binding) { b.Entry.Operation = 15 },
		"permission ANY":         func(b *Binding) { b.Entry.Permission = AnyPermission },
		"empty name":             func(b *Binding) { b.Resource.Name = "" },
		"cluster named":          func(b *Binding) { b.Resource.Type, b.Resource.Name = Cluster, "prod" },
		"principal without type": func(b *Binding) { b.Entry.Principal = "alice" },
		"principal without name": func(b *Binding) { b.Entry.Principal = "User:" },
		"empty host":             func(b *Binding) { b.Entry.Host = "" },
	}
	for name, mutate := range bad {
		b := good
		mutate(&b)
		if err := b.Check(); err == nil {
			t.Errorf("%s: checked", name)
		}
	}
}

func TestNames(t *testing.T) {
	for _, s := range []string{"describe-configs", "DescribeConfigs", "DESCRIBE_CONFIGS", " describe_configs "} {
		if op, err := ParseOperation(s); err != nil || op != DescribeConfigs {
			t.Errorf("ParseOperation(%q) = %v, %v", s, op, err)
		}
	}
	if _, err := ParseOperation("fly"); err == nil {
		t.Error("ParseOperation(fly) succeeded")
	}
	if typ, err := ParseResourceType("transactional-id"); err != nil || typ != TransactionalID {
		t.Errorf("ParseResourceType = %v, %v", typ, err)
	}
	if p, err := ParsePermission("allow"); err != nil || p != Allow {
		t.Errorf("ParsePermission = %v, %v", p, err)
	}
	if p, err := ParsePatternType("Prefixed"); err != nil || p != Prefixed {
		t.Errorf("ParsePatternType = %v, %v", p, err)
	}
	if got := Operation(99).String(); got != "UNKNOWN(99)" {
		t.Errorf("Operation(99) = %s", got)
	}
	ps, err := ParsePrincipals(" User:admin ; User:ops;")
	if err != nil || len(ps) != 2 || ps[0] != "User:admin" || ps[1] != "User:ops" {
		t.Errorf("ParsePrincipals = %v, %v", ps, err)
	}
	if _, err := ParsePrincipals("admin"); err == nil {
		t.Error("ParsePrincipals(admin) succeeded")
	}
}

// reference is Allowed read straight off Kafka's rules, binding by
// binding, with no index.
func reference(bindings []Binding, req Request, op Operation, typ ResourceType, name string, allowIfNone bool) bool {
	found, allowed := false, false
	for _, b := range bindings {
		r, e := b.Resource, b.Entry
		if r.Type != typ {
			continue
		}
		if !(r.Pattern == Literal && (r.Name == name || r.Name == Wildcard) || r.Pattern == Prefixed && strings.HasPrefix(name, r.Name)) {
			continue
		}
		found = true
		if e.Principal != req.Principal && e.Principal != WildcardPrincipal || e.Host != req.Host && e.Host != Wildcard {
			continue
		}
		if e.Permission == Deny && (e.Operation == op || e.Operation == All) {
			return false
		}
		if e.Permission == Allow && implies(e.Operation, op) {
			allowed = true
		}
	}
	if !found {
		return allowIfNone
	}
	return allowed
}

// FuzzAllowedMatchesReference: the indexed Set decides as the reference
// does, for bindings and requests drawn from small alphabets (so that
// they meet).
func FuzzAllowedMatchesReference(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, byte(3), byte(1), false)
	f.Add([]byte{9, 9, 9, 9, 1, 1, 1, 1, 0, 0, 0, 0}, byte(8), byte(2), true)
	names := []string{"*", "a", "ab", "abc", "b", ""}
	principals := []string{"User:alice", "User:bob", "User:*"}
	hosts := []string{"*", "10.0.0.1", "10.0.0.2"}
	ops := []Operation{All, Read, Write, Describe, Delete, Alter, DescribeConfigs, AlterConfigs}
	f.Fuzz(func(t *testing.T, data []byte, opByte, nameByte byte, allowIfNone bool) {
		var bindings []Binding
		for i := 0; i+3 < len(data) && len(bindings) < 32; i += 4 {
			b := Binding{
				Resource: Resource{Type: Topic + ResourceType(data[i]%2), Pattern: Literal + PatternType(data[i]>>1%2), Name: names[int(data[i+1])%(len(names)-1)]},
				Entry:    Entry{Principal: principals[int(data[i+2])%len(principals)], Host: hosts[int(data[i+2]>>2)%len(hosts)], Operation: ops[int(data[i+3])%len(ops)], Permission: Deny + Permission(data[i+3]>>4%2)},
			}
			bindings = append(bindings, b)
		}
		s := NewSet(bindings)
		op := ops[int(opByte)%len(ops)]
		name := names[int(nameByte)%len(names)]
		for _, typ := range []ResourceType{Topic, Group} {
			for _, p := range principals[:2] {
				for _, h := range hosts[1:] {
					req := Request{Principal: p, Host: h}
					if got, want := s.Allowed(req, op, typ, name, allowIfNone), reference(bindings, req, op, typ, name, allowIfNone); got != want {
						t.Fatalf("%v: %s from %s, %s on %s %q: Allowed %v, reference %v", bindings, p, h, op, typ, name, got, want)
					}
				}
			}
		}
	})
}

// BenchmarkAllowed is a produce's check over 1000 bindings of other
// principals (a third of them prefixed, many sorting before the topic)
// and the two that decide.
func BenchmarkAllowed(b *testing.B) {
	var bindings []Binding
	for i := range 1000 {
		name := fmt.Sprintf("team%03d-", i%300)
		pat := Literal
		if i%3 == 0 {
			pat = Prefixed
		} else {
			name += "events"
		}
		bindings = append(bindings, allow(Topic, pat, name, fmt.Sprintf("User:u%d", i), Write))
	}
	bindings = append(bindings, allow(Topic, Literal, "team150-orders", "User:alice", Write))
	s := NewSet(bindings)
	alice := Request{Principal: "User:alice", Host: "10.0.0.1"}
	for b.Loop() {
		if !s.Allowed(alice, Write, Topic, "team150-orders", false) {
			b.Fatal("refused")
		}
	}
}
