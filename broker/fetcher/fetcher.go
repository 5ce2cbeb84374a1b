// Package fetcher runs a follower broker's replica fetchers: one per
// leader broker it follows partitions of (Kafka's one fetcher per
// (follower, leader) pair). A fetcher first finds where each newly followed
// partition's log diverges from the leader's (OffsetForLeaderEpoch,
// KIP-101 and KIP-279) and has it truncated there, then fetches in a loop
// with the broker's replica id, handing what it gets to the partition with
// the leader's offsets and epochs and high watermark.
//
// The decisions (where to truncate) are the replication package's; the
// partition behind the Replica interface owns its log and checks, under
// its own locks, that it still follows the leader and epoch a fetch was
// made for. The fetcher owns only the connection and the loop.
package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// Inter-broker request versions: Fetch v12 is the first with the last
// fetched epoch and the diverging-epoch answer (KIP-320) and still names
// topics; OffsetForLeaderEpoch v4 is flexible.
const (
	FetchVersion             = 12
	OffsetForLeaderEpochVers = 4
	// FetchMaxBytes is what one replica fetch asks for at most.
	FetchMaxBytes     = 16 << 20
	partitionMaxBytes = 1 << 20
)

// ErrNotFollower is what a Replica returns when it no longer follows the
// leader and epoch a call names: the fetcher drops the answer quietly.
var ErrNotFollower = errors.New("fetcher: no longer following that leader and epoch")

// Replica is the follower partition a fetcher writes to. Each write names
// the leader and leader epoch it was fetched under; the replica applies it
// only while it still follows them (else ErrNotFollower), excluding its own
// appends while it does.
type Replica interface {
	Topic() string
	Partition() int32
	TopicID() [16]byte
	// LatestEpoch is the newest leader epoch in the local log (-1: none).
	LatestEpoch() int32
	// EndOffsetForEpoch is the local log's answer to OffsetForLeaderEpoch.
	EndOffsetForEpoch(epoch int32) (foundEpoch int32, endOffset int64, ok bool)
	LogEndOffset() int64
	// LogStartOffset is the start of the local log.
	LogStartOffset() int64
	// Append appends whole batches with the leader's offsets and epochs
	// and takes the leader's high watermark, capped at the log end, and
	// the leader's log start when it is past the local one (records the
	// leader deleted: DeleteRecords, retention), capped the same way.
	Append(leader, leaderEpoch int32, batches []byte, leaderHW, leaderLogStart int64) error
	// Truncate cuts the log at offset (a divergent tail).
	Truncate(leader, leaderEpoch int32, offset int64) error
	// Restart empties the log and starts it at offset: the leader's log
	// starts past this replica's end.
	Restart(leader, leaderEpoch int32, offset int64) error
	// RestoreFromBucket starts the log where the object store's copy of
	// the partition ends, when offset is below the leader's local log
	// (KIP-405's follower path).
	RestoreFromBucket(ctx context.Context, leader, leaderEpoch int32, offset int64) error
}

// Conn is one authenticated connection to a leader broker. Request sends
// a request and reads its answer; Send and Receive do the two halves apart,
// so that a request can be in flight while the caller works, and answers
// come back in the order requests were sent. A response's byte fields
// (record batches) may alias a buffer the next Request or Receive reuses:
// the fetcher is done with them when it reads again. Any error leaves it
// unusable.
type Conn interface {
	Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error)
	Send(ctx context.Context, req kmsg.Request) error
	Receive(ctx context.Context) (kmsg.Response, error)
	Close()
}

// Config is what the fetchers need of their broker.
type Config struct {
	// Self is this broker's id, the replica id of its fetches.
	Self int32
	// FetchWaitMax is replica.fetch.wait.max.ms.
	FetchWaitMax time.Duration
	// Addr is a broker's address as metadata has it now (ok false while
	// it is unknown). A fetcher reconnects when its leader's changes.
	Addr func(id int32) (addr string, ok bool)
	// Dial connects and authenticates to another broker.
	Dial func(ctx context.Context, addr string) (Conn, error)
	Log  *slog.Logger
	// Throttle is follower.replication.throttled.rate, shared by every
	// fetcher of the broker (nil: none).
	Throttle *replication.Throttle
	// Throttled says whether the bytes fetched for p count against
	// Throttle, and whether p is left out of fetches while Throttle is
	// spent (a throttled replica out of the ISR, KIP-73). nil: nothing
	// is throttled.
	Throttled func(p Replica) (throttled, hold bool)
}

