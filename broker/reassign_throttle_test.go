package broker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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
