package broker

import (
	"context"
	"time"
)

var _ replicaHost = (*Broker)(nil)

func (b *Broker) follow(p *partition, leader, leaderEpoch int32) {
	b.fetchers.follow(p, leader, leaderEpoch)
}

func (b *Broker) replicaLagMax() time.Duration { return b.cfg.ReplicaLagTimeMax }

func (b *Broker) isrIneligible(id int32) bool {
	bv, ok := b.meta.snapshot().broker(id)
	return !ok || bv.shuttingDown
}

// alterISR writes a leader's ISR change in the background. The partition
// learns the outcome from the metadata it watches (success) or from
// isrWriteFailed. Close waits for the write.
func (b *Broker) alterISR(p *partition, isr []int32, leaderEpoch, partitionEpoch int32) {
	started := b.goBackground(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		err := b.meta.alterISR(ctx, p.topic, p.index, b.cfg.NodeID, leaderEpoch, partitionEpoch, isr)
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
func (b *Broker) FollowedPartitions() int {
	b.fetchers.mu.Lock()
	defer b.fetchers.mu.Unlock()
	return len(b.fetchers.mu.of)
}
