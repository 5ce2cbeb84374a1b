package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// replica is a follower partition in memory: a log end, one leader epoch
// per range, and a record of what the fetcher asked of it.
type replica struct {
	// part is its partition of topic "t".
	part   int32
	mu     sync.Mutex
	leo    int64
	epochs [][2]int64 // (epoch, start offset), ascending
	calls  []string
	// following, when set, is the (leader, epoch) the partition follows:
	// appends under another are refused, as the broker's partition does.
	following *[2]int32
	// appended are the offset ranges [from, to) appended, in order.
	appended [][2]int64
	// onAppend, when set, runs inside each append that wrote batches,
	// after it did, with the mutex held.
	onAppend func(r *replica)
	// failAppends is how many appends of batches fail, writing nothing.
	failAppends int
}

func (r *replica) Topic() string     { return "t" }
func (r *replica) Partition() int32  { return r.part }
func (r *replica) TopicID() [16]byte { return [16]byte{1} }
func (r *replica) LogStartOffset() int64 {
	return 0
}

func (r *replica) LogEndOffset() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leo
}

func (r *replica) LatestEpoch() int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.epochs) == 0 {
		return -1
	}
	return int32(r.epochs[len(r.epochs)-1][0])
}

func (r *replica) EndOffsetForEpoch(epoch int32) (int32, int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.epochs) - 1; i >= 0; i-- {
		if int32(r.epochs[i][0]) <= epoch {
			end := r.leo
			if i+1 < len(r.epochs) {
				end = r.epochs[i+1][1]
			}
			return int32(r.epochs[i][0]), end, true
		}
	}
	return -1, -1, false
}

func (r *replica) record(format string, args ...any) {
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *replica) Append(leader, epoch int32, batches []byte, hw, _ int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.following != nil && *r.following != [2]int32{leader, epoch} {
		r.record("refused append leader %d epoch %d", leader, epoch)
		return ErrNotFollower
	}
	r.record("append leader %d epoch %d bytes %d hw %d", leader, epoch, len(batches), hw)
	if len(batches) == 0 {
		return nil
	}
	if r.failAppends > 0 {
		r.failAppends--
		return errors.New("disk error")
	}
	first, _, err := recordbatch.Next(batches)
	if err != nil {
		return err
	}
	from := first.BaseOffset()
	for rest := batches; len(rest) > 0; {
		b, next, err := recordbatch.Next(rest)
		if err != nil {
			return err
		}
		if e := int64(b.PartitionLeaderEpoch()); len(r.epochs) == 0 || e > r.epochs[len(r.epochs)-1][0] {
			r.epochs = append(r.epochs, [2]int64{e, b.BaseOffset()})
		}
		r.leo = b.NextOffset()
		rest = next
	}
	r.appended = append(r.appended, [2]int64{from, r.leo})
	if r.onAppend != nil {
		r.onAppend(r)
	}
	return nil
}

func (r *replica) Truncate(leader, epoch int32, off int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("truncate leader %d epoch %d at %d", leader, epoch, off)
	r.leo = min(r.leo, off)
	return nil
}

func (r *replica) Restart(leader, epoch int32, off int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("restart leader %d epoch %d at %d", leader, epoch, off)
	r.leo = off
	return nil
}

func (r *replica) RestoreFromBucket(_ context.Context, leader, epoch int32, off int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("restore leader %d epoch %d from %d", leader, epoch, off)
	return nil
}

func (r *replica) history() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// leaderConn answers as the leader: OffsetForLeaderEpoch from epochEnd,
// each Fetch with serve when set, else with the next of fetches (then an
// empty answer after a short wait), and records every request as it is
// sent. Answers are computed as they are received, in the order sent.
type leaderConn struct {
	mu       sync.Mutex
	epochEnd map[int32][2]int64 // asked epoch -> (epoch, end offset)
	fetches  []func(*kmsg.FetchResponseTopicPartition)
	serve    func(kmsg.FetchRequestTopicPartition, *kmsg.FetchResponseTopicPartition)
	requests []kmsg.Request
	queue    []kmsg.Request // sent, not yet received
}

func (c *leaderConn) Close() {}

func (c *leaderConn) Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	if err := c.Send(ctx, req); err != nil {
		return nil, err
	}
	return c.Receive(ctx)
}

func (c *leaderConn) Send(_ context.Context, req kmsg.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req)
	c.queue = append(c.queue, req)
	return nil
}

