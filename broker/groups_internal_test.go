package broker

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestOffsetsLoadBoundsTheBatchSizeFromTheFile: the load read a range as
// long as the first batch the file declared, and allocated it whole. A
// batch larger than the coordinator ever writes is refused first.
func TestOffsetsLoadBoundsTheBatchSizeFromTheFile(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{SegmentBytes: 1 << 30}, localseg.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	big, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]recordbatch.Record{{Key: []byte("k"), Value: make([]byte, 65<<20)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.AppendAsLeader(recordbatch.Batch(big), 0); err != nil {
		t.Fatal(err)
	}
	big = nil
	p := newPartition(offsetsTopic, [16]byte{1}, 0, 0, log, &topicConfig{maxMessageBytes: 1 << 20})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err = (&offsetsLog{p: p}).Scan(context.Background(), func(recordbatch.Batch) error { return nil })
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "more than any the coordinator writes") {
		t.Fatalf("scan over a 65 MiB batch: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("refusing the batch allocated %d bytes", alloc)
	}
}

// TestANewCoordinatorAnswersOnlyOnceWhatItLoadedIsCommitted: a commit the
// coordinator wrote and did not acknowledge (its followers never fetched
// it) is in the log of the broker that leads next. The new coordinator
// answered it at once, from a log end above the high watermark; had that
// leader lost the partition to a member that lacked the record, the
// committed offset read would then have moved backwards (the group soak's
// OffsetFetch answering 152, then 151). It now answers
// COORDINATOR_LOAD_IN_PROGRESS until the high watermark has reached the
// log end it loaded.
func TestANewCoordinatorAnswersOnlyOnceWhatItLoadedIsCommitted(t *testing.T) {
	p := newReplicatedPartition(t, offsetsTopic)
	cfg := group.DefaultConfig()
	cfg.OffsetsTopicNumPartitions = 1
	cfg.OffsetCommitTimeout = time.Second
	c, err := group.New(cfg, group.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	commit := func(offset int64) <-chan int16 {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version, req.Group, req.Generation = 8, "g", -1
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = "t"
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, offset
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		out := make(chan int16, 1)
		go func() { out <- c.OffsetCommit(ctx, req).Topics[0].Partitions[0].ErrorCode }()
		return out
	}
	committed := func() (int64, int16) {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Version, req.Group = 7, "g"
		resp := c.OffsetFetch(ctx, req)
		if resp.ErrorCode != 0 || len(resp.Topics) == 0 {
			return -1, resp.ErrorCode
		}
		return resp.Topics[0].Partitions[0].Offset, 0
	}
	appended := func(end int64) {
		t.Helper()
		waitUntil(t, "the commit is in the log", func() bool { return p.log.LogEndOffset() > end })
	}

	leadWithAll(p, 1)
	c.Load(0, &offsetsLog{p: p})
	waitUntil(t, "the empty partition is loaded", func() bool { return c.Loaded(0) })
	end := p.log.LogEndOffset()
	acked := commit(151)
	appended(end)
	followersFetch(t, p, 1, p.log.LogEndOffset())
	if code := <-acked; code != 0 {
		t.Fatalf("commit of 151: error %d", code)
	}
	end = p.log.LogEndOffset()
	unacked := commit(152)
	appended(end)
	// The coordinator's broker loses the partition before the followers
	// fetch the commit, and leads it again at the next epoch (as another
	// broker whose log holds the record would).
	c.Unload(0)
	if code := <-unacked; code == 0 {
		t.Fatal("commit of 152 acknowledged without its followers")
	}
	leadWithAll(p, 2)
	c.Load(0, &offsetsLog{p: p})
	time.Sleep(100 * time.Millisecond)
	if off, code := committed(); code != kerr.CoordinatorLoadInProgress.Code {
		t.Fatalf("before the followers have the loaded log: committed offset %d (error %d), want COORDINATOR_LOAD_IN_PROGRESS", off, code)
	}
	followersFetch(t, p, 2, p.log.LogEndOffset())
	waitUntil(t, "the partition is loaded", func() bool { return c.Loaded(0) })
	if off, code := committed(); off != 152 || code != 0 {
		t.Fatalf("once the loaded log is committed: committed offset %d (error %d), want 152", off, code)
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}
