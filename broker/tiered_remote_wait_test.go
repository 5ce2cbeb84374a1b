package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// fetchAt is one partition (0) of a fetch: its topic and offset.
type fetchAt struct {
	topic  string
	id     [16]byte
	offset int64
}

// fetchedPart is what a fetch answered for one partition.
type fetchedPart struct {
	code  int16
	bytes int
}

// fetchParts sends one fetch of the partitions at, waiting up to maxWait
// for a byte, and returns what each got (in the order asked) and how long
// the answer took.
func fetchParts(cl *kgo.Client, maxWait time.Duration, at ...fetchAt) ([]fetchedPart, time.Duration, error) {
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = int32(maxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = 4 << 20
	for _, a := range at {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = a.topic, a.id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset = a.offset
		rp.PartitionMaxBytes = 1 << 20
		rp.CurrentLeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	resp, err := req.RequestWith(ctx, cl)
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	// The client sends the newest version both sides know: topics are
	// named by their IDs in the answer.
	got := map[[16]byte]fetchedPart{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			got[rt.TopicID] = fetchedPart{code: rp.ErrorCode, bytes: len(rp.RecordBatches)}
		}
	}
	out := make([]fetchedPart, len(at))
	for i, a := range at {
		p, ok := got[a.id]
		if !ok {
			return nil, took, fmt.Errorf("the answer has no partition of %s", a.topic)
		}
		out[i] = p
	}
	return out, took, nil
}

// startStoreWaitBroker starts a tiered broker on fb whose remote reads may
// take a minute (longer than any wait below), with one tiered topic "cold"
// whose first records are in the bucket alone and one topic "hot" with
// records on disk; it returns the two partitions at offset 0.
func startStoreWaitBroker(t *testing.T, fb *faulty.Bucket, fetchTimeout time.Duration) (*brokertest.Broker, fetchAt, fetchAt) {
	t.Helper()
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: fb, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			FetchTimeout: fetchTimeout}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	createTieredTopic(t, b, "cold")
	produceTiered(t, b, "cold", 600)
	createTieredTopic(t, b, "hot")
	produceTiered(t, b, "hot", 5)
	cl := b.Client()
	waitFor(t, "the cold topic's first records to leave the disk", 30*time.Second, func() bool {
		return listOffset(t, cl, "cold", -4) > 0
	})
	return b, fetchAt{topic: "cold", id: topicIDOf(t, cl, "cold")}, fetchAt{topic: "hot", id: topicIDOf(t, cl, "hot")}
}

// TestAStoreThatHangsHoldsNoOtherPartitionOfAFetch: a fetch of a cold
// partition and a hot one, while the object store has gone silent, is
// answered within remote.fetch.max.wait.ms with the hot partition's
// records and none of the cold one's, not after the remote read's
// timeout. Once that read fails, the next fetch of the cold partition gets
// a retriable KAFKA_STORAGE_ERROR at once; once the store answers again,
// the cold records come.
func TestAStoreThatHangsHoldsNoOtherPartitionOfAFetch(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	const fetchTimeout = 4 * time.Second
	b, cold, hot := startStoreWaitBroker(t, fb, fetchTimeout)
	stall := fb.Add(faulty.Rule{Op: faulty.Get, Stall: true})
	cl := b.Client()

	began := time.Now()
	got, took, err := fetchParts(cl, 100*time.Millisecond, cold, hot)
	if err != nil {
		t.Fatal(err)
	}
	if took >= fetchTimeout/2 {
		t.Fatalf("the fetch took %v: the silent store held it (remote reads time out after %v)", took, fetchTimeout)
	}
	if got[0].code != 0 || got[0].bytes != 0 {
		t.Fatalf("the cold partition, with the store silent: error %d, %d bytes; want no error and no records yet", got[0].code, got[0].bytes)
	}
	if got[1].code != 0 || got[1].bytes == 0 {
		t.Fatalf("the hot partition: error %d, %d bytes", got[1].code, got[1].bytes)
	}
	if stall.Fired() == 0 {
		t.Fatal("the cold read never reached the store")
	}

	// The read the first fetch left goes on until its timeout; then a
	// fetch of the cold partition learns it failed, at once.
	var code int16
	waitFor(t, "a fetch to report the failed remote read", 3*fetchTimeout, func() bool {
		got, took, err := fetchParts(cl, 100*time.Millisecond, cold)
		if err != nil {
			t.Fatal(err)
		}
		if took >= fetchTimeout/2 {
			t.Fatalf("a fetch of the cold partition took %v", took)
		}
		code = got[0].code
		return code != 0
	})
	if code != kerr.KafkaStorageError.Code {
		t.Fatalf("the failed remote read: error %d, want KAFKA_STORAGE_ERROR", code)
	}
	if d := time.Since(began); d < fetchTimeout {
		t.Fatalf("the failure came %v after the read began, before its timeout", d)
	}

	stall.Remove()
	waitFor(t, "the cold records, the store back", 3*fetchTimeout, func() bool {
		got, _, err := fetchParts(cl, 100*time.Millisecond, cold)
		if err != nil {
			t.Fatal(err)
		}
		return got[0].code == 0 && got[0].bytes > 0
	})
}

