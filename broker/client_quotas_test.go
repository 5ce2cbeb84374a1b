package broker_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// quotaEntry is an AlterClientQuotas entry: components as type, name
// pairs ("" for the default) and the quotas to set (a negative value
// removes the key).
func quotaEntry(components []string, quotas map[string]float64) kmsg.AlterClientQuotasRequestEntry {
	e := kmsg.NewAlterClientQuotasRequestEntry()
	for i := 0; i+1 < len(components); i += 2 {
		c := kmsg.NewAlterClientQuotasRequestEntryEntity()
		c.Type = components[i]
		if components[i+1] != "" {
			c.Name = kmsg.StringPtr(components[i+1])
		}
		e.Entity = append(e.Entity, c)
	}
	for k, v := range quotas {
		op := kmsg.NewAlterClientQuotasRequestEntryOp()
		op.Key, op.Value, op.Remove = k, v, v < 0
		e.Ops = append(e.Ops, op)
	}
	return e
}

// alterQuotas sends one AlterClientQuotas and returns each entry's error
// code.
func alterQuotas(t *testing.T, cl *kgo.Client, validateOnly bool, entries ...kmsg.AlterClientQuotasRequestEntry) []int16 {
	t.Helper()
	req := kmsg.NewPtrAlterClientQuotasRequest()
	req.ValidateOnly, req.Entries = validateOnly, entries
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int16
	for _, e := range resp.Entries {
		codes = append(codes, e.ErrorCode)
	}
	return codes
}

// describeQuotas returns the entities a DescribeClientQuotas filter
// matches, each as "type=name,..." (name "<default>" for the default),
// with its values.
func describeQuotas(t *testing.T, cl *kgo.Client, strict bool, comps ...kmsg.DescribeClientQuotasRequestComponent) (map[string]map[string]float64, int16) {
	t.Helper()
	req := kmsg.NewPtrDescribeClientQuotasRequest()
	req.Components, req.Strict = comps, strict
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, e := range resp.Entries {
		var parts []string
		for _, c := range e.Entity {
			name := "<default>"
			if c.Name != nil {
				name = *c.Name
			}
			parts = append(parts, c.Type+"="+name)
		}
		vals := map[string]float64{}
		for _, v := range e.Values {
			vals[v.Key] = v.Value
		}
		out[strings.Join(parts, ",")] = vals
	}
	return out, resp.ErrorCode
}

func filter(typ string, match int8, name string) kmsg.DescribeClientQuotasRequestComponent {
	c := kmsg.NewDescribeClientQuotasRequestComponent()
	c.EntityType, c.MatchType = typ, kmsg.QuotasMatchType(match)
	if name != "" {
		c.Match = kmsg.StringPtr(name)
	}
	return c
}

