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
)

// replica is a follower partition in memory: a log end, one leader epoch
// per range, and a record of what the fetcher asked of it.
type replica struct {
	mu     sync.Mutex
	leo    int64
	epochs [][2]int64 // (epoch, start offset), ascending
	calls  []string
}

func (r *replica) Topic() string     { return "t" }
func (r *replica) Partition() int32  { return 0 }
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
	r.record("append leader %d epoch %d bytes %d hw %d", leader, epoch, len(batches), hw)
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
// each Fetch with the next of fetches (then an empty answer after a short
// wait), and records every request.
type leaderConn struct {
	mu       sync.Mutex
	epochEnd map[int32][2]int64 // asked epoch -> (epoch, end offset)
	fetches  []func(*kmsg.FetchResponseTopicPartition)
	requests []kmsg.Request
}

func (c *leaderConn) Close() {}

func (c *leaderConn) Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	c.mu.Lock()
	c.requests = append(c.requests, req)
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
		c.mu.Unlock()
		if answer == nil {
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
				if answer != nil {
					answer(&rp)
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
	m := NewManager(context.Background(), Config{
		Self: 1, FetchWaitMax: 10 * time.Millisecond,
		Addr: func(id int32) (string, bool) { return fmt.Sprintf("broker-%d:9092", id), id == 2 },
		Dial: func(context.Context, string) (Conn, error) { return conn, nil },
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
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
