package group

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func newConsumerEnv(t *testing.T) *env {
	e := newEnv(t)
	e.opts.Topics = fakeTopics{"t": {id: topicID(1), partitions: 6}, "u": {id: topicID(2), partitions: 2}}
	e.start()
	return e
}

// cgMember drives one KIP-848 member as a client would: full heartbeats
// carrying what it owns, taking the assignment it is given.
type cgMember struct {
	e        *env
	id       string
	instance string
	epoch    int32
	owned    partitionSet
}

func (m *cgMember) req() *kmsg.ConsumerGroupHeartbeatRequest {
	r := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	r.Version = 1
	r.Group = "cg"
	r.MemberID = m.id
	r.MemberEpoch = m.epoch
	r.RebalanceTimeoutMillis = 30_000
	r.SubscribedTopicNames = []string{"t"}
	if m.instance != "" {
		r.InstanceID = &m.instance
	}
	r.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	if m.epoch != 0 {
		for _, ip := range m.owned.sorted() {
			if n := len(r.Topics); n == 0 || r.Topics[n-1].TopicID != ip.topic {
				r.Topics = append(r.Topics, kmsg.ConsumerGroupHeartbeatRequestTopic{TopicID: ip.topic})
			}
			r.Topics[len(r.Topics)-1].Partitions = append(r.Topics[len(r.Topics)-1].Partitions, ip.partition)
		}
	}
	return r
}

func (m *cgMember) heartbeat(t *testing.T) *kmsg.ConsumerGroupHeartbeatResponse {
	t.Helper()
	resp := m.e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{ClientID: "c"}, m.req())
	if resp.ErrorCode != 0 {
		return resp
	}
	m.epoch = resp.MemberEpoch
	if resp.Assignment != nil {
		m.owned = partitionSet{}
		for _, tp := range resp.Assignment.Topics {
			for _, p := range tp.Partitions {
				m.owned[idPartition{tp.TopicID, p}] = struct{}{}
			}
		}
	}
	return resp
}

func mustHB(t *testing.T, m *cgMember) {
	t.Helper()
	if r := m.heartbeat(t); r.ErrorCode != 0 {
		t.Fatalf("heartbeat of %s: %d %s", m.id, r.ErrorCode, deref(r.ErrorMessage))
	}
}

