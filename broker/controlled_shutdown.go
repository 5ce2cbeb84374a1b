package broker

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ControlledShutdown hands this broker's partitions over before it stops,
// as Kafka's controlled shutdown does: it records in etcd that the broker
// is shutting down (under its registration's lease), and the controller
// moves each partition it leads to another live in-sync replica with a new
// leader epoch and takes it out of every ISR that has another member;
// leaders no longer add it back. It waits, until ctx ends, for the
// metadata to show that done, then stops the replica fetchers. Clients
// meanwhile get NOT_LEADER_OR_FOLLOWER from it (with the new leader, where
// their version has the field) and move on; an acks=all write it
// acknowledged is on the new leader. A partition no other replica can lead
// stays with it until it exits. A broker alone in its cluster has nothing
// to hand over. Close calls it (bounded by
// Config.ControlledShutdownTimeout); only the first call acts.
func (b *Broker) ControlledShutdown(ctx context.Context) error {
	var err error
	b.shutdownOnce.Do(func() { err = b.controlledShutdown(ctx) })
	return err
}

func (b *Broker) controlledShutdown(ctx context.Context) error {
	ms, ok := b.meta.(*etcdMeta)
	if !ok || b.ctx.Err() != nil {
		return nil
	}
	reg := ms.currentRegistration()
	view := b.meta.snapshot()
	if reg == nil || len(view.brokers) < 2 {
		return nil
	}
	start := time.Now()
	led := len(b.handOverPending(view, true))
	b.shutdownAsked.Store(true)
	if err := ms.store.RequestControlledShutdown(ctx, reg, b.cfg.NodeID); err != nil {
		b.log.Warn("controlled shutdown: cannot ask the controller; leadership moves when the lease ends", "err", err)
		return err
	}
	b.log.Info("controlled shutdown: asked the controller to move leadership away", "leading", led)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := b.meta.subscribe(wctx)
	for {
		view := b.meta.snapshot()
		pending := b.handOverPending(view, false)
		if len(pending) == 0 {
			break
		}
		select {
		case <-changes:
		case <-ctx.Done():
			b.log.Warn("controlled shutdown: timed out; the rest moves when the lease ends",
				"pending", len(pending), "example", pending[0], "took", time.Since(start).Round(time.Millisecond))
			b.fetchers.Close()
			return fmt.Errorf("broker: controlled shutdown: %d partitions not handed over: %w", len(pending), ctx.Err())
		}
	}
	stay := len(b.handOverPending(b.meta.snapshot(), true))
	b.fetchers.Close()
	b.log.Info("controlled shutdown: leadership moved", "moved", led-stay, "kept", stay,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// handOverPending lists the partitions of view this broker is in the ISR
// of while another live replica not shutting down is in it too: those the
// controller still has to move off this broker. With leading, it lists
// those this broker leads instead, whoever else is in the ISR.
func (b *Broker) handOverPending(view *metaView, leading bool) []string {
	me := b.cfg.NodeID
	var out []string
	for _, tv := range view.topicList() {
		for _, pv := range tv.partitions {
			if leading {
				if pv.leader == me {
					out = append(out, fmt.Sprintf("%s-%d", tv.name, pv.index))
				}
				continue
			}
			if !slices.Contains(pv.isr, me) {
				continue
			}
			for _, id := range pv.isr {
				if bv, ok := view.broker(id); ok && id != me && !bv.shuttingDown {
					out = append(out, fmt.Sprintf("%s-%d", tv.name, pv.index))
					break
				}
			}
		}
	}
	return out
}