func (c *leaderConn) Receive(ctx context.Context) (kmsg.Response, error) {
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.mu.Unlock()
		return nil, errors.New("nothing sent")
	}
	req := c.queue[0]
	c.queue = c.queue[1:]
	switch req := req.(type) {
	case *kmsg.OffsetForLeaderEpochRequest:
		defer c.mu.Unlock()
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				rp.Partition = p.Partition
				e := c.epochEnd[p.LeaderEpoch]
				rp.LeaderEpoch, rp.EndOffset = int32(e[0]), e[1]
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil
	case *kmsg.FetchRequest:
		var answer func(*kmsg.FetchResponseTopicPartition)
		if len(c.fetches) > 0 {
			answer, c.fetches = c.fetches[0], c.fetches[1:]
		}
		serve := c.serve
		c.mu.Unlock()
		if answer == nil && serve == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition = p.Partition
				rp.HighWatermark = p.FetchOffset
				switch {
				case answer != nil:
					answer(&rp)
				case serve != nil:
					serve(p, &rp)
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil
	}
	c.mu.Unlock()
	return nil, errors.New("unexpected request")
}

func (c *leaderConn) fetchRequests() []*kmsg.FetchRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*kmsg.FetchRequest
	for _, r := range c.requests {
		if f, ok := r.(*kmsg.FetchRequest); ok {
			out = append(out, f)
		}
	}
	return out
}

func startManager(t *testing.T, conn *leaderConn) *Manager {
	t.Helper()
	return startManagerOf(t, map[int32]*leaderConn{2: conn})
}

// startManagerOf starts fetchers that reach broker id through conns[id].
func startManagerOf(t *testing.T, conns map[int32]*leaderConn) *Manager {
	t.Helper()
	m := NewManager(context.Background(), Config{
		Self: 1, FetchWaitMax: 10 * time.Millisecond,
		Addr: func(id int32) (string, bool) { return fmt.Sprintf("broker-%d", id), conns[id] != nil },
		Dial: func(_ context.Context, addr string) (Conn, error) {
			var id int32
			if _, err := fmt.Sscanf(addr, "broker-%d", &id); err != nil || conns[id] == nil {
				return nil, fmt.Errorf("no broker at %s", addr)
			}
			return conns[id], nil
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	t.Cleanup(m.Close)
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFetcherTruncatesDivergentTailBeforeFetching: a follower whose last
// epoch (1) ran to offset 12 while the leader's epoch 1 ended at 10 cuts
// its log at 10 before its first fetch, which asks from 10 as replica 1 at
// the followed leader epoch.
func TestFetcherTruncatesDivergentTailBeforeFetching(t *testing.T) {
	r := &replica{leo: 12, epochs: [][2]int64{{0, 0}, {1, 5}}}
	conn := &leaderConn{epochEnd: map[int32][2]int64{1: {1, 10}}}
	m := startManager(t, conn)
	m.Follow(r, 2, 3)
	waitFor(t, "a fetch", func() bool { return len(conn.fetchRequests()) > 0 })
	m.Close()
	if got := r.history(); len(got) == 0 || got[0] != "truncate leader 2 epoch 3 at 10" {
		t.Fatalf("calls %q, want a truncation at 10 first", got)
	}
	f := conn.fetchRequests()[0]
	p := f.Topics[0].Partitions[0]
	if f.ReplicaID != 1 || p.FetchOffset != 10 || p.CurrentLeaderEpoch != 3 || p.LastFetchedEpoch != 1 {
		t.Fatalf("fetch as replica %d from %d at epoch %d (last fetched %d), want replica 1 from 10 at epoch 3 (last fetched 1)",
			f.ReplicaID, p.FetchOffset, p.CurrentLeaderEpoch, p.LastFetchedEpoch)
	}
}

// TestFetcherAppliesLeaderAnswers: each kind of answer reaches the
// replica as the call it calls for.
func TestFetcherAppliesLeaderAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(*kmsg.FetchResponseTopicPartition)
		want   string
	}{
		{"data", func(rp *kmsg.FetchResponseTopicPartition) { rp.HighWatermark = 7 }, "append leader 2 epoch 3 bytes 0 hw 7"},
		{"diverging epoch", func(rp *kmsg.FetchResponseTopicPartition) {
			rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset = 0, 4
		}, "truncate leader 2 epoch 3 at 4"},
		{"log starts past ours", func(rp *kmsg.FetchResponseTopicPartition) {
			rp.ErrorCode, rp.LogStartOffset = kerr.OffsetOutOfRange.Code, 100
		}, "restart leader 2 epoch 3 at 100"},
		{"moved to tiered storage", func(rp *kmsg.FetchResponseTopicPartition) {
			rp.ErrorCode = kerr.OffsetMovedToTieredStorage.Code
		}, "restore leader 2 epoch 3 from 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &replica{leo: 8, epochs: [][2]int64{{0, 0}}}
			conn := &leaderConn{epochEnd: map[int32][2]int64{0: {0, 8}}, fetches: []func(*kmsg.FetchResponseTopicPartition){tc.answer}}
			m := startManager(t, conn)
			m.Follow(r, 2, 3)
			waitFor(t, tc.want, func() bool { return slices.Contains(r.history(), tc.want) })
		})
	}
}

// TestAFailingPartitionSitsOutAloneWhileTheOthersAreFetched: a partition
// whose answers keep failing (its leader cannot read its manifest while
// the object store is down, say) is left out of the fetches for the
// backoff, and fetched again after it; the partitions fetched with it are
// fetched meanwhile. The whole fetcher slept the backoff after each such
// answer, and every other partition's copy with it.
func TestAFailingPartitionSitsOutAloneWhileTheOthersAreFetched(t *testing.T) {
	failing, fine := &replica{part: 0}, &replica{part: 1}
	conn := &leaderConn{serve: func(p kmsg.FetchRequestTopicPartition, rp *kmsg.FetchResponseTopicPartition) {
		if p.Partition == failing.part {
			rp.ErrorCode = kerr.KafkaStorageError.Code
		}
	}}
	m := startManager(t, conn)
	m.Follow(failing, 2, 1)
	m.Follow(fine, 2, 1)
	asks := func() (both, fineAlone int) {
		for _, f := range conn.fetchRequests() {
			var has [2]bool
			for _, rt := range f.Topics {
				for _, rp := range rt.Partitions {
					has[rp.Partition] = true
				}
			}
			switch has {
			case [2]bool{true, true}:
				both++
			case [2]bool{false, true}:
				fineAlone++
			}
		}
		return both, fineAlone
	}
	waitFor(t, "fetches of the fine partition alone, and of the failing one again after its backoff", func() bool {
		both, fineAlone := asks()
		return both >= 3 && fineAlone >= 10
	})
}

// TestFollowMovesPartitionsBetweenFetchers: a partition is fetched from
// one leader at a time, and from none when this broker leads it.
func TestFollowMovesPartitionsBetweenFetchers(t *testing.T) {
	conn := &leaderConn{}
	m := startManager(t, conn)
	r := &replica{}
	m.Follow(r, 2, 1)
	m.Follow(r, 3, 2)
	if n := m.Followed(); n != 1 {
		t.Fatalf("followed %d partitions, want 1", n)
	}
	m.Follow(r, 1, 3) // this broker leads
	if n := m.Followed(); n != 0 {
		t.Fatalf("followed %d partitions while leading, want 0", n)
	}
	m.Close()
	m.Close()
	m.Follow(r, 2, 4)
	if n := m.Followed(); n != 0 {
		t.Fatalf("followed %d partitions after Close, want 0", n)
	}
}

// batchesAt is what a leader holding epoch's records from base on answers:
// three batches of two records each.
func batchesAt(base int64, epoch int32) []byte {
	var out []byte
	for i := range int64(3) {
		var err error
		out, err = recordbatch.Build(out, recordbatch.BuildOptions{BaseOffset: base + 2*i, PartitionLeaderEpoch: epoch, ProducerID: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("a")}, {Value: []byte("b")}})
		if err != nil {
			panic(err)
		}
	}
	return out
}

