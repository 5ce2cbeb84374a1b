package group

import (
	"slices"
	"sort"
	"strings"
)

// Server-side assignors for KIP-848 groups. Both are pure functions of the
// members' subscriptions, the topics' partition counts and (for uniform)
// the previous target assignment, so they are tested without a clock.

// idPartition is one partition named by topic id.
type idPartition struct {
	topic     [16]byte
	partition int32
}

// partitionSet is a set of partitions.
type partitionSet map[idPartition]struct{}

func (s partitionSet) clone() partitionSet {
	out := make(partitionSet, len(s))
	for p := range s {
		out[p] = struct{}{}
	}
	return out
}

func (s partitionSet) equal(o partitionSet) bool {
	if len(s) != len(o) {
		return false
	}
	for p := range s {
		if _, ok := o[p]; !ok {
			return false
		}
	}
	return true
}

// sorted returns the set ordered by topic id, then partition.
func (s partitionSet) sorted() []idPartition {
	out := make([]idPartition, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return lessIDPartition(out[i], out[j]) })
	return out
}

func lessIDPartition(a, b idPartition) bool {
	if c := strings.Compare(string(a.topic[:]), string(b.topic[:])); c != 0 {
		return c < 0
	}
	return a.partition < b.partition
}

// topicInfo is a subscribed topic's id and partition count.
type topicInfo struct {
	id         [16]byte
	partitions int32
}

// assignMember is one member as an assignor sees it.
type assignMember struct {
	id       string
	topics   []string     // subscribed topics that exist, sorted
	previous partitionSet // the member's previous target, for stickiness
}

// assign runs the named assignor.
func assign(name string, members []assignMember, topics map[string]topicInfo) map[string]partitionSet {
	if name == "range" {
		return assignRange(members, topics)
	}
	return assignUniform(members, topics)
}

// assignRange gives each topic's subscribers contiguous ranges of its
// partitions, members in id order, the first (partitions % members) one
// partition more, as Kafka's range assignor does; topics with the same
// partition count and subscribers are co-partitioned.
func assignRange(members []assignMember, topics map[string]topicInfo) map[string]partitionSet {
	out := make(map[string]partitionSet, len(members))
	subs := map[string][]string{}
	for _, m := range members {
		out[m.id] = partitionSet{}
		for _, t := range m.topics {
			subs[t] = append(subs[t], m.id)
		}
	}
	for t, ids := range subs {
		info, ok := topics[t]
		if !ok {
			continue
		}
		sort.Strings(ids)
		n, k := int(info.partitions), len(ids)
		next := 0
		for i, id := range ids {
			count := n / k
			if i < n%k {
				count++
			}
			for p := next; p < next+count; p++ {
				out[id][idPartition{info.id, int32(p)}] = struct{}{}
			}
			next += count
		}
	}
	return out
}

// assignUniform spreads the subscribed partitions evenly over the members
// (each member's count differs by at most one from the others' when
// subscriptions are the same), keeping as many of each member's previous
// partitions as the balance allows.
func assignUniform(members []assignMember, topics map[string]topicInfo) map[string]partitionSet {
	out := make(map[string]partitionSet, len(members))
	if len(members) == 0 {
		return out
	}
	members = slices.Clone(members)
	sort.Slice(members, func(i, j int) bool { return members[i].id < members[j].id })
	subscribers := map[idPartition][]int{} // partition -> member indexes
	var all []idPartition
	topicNames := make([]string, 0, len(topics))
	for t := range topics {
		topicNames = append(topicNames, t)
	}
	sort.Strings(topicNames)
	memberSubs := map[string][]int{}
	for i, m := range members {
		out[m.id] = partitionSet{}
		for _, t := range m.topics {
			memberSubs[t] = append(memberSubs[t], i)
		}
	}
	for _, t := range topicNames {
		idx := memberSubs[t]
		if len(idx) == 0 {
			continue
		}
		info := topics[t]
		for p := int32(0); p < info.partitions; p++ {
			ip := idPartition{info.id, p}
			subscribers[ip] = idx
			all = append(all, ip)
		}
	}
	// The most constrained partitions (fewest subscribers) go first, so
	// that members with narrow subscriptions fill up on what only they
	// can take.
	sort.SliceStable(all, func(i, j int) bool { return len(subscribers[all[i]]) < len(subscribers[all[j]]) })
	quota := uniformQuotas(members, all, subscribers)
	load := make([]int, len(members))
	assigned := map[idPartition]bool{}
	// Keep previous partitions up to each member's quota.
	for i, m := range members {
		for _, ip := range m.previous.sorted() {
			if load[i] >= quota[i] {
				break
			}
			if assigned[ip] || !slices.Contains(subscribers[ip], i) {
				continue
			}
			out[m.id][ip] = struct{}{}
			assigned[ip] = true
			load[i]++
		}
	}
	// Give the rest to the least loaded subscriber, preferring those
	// still under quota.
	for _, ip := range all {
		if assigned[ip] {
			continue
		}
		best := -1
		for _, i := range subscribers[ip] {
			under, bestUnder := load[i] < quota[i], best >= 0 && load[best] < quota[best]
			if best < 0 || (under && !bestUnder) || (under == bestUnder && load[i] < load[best]) {
				best = i
			}
		}
		out[members[best].id][ip] = struct{}{}
		assigned[ip] = true
		load[best]++
	}
	return out
}

// uniformQuotas is how many partitions each member should end with. With
// identical subscriptions: floor or ceil of the average, the ceil going
// to the members that hold the most now (fewest moves). Otherwise the
// counts of a fresh least-loaded assignment.
func uniformQuotas(members []assignMember, all []idPartition, subscribers map[idPartition][]int) []int {
	quota := make([]int, len(members))
	same := true
	for _, m := range members[1:] {
		if !slices.Equal(m.topics, members[0].topics) {
			same = false
			break
		}
	}
	if same {
		n := len(members)
		base, extra := len(all)/n, len(all)%n
		order := make([]int, n)
		held := make([]int, n)
		for i, m := range members {
			order[i] = i
			for ip := range m.previous {
				if _, ok := subscribers[ip]; ok {
					held[i]++
				}
			}
		}
		sort.SliceStable(order, func(a, b int) bool { return held[order[a]] > held[order[b]] })
		for rank, i := range order {
			quota[i] = base
			if rank < extra {
				quota[i]++
			}
		}
		return quota
	}
	for _, ip := range all {
		best := -1
		for _, i := range subscribers[ip] {
			if best < 0 || quota[i] < quota[best] {
				best = i
			}
		}
		quota[best]++
	}
	return quota
}
