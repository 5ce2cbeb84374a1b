package broker_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

func rackOf(id int32) string { return "zone-" + strconv.Itoa(int(id)) }

// fetchSources records which broker each fetched batch came from.
type fetchSources struct {
	mu   sync.Mutex
	from map[int32]int
}

func (f *fetchSources) OnFetchBatchRead(meta kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.from[meta.NodeID] += m.NumRecords
}

func (f *fetchSources) snapshot() map[int32]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32]int{}
	for k, v := range f.from {
		out[k] = v
	}
	return out
}

// TestConsumerReadsFromReplicaInItsRack: a consumer that names its rack
// (client.rack) is pointed by the leader at the in-sync follower in that
// rack (KIP-392) and reads every record from it, including records
// produced while it reads (the follower serves up to the high watermark
// its leader sent it, and learns a new one without waiting for data).
func TestConsumerReadsFromReplicaInItsRack(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.Rack = rackOf(cfg.NodeID) })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "zoned"); err != nil {
		t.Fatal(err)
	}
	prod := c.Client(kgo.DefaultProduceTopic("zoned"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 100; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	waitReplicated(t, c, "zoned", 100)
	leader, _, _ := partitionState(t, adm, "zoned")
	follower := (leader + 1) % 3

	src := &fetchSources{from: map[int32]int{}}
	cons := c.Client(kgo.Rack(rackOf(follower)), kgo.WithHooks(src),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"zoned": {0: kgo.NewOffset().AtStart()}}))
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 100; i < 200; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for len(got) < 200 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of 200: %v (sources %v)", len(got), err, src.snapshot())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch error %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	<-done
	for i, v := range got {
		if v != strconv.Itoa(i) {
			t.Fatalf("record %d is %q", i, v)
		}
	}
	if from := src.snapshot(); from[follower] != 200 {
		t.Fatalf("records by broker %v: want all 200 from broker %d in the consumer's rack (leader %d)", from, follower, leader)
	}
}

// TestFollowerReadAnswers checks the broker's side of KIP-392 request by
// request: the leader names the follower in the client's rack and sends
// no records; it serves a client in its own rack or naming none; the
// follower serves Fetch v11+ up to its high watermark, answers
// OFFSET_OUT_OF_RANGE past its log end to a client that sends the leader
// epoch (it then returns to the leader) and no records to one that sends
// none (it cannot tell an offset the follower lacks yet from one past the
// leader's end, and would reset), and refuses older versions with
// NOT_LEADER_OR_FOLLOWER.
func TestFollowerReadAnswers(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.Rack = rackOf(cfg.NodeID) })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "answers"); err != nil {
		t.Fatal(err)
	}
	prod := c.Client(kgo.DefaultProduceTopic("answers"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 10; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	waitReplicated(t, c, "answers", 10)
	leader, _, _ := partitionState(t, adm, "answers")
	follower := (leader + 1) % 3
	var fetchAt func(node int32, version int16, rack string, offset int64, epoch int32) kmsg.FetchResponseTopicPartition
	fetch := func(node int32, version int16, rack string, offset int64) kmsg.FetchResponseTopicPartition {
		return fetchAt(node, version, rack, offset, -1)
	}
	fetchAt = func(node int32, version int16, rack string, offset int64, epoch int32) kmsg.FetchResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrFetchRequest()
		req.Version = version
		req.ReplicaID = -1
		req.ReplicaState.ID = -1
		req.MaxWaitMillis = 10
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		req.Rack = rack
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "answers"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset = offset
		rp.CurrentLeaderEpoch = epoch
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, directClient(t, c.Brokers[node].Addr, version))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0]
	}
	if p := fetch(leader, 12, rackOf(follower), 0); p.ErrorCode != 0 || p.PreferredReadReplica != follower || len(p.RecordBatches) != 0 || p.HighWatermark != 10 {
		t.Fatalf("leader to a client in the follower's rack: error %d, preferred %d, %d bytes, hw %d", p.ErrorCode, p.PreferredReadReplica, len(p.RecordBatches), p.HighWatermark)
	}
	for _, rack := range []string{rackOf(leader), "", "elsewhere"} {
		if p := fetch(leader, 12, rack, 0); p.ErrorCode != 0 || p.PreferredReadReplica != -1 || len(p.RecordBatches) == 0 {
			t.Fatalf("leader to a client in rack %q: error %d, preferred %d, %d bytes", rack, p.ErrorCode, p.PreferredReadReplica, len(p.RecordBatches))
		}
	}
	if p := fetch(follower, 12, rackOf(follower), 0); p.ErrorCode != 0 || p.PreferredReadReplica != -1 || len(p.RecordBatches) == 0 || p.HighWatermark != 10 {
		t.Fatalf("follower: error %d, preferred %d, %d bytes, hw %d", p.ErrorCode, p.PreferredReadReplica, len(p.RecordBatches), p.HighWatermark)
	}
	if p := fetch(follower, 12, rackOf(follower), 10); p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
		t.Fatalf("follower at its high watermark: error %d, %d bytes", p.ErrorCode, len(p.RecordBatches))
	}
	if p := fetch(follower, 12, rackOf(follower), 50); p.ErrorCode != 0 || len(p.RecordBatches) != 0 || p.HighWatermark != 10 {
		t.Fatalf("follower past its log end, no leader epoch: error %d, %d bytes, hw %d; want no error and no records", p.ErrorCode, len(p.RecordBatches), p.HighWatermark)
	}
	_, epoch, _ := partitionState(t, adm, "answers")
	if p := fetchAt(follower, 12, rackOf(follower), 50, epoch); p.ErrorCode != kerr.OffsetOutOfRange.Code {
		t.Fatalf("follower past its log end, with the leader epoch: error %d, want OFFSET_OUT_OF_RANGE", p.ErrorCode)
	}
	if p := fetch(leader, 12, rackOf(leader), 50); p.ErrorCode != kerr.OffsetOutOfRange.Code {
		t.Fatalf("leader past its log end: error %d, want OFFSET_OUT_OF_RANGE", p.ErrorCode)
	}
	if p := fetch(follower, 10, rackOf(follower), 0); p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("follower at Fetch v10: error %d, want NOT_LEADER_OR_FOLLOWER", p.ErrorCode)
	}
}

