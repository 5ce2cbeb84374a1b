package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// heldTieredTopic starts a tiered broker with topic on it, empty and
// marked as archiving (its first term has told etcd it uploads), then
// restarts it holding every read of topic's objects (its manifest first
// of all) until the returned release is called: the new leader term, of
// a log that holds nothing, stays loading its manifest until then (it
// must learn where the bucket ends before it appends). It returns once
// the manifest read reached the store.
func heldTieredTopic(t *testing.T, topic string) (b *brokertest.Broker, release func()) {
	t.Helper()
	fb := faulty.New(objectstore.NewMem())
	b = startTiered(t, fb)
	createTopic(t, b.Admin(), topic, 1, nil)
	waitArchiving(t, b.Etcd(), topic)
	hold := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	f := fb.Add(faulty.Rule{Op: faulty.Get | faulty.Head, KeyPrefix: topic + "-", Hold: hold})
	b.Restart()
	waitFor(t, "the manifest read to reach the store", 30*time.Second, func() bool { return f.Fired() > 0 })
	return b, release
}

// waitArchiving waits until topic's partition 0 is no longer marked
// unarchived in etcd: its leader has recorded that it uploads.
func waitArchiving(t *testing.T, etcd *clientv3.Client, topic string) {
	t.Helper()
	store := metadata.NewStore(etcd, "")
	waitFor(t, "the leader to record that it uploads", 30*time.Second, func() bool {
		p, err := store.Partition(testCtx(t), topic, 0)
		return err == nil && !p.Unarchived
	})
}

// partitionMetadata is what a Metadata request to b says of topic's
// partition 0, b's node id and the topic's id.
func partitionMetadata(t *testing.T, cl *kgo.Client, topic string) (kmsg.MetadataResponseTopicPartition, int32, [16]byte) {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || len(resp.Brokers) != 1 {
		t.Fatalf("metadata of %s: %+v", topic, resp)
	}
	return resp.Topics[0].Partitions[0], resp.Brokers[0].NodeID, resp.Topics[0].TopicID
}

// produceRequest is a Produce request of one batch of values to topic's
// partition 0 (named, and given by id from v13).
func produceRequest(topic string, id [16]byte, acks int16, timeout time.Duration, values ...string) *kmsg.ProduceRequest {
	recs := make([]recordbatch.Record, len(values))
	for i, v := range values {
		recs[i].Value = []byte(v)
	}
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, BaseTimestamp: time.Now().UnixMilli()}, recs)
	if err != nil {
		panic(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = acks
	req.TimeoutMillis = int32(timeout / time.Millisecond)
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// requireValues reads topic from its start (through a client of b, a
// broker or a cluster) until it has every value in want, and fails t if a
// value is missing or comes twice.
func requireValues(t *testing.T, b clientMaker, topic string, want map[string]bool) {
	t.Helper()
	ctx := testCtx(t)
	cons := b.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cons.Close()
	got := map[string]bool{}
	for len(got) < len(want) {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(got), len(want), err)
		}
		for _, r := range fs.Records() {
			v := string(r.Value)
			if !want[v] || got[v] {
				t.Fatalf("record %q at offset %d: not produced, or read twice", v, r.Offset)
			}
			got[v] = true
		}
	}
}

// clientMaker is a broker or a cluster of the test harness.
type clientMaker interface{ Client(...kgo.Opt) *kgo.Client }

// produceWhileParked sends to topic's partition 0, whose leader (node)
// cannot take produce yet (its manifest or its log loading), from
// franz-go producers with acks=0 and acks=1 (50 records each) and three
// raw Produce requests to the leader (acks 1, 0 and 1, as from a client
// that knew the leader before it could take them). Once parked counts
// the raw requests waiting, it calls release and waits for every send. It
// fails t on any error, and returns the values sent.
func produceWhileParked(t *testing.T, c clientMaker, node int32, topic string, id [16]byte, parked func() int64, release func()) map[string]bool {
	t.Helper()
	before := parked()
	want := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, acks := range []kgo.Acks{kgo.NoAck(), kgo.LeaderAck()} {
		var vs []*kgo.Record
		for i := range 50 {
			v := fmt.Sprintf("client-acks%d-%d", len(want), i)
			want[v] = true
			vs = append(vs, &kgo.Record{Value: []byte(v)})
		}
		pcl := c.Client(kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(acks), kgo.DisableIdempotentWrite(), kgo.ProducerLinger(0))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range vs {
				pcl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
					if err != nil {
						errs <- err
					}
				})
			}
			if err := pcl.Flush(testCtx(t)); err != nil {
				errs <- err
			}
		}()
	}
	acks1 := make(chan kmsg.ProduceResponseTopicPartition, 2)
	clients := map[int16]*kgo.Client{
		0: c.Client(kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(), kgo.ProduceRequestTimeout(30*time.Second)),
		1: c.Client(kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()),
	}
	for i, acks := range []int16{1, 0, 1} {
		v := fmt.Sprintf("raw-acks%d-%d", acks, i)
		want[v] = true
		req := produceRequest(topic, id, acks, 30*time.Second, v)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := clients[acks].Broker(int(node)).Request(testCtx(t), req)
			switch {
			case err != nil:
				errs <- err
			case acks == 1:
				acks1 <- resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
			}
		}()
	}
	waitFor(t, "the raw produce requests to wait", 30*time.Second, func() bool {
		return parked()-before >= 3
	})
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("producing while the leader could not take it yet: %v", err)
	}
	close(acks1)
	for sp := range acks1 {
		if sp.ErrorCode != 0 {
			t.Fatalf("a raw acks=1 produce sent while the leader could not take it yet: error %d", sp.ErrorCode)
		}
	}
	return want
}

