package group

import (
	"bytes"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestPartitionForMatchesKafka(t *testing.T) {
	for _, tc := range []struct {
		group string
		hash  int32
	}{
		{"", 0},
		{"a", 97},
		{"hello", 99162322},
		{"polygenelubricants", -2147483648}, // Integer.MIN_VALUE: Utils.abs gives 0
		{"é", 233},
		{"😀", 55357*31 + 56832}, // a surrogate pair: two UTF-16 units
	} {
		if got := javaStringHash(tc.group); got != tc.hash {
			t.Errorf("hash(%q) = %d, want %d", tc.group, got, tc.hash)
		}
	}
	if p := PartitionFor("polygenelubricants", 50); p != 0 {
		t.Errorf("MIN_VALUE hash maps to %d, want 0", p)
	}
	if p := PartitionFor("hello", 50); p != 99162322%50 {
		t.Errorf("hello -> %d", p)
	}
	// Negative hashes are made positive before the modulo.
	neg := "zzzzzzzzzzzzzz"
	h := javaStringHash(neg)
	if h >= 0 {
		t.Fatalf("expected a negative hash for %q", neg)
	}
	if p := PartitionFor(neg, 50); p != (-h)%50 {
		t.Errorf("%q -> %d, want %d", neg, p, (-h)%50)
	}
}

func TestJoinRoundWithMemberIDRequired(t *testing.T) {
	e := newEnv(t)
	first := recv(t, e.join(joinReq(9, "g", "", "")))
	if first.ErrorCode != codeMemberIDRequired || first.MemberID == "" {
		t.Fatalf("first join: code %d member %q", first.ErrorCode, first.MemberID)
	}
	r := recv(t, e.join(joinReq(9, "g", first.MemberID, "")))
	if r.ErrorCode != 0 || r.Generation != 1 || r.LeaderID != first.MemberID || *r.Protocol != "range" || len(r.Members) != 1 {
		t.Fatalf("join: %+v", r)
	}
	if !bytes.Equal(r.Members[0].ProtocolMetadata, subscription("t")) {
		t.Fatal("leader did not get the member metadata")
	}
	s := recv(t, e.sync("g", first.MemberID, 1, map[string][]byte{first.MemberID: []byte("assign")}))
	if s.ErrorCode != 0 || string(s.MemberAssignment) != "assign" || *s.Protocol != "range" {
		t.Fatalf("sync: %+v", s)
	}
	if code := e.heartbeat("g", first.MemberID, 1, ""); code != 0 {
		t.Fatalf("heartbeat: %d", code)
	}
	if d := e.describe("g"); d.State != "Stable" || len(d.Members) != 1 || string(d.Members[0].MemberAssignment) != "assign" {
		t.Fatalf("describe: %+v", d)
	}
	// Old clients (v3) join without the extra round.
	r3 := recv(t, e.join(joinReq(3, "g3", "", "")))
	if r3.ErrorCode != 0 || r3.MemberID == "" || r3.Generation != 1 {
		t.Fatalf("v3 join: %+v", r3)
	}
}

func TestNewMemberRebalancesStableGroup(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 1)
	bID, bJoin := e.joinNew("g")
	pendingCh(t, e, bJoin)
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat during rebalance: %d", code)
	}
	aJoin := e.join(joinReq(9, "g", ids[0], ""))
	a, b := recv(t, aJoin), recv(t, bJoin)
	if a.Generation != gen+1 || b.Generation != gen+1 || a.LeaderID != ids[0] || b.LeaderID != ids[0] {
		t.Fatalf("joins: %+v %+v", a, b)
	}
	if len(a.Members) != 2 || len(b.Members) != 0 {
		t.Fatalf("leader got %d members, follower %d", len(a.Members), len(b.Members))
	}
	bSync := e.sync("g", bID, gen+1, nil)
	pendingCh(t, e, bSync) // waits for the leader
	aSync := e.sync("g", ids[0], gen+1, map[string][]byte{ids[0]: []byte("x"), bID: []byte("y")})
	if r := recv(t, bSync); r.ErrorCode != 0 || string(r.MemberAssignment) != "y" {
		t.Fatalf("follower sync: %+v", r)
	}
	if r := recv(t, aSync); r.ErrorCode != 0 || string(r.MemberAssignment) != "x" {
		t.Fatalf("leader sync: %+v", r)
	}
}