// Manager runs one fetcher per leader broker this broker follows
// partitions of.
type Manager struct {
	cfg Config
	ctx context.Context
	mu  struct {
		sync.Mutex
		closed   bool
		fetchers map[int32]*fetcher
		of       map[Replica]int32 // the leader each partition is fetched from
	}
}

// NewManager returns a manager whose fetchers stop with ctx or Close.
func NewManager(ctx context.Context, cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Manager{cfg: cfg, ctx: ctx}
	m.mu.fetchers = map[int32]*fetcher{}
	m.mu.of = map[Replica]int32{}
	return m
}

// Follow moves p to the fetcher of leader at leaderEpoch (a leader of -1
// or this broker: off every fetcher).
func (m *Manager) Follow(p Replica, leader, leaderEpoch int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.mu.of[p]; ok {
		if f := m.mu.fetchers[old]; f != nil {
			f.remove(p)
		}
		delete(m.mu.of, p)
	}
	if m.mu.closed || leader < 0 || leader == m.cfg.Self {
		return
	}
	f := m.mu.fetchers[leader]
	if f == nil {
		f = newFetcher(m, leader)
		m.mu.fetchers[leader] = f
	}
	f.add(p, leaderEpoch)
	m.mu.of[p] = leader
}

// Followed is the number of partitions the fetchers copy.
func (m *Manager) Followed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.of)
}

// Close stops every fetcher and waits for them. Later Follow calls start
// none. Idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	m.mu.closed = true
	fs := m.mu.fetchers
	m.mu.fetchers = map[int32]*fetcher{}
	m.mu.Unlock()
	for _, f := range fs {
		f.stop()
	}
}

// fetcher copies the partitions this broker follows from one leader.
type fetcher struct {
	cfg    *Config
	leader int32
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	// restores counts the restores from the bucket running (restore).
	restores sync.WaitGroup
	mu       struct {
		sync.Mutex
		parts map[Replica]*followState
	}
}

// followState is one followed partition: the leader epoch it is followed
// at, whether its divergence was checked at that epoch, and whether a
// restore from the bucket keeps it out of fetches (restore).
type followState struct {
	epoch     int32
	truncated bool
	restoring bool
	// retryAt: the last answer for it failed, or its last restore; it
	// is left out of fetches until then.
	retryAt time.Time
}

const (
	// fetchBackoff is how long a partition whose answer failed sits out
	// the fetches (Kafka's replica.fetch.backoff.ms); the others are
	// fetched meanwhile.
	fetchBackoff = 100 * time.Millisecond
	// restoreRetry is how long a partition whose restore from the
	// bucket failed waits before it is fetched, and restored, again.
	restoreRetry = time.Second
)

func newFetcher(m *Manager, leader int32) *fetcher {
	ctx, cancel := context.WithCancel(m.ctx)
	f := &fetcher{cfg: &m.cfg, leader: leader, log: m.cfg.Log.With("fetcher", leader), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), wake: make(chan struct{}, 1)}
	f.mu.parts = map[Replica]*followState{}
	go func() {
		defer close(f.done)
		f.run()
	}()
	return f
}

func (f *fetcher) stop() {
	f.cancel()
	<-f.done
	f.restores.Wait()
}

func (f *fetcher) add(p Replica, epoch int32) {
	f.mu.Lock()
	f.mu.parts[p] = &followState{epoch: epoch}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *fetcher) remove(p Replica) {
	f.mu.Lock()
	delete(f.mu.parts, p)
	f.mu.Unlock()
}

type followed struct {
	p  Replica
	st followState
}

func (f *fetcher) snapshot() []followed {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]followed, 0, len(f.mu.parts))
	for p, st := range f.mu.parts {
		out = append(out, followed{p, *st})
	}
	return out
}

