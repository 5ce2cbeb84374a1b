package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/localseg"
)

func init() {
	handler(kmsg.DeleteRecords, 0, 2, handleDeleteRecords)
}

// handleDeleteRecords moves each partition's log start offset forward
// (-1 means up to the high watermark). Segments wholly below it are
// removed by the next retention pass; reads below it fail at once. As
// Kafka's DelayedDeleteRecords, the answer waits until the partition's low
// watermark (the lowest log start among the leader and its live
// followers) reaches the requested offset, so the low watermark it
// reports is true of every live replica; past the request's timeout the
// partition gets REQUEST_TIMED_OUT (its log start has moved all the same).
func handleDeleteRecords(b *Broker, r *request, req *kmsg.DeleteRecordsRequest) kmsg.Response {
	// The manifest commits go on if the client goes away: a commit
	// cut short leaves its outcome unknown until the next one.
	remote, cancel := b.remoteLookups(b.ctx)
	defer cancel()
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	type pending struct {
		p        *partition
		sp       *kmsg.DeleteRecordsResponseTopicPartition
		required int64
	}
	var wait []pending
	for _, rt := range req.Topics {
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		// DELETE on the topic.
		deletable := r.authorizedTopic(acl.Delete, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LowWatermark = -1
			var p *partition
			err := errTopicAuthorization
			if deletable {
				p, err = b.partitionByName(rt.Topic, rp.Partition)
			}
			if err == nil && p.internal {
				err = fmt.Errorf("%w: cannot delete records of the internal topic %s", errInvalidTopic, p.topic)
			}
			if err == nil {
				err = p.checkLeader(-1)
			}
			if err == nil && p.leadershipLapsed() {
				// A write: refused as produce is (superseded.go).
				err = errLeadershipUnproven
			}
			if err == nil && !p.cfg.Load().deletePolicy {
				// Kafka's answer on a compact-only topic: its records
				// go by the cleaner's choice only.
				err = fmt.Errorf("%w: records of %s-%d cannot be deleted: its cleanup.policy lacks delete", errPolicyViolation, p.topic, p.index)
			}
			var required int64
			if err == nil {
				required, err = deleteRecords(remote, p, rp.Offset)
			}
			if err != nil {
				sp.ErrorCode = kafkaError(err)
			} else {
				sp.LowWatermark = p.lowWatermark(b.brokerAlive)
			}
			st.Partitions = append(st.Partitions, sp)
			if err == nil && sp.LowWatermark < required {
				wait = append(wait, pending{p: p, required: required})
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	if len(wait) == 0 {
		return resp
	}
	// The response's partitions are in place: point at them.
	for i := range wait {
		for ti := range resp.Topics {
			for pi := range resp.Topics[ti].Partitions {
				sp := &resp.Topics[ti].Partitions[pi]
				if resp.Topics[ti].Topic == wait[i].p.topic && sp.Partition == wait[i].p.index && sp.ErrorCode == 0 {
					wait[i].sp = sp
				}
			}
		}
	}
	// done settles each waiting partition it can: reached, or no longer
	// led here. It reports whether none is left.
	done := func(final bool) bool {
		left := wait[:0]
		for _, w := range wait {
			if !w.p.isLeader() {
				w.sp.ErrorCode, w.sp.LowWatermark = kafkaError(errNotLeader), -1
				continue
			}
			w.sp.LowWatermark = w.p.lowWatermark(b.brokerAlive)
			if w.sp.LowWatermark >= w.required {
				continue
			}
			if final {
				w.sp.ErrorCode = kerr.RequestTimedOut.Code
				continue
			}
			left = append(left, w)
		}
		wait = left
		return len(wait) == 0
	}
	w := newWaiter()
	watched := make([]*partition, len(wait))
	for i, pw := range wait {
		watched[i] = pw.p
	}
	watch := func() {
		for _, p := range watched {
			p.watch(w)
		}
	}
	unwatch := func() {
		for _, p := range watched {
			p.unwatch(w)
		}
	}
	// Register before checking again so a follower's fetch in between
	// is not missed.
	watch()
	if done(false) {
		unwatch()
		return resp
	}
	go func() {
		timer := time.NewTimer(time.Duration(req.TimeoutMillis) * time.Millisecond)
		defer timer.Stop()
		defer unwatch()
		for {
			select {
			case <-w.ch:
				watch()
				if done(false) {
					r.respond(resp)
					return
				}
			case <-timer.C:
				done(true)
				r.respond(resp)
				return
			case <-r.ctx().Done():
				r.respond(req.ResponseKind())
				return
			}
		}
	}()
	return nil
}

// deleteRecords moves p's log start to offset (-1: the high watermark) and
// returns the offset the records are deleted up to; ctx bounds the
// manifest's commit in the object store.
func deleteRecords(ctx context.Context, p *partition, offset int64) (int64, error) {
	hw := p.highWatermark()
	if offset == -1 {
		offset = hw
	}
	if offset < 0 || offset > hw {
		return 0, localseg.ErrOffsetOutOfRange
	}
	if offset <= p.logStartOffset() {
		return offset, nil
	}
	if p.tier != nil {
		// The records may be in the bucket: the manifest records the
		// new start first.
		if err := p.checkTierReady(); err != nil {
			return 0, err
		}
		if p.tier.manifest().Start() >= 0 {
			_, epoch := p.leaderState()
			if err := p.tier.setLogStart(ctx, epoch, offset); err != nil {
				return 0, err
			}
		}
	}
	if err := p.log.SetLogStartOffset(offset); err != nil {
		return 0, err
	}
	// Followers learn the new start from their next fetch answer: wake
	// the ones waiting for data.
	p.wake()
	return offset, nil
}

// brokerAlive reports whether broker id is registered (its lease live).
func (b *Broker) brokerAlive(id int32) bool {
	_, ok := b.meta.snapshot().broker(id)
	return ok
}
