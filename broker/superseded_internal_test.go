package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// leaseHost is a replicaHost whose registration is proven until a set
// time; it replicates nothing.
type leaseHost struct{ until time.Time }

func (h *leaseHost) follow(*partition, int32, int32)            {}
func (h *leaseHost) alterISR(*partition, []int32, int32, int32) {}
func (h *leaseHost) replicaLagMax() time.Duration               { return time.Hour }
func (h *leaseHost) isrIneligible(int32) bool                   { return false }
func (h *leaseHost) leaseProvenUntil() time.Time                { return h.until }

// TestLeaderRefusesWritesItCannotProve: a leader whose lease may have
// expired, with no in-sync follower's recent word that it still leads,
// accepts no write (acks=1 or the group coordinator's), and neither its
// group coordinator nor a client's ListOffsets or OffsetForLeaderEpoch is
// answered from the partition's state (leadershipLapsed), since the
// controller may have elected one of those followers; it accepts them
// again once a follower's word or a renewal proves the leadership, and
// always when no other replica can be elected (it is alone in the ISR,
// unclean election off).
func TestLeaderRefusesWritesItCannotProve(t *testing.T) {
	p, host := leaderOfThree(t, time.Now().Add(time.Hour))
	cfg := p.cfg.Load()
	produce := func(now time.Time) error {
		t.Helper()
		raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("v")}})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = p.appendProduce(recordbatch.Batch(raw), recordbatch.Summary{Records: 1, MinTimestamp: recordbatch.NoTimestamp, MaxTimestamp: recordbatch.NoTimestamp}, 1, now)
		return err
	}
	internal := func() error {
		raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("g")}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.appendInternal(recordbatch.Batch(raw))
		return err
	}
	now := time.Now()
	if err := produce(now); err != nil {
		t.Fatalf("with the lease proven: %v", err)
	}

	host.until = now.Add(-time.Millisecond)
	if err := produce(now); !errors.Is(err, errNotLeader) {
		t.Fatalf("lease unproven, no follower's word: %v, want errNotLeader", err)
	}
	if err := internal(); !errors.Is(err, errNotLeader) {
		t.Fatalf("coordinator append with the lease unproven, no follower's word: %v, want errNotLeader", err)
	}
	// Nor does the group coordinator answer from the partition's state.
	coordinator := &offsetsLog{p: p}
	if coordinator.Leads() {
		t.Fatal("the coordinator's log leads with the lease unproven and no follower's word")
	}
	// Nor are clients' ListOffsets and OffsetForLeaderEpoch answered.
	if !p.leadershipLapsed() {
		t.Fatal("the leadership has not lapsed with the lease unproven and no follower's word")
	}

	// A follower's word at an older epoch proves nothing; at this one it
	// proves the leadership for contactHolds after it was asked.
	p.provedBy(2, now)
	if err := produce(now); !errors.Is(err, errNotLeader) {
		t.Fatalf("with a follower's word at an older epoch: %v, want errNotLeader", err)
	}
	p.provedBy(3, time.Now())
	if !coordinator.Leads() || p.leadershipLapsed() {
		t.Fatal("the leadership is not proven by an in-sync follower's word")
	}
	p.superseded.Store(&supersession{epoch: 3, leader: 2, leaderEpoch: 4})
	if coordinator.Leads() {
		t.Fatal("the coordinator's log leads though a peer names a newer leader")
	}
	p.superseded.Store(nil)
	p.contact.Store(nil)
	p.provedBy(3, now)
	if err := produce(now.Add(contactHolds / 2)); err != nil {
		t.Fatalf("with an in-sync follower's word: %v", err)
	}
	if err := produce(now.Add(contactHolds)); !errors.Is(err, errNotLeader) {
		t.Fatalf("a follower's word older than contactHolds: %v, want errNotLeader", err)
	}

	// Alone in the ISR: nobody else can be elected, so it keeps serving...
	p.setLeadership(leadership{leader: 1, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1}, partitionEpoch: 1})
	if err := produce(now.Add(time.Hour)); err != nil {
		t.Fatalf("alone in the ISR with the lease unproven: %v", err)
	}
	// ...unless the topic allows an unclean election.
	ucfg := *cfg
	ucfg.uncleanLeaderElect = true
	p.cfg.Store(&ucfg)
	if err := produce(now.Add(time.Hour)); !errors.Is(err, errNotLeader) {
		t.Fatalf("alone in the ISR, unclean election allowed, lease unproven: %v, want errNotLeader", err)
	}
	p.cfg.Store(cfg)

	// A replication factor of 1: nobody else at all.
	p.setLeadership(leadership{leader: 1, leaderEpoch: 4, replicas: []int32{1}, isr: []int32{1}, partitionEpoch: 2})
	p.cfg.Store(&ucfg)
	if err := produce(now.Add(time.Hour)); err != nil {
		t.Fatalf("replication factor 1 with the lease unproven: %v", err)
	}

	// A renewal proves it again.
	p.setLeadership(leadership{leader: 1, leaderEpoch: 5, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 3})
	host.until = now.Add(2 * time.Hour)
	if err := produce(now.Add(time.Hour)); err != nil {
		t.Fatalf("with the lease proven again: %v", err)
	}
}