// markTruncated records that p's divergence was checked at epoch.
func (f *fetcher) markTruncated(p Replica, epoch int32, done bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.mu.parts[p]; st != nil && st.epoch == epoch {
		st.truncated = done
	}
}

// run is the fetcher's loop. It keeps at most one fetch in flight ahead
// of the answer it applies: when an answer brings only data below the
// leader's high watermark (see pipelineFrom), the next fetch, asking from
// where the logs will end, is sent before the answer is appended, so that
// the leader reads and sends while this broker writes. Every other round
// applies its answer before asking again.
func (f *fetcher) run() {
	var pc Conn
	var addr string
	var inflight *round // sent on pc, not yet received
	defer func() {
		if pc != nil {
			pc.Close()
		}
	}()
	drop := func() {
		if pc != nil {
			pc.Close()
			pc = nil
		}
		inflight = nil
	}
	fail := func(err error) {
		drop()
		if f.ctx.Err() == nil {
			f.log.Debug("replica fetcher", "err", err)
		}
		f.sleep(200 * time.Millisecond)
	}
	for f.ctx.Err() == nil {
		parts := f.snapshot()
		if len(parts) == 0 {
			drop()
			select {
			case <-f.ctx.Done():
			case <-f.wake:
			}
			continue
		}
		a, ok := f.cfg.Addr(f.leader)
		if !ok {
			drop()
			f.sleep(200 * time.Millisecond)
			continue
		}
		if pc == nil || a != addr {
			drop()
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			var err error
			pc, err = f.cfg.Dial(ctx, a)
			cancel()
			if err != nil {
				pc = nil
				fail(err)
				continue
			}
			addr = a
		}
		if inflight == nil {
			if err := f.truncate(pc, parts); err != nil {
				fail(err)
				continue
			}
			inflight = f.newRound(parts, nil)
			if inflight == nil {
				// Every partition still waits for its divergence
				// check, or for the throttle.
				f.sleep(100 * time.Millisecond)
				continue
			}
			if err := f.send(pc, inflight); err != nil {
				fail(err)
				continue
			}
		}
		cur := inflight
		inflight = nil
		resp, err := f.receive(pc, cur)
		if err != nil {
			fail(err)
			continue
		}
		// Charged before a pipelined fetch is built, so that it sees
		// the throttle spent.
		f.charge(cur, resp)
		var sendErr error
		if at, ok := pipelineFrom(cur, resp); ok {
			if next := f.newRound(f.snapshot(), at); next != nil && next.pipelined {
				if sendErr = f.send(pc, next); sendErr == nil {
					inflight = next
				}
			}
		}
		f.applyAll(cur, resp)
		if sendErr != nil {
			fail(sendErr)
			continue
		}
	}
}

func (f *fetcher) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.ctx.Done():
	case <-t.C:
	}
}

