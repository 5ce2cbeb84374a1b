package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/shale-log/shale/broker/controller"
	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// Reassignment errors, mapped to Kafka codes in errors.go.
var errNoReassignment = errors.New("broker: no reassignment in progress")

// reassign writes the start (or the cancellation, target nil) of a
// partition's reassignment as a compare-and-swap on its partition epoch,
// deciding again when a leader or the controller changed it meanwhile.
//
// A start the partition already shows (a client's retry of a start that
// landed though its answer was lost or timed out, or the same request
// twice) writes nothing and answers success at the revision the partition
// was read at: nothing to do is not a second reassignment, and the
// partition epoch is not bumped under the leader's ISR changes.
func (m *etcdMeta) reassign(ctx context.Context, topic string, index int32, target []int32) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	for {
		cur, curRev, err := m.store.PartitionRevision(ctx, topic, index)
		if err != nil {
			return 0, metaError(err)
		}
		snap := m.cache.Snapshot()
		cands := controller.Candidates(snap, nil)
		registered := func(id int32) bool {
			return slices.ContainsFunc(snap.Brokers, func(b metadata.Broker) bool { return b.ID == id })
		}
		var next replication.Assignment
		if target == nil {
			unclean := false
			if ts, ok := snap.Topics[topic]; ok {
				unclean = ts.Configs[controller.UncleanElectionConfig] == "true"
			}
			next, err = replication.CancelReassignment(controller.AssignmentOf(cur), cands, unclean, nil)
			if err == nil && next.Unclean && m.askLogs != nil {
				// An unclean revert: decided again with the original
				// replicas' log ends, the longest to lead.
				logs := controller.CollectReplicaLogs(ctx, snap, []metadata.Partition{controller.WithAssignment(cur, next)}, nil, m.askLogs)
				next, err = replication.CancelReassignment(controller.AssignmentOf(cur), cands, unclean, logs[controller.Ref(cur)])
			}
		} else {
			next, err = replication.StartReassignment(controller.AssignmentOf(cur), target, registered, cands)
		}
		switch {
		case errors.Is(err, replication.ErrNoReassignment):
			return 0, fmt.Errorf("%w: %s/%d", errNoReassignment, topic, index)
		case errors.Is(err, replication.ErrUncleanRevert), errors.Is(err, replication.ErrOfflineRevert):
			return 0, fmt.Errorf("%w: unable to revert the assignment of %s/%d: %w", errInvalidReplicaAssignment, topic, index, err)
		case errors.Is(err, replication.ErrInvalidAssignment):
			return 0, fmt.Errorf("%w: replicas %v: each a registered broker, once, at least one", errInvalidReplicaAssignment, target)
		case err != nil:
			return 0, err
		}
		if sameAssignment(next, controller.AssignmentOf(cur)) {
			return curRev, nil
		}
		_, rev, err := m.store.UpdatePartition(ctx, controller.WithAssignment(cur, next), cur.PartitionEpoch)
		if err == nil && next.Unclean && m.uncleanElected != nil {
			m.uncleanElected.Inc()
		}
		if errors.Is(err, metadata.ErrConflict) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			continue
		}
		return rev, metaError(err)
	}
}

// retiredHere reports whether a finished reassignment removed broker id
// from partition index of topic id: the recorded decision that lets it
// delete its copy of the log.
func (v *metaView) retiredHere(topicID [16]byte, index, id int32) bool {
	tv := v.topicsByID[topicID]
	if tv == nil {
		return false
	}
	for _, p := range tv.partitions {
		if p.index == index {
			return slices.Contains(p.retired, id) && !slices.Contains(p.replicas, id)
		}
	}
	return false
}

// sameAssignment reports whether a and b place the same replicas in the
// same roles.
func sameAssignment(a, b replication.Assignment) bool {
	return a.Leader == b.Leader && slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.ISR, b.ISR) &&
		slices.Equal(a.Adding, b.Adding) && slices.Equal(a.Removing, b.Removing) && slices.Equal(a.Retired, b.Retired)
}
