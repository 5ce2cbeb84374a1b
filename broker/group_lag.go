package broker

import (
	"context"
	"sync"
	"time"
)

// The consumer group lag metric needs the high watermark of every
// partition a coordinated group has offsets for, including those led by
// other brokers. Those are asked of their leaders with ListOffsets (latest,
// read uncommitted: the high watermark), one request per leader, the
// leaders in parallel, and the answers kept for a few seconds, so that a
// scrape costs at most one round trip per leader and several Prometheus
// servers scraping at once ask once.
const (
	// remoteHWTimeout bounds one scrape's asking, dial included: a
	// leader that does not answer in time leaves its partitions out of
	// that scrape, it does not hold the scrape.
	remoteHWTimeout = time.Second
	// remoteHWMaxAge is how long an answer is reused.
	remoteHWMaxAge = 5 * time.Second
	// peerListOffsetsVersion is the ListOffsets version one broker asks
	// another (v4 and up carry the current leader epoch, -1 here: no
	// fencing wanted, and answer the leader epoch of the offset).
	peerListOffsetsVersion = 5
)

// remoteHighWatermarks caches the high watermarks leaders reported.
type remoteHighWatermarks struct {
	b *Broker
	// mu is held while asking, so a concurrent scrape waits for the
	// answers instead of asking again (at most remoteHWTimeout).
	mu   sync.Mutex
	seen map[partitionKey]remoteHW // guarded by mu
	// failLog: leaders that did not answer, one Warn line per interval.
	failLog rateLimitedLog
}

type remoteHW struct {
	hw int64
	at time.Time
}

func newRemoteHighWatermarks(b *Broker) *remoteHighWatermarks {
	return &remoteHighWatermarks{b: b, seen: map[partitionKey]remoteHW{}, failLog: rateLimitedLog{interval: time.Minute}}
}

// get returns the leaders' high watermarks of the partitions in need: those
// asked less than remoteHWMaxAge ago from the cache, the others asked of
// their leaders (from the metadata) now. A partition without a live
// leader, or whose leader did not answer in time, is missing.
func (r *remoteHighWatermarks) get(ctx context.Context, need map[partitionKey]bool, now time.Time) map[partitionKey]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.seen {
		if now.Sub(v.at) >= remoteHWMaxAge {
			delete(r.seen, k)
		}
	}
	out := make(map[partitionKey]int64, len(need))
	view := r.b.meta.snapshot()
	byLeader := map[int32][]partitionKey{}
	for k := range need {
		if v, ok := r.seen[k]; ok {
			out[k] = v.hw
			continue
		}
		tv := view.topics[k.topic]
		if tv == nil || k.index < 0 || int(k.index) >= len(tv.partitions) || tv.partitions[k.index].index != k.index {
			continue
		}
		if leader := tv.partitions[k.index].leader; leader >= 0 && leader != r.b.cfg.NodeID {
			byLeader[leader] = append(byLeader[leader], k)
		}
	}
	if len(byLeader) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, remoteHWTimeout)
	defer cancel()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex // guards hws while the leaders answer
		hws = map[partitionKey]int64{}
	)
	for leader, parts := range byLeader {
		// A leader whose registration lapsed while it serves (etcd
		// restarted) is still asked.
		addr, ok := view.brokerAddr(leader)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := r.ask(ctx, addr, parts)
			if err != nil {
				r.failLog.log(r.b.log, "asking a leader for high watermarks (consumer group lag)", "leader", leader, "addr", addr, "err", err)
			}
			mu.Lock()
			for k, hw := range got {
				hws[k] = hw
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for k, hw := range hws {
		out[k] = hw
		r.seen[k] = remoteHW{hw: hw, at: now}
	}
	return out
}

// ask sends one ListOffsets for parts to the broker at addr and returns
// the high watermarks it answered without error.
func (r *remoteHighWatermarks) ask(ctx context.Context, addr string, parts []partitionKey) (map[partitionKey]int64, error) {
	resp, err := r.b.askListOffsets(ctx, addr, -1, parts)
	if err != nil {
		return nil, err
	}
	out := map[partitionKey]int64{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 && rp.Offset >= 0 {
				out[partitionKey{rt.Topic, rp.Partition}] = rp.Offset
			}
		}
	}
	return out, nil
}