// truncate asks the leader where each newly followed partition's latest
// epoch ends and cuts the local log there.
func (f *fetcher) truncate(pc Conn, parts []followed) error {
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.Version = OffsetForLeaderEpochVers
	req.ReplicaID = f.cfg.Self
	asked := map[Replica]followed{}
	byTopic := map[string]int{}
	for _, fp := range parts {
		if fp.st.truncated {
			continue
		}
		latest := fp.p.LatestEpoch()
		if latest < 0 {
			f.markTruncated(fp.p, fp.st.epoch, true)
			continue
		}
		topic := fp.p.Topic()
		ti, ok := byTopic[topic]
		if !ok {
			ti = len(req.Topics)
			byTopic[topic] = ti
			t := kmsg.NewOffsetForLeaderEpochRequestTopic()
			t.Topic = topic
			req.Topics = append(req.Topics, t)
		}
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.Partition, rp.CurrentLeaderEpoch, rp.LeaderEpoch = fp.p.Partition(), fp.st.epoch, latest
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
		asked[fp.p] = fp
	}
	if len(req.Topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	resp, err := pc.Request(ctx, req)
	if err != nil {
		return err
	}
	for _, t := range resp.(*kmsg.OffsetForLeaderEpochResponse).Topics {
		for _, rp := range t.Partitions {
			var fp followed
			for p, a := range asked {
				if p.Topic() == t.Topic && p.Partition() == rp.Partition {
					fp = a
				}
			}
			if fp.p == nil {
				continue
			}
			if rp.ErrorCode != 0 {
				// Not the leader yet, or an epoch mismatch while
				// metadata settles: ask again next round.
				f.log.Debug("offset for leader epoch", "topic", t.Topic, "partition", rp.Partition, "err", kerr.ErrorForCode(rp.ErrorCode))
				continue
			}
			latest := fp.p.LatestEpoch()
			off := replication.TruncationOffset(latest, rp.LeaderEpoch, rp.EndOffset, fp.p.EndOffsetForEpoch, fp.p.LogEndOffset())
			if err := fp.p.Truncate(f.leader, fp.st.epoch, off); err != nil {
				if !errors.Is(err, ErrNotFollower) {
					f.log.Warn("truncating a divergent log", "topic", t.Topic, "partition", rp.Partition, "offset", off, "err", err)
				}
				continue
			}
			f.markTruncated(fp.p, fp.st.epoch, true)
		}
	}
	return nil
}

// round is one fetch: the request and, per partition, where it asked
// from.
type round struct {
	req  *kmsg.FetchRequest
	sent []sent
	// pipelined: sent before the previous answer was applied, from where
	// that answer leaves the logs.
	pipelined bool
}

type sent struct {
	fp        followed
	lastEpoch int32
	offset    int64
	// throttled: the answer's bytes count against Config.Throttle.
	throttled bool
}

// stale reports whether the log no longer ends where the fetch asked from
// (an answer before it failed to apply, or a pipelined fetch raced a
// truncation): its answer would leave a gap or cut records.
func (s *sent) stale() bool {
	return s.fp.p.LogEndOffset() != s.offset || s.fp.p.LatestEpoch() != s.lastEpoch
}

func (r *round) find(topic string, partition int32) *sent {
	for i := range r.sent {
		if r.sent[i].fp.p.Partition() == partition && r.sent[i].fp.p.Topic() == topic {
			return &r.sent[i]
		}
	}
	return nil
}

// position is where a partition's log will end once an answer is applied.
type position struct {
	offset    int64
	lastEpoch int32
}

// newRound builds a fetch for every partition whose divergence was
// checked, from its log end, or from at[p] where the answer being applied
// will leave it. It returns nil when no partition can be fetched. When at
// is given (a pipelined fetch) and a partition still waits for its
// divergence check, which needs the connection, it returns a round that
// is not pipelined: the caller sends none then.
func (f *fetcher) newRound(parts []followed, at map[Replica]position) *round {
	req := kmsg.NewPtrFetchRequest()
	req.Version = FetchVersion
	req.ReplicaID = f.cfg.Self
	req.MaxWaitMillis = int32(f.cfg.FetchWaitMax.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = FetchMaxBytes
	req.SessionID, req.SessionEpoch = 0, -1
	r := &round{req: req, pipelined: at != nil}
	byTopic := map[string]int{}
	allowed := 0 // 1: the throttle allows, -1: it is spent; asked once
	held := false
	now := time.Now()
	for _, fp := range parts {
		if !fp.st.truncated {
			r.pipelined = false
			continue
		}
		if fp.st.restoring || now.Before(fp.st.retryAt) {
			continue
		}
		var throttled, hold bool
		if f.cfg.Throttled != nil {
			throttled, hold = f.cfg.Throttled(fp.p)
		}
		if hold && allowed == 0 {
			allowed = -1
			if f.cfg.Throttle.Allow(time.Now()) {
				allowed = 1
			}
		}
		if hold && allowed < 0 {
			// Left out of this fetch while the throttle is spent,
			// as Kafka's follower does.
			held = true
			continue
		}
		topic := fp.p.Topic()
		ti, ok := byTopic[topic]
		if !ok {
			ti = len(req.Topics)
			byTopic[topic] = ti
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = topic, fp.p.TopicID()
			req.Topics = append(req.Topics, t)
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = fp.p.Partition()
		rp.CurrentLeaderEpoch = fp.st.epoch
		if pos, ok := at[fp.p]; ok {
			rp.FetchOffset, rp.LastFetchedEpoch = pos.offset, pos.lastEpoch
		} else {
			rp.FetchOffset, rp.LastFetchedEpoch = fp.p.LogEndOffset(), fp.p.LatestEpoch()
		}
		rp.LogStartOffset = fp.p.LogStartOffset()
		rp.PartitionMaxBytes = partitionMaxBytes
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
		r.sent = append(r.sent, sent{fp, rp.LastFetchedEpoch, rp.FetchOffset, throttled})
	}
	if len(r.sent) == 0 {
		return nil
	}
	if held {
		// Do not long-poll far past the throttle's refill on the
		// partitions left in.
		req.MaxWaitMillis = min(req.MaxWaitMillis, 100)
	}
	return r
}

func (f *fetcher) send(pc Conn, r *round) error {
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	return pc.Send(ctx, r.req)
}

func (f *fetcher) receive(pc Conn, r *round) (*kmsg.FetchResponse, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.FetchWaitMax+10*time.Second)
	defer cancel()
	raw, err := pc.Receive(ctx)
	if err != nil {
		return nil, err
	}
	resp, ok := raw.(*kmsg.FetchResponse)
	if !ok {
		return nil, fmt.Errorf("fetcher: a %T answered a fetch", raw)
	}
	if resp.ErrorCode != 0 {
		return nil, kerr.ErrorForCode(resp.ErrorCode)
	}
	return resp, nil
}

// pipelineFrom decides whether the next fetch may be sent before resp, the
// answer to r, is applied, and from where: only when every partition's
// answer is plain data or nothing (no error, no diverging epoch, which
// change the log in other ways), some brings data, and each that does ends
// below the high watermark the leader sent with it, and the log still ends
// where r asked from (else the answer is dropped). A fetch offset tells
// the leader the follower has everything below it; a pipelined one claims
// records not yet written, so it must claim none the high watermark or
// the ISR could count: below the high watermark it never moves the high
// watermark and never adds the follower to the ISR. A follower in the ISR
// thus never pipelines (the high watermark is at most its last fetch
// offset); one catching up, as after losing its disk, does.
func pipelineFrom(r *round, resp *kmsg.FetchResponse) (map[Replica]position, bool) {
	var at map[Replica]position
	for _, t := range resp.Topics {
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			s := r.find(t.Topic, rp.Partition)
			if s == nil {
				continue
			}
			if rp.ErrorCode != 0 || diverging(rp) {
				return nil, false
			}
			end, epoch, ok := lastBatch(recordbatch.WholePrefix(rp.RecordBatches))
			if !ok {
				continue
			}
			if end >= rp.HighWatermark || s.stale() {
				return nil, false
			}
			if epoch < 0 {
				epoch = s.lastEpoch
			}
			if at == nil {
				at = map[Replica]position{}
			}
			at[s.fp.p] = position{end, epoch}
		}
	}
	return at, at != nil
}

func diverging(rp *kmsg.FetchResponseTopicPartition) bool {
	return rp.DivergingEpoch.EndOffset >= 0 || rp.DivergingEpoch.Epoch >= 0
}

// lastBatch is the offset after the last of whole batches and its leader
// epoch (ok false: no batch).
func lastBatch(data []byte) (next int64, epoch int32, ok bool) {
	for len(data) > 0 {
		b, rest, err := recordbatch.Next(data)
		if err != nil || b == nil {
			break
		}
		next, epoch, ok = b.NextOffset(), b.PartitionLeaderEpoch(), true
		data = rest
	}
	return next, epoch, ok
}

// charge counts the bytes resp brought for throttled partitions against
// the follower throttle.
func (f *fetcher) charge(r *round, resp *kmsg.FetchResponse) {
	now := time.Now()
	for _, t := range resp.Topics {
		for i := range t.Partitions {
			if s := r.find(t.Topic, t.Partitions[i].Partition); s != nil && s.throttled {
				f.cfg.Throttle.Charge(now, int64(len(t.Partitions[i].RecordBatches)))
			}
		}
	}
}

// restore restarts fp's log where the bucket ends, in the background: it
// reads the object store, which may hang, and the partitions fetched with
// fp must not wait for it. A restore held every partition this broker
// copies from the leader for the restore's timeout, again at each try,
// while the store hung: they fell out of the ISR, and acks=all produce to
// them waited. The partition is left out of fetches until the restore
// ends, and for restoreRetry after one that failed.
func (f *fetcher) restore(fp followed, offset int64) {
	f.mu.Lock()
	st := f.mu.parts[fp.p]
	if st == nil || st.epoch != fp.st.epoch || st.restoring {
		f.mu.Unlock()
		return
	}
	st.restoring = true
	f.mu.Unlock()
	f.restores.Add(1)
	go func() {
		defer f.restores.Done()
		err := fp.p.RestoreFromBucket(f.ctx, f.leader, fp.st.epoch, offset)
		f.mu.Lock()
		// st may have been replaced since (followed at a new epoch):
		// the new state was never restoring.
		st.restoring = false
		if err != nil {
			st.retryAt = time.Now().Add(restoreRetry)
		}
		f.mu.Unlock()
		if err != nil && f.ctx.Err() == nil {
			f.log.Debug("restoring a replica from the bucket; retrying", "topic", fp.p.Topic(), "partition", fp.p.Partition(), "in", restoreRetry, "err", err)
		}
	}()
}

// delay leaves fp out of the fetches for d, unless it is followed at
// another epoch since.
func (f *fetcher) delay(fp followed, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.mu.parts[fp.p]; st != nil && st.epoch == fp.st.epoch {
		st.retryAt = time.Now().Add(d)
	}
}

// applyAll applies each partition's answer in resp to r; a partition
// whose answer failed sits out the fetches for fetchBackoff. (The whole
// fetcher backed off: a partition that kept failing, as one whose leader
// cannot read its manifest while the object store is down, slowed the
// copy of every other partition from that leader, and acks=all with it,
// by the backoff at each fetch.) A stale answer is dropped: the next fetch
// asks from the log's real end.
func (f *fetcher) applyAll(r *round, resp *kmsg.FetchResponse) {
	for _, t := range resp.Topics {
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			s := r.find(t.Topic, rp.Partition)
			if s == nil {
				continue
			}
			if s.stale() {
				f.log.Debug("replica fetch answer dropped: the log moved", "topic", t.Topic, "partition", rp.Partition,
					"asked", s.offset, "asked_epoch", s.lastEpoch)
				continue
			}
			if err := f.apply(s.fp, s.lastEpoch, s.offset, rp); err != nil {
				f.delay(s.fp, fetchBackoff)
				if !errors.Is(err, ErrNotFollower) {
					f.log.Debug("replica fetch", "topic", t.Topic, "partition", rp.Partition, "err", err)
				}
			}
		}
	}
}

