package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// A broker that led at an epoch and appended nothing in it, before the
// controller elected another leader that never saw that epoch, follows
// and rejoins the ISR. Its log ends with that empty epoch: kept after the
// truncation to where the logs part (its log end), every fetch named it,
// the new leader answered each as diverging, and the follower stayed out
// of the ISR for good, saying nothing (a soak saw it after a restarted
// leader took its old role for a moment).
func TestALeaderThatWroteNothingInItsEpochFollowsAndRejoins(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	createAssigned(t, c.Client(), "empty-epoch", []int32{0, 1, 2})
	prod := c.Client(kgo.DefaultProduceTopic("empty-epoch"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for range 5 {
		produceSync(t, prod, &kgo.Record{Value: []byte("r")})
	}
	store := metadata.NewStore(c.Etcd().Client(), "")
	ctx := testCtx(t)
	update := func(change func(p *metadata.Partition)) metadata.Partition {
		t.Helper()
		for {
			p, err := store.Partition(ctx, "empty-epoch", 0)
			if err != nil {
				t.Fatal(err)
			}
			change(&p)
			if _, _, err := store.UpdatePartition(ctx, p, p.PartitionEpoch); err == nil {
				return p
			}
		}
	}
	brokertest.WaitFor(t, 10*time.Second, "every replica in sync", func() (bool, string) {
		p, err := store.Partition(ctx, "empty-epoch", 0)
		return err == nil && len(p.ISR) == 3, fmt.Sprintf("%+v %v", p, err)
	})
	// Broker 0 leads again at a later epoch, and records it at its log
	// end before any write.
	led := update(func(p *metadata.Partition) { p.LeaderEpoch++ })
	brokertest.WaitFor(t, 10*time.Second, "broker 0 records its new epoch", func() (bool, string) {
		code, e, _ := offsetForEpoch(t, c.Client(), "empty-epoch", -1, led.LeaderEpoch)
		return code == 0 && e == led.LeaderEpoch, fmt.Sprintf("epoch %d, error %d", e, code)
	})
	// Another leader, which never saw that epoch, as a controller elects
	// when broker 0 restarted.
	update(func(p *metadata.Partition) {
		p.Leader, p.LeaderEpoch = 1, p.LeaderEpoch+1
		p.ISR = slices.DeleteFunc(slices.Clone(p.ISR), func(id int32) bool { return id == 0 })
	})
	for range 5 {
		produceSync(t, prod, &kgo.Record{Value: []byte("after")})
	}
	end, _, _ := c.Brokers[1].B.ReplicaOffsets("empty-epoch", 0)
	brokertest.WaitFor(t, 20*time.Second, "broker 0 copies the new leader's records and is back in the ISR", func() (bool, string) {
		leo, _, _ := c.Brokers[0].B.ReplicaOffsets("empty-epoch", 0)
		p, err := store.Partition(ctx, "empty-epoch", 0)
		return err == nil && leo == end && slices.Contains(p.ISR, 0), fmt.Sprintf("log end %d of %d, ISR %v %v", leo, end, p.ISR, err)
	})
}
