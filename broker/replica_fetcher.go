package broker

import (
	"context"
	"errors"
	"net"
	"strconv"
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
	replicaFetchVersion      = 12
	replicaOffsetForLEVerson = 4
	replicaFetchMaxBytes     = 16 << 20
	replicaPartitionMaxBytes = 1 << 20
)

// fetcherManager runs one replica fetcher per leader broker this broker
// follows partitions of (Kafka's one fetcher per (follower, leader) pair).
type fetcherManager struct {
	b  *Broker
	mu struct {
		sync.Mutex
		closed   bool
		fetchers map[int32]*replicaFetcher
		of       map[*partition]int32 // the leader each partition is fetched from
	}
}

func newFetcherManager(b *Broker) *fetcherManager {
	m := &fetcherManager{b: b}
	m.mu.fetchers = map[int32]*replicaFetcher{}
	m.mu.of = map[*partition]int32{}
	return m
}

// follow moves p to the fetcher of leader (or off every fetcher).
func (m *fetcherManager) follow(p *partition, leader, leaderEpoch int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.mu.of[p]; ok {
		if f := m.mu.fetchers[old]; f != nil {
			f.remove(p)
		}
		delete(m.mu.of, p)
	}
	if m.mu.closed || leader < 0 || leader == m.b.cfg.NodeID {
		return
	}
	f := m.mu.fetchers[leader]
	if f == nil {
		f = newReplicaFetcher(m.b, leader)
		m.mu.fetchers[leader] = f
	}
	f.add(p, leaderEpoch)
	m.mu.of[p] = leader
}

// close stops every fetcher and waits for them.
func (m *fetcherManager) close() {
	m.mu.Lock()
	m.mu.closed = true
	fs := m.mu.fetchers
	m.mu.fetchers = map[int32]*replicaFetcher{}
	m.mu.Unlock()
	for _, f := range fs {
		f.stop()
	}
}

// replicaFetcher copies the partitions this broker follows from one leader:
// first it finds where each one's log diverges from the leader's
// (OffsetForLeaderEpoch, KIP-101/279) and truncates there, then it fetches
// in a loop with this broker's replica id, appending what it gets with the
// leader's offsets and epochs.
type replicaFetcher struct {
	b      *Broker
	leader int32
	log    interface {
		Warn(string, ...any)
		Debug(string, ...any)
	}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	mu     struct {
		sync.Mutex
		parts map[*partition]*followState
	}
}

// followState is one followed partition: the leader epoch it is followed
// at, and whether its divergence was checked at that epoch.
type followState struct {
	epoch     int32
	truncated bool
}

func newReplicaFetcher(b *Broker, leader int32) *replicaFetcher {
	ctx, cancel := context.WithCancel(b.ctx)
	f := &replicaFetcher{b: b, leader: leader, log: b.log.With("fetcher", leader), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), wake: make(chan struct{}, 1)}
	f.mu.parts = map[*partition]*followState{}
	go func() {
		defer close(f.done)
		f.run()
	}()
	return f
}

func (f *replicaFetcher) stop() {
	f.cancel()
	<-f.done
}

func (f *replicaFetcher) add(p *partition, epoch int32) {
	f.mu.Lock()
	f.mu.parts[p] = &followState{epoch: epoch}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *replicaFetcher) remove(p *partition) {
	f.mu.Lock()
	delete(f.mu.parts, p)
	f.mu.Unlock()
}

type followed struct {
	p  *partition
	st followState
}

func (f *replicaFetcher) snapshot() []followed {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]followed, 0, len(f.mu.parts))
	for p, st := range f.mu.parts {
		out = append(out, followed{p, *st})
	}
	return out
}

// markTruncated records that p's divergence was checked at epoch.
func (f *replicaFetcher) markTruncated(p *partition, epoch int32, done bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.mu.parts[p]; st != nil && st.epoch == epoch {
		st.truncated = done
	}
}