// apply applies one partition's fetch answer.
func (f *fetcher) apply(fp followed, lastEpoch int32, offset int64, rp *kmsg.FetchResponseTopicPartition) error {
	p := fp.p
	switch {
	case rp.ErrorCode == kerr.OffsetOutOfRange.Code && offset < rp.LogStartOffset:
		// The leader's log starts past ours: start over from there.
		return p.Restart(f.leader, fp.st.epoch, rp.LogStartOffset)
	case rp.ErrorCode == kerr.OffsetMovedToTieredStorage.Code:
		// Below the leader's local log: start where the bucket ends.
		f.restore(fp, offset)
		return nil
	case rp.ErrorCode == kerr.OffsetOutOfRange.Code:
		// Past the leader's end: check divergence again.
		f.markTruncated(p, fp.st.epoch, false)
		return kerr.OffsetOutOfRange
	case rp.ErrorCode != 0:
		return kerr.ErrorForCode(rp.ErrorCode)
	case diverging(rp):
		off := replication.TruncationOffset(lastEpoch, rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset, p.EndOffsetForEpoch, p.LogEndOffset())
		return p.Truncate(f.leader, fp.st.epoch, off)
	}
	data := recordbatch.WholePrefix(rp.RecordBatches)
	if err := p.Append(f.leader, fp.st.epoch, data, rp.HighWatermark, rp.LogStartOffset); err != nil {
		if errors.Is(err, localseg.ErrOffsetsNotIncreasing) {
			// The log moved under us (a truncation): the next fetch
			// asks from its new end.
			return nil
		}
		return err
	}
	return nil
}
