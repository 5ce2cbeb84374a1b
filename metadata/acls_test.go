package metadata

import (
	"maps"
	"slices"
	"testing"
)

// TestACLsReachTheCache: the entries of two resource patterns, one named
// with the key's separators, are seen by a watching cache and by one
// loaded afresh; writing what is there already writes nothing; a pattern whose entries are all deleted has none, and an
// unreadable record leaves the entries read before in force (and is not
// overwritten: an operator mends it in etcd).
func TestACLsReachTheCache(t *testing.T) {
	ctx := ctxT(t)
	s := newTestStore(t)
	cache := newTestCache(t, ctx, s)
	set := func(r ACLResource, entries []ACLEntry) {
		t.Helper()
		rev, err := s.UpdateACLs(ctx, r, func(cur []ACLEntry) ([]ACLEntry, error) { return entries, nil })
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	check := func(c *Cache, want map[ACLResource][]ACLEntry) {
		t.Helper()
		if got := c.Snapshot().ACLs; !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("ACLs %v, want %v", got, want)
		}
	}
	topic := ACLResource{Type: 2, Pattern: 3, Name: "orders"}
	odd := ACLResource{Type: 3, Pattern: 4, Name: "a/b=c%/3"}
	read := []ACLEntry{{Principal: "User:alice", Host: "*", Operation: 3, Permission: 3}}
	two := []ACLEntry{{Principal: "User:bob", Host: "10.0.0.1", Operation: 2, Permission: 2}, {Principal: "User:*", Host: "*", Operation: 8, Permission: 3}}
	set(topic, read)
	set(odd, two)
	want := map[ACLResource][]ACLEntry{topic: read, odd: two}
	check(cache, want)

	// The same entries again, or none where there are none, write
	// nothing.
	modRev := func(r ACLResource) int64 {
		t.Helper()
		resp, err := s.cli.Get(ctx, s.aclKey(r))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return resp.Kvs[0].ModRevision
	}
	before := modRev(topic)
	set(topic, read)
	absent := ACLResource{Type: 2, Pattern: 3, Name: "never"}
	set(absent, nil)
	if after := modRev(topic); after != before {
		t.Fatalf("rewriting the same entries moved the record from revision %d to %d", before, after)
	}
	if rev := modRev(absent); rev != 0 {
		t.Fatalf("no entries for a pattern without a record wrote one (revision %d)", rev)
	}
	check(newTestCache(t, ctx, s), want)

	rev, err := s.cli.Put(ctx, s.aclKey(topic), "not json")
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitForRevision(ctx, rev.Header.Revision); err != nil {
		t.Fatal(err)
	}
	check(cache, want)
	if _, err := s.UpdateACLs(ctx, topic, func(cur []ACLEntry) ([]ACLEntry, error) { return nil, nil }); err == nil {
		t.Fatal("an unreadable record was replaced")
	}
	if _, err := s.cli.Put(ctx, s.aclKey(topic), "[]"); err != nil {
		t.Fatal(err)
	}

	set(topic, nil)
	delete(want, topic)
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
	if _, err := s.UpdateACLs(ctx, ACLResource{Type: 2, Pattern: 3}, nil); err == nil {
		t.Fatal("an empty resource name was taken")
	}
}

// FuzzACLKey: every resource pattern's key reads back as that pattern,
// and reading a key of any bytes never panics.
func FuzzACLKey(f *testing.F) {
	f.Add(int8(2), int8(3), "orders", "2/3/orders")
	f.Add(int8(3), int8(4), "a/b=c%", "3/4/a%2Fb")
	f.Add(int8(-1), int8(0), "*", "x/y/")
	s := &Store{prefix: "/shale/"}
	f.Fuzz(func(t *testing.T, typ, pat int8, name, raw string) {
		parseACLKey(raw)
		if name == "" {
			return
		}
		r := ACLResource{Type: typ, Pattern: pat, Name: name}
		back, ok := parseACLKey(s.aclKey(r)[len(s.aclsPrefix()):])
		if !ok || back != r {
			t.Fatalf("%+v: key %q reads back as %+v, %v", r, s.aclKey(r), back, ok)
		}
	})
}
