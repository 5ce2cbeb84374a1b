package metadata

import (
	"context"
	"maps"
	"testing"
)

// TestBrokerConfigsReachTheCacheAndSurviveAReload: dynamic broker configs
// of one broker and of the cluster-wide default are written, seen by a
// watching cache, seen by a cache loaded afresh (a restarted broker), and
// emptied to a record of no configs (kept: see UpdateBrokerConfigs).
func TestBrokerConfigsReachTheCacheAndSurviveAReload(t *testing.T) {
	ctx := ctxT(t)
	s := newTestStore(t)
	cache := newTestCache(t, ctx, s)
	set := func(id int32, m map[string]string) {
		t.Helper()
		rev, err := s.UpdateBrokerConfigs(ctx, id, func(cur map[string]string) (map[string]string, error) {
			return m, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	set(2, map[string]string{"leader.replication.throttled.rate": "1000"})
	set(DefaultBrokerConfigs, map[string]string{"follower.replication.throttled.rate": "500"})
	check := func(c *Cache, want map[int32]map[string]string) {
		t.Helper()
		got := c.Snapshot().BrokerConfigs
		if !maps.EqualFunc(got, want, func(a, b map[string]string) bool { return maps.Equal(a, b) }) {
			t.Fatalf("broker configs %v, want %v", got, want)
		}
	}
	want := map[int32]map[string]string{
		2:                    {"leader.replication.throttled.rate": "1000"},
		DefaultBrokerConfigs: {"follower.replication.throttled.rate": "500"},
	}
	check(cache, want)
	fresh := newTestCache(t, ctx, s)
	check(fresh, want)

	// mutate sees the stored configs.
	rev, err := s.UpdateBrokerConfigs(ctx, 2, func(cur map[string]string) (map[string]string, error) {
		if cur["leader.replication.throttled.rate"] != "1000" {
			t.Errorf("mutate got %v", cur)
		}
		cur["follower.replication.throttled.rate"] = "7"
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	want[2] = map[string]string{"leader.replication.throttled.rate": "1000", "follower.replication.throttled.rate": "7"}
	check(cache, want)

	set(2, map[string]string{})
	delete(want, 2)
	check(cache, want)
	check(newTestCache(t, ctx, s), want)
	if resp, err := s.cli.Get(context.Background(), s.brokerConfigsKey(2)); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != string(noBrokerConfigs) {
		t.Fatalf("emptied configs: %v %v, want the record %s", resp, err, noBrokerConfigs)
	}
}

// TestBrokerConfigsRecordOfNoConfigsReadsAsNone: a record of no configs
// ({}, what emptied configs and the settle of a first write of unknown
// outcome leave; or null) reads as no dynamic configs: absent from the
// snapshot of a watching cache and of one loaded afresh, an empty map to
// UpdateBrokerConfigs's mutate, and it leaves configs of other entities
// alone. A record changed to it drops the configs it held.
func TestBrokerConfigsRecordOfNoConfigsReadsAsNone(t *testing.T) {
	ctx := ctxT(t)
	s := newTestStore(t)
	cache := newTestCache(t, ctx, s)
	put := func(id int32, val string) {
		t.Helper()
		resp, err := s.cli.Put(ctx, s.brokerConfigsKey(id), val)
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.WaitForRevision(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	put(2, `{"leader.replication.throttled.rate":"1000"}`)
	put(3, `{"follower.replication.throttled.rate":"7"}`)
	put(3, string(noBrokerConfigs))
	put(4, "null")
	put(DefaultBrokerConfigs, string(noBrokerConfigs))
	want := map[int32]map[string]string{2: {"leader.replication.throttled.rate": "1000"}}
	for name, c := range map[string]*Cache{"watching": cache, "fresh": newTestCache(t, ctx, s)} {
		if got := c.Snapshot().BrokerConfigs; !maps.EqualFunc(got, want, func(a, b map[string]string) bool { return maps.Equal(a, b) }) {
			t.Fatalf("%s cache: broker configs %v, want %v", name, got, want)
		}
	}
	for _, id := range []int32{3, 4, DefaultBrokerConfigs} {
		if _, err := s.UpdateBrokerConfigs(ctx, id, func(cur map[string]string) (map[string]string, error) {
			if cur == nil || len(cur) != 0 {
				t.Errorf("entity %d: mutate got %#v, want an empty map", id, cur)
			}
			return cur, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}
