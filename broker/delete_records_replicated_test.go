package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestDeleteRecordsSurvivesALeaderChange: records deleted through the
// leader (DeleteRecords) stay deleted when a follower takes over: followers
// take the leader's log start from its fetch answers, as Kafka's do. They
// kept their own, so the new leader's earliest offset went back to 0 and
// the deleted records read again. The old leader, back with its log lost,
// follows from the log start, and the replicas' logs agree.
func TestDeleteRecordsSurvivesALeaderChange(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	const topic = "dr-replicated"
	// Small segments: the deletion removes whole segments too.
	if _, err := c.Admin().CreateTopic(ctx, 1, 3, map[string]*string{"segment.bytes": kadm.StringPtr("1024"), "file.delete.delay.ms": kadm.StringPtr("1")}, topic); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	for i := 0; i < 100; i += 5 {
		var recs []*kgo.Record
		for j := i; j < i+5; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(strconv.Itoa(j))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := c.Admin()
	dr, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: 60}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	// One more record, so every follower fetches after the deletion.
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("100")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	leader, epoch, _ := storedState(t, c, topic)
	brokertest.WaitFor(t, 15*time.Second, "every replica in sync past the deletion, its log starting at 60", func() (bool, string) {
		_, _, isr := storedState(t, c, topic)
		state := fmt.Sprintf("isr %v, log starts", isr)
		ok := len(isr) == 3
		for _, nd := range c.Brokers {
			start, hosted := nd.B.ReplicaLogStart(topic, 0)
			state += fmt.Sprintf(" %d", start)
			ok = ok && hosted && start == 60
		}
		return ok, state
	})
	c.Stop(leader)
	brokertest.WaitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := storedState(t, c, topic)
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	adm = c.Admin()
	brokertest.WaitFor(t, 15*time.Second, "the new leader's earliest offset", func() (bool, string) {
		start, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		o, _ := start.Lookup(topic, 0)
		if o.Err != nil {
			return false, o.Err.Error()
		}
		if o.Offset != 60 {
			t.Fatalf("earliest offset under the new leader: %d, want 60 (deleted records came back)", o.Offset)
		}
		return true, ""
	})
	cons := c.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for {
		recs := cons.PollFetches(ctx).Records()
		if ctx.Err() != nil {
			t.Fatal("no record read under the new leader")
		}
		if len(recs) > 0 {
			if recs[0].Offset != 60 {
				t.Fatalf("first record under the new leader at offset %d, want 60", recs[0].Offset)
			}
			break
		}
	}
	// The old leader, back with its log lost, starts it at the leader's
	// log start and follows; the replicas' logs, starting at different
	// offsets, agree from the highest of their starts.
	if err := os.RemoveAll(filepath.Join(c.Brokers[leader].Dir, topic+"-0")); err != nil {
		t.Fatal(err)
	}
	c.Start(leader)
	cl = c.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("101")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, c, topic, 102)
	c.CheckReplicasAgree(t, topic, 0, 1, 2)
}

// TestDeleteRecordsAnswersTheLowWatermarkOfEveryLiveReplica: DeleteRecords
// answers, as Kafka's does, once every live replica's log start has reached
// the requested offset, and reports that low watermark. The leader
// answered its own log start at once, while its followers, waiting in a
// long poll (replica.fetch.wait.max.ms 20 s here), still served the deleted
// records. A stopped follower does not hold the answer back.
func TestDeleteRecordsAnswersTheLowWatermarkOfEveryLiveReplica(t *testing.T) {
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		cfg.ReplicaFetchWaitMax = 20 * time.Second
	})
	ctx := testCtx(t)
	const topic = "dr-low-watermark"
	if _, err := c.Admin().CreateTopic(ctx, 1, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Value: []byte(strconv.Itoa(i))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 100)
	leader, _, _ := storedState(t, c, topic)
	brokertest.WaitFor(t, 30*time.Second, "every replica holds the 100 records", func() (bool, string) {
		var ends []int64
		for _, nd := range c.Brokers {
			leo, _, _ := nd.B.ReplicaOffsets(topic, 0)
			ends = append(ends, leo)
		}
		_, _, isr := storedState(t, c, topic)
		return len(isr) == 3 && ends[0] == 100 && ends[1] == 100 && ends[2] == 100, fmt.Sprintf("log ends %v, isr %v", ends, isr)
	})
	deleteAt := func(offset int64) {
		t.Helper()
		dr, err := kadm.NewClient(cl).DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: offset}}})
		if err != nil || dr.Error() != nil {
			t.Fatalf("delete records to %d: %v %v", offset, err, dr.Error())
		}
		r, _ := dr.Lookup(topic, 0)
		if r.LowWatermark != offset {
			t.Fatalf("low watermark %d, want %d", r.LowWatermark, offset)
		}
	}
	deleteAt(60)
	// Answered: every replica has moved its log start already.
	for _, nd := range c.Brokers {
		if start, _ := nd.B.ReplicaLogStart(topic, 0); start < 60 {
			t.Fatalf("broker %d's log starts at %d once DeleteRecords answered 60", nd.ID, start)
		}
	}
	// A stopped follower is not waited for.
	c.Stop((leader + 1) % 3)
	produce(100, 110)
	deleteAt(105)
	for _, nd := range c.Brokers {
		if nd.B == nil {
			continue
		}
		if start, _ := nd.B.ReplicaLogStart(topic, 0); start < 105 {
			t.Fatalf("broker %d's log starts at %d once DeleteRecords answered 105", nd.ID, start)
		}
	}
}

