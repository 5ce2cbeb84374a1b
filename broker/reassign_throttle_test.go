package broker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestReassignmentCopyIsThrottled: with leader.replication.throttled.rate
// set, a replica that a reassignment adds copies the partition no faster
// than the rate. The bytes the new broker reads from its peers, counted
// on its connections, stay within the rate over the copy's duration plus
// the throttle's one second of burst and one read (a bound only from
// above: a slow machine only moves fewer bytes). Unthrottled, the whole
// partition arrives at once, past the bound.
func TestReassignmentCopyIsThrottled(t *testing.T) {
	const (
		rate     = 256 << 10
		data     = 3 << 20
		oneRead  = 1 << 20 // a follower's partition max bytes
		overhead = 64 << 10
	)
	var read atomic.Int64
	c := brokertest.StartCluster(t, 4, func(cfg *broker.Config) {
		cfg.LeaderReplicationThrottledRate = rate
		if cfg.NodeID == 3 {
			cfg.DialPeer = func(ctx context.Context, network, addr string) (net.Conn, error) {
				var d net.Dialer
				nc, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: nc, n: &read}, nil
			}
		}
	})
	ctx := testCtx(t)
	createAssigned(t, c.Client(), "throttled", []int32{0, 1, 2})
	prod := c.Client(kgo.DefaultProduceTopic("throttled"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerBatchCompression(kgo.NoCompression()))
	value := make([]byte, 16<<10)
	var recs []*kgo.Record
	for i := 0; i < data/len(value); i++ {
		recs = append(recs, &kgo.Record{Value: value})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign("throttled", 0, []int32{0, 1, 2, 3})
	before, start := read.Load(), time.Now()
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp["throttled"][0].Err; err != nil {
		t.Fatal(err)
	}
	check := func() (int64, int64) {
		elapsed := time.Since(start) // read after the bytes: the bound only loosens
		got := read.Load() - before
		return got, int64(rate*(1+elapsed.Seconds())) + oneRead + overhead
	}
	brokertest.WaitFor(t, 60*time.Second, "the added replica joins the ISR", func() (bool, string) {
		got, bound := check()
		if got > bound {
			t.Fatalf("the added replica read %d bytes in %s, more than the throttle's bound %d", got, time.Since(start).Round(time.Millisecond), bound)
		}
		_, reps, isr := partitionReplicas(t, adm, "throttled")
		return slices.Contains(isr, 3), fmt.Sprintf("replicas %v isr %v, %d bytes copied", reps, isr, got)
	})
	got, bound := check()
	if got < data {
		t.Fatalf("the added replica joined the ISR having read %d bytes of %d", got, data)
	}
	t.Logf("%d bytes copied in %s (rate %d B/s, bound %d)", got, time.Since(start).Round(time.Millisecond), rate, bound)
}

// TestReassignmentThrottleAsTheKafkaToolSetsAndClearsIt follows what
// kafka-reassign-partitions.sh does with --throttle, through the same
// admin calls: --execute sets the topic's
// leader.replication.throttled.replicas to the moving partition's current
// replicas and follower.replication.throttled.replicas to the replica it
// adds, and both rates on every broker involved, then starts the move;
// the copy is throttled on both sides (the leader's and the new
// follower's counters, the follower's copy within its rate's bound).
// --verify, once the move is done, deletes the lists and the rates: then
// nothing is throttled any more, not even a replica a reassignment adds
// (which a Shale leader throttles whenever it has a leader rate in
// force): a move back copies the log with no throttled byte counted on
// any broker, as on Kafka.
func TestReassignmentThrottleAsTheKafkaToolSetsAndClearsIt(t *testing.T) {
	const (
		rate    = 1 << 20
		data    = 3 << 20
		oneRead = 1 << 20
	)
	c := brokertest.StartCluster(t, 4)
	ctx := quotaCtx(t)
	adm := kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond)))
	createAssigned(t, c.Client(), "moving", []int32{0, 1, 2})
	produceQuotaData(t, ctx, c, "moving", data)
	counted := func(id int32, side string) float64 {
		return quotaSample(t, c, id, "shale_replication_throttled_bytes_total", side)
	}
	allRates := func(want float64) func() (bool, string) {
		return func() (bool, string) {
			var got []float64
			for id := int32(0); id < 4; id++ {
				for _, side := range []string{"leader", "follower"} {
					got = append(got, quotaSample(t, c, id, "shale_replication_throttled_rate_bytes", side))
				}
			}
			return !slices.ContainsFunc(got, func(v float64) bool { return v != want }), fmt.Sprintf("rates %v", got)
		}
	}
	moved := func(replicas []int32) func() (bool, string) {
		return func() (bool, string) {
			_, reps, isr := partitionReplicas(t, adm, "moving")
			ongoing, err := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{"moving": {0: {}}})
			done := err == nil && len(ongoing) == 0 && slices.Equal(sorted(reps), replicas) && slices.Equal(sorted(isr), replicas)
			return done, fmt.Sprintf("replicas %v isr %v, reassignments %v %v", reps, isr, ongoing, err)
		}
	}

	// --execute --throttle: [0 1 2] to [1 2 3].
	alterTopic(t, ctx, adm, "moving", "leader.replication.throttled.replicas", "0:0,0:1,0:2")
	alterTopic(t, ctx, adm, "moving", "follower.replication.throttled.replicas", "0:3")
	for _, name := range []string{"leader.replication.throttled.rate", "follower.replication.throttled.rate"} {
		alterBroker(t, ctx, adm, kadm.SetConfig, name, fmt.Sprint(rate), 0, 1, 2, 3)
	}
	brokertest.WaitFor(t, 10*time.Second, "every broker applies both rates", allRates(rate))
	start := time.Now()
	if err := alterAssignment(t, ctx, adm, "moving", func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("moving", 0, []int32{1, 2, 3}) }); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 60*time.Second, "the throttled move completes", func() (bool, string) {
		copied := counted(3, "follower")
		if bound := rate*(1+time.Since(start).Seconds()) + oneRead; copied > bound {
			t.Fatalf("broker 3 fetched %v throttled bytes in %s, more than the bound %v", copied, time.Since(start).Round(time.Millisecond), bound)
		}
		done, state := moved([]int32{1, 2, 3})()
		return done, fmt.Sprintf("%s; %v bytes copied", state, copied)
	})
	if f, l := counted(3, "follower"), counted(0, "leader"); f < data || l < data {
		t.Fatalf("throttled bytes counted: %v fetched by broker 3 (follower list), %v sent by leader 0 (leader list); want both at least %d", f, l, data)
	}

	// --verify: the move is done, the throttle is removed.
	for _, name := range []string{"leader.replication.throttled.replicas", "follower.replication.throttled.replicas"} {
		resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: name}}, "moving")
		if err != nil || resps[0].Err != nil {
			t.Fatalf("deleting %s: %v %+v", name, err, resps)
		}
	}
	for _, name := range []string{"leader.replication.throttled.rate", "follower.replication.throttled.rate"} {
		alterBroker(t, ctx, adm, kadm.DeleteConfig, name, "", 0, 1, 2, 3)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "moving")
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range rcs[0].Configs {
		if strings.HasSuffix(cfg.Key, ".replication.throttled.replicas") && (cfg.MaybeValue() != "" || cfg.Source != kmsg.ConfigSourceDefaultConfig) {
			t.Fatalf("%s = %q from %v after it was deleted", cfg.Key, cfg.MaybeValue(), cfg.Source)
		}
	}
	brokertest.WaitFor(t, 10*time.Second, "every broker drops both rates", allRates(0))
	var before []float64
	for id := int32(0); id < 4; id++ {
		before = append(before, counted(id, "leader"), counted(id, "follower"))
	}

	// A move back to [0 1 2]: broker 0 deleted its copy and fetches the
	// whole log again, unthrottled.
	if err := alterAssignment(t, ctx, adm, "moving", func(r *kadm.AlterPartitionAssignmentsReq) { r.Assign("moving", 0, []int32{0, 1, 2}) }); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 60*time.Second, "the unthrottled move back completes", moved([]int32{0, 1, 2}))
	var after []float64
	for id := int32(0); id < 4; id++ {
		after = append(after, counted(id, "leader"), counted(id, "follower"))
	}
	if !slices.Equal(before, after) {
		t.Fatalf("throttled bytes counted after the throttle was removed: %v before the move back, %v after", before, after)
	}
	t.Logf("throttled move in %s; throttled bytes by broker (leader, follower): %v", time.Since(start).Round(time.Millisecond), after)
}
