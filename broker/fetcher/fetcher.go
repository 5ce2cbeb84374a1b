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

// Conn is one authenticated connection to a leader broker issuing one
// request at a time. A response's byte fields (record batches) may alias a
// buffer the next Request reuses: the fetcher is done with them when it
// asks again. Any error from Request leaves it unusable.
type Conn interface {
	Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error)
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
	mu     struct {
		sync.Mutex
		parts map[Replica]*followState
	}
}

// followState is one followed partition: the leader epoch it is followed
// at, and whether its divergence was checked at that epoch.
type followState struct {
	epoch     int32
	truncated bool
}

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

func (f *fetcher) run() {
	var pc Conn
	var addr string
	defer func() {
		if pc != nil {
			pc.Close()
		}
	}()
	fail := func(err error) {
		if pc != nil {
			pc.Close()
			pc = nil
		}
		if f.ctx.Err() == nil {
			f.log.Debug("replica fetcher", "err", err)
		}
		f.sleep(200 * time.Millisecond)
	}
	for f.ctx.Err() == nil {
		parts := f.snapshot()
		if len(parts) == 0 {
			select {
			case <-f.ctx.Done():
			case <-f.wake:
			}
			continue
		}
		a, ok := f.cfg.Addr(f.leader)
		if !ok {
			f.sleep(200 * time.Millisecond)
			continue
		}
		if pc == nil || a != addr {
			if pc != nil {
				pc.Close()
			}
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
		if err := f.truncate(pc, parts); err != nil {
			fail(err)
			continue
		}
		if err := f.fetch(pc, parts); err != nil {
			fail(err)
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

// fetch issues one fetch for every partition whose divergence was checked
// and applies the answer.
func (f *fetcher) fetch(pc Conn, parts []followed) error {
	req := kmsg.NewPtrFetchRequest()
	req.Version = FetchVersion
	req.ReplicaID = f.cfg.Self
	req.MaxWaitMillis = int32(f.cfg.FetchWaitMax.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = FetchMaxBytes
	req.SessionID, req.SessionEpoch = 0, -1
	type sent struct {
		fp        followed
		lastEpoch int32
		offset    int64
	}
	var all []sent
	byTopic := map[string]int{}
	for _, fp := range parts {
		if !fp.st.truncated {
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
		rp.FetchOffset = fp.p.LogEndOffset()
		rp.LastFetchedEpoch = fp.p.LatestEpoch()
		rp.LogStartOffset = fp.p.LogStartOffset()
		rp.PartitionMaxBytes = partitionMaxBytes
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
		all = append(all, sent{fp, rp.LastFetchedEpoch, rp.FetchOffset})
	}
	if len(all) == 0 {
		// Every partition still waits for its divergence check.
		f.sleep(100 * time.Millisecond)
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.FetchWaitMax+10*time.Second)
	defer cancel()
	raw, err := pc.Request(ctx, req)
	if err != nil {
		return err
	}
	resp := raw.(*kmsg.FetchResponse)
	if resp.ErrorCode != 0 {
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	backoff := false
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			var s *sent
			for i := range all {
				if all[i].fp.p.Topic() == t.Topic && all[i].fp.p.Partition() == rp.Partition {
					s = &all[i]
				}
			}
			if s == nil {
				continue
			}
			if err := f.apply(s.fp, s.lastEpoch, s.offset, &rp); err != nil {
				backoff = true
				if !errors.Is(err, ErrNotFollower) {
					f.log.Debug("replica fetch", "topic", t.Topic, "partition", rp.Partition, "err", err)
				}
			}
		}
	}
	if backoff {
		f.sleep(100 * time.Millisecond)
	}
	return nil
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
		return p.RestoreFromBucket(f.ctx, f.leader, fp.st.epoch, offset)
	case rp.ErrorCode == kerr.OffsetOutOfRange.Code:
		// Past the leader's end: check divergence again.
		f.markTruncated(p, fp.st.epoch, false)
		return kerr.OffsetOutOfRange
	case rp.ErrorCode != 0:
		return kerr.ErrorForCode(rp.ErrorCode)
	case rp.DivergingEpoch.EndOffset >= 0 || rp.DivergingEpoch.Epoch >= 0:
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