// TestClientQuotasAlterAndDescribe: AlterClientQuotas sets and removes
// quotas of users, client ids and both, refuses entities, keys and values
// Kafka refuses, each entry on its own, stores nothing under validate-only; DescribeClientQuotas filters as
// Kafka does (exact, default, any; strict or not).
func TestClientQuotasAlterAndDescribe(t *testing.T) {
	b := brokertest.Start(t)
	cl := b.Client()
	invalid := kerr.InvalidRequest.Code
	codes := alterQuotas(t, cl, false,
		quotaEntry([]string{"client-id", "app"}, map[string]float64{"producer_byte_rate": 1024, "consumer_byte_rate": 2048}),
		quotaEntry([]string{"user", ""}, map[string]float64{"consumer_byte_rate": 4096}),
		quotaEntry([]string{"user", "alice", "client-id", ""}, map[string]float64{"producer_byte_rate": 8192}),
		quotaEntry([]string{"ip", "not-an-ip"}, map[string]float64{"connection_creation_rate": 5}),
		quotaEntry([]string{"client-id", "app"}, map[string]float64{"request_percentage": 50}),
		quotaEntry([]string{"client-id", "app"}, map[string]float64{"connection_creation_rate": 5}),
		quotaEntry([]string{"client-id", "app"}, map[string]float64{"producer_byte_rate": 1.5}),
		quotaEntry([]string{"client-id", "x", "client-id", "y"}, map[string]float64{"producer_byte_rate": 1}),
		quotaEntry([]string{"group", "g"}, map[string]float64{"producer_byte_rate": 1}),
	)
	if want := []int16{0, 0, 0, invalid, 0, invalid, invalid, invalid, invalid}; !slices.Equal(codes, want) {
		t.Fatalf("alter codes %v, want %v", codes, want)
	}
	if codes := alterQuotas(t, cl, true, quotaEntry([]string{"client-id", "validated"}, map[string]float64{"producer_byte_rate": 1})); codes[0] != 0 {
		t.Fatalf("validate-only: %v", codes)
	}
	all := map[string]map[string]float64{
		"client-id=app":                  {"producer_byte_rate": 1024, "consumer_byte_rate": 2048, "request_percentage": 50},
		"user=<default>":                 {"consumer_byte_rate": 4096},
		"user=alice,client-id=<default>": {"producer_byte_rate": 8192},
	}
	check := func(what string, want map[string]map[string]float64, strict bool, comps ...kmsg.DescribeClientQuotasRequestComponent) {
		t.Helper()
		got, code := describeQuotas(t, cl, strict, comps...)
		if code != 0 || len(got) != len(want) {
			t.Fatalf("%s: %v (error %d), want %v", what, got, code, want)
		}
		for k, v := range want {
			g, ok := got[k]
			if !ok || len(g) != len(v) {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
			for q, x := range v {
				if g[q] != x {
					t.Fatalf("%s: %v, want %v", what, got, want)
				}
			}
		}
	}
	pick := func(keys ...string) map[string]map[string]float64 {
		out := map[string]map[string]float64{}
		for _, k := range keys {
			out[k] = all[k]
		}
		return out
	}
	check("everything", all, false)
	check("client-id app", pick("client-id=app"), false, filter("client-id", 0, "app"))
	check("the default user, strictly", pick("user=<default>"), true, filter("user", 1, ""))
	check("any named user", pick("user=alice,client-id=<default>"), false, filter("user", 2, ""))
	check("any named user, strictly", pick(), true, filter("user", 2, ""))
	check("alice with the default client id", pick("user=alice,client-id=<default>"), true, filter("user", 0, "alice"), filter("client-id", 1, ""))
	if _, code := describeQuotas(t, cl, false, filter("user", 2, ""), filter("user", 1, "")); code != invalid {
		t.Fatalf("a filter naming user twice: error %d, want INVALID_REQUEST", code)
	}

	if codes := alterQuotas(t, cl, false, quotaEntry([]string{"client-id", "app"}, map[string]float64{"producer_byte_rate": -1, "consumer_byte_rate": -1, "request_percentage": -1})); codes[0] != 0 {
		t.Fatalf("removing: %v", codes)
	}
	delete(all, "client-id=app")
	check("after removing app's quotas", all, false)
}

// startQuotaBroker starts a broker measuring quotas over 11 samples of
// 100 ms: a client is measured over at least a second.
func startQuotaBroker(t *testing.T) *brokertest.Broker {
	return brokertest.Start(t, func(c *broker.Config) { c.QuotaWindowSize = 100 * time.Millisecond })
}

// TestProduceQuotaThrottlesTheClient: a client id with a
// producer_byte_rate is throttled once past it, its answers carry the
// throttle time, and producing takes at least as long as the quota allows;
// another client id is not throttled.
func TestProduceQuotaThrottlesTheClient(t *testing.T) {
	b := startQuotaBroker(t)
	const topic = "quota"
	createTopic(t, b.Admin(), topic, 1, nil)
	const rate = 100_000
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"client-id", "slow"}, map[string]float64{"producer_byte_rate": rate})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	produce := func(clientID string) time.Duration {
		cl := b.Client(kgo.ClientID(clientID), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
		defer cl.Close()
		start := time.Now()
		value := make([]byte, 10_000)
		for range 40 { // 400 kB: about 300 kB past what a second of the quota allows
			produceSync(t, cl, &kgo.Record{Value: value})
		}
		return time.Since(start)
	}
	if took := produce("slow"); took < 2*time.Second {
		t.Fatalf("400 kB at a quota of %d B/s took %v", rate, took)
	}
	if n := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=produce"); n == 0 {
		t.Fatal("no produce counted as throttled")
	}
	before := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=produce")
	produce("fast")
	if after := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=produce"); after != before {
		t.Fatalf("a client id without a quota was throttled %v times", after-before)
	}
}

