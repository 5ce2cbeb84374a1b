package replication

import (
	"errors"
	"reflect"
	"testing"
)

func live(ids ...int32) []Candidate {
	var out []Candidate
	for _, id := range ids {
		out = append(out, Candidate{ID: id, Live: true})
	}
	return out
}

func TestStartReassignment(t *testing.T) {
	reg := func(id int32) bool { return id >= 1 && id <= 5 }
	for _, tc := range []struct {
		name    string
		a       Assignment
		target  []int32
		want    Assignment
		wantErr error
	}{
		{"move one replica: the new one is added, the old one is being removed",
			Assignment{Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2, 3}, Leader: 1}, []int32{1, 2, 4},
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, nil},
		{"move the leader away: it leads until the move completes",
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{1, 2}, Leader: 1}, []int32{3, 4},
			Assignment{Replicas: []int32{3, 4, 1, 2}, ISR: []int32{1, 2}, Leader: 1, Adding: []int32{3, 4}, Removing: []int32{1, 2}}, nil},
		{"shrink: the removed leader leads until the controller completes",
			Assignment{Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2, 3}, Leader: 1}, []int32{3, 2},
			Assignment{Replicas: []int32{3, 2, 1}, ISR: []int32{1, 2, 3}, Leader: 1, Removing: []int32{1}}, nil},
		{"shrink to a replica out of the ISR waits for it",
			Assignment{Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2}, Leader: 1}, []int32{1, 3},
			Assignment{Replicas: []int32{1, 3, 2}, ISR: []int32{1, 2}, Leader: 1, Removing: []int32{2}}, nil},
		{"reorder only: the leader stays (preferred election is separate)",
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{1, 2}, Leader: 1}, []int32{2, 1},
			Assignment{Replicas: []int32{2, 1}, ISR: []int32{1, 2}, Leader: 1}, nil},
		{"a new target restarts from the original replicas",
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3, 4}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, []int32{1, 2, 5},
			Assignment{Replicas: []int32{1, 2, 5, 3}, ISR: []int32{1, 2, 3}, Leader: 1, Adding: []int32{5}, Removing: []int32{3}}, nil},
		{"a broker moved back is no longer retired",
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{1, 2}, Leader: 1, Retired: []int32{3, 5}}, []int32{1, 3},
			Assignment{Replicas: []int32{1, 3, 2}, ISR: []int32{1, 2}, Leader: 1, Adding: []int32{3}, Removing: []int32{2}, Retired: []int32{5}}, nil},
		{"empty target", Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, nil, Assignment{}, ErrInvalidAssignment},
		{"duplicate", Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, []int32{2, 2}, Assignment{}, ErrInvalidAssignment},
		{"unregistered broker", Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, []int32{1, 9}, Assignment{}, ErrInvalidAssignment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StartReassignment(tc.a, tc.target, reg, live(1, 2, 3, 4, 5))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && !reflect.DeepEqual(norm(got), norm(tc.want)) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCompleteReassignment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		a     Assignment
		cands []Candidate
		want  Assignment
		done  bool
	}{
		{"nothing in progress", Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, live(1), Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, false},
		{"added replica not yet in sync",
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, live(1, 2, 3, 4),
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, false},
		{"added replica in sync: the removed one leaves and is retired",
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3, 4}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, live(1, 2, 3, 4),
			Assignment{Replicas: []int32{1, 2, 4}, ISR: []int32{1, 2, 4}, Leader: 1, Retired: []int32{3}}, true},
		{"the removed leader hands over to the first target replica",
			Assignment{Replicas: []int32{3, 4, 1, 2}, ISR: []int32{1, 2, 4, 3}, Leader: 1, Adding: []int32{3, 4}, Removing: []int32{1, 2}}, live(1, 2, 3, 4),
			Assignment{Replicas: []int32{3, 4}, ISR: []int32{4, 3}, Leader: 3, Retired: []int32{1, 2}}, true},
		{"an unclean-shutdown target replica leads only if no clean one can",
			Assignment{Replicas: []int32{3, 4, 1}, ISR: []int32{1, 3, 4}, Leader: 1, Adding: []int32{3, 4}, Removing: []int32{1}},
			[]Candidate{{ID: 1, Live: true}, {ID: 3, Live: true, UncleanShutdown: true}, {ID: 4, Live: true}},
			Assignment{Replicas: []int32{3, 4}, ISR: []int32{3, 4}, Leader: 4, Retired: []int32{1}}, true},
		{"no live target replica to lead: wait",
			Assignment{Replicas: []int32{3, 1}, ISR: []int32{1, 3}, Leader: 1, Adding: []int32{3}, Removing: []int32{1}}, live(1),
			Assignment{Replicas: []int32{3, 1}, ISR: []int32{1, 3}, Leader: 1, Adding: []int32{3}, Removing: []int32{1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, done := CompleteReassignment(tc.a, tc.cands)
			if done != tc.done || !reflect.DeepEqual(norm(got), norm(tc.want)) {
				t.Fatalf("got %v %+v\nwant %v %+v", done, got, tc.done, tc.want)
			}
		})
	}
}