// serveFrom answers each fetch with batchesAt its offset, at the epoch the
// fetch names, and a high watermark hwAhead past the fetch offset.
func serveFrom(hwAhead int64) func(kmsg.FetchRequestTopicPartition, *kmsg.FetchResponseTopicPartition) {
	return func(p kmsg.FetchRequestTopicPartition, rp *kmsg.FetchResponseTopicPartition) {
		rp.RecordBatches = batchesAt(p.FetchOffset, p.CurrentLeaderEpoch)
		rp.HighWatermark = p.FetchOffset + hwAhead
	}
}

// checkContiguous fails unless the ranges appended run from 0 to at least
// end with no gap and no overlap.
func checkContiguous(t *testing.T, r *replica, end int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	next := int64(0)
	for _, a := range r.appended {
		if a[0] != next {
			t.Fatalf("appended %v: a range starts at %d after the log ended at %d", r.appended, a[0], next)
		}
		next = a[1]
	}
	if next < end {
		t.Fatalf("appended up to %d, want at least %d", next, end)
	}
}

// TestFetcherSendsNextFetchBeforeAppending: a follower far behind the
// leader's high watermark has its next fetch, asking from where the answer
// being appended leaves the log and at that answer's epoch, sent before
// the append runs, so that the leader reads while the follower writes.
func TestFetcherSendsNextFetchBeforeAppending(t *testing.T) {
	conn := &leaderConn{serve: serveFrom(1000)}
	r := &replica{}
	var sentAtFirstAppend []*kmsg.FetchRequest
	r.onAppend = func(r *replica) {
		if sentAtFirstAppend == nil {
			sentAtFirstAppend = conn.fetchRequests()
		}
	}
	m := startManager(t, conn)
	m.Follow(r, 2, 3)
	waitFor(t, "60 records", func() bool { return r.LogEndOffset() >= 60 })
	m.Close()
	if len(sentAtFirstAppend) < 2 {
		t.Fatalf("%d fetches sent when the first answer was appended, want the next one sent already", len(sentAtFirstAppend))
	}
	p := sentAtFirstAppend[1].Topics[0].Partitions[0]
	if p.FetchOffset != 6 || p.LastFetchedEpoch != 3 || p.CurrentLeaderEpoch != 3 {
		t.Fatalf("second fetch from %d, last fetched epoch %d, at epoch %d; want from 6 (the end after the first answer), 3, 3",
			p.FetchOffset, p.LastFetchedEpoch, p.CurrentLeaderEpoch)
	}
	checkContiguous(t, r, 60)
}

