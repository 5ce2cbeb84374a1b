package metadata

import (
	"maps"
	"testing"
)

// TestQuotaEntityKeys: every entity form Kafka has reads back from its
// key, names with the separators in them too, and an empty name is a name,
// not the default.
func TestQuotaEntityKeys(t *testing.T) {
	name := func(n string) QuotaName { return QuotaName{Set: true, Name: n} }
	def := QuotaName{Set: true, Default: true}
	for _, c := range []struct {
		e   QuotaEntity
		key string
	}{
		{QuotaEntity{User: name("alice")}, "user=alice"},
		{QuotaEntity{User: def}, "user"},
		{QuotaEntity{ClientID: name("app/1=x&y")}, "client-id=app%2F1%3Dx%26y"},
		{QuotaEntity{ClientID: name("")}, "client-id="},
		{QuotaEntity{User: name("alice"), ClientID: def}, "user=alice/client-id"},
		{QuotaEntity{User: def, ClientID: name("app")}, "user/client-id=app"},
		{QuotaEntity{IP: name("10.0.0.1")}, "ip=10.0.0.1"},
	} {
		if got := c.e.Key(); got != c.key {
			t.Errorf("%+v: key %q, want %q", c.e, got, c.key)
		}
		if got, ok := ParseQuotaEntity(c.key); !ok || got != c.e {
			t.Errorf("%q: parsed %+v %v, want %+v", c.key, got, ok, c.e)
		}
	}
	for _, bad := range []string{"", "users=a", "client-id/user", "user/user", "user=%zz", "user=a//client-id"} {
		if e, ok := ParseQuotaEntity(bad); ok {
			t.Errorf("%q parsed as %+v", bad, e)
		}
	}
}

func FuzzQuotaEntityKey(f *testing.F) {
	for _, s := range []string{"user=alice/client-id", "client-id=app%2F1", "ip=::1", "user", "user=/client-id=", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		e, ok := ParseQuotaEntity(key)
		if !ok {
			return
		}
		again, ok := ParseQuotaEntity(e.Key())
		if !ok || again != e {
			t.Fatalf("%q parsed as %+v, whose key %q parses as %+v %v", key, e, e.Key(), again, ok)
		}
	})
}

// TestClientQuotasReachTheCache: quotas written for two entities are seen
// by a watching cache and by one loaded afresh, and an entity emptied of
// its quotas has none.
func TestClientQuotasReachTheCache(t *testing.T) {
	ctx := ctxT(t)
	s := newTestStore(t)
	cache := newTestCache(t, ctx, s)
	app := QuotaEntity{ClientID: QuotaName{Set: true, Name: "app"}}
	users := QuotaEntity{User: QuotaName{Set: true, Default: true}}
	set := func(e QuotaEntity, m map[string]float64) {
		t.Helper()
		rev, err := s.UpdateClientQuotas(ctx, e, func(map[string]float64) (map[string]float64, error) { return m, nil })
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	check := func(c *Cache, want map[QuotaEntity]map[string]float64) {
		t.Helper()
		if got := c.Snapshot().ClientQuotas; !maps.EqualFunc(got, want, func(a, b map[string]float64) bool { return maps.Equal(a, b) }) {
			t.Fatalf("client quotas %v, want %v", got, want)
		}
	}
	set(app, map[string]float64{"producer_byte_rate": 1024})
	set(users, map[string]float64{"consumer_byte_rate": 2048.5})
	want := map[QuotaEntity]map[string]float64{app: {"producer_byte_rate": 1024}, users: {"consumer_byte_rate": 2048.5}}
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
	set(app, nil)
	delete(want, app)
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
}
