package broker

import (
	"fmt"
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
	for shift := range len(order) - 1 {
		parts, err := placeReplicas(view, 0, 12, 3, 0, shift)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			seen := map[string]bool{}
			for _, r := range p.replicas {
				if seen[racks[r]] {
					t.Errorf("shift %d: partition %d has replicas %v sharing rack %s", shift, p.index, p.replicas, racks[r])
				}
				seen[racks[r]] = true
			}
		}
	}
	// Without racks the order is by id.
	plain := &metaView{brokers: []brokerView{{id: 1}, {id: 2}, {id: 3}}}
	if got := plain.placementOrder(); !slices.Equal(got, []int32{1, 2, 3}) {
		t.Fatalf("order without racks %v", got)
	}
}

// Partitions added to a topic keep its preferred leaders spread: each
// goes to the live broker leading the fewest of the topic's partitions,
// continuing the round-robin of a balanced topic, one request at a time
// or several partitions in one.
func TestAddedPartitionsKeepLeadersSpread(t *testing.T) {
	view := &metaView{brokers: []brokerView{{id: 1}, {id: 2}, {id: 3}}}
	topic := func(leaders ...int32) *topicView {
		tv := &topicView{}
		for i, l := range leaders {
			tv.partitions = append(tv.partitions, partitionView{index: int32(i), replicas: []int32{l}})
		}
		return tv
	}
	leadersOf := func(ps []partitionView) (ls []int32) {
		for _, p := range ps {
			ls = append(ls, p.replicas[0])
		}
		return ls
	}
	for _, c := range []struct {
		name     string
		existing []int32
		add      int32
		want     []int32
	}{
		{"a balanced topic goes on round-robin", []int32{2, 3, 1, 2, 3, 1}, 4, []int32{2, 3, 1, 2}},
		{"leaders piled on one broker", []int32{1, 1, 1}, 4, []int32{2, 3, 2, 3}},
		{"the last leader is gone", []int32{1, 4}, 2, []int32{2, 3}},
	} {
		tv := topic(c.existing...)
		var got []int32
		// One request for all, then one request per partition: the same.
		parts, err := placeAdded(view, tv, c.add, 2)
		if err != nil {
			t.Fatal(err)
		}
		if l := leadersOf(parts); !slices.Equal(l, c.want) {
			t.Errorf("%s: %v added at once are led by %v, want %v", c.name, c.existing, l, c.want)
		}
		for range c.add {
			parts, err := placeAdded(view, tv, 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			if parts[0].index != int32(len(tv.partitions)) || parts[0].replicas[0] == parts[0].replicas[1] {
				t.Fatalf("%s: placed %+v", c.name, parts[0])
			}
			got = append(got, parts[0].replicas[0])
			tv.partitions = append(tv.partitions, parts[0])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v added one at a time are led by %v, want %v", c.name, c.existing, got, c.want)
		}
	}

	// With racks, the replicas of an added partition still use every rack.
	rack := func(s string) *string { return &s }
	racked := &metaView{brokers: []brokerView{
		{id: 1, rack: rack("a")}, {id: 2, rack: rack("a")}, {id: 3, rack: rack("b")},
		{id: 4, rack: rack("b")}, {id: 5, rack: rack("c")}, {id: 6, rack: rack("c")},
	}}
	racks := map[int32]string{1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
	parts, err := placeAdded(racked, topic(1, 1, 3), 6, 3)
	if err != nil {
		t.Fatal(err)
	}
	led := map[int32]int{1: 2, 3: 1}
	for _, p := range parts {
		led[p.replicas[0]]++
		seen := map[string]bool{}
		for _, r := range p.replicas {
			if seen[racks[r]] {
				t.Errorf("added partition %d has replicas %v sharing rack %s", p.index, p.replicas, racks[r])
			}
			seen[racks[r]] = true
		}
	}
	for id := int32(1); id <= 6; id++ {
		if led[id] < 1 || led[id] > 2 {
			t.Errorf("broker %d leads %d of 9 partitions: %v", id, led[id], led)
		}
	}
}

// New topics keep the cluster's preferred leaders spread: what does not
// fill a whole round of the brokers goes to those leading the fewest
// partitions of every topic. A hundred single-partition topics on three
// brokers lead 33 or 34 on each (at random starts, 38 on the busiest on
// average); a topic of whole rounds leads once on each; the brokers that
// lead the fewest get a new topic's partitions first.
func TestNewTopicsKeepTheClustersLeadersSpread(t *testing.T) {
	view := &metaView{brokers: []brokerView{{id: 1}, {id: 2}, {id: 3}}, topics: map[string]*topicView{}}
	create := func(name string, partitions int32) []partitionView {
		t.Helper()
		start := leastLedStart(view, partitions)
		parts, err := placeReplicas(view, 0, partitions, 2, start, placementShift(view, nil, 0, partitions, 2, start))
		if err != nil {
			t.Fatal(err)
		}
		view.topics[name] = &topicView{name: name, partitions: parts}
		return parts
	}
	led := func() map[int32]int {
		m := map[int32]int{}
		for _, tv := range view.topics {
			for _, p := range tv.partitions {
				m[p.replicas[0]]++
			}
		}
		return m
	}
	for i := range 100 {
		create(fmt.Sprintf("small-%d", i), 1)
		if l := led(); max(l[1], l[2], l[3])-min(l[1], l[2], l[3]) > 1 {
			t.Fatalf("after %d topics, leaders per broker %v", i+1, l)
		}
	}
	// A topic of whole rounds: once on each, whatever the start.
	before := led()
	create("rounds", 6)
	if l := led(); l[1]-before[1] != 2 || l[2]-before[2] != 2 || l[3]-before[3] != 2 {
		t.Fatalf("six partitions on three brokers led %v, before %v", l, before)
	}
	// Broker 3 leads the fewest, then broker 1: a two-partition topic
	// starts at broker 3 and goes round to broker 1.
	view.topics = map[string]*topicView{"old": {partitions: []partitionView{
		{index: 0, replicas: []int32{1}}, {index: 1, replicas: []int32{2}}, {index: 2, replicas: []int32{2}},
	}}}
	for range 20 {
		if got := create("pair", 2); got[0].replicas[0] != 3 || got[1].replicas[0] != 1 {
			t.Fatalf("leaders %d, %d; want 3, 1", got[0].replicas[0], got[1].replicas[0])
		}
		delete(view.topics, "pair")
	}
}

// When a broker fails, its partitions go to their first live in-sync
// replica in order: the placement puts the first followers of a broker's
// partitions on every other broker alike, so that none takes twice the
// others' share. Consecutive followers (a plain round-robin) sent all of a
// lost broker's leaderships to the next one: of three brokers, it then
// led two thirds.
func TestALostBrokersLeadershipsSpreadOverTheOthers(t *testing.T) {
	for _, c := range []struct {
		brokers int
		rf      int16
	}{{3, 3}, {3, 2}, {5, 3}} {
		t.Run(fmt.Sprintf("%d brokers, rf %d", c.brokers, c.rf), func(t *testing.T) {
			view := &metaView{topics: map[string]*topicView{}}
			for id := range int32(c.brokers) {
				view.brokers = append(view.brokers, brokerView{id: id + 1})
			}
			create := func(name string, partitions int32) {
				t.Helper()
				start := leastLedStart(view, partitions)
				parts, err := placeReplicas(view, 0, partitions, c.rf, start, placementShift(view, nil, 0, partitions, c.rf, start))
				if err != nil {
					t.Fatal(err)
				}
				view.topics[name] = &topicView{name: name, partitions: parts}
			}
			for i := range 60 {
				create(fmt.Sprintf("small-%d", i), 1)
			}
			create("rounds", int32(6*c.brokers))
			create("odd", int32(c.brokers+1))
			for lost := int32(1); lost <= int32(c.brokers); lost++ {
				took := map[int32]int{}
				for _, tv := range view.topics {
					for _, p := range tv.partitions {
						if p.replicas[0] == lost {
							took[p.replicas[1]]++
						}
					}
				}
				lo, hi := -1, 0
				for id := range int32(c.brokers) {
					if id+1 == lost {
						continue
					}
					n := took[id+1]
					hi = max(hi, n)
					if lo < 0 || n < lo {
						lo = n
					}
				}
				if hi-lo > 2 {
					t.Errorf("broker %d lost: its leaderships go %v", lost, took)
				}
			}
		})
	}
}