func TestConsumerGroupRebalancesCooperatively(t *testing.T) {
	e := newConsumerEnv(t)
	a := &cgMember{e: e, id: "member-a", owned: partitionSet{}}
	b := &cgMember{e: e, id: "member-b", owned: partitionSet{}}
	mustHB(t, a)
	if a.epoch != 1 || len(a.owned) != 6 {
		t.Fatalf("first member: epoch %d owns %d", a.epoch, len(a.owned))
	}
	mustHB(t, b)
	if b.epoch != 2 || len(b.owned) != 0 {
		t.Fatalf("second member: epoch %d owns %d (its partitions are not released yet)", b.epoch, len(b.owned))
	}
	mustHB(t, a) // told to revoke three
	if a.epoch != 1 || len(a.owned) != 3 {
		t.Fatalf("revoking member: epoch %d owns %d", a.epoch, len(a.owned))
	}
	mustHB(t, a) // acknowledges the revocation
	if a.epoch != 2 {
		t.Fatalf("epoch after revocation %d", a.epoch)
	}
	mustHB(t, b)
	if len(b.owned) != 3 {
		t.Fatalf("second member owns %d after the release", len(b.owned))
	}
	for ip := range a.owned {
		if _, dup := b.owned[ip]; dup {
			t.Fatalf("partition %v owned twice", ip)
		}
	}
	d := e.c.ConsumerGroupDescribe(ctx, &kmsg.ConsumerGroupDescribeRequest{Groups: []string{"cg"}}).Groups[0]
	if d.ErrorCode != 0 || d.State != "Stable" || d.Epoch != 2 || len(d.Members) != 2 || len(d.Members[0].Assignment.TopicPartitions[0].Partitions) != 3 {
		t.Fatalf("describe: %+v", d)
	}
	lr := kmsg.NewPtrListGroupsRequest()
	lr.Version = 5
	lr.TypesFilter = []string{"consumer"}
	if gs := e.c.ListGroups(ctx, lr).Groups; len(gs) != 1 || gs[0].GroupState != "Stable" {
		t.Fatalf("list: %+v", gs)
	}

	// Commits use the member epoch as the generation.
	commit := commitReq("cg", a.id, a.epoch, "t", map[int32]int64{})
	for ip := range a.owned {
		commit.Topics[0].Partitions = append(commit.Topics[0].Partitions, kmsg.OffsetCommitRequestTopicPartition{Partition: ip.partition, Offset: 42})
	}
	for p, c := range e.commit(commit) {
		if c != 0 {
			t.Fatalf("commit of %d: %d", p, c)
		}
	}
	commit.Generation = a.epoch + 1
	for _, c := range e.commit(commit) {
		if c != codeFencedMemberEpoch {
			t.Fatalf("commit from the future: %d", c)
		}
	}
	old := commitReq("cg", a.id, a.epoch, "t", map[int32]int64{0: 1})
	old.Version = 8
	if c := e.commit(old); c[0] != codeUnsupportedVersion {
		t.Fatalf("v8 commit from a consumer-group member: %d", c[0])
	}

	// The second member leaves: the first gets everything.
	leave := b.req()
	leave.MemberEpoch = -1
	if r := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, leave); r.ErrorCode != 0 || r.MemberEpoch != -1 {
		t.Fatalf("leave: %+v", r)
	}
	mustHB(t, a)
	if a.epoch != 3 || len(a.owned) != 6 {
		t.Fatalf("after leave: epoch %d owns %d", a.epoch, len(a.owned))
	}

	// Fencing.
	a.epoch = 9
	if r := a.heartbeat(t); r.ErrorCode != codeFencedMemberEpoch {
		t.Fatalf("future epoch: %d", r.ErrorCode)
	}
	ghost := &cgMember{e: e, id: "ghost", epoch: 3}
	if r := ghost.heartbeat(t); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("unknown member: %d", r.ErrorCode)
	}
	a.epoch = 3
	mustHB(t, a)

	// The session timeout removes a silent member.
	c := &cgMember{e: e, id: "member-c", owned: partitionSet{}}
	mustHB(t, c)
	for i := 0; i < 10; i++ {
		e.advance(5 * time.Second)
		mustHB(t, a)
	}
	if r := c.heartbeat(t); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("expired member: %d", r.ErrorCode)
	}
	if len(a.owned) != 6 {
		t.Fatalf("remaining member owns %d", len(a.owned))
	}
}

func TestConsumerGroupRevocationTimeoutFencesMember(t *testing.T) {
	e := newConsumerEnv(t)
	a := &cgMember{e: e, id: "a", owned: partitionSet{}}
	b := &cgMember{e: e, id: "b", owned: partitionSet{}}
	mustHB(t, a)
	mustHB(t, b)
	// a is told to revoke but keeps heartbeating as if it still owned
	// everything.
	req := a.req()
	resp := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, req)
	if resp.ErrorCode != 0 || len(resp.Assignment.Topics[0].Partitions) != 3 {
		t.Fatalf("revocation: %+v", resp)
	}
	for i := 0; i < 7; i++ {
		e.advance(5 * time.Second)
		e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, req)
		mustHB(t, b)
	}
	if r := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, req); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("member that never revoked: %d", r.ErrorCode)
	}
	mustHB(t, b)
	if len(b.owned) != 6 {
		t.Fatalf("b owns %d", len(b.owned))
	}
}

