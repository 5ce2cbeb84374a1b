package replication

import (
	"errors"
	"fmt"
	"slices"
)

// Errors of reassignment decisions.
var (
	// ErrInvalidAssignment: a target with no replica, a duplicate, or a
	// broker that is not registered (INVALID_REPLICA_ASSIGNMENT).
	ErrInvalidAssignment = errors.New("replication: invalid replica assignment")
	// ErrNoReassignment: a cancellation of a partition that is not
	// being reassigned (NO_REASSIGNMENT_IN_PROGRESS).
	ErrNoReassignment = errors.New("replication: no reassignment in progress")
	// ErrUncleanRevert: a cancellation that would leave no original
	// replica in the ISR, on a topic without unclean leader election.
	// Kafka refuses it as an INVALID_REPLICA_ASSIGNMENT.
	ErrUncleanRevert = fmt.Errorf("%w: no original replica is in the ISR, so reverting would require an unclean leader election", ErrInvalidAssignment)
	// ErrOfflineRevert: a cancellation that would leave no original
	// replica in the ISR and none live to elect uncleanly: the partition
	// would go offline.
	ErrOfflineRevert = fmt.Errorf("%w: no original replica is in the ISR or live, so reverting would take the partition offline", ErrInvalidAssignment)
)

// Assignment is a partition's replicas as reassignment sees them. While a
// reassignment runs (Kafka's KIP-455), Replicas is the target followed by
// the original replicas that are not in it; Adding are the target's
// replicas that were not original ones, Removing the original replicas not
// in the target. Retired are brokers a completed reassignment removed:
// the recorded decision that lets them delete their copy of the log.
type Assignment struct {
	Replicas []int32
	ISR      []int32
	Leader   int32
	Adding   []int32
	Removing []int32
	Retired  []int32
	// Unclean: the decision elected Leader from outside the ISR (a
	// cancellation's unclean revert), so it may hold less than was
	// acknowledged, and in a tiered partition less than the bucket holds.
	Unclean bool
}

// Reassigning reports whether a reassignment is in progress.
func (a Assignment) Reassigning() bool { return len(a.Adding) > 0 || len(a.Removing) > 0 }

// Target is where the assignment is going: the replicas without those
// being removed.
func (a Assignment) Target() []int32 {
	var out []int32
	for _, id := range a.Replicas {
		if !slices.Contains(a.Removing, id) {
			out = append(out, id)
		}
	}
	return out
}

// Original is the replica list the reassignment started from: the
// replicas without those being added.
func (a Assignment) Original() []int32 {
	var out []int32
	for _, id := range a.Replicas {
		if !slices.Contains(a.Adding, id) {
			out = append(out, id)
		}
	}
	return out
}

// StartReassignment moves a towards target (a new reassignment, or a new
// target for one in progress, which starts again from the original
// replicas). The replicas become the target followed by the original
// replicas not in it; new replicas join as followers and enter the ISR
// once caught up, and CompleteReassignment (the controller) then drops the
// others, also when the target only removes replicas. A target equal to
// the replicas with no reassignment running changes only their order.
// registered says whether a broker id may host a replica.
func StartReassignment(a Assignment, target []int32, registered func(int32) bool, cands []Candidate) (Assignment, error) {
	if len(target) == 0 {
		return a, ErrInvalidAssignment
	}
	for i, id := range target {
		if slices.Contains(target[:i], id) || !registered(id) {
			return a, ErrInvalidAssignment
		}
	}
	orig := a.Original()
	next := a
	next.Adding, next.Removing = nil, nil
	next.Replicas = slices.Clone(target)
	for _, id := range orig {
		if !slices.Contains(target, id) {
			next.Replicas = append(next.Replicas, id)
			next.Removing = append(next.Removing, id)
		}
	}
	for _, id := range target {
		if !slices.Contains(orig, id) {
			next.Adding = append(next.Adding, id)
		}
	}
	next.Retired = without(a.Retired, next.Replicas)
	next.ISR = intersect(a.ISR, next.Replicas)
	return keepLeader(next, cands), nil
}

// CancelReassignment reverts a reassignment in progress to the original
// replicas: the added replicas leave (and are retired), the ISR keeps its
// original members, and a leader among the added replicas hands over.
//
// When no original replica is in the ISR (they fell out while only added
// replicas kept up), the revert would take the partition offline: it is
// refused with ErrUncleanRevert, as Kafka's controller does, unless
// unclean (the topic's unclean.leader.election.enable) allows a live
// original replica to become the ISR and lead (Unclean), losing what only
// the added replicas hold: the one whose log holds the latest history of
// those ends reports (Longest), else the first live one. With none live it
// is refused all the same (ErrOfflineRevert).
func CancelReassignment(a Assignment, cands []Candidate, unclean bool, ends map[int32]LogEnd) (Assignment, error) {
	if !a.Reassigning() {
		return a, ErrNoReassignment
	}
	next := a
	next.Replicas = a.Original()
	next.Adding, next.Removing = nil, nil
	next.Retired = union(without(a.Retired, next.Replicas), without(a.Adding, next.Replicas))
	next.ISR = intersect(a.ISR, next.Replicas)
	if len(next.ISR) == 0 && len(a.ISR) > 0 {
		if !unclean || len(next.Replicas) == 0 {
			return a, ErrUncleanRevert
		}
		leader := Longest(next.Replicas, cands, ends)
		if leader < 0 {
			leader = ElectLeader(next.Replicas, nil, cands, true).Leader
		}
		if leader < 0 {
			return a, ErrOfflineRevert
		}
		next.ISR, next.Leader, next.Unclean = []int32{leader}, leader, true
	}
	return keepLeader(next, cands), nil
}

// CompleteReassignment finishes a reassignment whose target replicas are
// all in the ISR: the replicas become the target, the ISR keeps the
// target's members, the removed replicas are retired, and a leader that is
// being removed hands leadership to the first live target replica in the
// ISR (in target order: the preferred replica first). It reports false
// when there is nothing to complete yet.
func CompleteReassignment(a Assignment, cands []Candidate) (Assignment, bool) {
	if !a.Reassigning() {
		return a, false
	}
	target := a.Target()
	for _, id := range target {
		if !slices.Contains(a.ISR, id) {
			return a, false
		}
	}
	next := a
	next.Replicas = target
	next.ISR = intersect(a.ISR, target)
	next.Adding, next.Removing = nil, nil
	next.Retired = union(without(a.Retired, target), a.Removing)
	next = keepLeader(next, cands)
	if next.Leader < 0 && a.Leader >= 0 {
		// No live target replica can lead: wait.
		return a, false
	}
	return next, true
}

// keepLeader keeps a's leader when it is still a replica, and otherwise
// elects one from the ISR among the replicas (without unclean election).
func keepLeader(a Assignment, cands []Candidate) Assignment {
	if a.Leader >= 0 && slices.Contains(a.Replicas, a.Leader) {
		return a
	}
	if a.Leader < 0 {
		return a // offline: the controller's election handles it
	}
	e := ElectLeader(a.Replicas, a.ISR, cands, false)
	a.Leader = e.Leader
	if e.Leader >= 0 {
		a.ISR = e.ISR
	}
	return a
}

func intersect(a, b []int32) []int32 {
	out := []int32{}
	for _, id := range a {
		if slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}

// without is a minus b.
func without(a, b []int32) []int32 {
	var out []int32
	for _, id := range a {
		if !slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}

func union(a, b []int32) []int32 {
	out := slices.Clone(a)
	for _, id := range b {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}