func (f *replicaFetcher) run() {
	var pc *peerClient
	var addr string
	defer func() {
		if pc != nil {
			pc.close()
		}
	}()
	fail := func(err error) {
		if pc != nil {
			pc.close()
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
		bv, ok := f.b.meta.snapshot().broker(f.leader)
		if !ok {
			f.sleep(200 * time.Millisecond)
			continue
		}
		a := net.JoinHostPort(bv.host, strconv.Itoa(int(bv.port)))
		if pc == nil || a != addr {
			if pc != nil {
				pc.close()
			}
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			var err error
			pc, err = dialPeer(ctx, f.b.cfg.DialPeer, a, f.b.cfg.NodeID, f.b.secret)
			cancel()
			if err != nil {
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

func (f *replicaFetcher) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.ctx.Done():
	case <-t.C:
	}
}

// truncate asks the leader where each newly followed partition's latest
// epoch ends and cuts the local log there.
func (f *replicaFetcher) truncate(pc *peerClient, parts []followed) error {
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.Version = replicaOffsetForLEVerson
	req.ReplicaID = f.b.cfg.NodeID
	asked := map[*partition]followed{}
	byTopic := map[string]int{}
	for _, fp := range parts {
		if fp.st.truncated {
			continue
		}
		latest := fp.p.latestEpoch()
		if latest < 0 {
			f.markTruncated(fp.p, fp.st.epoch, true)
			continue
		}
		ti, ok := byTopic[fp.p.topic]
		if !ok {
			ti = len(req.Topics)
			byTopic[fp.p.topic] = ti
			t := kmsg.NewOffsetForLeaderEpochRequestTopic()
			t.Topic = fp.p.topic
			req.Topics = append(req.Topics, t)
		}
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.Partition, rp.CurrentLeaderEpoch, rp.LeaderEpoch = fp.p.index, fp.st.epoch, latest
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
		asked[fp.p] = fp
	}
	if len(req.Topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	resp, err := pc.request(ctx, req)
	if err != nil {
		return err
	}
	for _, t := range resp.(*kmsg.OffsetForLeaderEpochResponse).Topics {
		for _, rp := range t.Partitions {
			var fp followed
			for p, a := range asked {
				if p.topic == t.Topic && p.index == rp.Partition {
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
			latest := fp.p.latestEpoch()
			off := replication.TruncationOffset(latest, rp.LeaderEpoch, rp.EndOffset, fp.p.log.EndOffsetForEpoch, fp.p.log.LogEndOffset())
			if err := fp.p.followerTruncate(f.leader, fp.st.epoch, off); err != nil {
				if !errors.Is(err, errNotFollower) {
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
func (f *replicaFetcher) fetch(pc *peerClient, parts []followed) error {
	req := kmsg.NewPtrFetchRequest()
	req.Version = replicaFetchVersion
	req.ReplicaID = f.b.cfg.NodeID
	req.MaxWaitMillis = int32(f.b.cfg.ReplicaFetchWaitMax.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = replicaFetchMaxBytes
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
		ti, ok := byTopic[fp.p.topic]
		if !ok {
			ti = len(req.Topics)
			byTopic[fp.p.topic] = ti
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = fp.p.topic, fp.p.topicID
			req.Topics = append(req.Topics, t)
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = fp.p.index
		rp.CurrentLeaderEpoch = fp.st.epoch
		rp.FetchOffset = fp.p.log.LogEndOffset()
		rp.LastFetchedEpoch = fp.p.latestEpoch()
		rp.LogStartOffset = fp.p.log.LogStartOffset()
		rp.PartitionMaxBytes = replicaPartitionMaxBytes
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rp)
		all = append(all, sent{fp, rp.LastFetchedEpoch, rp.FetchOffset})
	}
	if len(all) == 0 {
		// Every partition still waits for its divergence check.
		f.sleep(100 * time.Millisecond)
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.b.cfg.ReplicaFetchWaitMax+10*time.Second)
	defer cancel()
	raw, err := pc.request(ctx, req)
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
				if all[i].fp.p.topic == t.Topic && all[i].fp.p.index == rp.Partition {
					s = &all[i]
				}
			}
			if s == nil {
				continue
			}
			if err := f.apply(s.fp, s.lastEpoch, s.offset, &rp); err != nil {
				backoff = true
				if !errors.Is(err, errNotFollower) {
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
func (f *replicaFetcher) apply(fp followed, lastEpoch int32, offset int64, rp *kmsg.FetchResponseTopicPartition) error {
	p := fp.p
	switch {
	case rp.ErrorCode == kerr.OffsetOutOfRange.Code && offset < rp.LogStartOffset:
		// The leader's log starts past ours: start over from there.
		return p.followerRestart(f.leader, fp.st.epoch, rp.LogStartOffset)
	case rp.ErrorCode == kerr.OffsetMovedToTieredStorage.Code:
		// Below the leader's local log: start where the bucket ends.
		return p.followerRestoreFromBucket(f.ctx, f.leader, fp.st.epoch, offset)
	case rp.ErrorCode == kerr.OffsetOutOfRange.Code:
		// Past the leader's end: check divergence again.
		f.markTruncated(p, fp.st.epoch, false)
		return kerr.OffsetOutOfRange
	case rp.ErrorCode != 0:
		return kerr.ErrorForCode(rp.ErrorCode)
	case rp.DivergingEpoch.EndOffset >= 0 || rp.DivergingEpoch.Epoch >= 0:
		off := replication.TruncationOffset(lastEpoch, rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset, p.log.EndOffsetForEpoch, p.log.LogEndOffset())
		return p.followerTruncate(f.leader, fp.st.epoch, off)
	}
	data := wholeBatches(rp.RecordBatches)
	if err := p.followerAppend(f.leader, fp.st.epoch, data, rp.HighWatermark); err != nil {
		if errors.Is(err, localseg.ErrOffsetsNotIncreasing) {
			// The log moved under us (a truncation): the next fetch
			// asks from its new end.
			return nil
		}
		return err
	}
	return nil
}

// wholeBatches drops a trailing partial batch (a leader may cut the last
// batch at the size limit).
func wholeBatches(b []byte) []byte {
	n := 0
	for rest := b; len(rest) > 0; {
		batch, next, err := recordbatch.Next(rest)
		if err != nil || batch == nil {
			break
		}
		n += len(rest) - len(next)
		rest = next
	}
	return b[:n]
}
