package group

import (
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

func (s *shard) scheduleRetention() {
	s.after(s.c.cfg.OffsetsRetentionCheckInterval, func() {
		s.expire(s.now())
		s.scheduleRetention()
	})
}

// expire removes offsets past retention and then groups left empty with no
// offsets, as Kafka's offsets.retention.minutes does (KIP-211): offsets of
// an empty group expire retention after the group became empty (for a
// group that only stores offsets, after their commit); offsets of a topic
// no member of a live group subscribes to expire retention after their
// commit; an offset committed with its own retention (OffsetCommit v2-v4)
// expires at that time.
func (s *shard) expire(now time.Time) {
	nowMs := now.UnixMilli()
	retentionMs := s.c.cfg.OffsetsRetention.Milliseconds()
	for _, e := range s.groups {
		if e.dead {
			continue
		}
		// base returns the time an offset's retention counts from, or
		// false when it cannot expire now.
		var base func(topic string, o *offsetEntry) (int64, bool)
		switch {
		case e.classic != nil:
			g := e.classic
			switch {
			case g.state == stateEmpty && g.protocolType != "":
				since := g.stateTime.UnixMilli()
				base = func(string, *offsetEntry) (int64, bool) { return since, true }
			case g.state == stateEmpty:
				base = func(_ string, o *offsetEntry) (int64, bool) { return o.commitTs, true }
			case g.subscribed != nil:
				base = func(t string, o *offsetEntry) (int64, bool) { return o.commitTs, !g.subscribed[t] }
			default:
				base = func(string, *offsetEntry) (int64, bool) { return 0, false }
			}
		case len(e.consumer.members) == 0:
			since := e.consumer.stateTime.UnixMilli()
			base = func(string, *offsetEntry) (int64, bool) { return since, true }
		default:
			cg := e.consumer
			base = func(t string, o *offsetEntry) (int64, bool) { return o.commitTs, !cg.isSubscribed(t) }
		}
		var expired []topicPartition
		for tp, o := range e.offsets {
			// A commit being written, or a transaction's offset pending
			// for the partition, keeps it (as Kafka's
			// cleanupExpiredOffsets).
			if e.pendingCommits[tp] > 0 || e.unstable(tp) {
				continue
			}
			b, ok := base(tp.topic, o)
			if !ok && o.expireTs < 0 {
				continue
			}
			if (o.expireTs >= 0 && nowMs >= o.expireTs) || (o.expireTs < 0 && nowMs-b >= retentionMs) {
				expired = append(expired, tp)
			}
		}
		empty := len(e.pendingCommits) == 0 && !e.hasTxn() && len(expired) == len(e.offsets) && e.isEmptyGroup()
		if empty {
			s.c.log.Debug("group: deleting expired group", "group", e.id, "offsets", len(expired))
			s.tombstoneGroup(e, func(int16) {})
			continue
		}
		if len(expired) == 0 {
			continue
		}
		records := make([]recordbatch.Record, 0, len(expired))
		for _, tp := range expired {
			records = append(records, recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp)})
		}
		s.appendRecords(records, func(err error) {
			if err != nil || s.groups[e.id] != e {
				return
			}
			for _, tp := range expired {
				if e.pendingCommits[tp] == 0 {
					s.deleteOffset(e, tp)
				}
			}
		})
	}
}

// isEmptyGroup: no members, none joining.
func (e *groupEntry) isEmptyGroup() bool {
	if g := e.classic; g != nil {
		return g.state == stateEmpty && len(g.members) == 0 && len(g.pendingMembers) == 0
	}
	return len(e.consumer.members) == 0
}
