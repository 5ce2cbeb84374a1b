package broker_test

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// The tombstones of deleted topics do not pile up in etcd: the controller
// removes them once they are older than DeletedTopicRetention.
func TestDeletedTopicTombstonesArePruned(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.DeletedTopicRetention = 2 * time.Second })
	tombstones := func() int {
		resp, err := b.Etcd().Get(testCtx(t), "/shale/deleted-topics/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return int(resp.Count)
	}
	for i := range 3 {
		name := fmt.Sprintf("brief-%d", i)
		createTopic(t, b.Admin(), name, 1, nil)
		if _, err := b.Admin().DeleteTopic(testCtx(t), name); err != nil {
			t.Fatal(err)
		}
	}
	if n := tombstones(); n != 3 {
		t.Fatalf("%d tombstones right after three deletions, want 3", n)
	}
	brokertest.WaitFor(t, 15*time.Second, "the tombstones to be pruned", func() (bool, string) {
		n := tombstones()
		return n == 0, fmt.Sprintf("%d tombstones", n)
	})
}