func TestSessionExpiryRemovesMember(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 2)
	// Only the first member heartbeats.
	for i := 0; i < 2; i++ {
		e.advance(4 * time.Second)
		if code := e.heartbeat("g", ids[0], gen, ""); code != 0 {
			t.Fatalf("heartbeat %d: %d", i, code)
		}
	}
	// 11s > the 10s session timeout of the second member.
	e.advance(3 * time.Second)
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat after expiry: %d", code)
	}
	if code := e.heartbeat("g", ids[1], gen, ""); code != codeUnknownMemberID {
		t.Fatalf("expired member heartbeat: %d", code)
	}
	r := recv(t, e.join(joinReq(9, "g", ids[0], "")))
	if r.ErrorCode != 0 || r.Generation != gen+1 || len(r.Members) != 1 {
		t.Fatalf("rejoin: %+v", r)
	}
}

func TestRebalanceTimeoutRemovesMembersThatDoNotRejoin(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 2)
	cID, cJoin := e.joinNew("g")
	aJoin := e.join(joinReq(9, "g", ids[0], ""))
	pendingCh(t, e, aJoin)
	// The second member keeps heartbeating but never rejoins.
	for i := 0; i < 7; i++ {
		e.advance(4 * time.Second)
		e.heartbeat("g", ids[1], gen, "")
		e.heartbeat("g", ids[0], gen, "")
	}
	// 28s elapsed, the rebalance timeout is 30s.
	pendingCh(t, e, aJoin)
	e.advance(3 * time.Second)
	a, c := recv(t, aJoin), recv(t, cJoin)
	if a.ErrorCode != 0 || c.ErrorCode != 0 || a.Generation != gen+1 || len(a.Members) != 2 {
		t.Fatalf("joins: %+v %+v", a, c)
	}
	for _, m := range a.Members {
		if m.MemberID == ids[1] {
			t.Fatal("the member that did not rejoin is still in the group")
		}
	}
	_ = cID
	if code := e.heartbeat("g", ids[1], gen, ""); code != codeUnknownMemberID {
		t.Fatalf("kicked member heartbeat: %d", code)
	}
}

func TestSyncTimeoutRemovesMembersThatDoNotSync(t *testing.T) {
	e := newEnv(t)
	_, aJoin := e.joinNew("g")
	a := recv(t, aJoin)
	// The leader heartbeats but never sends SyncGroup: after the
	// rebalance timeout it is removed and the group is empty again.
	for i := 0; i < 7; i++ {
		e.advance(4 * time.Second)
		e.heartbeat("g", a.MemberID, a.Generation, "")
	}
	e.advance(1 * time.Second)
	if d := e.describe("g"); d.State != "CompletingRebalance" {
		t.Fatalf("state %s", d.State)
	}
	e.advance(1 * time.Second)
	if d := e.describe("g"); d.State != "Empty" || len(d.Members) != 0 {
		t.Fatalf("after sync timeout: %+v", d)
	}
	if code := e.heartbeat("g", a.MemberID, a.Generation, ""); code != codeUnknownMemberID {
		t.Fatalf("heartbeat: %d", code)
	}
}

func TestStaticMemberRestartKeepsAssignmentWithoutRebalance(t *testing.T) {
	e := newEnv(t)
	// A static member and a dynamic one.
	a1 := recv(t, e.join(joinReq(9, "g", "", "inst-a")))
	if a1.ErrorCode != 0 {
		t.Fatalf("static join: %+v", a1)
	}
	bID, bJoin := e.joinNew("g")
	aJoin := e.join(joinReq(9, "g", a1.MemberID, "inst-a"))
	a, b := recv(t, aJoin), recv(t, bJoin)
	gen := a.Generation
	if a.ErrorCode != 0 || b.ErrorCode != 0 || b.Generation != gen {
		t.Fatalf("joins: %+v %+v", a, b)
	}
	if a.LeaderID != a1.MemberID {
		t.Fatalf("leader %s, want the first member", a.LeaderID)
	}
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version, r.Group, r.MemberID, r.Generation, r.InstanceID = 5, "g", a1.MemberID, gen, strPtr("inst-a")
	r.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: a1.MemberID, MemberAssignment: []byte("A")}, {MemberID: bID, MemberAssignment: []byte("B")}}
	aSync := e.syncReq(r)
	bSync := e.sync("g", bID, gen, nil)
	if r := recv(t, aSync); string(r.MemberAssignment) != "A" {
		t.Fatalf("static sync: %+v", r)
	}
	recv(t, bSync)

	// The static member's process restarts: a JoinGroup with no member
	// id and the same instance id.
	re := recv(t, e.join(joinReq(9, "g", "", "inst-a")))
	if re.ErrorCode != 0 || re.Generation != gen || re.MemberID == a1.MemberID {
		t.Fatalf("static rejoin: %+v", re)
	}
	if r := recv(t, e.syncStatic("g", re.MemberID, "inst-a", gen)); r.ErrorCode != 0 || string(r.MemberAssignment) != "A" {
		t.Fatalf("sync after restart: %+v", r)
	}
	// No rebalance: the other member's heartbeat is fine, the
	// generation did not move.
	if code := e.heartbeat("g", bID, gen, ""); code != 0 {
		t.Fatalf("other member heartbeat: %d", code)
	}
	// The old incarnation is fenced.
	if code := e.heartbeat("g", a1.MemberID, gen, "inst-a"); code != codeFencedInstanceID {
		t.Fatalf("old incarnation heartbeat: %d", code)
	}
	// The replacement was persisted: a reload knows the new member id.
	e.start()
	if code := e.heartbeat("g", re.MemberID, gen, "inst-a"); code != 0 {
		t.Fatalf("heartbeat after reload: %d", code)
	}
}