// TestFollowerBehindTheLeadersLogStartStartsOverThere: a follower down
// while the leader's log start passed its log end (DeleteRecords) is
// answered OFFSET_OUT_OF_RANGE when it fetches again, and starts its log
// over at the leader's log start. The leader's answer to a follower named
// no log start (-1), so the follower took it for a fetch past the leader's
// end, checked its divergence and asked again, forever, never rejoining.
func TestFollowerBehindTheLeadersLogStartStartsOverThere(t *testing.T) {
	c, _ := followerStartedOverAtTheLogStart(t, "dr-behind")
	c.CheckReplicasAgree(t, "dr-behind", 0, 1, 2)
}

// followerStartedOverAtTheLogStart produces records 0 to 99 (values their
// numbers, uncompressed, a batch each) to topic on three brokers, the
// follower it returns down from 50 on, deletes the records below 80 and
// waits until the follower, back, started its log over at 80 and is in
// the ISR again.
func followerStartedOverAtTheLogStart(t *testing.T, topic string) (*brokertest.Cluster, int32) {
	t.Helper()
	c := brokertest.StartCluster(t, 3)
	ctx := testCtx(t)
	if _, err := c.Admin().CreateTopic(ctx, 1, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(c, topic)
	// One record at a time: the records of one ProduceSync go out in one
	// batch or several, as the client's sender happens to drain them, and
	// the rewrites below name the batch of a record by its offset.
	produce := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(0, 50)
	waitReplicated(t, c, topic, 50)
	leader, _, _ := storedState(t, c, topic)
	follower := (leader + 1) % 3
	c.Stop(follower)
	produce(50, 100)
	dr, err := c.Admin().DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: 80}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	c.Start(follower)
	waitReplicated(t, c, topic, 100)
	if start, _ := c.Brokers[follower].B.ReplicaLogStart(topic, 0); start != 80 {
		t.Fatalf("the follower's log starts at %d, want 80", start)
	}
	brokertest.WaitFor(t, 15*time.Second, "the follower back in the ISR", func() (bool, string) {
		_, _, isr := storedState(t, c, topic)
		return len(isr) == 3, fmt.Sprintf("isr %v", isr)
	})
	return c, follower
}

// TestReplicaLogsDisagreeFromTheHighestStartOnARecordEditedOnOneBroker:
// the replicas' logs start at different offsets (a follower started over
// at the leader's log start, 80; the others start at 0) and agree; then a
// record is rewritten (another value as long, the batch's CRC recomputed)
// at offset 92 on the follower, or at offset 21 on one of the two others,
// below the follower's start, and the comparison fails naming the two
// brokers that part and the batch.
func TestReplicaLogsDisagreeFromTheHighestStartOnARecordEditedOnOneBroker(t *testing.T) {
	c, follower := followerStartedOverAtTheLogStart(t, "edited-late")
	c.CheckReplicasAgree(t, "edited-late", 0, 1, 2) // stops them
	var others []int32
	for id := int32(0); id < 3; id++ {
		if id != follower {
			others = append(others, id)
		}
	}
	read := func() []brokertest.ReplicaLog {
		var logs []brokertest.ReplicaLog
		for _, nd := range c.Brokers {
			l, err := brokertest.ReadReplicaLog(int(nd.ID), nd.Dir, "edited-late-0")
			if err != nil {
				t.Fatal(err)
			}
			logs = append(logs, l)
		}
		return logs
	}
	pair := func(a, b int32) string { return fmt.Sprintf("brokers %d and %d ", min(a, b), max(a, b)) }
	for _, tc := range []struct {
		name       string
		on         int32
		base       int64
		old, value string
		want       []string
	}{
		{"above the highest start, on the follower", follower, 92, "92", "29",
			[]string{pair(others[0], follower), "from offset 80", "in the batch of offsets 92 to 92"}},
		{"below the highest start", others[1], 21, "21", "12",
			[]string{pair(others[0], others[1]), "from offset 0", "in the batch of offsets 21 to 21"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokertest.RewriteValue(t, c.Brokers[tc.on].Dir, "edited-late-0", tc.base, tc.old, tc.value)
			defer brokertest.RewriteValue(t, c.Brokers[tc.on].Dir, "edited-late-0", tc.base, tc.value, tc.old)
			err := brokertest.ReplicaLogsDisagree(read())
			if err == nil {
				t.Fatalf("the comparison accepted a log with a record rewritten at offset %d on broker %d", tc.base, tc.on)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("the comparison failed without saying %q: %v", w, err)
				}
			}
			t.Log(err)
		})
	}
	// Put back, they agree again.
	if err := brokertest.ReplicaLogsDisagree(read()); err != nil {
		t.Fatal(err)
	}
}