// directClient is a client that talks to one broker only, with Fetch at
// fetchVersion at most.
func directClient(t *testing.T, addr string, fetchVersion int16) *kgo.Client {
	t.Helper()
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(kmsg.Fetch.Int16(), fetchVersion)
	return pinnedClient(t, addr, kgo.MaxVersions(vs), kgo.RetryTimeout(5*time.Second))
}

// pinnedClient is a client with opts that talks to the broker at addr
// only, whatever addresses its metadata names; it is closed at the test's
// end.
func pinnedClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestConsumerReadsATieredTopicFromReplicaInItsRack: the same on a tiered
// topic. A follower has not read the manifest as leader (only the leader
// does), and refused every consumer read until it had, so a consumer the
// leader pointed at it went back and forth between the two and read
// nothing; it serves the records it holds on its disk.
func TestConsumerReadsATieredTopicFromReplicaInItsRack(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.Rack = rackOf(cfg.NodeID)
		cfg.Tiering = broker.TieringConfig{Bucket: objectstore.NewMem(), UploadInterval: 50 * time.Millisecond}
	})
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "zoned-tiered"); err != nil {
		t.Fatal(err)
	}
	prod := c.Client(kgo.DefaultProduceTopic("zoned-tiered"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 100; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	waitReplicated(t, c, "zoned-tiered", 100)
	leader, _, _ := partitionState(t, adm, "zoned-tiered")
	follower := (leader + 1) % 3
	src := &fetchSources{from: map[int32]int{}}
	cons := c.Client(kgo.Rack(rackOf(follower)), kgo.WithHooks(src),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"zoned-tiered": {0: kgo.NewOffset().AtStart()}}))
	var got []string
	for len(got) < 100 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of 100: %v (sources %v)", len(got), err, src.snapshot())
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	for i, v := range got {
		if v != strconv.Itoa(i) {
			t.Fatalf("record %d is %q", i, v)
		}
	}
	if from := src.snapshot(); from[follower] != 100 {
		t.Fatalf("records by broker %v: want all 100 from broker %d in the consumer's rack (leader %d)", from, follower, leader)
	}
}