// TestASlowRemoteReadAnswersALongPollWhenItEnds: a fetch that waits for
// records (a long poll) and whose cold read outlasts
// remote.fetch.max.wait.ms is answered when the read ends, with its
// records, not at the end of the poll.
func TestASlowRemoteReadAnswersALongPollWhenItEnds(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	b, cold, _ := startStoreWaitBroker(t, fb, time.Minute)
	const slow = 1500 * time.Millisecond
	fb.Add(faulty.Rule{Op: faulty.Get, Latency: slow})
	const poll = 30 * time.Second
	got, took, err := fetchParts(b.Client(), poll, cold)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].code != 0 || got[0].bytes == 0 {
		t.Fatalf("the cold partition: error %d, %d bytes", got[0].code, got[0].bytes)
	}
	if took < slow {
		t.Fatalf("answered in %v, before the store could (%v a GET)", took, slow)
	}
	if took >= poll/2 {
		t.Fatalf("answered in %v: the long poll was not woken when the remote read ended", took)
	}
}

// startColdTopics starts a tiered broker on fb whose remote calls time out
// after fetchTimeout, with four tiered topics whose first records are in
// the bucket alone; it returns a client and the topics.
func startColdTopics(t *testing.T, fb *faulty.Bucket, fetchTimeout time.Duration) (*kgo.Client, []string) {
	t.Helper()
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: fb, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			FetchTimeout: fetchTimeout}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	topics := []string{"c0", "c1", "c2", "c3"}
	for _, topic := range topics {
		createTieredTopic(t, b, topic)
		produceTiered(t, b, topic, 600)
	}
	cl := b.Client()
	waitFor(t, "every topic's first records to leave the disk", 30*time.Second, func() bool {
		for _, topic := range topics {
			if listOffset(t, cl, topic, -4) == 0 {
				return false
			}
		}
		return true
	})
	return cl, topics
}

// requestWithinOneTimeout sends req through cl while stall holds the
// store, and fails t unless the store was asked and the answer came within
// one remote timeout, not one a partition.
func requestWithinOneTimeout(t *testing.T, cl *kgo.Client, req kmsg.Request, stall *faulty.Fault, fetchTimeout time.Duration) kmsg.Response {
	t.Helper()
	start := time.Now()
	resp, err := cl.Request(testCtx(t), req)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if stall.Fired() == 0 {
		t.Fatal("the request never reached the store")
	}
	if took >= 2*fetchTimeout {
		t.Fatalf("the %s took %v: a remote timeout (%v) a partition", kmsg.NameForKey(req.Key()), took, fetchTimeout)
	}
	return resp
}

// TestAListOffsetsOfColdPartitionsWaitsForAHungStoreOnce: a ListOffsets by
// timestamp of several partitions whose records are in the bucket alone,
// while the store has gone silent, fails them all with a retriable
// KAFKA_STORAGE_ERROR within one remote read timeout. Each partition
// waited a timeout of its own, one after another: four partitions at 10 s
// outlasted every client's request timeout, so the client never got an
// answer, only a connection to drop and the same wait again.
func TestAListOffsetsOfColdPartitionsWaitsForAHungStoreOnce(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	const fetchTimeout = 2 * time.Second
	cl, topics := startColdTopics(t, fb, fetchTimeout)
	stall := fb.Add(faulty.Rule{Op: faulty.Get, Stall: true})

	req := kmsg.NewPtrListOffsetsRequest()
	for _, topic := range topics {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Timestamp = 0 // the first record: in the bucket
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	resp := requestWithinOneTimeout(t, cl, req, stall, fetchTimeout).(*kmsg.ListOffsetsResponse)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != kerr.KafkaStorageError.Code {
				t.Errorf("%s: error %d, offset %d; want KAFKA_STORAGE_ERROR", rt.Topic, rp.ErrorCode, rp.Offset)
			}
		}
	}
}

