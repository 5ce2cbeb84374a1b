package broker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

const tieredCompactedMsg = "Tiered storage is not supported on compacted topics (cleanup.policy=compact)"

// describedConfig reads one config of a topic back with DescribeConfigs.
func describedConfig(t *testing.T, adm *kadm.Client, topic, name string) kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe %s: %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == name {
			return c
		}
	}
	t.Fatalf("%s: no config %s", topic, name)
	return kadm.Config{}
}

// createErr creates a topic and returns the error of its creation, with
// the broker's message.
func createErr(t *testing.T, adm *kadm.Client, topic string, configs map[string]*string) (string, error) {
	t.Helper()
	resp, err := adm.CreateTopic(testCtx(t), 1, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	return resp.ErrMessage, err
}

// TestCompactCleanupPolicyConfigs: cleanup.policy takes compact, alone or
// with delete, on creation and on change (IncrementalAlterConfigs, its
// APPEND, and AlterConfigs), and reads back as set; an unknown item is
// INVALID_CONFIG. A compacted topic's remote.storage.enable defaults to
// false.
func TestCompactCleanupPolicyConfigs(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	str := kadm.StringPtr

	createTopic(t, adm, "compacted", 1, map[string]*string{"cleanup.policy": str("compact")})
	if c := describedConfig(t, adm, "compacted", "cleanup.policy"); c.MaybeValue() != "compact" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("cleanup.policy: %+v", c)
	}
	if c := describedConfig(t, adm, "compacted", "remote.storage.enable"); c.MaybeValue() != "false" || c.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("remote.storage.enable of a compacted topic: %+v", c)
	}
	createTopic(t, adm, "both", 1, map[string]*string{"cleanup.policy": str("compact,delete")})
	if c := describedConfig(t, adm, "both", "cleanup.policy"); c.MaybeValue() != "compact,delete" {
		t.Fatalf("cleanup.policy: %+v", c)
	}
	createTopic(t, adm, "both-spaced", 1, map[string]*string{"cleanup.policy": str("delete, compact")})

	for _, bad := range []string{"compact,bogus", "compact,", ""} {
		if msg, err := createErr(t, adm, "bad", map[string]*string{"cleanup.policy": str(bad)}); !errors.Is(err, kerr.InvalidConfig) {
			t.Fatalf("cleanup.policy=%q: %v %s, want INVALID_CONFIG", bad, err, msg)
		}
	}

	// delete -> compact (the topic untiered: see TestCompactTieredRefused
	// for a tiered one).
	createTopic(t, adm, "later", 1, map[string]*string{"remote.storage.enable": str("false")})
	if msg, err := alterTopicConfigs(t, adm, "later", map[string]*string{"cleanup.policy": str("compact")}); err != nil {
		t.Fatalf("alter to compact: %v %s", err, msg)
	}
	if c := describedConfig(t, adm, "later", "cleanup.policy"); c.MaybeValue() != "compact" {
		t.Fatalf("after alter: %+v", c)
	}
	if msg, err := alterTopicConfigs(t, adm, "later", map[string]*string{"cleanup.policy": str("compact,bogus")}); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("alter to compact,bogus: %v %s", err, msg)
	}
	// APPEND delete to it.
	rs, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: str("delete")}}, "later")
	if err != nil || rs[0].Err != nil {
		t.Fatalf("append delete: %v %v", err, rs)
	}
	if c := describedConfig(t, adm, "later", "cleanup.policy"); c.MaybeValue() != "compact,delete" {
		t.Fatalf("after append: %+v", c)
	}
	// AlterConfigs (the whole set): compact, with remote storage off.
	rs, err = adm.AlterTopicConfigsState(testCtx(t), []kadm.AlterConfig{{Name: "cleanup.policy", Value: str("compact")}, {Name: "remote.storage.enable", Value: str("false")}}, "later")
	if err != nil || rs[0].Err != nil {
		t.Fatalf("AlterConfigs: %v %v", err, rs)
	}
	if c := describedConfig(t, adm, "later", "cleanup.policy"); c.MaybeValue() != "compact" {
		t.Fatalf("after AlterConfigs: %+v", c)
	}
}

