package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

// localBases lists the base offsets of a broker's local segments of
// shared-0, ascending.
func localBases(t *testing.T, nd *brokertest.Node, topic string) []int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(nd.Dir, topic+"-0", "*.log"))
	var out []int64
	for _, f := range files {
		if n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64); err == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// restoreCase is a three-broker tiered cluster whose partition 0 of topic
// was written (records 0 to 999, tieredValue) by leader in one leader
// epoch while follower was down, the leader's local log trimmed past 500.
type restoreCase struct {
	c                       *brokertest.Cluster
	bucket                  *faulty.Bucket
	topic                   string
	leader, epoch, follower int32
	bystander               int32
	replicas                []int32
	produce                 func(cl *kgo.Client, from, to int)
	ctx                     context.Context
}

// newRestoreCase sets a restoreCase up; pick chooses the follower to stop
// from the leader and the replica list (in election order).
func newRestoreCase(t *testing.T, topic string, lagMax time.Duration, pick func(leader int32, replicas []int32) int32) *restoreCase {
	t.Helper()
	fs, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bucket := faulty.New(fs)
	c := startTieredCluster(t, bucket, lagMax)
	ctx := testCtx(t)
	str := func(s string) *string { return &s }
	if _, err := c.Admin().CreateTopic(ctx, 1, 3, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "retention.ms": str("-1"), "file.delete.delay.ms": str("1"),
	}, topic); err != nil {
		t.Fatal(err)
	}
	rc := &restoreCase{c: c, bucket: bucket, topic: topic, ctx: ctx}
	// The leader as etcd holds it, once every replica is in sync: a
	// client's metadata may come from a broker that does not know the
	// topic yet.
	brokertest.WaitFor(t, 30*time.Second, "the partition led with three in sync", func() (bool, string) {
		p, err := metadata.NewStore(c.Etcd().Client(), "").Partition(ctx, topic, 0)
		if err != nil {
			return false, err.Error()
		}
		rc.leader, rc.epoch, rc.replicas = p.Leader, p.LeaderEpoch, slices.Clone(p.Replicas)
		return p.Leader >= 0 && len(p.ISR) == 3, fmt.Sprintf("leader %d isr %v", p.Leader, p.ISR)
	})
	rc.follower = pick(rc.leader, rc.replicas)
	rc.bystander = 3 - rc.leader - rc.follower
	c.Stop(rc.follower)

	rc.produce = func(cl *kgo.Client, from, to int) {
		for i := from; i < to; i += 50 {
			var recs []*kgo.Record
			for j := i; j < i+50; j++ {
				recs = append(recs, &kgo.Record{Topic: topic, Value: tieredValue(j)})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("producing %d: %v", i, err)
			}
		}
	}
	rc.produce(rc.client(), 0, 1000)
	// The history was written in one leader epoch (a follower's
	// shutdown moves no leadership).
	if l, e, _ := storedState(t, c, topic); l != rc.leader || e != rc.epoch {
		t.Fatalf("leader %d epoch %d after the first records; want %d %d", l, e, rc.leader, rc.epoch)
	}
	brokertest.WaitFor(t, 30*time.Second, "the leader uploads and trims", func() (bool, string) {
		b := localBases(t, c.Brokers[rc.leader], topic)
		return len(b) > 0 && b[0] > 500, fmt.Sprintf("leader's local segments %v", b)
	})
	return rc
}

// client is a producer and consumer client of the running brokers.
func (rc *restoreCase) client(opts ...kgo.Opt) *kgo.Client {
	return tieredProducer(rc.c, rc.topic, opts...)
}

// startFollower starts the follower again and waits until it restarted
// its log past the history and is back in the stored ISR.
func (rc *restoreCase) startFollower(t *testing.T) {
	t.Helper()
	rc.c.Start(rc.follower)
	brokertest.WaitFor(t, 30*time.Second, "the follower restarts its log past the history, back in the ISR", func() (bool, string) {
		_, _, isr := storedState(t, rc.c, rc.topic)
		b := localBases(t, rc.c.Brokers[rc.follower], rc.topic)
		return slices.Contains(isr, rc.follower) && len(b) > 0 && b[0] > 500, fmt.Sprintf("isr %v, follower's segments %v", isr, b)
	})
}