// TestADeleteRecordsOfColdPartitionsWaitsForAHungStoreOnce: a DeleteRecords
// of several partitions whose log starts are in the bucket, while the
// store hangs, fails them all with a retriable KAFKA_STORAGE_ERROR within
// one remote timeout, not one timeout a partition (each commits the new
// start to its manifest first), and deletes nothing.
func TestADeleteRecordsOfColdPartitionsWaitsForAHungStoreOnce(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	const fetchTimeout = 2 * time.Second
	cl, topics := startColdTopics(t, fb, fetchTimeout)
	stall := fb.Add(faulty.Rule{Op: faulty.Put, Stall: true})

	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 60_000
	for _, topic := range topics {
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Offset = 100
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	resp := requestWithinOneTimeout(t, cl, req, stall, fetchTimeout).(*kmsg.DeleteRecordsResponse)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != kerr.KafkaStorageError.Code {
				t.Errorf("%s: error %d, low watermark %d; want KAFKA_STORAGE_ERROR", rt.Topic, rp.ErrorCode, rp.LowWatermark)
			}
		}
	}
	stall.Remove()
	for _, topic := range topics {
		if got := listOffset(t, cl, topic, -2); got != 0 {
			t.Errorf("%s starts at %d after a DeleteRecords that failed", topic, got)
		}
	}
}

// TestAFollowerRestoringFromAHungStoreKeepsCopyingItsOtherPartitions: a
// follower back from a long absence, whose log ends below its leader's
// local log, restores that partition from the bucket; while the store
// hangs, the restore waits, and the partitions it copies from the same
// leader go on replicating. The restore ran in the fetcher's loop: every
// partition from that leader waited for its timeout (30 s), at each try.
func TestAFollowerRestoringFromAHungStoreKeepsCopyingItsOtherPartitions(t *testing.T) {
	fs, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bucket := faulty.New(fs)
	c := startTieredCluster(t, bucket, 15*time.Second)
	ctx := testCtx(t)
	// Both topics led by broker 0, followed by 1 and 2.
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30_000
	for _, topic := range []string{"cold", "hot"} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
		a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		a.Replicas = []int32{0, 1, 2}
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
		for k, v := range map[string]string{"segment.bytes": "65536", "local.retention.bytes": "1", "retention.ms": "-1", "file.delete.delay.ms": "1"} {
			cfg := kmsg.NewCreateTopicsRequestTopicConfig()
			cfg.Name, cfg.Value = k, kmsg.StringPtr(v)
			rt.Configs = append(rt.Configs, cfg)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, c.Client())
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range resp.Topics {
		if rt.ErrorCode != 0 {
			t.Fatalf("creating %s: %v", rt.Topic, kerr.ErrorForCode(rt.ErrorCode))
		}
	}
	for _, topic := range []string{"cold", "hot"} {
		brokertest.WaitFor(t, 30*time.Second, topic+" led by 0 with three in sync", func() (bool, string) {
			l, _, isr := storedState(t, c, topic)
			return l == 0 && len(isr) == 3, fmt.Sprintf("leader %d isr %v", l, isr)
		})
	}

	const follower = 1
	c.Stop(follower)
	produceTieredValues(t, tieredProducer(c, "cold"), 0, 1000, 50)
	brokertest.WaitFor(t, 30*time.Second, "the leader uploads and trims", func() (bool, string) {
		b := localBases(t, c.Brokers[0], "cold")
		return len(b) > 0 && b[0] > 500, fmt.Sprintf("leader's local segments %v", b)
	})

	stall := bucket.Add(faulty.Rule{Op: faulty.Any, Stall: true})
	c.Start(follower)
	brokertest.WaitFor(t, 30*time.Second, "the follower's restore to reach the store", func() (bool, string) {
		return stall.Fired() > 0, ""
	})
	hot := tieredProducer(c, "hot")
	const n = 200
	produceTieredValues(t, hot, 0, n, 20)
	brokertest.WaitFor(t, 15*time.Second, "the follower copies the hot partition", func() (bool, string) {
		leo, _, ok := c.Brokers[follower].B.ReplicaOffsets("hot", 0)
		return ok && leo == n, fmt.Sprintf("its log ends at %d (%v), the leader's at %d", leo, ok, n)
	})
	if b := localBases(t, c.Brokers[follower], "cold"); slices.ContainsFunc(b, func(o int64) bool { return o > 0 }) {
		t.Fatalf("the follower restored the cold partition (%v) while the store hung: the test did not hold its restore", b)
	}
}