// TestCompactTieredConfigs: a compacted topic is tiered only when
// remote.storage.enable says so: created with it, turned on for it, or by
// the broker's remote.log.storage.system.enable; without, it is not
// (Kafka's default). Making a tiered topic compacted without saying
// whether it stays tiered is refused (the compacted default would strand
// its remote log), unless the change turns its remote storage off and
// deletes its remote log.
func TestCompactTieredConfigs(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: objectstore.NewMem(), UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
	})
	adm := b.Admin()
	str := kadm.StringPtr
	tiered := func(topic string, want bool) {
		t.Helper()
		waitFor(t, topic+"'s partition open", 10*time.Second, func() bool {
			st := b.B.TierStatus(topic)
			return len(st) == 1 && st[0].Tiered == want
		})
	}
	for _, policy := range []string{"compact", "compact,delete"} {
		topic := "tiered-" + strings.ReplaceAll(policy, ",", "-")
		createTopic(t, adm, topic, 1, map[string]*string{"cleanup.policy": str(policy), "remote.storage.enable": str("true")})
		tiered(topic, true)
	}

	// Compacted, not tiered by default; then turned on.
	createTopic(t, adm, "compacted", 1, map[string]*string{"cleanup.policy": str("compact")})
	tiered("compacted", false)
	// Described as it applies: false, and so is its default synonym.
	if c := describedConfig(t, adm, "compacted", "remote.storage.enable"); c.MaybeValue() != "false" ||
		len(c.Synonyms) == 0 || c.Synonyms[len(c.Synonyms)-1].Value == nil || *c.Synonyms[len(c.Synonyms)-1].Value != "false" {
		t.Fatalf("a compacted topic's remote.storage.enable is described as %+v", c)
	}
	if msg, err := alterTopicConfigs(t, adm, "compacted", map[string]*string{"remote.storage.enable": str("true")}); err != nil {
		t.Fatalf("turning remote storage on for a compacted topic: %v %s", err, msg)
	}

	// Tiered by default: made compacted without a word on tiering,
	// refused; with remote.storage.enable=true, it stays tiered.
	createTopic(t, adm, "tiered-by-default", 1, nil)
	tiered("tiered-by-default", true)
	msg, err := alterTopicConfigs(t, adm, "tiered-by-default", map[string]*string{"cleanup.policy": str("compact,delete")})
	if !errors.Is(err, kerr.InvalidConfig) || !strings.Contains(msg, tieredCompactedMsg) {
		t.Fatalf("a topic tiered by default made compacted: %v %q, want INVALID_CONFIG: %s", err, msg, tieredCompactedMsg)
	}
	if c := describedConfig(t, adm, "tiered-by-default", "cleanup.policy"); c.MaybeValue() != "delete" {
		t.Fatalf("cleanup.policy changed by a refused alter: %+v", c)
	}
	if msg, err := alterTopicConfigs(t, adm, "tiered-by-default", map[string]*string{"cleanup.policy": str("compact"), "remote.storage.enable": str("true")}); err != nil {
		t.Fatalf("compact and stay tiered: %v %s", err, msg)
	}
	// Turning remote storage off in the same change: the remote log is
	// deleted (KIP-950), and the topic compacted.
	createTopic(t, adm, "untiered-later", 1, nil)
	tiered("untiered-later", true)
	if msg, err := alterTopicConfigs(t, adm, "untiered-later", map[string]*string{"cleanup.policy": str("compact"),
		"remote.storage.enable": str("false"), "remote.log.delete.on.disable": str("true")}); err != nil {
		t.Fatalf("compact with remote storage turned off: %v %s", err, msg)
	}
}

// TestCompactBrokerDefaultsTiered: the broker's defaults count as the
// topic's own values: a compacted topic on a broker whose topics tier by
// its remote.log.storage.system.enable is tiered, and so is a topic with
// remote.storage.enable=true on a broker whose log.cleanup.policy is
// compact.
func TestCompactBrokerDefaultsTiered(t *testing.T) {
	str := kadm.StringPtr
	b := brokertest.Start(t, func(c *broker.Config) {
		c.TopicDefaults = map[string]string{"remote.log.storage.system.enable": "true"}
	})
	createTopic(t, b.Admin(), "c", 1, map[string]*string{"cleanup.policy": str("compact")})
	if c := describedConfig(t, b.Admin(), "c", "remote.storage.enable"); c.MaybeValue() != "true" {
		t.Fatalf("remote.storage.enable under remote.log.storage.system.enable=true: %+v", c)
	}
	b = brokertest.Start(t, func(c *broker.Config) {
		c.TopicDefaults = map[string]string{"log.cleanup.policy": "compact"}
	})
	createTopic(t, b.Admin(), "t", 1, map[string]*string{"remote.storage.enable": str("true")})
	createTopic(t, b.Admin(), "by-default", 1, nil)
	if c := describedConfig(t, b.Admin(), "by-default", "cleanup.policy"); c.MaybeValue() != "compact" || c.Source != kmsg.ConfigSourceStaticBrokerConfig {
		t.Fatalf("cleanup.policy: %+v", c)
	}
}

