package broker

import (
	"slices"
	"testing"
)

func TestRackAwarePlacementSpreadsReplicasOverRacks(t *testing.T) {
	rack := func(s string) *string { return &s }
	view := &metaView{brokers: []brokerView{
		{id: 1, rack: rack("a")}, {id: 2, rack: rack("a")}, {id: 3, rack: rack("a")},
		{id: 4, rack: rack("b")}, {id: 5, rack: rack("b")}, {id: 6, rack: rack("c")},
	}}
	order := view.placementOrder()
	if want := []int32{1, 4, 6, 2, 5, 3}; !slices.Equal(order, want) {
		t.Fatalf("placement order %v, want %v", order, want)
	}
	racks := map[int32]string{1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "c"}
	parts, err := placeReplicas(view, 0, 12, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		seen := map[string]bool{}
		for _, r := range p.replicas {
			if seen[racks[r]] {
				t.Errorf("partition %d has replicas %v sharing rack %s", p.index, p.replicas, racks[r])
			}
			seen[racks[r]] = true
		}
	}
	// Without racks the order is by id.
	plain := &metaView{brokers: []brokerView{{id: 1}, {id: 2}, {id: 3}}}
	if got := plain.placementOrder(); !slices.Equal(got, []int32{1, 2, 3}) {
		t.Fatalf("order without racks %v", got)
	}
}
