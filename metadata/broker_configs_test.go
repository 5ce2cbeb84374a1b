package metadata

import (
	"context"
	"maps"
	"testing"
)

// TestBrokerConfigsReachTheCacheAndSurviveAReload: dynamic broker configs
// of one broker and of the cluster-wide default are written, seen by a
// watching cache, seen by a cache loaded afresh (a restarted broker), and
// removed when emptied.
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
	if resp, err := s.cli.Get(context.Background(), s.brokerConfigsKey(2)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("emptied configs left a record: %v %v", resp, err)
	}
}
