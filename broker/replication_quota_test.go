package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// quotaCtx is longer than testCtx: a throttled copy takes its time.
func quotaCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// produceQuotaData writes n bytes of uncompressed 16 KiB records to
// partition 0 of topic.
func produceQuotaData(t *testing.T, ctx context.Context, c *brokertest.Cluster, topic string, n int) {
	t.Helper()
	prod := c.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerBatchCompression(kgo.NoCompression()))
	defer prod.Close()
	value := make([]byte, 16<<10)
	var recs []*kgo.Record
	for i := 0; i < n/len(value); i++ {
		recs = append(recs, &kgo.Record{Value: value})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func alterBroker(t *testing.T, ctx context.Context, adm *kadm.Client, op kadm.IncrementalOp, name, value string, brokers ...int32) {
	t.Helper()
	ac := kadm.AlterConfig{Op: op, Name: name}
	if op == kadm.SetConfig {
		ac.Value = kmsg.StringPtr(value)
	}
	resps, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{ac}, brokers...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("altering %s on brokers %v: %v (%s)", name, brokers, r.Err, r.ErrMessage)
		}
	}
}

func alterTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic, name, value string) {
	t.Helper()
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: name, Value: kmsg.StringPtr(value)}}, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("setting %s=%s on %s: %v (%s)", name, value, topic, r.Err, r.ErrMessage)
		}
	}
}

// describedBroker returns a broker resource's configs by name (id -1: the
// cluster-wide default).
func describedBroker(t *testing.T, ctx context.Context, adm *kadm.Client, id int32) map[string]kadm.Config {
	t.Helper()
	var ids []int32
	if id >= 0 {
		ids = append(ids, id)
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, ids...)
	if err != nil {
		t.Fatal(err)
	}
	if len(rcs) != 1 || rcs[0].Err != nil {
		t.Fatalf("describing broker %d: %+v", id, rcs)
	}
	out := map[string]kadm.Config{}
	for _, c := range rcs[0].Configs {
		out[c.Key] = c
	}
	return out
}

func wantConfig(t *testing.T, got map[string]kadm.Config, name, value string, src kmsg.ConfigSource) {
	t.Helper()
	c, ok := got[name]
	if !ok || c.MaybeValue() != value || c.Source != src {
		t.Fatalf("%s = %q from %v (present %v), want %q from %v", name, c.MaybeValue(), c.Source, ok, value, src)
	}
}

func quotaSample(t *testing.T, c *brokertest.Cluster, id int32, name, side string) float64 {
	t.Helper()
	v, _ := gather(t, c.Brokers[id].Registry).get(name, "side="+side)
	return v
}

// TestFollowerThrottleHoldsACatchingUpReplicaUntilRemoved: a replica a
// reassignment adds on broker 2, listed in the topic's
// follower.replication.throttled.replicas, is fetched by broker 2 at
// most at the follower.replication.throttled.rate set dynamically for
// broker 2 (a bound from above only, over the copy's duration plus one
// second of burst and one fetch); the throttle is seen engaged in the
// refusal metric. Deleting the rate lets the copy finish and the replica
// join the ISR. DescribeConfigs shows each rate with its source: the
// broker's own dynamic value, the cluster-wide default, Kafka's default.
func TestFollowerThrottleHoldsACatchingUpReplicaUntilRemoved(t *testing.T) {
	const (
		rate    = 64 << 10
		data    = 3 << 20
		oneRead = 1 << 20 // a follower's partition max bytes
	)
	c := brokertest.StartCluster(t, 3)
	ctx := quotaCtx(t)
	adm := kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	createAssigned(t, c.Client(), "held", []int32{0, 1})
	produceQuotaData(t, ctx, c, "held", data)

	alterBroker(t, ctx, adm, kadm.SetConfig, "follower.replication.throttled.rate", fmt.Sprint(rate), 2)
	alterBroker(t, ctx, adm, kadm.SetConfig, "leader.replication.throttled.rate", "1073741824") // the default, high
	alterTopic(t, ctx, adm, "held", "follower.replication.throttled.replicas", "0:2")
	got := describedBroker(t, ctx, adm, 2)
	wantConfig(t, got, "follower.replication.throttled.rate", fmt.Sprint(rate), kmsg.ConfigSourceDynamicBrokerConfig)
	wantConfig(t, got, "leader.replication.throttled.rate", "1073741824", kmsg.ConfigSourceDynamicDefaultBrokerConfig)
	def := describedBroker(t, ctx, adm, -1)
	wantConfig(t, def, "leader.replication.throttled.rate", "1073741824", kmsg.ConfigSourceDynamicDefaultBrokerConfig)
	if _, ok := def["follower.replication.throttled.rate"]; ok || len(def) != 1 {
		t.Fatalf("the cluster-wide default describes %v, want only what was set", def)
	}
	brokertest.WaitFor(t, 10*time.Second, "broker 2 applies its follower rate", func() (bool, string) {
		v := quotaSample(t, c, 2, "shale_replication_throttled_rate_bytes", "follower")
		return v == rate, fmt.Sprintf("rate gauge %v", v)
	})

	var req kadm.AlterPartitionAssignmentsReq
	req.Assign("held", 0, []int32{0, 1, 2})
	start := time.Now()
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp["held"][0].Err; err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 60*time.Second, "broker 2's follower throttle engages", func() (bool, string) {
		copied := quotaSample(t, c, 2, "shale_replication_throttled_bytes_total", "follower")
		bound := rate*(1+time.Since(start).Seconds()) + oneRead // read after the bytes: the bound only loosens
		if copied > bound {
			t.Fatalf("broker 2 fetched %v throttled bytes in %s, more than the bound %v", copied, time.Since(start).Round(time.Millisecond), bound)
		}
		refused := quotaSample(t, c, 2, "shale_replication_throttled_refusals_total", "follower")
		return refused > 0 && copied > 0, fmt.Sprintf("%v bytes copied, %v refusals", copied, refused)
	})
	if _, _, isr := partitionReplicas(t, adm, "held"); slices.Contains(isr, 2) {
		t.Fatalf("broker 2 joined the ISR %v while its throttle held it back", isr)
	}

	alterBroker(t, ctx, adm, kadm.DeleteConfig, "follower.replication.throttled.rate", "", 2)
	wantConfig(t, describedBroker(t, ctx, adm, 2), "follower.replication.throttled.rate", "9223372036854775807", kmsg.ConfigSourceDefaultConfig)
	brokertest.WaitFor(t, 60*time.Second, "the added replica joins the ISR once the throttle is removed", func() (bool, string) {
		_, reps, isr := partitionReplicas(t, adm, "held")
		return slices.Contains(isr, 2), fmt.Sprintf("replicas %v isr %v", reps, isr)
	})
	if copied := quotaSample(t, c, 2, "shale_replication_throttled_bytes_total", "follower"); copied < data {
		t.Fatalf("broker 2 counted %v throttled bytes, less than the %d copied", copied, data)
	}
}