// requireRetriableReads checks that ListOffsets and Fetch of topic's
// partition 0 at its leader (node) are refused with retriable errors,
// never ones that make a client give up or reset its position.
func requireRetriableReads(t *testing.T, cl *kgo.Client, node int32, topic string, id [16]byte) {
	t.Helper()
	ctx := testCtx(t)
	lo := kmsg.NewPtrListOffsetsRequest()
	lot := kmsg.NewListOffsetsRequestTopic()
	lot.Topic = topic
	lop := kmsg.NewListOffsetsRequestTopicPartition()
	lop.Timestamp = -2
	lot.Partitions = append(lot.Partitions, lop)
	lo.Topics = append(lo.Topics, lot)
	if r, err := cl.Broker(int(node)).Request(ctx, lo); err != nil {
		t.Fatal(err)
	} else {
		requireRetriable(t, "ListOffsets", r.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode)
	}
	fe := kmsg.NewPtrFetchRequest()
	fe.MaxWaitMillis, fe.MaxBytes = 100, 1<<20
	fet := kmsg.NewFetchRequestTopic()
	fet.Topic, fet.TopicID = topic, id
	fep := kmsg.NewFetchRequestTopicPartition()
	fep.PartitionMaxBytes = 1 << 20
	fet.Partitions = append(fet.Partitions, fep)
	fe.Topics = append(fe.Topics, fet)
	if r, err := cl.Broker(int(node)).Request(ctx, fe); err != nil {
		t.Fatal(err)
	} else if fr := r.(*kmsg.FetchResponse); fr.ErrorCode != 0 {
		t.Fatalf("fetch: error %d", fr.ErrorCode)
	} else {
		requireRetriable(t, "Fetch", fr.Topics[0].Partitions[0].ErrorCode)
	}
}

// requireRetriable fails t unless code is a retriable error.
func requireRetriable(t *testing.T, what string, code int16) {
	t.Helper()
	if err := kerr.ErrorForCode(code); err == nil || !kerr.IsRetriable(err) {
		t.Fatalf("%s while the leader cannot answer yet: error %v, want a retriable one", what, err)
	}
}

// Regression: a tiered leader that must read its manifest from the bucket
// before it takes produce (then any new topic's) answered
// NOT_LEADER_OR_FOLLOWER meanwhile, to a client told of the leader by
// Metadata; an acks=0 producer's records were lost (Kafka's answer to an
// acks=0 error is a closed connection, and the client drops what it
// sent). Metadata still names the leader, and a produce that arrives
// meanwhile waits for the manifest: franz-go producers with acks=0 and
// acks=1, started as soon as the broker is back, and raw produce requests
// sent to the loading leader, all land.
func TestProduceToATieredTopicWhileItsManifestLoads(t *testing.T) {
	const topic = "fresh"
	b, release := heldTieredTopic(t, topic)
	cl := b.Client()
	mp, node, id := partitionMetadata(t, cl, topic)
	if mp.ErrorCode != 0 || mp.Leader != node {
		t.Fatalf("metadata while the leader loads its manifest: error %d, leader %d; want the leader, %d", mp.ErrorCode, mp.Leader, node)
	}

	want := produceWhileParked(t, b, node, topic, id, b.B.ParkedProduces, release)
	if mp, _, _ := partitionMetadata(t, cl, topic); mp.ErrorCode != 0 || mp.Leader != node {
		t.Fatalf("metadata once the manifest is read: error %d, leader %d", mp.ErrorCode, mp.Leader)
	}
	requireValues(t, b, topic, want)
}

