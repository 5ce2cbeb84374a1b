package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shale-log/shale/broker/fetcher"
)

var _ replicaHost = (*Broker)(nil)

// newFetchers returns the broker's replica fetchers, dialing leaders at
// the addresses the metadata names, as this broker with the cluster
// secret.
func (b *Broker) newFetchers() *fetcher.Manager {
	return fetcher.NewManager(b.ctx, fetcher.Config{
		Self:         b.cfg.NodeID,
		FetchWaitMax: b.cfg.ReplicaFetchWaitMax,
		// A leader whose registration vanished (its lease expired
		// unrenewed after an etcd restart) still leads until the
		// controller moves its partitions: its followers go on
		// fetching from it, or its high watermark stops.
		Addr: func(id int32) (string, bool) { return b.meta.snapshot().brokerAddr(id) },
		Dial: func(ctx context.Context, addr string) (fetcher.Conn, error) {
			c, err := dialPeer(ctx, b.cfg.DialPeer, b.peerTLS(), addr, b.cfg.NodeID, b.secret)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Log:      b.log,
		Throttle: b.quotas.follower,
		Throttled: func(p fetcher.Replica) (bool, bool) {
			return b.quotas.followerThrottled(b.meta.snapshot(), p.Topic(), p.Partition())
		},
	})
}

func (b *Broker) follow(p *partition, leader, leaderEpoch int32) {
	b.fetchers.Follow(followerReplica{p}, leader, leaderEpoch)
}

func (b *Broker) replicaLagMax() time.Duration { return b.cfg.ReplicaLagTimeMax }

func (b *Broker) leaseProvenUntil() time.Time {
	if em, ok := b.meta.(*etcdMeta); ok {
		return em.provenUntil()
	}
	return time.Time{}
}

func (b *Broker) isrIneligible(id int32) bool {
	bv, ok := b.meta.snapshot().broker(id)
	return !ok || bv.shuttingDown
}

// alterISR writes a leader's ISR change in the background. The partition
// learns the outcome from the metadata it watches (success) or from
// isrWriteFailed. Close waits for the write.
//
// A write whose outcome is unknown may have landed: the change stays
// pending (its members stay in the ISR the high watermark waits for, as
// Kafka keeps an AlterPartition in flight until it is answered) until a
// re-read tells, so that an expansion that landed never goes unheeded.
func (b *Broker) alterISR(p *partition, isr []int32, leaderEpoch, partitionEpoch int32) {
	started := b.goBackground(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		err := b.meta.alterISR(ctx, p.topic, p.index, b.cfg.NodeID, leaderEpoch, partitionEpoch, isr, p.cfg.Load().minInsyncReplicas)
		cancel()
		if errors.Is(err, errMetaIndeterminate) {
			b.log.Info("ISR change's outcome unknown; re-reading", "topic", p.topic, "partition", p.index, "isr", isr, "err", err)
			if err = b.settleISRWrite(p, partitionEpoch); err == nil {
				// The partition moved past the epoch the change
				// was sent against (this change or another): the
				// metadata brings it, and with it the end of the
				// pending change.
				return
			}
		}
		if err != nil {
			b.log.Info("ISR change not applied", "topic", p.topic, "partition", p.index, "isr", isr, "err", err)
			p.isrWriteFailed(partitionEpoch)
			return
		}
		b.log.Info("ISR changed", "topic", p.topic, "partition", p.index, "isr", isr, "leaderEpoch", leaderEpoch)
	})
	if !started {
		// Closing. The caller holds p.repl: report the failure from
		// another goroutine.
		go p.isrWriteFailed(partitionEpoch)
	}
}

// settleISRWrite re-reads, until it can, the partition epoch of p after
// an ISR change sent against partitionEpoch whose outcome is unknown,
// fencing the change when the epoch is unchanged (so that it cannot land
// after this answer): nil when the partition has moved past it, an error
// when it has not (the change did not land and never will) or the broker
// is closing.
func (b *Broker) settleISRWrite(p *partition, partitionEpoch int32) error {
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		epoch, err := b.meta.settlePartitionEpoch(ctx, p.topic, p.index, partitionEpoch)
		cancel()
		switch {
		case err == nil && epoch > partitionEpoch:
			return nil
		case err == nil:
			return fmt.Errorf("%w: partition %s/%d is still at partition epoch %d", errMetaConflict, p.topic, p.index, epoch)
		case errors.Is(err, errUnknownTopic):
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return b.ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// checkISRs removes lagging followers from the ISRs this broker leads,
// every half replica.lag.time.max.ms as Kafka does, until the broker
// closes.
func (b *Broker) checkISRs() {
	t := time.NewTicker(max(b.cfg.ReplicaLagTimeMax/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-t.C:
			for _, p := range b.replicas.all() {
				p.maybeShrinkISR(now)
			}
		}
	}
}

// ReplicaOffsets reports the log end offset and high watermark of this
// broker's replica of a partition (ok false when it hosts none).
func (b *Broker) ReplicaOffsets(topic string, index int32) (logEnd, highWatermark int64, ok bool) {
	p, found := b.replicas.lookupByName(topic, index)
	if !found {
		return 0, 0, false
	}
	return p.log.LogEndOffset(), p.highWatermark(), true
}

// FollowedPartitions is the number of partitions this broker's replica
// fetchers copy from their leaders.
func (b *Broker) FollowedPartitions() int { return b.fetchers.Followed() }

// followerReplica is a partition as the replica fetchers write to it.
type followerReplica struct{ p *partition }

var _ fetcher.Replica = followerReplica{}

func (r followerReplica) Topic() string         { return r.p.topic }
func (r followerReplica) Partition() int32      { return r.p.index }
func (r followerReplica) TopicID() [16]byte     { return r.p.topicID }
func (r followerReplica) LatestEpoch() int32    { return r.p.latestEpoch() }
func (r followerReplica) LogEndOffset() int64   { return r.p.log.LogEndOffset() }
func (r followerReplica) LogStartOffset() int64 { return r.p.log.LogStartOffset() }
func (r followerReplica) EndOffsetForEpoch(epoch int32) (int32, int64, bool) {
	return r.p.log.EndOffsetForEpoch(epoch)
}

func (r followerReplica) Append(leader, leaderEpoch int32, batches []byte, leaderHW, leaderLogStart int64) error {
	return r.p.followerAppend(leader, leaderEpoch, batches, leaderHW, leaderLogStart)
}

func (r followerReplica) Truncate(leader, leaderEpoch int32, offset int64) error {
	return r.p.followerTruncate(leader, leaderEpoch, offset)
}

func (r followerReplica) Restart(leader, leaderEpoch int32, offset int64) error {
	return r.p.followerRestart(leader, leaderEpoch, offset)
}

func (r followerReplica) RestoreFromBucket(ctx context.Context, leader, leaderEpoch int32, offset int64) error {
	return r.p.followerRestoreFromBucket(ctx, leader, leaderEpoch, offset)
}
