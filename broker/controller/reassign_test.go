package controller

import (
	"reflect"
	"testing"

	"github.com/shale-log/shale/metadata"
)

func TestPlanReassignments(t *testing.T) {
	moving := func(isr ...int32) metadata.Partition {
		return metadata.Partition{Replicas: []int32{3, 2, 1}, Leader: 1, LeaderEpoch: 5, ISR: isr, PartitionEpoch: 9,
			AddingReplicas: []int32{3}, RemovingReplicas: []int32{1}}
	}
	for _, tc := range []struct {
		name      string
		snap      *metadata.Snapshot
		restarted map[int32]bool
		planned   []Change
		want      []metadata.Partition
	}{
		{"no reassignment: nothing", snapshot(brokers(1, 2, 3), nil, metadata.Partition{Replicas: []int32{1, 2}, Leader: 1, ISR: []int32{1, 2}}), nil, nil, nil},
		{"added replica not in sync yet: nothing", snapshot(brokers(1, 2, 3), nil, moving(1, 2)), nil, nil, nil},
		{"added replica in sync: completed, the removed leader hands over with a new epoch",
			snapshot(brokers(1, 2, 3), nil, moving(1, 2, 3)), nil, nil,
			[]metadata.Partition{{Replicas: []int32{3, 2}, Leader: 3, LeaderEpoch: 6, ISR: []int32{2, 3}, PartitionEpoch: 9, RetiredReplicas: []int32{1}}}},
		{"a restarted target replica does not lead",
			snapshot(brokers(1, 2, 3), nil, moving(1, 2, 3)), map[int32]bool{3: true}, nil,
			[]metadata.Partition{{Replicas: []int32{3, 2}, Leader: 2, LeaderEpoch: 6, ISR: []int32{2}, PartitionEpoch: 9, RetiredReplicas: []int32{1}}}},
		{"a partition Plan changes this round waits",
			snapshot(brokers(1, 2, 3), nil, moving(1, 2, 3)), nil, []Change{{Next: metadata.Partition{Topic: "t", Index: 0}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanReassignments(tc.snap, tc.restarted, tc.planned)
			if len(got) != len(tc.want) {
				t.Fatalf("PlanReassignments = %+v, want %+v", got, tc.want)
			}
			for i, ch := range got {
				w := tc.want[i]
				w.Topic, w.Index = "t", int32(i)
				if ch.Expected != 9 || !reflect.DeepEqual(ch.Next, w) {
					t.Fatalf("change %d = %+v (expected %d), want %+v", i, ch.Next, ch.Expected, w)
				}
			}
		})
	}
}