func TestConsumerGroupStaticMemberRejoins(t *testing.T) {
	e := newConsumerEnv(t)
	a := &cgMember{e: e, id: "a1", instance: "inst", owned: partitionSet{}}
	b := &cgMember{e: e, id: "b", owned: partitionSet{}}
	mustHB(t, a)
	mustHB(t, b)
	mustHB(t, a)
	mustHB(t, a)
	mustHB(t, b)
	epoch, owned := a.epoch, a.owned.clone()
	// Another process claiming the instance id while it is in use.
	dup := &cgMember{e: e, id: "a-dup", instance: "inst", owned: partitionSet{}}
	if r := dup.heartbeat(t); r.ErrorCode != codeUnreleasedInstanceID {
		t.Fatalf("duplicate instance: %d", r.ErrorCode)
	}
	// Leave temporarily (epoch -2), come back as a new process.
	leave := a.req()
	leave.MemberEpoch = -2
	if r := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, leave); r.ErrorCode != 0 || r.MemberEpoch != -2 {
		t.Fatalf("static leave: %+v", r)
	}
	a2 := &cgMember{e: e, id: "a2", instance: "inst", owned: partitionSet{}}
	mustHB(t, a2)
	if a2.epoch != epoch || !a2.owned.equal(owned) {
		t.Fatalf("rejoined static member: epoch %d (want %d), owns %v (want %v)", a2.epoch, epoch, a2.owned, owned)
	}
	mustHB(t, b)
	if b.epoch != epoch {
		t.Fatalf("the other member saw a rebalance: epoch %d -> %d", epoch, b.epoch)
	}
}

func TestConsumerGroupReloadKeepsEpochAndOffsets(t *testing.T) {
	e := newConsumerEnv(t)
	a := &cgMember{e: e, id: "a", owned: partitionSet{}}
	mustHB(t, a)
	commit := commitReq("cg", "a", a.epoch, "t", map[int32]int64{0: 7})
	if c := e.commit(commit); c[0] != 0 {
		t.Fatal(c)
	}
	e.settle()
	e.start()
	if r := a.heartbeat(t); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("member after reload: %d", r.ErrorCode)
	}
	a.epoch, a.owned = 0, partitionSet{}
	mustHB(t, a)
	if a.epoch <= 1 || len(a.owned) != 6 {
		t.Fatalf("rejoin after reload: epoch %d owns %d", a.epoch, len(a.owned))
	}
	if o, _ := e.fetchAll("cg"); o[topicPartition{"t", 0}] != 7 {
		t.Fatalf("offsets after reload: %v", o)
	}
}

func TestConsumerGroupRequestValidation(t *testing.T) {
	e := newConsumerEnv(t)
	e.stableGroup("classic", 1)
	for _, tc := range []struct {
		name   string
		mutate func(r *kmsg.ConsumerGroupHeartbeatRequest)
		code   int16
	}{
		{"empty group", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.Group = "" }, codeInvalidGroupID},
		{"no member id", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberID = "" }, codeInvalidRequest},
		{"no subscription", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.SubscribedTopicNames = nil }, codeInvalidRequest},
		{"owned partitions on join", func(r *kmsg.ConsumerGroupHeartbeatRequest) {
			r.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{{TopicID: topicID(1), Partitions: []int32{0}}}
		}, codeInvalidRequest},
		{"no rebalance timeout", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.RebalanceTimeoutMillis = -1 }, codeInvalidRequest},
		{"unknown assignor", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.ServerAssignor = strPtr("magic") }, codeUnsupportedAssignor},
		{"bad regex", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.SubscribedTopicRegex = strPtr("(") }, codeInvalidRegularExpression},
		{"classic group in use", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.Group = "classic" }, codeGroupIDNotFound},
		{"static leave without instance", func(r *kmsg.ConsumerGroupHeartbeatRequest) { r.MemberEpoch = -2 }, codeInvalidRequest},
	} {
		m := &cgMember{e: e, id: "x", owned: partitionSet{}}
		r := m.req()
		tc.mutate(r)
		if got := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, r).ErrorCode; got != tc.code {
			t.Errorf("%s: code %d, want %d", tc.name, got, tc.code)
		}
	}
	// A classic JoinGroup to a live consumer group.
	m := &cgMember{e: e, id: "x", owned: partitionSet{}}
	mustHB(t, m)
	if r := recv(t, e.join(joinReq(9, "cg", "", ""))); r.ErrorCode != codeInconsistentGroupProtocol {
		t.Fatalf("classic join to a consumer group: %d", r.ErrorCode)
	}
	// Regex subscriptions.
	rx := &cgMember{e: e, id: "rx", owned: partitionSet{}}
	r := rx.req()
	r.Group = "rx"
	r.SubscribedTopicNames = nil
	r.SubscribedTopicRegex = strPtr("^u$")
	resp := e.c.ConsumerGroupHeartbeat(ctx, ClientInfo{}, r)
	if resp.ErrorCode != 0 || len(resp.Assignment.Topics) != 1 || resp.Assignment.Topics[0].TopicID != topicID(2) || len(resp.Assignment.Topics[0].Partitions) != 2 {
		t.Fatalf("regex member: %+v", resp)
	}
}