// waitLeader waits until etcd names id the leader, and returns its epoch.
func (rc *restoreCase) waitLeader(t *testing.T, id int32) int32 {
	t.Helper()
	var epoch int32
	brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("broker %d leads", id), func() (bool, string) {
		l, e, isr := storedState(t, rc.c, rc.topic)
		epoch = e
		return l == id, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	return epoch
}

// epochEnd asks the partition's leader through cl where epoch ended.
func (rc *restoreCase) epochEnd(t *testing.T, cl *kgo.Client, epoch int32) (int32, int64) {
	t.Helper()
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = rc.topic
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.CurrentLeaderEpoch, rp.LeaderEpoch = -1, epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(rc.ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Topics[0].Partitions[0]
	if got.ErrorCode != 0 {
		t.Fatalf("end of epoch %d: %v", epoch, kerr.ErrorForCode(got.ErrorCode))
	}
	return got.LeaderEpoch, got.EndOffset
}

// checkTiered reads the partition from offset 0: records 0 to n-1 as
// tieredValue wrote them, each once, in order.
func (rc *restoreCase) checkTiered(t *testing.T, n int) {
	t.Helper()
	cons := rc.client(kgo.ConsumeTopics(rc.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30000))
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cons.PollFetches(rc.ctx)
		if err := rc.ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", len(recs), n, err)
		}
		recs = append(recs, fs.Records()...)
	}
	for i, r := range recs {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, tieredValue(i)) {
			t.Fatalf("record %d: offset %d", i, r.Offset)
		}
	}
}

// checkReplicasAgree starts the stopped brokers again, waits until the
// three replicas hold the n records, and compares their local logs, which
// start where each trimmed or restored its own.
func (rc *restoreCase) checkReplicasAgree(t *testing.T, n int64) {
	t.Helper()
	for _, nd := range rc.c.Brokers {
		rc.c.Start(nd.ID)
	}
	waitReplicated(t, rc.c, rc.topic, n)
	rc.c.CheckReplicasAgree(t, rc.topic, 0, 1, 2)
}

// TestFollowerBehindTheLocalLogRestartsFromTheBucket: a follower is down
// while the leader uploads and deletes its local segments. Back, it is
// answered OFFSET_MOVED_TO_TIERED_STORAGE, restarts its log where the
// remote log ends (epochs and producer state from the bucket) instead of
// copying the history, and rejoins the ISR. Alone, it leads, takes
// records after the remote end, answers where the history's leader epoch
// ended (from the epochs restored from the bucket), and every record reads
// from offset 0 once.
func TestFollowerBehindTheLocalLogRestartsFromTheBucket(t *testing.T) {
	// Stopped brokers leave the ISR through their controlled shutdown;
	// the lag time only has to keep the live follower in.
	rc := newRestoreCase(t, "restore", 15*time.Second, func(leader int32, _ []int32) int32 { return (leader + 1) % 3 })
	rc.startFollower(t)
	// The bystander first, then the leader, which hands over to the
	// restored follower.
	rc.c.Stop(rc.bystander)
	rc.c.Stop(rc.leader)
	rc.waitLeader(t, rc.follower)
	// A new client: the old one keeps waiting on the stopped brokers.
	cl := rc.client()
	rc.produce(cl, 1000, 1200)
	if e, end := rc.epochEnd(t, cl, rc.epoch); e != rc.epoch || end != 1000 {
		t.Fatalf("end of epoch %d: epoch %d, offset %d; want %d, 1000", rc.epoch, e, end, rc.epoch)
	}
	rc.checkTiered(t, 1200)
	rc.checkReplicasAgree(t, 1200)
}

