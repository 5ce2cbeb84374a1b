package metadata

import (
	"maps"
	"reflect"
	"testing"
)

// TestScramCredentialsReachTheCache: credentials written for two users,
// one named with the key's separators, are seen by a watching cache and by
// one loaded afresh, and a user whose credentials are all deleted has
// none.
func TestScramCredentialsReachTheCache(t *testing.T) {
	ctx := ctxT(t)
	s := newTestStore(t)
	cache := newTestCache(t, ctx, s)
	set := func(user string, m map[string]ScramCredential) {
		t.Helper()
		rev, err := s.UpdateScramCredentials(ctx, user, func(map[string]ScramCredential) (map[string]ScramCredential, error) { return m, nil })
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	check := func(c *Cache, want map[string]map[string]ScramCredential) {
		t.Helper()
		if got := c.Snapshot().ScramCredentials; !maps.EqualFunc(got, want, func(a, b map[string]ScramCredential) bool { return reflect.DeepEqual(a, b) }) {
			t.Fatalf("SCRAM credentials %v, want %v", got, want)
		}
	}
	alice := map[string]ScramCredential{"SCRAM-SHA-256": {Salt: []byte("salt"), Iterations: 4096, StoredKey: []byte("stored"), ServerKey: []byte("server")}}
	odd := map[string]ScramCredential{"SCRAM-SHA-512": {Salt: []byte("s2"), Iterations: 8192, StoredKey: []byte("k1"), ServerKey: []byte("k2")}}
	set("alice", alice)
	set("a/b=c%", odd)
	want := map[string]map[string]ScramCredential{"alice": alice, "a/b=c%": odd}
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
	set("alice", nil)
	delete(want, "alice")
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
	if _, err := s.UpdateScramCredentials(ctx, "", nil); err == nil {
		t.Fatal("an empty user name was taken")
	}
}