// TestAThrottledConnectionIsMuted: a client that ignores the throttle time
// (it pipelines its produce requests without waiting) gets its answers no
// faster: the broker reads nothing from the connection until the throttle
// has passed.
func TestAThrottledConnectionIsMuted(t *testing.T) {
	b := startQuotaBroker(t)
	const topic = "muted"
	createTopic(t, b.Admin(), topic, 1, nil)
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"client-id", ""}, map[string]float64{"producer_byte_rate": 50_000})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	c, err := net.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	formatter := kmsg.NewRequestFormatter(kmsg.FormatterClientID("rude"))
	var frames []byte
	const n = 12
	for i := range n {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 7, 1, 5000
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = plainBatchOf(t, 20_000)
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.Partitions = topic, []kmsg.ProduceRequestTopicPartition{rp}
		req.Topics = []kmsg.ProduceRequestTopic{rt}
		frames = append(frames, formatter.AppendRequest(nil, req, int32(i))...) // the size goes at the start of what it is given
	}
	start := time.Now()
	go c.Write(frames) // the broker reads them as it unmutes
	rd := bufio.NewReader(c)
	var throttled time.Duration
	for i := range n {
		var size [4]byte
		if _, err := io.ReadFull(rd, size[:]); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(rd, body); err != nil {
			t.Fatal(err)
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = 7
		if err := resp.ReadFrom(body[4:]); err != nil {
			t.Fatal(err)
		}
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("answer %d: error %d", i, code)
		}
		throttled += time.Duration(resp.ThrottleMillis) * time.Millisecond
	}
	// 240 kB at 50 kB/s, a second's worth free: the throttles add up to
	// about 3.8 s, and the answers came no faster.
	if took := time.Since(start); throttled < time.Second || took < throttled-500*time.Millisecond {
		t.Fatalf("answers took %v with throttles summing to %v", took, throttled)
	}
}

