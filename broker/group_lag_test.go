package broker_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// On a three-broker cluster, a group's lag covers every partition it
// committed offsets for, whichever broker leads it: the coordinator asks
// the other leaders for their high watermarks. A leader that does not
// answer leaves only its partitions out, and the scrape does not wait for
// it past the bound.
func TestConsumerGroupLagCoversPartitionsLedElsewhere(t *testing.T) {
	var blackhole atomic.Pointer[string]
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.DialPeer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if p := blackhole.Load(); p != nil && *p == addr {
				mine, theirs := net.Pipe()
				t.Cleanup(func() { theirs.Close() })
				return mine, nil // accepts the request, never answers
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := c.Client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)

	// One partition on each broker.
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "spread", -1, -1
	for id := int32(0); id < 3; id++ {
		a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		a.Partition, a.Replicas = id, []int32{id}
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("create: %v %+v", err, resp)
	}
	produce := func(part int32, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "spread", Partition: part, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p := int32(0); p < 3; p++ {
		produce(p, 5*int(p+1)) // high watermarks 5, 10, 15
	}
	var offs kadm.Offsets
	for p := int32(0); p < 3; p++ {
		offs.Add(kadm.Offset{Topic: "spread", Partition: p, At: 2, LeaderEpoch: -1})
	}
	if cr, err := adm.CommitOffsets(ctx, "g", offs); err != nil || cr.Error() != nil {
		t.Fatalf("commit: %v %v", err, cr.Error())
	}
	fc := adm.FindGroupCoordinators(ctx, "g")
	coord := fc["g"].NodeID
	if fc["g"].Err != nil || coord < 0 || coord > 2 {
		t.Fatalf("coordinator of g: %+v", fc["g"])
	}
	lags := func() map[string]float64 {
		out := map[string]float64{}
		for l, v := range gather(t, c.Brokers[coord].Registry)["shale_consumer_group_lag"] {
			out[l] = v
		}
		return out
	}
	want := func(lag map[int32]float64) func() (bool, string) {
		return func() (bool, string) {
			got := lags()
			for p, v := range lag {
				l := "group=g,partition=" + strconv.Itoa(int(p)) + ",topic=spread"
				if got[l] != v {
					return false, fmt.Sprintf("coordinator %d reports %v, want %v", coord, got, lag)
				}
			}
			return len(got) == len(lag), fmt.Sprintf("coordinator %d reports %v, want %v", coord, got, lag)
		}
	}
	brokertest.WaitFor(t, 15*time.Second, "the lag of every partition", want(map[int32]float64{0: 3, 1: 8, 2: 13}))

	// A partition led elsewhere moves on: its lag follows within the
	// answers' reuse time.
	other := (coord + 1) % 3
	produce(other, 4)
	moved := map[int32]float64{0: 3, 1: 8, 2: 13}
	moved[other] += 4
	brokertest.WaitFor(t, 15*time.Second, "the lag after more records", want(moved))

	// A leader that accepts the connection and never answers: its
	// partition is left out, the others stay, and the scrape is bounded.
	silent := (coord + 2) % 3
	addr := c.Brokers[silent].Addr
	blackhole.Store(&addr)
	time.Sleep(6 * time.Second) // the cached answers age out
	start := time.Now()
	got := lags()
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("a scrape with a silent leader took %v", took)
	}
	if _, ok := got["group=g,partition="+strconv.Itoa(int(silent))+",topic=spread"]; ok || len(got) != 2 {
		t.Errorf("with leader %d silent the coordinator reports %v, want the two other partitions", silent, got)
	}
}

// Many groups committing offsets do not grow the lag series past
// MaxGroupLagSeries: groups in name order keep per-partition series while
// they fit, the next are summed per topic, and the gauge counts the
// per-partition series left out.
func TestConsumerGroupLagSeriesAreBounded(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxGroupLagSeries = 50 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := b.Admin()
	createTopic(t, adm, "lagged", 4, nil)
	cl := b.Client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for part := int32(0); part < 4; part++ {
		for i := 0; i < 10; i++ {
			produceSync(t, cl, &kgo.Record{Topic: "lagged", Partition: part, Value: []byte("v")})
		}
	}
	// 200 groups, each committing offset 3 on the 4 partitions: 800
	// (group, partition) pairs, lag 7 each.
	const groups = 200
	for g := 0; g < groups; g++ {
		var offs kadm.Offsets
		for part := int32(0); part < 4; part++ {
			offs.Add(kadm.Offset{Topic: "lagged", Partition: part, At: 3, LeaderEpoch: -1})
		}
		if resp, err := adm.CommitOffsets(ctx, fmt.Sprintf("g%03d", g), offs); err != nil || resp.Error() != nil {
			t.Fatalf("commit: %v %v", err, resp.Error())
		}
	}
	var s series
	brokertest.WaitFor(t, 10*time.Second, "the dropped series counted", func() (bool, string) {
		s = gather(t, b.Registry)
		v, _ := s.get("shale_consumer_group_lag_series_dropped", "")
		return v > 0, fmt.Sprintf("shale_consumer_group_lag_series_dropped = %v", v)
	})
	parts, topics := s["shale_consumer_group_lag"], s["shale_consumer_group_topic_lag"]
	if len(parts)+len(topics) > 50 {
		t.Fatalf("%d per-partition and %d per-topic lag series, more than 50", len(parts), len(topics))
	}
	// g000..g011 keep their 4 partition series (48), g012 and g013 get a
	// sum each (50); the other 188 groups are left out.
	if len(parts) != 48 || len(topics) != 2 {
		t.Fatalf("%d per-partition and %d per-topic series, want 48 and 2", len(parts), len(topics))
	}
	if v, ok := s.get("shale_consumer_group_lag", "group=g011,partition=3,topic=lagged"); !ok || v != 7 {
		t.Fatalf("g011's lag on partition 3: %v %v", v, ok)
	}
	if v, ok := s.get("shale_consumer_group_topic_lag", "group=g012,topic=lagged"); !ok || v != 28 {
		t.Fatalf("g012's lag summed over the topic: %v %v", v, ok)
	}
	if v, _ := s.get("shale_consumer_group_lag_series_dropped", ""); v != float64((groups-12)*4) {
		t.Fatalf("dropped %v series, want %d", v, (groups-12)*4)
	}
}