func TestUniformAssignorIsBalancedAndSticky(t *testing.T) {
	topics := map[string]topicInfo{"a": {id: topicID(1), partitions: 7}, "b": {id: topicID(2), partitions: 5}}
	var members []assignMember
	for i := 0; i < 3; i++ {
		members = append(members, assignMember{id: fmt.Sprintf("m%d", i), topics: []string{"a", "b"}})
	}
	first := assignUniform(members, topics)
	checkCover(t, first, 12)
	for id, s := range first {
		if len(s) != 4 {
			t.Fatalf("%s got %d partitions", id, len(s))
		}
	}
	// A fourth member: the others keep what they can and give up one each.
	for i := range members {
		members[i].previous = first[members[i].id]
	}
	members = append(members, assignMember{id: "m3", topics: []string{"a", "b"}})
	second := assignUniform(members, topics)
	checkCover(t, second, 12)
	moved := 0
	for id, s := range second {
		if len(s) != 3 {
			t.Fatalf("%s got %d partitions", id, len(s))
		}
		for ip := range s {
			if _, ok := first[id][ip]; !ok && id != "m3" {
				moved++
			}
		}
	}
	if moved != 0 {
		t.Fatalf("%d partitions moved between existing members", moved)
	}
	// Different subscriptions: only subscribers get a topic.
	het := []assignMember{{id: "x", topics: []string{"a"}}, {id: "y", topics: []string{"a", "b"}}}
	h := assignUniform(het, topics)
	checkCover(t, h, 12)
	for ip := range h["x"] {
		if ip.topic != topicID(1) {
			t.Fatal("x got a partition of a topic it does not subscribe to")
		}
	}
	if d := len(h["x"]) - len(h["y"]); d > 1 || d < -1 {
		t.Fatalf("unbalanced: %d vs %d", len(h["x"]), len(h["y"]))
	}
}

func TestRangeAssignorGivesContiguousRanges(t *testing.T) {
	topics := map[string]topicInfo{"a": {id: topicID(1), partitions: 7}}
	ms := []assignMember{{id: "m2", topics: []string{"a"}}, {id: "m1", topics: []string{"a"}}, {id: "m3", topics: []string{"a"}}}
	out := assignRange(ms, topics)
	checkCover(t, out, 7)
	want := map[string][]int32{"m1": {0, 1, 2}, "m2": {3, 4}, "m3": {5, 6}}
	for id, ps := range want {
		got := out[id].sorted()
		if len(got) != len(ps) {
			t.Fatalf("%s: %v", id, got)
		}
		for i, p := range ps {
			if got[i].partition != p {
				t.Fatalf("%s: %v, want %v", id, got, ps)
			}
		}
	}
}

func checkCover(t *testing.T, a map[string]partitionSet, total int) {
	t.Helper()
	seen := partitionSet{}
	for _, s := range a {
		for ip := range s {
			if _, dup := seen[ip]; dup {
				t.Fatalf("%v assigned twice", ip)
			}
			seen[ip] = struct{}{}
		}
	}
	if len(seen) != total {
		t.Fatalf("%d partitions assigned, want %d", len(seen), total)
	}
}
