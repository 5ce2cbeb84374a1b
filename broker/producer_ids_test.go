package broker_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

func initProducerID(t *testing.T, cl *kgo.Client) (int64, int16) {
	t.Helper()
	init, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(testCtx(t), cl)
	if err != nil || init.ErrorCode != 0 {
		t.Fatalf("init producer id: %v %+v", err, init)
	}
	return init.ProducerID, init.ProducerEpoch
}

// rawProduceSettled is rawProduce retried while the partition has no
// leader yet or is moving to a new one, or the broker asked has not yet
// seen the new topic (UNKNOWN_TOPIC_ID, as flaked once).
func rawProduceSettled(t *testing.T, cl *kgo.Client, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := rawProduce(t, cl, topic, batch)
		switch got.ErrorCode {
		case kerr.NotLeaderForPartition.Code, kerr.LeaderNotAvailable.Code, kerr.NotEnoughReplicas.Code,
			kerr.UnknownTopicOrPartition.Code, kerr.UnknownTopicID.Code:
			if time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		return got
	}
}

func endOffset(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	end, err := adm.ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := end.Lookup(topic, 0)
	return o.Offset
}

// A producer id the cluster never handed out is refused with
// UNKNOWN_PRODUCER_ID and leaves no producer state behind; the ids
// InitProducerId hands out keep working across a restart, as does a
// franz-go idempotent producer.
func TestInventedProducerIDIsRefused(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "pids", 1, nil)
	cl := b.Client()
	pid, epoch := initProducerID(t, cl)
	for _, invented := range []int64{0, 1, 12345, pid + 1, pid ^ 1, pid + 1<<24, 1<<62 + 7} {
		if invented == pid {
			continue
		}
		if got := rawProduce(t, cl, "pids", idempotentBatch(invented, 0, 0, 1)); got.ErrorCode != kerr.UnknownProducerID.Code {
			t.Fatalf("invented producer id %d: error %d, want UNKNOWN_PRODUCER_ID", invented, got.ErrorCode)
		}
	}
	if end := endOffset(t, b.Admin(), "pids"); end != 0 {
		t.Fatalf("log end %d after invented producer ids", end)
	}
	if got := rawProduce(t, cl, "pids", idempotentBatch(pid, epoch, 0, 2)); got.ErrorCode != 0 || got.BaseOffset != 0 {
		t.Fatalf("handed-out producer id %d: %+v", pid, got)
	}

	prod := b.Client(kgo.DefaultProduceTopic("pids"), kgo.ProducerLinger(0))
	for i := 0; i < 100; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	b.Restart()
	// After the restart both the raw producer's id and the franz-go
	// producer's are still the cluster's.
	if got := rawProduce(t, cl, "pids", idempotentBatch(pid, epoch, 2, 1)); got.ErrorCode != 0 {
		t.Fatalf("handed-out producer id %d after a restart: %+v", pid, got)
	}
	for i := 100; i < 200; i++ {
		produceSync(t, prod, &kgo.Record{Value: []byte(strconv.Itoa(i))})
	}
	var fromFranz []string
	for _, r := range consumeN(t, b, "pids", 203) {
		if !strings.HasPrefix(string(r.Value), "seq-") {
			fromFranz = append(fromFranz, string(r.Value))
		}
	}
	for i, v := range fromFranz {
		if v != strconv.Itoa(i) {
			t.Fatalf("record %d is %q: reordered or duplicated", i, v)
		}
	}
}

// Producer ids are the cluster's, not one broker's: an id handed out by
// one broker is accepted by a new leader after a failover, and a franz-go
// idempotent producer goes on through it.
func TestProducerIDsAreKnownAfterFailover(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "pids"); err != nil {
		t.Fatal(err)
	}
	raw := c.Client()
	pid, epoch := initProducerID(t, raw)
	if got := rawProduceSettled(t, raw, "pids", idempotentBatch(pid, epoch, 0, 1)); got.ErrorCode != 0 {
		t.Fatalf("produce: %+v", got)
	}
	if got := rawProduce(t, raw, "pids", idempotentBatch(pid+1, epoch, 0, 1)); got.ErrorCode != kerr.UnknownProducerID.Code {
		t.Fatalf("invented producer id: %+v", got)
	}
	prod := c.Client(kgo.DefaultProduceTopic("pids"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 20; i++ {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	leader, lepoch, _ := partitionState(t, adm, "pids")
	c.Stop(leader)
	adm2 := c.Admin()
	brokertest.WaitFor(t, 15*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := partitionState(t, adm2, "pids")
		return l >= 0 && l != leader && e > lepoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	raw2 := c.Client()
	if got := rawProduceSettled(t, raw2, "pids", idempotentBatch(pid, epoch, 1, 1)); got.ErrorCode != 0 {
		t.Fatalf("handed-out producer id %d on the new leader: error %d", pid, got.ErrorCode)
	}
	for i := 20; i < 40; i++ {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := prod.ProduceSync(pctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr()
		cancel()
		if err != nil {
			t.Fatalf("franz-go idempotent producer after the failover: %v", err)
		}
	}
	if end := endOffset(t, adm2, "pids"); end != 42 {
		t.Fatalf("log end %d, want 42", end)
	}
	// The stopped leader's log, a prefix of the others'.
	c.CheckReplicasAgree(t, "pids", 0, 1, 2)
}
