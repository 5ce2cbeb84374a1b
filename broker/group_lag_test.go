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