// TestFetcherAtHighWatermarkAppendsBeforeFetching: an answer that brings
// the follower to the leader's high watermark is appended before the next
// fetch is sent: a fetch offset tells the leader what the follower holds,
// which moves the high watermark and the ISR, so it must not run ahead of
// the log.
func TestFetcherAtHighWatermarkAppendsBeforeFetching(t *testing.T) {
	conn := &leaderConn{serve: serveFrom(6)}
	r := &replica{}
	var sent []int
	r.onAppend = func(r *replica) { sent = append(sent, len(conn.fetchRequests())) }
	m := startManager(t, conn)
	m.Follow(r, 2, 3)
	waitFor(t, "30 records", func() bool { return r.LogEndOffset() >= 30 })
	m.Close()
	for i, n := range sent {
		if n != i+1 {
			t.Fatalf("fetches sent at each append: %v, want the nth append to see only n", sent)
		}
	}
	checkContiguous(t, r, 30)
}

// TestFetcherLeaderChangeMidPipelineLeavesNoGap: the leader epoch changes
// while a pipelined fetch is in flight. Its answer, fetched under the old
// epoch, is not appended; the follower checks divergence at the new epoch
// and goes on from its own log end: no gap, no record twice.
func TestFetcherLeaderChangeMidPipelineLeavesNoGap(t *testing.T) {
	conn := &leaderConn{serve: serveFrom(1000), epochEnd: map[int32][2]int64{3: {3, 6}}}
	r := &replica{following: &[2]int32{2, 3}}
	var m *Manager
	inFlight := 0
	r.onAppend = func(r *replica) {
		if inFlight == 0 {
			inFlight = len(conn.fetchRequests())
			// The partition moves to epoch 4 first (under its lock, as
			// the broker's does), then its fetcher learns of it.
			r.following = &[2]int32{2, 4}
			m.Follow(r, 2, 4)
		}
	}
	m = startManager(t, conn)
	m.Follow(r, 2, 3)
	waitFor(t, "60 records", func() bool { return r.LogEndOffset() >= 60 })
	m.Close()
	if inFlight < 2 {
		t.Fatalf("%d fetches sent at the first append, want a second in flight", inFlight)
	}
	checkContiguous(t, r, 60)
	calls := r.history()
	if !slices.Contains(calls, "refused append leader 2 epoch 3") {
		t.Fatalf("calls %q: the in-flight answer of epoch 3 was not offered and refused", calls)
	}
	if !slices.Contains(calls, "truncate leader 2 epoch 4 at 6") {
		t.Fatalf("calls %q: no divergence check at epoch 4", calls)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.epochs) != 2 || r.epochs[1] != [2]int64{4, 6} {
		t.Fatalf("epochs %v, want epoch 4 from offset 6", r.epochs)
	}
}

// TestFetcherDropsPipelinedAnswerAfterFailedAppend: the answer a pipelined
// fetch brings starts where the previous answer would have ended the log;
// when that append failed, it is dropped, not appended past a gap, and the
// follower asks again from its real end.
func TestFetcherDropsPipelinedAnswerAfterFailedAppend(t *testing.T) {
	conn := &leaderConn{serve: serveFrom(1000)}
	r := &replica{failAppends: 1}
	m := startManager(t, conn)
	m.Follow(r, 2, 3)
	waitFor(t, "60 records", func() bool { return r.LogEndOffset() >= 60 })
	m.Close()
	checkContiguous(t, r, 60)
}