// TestFetchQuotaThrottlesTheConsumer: a consumer past its
// consumer_byte_rate gets empty answers with the throttle time, reads
// every record all the same, no faster than its quota allows, and in one
// fetch session.
func TestFetchQuotaThrottlesTheConsumer(t *testing.T) {
	b := startQuotaBroker(t)
	const topic = "slowread"
	createTopic(t, b.Admin(), topic, 1, nil)
	p := b.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	value := make([]byte, 10_000)
	for i := range 30 {
		binary.BigEndian.PutUint32(value, uint32(i))
		produceSync(t, p, &kgo.Record{Value: value})
	}
	const rate = 100_000
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"user", "ANONYMOUS", "client-id", "reader"}, map[string]float64{"consumer_byte_rate": rate})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	cons := b.Client(kgo.ClientID("reader"), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30_000), kgo.FetchMaxBytes(30_000))
	defer cons.Close()
	start := time.Now()
	next := 0
	for next < 30 {
		fs := cons.PollFetches(testCtx(t))
		if err := testCtx(t).Err(); err != nil {
			t.Fatalf("read %d of 30: %v", next, err)
		}
		for _, r := range fs.Records() {
			if r.Offset != int64(next) || binary.BigEndian.Uint32(r.Value) != uint32(next) {
				t.Fatalf("record %d: offset %d", next, r.Offset)
			}
			next++
		}
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("300 kB at a quota of %d B/s (100 kB free) read in %v", rate, took)
	}
	if n := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=fetch"); n == 0 {
		t.Fatal("no fetch counted as throttled")
	}
	// A full fetch (a new session) of the client id, throttled: its
	// answer names the session the fetch made, so a client that starts
	// its session again on an answer without one (Java's) does not make
	// one a fetch.
	raw := b.Client(kgo.ClientID("reader"))
	defer raw.Close()
	tds, err := b.Admin().ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes, req.SessionEpoch = 10, 30_000, 0
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes = 30_000
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID, rt.Partitions = topic, tds[topic].ID, []kmsg.FetchRequestTopicPartition{rp}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		resp, err := req.RequestWith(testCtx(t), raw) // at the newest version both speak
		if err == nil && len(resp.Topics) > 0 && resp.Topics[0].Partitions[0].ErrorCode != 0 {
			err = kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
		}
		if err != nil {
			t.Fatal(err)
		}
		if resp.ThrottleMillis > 0 {
			if resp.SessionID == 0 || len(resp.Topics) != 0 {
				t.Fatalf("a throttled full fetch: session %d, %d topics; want its session, no records", resp.SessionID, len(resp.Topics))
			}
			break
		}
		if i == 20 {
			t.Fatal("20 fetches of 30 kB at 100 kB/s, none throttled")
		}
	}
}

// plainBatchOf is a batch of one record of n bytes, without a producer
// id.
func plainBatchOf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()},
		[]recordbatch.Record{{Value: make([]byte, n)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplicationIsNotThrottledByClientQuotas: a consumer_byte_rate of one
// byte a second for every user would stall any consumer, but followers'
// fetches are the brokers' own and are not bound by it: acks=all produce to
// three replicas goes on, and every replica holds the records.
func TestReplicationIsNotThrottledByClientQuotas(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.QuotaWindowSize = 100 * time.Millisecond })
	const topic = "replicated"
	if _, err := c.Admin().CreateTopic(testCtx(t), 1, 3, map[string]*string{"min.insync.replicas": kmsg.StringPtr("3")}, topic); err != nil {
		t.Fatal(err)
	}
	if codes := alterQuotas(t, c.Client(), false, quotaEntry([]string{"user", ""}, map[string]float64{"consumer_byte_rate": 1})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	p := c.Client(kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	value := make([]byte, 10_000)
	for range 50 {
		produceSync(t, p, &kgo.Record{Value: value})
	}
	waitReplicated(t, c, topic, 50)
}

// TestControllerMutationRateThrottles: a client id with a
// controller_mutation_rate spends its burst (quota × samples × window),
// goes past it with the request that crosses it, and is then refused
// THROTTLING_QUOTA_EXCEEDED by the versions that allow it (CreateTopics
// v6+, CreatePartitions v3+, DeleteTopics v5+), older versions being
// throttled instead, until the throttle it was told has passed; another
// client id is not bound.
func TestControllerMutationRateThrottles(t *testing.T) {
	b := startQuotaBroker(t) // 11 samples of 100 ms
	ctx := testCtx(t)
	const rate = 2 // partitions a second: a burst of 2.2
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"client-id", "mutator"}, map[string]float64{"controller_mutation_rate": rate})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	create := func(cl *kgo.Client, name string, partitions int32) (int16, time.Duration) {
		t.Helper()
		req := kmsg.NewPtrCreateTopicsRequest()
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, partitions, 1
		req.Topics, req.TimeoutMillis = []kmsg.CreateTopicsRequestTopic{rt}, 10000
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].ErrorCode, time.Duration(resp.ThrottleMillis) * time.Millisecond
	}
	mutator := func(opts ...kgo.Opt) *kgo.Client {
		return b.Client(append([]kgo.Opt{kgo.ClientID("mutator")}, opts...)...)
	}
	if code, d := create(mutator(), "m1", 5); code != 0 || d <= 0 {
		t.Fatalf("5 partitions from a burst of 2.2: error %d, throttle %v; want created and throttled", code, d)
	}
	// Each from a connection of its own: the first one's is muted for
	// the throttle it was told.
	code, owed := create(mutator(), "m2", 1)
	if code != kerr.ThrottlingQuotaExceeded.Code || owed <= 0 {
		t.Fatalf("over the quota: error %d, throttle %v; want THROTTLING_QUOTA_EXCEEDED", code, owed)
	}
	if code, d := create(mutator(kgo.MaxVersions(kversion.V2_6_0())), "m3", 1); code != 0 || d <= 0 {
		t.Fatalf("over the quota, CreateTopics v5: error %d, throttle %v; want created and throttled", code, d)
	}
	if code, d := create(b.Client(kgo.ClientID("free")), "m4", 20); code != 0 || d != 0 {
		t.Fatalf("a client id without a quota: error %d, throttle %v", code, d)
	}
	del := kmsg.NewPtrDeleteTopicsRequest()
	dt := kmsg.NewDeleteTopicsRequestTopic()
	dt.Topic = kmsg.StringPtr("m1")
	del.Topics, del.TimeoutMillis = []kmsg.DeleteTopicsRequestTopic{dt}, 10000
	if resp, err := del.RequestWith(ctx, mutator()); err != nil || resp.Topics[0].ErrorCode != kerr.ThrottlingQuotaExceeded.Code {
		t.Fatalf("deleting over the quota: %v %+v", err, resp)
	}
	grow := kmsg.NewPtrCreatePartitionsRequest()
	gt := kmsg.NewCreatePartitionsRequestTopic()
	gt.Topic, gt.Count = "m4", 21
	grow.Topics, grow.TimeoutMillis = []kmsg.CreatePartitionsRequestTopic{gt}, 10000
	if resp, err := grow.RequestWith(ctx, mutator()); err != nil || resp.Topics[0].ErrorCode != kerr.ThrottlingQuotaExceeded.Code {
		t.Fatalf("adding partitions over the quota: %v %+v", err, resp)
	}
	// What the client owes now (m3 took one more) is repaid at 2 a
	// second; then it goes ahead.
	time.Sleep(3 * time.Second)
	if resp, err := del.RequestWith(ctx, mutator()); err != nil || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("deleting once the throttle passed: %v %+v", err, resp)
	}
	if n := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=mutation"); n == 0 {
		t.Fatal("no mutation counted as throttled")
	}
}

