package broker_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/tiering"
)

// fetchCode fetches partition 0 of topic at offset and returns the
// partition's error code.
func fetchCode(t *testing.T, cl *kgo.Client, topic string, offset int64) int16 {
	t.Helper()
	tds, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12
	req.MaxWaitMillis = 100
	req.MaxBytes = 1 << 20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rt.TopicID = tds[topic].ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = 1 << 20
	rp.CurrentLeaderEpoch = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

// TestObjectStoreOutageKeepsProducingAndCatchesUp: while the store fails,
// produce goes on to local disk, nothing unuploaded is deleted locally,
// cold reads get a retriable KAFKA_STORAGE_ERROR (not a hang); when the
// store is back, uploads catch up and every record reads from offset 0.
func TestObjectStoreOutageKeepsProducingAndCatchesUp(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b := startTiered(t, fb)
	createTieredTopic(t, b, "outage")
	const half = 600
	produceTiered(t, b, "outage", half)
	cl := b.Client()
	// Every sealed segment uploaded and deleted, the active one alone
	// left: nothing local retention could still delete after the count
	// below (a deletion after it took a segment off the growth the
	// outage must show).
	waitFor(t, "the first half uploaded", 30*time.Second, func() bool {
		return localSegments(t, b, "outage") == 1 && listOffset(t, cl, "outage", -4) > 0
	})

	down := fb.Add(faulty.Rule{Op: faulty.Any, Fail: true})
	before := localSegments(t, b, "outage")
	cp := tieredProducer(b, "outage")
	produceTieredValues(t, cp, half, 2*half, 50)
	time.Sleep(500 * time.Millisecond) // several retention passes
	if n := localSegments(t, b, "outage"); n <= before+3 {
		t.Fatalf("%d local segments during the outage (%d before): unuploaded data was deleted or never sealed", n, before)
	}
	start := time.Now()
	if code := fetchCode(t, cl, "outage", 0); code != kerr.KafkaStorageError.Code {
		t.Fatalf("cold fetch during the outage: error %d, want KAFKA_STORAGE_ERROR", code)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("a cold fetch during the outage took %v", d)
	}
	if down.Fired() == 0 {
		t.Fatal("the outage was never hit")
	}

	down.Remove()
	waitFor(t, "uploads to catch up", 45*time.Second, func() bool {
		return localSegments(t, b, "outage") <= 2
	})
	recs := consumeN(t, b, "outage", 2*half, kgo.FetchMaxPartitionBytes(20000))
	for i, r := range recs[:2*half] {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d", i, r.Offset)
		}
	}
}

// TestDeletingATieredTopicDeletesItsObjects: once the deletion is
// recorded, the topic's objects leave the bucket (marker last).
func TestDeletingATieredTopicDeletesItsObjects(t *testing.T) {
	bucket := objectstore.NewMem()
	b := startTiered(t, bucket)
	createTieredTopic(t, b, "doomed")
	createTieredTopic(t, b, "kept")
	produceTiered(t, b, "doomed", 400)
	produceTiered(t, b, "kept", 400)
	cl := b.Client()
	waitFor(t, "uploads", 30*time.Second, func() bool {
		return listOffset(t, cl, "doomed", -5) > 0 && listOffset(t, cl, "kept", -5) > 0
	})
	if _, err := b.Admin().DeleteTopic(testCtx(t), "doomed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted topic's objects to go, but its deletion marker", 30*time.Second, func() bool {
		for _, k := range listBucket(t, bucket, "") {
			if strings.HasPrefix(k, "doomed-") && !strings.HasSuffix(k, "/deleted.json") {
				return false
			}
		}
		return true
	})
	if len(listBucket(t, bucket, ".log")) == 0 {
		t.Fatal("the other topic's segments went too")
	}
}

// Regression: the archive descriptor was written under a sync.Once, so a
// broker whose first try failed (the store down as it took its first
// leadership) never wrote it, and the bucket did not describe itself until
// another broker did. Now a later leadership on the same broker retries.
func TestArchiveDescriptorIsRetriedAfterAFailure(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	key := tiering.Layout{}.ArchiveKey()
	down := fb.Add(faulty.Rule{Op: faulty.Any, KeyPrefix: key, Fail: true})
	b := startTiered(t, fb)
	createTieredTopic(t, b, "first")
	waitFor(t, "the descriptor's first try", 30*time.Second, func() bool { return down.Fired() > 0 })
	down.Remove()
	if _, err := fb.Inner().Head(testCtx(t), key); err == nil {
		t.Fatal("the archive descriptor was written while the store refused it")
	}
	createTieredTopic(t, b, "second") // a new leadership on this broker
	waitFor(t, "the archive descriptor", 30*time.Second, func() bool {
		_, err := fb.Inner().Head(testCtx(t), key)
		return err == nil
	})
}