// TestCompactProduceRequiresKeys: a compacted topic refuses a record
// without a key with INVALID_RECORD and a message saying why, counted as
// a no_key refusal, and takes keyed ones; a delete topic takes both.
func TestCompactProduceRequiresKeys(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx := testCtx(t)
	for topic, policy := range map[string]string{"compacted": "compact", "both": "compact,delete", "plain": "delete"} {
		createTopic(t, adm, topic, 1, map[string]*string{"cleanup.policy": kadm.StringPtr(policy)})
	}
	cl := b.Client(kgo.ProducerLinger(0), kgo.RecordRetries(1))
	for _, topic := range []string{"compacted", "both"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: nil, Value: []byte("v")}).FirstErr(); !errors.Is(err, kerr.InvalidRecord) {
			t.Fatalf("%s: a record without a key: %v, want INVALID_RECORD", topic, err)
		}
		produceSync(t, cl, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")})
		// An empty key is a key.
		produceSync(t, cl, &kgo.Record{Topic: topic, Key: []byte{}, Value: []byte("v")})
	}
	produceSync(t, cl, &kgo.Record{Topic: "plain", Key: nil, Value: []byte("v")})

	// The answer names the cause; a batch with one keyless record among
	// keyed ones is refused whole.
	td, err := adm.ListTopics(ctx, "compacted")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()},
		[]recordbatch.Record{{Key: []byte("a"), Value: []byte("1")}, {Value: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = 1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = "compacted", td["compacted"].ID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Topics[0].Partitions[0]
	if sp.ErrorCode != kerr.InvalidRecord.Code || sp.ErrorMessage == nil || !strings.Contains(*sp.ErrorMessage, "key") {
		t.Fatalf("keyless record in a batch: %v %v", kerr.ErrorForCode(sp.ErrorCode), sp.ErrorMessage)
	}
	if n := gather(t, b.Registry).sum("shale_produce_batches_refused_total", "reason=no_key"); n < 3 {
		t.Fatalf("%v refusals counted as no_key, want 3", n)
	}
	// Nothing keyless reached the log: two keyed records each.
	offs, err := adm.ListEndOffsets(ctx, "compacted", "both")
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"compacted", "both"} {
		if o, _ := offs.Lookup(topic, 0); o.Offset != 2 {
			t.Fatalf("%s ends at %d, want 2", topic, o.Offset)
		}
	}
}

// TestCompactDeleteRecordsPolicy: DeleteRecords on a topic whose
// cleanup.policy lacks delete is POLICY_VIOLATION, as in Kafka; with
// compact,delete it deletes as usual.
func TestCompactDeleteRecordsPolicy(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx := testCtx(t)
	createTopic(t, adm, "compacted", 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	createTopic(t, adm, "both", 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact,delete")})
	cl := b.Client(kgo.ProducerLinger(0))
	for _, topic := range []string{"compacted", "both"} {
		for i := 0; i < 5; i++ {
			produceSync(t, cl, &kgo.Record{Topic: topic, Key: []byte{byte('a' + i)}, Value: []byte("v")})
		}
	}
	resp, err := adm.DeleteRecords(ctx, kadm.Offsets{"compacted": {0: {At: 3}}, "both": {0: {At: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := resp.Lookup("compacted", 0); !errors.Is(r.Err, kerr.PolicyViolation) {
		t.Fatalf("delete records of a compact-only topic: %v, want POLICY_VIOLATION", r.Err)
	}
	if r, _ := resp.Lookup("both", 0); r.Err != nil || r.LowWatermark != 3 {
		t.Fatalf("delete records of a compact,delete topic: %v, low watermark %d", r.Err, r.LowWatermark)
	}
	starts, err := adm.ListStartOffsets(ctx, "compacted", "both")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := starts.Lookup("compacted", 0); o.Offset != 0 {
		t.Fatalf("compact-only topic starts at %d after a refused deletion", o.Offset)
	}
	if o, _ := starts.Lookup("both", 0); o.Offset != 3 {
		t.Fatalf("compact,delete topic starts at %d, want 3", o.Offset)
	}
}
