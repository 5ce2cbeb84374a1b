package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// fakeClock fires timers only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	when    time.Time
	seq     int
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves time forward, firing due timers in order (each callback
// runs synchronously, so its post to a shard is queued on return).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	for {
		sort.Slice(c.timers, func(i, j int) bool {
			if !c.timers[i].when.Equal(c.timers[j].when) {
				return c.timers[i].when.Before(c.timers[j].when)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.stopped {
				live = append(live, t)
			}
		}
		c.timers = live
		if len(c.timers) == 0 || c.timers[0].when.After(target) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.stopped = true
		c.now = t.when
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = target
	c.mu.Unlock()
}

// memLog is an in-memory Log with fault injection.
type memLog struct {
	mu      sync.Mutex
	batches [][]byte
	start   int64
	next    int64
	appends int
	// failAppends fails that many appends with failErr.
	failAppends int
	failErr     error
	// gate, when set, blocks each Append until a value is received.
	gate chan struct{}
	// scanGate, when set, blocks Scan until closed.
	scanGate chan struct{}
	// latency is added to every append (a disk write and replication).
	latency time.Duration
	// unproven makes Leads report false (the leadership cannot be
	// proven).
	unproven atomic.Bool
	// fenceFails makes ReadFence fail while Leads holds (no word from a
	// follower asked after the read arrived).
	fenceFails atomic.Bool
	// fencedBelow fences a producer's epochs below the value
	// (AppendTransactional fails with ErrProducerFenced).
	fencedBelow map[int64]int16
	txnAppends  int
	// deletes records the offsets DeleteBefore was called with.
	deletes []int64
}

func (l *memLog) Leads() bool { return !l.unproven.Load() }

func (l *memLog) ReadFence(context.Context, time.Time) error {
	if l.unproven.Load() || l.fenceFails.Load() {
		return ErrNotLeader
	}
	return nil
}

func (l *memLog) Append(ctx context.Context, recs []recordbatch.Record) (int64, error) {
	return l.append(ctx, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
}

// AppendTransactional stores the records as a transactional batch of the
// producer, as the broker's partition does (without its producer-state
// checks, except that a test may fence epochs below fencedBelow).
func (l *memLog) AppendTransactional(ctx context.Context, producerID int64, producerEpoch int16, recs []recordbatch.Record) (int64, error) {
	l.mu.Lock()
	fenced := producerEpoch < l.fencedBelow[producerID]
	l.txnAppends++
	l.mu.Unlock()
	if fenced {
		return 0, fmt.Errorf("memlog: epoch %d: %w", producerEpoch, ErrProducerFenced)
	}
	return l.append(ctx, recordbatch.BuildOptions{Transactional: true, ProducerID: producerID, ProducerEpoch: producerEpoch, BaseSequence: -1}, recs)
}

// appendMarker appends a COMMIT or ABORT marker of the producer, as the
// broker does for the transaction coordinator, and returns its offset.
func (l *memLog) appendMarker(t testing.TB, producerID int64, producerEpoch int16, commit bool) int64 {
	t.Helper()
	typ := kmsg.ControlRecordKeyType(controlAbort)
	if commit {
		typ = controlCommit
	}
	key := kmsg.ControlRecordKey{Version: 0, Type: typ}
	value := kmsg.EndTxnMarker{Version: 0, CoordinatorEpoch: 1}
	off, err := l.append(ctx, recordbatch.BuildOptions{Transactional: true, Control: true, ProducerID: producerID, ProducerEpoch: producerEpoch, BaseSequence: -1},
		[]recordbatch.Record{{Key: key.AppendTo(nil), Value: value.AppendTo(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	return off
}

func (l *memLog) append(ctx context.Context, opts recordbatch.BuildOptions, recs []recordbatch.Record) (int64, error) {
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if l.latency > 0 {
		time.Sleep(l.latency)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failAppends > 0 {
		l.failAppends--
		return 0, l.failErr
	}
	opts.BaseOffset, opts.BaseTimestamp = l.next, 1
	b, err := recordbatch.Build(nil, opts, recs)
	if err != nil {
		return 0, err
	}
	base := l.next
	l.batches = append(l.batches, b)
	l.next += int64(len(recs))
	l.appends++
	return base, nil
}

func (l *memLog) Scan(ctx context.Context, fn func(recordbatch.Batch) error) error {
	if l.scanGate != nil {
		select {
		case <-l.scanGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	l.mu.Lock()
	bs := append([][]byte(nil), l.batches...)
	l.mu.Unlock()
	for _, b := range bs {
		if err := fn(recordbatch.Batch(b)); err != nil {
			return err
		}
	}
	return nil
}

func (l *memLog) DeleteBefore(off int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off < l.start || off > l.next {
		return errors.New("memlog: offset out of range")
	}
	l.deletes = append(l.deletes, off)
	l.start = off
	keep := l.batches[:0]
	for _, b := range l.batches {
		if recordbatch.Batch(b).NextOffset() > off {
			keep = append(keep, b)
		}
	}
	l.batches = keep
	return nil
}

func (l *memLog) bytes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, b := range l.batches {
		n += len(b)
	}
	return n
}

func (l *memLog) stats() (start, next int64, appends int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.start, l.next, l.appends
}

// fakeTopics knows a fixed set of topics.
type fakeTopics map[string]topicInfo

func (f fakeTopics) TopicByName(name string) ([16]byte, int32, bool) {
	t, ok := f[name]
	return t.id, t.partitions, ok
}

func (f fakeTopics) TopicByID(id [16]byte) (string, int32, bool) {
	for n, t := range f {
		if t.id == id {
			return n, t.partitions, true
		}
	}
	return "", 0, false
}

func (f fakeTopics) TopicNames() []string {
	var out []string
	for n := range f {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func topicID(b byte) [16]byte { return [16]byte{15: b, 0: 0xaa} }

// env is a coordinator with one offsets partition over a memLog, driven by
// a fake clock.
type env struct {
	t     testing.TB
	clock *fakeClock
	log   *memLog
	c     *Coordinator
	cfg   Config
	opts  Options
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.InitialRebalanceDelay = 0
	cfg.OffsetsTopicNumPartitions = 1
	return cfg
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := testConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	e := &env{t: t, clock: newFakeClock(), log: &memLog{}, cfg: cfg}
	e.opts = Options{Clock: e.clock, Logger: quietLogger()}
	e.start()
	return e
}

// start (re)creates the coordinator over the same log, as a broker
// restart or a coordinator move does.
func (e *env) start() {
	e.t.Helper()
	if e.c != nil {
		e.c.Close()
	}
	c, err := New(e.cfg, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.c = c
	e.t.Cleanup(c.Close)
	c.Load(0, e.log)
	e.waitLoaded(0)
}

func (e *env) waitLoaded(p int32) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !e.c.Loaded(p) {
		if time.Now().After(deadline) {
			e.t.Fatal("partition never loaded")
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) shard() *shard {
	e.c.mu.RLock()
	defer e.c.mu.RUnlock()
	return e.c.mu.shards[0]
}

// barrier waits until the shard has processed everything queued before it.
func (e *env) barrier() {
	e.t.Helper()
	s := e.shard()
	if _, code := await(context.Background(), s, func(reply func(struct{})) { reply(struct{}{}) }); code != 0 {
		e.t.Fatalf("barrier: code %d", code)
	}
}

// onLoop runs fn on the shard's goroutine (for inspecting state).
func (e *env) onLoop(fn func(s *shard)) {
	e.t.Helper()
	s := e.shard()
	if _, code := await(context.Background(), s, func(reply func(struct{})) { fn(s); reply(struct{}{}) }); code != 0 {
		e.t.Fatalf("onLoop: code %d", code)
	}
}

// settle waits until the shard has no append queued or in flight.
func (e *env) settle() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := false
		e.onLoop(func(s *shard) { busy = s.appending || len(s.pending) > 0 })
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal("appends never settled")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// advance moves the clock and waits for the timers' work to be done.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	e.clock.Advance(d)
	e.barrier()
	e.settle()
}

// async runs fn in a goroutine and returns its result channel.
func async[T any](fn func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- fn() }()
	return ch
}

func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
		panic("unreachable")
	}
}

// pending asserts that nothing has arrived on ch (after a barrier).
func pendingCh[T any](t *testing.T, e *env, ch <-chan T) {
	t.Helper()
	e.barrier()
	select {
	case v := <-ch:
		t.Fatalf("unexpected response %+v", v)
	default:
	}
}

var ctx = context.Background()

// consumer protocol helpers

func subscription(topics ...string) []byte {
	m := kmsg.NewConsumerMemberMetadata()
	m.Version = 0
	m.Topics = topics
	return m.AppendTo(nil)
}

func joinReq(version int16, group, memberID, instanceID string) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Version = version
	r.Group = group
	r.MemberID = memberID
	r.SessionTimeoutMillis = 10_000
	r.RebalanceTimeoutMillis = 30_000
	r.ProtocolType = "consumer"
	if instanceID != "" {
		r.InstanceID = &instanceID
	}
	r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: subscription("t")}}
	return r
}

// join submits a JoinGroup on the shard's goroutine and returns once it
// has been taken in (so that a following clock advance sees it); the
// response arrives on the channel when the round completes.
func (e *env) join(req *kmsg.JoinGroupRequest) <-chan *kmsg.JoinGroupResponse {
	e.t.Helper()
	if req.Group == "" {
		return async(func() *kmsg.JoinGroupResponse { return e.c.JoinGroup(ctx, ClientInfo{}, req) })
	}
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	e.onLoop(func(s *shard) {
		s.joinGroup(ClientInfo{ClientID: "client", ClientHost: "/127.0.0.1"}, req, func(r *kmsg.JoinGroupResponse) { ch <- r })
	})
	return ch
}

// joinNew joins a dynamic member through the MEMBER_ID_REQUIRED round and
// returns the channel of its second JoinGroup.
func (e *env) joinNew(group string) (string, <-chan *kmsg.JoinGroupResponse) {
	e.t.Helper()
	r := recv(e.t, e.join(joinReq(9, group, "", "")))
	if r.ErrorCode != codeMemberIDRequired || r.MemberID == "" {
		e.t.Fatalf("first join: code %d member %q", r.ErrorCode, r.MemberID)
	}
	return r.MemberID, e.join(joinReq(9, group, r.MemberID, ""))
}

func (e *env) sync(group, member string, gen int32, assign map[string][]byte) <-chan *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version = 5
	r.Group, r.MemberID, r.Generation = group, member, gen
	for id, a := range assign {
		r.GroupAssignment = append(r.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: id, MemberAssignment: a})
	}
	return e.syncReq(r)
}

// syncReq submits a SyncGroup like join does.
func (e *env) syncReq(r *kmsg.SyncGroupRequest) <-chan *kmsg.SyncGroupResponse {
	e.t.Helper()
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	e.onLoop(func(s *shard) { s.syncGroup(r, func(resp *kmsg.SyncGroupResponse) { ch <- resp }) })
	return ch
}

func (e *env) syncStatic(group, member, instance string, gen int32) <-chan *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version = 5
	r.Group, r.MemberID, r.Generation, r.InstanceID = group, member, gen, &instance
	return e.syncReq(r)
}

func (e *env) heartbeat(group, member string, gen int32, instance string) int16 {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Version = 4
	r.Group, r.MemberID, r.Generation = group, member, gen
	if instance != "" {
		r.InstanceID = &instance
	}
	return e.c.Heartbeat(ctx, r).ErrorCode
}

func (e *env) leave(group string, members ...kmsg.LeaveGroupRequestMember) *kmsg.LeaveGroupResponse {
	r := kmsg.NewPtrLeaveGroupRequest()
	r.Version = 5
	r.Group = group
	r.Members = members
	return e.c.LeaveGroup(ctx, r)
}

func commitReq(group, member string, gen int32, topic string, offsets map[int32]int64) *kmsg.OffsetCommitRequest {
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version = 9
	r.Group, r.MemberID, r.Generation = group, member, gen
	t := kmsg.NewOffsetCommitRequestTopic()
	t.Topic = topic
	ps := make([]int32, 0, len(offsets))
	for p := range offsets {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	for _, p := range ps {
		pp := kmsg.NewOffsetCommitRequestTopicPartition()
		pp.Partition, pp.Offset, pp.LeaderEpoch = p, offsets[p], 3
		md := "md"
		pp.Metadata = &md
		t.Partitions = append(t.Partitions, pp)
	}
	r.Topics = []kmsg.OffsetCommitRequestTopic{t}
	return r
}

// commitCodes returns partition -> code of a commit.
func (e *env) commit(req *kmsg.OffsetCommitRequest) map[int32]int16 {
	resp := e.c.OffsetCommit(ctx, req)
	out := map[int32]int16{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p.ErrorCode
		}
	}
	return out
}

// fetchAll returns the group's committed offsets as topic/partition -> offset.
func (e *env) fetchAll(group string) (map[topicPartition]int64, int16) {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = 9
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = group
	r.Groups = []kmsg.OffsetFetchRequestGroup{g}
	resp := e.c.OffsetFetch(ctx, r)
	out := map[topicPartition]int64{}
	rg := resp.Groups[0]
	for _, t := range rg.Topics {
		for _, p := range t.Partitions {
			out[topicPartition{t.Topic, p.Partition}] = p.Offset
		}
	}
	return out, rg.ErrorCode
}

func (e *env) describe(group string) kmsg.DescribeGroupsResponseGroup {
	r := kmsg.NewPtrDescribeGroupsRequest()
	r.Version = 5
	r.Groups = []string{group}
	return e.c.DescribeGroups(ctx, r).Groups[0]
}

// stableGroup builds a Stable group of n dynamic members and returns their
// ids (the first is the leader) and the generation.
func (e *env) stableGroup(group string, n int) ([]string, int32) {
	e.t.Helper()
	var ids []string
	var chans []<-chan *kmsg.JoinGroupResponse
	for i := 0; i < n; i++ {
		id, ch := e.joinNew(group)
		if i == 0 {
			// The first member completes the round alone (no
			// initial delay); the others make it rebalance.
			r := recv(e.t, ch)
			if r.ErrorCode != 0 {
				e.t.Fatalf("join: %d", r.ErrorCode)
			}
			ids = append(ids, id)
			if n == 1 {
				chans = nil
				gen := r.Generation
				s := recv(e.t, e.sync(group, id, gen, map[string][]byte{id: []byte("a0")}))
				if s.ErrorCode != 0 {
					e.t.Fatalf("sync: %d", s.ErrorCode)
				}
				return ids, gen
			}
			continue
		}
		ids = append(ids, id)
		chans = append(chans, ch)
	}
	// Everyone already in rejoins.
	first := e.join(joinReq(9, group, ids[0], ""))
	all := append([]<-chan *kmsg.JoinGroupResponse{first}, chans...)
	var gen int32
	var leader string
	for _, ch := range all {
		r := recv(e.t, ch)
		if r.ErrorCode != 0 {
			e.t.Fatalf("join: %d", r.ErrorCode)
		}
		gen, leader = r.Generation, r.LeaderID
	}
	assign := map[string][]byte{}
	for i, id := range ids {
		assign[id] = []byte{byte('a'), byte('0' + i)}
	}
	var syncs []<-chan *kmsg.SyncGroupResponse
	for _, id := range ids {
		if id == leader {
			syncs = append(syncs, e.sync(group, id, gen, assign))
		} else {
			syncs = append(syncs, e.sync(group, id, gen, nil))
		}
	}
	for _, ch := range syncs {
		if r := recv(e.t, ch); r.ErrorCode != 0 {
			e.t.Fatalf("sync: %d", r.ErrorCode)
		}
	}
	if leader != ids[0] {
		e.t.Fatalf("leader %s, want %s", leader, ids[0])
	}
	return ids, gen
}