// TestRestoredFollowerLeadsAfterAnIntermediateLeader: leadership passes
// from the leader to the bystander and only then to the restored follower,
// which stays in the ISR all along, follows the intermediate leader, and
// answers where both earlier epochs ended. The intermediate leader reads
// its remote manifest slowly (a loaded machine or a slow store): it refuses
// fetches until it has, which must not count against the follower's
// replica.lag.time.max.ms (4 s; each manifest read takes 2.5 s).
func TestRestoredFollowerLeadsAfterAnIntermediateLeader(t *testing.T) {
	// The follower is the last replica in election order, so the
	// bystander leads first.
	rc := newRestoreCase(t, "relay", 4*time.Second, func(leader int32, replicas []int32) int32 {
		rest := slices.DeleteFunc(slices.Clone(replicas), func(id int32) bool { return id == leader })
		return rest[len(rest)-1]
	})
	rc.startFollower(t)
	slow := rc.bucket.Add(faulty.Rule{Op: faulty.Get | faulty.Head, Latency: 2500 * time.Millisecond})
	rc.c.Stop(rc.leader)
	middle := rc.waitLeader(t, rc.bystander)
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if l, e, isr := storedState(t, rc.c, rc.topic); !slices.Contains(isr, rc.follower) {
			t.Fatalf("the restored follower left the ISR under leader %d epoch %d: isr %v", l, e, isr)
		}
	}
	if slow.Fired() == 0 {
		t.Fatal("no manifest read was slowed")
	}
	slow.Remove()
	cl := rc.client()
	rc.produce(cl, 1000, 1100)
	rc.c.Stop(rc.bystander)
	rc.waitLeader(t, rc.follower)
	cl = rc.client()
	rc.produce(cl, 1100, 1200)
	if e, end := rc.epochEnd(t, cl, rc.epoch); e != rc.epoch || end != 1000 {
		t.Fatalf("end of epoch %d: epoch %d, offset %d; want %d, 1000", rc.epoch, e, end, rc.epoch)
	}
	if e, end := rc.epochEnd(t, cl, middle); e != middle || end != 1100 {
		t.Fatalf("end of epoch %d: epoch %d, offset %d; want %d, 1100", middle, e, end, middle)
	}
	rc.checkTiered(t, 1200)
	rc.checkReplicasAgree(t, 1200)
}

// TestIdempotentProducerAcrossTheRestoredFollowerLeading: a franz-go
// producer with its defaults (idempotent, acks=all) keeps producing while
// the follower restores from the bucket, rejoins, and takes leadership from
// the stopped leader. It neither hangs nor fails, and the partition read
// from offset 0 holds the history and then every produced record once, in
// order.
func TestIdempotentProducerAcrossTheRestoredFollowerLeading(t *testing.T) {
	rc := newRestoreCase(t, "idempotent", 15*time.Second, func(leader int32, _ []int32) int32 { return (leader + 1) % 3 })
	rc.c.Stop(rc.bystander)
	// Seeded with every broker, as a deployment's bootstrap list is: the
	// restored follower was down when the client started, so no
	// metadata answer named it, and once the leader it knew stopped (with
	// produce requests in flight, unanswered) the client would have
	// nothing left to ask.
	var seeds []string
	for _, nd := range rc.c.Brokers {
		seeds = append(seeds, nd.Addr)
	}
	cl := rc.client(kgo.SeedBrokers(seeds...))
	var (
		mu     sync.Mutex
		acked  []int
		errs   []error
		sent   int
		stop   = make(chan struct{})
		done   = make(chan struct{})
		flight = make(chan struct{}, 20)
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case flight <- struct{}{}:
			}
			mu.Lock()
			sent = i + 1
			mu.Unlock()
			cl.Produce(rc.ctx, &kgo.Record{Value: idempotentValue(i)}, func(_ *kgo.Record, err error) {
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acked = append(acked, i)
				}
				mu.Unlock()
				<-flight
			})
			time.Sleep(time.Millisecond)
		}
	}()
	progress := func(what string, more int) {
		t.Helper()
		mu.Lock()
		from := len(acked)
		mu.Unlock()
		brokertest.WaitFor(t, 30*time.Second, what, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= from+more, fmt.Sprintf("%d acknowledged of %d sent, errors %v", len(acked), sent, errs)
		})
	}
	progress("records acknowledged by the leader alone", 100)
	rc.startFollower(t)
	progress("records acknowledged with the restored follower in sync", 100)
	rc.c.Stop(rc.leader)
	rc.waitLeader(t, rc.follower)
	progress("records acknowledged by the restored follower as leader", 300)
	close(stop)
	<-done
	fctx, cancel := context.WithTimeout(rc.ctx, 20*time.Second)
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		t.Fatalf("flushing the producer: %v (%d acknowledged of %d sent)", err, len(acked), sent)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 || len(acked) != sent {
		t.Fatalf("%d acknowledged of %d sent, errors %v", len(acked), sent, errs)
	}
	for i, v := range acked {
		if v != i {
			t.Fatalf("acknowledgement %d is record %d", i, v)
		}
	}

	cons := rc.client(kgo.ConsumeTopics(rc.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(30000))
	next := 0
	for n := 0; n < 1000+sent; {
		fs := cons.PollFetches(rc.ctx)
		if err := rc.ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", n, 1000+sent, err)
		}
		for _, r := range fs.Records() {
			switch {
			case r.Offset != int64(n):
				t.Fatalf("record %d at offset %d", n, r.Offset)
			case n < 1000 && !bytes.Equal(r.Value, tieredValue(n)):
				t.Fatalf("history record %d differs", n)
			case n >= 1000 && !bytes.Equal(r.Value, idempotentValue(next)):
				t.Fatalf("offset %d holds %.12q, want produced record %d (a duplicate, a loss or a reordering)", n, r.Value, next)
			}
			if n >= 1000 {
				next++
			}
			n++
		}
	}
	rc.checkReplicasAgree(t, int64(1000+sent))
}

