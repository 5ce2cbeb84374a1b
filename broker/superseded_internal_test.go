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
	p.provedBy(2, 2, now, true)
	if err := produce(now); !errors.Is(err, errNotLeader) {
		t.Fatalf("with a follower's word at an older epoch: %v, want errNotLeader", err)
	}
	p.provedBy(3, 2, time.Now(), true)
	if !coordinator.Leads() || p.leadershipLapsed() {
		t.Fatal("the leadership is not proven by an in-sync follower's word")
	}
	p.superseded.Store(&supersession{epoch: 3, leader: 2, leaderEpoch: 4})
	if coordinator.Leads() {
		t.Fatal("the coordinator's log leads though a peer names a newer leader")
	}
	p.superseded.Store(nil)
	p.contact.Store(nil)
	p.provedBy(3, 2, now, true)
	if err := produce(now.Add(contactHolds / 2)); err != nil {
		t.Fatalf("with an in-sync follower's word: %v", err)
	}
	if err := produce(now.Add(contactHolds + time.Millisecond)); !errors.Is(err, errNotLeader) {
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
	p.provedBy(3, 2, time.Now(), true) // asked before the read arrives
	time.Sleep(10 * time.Millisecond)
	const later = 200 * time.Millisecond
	go func() {
		time.Sleep(later)
		p.provedBy(3, 2, time.Now(), true)
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

// TestAFollowerCutFromEtcdTooProvesNothingAlone: the double fault. The
// leader is cut from etcd and from follower 3; follower 2 is cut from etcd
// too but still reaches the leader. The controller drops both from the ISR
// and elects 3, whose commits need no word from 2, so 2's word (its own
// lease unproven) proves nothing alone: the leader refuses writes, and its
// coordinator's reads do not pass the fence. Words from both followers
// (etcd away for everyone) prove it, as does one from an in-sync follower
// registered as it answered; a registered follower that a shrink in flight
// may have dropped from the ISR does not.
func TestAFollowerCutFromEtcdTooProvesNothingAlone(t *testing.T) {
	p, _ := leaderOfThree(t, time.Now().Add(-time.Millisecond))
	proven := func() bool {
		t.Helper()
		p.appendMu.RLock()
		defer p.appendMu.RUnlock()
		return p.leadershipProven(p.state.Load(), time.Now())
	}
	start := time.Now()
	p.provedBy(3, 2, start, false)
	if proven() {
		t.Fatal("proven by the word of one follower whose own lease is unproven")
	}
	if ok, _ := p.provenSince(start); ok {
		t.Fatal("a read passes the fence on the word of one follower whose own lease is unproven")
	}
	p.provedBy(3, 3, start, false)
	if !proven() {
		t.Fatal("not proven by the words of every electable replica")
	}
	if ok, _ := p.provenSince(start); !ok {
		t.Fatal("a read does not pass the fence on words of every electable replica asked after it")
	}
	if ok, _ := p.provenSince(start.Add(time.Millisecond)); ok {
		t.Fatal("a read passes the fence on words asked before it")
	}

	p.contact.Store(nil)
	p.provedBy(3, 2, time.Now(), true)
	if !proven() {
		t.Fatal("not proven by the word of an in-sync follower registered as it answered")
	}
	// A shrink to {1, 3} in flight may have landed: 2 may be out of the
	// ISR the controller elects from.
	p.repl.Lock()
	p.repl.pendingISR, p.repl.pendingFrom = []int32{1, 3}, 0
	p.repl.Unlock()
	if proven() {
		t.Fatal("proven by a registered follower that an ISR shrink in flight drops")
	}
}

// TestFollowerThatNoLongerListsTheLeaderProvesItsLeadership: a follower
// whose metadata no longer lists its leader as registered (the leader's
// lease expired while etcd was away) answers LEADER_NOT_AVAILABLE, with
// no leader, at the leader's epoch: it has seen no other leader, so its
// answer counts as one naming the leader does. Taken as no answer, the
// leader refused every write while etcd was away. Its own lease unproven,
// it proves the leadership only with the other follower's word; with
// leaseProvenTag, alone. At a newer epoch it is proof that the leadership
// is over.
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
	if p.leadershipProven(p.state.Load(), now) {
		t.Fatal("one follower cut from etcd too (no leaseProvenTag) proved the leadership alone")
	}
	b.recordSupersessions(3, []*partition{p}, answer(3), now)
	if !p.leadershipProven(p.state.Load(), now) {
		t.Fatal("every follower at the leader's epoch naming no leader did not prove the leadership")
	}
	if p.supersededAt(3) != nil {
		t.Fatal("superseded by a follower at the same epoch")
	}
	p.contact.Store(nil)
	registered := answer(3)
	registered.UnknownTags.Set(leaseProvenTag, []byte{1})
	b.recordSupersessions(2, []*partition{p}, registered, now)
	if !p.leadershipProven(p.state.Load(), now) {
		t.Fatal("an in-sync follower registered as it answered did not prove the leadership alone")
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