func TestFencingErrors(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 1)
	if code := e.heartbeat("g", ids[0], gen+1, ""); code != codeIllegalGeneration {
		t.Errorf("wrong generation heartbeat: %d", code)
	}
	if code := e.heartbeat("g", "nobody", gen, ""); code != codeUnknownMemberID {
		t.Errorf("unknown member heartbeat: %d", code)
	}
	if code := e.heartbeat("nogroup", "nobody", gen, ""); code != codeUnknownMemberID {
		t.Errorf("unknown group heartbeat: %d", code)
	}
	if code := e.heartbeat("g", ids[0], gen, "some-instance"); code != codeUnknownMemberID {
		t.Errorf("unknown instance heartbeat: %d", code)
	}
	if r := recv(t, e.sync("g", ids[0], gen-1, nil)); r.ErrorCode != codeIllegalGeneration {
		t.Errorf("wrong generation sync: %d", r.ErrorCode)
	}
	if codes := e.commit(commitReq("g", ids[0], gen+5, "t", map[int32]int64{0: 1})); codes[0] != codeIllegalGeneration {
		t.Errorf("wrong generation commit: %d", codes[0])
	}
	if codes := e.commit(commitReq("g", "nobody", gen, "t", map[int32]int64{0: 1})); codes[0] != codeUnknownMemberID {
		t.Errorf("non-member commit: %d", codes[0])
	}
	// A simple commit (no member, generation -1) to a group with members.
	if codes := e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 1})); codes[0] != codeUnknownMemberID {
		t.Errorf("simple commit to a live group: %d", codes[0])
	}
	if codes := e.commit(commitReq("g", ids[0], gen, "t", map[int32]int64{0: 7})); codes[0] != 0 {
		t.Errorf("member commit: %d", codes[0])
	}
	if r := recv(t, e.join(joinReq(9, "g", "made-up", ""))); r.ErrorCode != codeUnknownMemberID {
		t.Errorf("join with unknown member id: %d", r.ErrorCode)
	}
	if r := recv(t, e.join(joinReq(9, "new", "made-up", ""))); r.ErrorCode != codeUnknownMemberID {
		t.Errorf("join to new group with a member id: %d", r.ErrorCode)
	}
	bad := joinReq(9, "g2", "", "")
	bad.SessionTimeoutMillis = 10
	if r := recv(t, e.join(bad)); r.ErrorCode != codeInvalidSessionTimeout {
		t.Errorf("short session: %d", r.ErrorCode)
	}
	other := joinReq(9, "g", "", "")
	other.ProtocolType = "connect"
	if r := recv(t, e.join(other)); r.ErrorCode != codeInconsistentGroupProtocol {
		t.Errorf("other protocol type: %d", r.ErrorCode)
	}
	if r := recv(t, e.join(joinReq(9, "", "", ""))); r.ErrorCode != codeInvalidGroupID {
		t.Errorf("empty group id: %d", r.ErrorCode)
	}
	// Static fencing: another member id claiming an instance id.
	s1 := recv(t, e.join(joinReq(9, "gs", "", "i1")))
	if s1.ErrorCode != 0 {
		t.Fatal(s1.ErrorCode)
	}
	if code := e.heartbeat("gs", "other-id", s1.Generation, "i1"); code != codeFencedInstanceID {
		t.Errorf("fenced instance heartbeat: %d", code)
	}
	lr := e.leave("gs", kmsg.LeaveGroupRequestMember{MemberID: "other-id", InstanceID: strPtr("i1")})
	if lr.Members[0].ErrorCode != codeFencedInstanceID {
		t.Errorf("fenced leave: %d", lr.Members[0].ErrorCode)
	}
}

