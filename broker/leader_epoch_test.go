package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/vfs"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg"
)

// A broker taking leadership is not seen as the leader before its log
// records the new leader epoch. In between, a follower holding a newer
// epoch than the new leader's log (records of the old leader that the new
// one never got) would ask where that epoch ended and be told "unknown"
// (-1), the answer Kafka gives only when the leader knows no such epoch at
// all; the follower cut its whole log on it. Here the new leader's epoch
// checkpoint write is held: until it is done the broker answers
// OffsetForLeaderEpoch with an error, never with an end offset of -1.
func TestNewLeaderAnswersNoEpochEndBeforeItsEpochIsRecorded(t *testing.T) {
	gfs := &gateFS{FS: vfs.OSFS{}, match: "epochs-0/leader-epoch-checkpoint"}
	c := brokertest.StartClusterOn(t, 2, func(id int32) localseg.FS {
		if id == 1 {
			return gfs
		}
		return nil
	})
	createAssigned(t, c.Client(), "epochs", []int32{0, 1})
	prod := c.Client(kgo.DefaultProduceTopic("epochs"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 5; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte("r")})
	}
	end, _, _ := c.Brokers[0].B.ReplicaOffsets("epochs", 0)
	brokertest.WaitFor(t, 10*time.Second, "broker 1 holds every record", func() (bool, string) {
		leo, hw, _ := c.Brokers[1].B.ReplicaOffsets("epochs", 0)
		return leo == end && hw == end, fmt.Sprintf("leo %d hw %d of %d", leo, hw, end)
	})

	held, release := gfs.arm()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Stop(0) // controlled shutdown: leadership moves to broker 1
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("broker 1 never wrote its epoch checkpoint as the new leader")
	}

	cl := c.Client(kgo.SeedBrokers(c.Brokers[1].Addr))
	ask := func(epoch int32) kmsg.OffsetForLeaderEpochResponseTopicPartition {
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = 0
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = "epochs"
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.CurrentLeaderEpoch, rp.LeaderEpoch = -1, epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
		defer cancel()
		resp, err := cl.Broker(1).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.(*kmsg.OffsetForLeaderEpochResponse).Topics[0].Partitions[0]
	}
	// Epoch 100 is newer than any this partition had: a follower from a
	// later leader would hold it.
	if p := ask(100); p.ErrorCode == 0 {
		t.Fatalf("while its epoch is being recorded, the new leader answered %+v, want an error", p)
	}

	close(release)
	released = true
	<-stopped
	brokertest.WaitFor(t, 10*time.Second, "broker 1 leads with its epoch recorded", func() (bool, string) {
		p := ask(100)
		return p.ErrorCode == 0, fmt.Sprintf("%v %+v", kerr.ErrorForCode(p.ErrorCode), p)
	})
}