// TestACoordinatorsReadWaitsForAFollowersWordAskedAfterIt: with its lease
// out, the group coordinator's read fence (before OffsetFetch reads
// commits) passes at once on a valid lease, and otherwise waits for an
// in-sync follower's word asked after the read arrived: a word asked
// before it does not do, since that follower may have been elected and
// have acknowledged commits since. No such word before the last one
// lapses (or within readFenceWait): the read is refused.
func TestACoordinatorsReadWaitsForAFollowersWordAskedAfterIt(t *testing.T) {
	p, host := leaderOfThree(t, time.Now().Add(time.Hour))
	l := &offsetsLog{p: p}
	if err := l.ReadFence(context.Background(), time.Now()); err != nil {
		t.Fatalf("read fence with the lease valid: %v", err)
	}
	host.until = time.Now().Add(-time.Millisecond)
	p.provedBy(3, time.Now()) // asked before the read arrives
	time.Sleep(10 * time.Millisecond)
	const later = 200 * time.Millisecond
	go func() {
		time.Sleep(later)
		p.provedBy(3, time.Now())
	}()
	start := time.Now()
	if err := l.ReadFence(context.Background(), start); err != nil {
		t.Fatalf("read fence with a follower's word asked after the read: %v", err)
	}
	if took := time.Since(start); took < later {
		t.Fatalf("the read fence passed after %s, on a word asked before the read", took)
	}
	// No word after this read: refused once the last word lapses (or
	// after readFenceWait, whichever comes first).
	if err := l.ReadFence(context.Background(), time.Now()); !errors.Is(err, group.ErrNotLeader) {
		t.Fatalf("read fence with no follower's word after the read: %v, want ErrNotLeader", err)
	}
}

// TestFollowerThatNoLongerListsTheLeaderProvesItsLeadership: a follower
// whose metadata no longer lists its leader as registered (the leader's
// lease expired while etcd was away) answers LEADER_NOT_AVAILABLE, with
// no leader, at the leader's epoch: it has seen no other leader, so its
// answer proves the leadership as one naming the leader does. Taken as
// no answer, the leader refused every write while etcd was away. At a
// newer epoch it is proof that the leadership is over.
func TestFollowerThatNoLongerListsTheLeaderProvesItsLeadership(t *testing.T) {
	p, _ := leaderOfThree(t, time.Now().Add(-time.Second))
	b := &Broker{cfg: Config{NodeID: 1}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	answer := func(epoch int32) *kmsg.MetadataResponse {
		resp := kmsg.NewPtrMetadataResponse()
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr("fence")
		rt.TopicID = [16]byte{1}
		rp := kmsg.NewMetadataResponseTopicPartition()
		rp.ErrorCode = kerr.LeaderNotAvailable.Code
		rp.Leader, rp.LeaderEpoch = -1, epoch
		rp.Replicas, rp.ISR = []int32{1, 2, 3}, []int32{1, 2, 3}
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp
	}
	now := time.Now()
	b.recordSupersessions(2, []*partition{p}, answer(3), now)
	if !p.leadershipProven(p.state.Load(), now) {
		t.Fatal("a follower at the leader's epoch that names no leader did not prove the leadership")
	}
	if p.supersededAt(3) != nil {
		t.Fatal("superseded by a follower at the same epoch")
	}
	b.recordSupersessions(3, []*partition{p}, answer(4), now)
	if p.supersededAt(3) == nil {
		t.Fatal("a follower at a newer epoch did not end the leadership")
	}
}

// leaderOfThree returns a partition led by broker 1 at epoch 3, with
// brokers 1, 2 and 3 in its ISR, whose lease is proven until until.
func leaderOfThree(t *testing.T, until time.Time) (*partition, *leaseHost) {
	t.Helper()
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	cfg := &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62}
	p := newPartition("fence", [16]byte{1}, 0, 1, log, cfg)
	host := &leaseHost{until: until}
	p.host = host
	p.setLeadership(leadership{leader: 1, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, partitionEpoch: 0})
	return p, host
}
