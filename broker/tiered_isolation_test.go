package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// TestStalledColdReadHoldsNothingHotTrafficNeeds: while a cold fetch of a
// partition waits on an object store that has gone silent, producing to
// that same partition and fetching its local records on other
// connections are answered; the cold fetch is still waiting when they
// are. A cold read may take no lock a produce or a hot fetch needs.
func TestStalledColdReadHoldsNothingHotTrafficNeeds(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: fb, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			FetchTimeout: time.Minute}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	createTieredTopic(t, b, "mixed")
	produceTiered(t, b, "mixed", 600)
	cl := b.Client()
	waitFor(t, "the history uploaded", 30*time.Second, func() bool {
		return listOffset(t, cl, "mixed", -4) > 0
	})

	// Every segment GET now hangs until the fetch's deadline (a minute;
	// the broker's shutdown ends it sooner).
	stall := fb.Add(faulty.Rule{Op: faulty.Get, Stall: true})
	cold := b.Client()
	topicID := topicIDOf(t, cl, "mixed")
	coldDone := make(chan error, 1)
	go func() {
		_, err := fetchOnce(cold, "mixed", topicID, 0)
		coldDone <- err
	}()
	waitFor(t, "the cold read to reach the store", 30*time.Second, func() bool { return stall.Fired() > 0 })

	// Hot traffic on the same partition, on other connections.
	cp := b.Client(kgo.DefaultProduceTopic("mixed"), kgo.ProducerLinger(0))
	for i := range 20 {
		produceSync(t, cp, &kgo.Record{Value: tieredValue(600 + i)})
	}
	// The last record: in the active segment, local whatever uploads
	// did meanwhile.
	hot := listOffset(t, cl, "mixed", -1) - 1
	code, err := fetchOnce(b.Client(), "mixed", topicID, hot)
	if err != nil || code != 0 {
		t.Fatalf("hot fetch at %d: error %d, %v", hot, code, err)
	}
	select {
	case err := <-coldDone:
		t.Fatalf("the cold fetch ended (%v) before the store came back: the test did not hold it", err)
	default:
	}
}

func topicIDOf(t *testing.T, cl *kgo.Client, topic string) [16]byte {
	t.Helper()
	tds, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	return tds[topic].ID
}

// fetchOnce fetches partition 0 of topic at offset and returns the
// partition's error code; safe outside the test's goroutine.
func fetchOnce(cl *kgo.Client, topic string, id [16]byte, offset int64) (int16, error) {
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12
	req.MaxWaitMillis = 100
	req.MaxBytes = 1 << 20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rt.TopicID = id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = 1 << 20
	rp.CurrentLeaderEpoch = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, fmt.Errorf("fetch answered %d topics", len(resp.Topics))
	}
	return resp.Topics[0].Partitions[0].ErrorCode, nil
}