// A produce whose leader does not read its manifest within the request's
// timeout is answered with a retriable error, not held longer, and not
// appended; so are ListOffsets and Fetch meanwhile (and OffsetForLeaderEpoch
// for an epoch older than the leader's).
// Once the manifest is read, produce goes through.
func TestProduceWaitForAManifestEndsWithARetriableError(t *testing.T) {
	const topic = "stuck"
	b, release := heldTieredTopic(t, topic)
	cl := b.Client(kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	_, node, id := partitionMetadata(t, cl, topic)
	resp, err := cl.Broker(int(node)).Request(testCtx(t), produceRequest(topic, id, 1, 200*time.Millisecond, "refused"))
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(sp.ErrorCode); err == nil || !kerr.IsRetriable(err) {
		t.Fatalf("a produce whose wait for the manifest ended: error %v, want a retriable one", err)
	}
	// The reads a loading leader cannot answer yet are refused with a
	// retriable error too.
	requireRetriableReads(t, cl, node, topic, id)
	ctx := testCtx(t)
	oe := kmsg.NewPtrOffsetForLeaderEpochRequest()
	oe.ReplicaID = -1
	oet := kmsg.NewOffsetForLeaderEpochRequestTopic()
	oet.Topic = topic
	oep := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	oep.CurrentLeaderEpoch, oep.LeaderEpoch = -1, 0
	oet.Partitions = append(oet.Partitions, oep)
	oe.Topics = append(oe.Topics, oet)
	if r, err := cl.Broker(int(node)).Request(ctx, oe); err != nil {
		t.Fatal(err)
	} else {
		// The leader's own epoch is answered from its log (its local
		// epochs begin with it); only older ones need the manifest.
		if sp := r.(*kmsg.OffsetForLeaderEpochResponse).Topics[0].Partitions[0]; sp.ErrorCode != 0 {
			requireRetriable(t, "OffsetForLeaderEpoch", sp.ErrorCode)
		}
	}

	release()
	produceSync(t, b.Client(kgo.DefaultProduceTopic(topic)), &kgo.Record{Value: []byte("after")})
	requireValues(t, b, topic, map[string]bool{"after": true})
}

// Produce requests pipelined in one write while a partition's leader
// loads its manifest: from the first that writes the loading partition
// on, the connection's requests wait, then are appended in the order
// they were read (a ready partition's too) and answered in order.
func TestPipelinedProducesWaitForAManifestInOrder(t *testing.T) {
	b, release := heldTieredTopic(t, "loading")
	createTopic(t, b.Admin(), "other", 1, nil)
	produceSync(t, b.Client(kgo.DefaultProduceTopic("other")), &kgo.Record{Value: []byte("first")})
	batch := func(n int) []byte {
		recs := make([]recordbatch.Record, n)
		for i := range recs {
			recs[i].Value = []byte(fmt.Sprint(i))
		}
		bt, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, BaseTimestamp: time.Now().UnixMilli()}, recs)
		if err != nil {
			t.Fatal(err)
		}
		return bt
	}
	calls := []struct {
		acks     int16
		topic    string
		n        int
		wantBase int64
	}{
		{1, "other", 2, 1},   // before anything waits: appended at once
		{1, "loading", 3, 0}, // waits for the manifest
		{1, "other", 1, 3},   // behind it
		{0, "loading", 1, 3}, // no answer
		{1, "loading", 2, 4},
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("pipelined"))
	var all []byte
	for i, c := range calls {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 9, c.acks, 30000
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: c.topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch(c.n)}}}}
		all = append(all, f.AppendRequest(nil, req, int32(i))...)
	}
	conn := dial(t, b.Addr)
	if _, err := conn.Write(all); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the requests behind the loading partition to wait", 30*time.Second, func() bool { return b.B.ParkedProduces() >= 4 })
	release()
	for i, c := range calls {
		if c.acks == 0 {
			continue
		}
		resp := readProduceAnswer(t, conn, i)
		if sp := resp.Topics[0].Partitions[0]; sp.ErrorCode != 0 || sp.BaseOffset != c.wantBase {
			t.Fatalf("answer %d (%s): error %d at %d, want %d", i, c.topic, sp.ErrorCode, sp.BaseOffset, c.wantBase)
		}
	}
	ends, err := b.Admin().ListEndOffsets(testCtx(t), "loading", "other")
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]int64{"loading": 6, "other": 4} {
		if o, _ := ends.Lookup(topic, 0); o.Offset != want {
			t.Fatalf("%s ends at %d, want %d", topic, o.Offset, want)
		}
	}
}