// TestLeaderThrottleFromDynamicDefaultAndWildcard: with
// leader.replication.throttled.rate set for all brokers and the topic's
// leader.replication.throttled.replicas "*", a follower that was stopped
// (and so left the ISR) catches up from its leader no faster than the
// rate, the leader's refusals showing the throttle engaged, while the
// in-sync follower stays in the ISR. Removing the rate lets it finish.
func TestLeaderThrottleFromDynamicDefaultAndWildcard(t *testing.T) {
	const (
		rate    = 64 << 10
		data    = 4 << 20
		oneRead = 1 << 20
	)
	c := brokertest.StartCluster(t, 3)
	ctx := quotaCtx(t)
	adm := kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	createAssigned(t, c.Client(), "lagging", []int32{0, 1, 2})
	c.Stop(2)
	brokertest.WaitFor(t, 30*time.Second, "the stopped broker leaves the ISR", func() (bool, string) {
		_, _, isr := partitionReplicas(t, adm, "lagging")
		return !slices.Contains(isr, 2), fmt.Sprintf("isr %v", isr)
	})
	produceQuotaData(t, ctx, c, "lagging", data)
	alterBroker(t, ctx, adm, kadm.SetConfig, "leader.replication.throttled.rate", fmt.Sprint(rate))
	alterTopic(t, ctx, adm, "lagging", "leader.replication.throttled.replicas", "*")
	brokertest.WaitFor(t, 10*time.Second, "broker 0 applies the default leader rate", func() (bool, string) {
		v := quotaSample(t, c, 0, "shale_replication_throttled_rate_bytes", "leader")
		return v == rate, fmt.Sprintf("rate gauge %v", v)
	})
	wantConfig(t, describedBroker(t, ctx, adm, 0), "leader.replication.throttled.rate", fmt.Sprint(rate), kmsg.ConfigSourceDynamicDefaultBrokerConfig)

	before := quotaSample(t, c, 0, "shale_replication_throttled_bytes_total", "leader")
	start := time.Now()
	c.Start(2)
	brokertest.WaitFor(t, 60*time.Second, "broker 0's leader throttle engages", func() (bool, string) {
		sent := quotaSample(t, c, 0, "shale_replication_throttled_bytes_total", "leader") - before
		bound := rate*(1+time.Since(start).Seconds()) + 2*oneRead // one read each for broker 1 and 2
		if sent > bound {
			t.Fatalf("broker 0 sent %v throttled bytes in %s, more than the bound %v", sent, time.Since(start).Round(time.Millisecond), bound)
		}
		refused := quotaSample(t, c, 0, "shale_replication_throttled_refusals_total", "leader")
		return refused > 0 && sent > 0, fmt.Sprintf("%v bytes sent, %v refusals", sent, refused)
	})
	if _, _, isr := partitionReplicas(t, adm, "lagging"); !slices.Contains(isr, 1) || slices.Contains(isr, 2) {
		t.Fatalf("isr %v: want the in-sync follower 1 kept and the throttled 2 still out", isr)
	}

	alterBroker(t, ctx, adm, kadm.DeleteConfig, "leader.replication.throttled.rate", "")
	brokertest.WaitFor(t, 60*time.Second, "the restarted replica rejoins the ISR once the throttle is removed", func() (bool, string) {
		_, reps, isr := partitionReplicas(t, adm, "lagging")
		return slices.Contains(isr, 2), fmt.Sprintf("replicas %v isr %v", reps, isr)
	})
}