// idempotentValue is produced record i of the idempotence test, padded so
// that segments roll.
func idempotentValue(i int) []byte {
	return []byte(fmt.Sprintf("p%07d-%s", i, strings.Repeat("i", 200)))
}

// TestRestoredLeaderAnswersEveryEpochOfTheTieredHistory: the history is
// written in three leader epochs (two leader changes), uploaded, and
// trimmed from the leaders' disks; then the follower, down all along,
// loses its log directory and restores from the bucket, with only the
// epochs in force where the remote log ends. Leading alone, it answers
// OffsetForLeaderEpoch for every epoch of the history from the remote
// epochs, as a broker holding the whole history would, and every record
// reads once from offset 0.
func TestRestoredLeaderAnswersEveryEpochOfTheTieredHistory(t *testing.T) {
	rc := newRestoreCase(t, "epochs", 15*time.Second, func(leader int32, _ []int32) int32 { return (leader + 1) % 3 })
	e0 := rc.epoch
	// Epoch e1: the bystander leads.
	rc.c.Stop(rc.leader)
	e1 := rc.waitLeader(t, rc.bystander)
	rc.produce(rc.client(), 1000, 1300)
	rc.c.Start(rc.leader)
	brokertest.WaitFor(t, 30*time.Second, "the first leader back in the ISR", func() (bool, string) {
		_, _, isr := storedState(t, rc.c, rc.topic)
		return slices.Contains(isr, rc.leader), fmt.Sprintf("isr %v", isr)
	})
	// Epoch e2: the first leader again.
	rc.c.Stop(rc.bystander)
	e2 := rc.waitLeader(t, rc.leader)
	rc.produce(rc.client(), 1300, 1600)
	brokertest.WaitFor(t, 30*time.Second, "the leader uploads and trims past epoch e2's start", func() (bool, string) {
		b := localBases(t, rc.c.Brokers[rc.leader], rc.topic)
		return len(b) > 0 && b[0] > 1300, fmt.Sprintf("leader's local segments %v", b)
	})
	if !(e0 < e1 && e1 < e2) {
		t.Fatalf("epochs %d, %d, %d", e0, e1, e2)
	}
	// The follower's log disk is lost while it is down.
	if err := os.RemoveAll(filepath.Join(rc.c.Brokers[rc.follower].Dir, rc.topic+"-0")); err != nil {
		t.Fatal(err)
	}
	rc.startFollower(t)
	if b := localBases(t, rc.c.Brokers[rc.follower], rc.topic); b[0] <= 1300 {
		t.Fatalf("restored follower's segments %v: want it restarted past epoch e2's start", b)
	}
	// It leads alone.
	rc.c.Stop(rc.leader)
	e3 := rc.waitLeader(t, rc.follower)
	cl := rc.client()
	rc.produce(cl, 1600, 1700)
	for _, w := range []struct {
		epoch, wantEpoch int32
		wantEnd          int64
	}{
		{e0, e0, 1000},
		{e1, e1, 1300},
		{e2, e2, 1600},
		{e3, e3, 1700},
	} {
		if e, end := rc.epochEnd(t, cl, w.epoch); e != w.wantEpoch || end != w.wantEnd {
			t.Errorf("end of epoch %d: epoch %d, offset %d; want %d, %d", w.epoch, e, end, w.wantEpoch, w.wantEnd)
		}
	}
	for ep := e0 + 1; ep < e1; ep++ { // epochs that never wrote
		if e, end := rc.epochEnd(t, cl, ep); e != e0 || end != 1000 {
			t.Errorf("end of unused epoch %d: epoch %d, offset %d; want %d, 1000", ep, e, end, e0)
		}
	}
	rc.checkTiered(t, 1700)
	rc.checkReplicasAgree(t, 1700)
}