// TestRequestPercentageThrottles: a client id with a request_percentage
// (KIP-124) is throttled once the broker has spent more than that share
// of a thread's time on its requests: its answers carry a throttle time,
// counted in the metrics; another client id is not throttled.
func TestRequestPercentageThrottles(t *testing.T) {
	b := startQuotaBroker(t)
	// 0.1%: a millisecond of the broker's time a second.
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"client-id", "busy"}, map[string]float64{"request_percentage": 0.1})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	throttles := func(clientID string, n int) (int, time.Duration) {
		cl := b.Client(kgo.ClientID(clientID))
		defer cl.Close()
		var count int
		var sum time.Duration
		for range n {
			resp, err := kmsg.NewPtrMetadataRequest().RequestWith(testCtx(t), cl)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ThrottleMillis > 0 {
				count++
				sum += time.Duration(resp.ThrottleMillis) * time.Millisecond
			}
			if count >= 3 {
				break
			}
		}
		return count, sum
	}
	if n, d := throttles("busy", 2000); n == 0 {
		t.Fatal("2000 Metadata requests at request_percentage=0.1 were never throttled")
	} else {
		t.Logf("%d answers throttled, %v in all", n, d)
	}
	if n := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=request"); n == 0 {
		t.Fatal("no request counted as throttled")
	}
	if n, _ := throttles("idle", 200); n != 0 {
		t.Fatalf("a client id without a quota was throttled %d times", n)
	}
}