func TestLeaveGroupBatched(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 3)
	r := e.leave("g",
		kmsg.LeaveGroupRequestMember{MemberID: ids[1]},
		kmsg.LeaveGroupRequestMember{MemberID: ids[2]},
		kmsg.LeaveGroupRequestMember{MemberID: "ghost"})
	if r.ErrorCode != 0 || r.Members[0].ErrorCode != 0 || r.Members[1].ErrorCode != 0 || r.Members[2].ErrorCode != codeUnknownMemberID {
		t.Fatalf("leave: %+v", r)
	}
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat: %d", code)
	}
	j := recv(t, e.join(joinReq(9, "g", ids[0], "")))
	if len(j.Members) != 1 || j.Generation != gen+1 {
		t.Fatalf("rejoin: %+v", j)
	}
	// The last member leaving empties the group.
	e.leave("g", kmsg.LeaveGroupRequestMember{MemberID: ids[0]})
	if d := e.describe("g"); d.State != "Empty" {
		t.Fatalf("state %s", d.State)
	}
	// v0 leave of an unknown group.
	old := kmsg.NewPtrLeaveGroupRequest()
	old.Group, old.MemberID = "nope", "x"
	if r := e.c.LeaveGroup(ctx, old); r.ErrorCode != codeUnknownMemberID {
		t.Fatalf("v0 leave: %d", r.ErrorCode)
	}
}

func TestInitialRebalanceDelayWaitsForMoreMembers(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InitialRebalanceDelay = 3 * time.Second })
	_, aJoin := e.joinNew("g")
	e.advance(2 * time.Second)
	_, bJoin := e.joinNew("g")
	e.advance(1500 * time.Millisecond) // the first delay ended; a new member extends it
	pendingCh(t, e, aJoin)
	e.advance(3 * time.Second)
	a, b := recv(t, aJoin), recv(t, bJoin)
	if a.Generation != 1 || b.Generation != 1 {
		t.Fatalf("both members should be in generation 1: %d %d", a.Generation, b.Generation)
	}
}

func TestGroupMaxSize(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSize = 1 })
	e.stableGroup("g", 1)
	// As Kafka's acceptJoiningMember: a full group refuses new members
	// before handing out a member id.
	r := recv(t, e.join(joinReq(9, "g", "", "")))
	if r.ErrorCode != codeGroupMaxSizeReached {
		t.Fatalf("join: %d", r.ErrorCode)
	}
}

func TestPendingMemberExpires(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 1)
	// A member gets its id but never joins with it; a rebalance started
	// meanwhile must not wait for it beyond its session timeout.
	r := recv(t, e.join(joinReq(9, "g", "", "")))
	if r.ErrorCode != codeMemberIDRequired {
		t.Fatal(r.ErrorCode)
	}
	again := e.join(joinReq(9, "g", ids[0], "")) // leader rejoin: rebalance
	_ = gen
	pendingCh(t, e, again)
	e.advance(11 * time.Second)
	if j := recv(t, again); j.ErrorCode != 0 || len(j.Members) != 1 {
		t.Fatalf("join: %+v", j)
	}
}

func TestSyncStoreFailureRebalances(t *testing.T) {
	e := newEnv(t)
	_, aJoin := e.joinNew("g")
	a := recv(t, aJoin)
	e.log.mu.Lock()
	e.log.failAppends, e.log.failErr = 1, ErrNotLeader
	e.log.mu.Unlock()
	s := recv(t, e.sync("g", a.MemberID, a.Generation, map[string][]byte{a.MemberID: []byte("x")}))
	if s.ErrorCode != codeNotCoordinator {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	if d := e.describe("g"); d.State != "PreparingRebalance" {
		t.Fatalf("state after failed store: %s", d.State)
	}
}

func TestOversizedAssignmentIsRefused(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxRecordBytes = 4096 })
	_, aJoin := e.joinNew("g")
	a := recv(t, aJoin)
	s := recv(t, e.sync("g", a.MemberID, a.Generation, map[string][]byte{a.MemberID: make([]byte, 8192)}))
	if s.ErrorCode != codeUnknownServerError {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	if e.log.bytes() > 4096 {
		t.Fatal("the oversized record reached the log")
	}
}