// TestFollowerBehindALeaderThatTookOverDuringAStoreOutageWaitsForTheBucket:
// the store goes down and leadership passes to the bystander, whose log
// was created with the topic: it takes produce before reading its
// manifest. Restarted cleanly (so that it knows no manifest at all), it
// leads again and takes produce again. The follower, started again far
// behind the bystander's local log, is refused with a retriable error
// rather than told to start over at the local log's start (where its log
// would begin without the history's producer state and leader epochs): it
// keeps its log, out of the ISR, until the store is back, then restores
// from the bucket and rejoins.
func TestFollowerBehindALeaderThatTookOverDuringAStoreOutageWaitsForTheBucket(t *testing.T) {
	rc := newRestoreCase(t, "outage", 15*time.Second, func(leader int32, _ []int32) int32 { return (leader + 1) % 3 })
	brokertest.WaitFor(t, 30*time.Second, "the bystander trims its local log", func() (bool, string) {
		b := localBases(t, rc.c.Brokers[rc.bystander], rc.topic)
		return len(b) > 0 && b[0] > 500, fmt.Sprintf("bystander's local segments %v", b)
	})
	down := rc.bucket.Add(faulty.Rule{Op: faulty.Any, Fail: true})
	rc.c.Stop(rc.leader)
	rc.waitLeader(t, rc.bystander)
	cl := rc.client(kgo.RecordDeliveryTimeout(30 * time.Second))
	rc.produce(cl, 1000, 1100)
	rc.c.Stop(rc.bystander)
	rc.c.Start(rc.bystander)
	rc.produce(rc.client(kgo.RecordDeliveryTimeout(30*time.Second)), 1100, 1200)

	rc.c.Start(rc.follower)
	time.Sleep(3 * time.Second) // many fetches
	// Its log still starts at 0 (one segment, or none yet): it did not
	// start over at the leader's local start.
	if got := localBases(t, rc.c.Brokers[rc.follower], rc.topic); slices.ContainsFunc(got, func(b int64) bool { return b > 0 }) {
		t.Fatalf("the follower's local segments during the outage: %v, want its log from 0", got)
	}
	if _, _, isr := storedState(t, rc.c, rc.topic); slices.Contains(isr, rc.follower) {
		t.Fatalf("the follower joined the ISR %v during the outage", isr)
	}
	if down.Fired() == 0 {
		t.Fatal("nobody asked the store")
	}

	down.Remove()
	brokertest.WaitFor(t, 30*time.Second, "the follower restores from the bucket, back in the ISR", func() (bool, string) {
		_, _, isr := storedState(t, rc.c, rc.topic)
		b := localBases(t, rc.c.Brokers[rc.follower], rc.topic)
		return slices.Contains(isr, rc.follower) && len(b) > 0 && b[0] > 500, fmt.Sprintf("isr %v, follower's segments %v", isr, b)
	})
	rc.checkTiered(t, 1200)
	rc.checkReplicasAgree(t, 1200)
}
