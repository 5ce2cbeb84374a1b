package broker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// series are the gathered samples of one scrape: family name, then the
// labels as a sorted "k=v,k=v" string, to the value (a histogram's count).
type series map[string]map[string]float64

func gather(t *testing.T, reg *prometheus.Registry) series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := series{}
	for _, mf := range mfs {
		m := map[string]float64{}
		for _, mt := range mf.GetMetric() {
			var kv []string
			for _, lp := range mt.GetLabel() {
				kv = append(kv, lp.GetName()+"="+lp.GetValue())
			}
			m[strings.Join(kv, ",")] = metricValue(mt)
		}
		out[mf.GetName()] = m
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// histogramSum is the sum of the observations of an unlabelled histogram.
func histogramSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}

// get returns a sample's value and whether it exists.
func (s series) get(name, labels string) (float64, bool) {
	v, ok := s[name][labels]
	return v, ok
}

// sum adds the samples of name that have every label given ("api=Fetch").
func (s series) sum(name string, labels ...string) float64 {
	var total float64
next:
	for l, v := range s[name] {
		have := strings.Split(l, ",")
		for _, want := range labels {
			if !slices.Contains(have, want) {
				continue next
			}
		}
		total += v
	}
	return total
}

// withLabel reports whether any sample of name has a label with this text
// ("topic=gone").
func (s series) withLabel(name, label string) bool {
	for l := range s[name] {
		for _, kv := range strings.Split(l, ",") {
			if kv == label {
				return true
			}
		}
	}
	return false
}

func TestMetricsAfterTraffic(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx := testCtx(t)
	createTopic(t, adm, "m", 1, nil)
	cl := b.Client()
	for i := 0; i < 10; i++ {
		produceSync(t, cl, &kgo.Record{Topic: "m", Value: []byte("value")})
	}
	consumeN(t, b, "m", 10)
	// A group commits offset 4 of 10: its lag is 6.
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "m", Partition: 0, At: 4, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "g", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}
	// A request with an error: produce to a partition the topic lacks.
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = 1, 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "m"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = 7
	rp.Records = idempotentBatch(-1, -1, -1, 1)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	if _, err := req.RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}

	var s series
	brokertest.WaitFor(t, 10*time.Second, "the group lag series", func() (bool, string) {
		s = gather(t, b.Registry)
		v, ok := s.get("shale_consumer_group_lag", "group=g,partition=0,topic=m")
		return ok && v == 6, "shale_consumer_group_lag{group=g,topic=m,partition=0} is not 6"
	})
	positive := func(name, labels string) {
		t.Helper()
		if v, ok := s.get(name, labels); !ok || v <= 0 {
			t.Errorf("%s{%s} = %v (present %v), want > 0; have %v", name, labels, v, ok, s[name])
		}
	}
	if v := s.sum("shale_kafka_requests_total", "api=Produce", "error=NONE"); v != 10 {
		t.Errorf("produce requests without error: %v, want 10; have %v", v, s["shale_kafka_requests_total"])
	}
	// By topic id (v13) or by name.
	if v := s.sum("shale_kafka_requests_total", "api=Produce", "error=UNKNOWN_TOPIC_ID") +
		s.sum("shale_kafka_requests_total", "api=Produce", "error=UNKNOWN_TOPIC_OR_PARTITION"); v != 1 {
		t.Errorf("produce requests with an unknown partition: %v, want 1; have %v", v, s["shale_kafka_requests_total"])
	}
	// ApiVersions at a version the broker does not serve is answered
	// with UNSUPPORTED_VERSION (franz-go then retries at ours).
	for l := range s["shale_kafka_requests_total"] {
		if strings.Contains(l, "error=UNSUPPORTED_VERSION") && !strings.Contains(l, "version=unsupported") {
			t.Errorf("an unsupported version is labelled by its number: %s", l)
		}
	}
	positive("shale_kafka_request_duration_seconds", "api=Fetch")
	positive("shale_kafka_request_duration_seconds", "api=OffsetCommit")
	positive("shale_produced_bytes_total", "topic=m")
	positive("shale_produced_records_total", "topic=m")
	positive("shale_fetched_bytes_total", "source=local,topic=m")
	if v, _ := s.get("shale_partition_high_watermark", "partition=0,topic=m"); v != 10 {
		t.Errorf("high watermark of m-0 = %v, want 10", v)
	}
	if v, ok := s.get("shale_partition_under_replicated", "partition=0,topic=m"); !ok || v != 0 {
		t.Errorf("under-replicated m-0 = %v (present %v), want 0", v, ok)
	}
	if v, ok := s.get("shale_partition_under_min_isr", "partition=0,topic=m"); !ok || v != 0 {
		t.Errorf("under min ISR m-0 = %v (present %v), want 0", v, ok)
	}
	if v, _ := s.get("shale_produced_records_total", "topic=m"); v != 10 {
		t.Errorf("produced records of m = %v, want 10", v)
	}
	// franz-go produces with acks=all: on a leader alone, each produce
	// waited for a sync of the log's group commit. A sync observes its
	// two series one after the other, so a scrape between them (a sync of
	// the group's commits, say) sees one more in the first: read again.
	var flushes float64
	brokertest.WaitFor(t, 10*time.Second, "as many group-commit syncs timed as counted by their waiters", func() (bool, string) {
		s := gather(t, b.Registry)
		flushes, _ = s.get("shale_log_flush_duration_seconds", "")
		w, _ := s.get("shale_log_flush_waiters", "")
		return flushes >= 1 && w == flushes, fmt.Sprintf("%v syncs timed and %v counted by their waiters, want as many, at least one", flushes, w)
	})
	if answered := histogramSum(t, b.Registry, "shale_log_flush_waiters"); answered < 1 {
		t.Errorf("%v group-commit syncs answered %v waiters, want some", flushes, answered)
	}

	// A deleted topic's series go.
	if _, err := adm.DeleteTopics(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, "the deleted topic's series to go", func() (bool, string) {
		s = gather(t, b.Registry)
		for _, name := range []string{"shale_produced_bytes_total", "shale_produced_records_total", "shale_fetched_bytes_total",
			"shale_partition_high_watermark", "shale_partition_under_replicated", "shale_consumer_group_lag"} {
			if s.withLabel(name, "topic=m") {
				return false, name + " still has topic m"
			}
		}
		return true, ""
	})
}
