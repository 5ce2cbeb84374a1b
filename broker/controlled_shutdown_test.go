package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// ackedProducer produces to partition 0 of topic with acks=all until
// stopped, recording what was acknowledged and every error.
type ackedProducer struct {
	mu    sync.Mutex
	acked []int
	errs  []error
	stop  chan struct{}
	done  chan struct{}
}

func startAckedProducer(ctx context.Context, cl *kgo.Client) *ackedProducer {
	p := &ackedProducer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr()
			p.mu.Lock()
			if err == nil {
				p.acked = append(p.acked, i)
			} else {
				p.errs = append(p.errs, err)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *ackedProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *ackedProducer) waitAcked(t *testing.T, n int) {
	t.Helper()
	brokertest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d records acknowledged", n), func() (bool, string) {
		c := p.count()
		return c >= n, fmt.Sprint(c)
	})
}

// finish stops production and returns what was acknowledged and the
// errors seen.
func (p *ackedProducer) finish() ([]int, []error) {
	close(p.stop)
	<-p.done
	return p.acked, p.errs
}

// TestControlledShutdownMovesLeadershipBeforeExit: a leader stopped cleanly
// during acks=all production hands its partition to another in-sync
// replica before its registration goes (the etcd history shows the new
// leader first), the producer sees no error, and every acknowledged record
// is read back once, in order.
func TestControlledShutdownMovesLeadershipBeforeExit(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	adm := c.Admin()
	minISR := "2"
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": &minISR}, "handover"); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, "three in-sync replicas", func() (bool, string) {
		_, _, isr := partitionState(t, adm, "handover")
		return len(isr) == 3, fmt.Sprint(isr)
	})
	leader, epoch, _ := partitionState(t, adm, "handover")
	cl := c.Client(kgo.DefaultProduceTopic("handover"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	prod := startAckedProducer(ctx, cl)
	prod.waitAcked(t, 200)

	cli := c.Etcd().Client()
	rev, err := cli.Get(ctx, metadata.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Stop(leader)
	took := time.Since(start)
	prod.waitAcked(t, prod.count()+200)
	acked, errs := prod.finish()
	if len(errs) > 0 {
		t.Fatalf("the producer saw %d errors, first %v", len(errs), errs[0])
	}

	// In etcd's history the partition's new leader comes before the
	// stopped broker's registration is removed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, metadata.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev.Header.Revision+1))
	partKey := fmt.Sprintf("%spartitions/handover/%010d", metadata.DefaultPrefix, 0)
	brokerKey := fmt.Sprintf("%sbrokers/%010d", metadata.DefaultPrefix, leader)
	movedAt, goneAt := int64(0), int64(0)
	for goneAt == 0 {
		resp, ok := <-wch
		if !ok {
			t.Fatal("watch ended before the broker's registration went")
		}
		for _, ev := range resp.Events {
			switch string(ev.Kv.Key) {
			case partKey:
				var p metadata.Partition
				if err := json.Unmarshal(ev.Kv.Value, &p); err == nil && movedAt == 0 && p.Leader != leader && p.Leader >= 0 {
					movedAt = ev.Kv.ModRevision
					if p.LeaderEpoch <= epoch || slices.Contains(p.ISR, leader) || len(p.ISR) != 2 {
						t.Fatalf("after the hand-over: %+v", p)
					}
				}
			case brokerKey:
				if ev.Type == mvccpb.DELETE {
					goneAt = ev.Kv.ModRevision
				}
			}
		}
	}
	if movedAt == 0 || movedAt > goneAt {
		t.Fatalf("leadership moved at revision %d, the broker left at %d", movedAt, goneAt)
	}
	t.Logf("broker %d stopped in %s, leadership moved before it left; %d records acknowledged", leader, took.Round(time.Millisecond), len(acked))
	brokertest.CheckAckedReadOnce(t, ctx, c.Client(kgo.ConsumeTopics("handover"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), "handover", acked)
	// The stopped leader may hold an unacknowledged tail that its
	// successor wrote otherwise (a batch it appended while leadership
	// moved, the producer's retry of it at a newer epoch on the new
	// leader): restarted, it truncates that tail, catches up, and the
	// three logs agree.
	c.Start(leader)
	end := endOffset(t, c.Admin(), "handover")
	waitReplicated(t, c, "handover", end)
	c.CheckReplicasAgree(t, "handover", 0, 1, 2)
}

// TestStoppedFollowerIsNotAddedBackToTheISR: a follower stopped cleanly
// leaves the ISR, and its leader does not add it back from the position it
// fetched before it stopped (the other follower's fetches used to re-add
// it until replica.lag.time.max.ms passed, so the high watermark waited on
// a stopped broker and elections could name it).
func TestStoppedFollowerIsNotAddedBackToTheISR(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) { cfg.ReplicaLagTimeMax = 30 * time.Second })
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "stopped"); err != nil {
		t.Fatal(err)
	}
	var leader int32
	brokertest.WaitFor(t, 10*time.Second, "three in sync", func() (bool, string) {
		l, _, isr := storedState(t, c, "stopped")
		leader = l
		return l >= 0 && len(isr) == 3, fmt.Sprint(l, isr)
	})
	cl := c.Client(kgo.DefaultProduceTopic("stopped"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 10; i++ {
		produceSync(t, cl, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	waitReplicated(t, c, "stopped", 10)
	stopped := (leader + 1) % 3
	c.Stop(stopped)
	// The live follower keeps fetching (each long poll ends after
	// replica.fetch.wait.max.ms) while nothing new is produced.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, isr := storedState(t, c, "stopped"); slices.Contains(isr, stopped) {
			t.Fatalf("stopped broker %d back in the ISR %v", stopped, isr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