func TestCancelReassignment(t *testing.T) {
	// Originals 1 and 2 fell out of the ISR while the added 3 caught up
	// and took over; 4 has not caught up.
	noOriginalInSync := Assignment{Replicas: []int32{3, 4, 1, 2}, ISR: []int32{3}, Leader: 3, Adding: []int32{3, 4}, Removing: []int32{1, 2}}
	// The same with both originals live, or none.
	both := []Candidate{{ID: 1, Live: true}, {ID: 2, Live: true}, {ID: 3, Live: true}, {ID: 4, Live: true}}
	noneLive := []Candidate{{ID: 3, Live: true}, {ID: 4, Live: true}}
	offline := noOriginalInSync
	offline.Leader = -1
	for _, tc := range []struct {
		name    string
		a       Assignment
		unclean bool
		want    Assignment
		wantErr error
		cands   []Candidate
		ends    map[int32]LogEnd
	}{
		{"nothing to cancel", Assignment{Replicas: []int32{1}, ISR: []int32{1}, Leader: 1}, false, Assignment{}, ErrNoReassignment, nil, nil},
		{"back to the original replicas; the added one is retired",
			Assignment{Replicas: []int32{1, 2, 4, 3}, ISR: []int32{1, 2, 3, 4}, Leader: 1, Adding: []int32{4}, Removing: []int32{3}}, false,
			Assignment{Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2, 3}, Leader: 1, Retired: []int32{4}}, nil, nil, nil},
		{"order of the original replicas is kept",
			Assignment{Replicas: []int32{3, 4, 1, 2}, ISR: []int32{1, 2}, Leader: 1, Adding: []int32{3, 4}, Removing: []int32{1, 2}}, false,
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{1, 2}, Leader: 1, Retired: []int32{3, 4}}, nil, nil, nil},
		{"no original replica in the ISR: refused rather than taken offline",
			noOriginalInSync, false, Assignment{}, ErrUncleanRevert, nil, nil},
		{"no original replica in the ISR, unclean election allowed: the first live original leads alone, uncleanly",
			noOriginalInSync, true,
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{2}, Leader: 2, Retired: []int32{3, 4}, Unclean: true}, nil, nil, nil},
		{"the same, both originals live: the longer log leads",
			noOriginalInSync, true,
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{2}, Leader: 2, Retired: []int32{3, 4}, Unclean: true}, nil,
			both, map[int32]LogEnd{1: {Epoch: 4, Offset: 10}, 2: {Epoch: 4, Offset: 30}, 3: {Epoch: 5, Offset: 90}}},
		{"the same, both originals live, no log ends: the first",
			noOriginalInSync, true,
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{1}, Leader: 1, Retired: []int32{3, 4}, Unclean: true}, nil, both, nil},
		{"the same, the partition offline: the original leads all the same",
			offline, true,
			Assignment{Replicas: []int32{1, 2}, ISR: []int32{2}, Leader: 2, Retired: []int32{3, 4}, Unclean: true}, nil, nil, nil},
		{"the same, no original live: refused rather than taken offline",
			noOriginalInSync, true, Assignment{}, ErrOfflineRevert, noneLive, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cands := tc.cands
			if cands == nil {
				cands = []Candidate{{ID: 1}, {ID: 2, Live: true}, {ID: 3, Live: true}, {ID: 4, Live: true}}
			}
			got, err := CancelReassignment(tc.a, cands, tc.unclean, tc.ends)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && !reflect.DeepEqual(norm(got), norm(tc.want)) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// norm makes empty and nil lists compare equal.
func norm(a Assignment) Assignment {
	for _, s := range []*[]int32{&a.Replicas, &a.ISR, &a.Adding, &a.Removing, &a.Retired} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	return a
}
