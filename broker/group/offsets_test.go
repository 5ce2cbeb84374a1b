package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

func TestSimpleGroupCommitAndFetch(t *testing.T) {
	e := newEnv(t)
	// kcat -C style: no membership, generation -1.
	if codes := e.commit(commitReq("simple", "", -1, "t", map[int32]int64{0: 10, 1: 20})); codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	got, code := e.fetchAll("simple")
	if code != 0 || got[topicPartition{"t", 0}] != 10 || got[topicPartition{"t", 1}] != 20 {
		t.Fatalf("fetch: %v %d", got, code)
	}
	// v1-v7 single-group form, asking for one known and one unknown partition.
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = 5
	r.Group = "simple"
	r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{1, 7}}}
	resp := e.c.OffsetFetch(ctx, r)
	ps := resp.Topics[0].Partitions
	if ps[0].Offset != 20 || ps[0].LeaderEpoch != 3 || *ps[0].Metadata != "md" || ps[1].Offset != -1 {
		t.Fatalf("v5 fetch: %+v", ps)
	}
	lr := kmsg.NewPtrListGroupsRequest()
	lr.Version = 5
	groups := e.c.ListGroups(ctx, lr).Groups
	if len(groups) != 1 || groups[0].Group != "simple" || groups[0].ProtocolType != "" || groups[0].GroupState != "Empty" {
		t.Fatalf("list: %+v", groups)
	}
	// A commit with a generation to a group that does not exist.
	if codes := e.commit(commitReq("nope", "m", 3, "t", map[int32]int64{0: 1})); codes[0] != codeGroupIDNotFound {
		t.Fatalf("commit to unknown group: %v", codes)
	}
}

// TestACoordinatorThatCannotProveItsLeadershipAnswersNothing: while the
// offsets partition's log cannot prove this broker leads it (cut off from
// the cluster, another coordinator may have been elected and acknowledged
// newer commits), every request for its groups is answered
// NOT_COORDINATOR, and ListGroups leaves its groups out; once proven
// again, it answers from its state as before. OffsetFetch also needs the
// log's read fence: a proof of the leadership after the read arrived.
func TestACoordinatorThatCannotProveItsLeadershipAnswersNothing(t *testing.T) {
	e := newEnv(t)
	if codes := e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 10})); codes[0] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	e.log.unproven.Store(true)
	if _, code := e.fetchAll("g"); code != codeNotCoordinator {
		t.Fatalf("offset fetch with the leadership unproven: code %d, want NOT_COORDINATOR", code)
	}
	if codes := e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 11})); codes[0] != codeNotCoordinator {
		t.Fatalf("commit with the leadership unproven: %v, want NOT_COORDINATOR", codes)
	}
	if d := e.describe("g"); d.ErrorCode != codeNotCoordinator {
		t.Fatalf("describe with the leadership unproven: code %d, want NOT_COORDINATOR", d.ErrorCode)
	}
	if r := e.c.JoinGroup(ctx, ClientInfo{}, joinReq(9, "g2", "", "")); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("join with the leadership unproven: code %d, want NOT_COORDINATOR", r.ErrorCode)
	}
	lr := kmsg.NewPtrListGroupsRequest()
	lr.Version = 5
	if groups := e.c.ListGroups(ctx, lr).Groups; len(groups) != 0 {
		t.Fatalf("list with the leadership unproven: %+v, want none", groups)
	}
	e.log.unproven.Store(false)
	got, code := e.fetchAll("g")
	if code != 0 || got[topicPartition{"t", 0}] != 10 {
		t.Fatalf("fetch with the leadership proven again: %v %d", got, code)
	}
	// Proven, but not for a read arriving now (no follower's word asked
	// since): the commits are not read.
	e.log.fenceFails.Store(true)
	if _, code := e.fetchAll("g"); code != codeNotCoordinator {
		t.Fatalf("offset fetch past a failed read fence: code %d, want NOT_COORDINATOR", code)
	}
}

func TestCommitValidatesTopicsAndMetadata(t *testing.T) {
	e := newEnv(t)
	e.opts.Topics = fakeTopics{"t": {id: topicID(1), partitions: 2}}
	e.cfg.OffsetMetadataMaxBytes = 8
	e.start()
	req := commitReq("g", "", -1, "t", map[int32]int64{0: 5, 1: 6, 2: 7})
	long := "0123456789"
	req.Topics[0].Partitions[1].Metadata = &long
	other := kmsg.NewOffsetCommitRequestTopic()
	other.Topic = "missing"
	other.Partitions = []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}
	req.Topics = append(req.Topics, other)
	resp := e.c.OffsetCommit(ctx, req)
	codes := []int16{resp.Topics[0].Partitions[0].ErrorCode, resp.Topics[0].Partitions[1].ErrorCode, resp.Topics[0].Partitions[2].ErrorCode, resp.Topics[1].Partitions[0].ErrorCode}
	want := []int16{0, codeOffsetMetadataTooLarge, codeUnknownTopicOrPartition, codeUnknownTopicOrPartition}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("codes %v, want %v", codes, want)
		}
	}
	got, _ := e.fetchAll("g")
	if len(got) != 1 || got[topicPartition{"t", 0}] != 5 {
		t.Fatalf("stored %v", got)
	}
	// v10 names topics by id.
	req = commitReq("g", "", -1, "", map[int32]int64{1: 9})
	req.Version = 10
	req.Topics[0].TopicID = topicID(1)
	if c := e.c.OffsetCommit(ctx, req).Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Fatalf("v10 commit: %d", c)
	}
	req.Topics[0].TopicID = topicID(9)
	if c := e.c.OffsetCommit(ctx, req).Topics[0].Partitions[0].ErrorCode; c != codeUnknownTopicID {
		t.Fatalf("v10 commit to unknown id: %d", c)
	}
	fr := kmsg.NewPtrOffsetFetchRequest()
	fr.Version = 10
	fg := kmsg.NewOffsetFetchRequestGroup()
	fg.Group = "g"
	fr.Groups = []kmsg.OffsetFetchRequestGroup{fg}
	fresp := e.c.OffsetFetch(ctx, fr)
	if tps := fresp.Groups[0].Topics; len(tps) != 1 || tps[0].TopicID != topicID(1) || len(tps[0].Partitions) != 2 || tps[0].Partitions[1].Offset != 9 {
		t.Fatalf("v10 fetch: %+v", fresp.Groups[0])
	}
}

func TestOffsetCommitDuringRebalance(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 2)
	e.joinNew("g") // a third member: PreparingRebalance
	// Members may still commit with the current generation.
	if codes := e.commit(commitReq("g", ids[1], gen, "t", map[int32]int64{0: 1})); codes[0] != 0 {
		t.Fatalf("commit while preparing: %v", codes)
	}
	e.join(joinReq(9, "g", ids[0], ""))
	e.join(joinReq(9, "g", ids[1], ""))
	e.barrier()
	// CompletingRebalance: REBALANCE_IN_PROGRESS.
	if codes := e.commit(commitReq("g", ids[1], gen+1, "t", map[int32]int64{0: 2})); codes[0] != codeRebalanceInProgress {
		t.Fatalf("commit while completing: %v", codes)
	}
}

// TestReloadRestoresGroupsAndOffsets is the crash case: a new coordinator
// over the same log finds the offsets and the Stable group, whose members
// carry on without rejoining.
func TestReloadRestoresGroupsAndOffsets(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 2)
	for i := int64(1); i <= 5; i++ {
		if codes := e.commit(commitReq("g", ids[0], gen, "t", map[int32]int64{0: i * 10, 1: i})); codes[0] != 0 {
			t.Fatal(codes)
		}
	}
	e.commit(commitReq("simple", "", -1, "u", map[int32]int64{3: 33}))
	before, _ := e.fetchAll("g")
	e.start()
	after, code := e.fetchAll("g")
	if code != 0 || fmt.Sprint(before) != fmt.Sprint(after) || after[topicPartition{"t", 0}] != 50 {
		t.Fatalf("offsets before %v after %v", before, after)
	}
	if s, _ := e.fetchAll("simple"); s[topicPartition{"u", 3}] != 33 {
		t.Fatalf("simple group: %v", s)
	}
	d := e.describe("g")
	if d.State != "Stable" || len(d.Members) != 2 || string(d.Members[1].MemberAssignment) != "a1" {
		t.Fatalf("group after reload: %+v", d)
	}
	for _, id := range ids {
		if code := e.heartbeat("g", id, gen, ""); code != 0 {
			t.Fatalf("heartbeat after reload: %d", code)
		}
	}
	// The restored members are on session timers: silent ones leave.
	e.advance(6 * time.Second)
	e.heartbeat("g", ids[0], gen, "")
	e.advance(6 * time.Second)
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeRebalanceInProgress {
		t.Fatalf("heartbeat after the other member expired: %d", code)
	}
}

func TestLoadSkipsCorruptRecords(t *testing.T) {
	e := newEnv(t)
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 1}))
	// Garbage: a record whose key is not a known schema, one with a
	// truncated value, an unknown key version, and a corrupt batch.
	good := appendOffsetKey(nil, "g", topicPartition{"t", 1})
	e.log.Append(ctx, []recordbatch.Record{
		{Key: []byte{0}, Value: []byte{1, 2}},
		{Key: good, Value: []byte{0, 3, 0}},
		{Key: []byte{0, 99, 1}, Value: []byte("x")},
		{Key: appendGroupKey(nil, "g"), Value: []byte{0, 3, 0, 0, 0, 8}},
	})
	b, _ := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: 100}, []recordbatch.Record{{Key: good, Value: []byte("y")}})
	b[len(b)-1] ^= 0xff // breaks the CRC
	e.log.mu.Lock()
	e.log.batches = append(e.log.batches, b)
	e.log.mu.Unlock()
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{2: 3}))
	e.start()
	got, _ := e.fetchAll("g")
	if len(got) != 2 || got[topicPartition{"t", 0}] != 1 || got[topicPartition{"t", 2}] != 3 {
		t.Fatalf("offsets after load: %v", got)
	}
	var corrupt int64
	e.onLoop(func(s *shard) { corrupt = s.stats.corruptRecords })
	if corrupt < 3 {
		t.Fatalf("corrupt count %d", corrupt)
	}
}

// TestSnapshotKeepsLogBounded commits the same few partitions over and
// over: the log stays around its live size, and a reload after snapshots
// and deletions gives the same state.
func TestSnapshotKeepsLogBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SnapshotMinBytes = 4 << 10 })
	ids, gen := e.stableGroup("g", 1)
	for i := 0; i < 2000; i++ {
		g, member, generation := "g", ids[0], gen
		if i%2 == 1 {
			g, member, generation = fmt.Sprintf("s%d", i%7), "", -1
		}
		if codes := e.commit(commitReq(g, member, generation, "t", map[int32]int64{int32(i % 5): int64(i)})); codes[int32(i%5)] != 0 {
			t.Fatal(codes)
		}
	}
	e.barrier()
	start, next, _ := e.log.stats()
	size := e.log.bytes()
	var snaps, live int64
	e.onLoop(func(s *shard) { snaps, live = s.stats.snapshots, s.liveBytes })
	t.Logf("log [%d, %d): %d bytes, live %d, %d snapshots", start, next, size, live, snaps)
	if snaps == 0 || start == 0 {
		t.Fatalf("no snapshot taken (start %d)", start)
	}
	if size > 3*int(live)+(8<<10)+4096 {
		t.Fatalf("log of %d bytes for %d live bytes", size, live)
	}
	want := map[string]string{}
	for _, g := range []string{"g", "s1", "s3", "s5", "s0", "s2", "s4", "s6"} {
		o, _ := e.fetchAll(g)
		want[g] = fmt.Sprint(o)
	}
	e.start()
	for g, w := range want {
		if o, _ := e.fetchAll(g); fmt.Sprint(o) != w {
			t.Fatalf("%s after reload: %v, want %s", g, o, w)
		}
	}
	if d := e.describe("g"); d.State != "Stable" {
		t.Fatalf("group after reload: %s", d.State)
	}
}

// TestSnapshotIsAtomicUnderConcurrentCommits commits from many goroutines
// while snapshots and deletions run, then checks that a reload gives
// exactly the state in memory.
func TestSnapshotIsAtomicUnderConcurrentCommits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SnapshotMinBytes = 2 << 10 })
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				g := fmt.Sprintf("g%d", (w+i)%5)
				codes := e.c.OffsetCommit(ctx, commitReq(g, "", -1, "t", map[int32]int64{int32(w): int64(i)}))
				if c := codes.Topics[0].Partitions[0].ErrorCode; c != 0 {
					t.Errorf("commit: %d", c)
					return
				}
			}
		}()
	}
	wg.Wait()
	e.barrier()
	var snaps int64
	e.onLoop(func(s *shard) { snaps = s.stats.snapshots })
	if snaps == 0 {
		t.Fatal("no snapshots")
	}
	want := map[string]string{}
	for i := 0; i < 5; i++ {
		g := fmt.Sprintf("g%d", i)
		o, _ := e.fetchAll(g)
		want[g] = fmt.Sprint(o)
	}
	e.start()
	for g, w := range want {
		if o, _ := e.fetchAll(g); fmt.Sprint(o) != w {
			t.Fatalf("%s after reload: %v, want %s", g, o, w)
		}
	}
}

func TestOffsetsExpireAfterGroupEmpties(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.OffsetsRetention = time.Minute
		c.OffsetsRetentionCheckInterval = 5 * time.Second
	})
	ids, gen := e.stableGroup("g", 1)
	e.commit(commitReq("g", ids[0], gen, "t", map[int32]int64{0: 5}))
	e.commit(commitReq("g", ids[0], gen, "unsubscribed", map[int32]int64{0: 6}))
	// While the group has members, offsets of its topics do not expire;
	// those of a topic no member subscribes to do.
	for i := 0; i < 20; i++ {
		e.advance(5 * time.Second)
		if code := e.heartbeat("g", ids[0], gen, ""); code != 0 {
			t.Fatal(code)
		}
	}
	if o, _ := e.fetchAll("g"); len(o) != 1 || o[topicPartition{"t", 0}] != 5 {
		t.Fatalf("offsets of a live group: %v", o)
	}
	e.leave("g", kmsg.LeaveGroupRequestMember{MemberID: ids[0]})
	e.advance(55 * time.Second)
	if o, _ := e.fetchAll("g"); len(o) != 1 {
		t.Fatalf("expired too early: %v", o)
	}
	e.advance(10 * time.Second)
	e.barrier()
	if o, _ := e.fetchAll("g"); len(o) != 0 {
		t.Fatalf("not expired: %v", o)
	}
	if d := e.describe("g"); d.State != "Dead" {
		t.Fatalf("group not deleted: %+v", d)
	}
	e.start()
	if o, _ := e.fetchAll("g"); len(o) != 0 {
		t.Fatalf("expired offsets came back: %v", o)
	}
	if d := e.describe("g"); d.State != "Dead" {
		t.Fatalf("expired group came back: %+v", d)
	}
}

func TestSimpleGroupOffsetsExpireByCommitTime(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.OffsetsRetention = time.Hour
		c.OffsetsRetentionCheckInterval = time.Minute
	})
	e.commit(commitReq("s", "", -1, "t", map[int32]int64{0: 1}))
	e.advance(30 * time.Minute)
	e.commit(commitReq("s", "", -1, "t", map[int32]int64{1: 2}))
	e.advance(31 * time.Minute)
	e.barrier()
	o, _ := e.fetchAll("s")
	if len(o) != 1 || o[topicPartition{"t", 1}] != 2 {
		t.Fatalf("after the first expiry: %v", o)
	}
	// Retention given by an old client (OffsetCommit v2-v4).
	old := commitReq("s", "", -1, "t", map[int32]int64{2: 3})
	old.Version = 2
	old.RetentionTimeMillis = 120_000
	e.commit(old)
	e.advance(3 * time.Minute)
	e.barrier()
	if o, _ := e.fetchAll("s"); len(o) != 1 || o[topicPartition{"t", 1}] != 2 {
		t.Fatalf("commit with its own retention: %v", o)
	}
}

func TestDeleteGroupsAndOffsetDelete(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("live", 1)
	e.commit(commitReq("live", ids[0], gen, "t", map[int32]int64{0: 1}))
	e.commit(commitReq("live", ids[0], gen, "other", map[int32]int64{0: 1}))
	e.commit(commitReq("idle", "", -1, "t", map[int32]int64{0: 1, 1: 2}))
	dr := kmsg.NewPtrDeleteGroupsRequest()
	dr.Version = 2
	dr.Groups = []string{"live", "idle", "ghost"}
	resp := e.c.DeleteGroups(ctx, dr)
	codes := []int16{resp.Groups[0].ErrorCode, resp.Groups[1].ErrorCode, resp.Groups[2].ErrorCode}
	if codes[0] != codeNonEmptyGroup || codes[1] != 0 || codes[2] != codeGroupIDNotFound {
		t.Fatalf("delete codes %v", codes)
	}
	if o, _ := e.fetchAll("idle"); len(o) != 0 {
		t.Fatalf("deleted group kept offsets: %v", o)
	}
	// OffsetDelete on a live group: only topics nobody subscribes to.
	od := kmsg.NewPtrOffsetDeleteRequest()
	od.Group = "live"
	od.Topics = []kmsg.OffsetDeleteRequestTopic{
		{Topic: "t", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}},
		{Topic: "other", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}},
	}
	odr := e.c.OffsetDelete(ctx, od)
	if odr.ErrorCode != 0 || odr.Topics[0].Partitions[0].ErrorCode != codeGroupSubscribedToTopic || odr.Topics[1].Partitions[0].ErrorCode != 0 {
		t.Fatalf("offset delete: %+v", odr)
	}
	o, _ := e.fetchAll("live")
	if len(o) != 1 || o[topicPartition{"t", 0}] != 1 {
		t.Fatalf("after offset delete: %v", o)
	}
	od.Group = "ghost"
	if r := e.c.OffsetDelete(ctx, od); r.ErrorCode != codeGroupIDNotFound {
		t.Fatalf("offset delete of unknown group: %d", r.ErrorCode)
	}
	e.start()
	if o, _ := e.fetchAll("live"); len(o) != 1 {
		t.Fatalf("after reload: %v", o)
	}
	if o, _ := e.fetchAll("idle"); len(o) != 0 {
		t.Fatalf("deleted group after reload: %v", o)
	}
}

func TestDescribeAndListGroupsWithFilters(t *testing.T) {
	e := newEnv(t)
	e.stableGroup("stable", 2)
	e.commit(commitReq("simple", "", -1, "t", map[int32]int64{0: 1}))
	lr := kmsg.NewPtrListGroupsRequest()
	lr.Version = 5
	lr.StatesFilter = []string{"stable"}
	if gs := e.c.ListGroups(ctx, lr).Groups; len(gs) != 1 || gs[0].Group != "stable" || gs[0].GroupType != "classic" || gs[0].ProtocolType != "consumer" {
		t.Fatalf("list stable: %+v", gs)
	}
	lr.StatesFilter = nil
	lr.TypesFilter = []string{"consumer"}
	if gs := e.c.ListGroups(ctx, lr).Groups; len(gs) != 0 {
		t.Fatalf("list consumer-type: %+v", gs)
	}
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Version = 6
	dr.Groups = []string{"stable", "missing", ""}
	gs := e.c.DescribeGroups(ctx, dr).Groups
	if gs[0].State != "Stable" || gs[0].Protocol != "range" || len(gs[0].Members) != 2 || gs[0].Members[0].ClientID != "client" {
		t.Fatalf("describe: %+v", gs[0])
	}
	if gs[1].ErrorCode != codeGroupIDNotFound || gs[1].State != "Dead" || gs[2].ErrorCode != codeInvalidGroupID {
		t.Fatalf("describe errors: %+v %+v", gs[1], gs[2])
	}
}

func TestUnloadAndLoadingAnswerWithCoordinatorErrors(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 1)
	// A new member parks in the join round (v3: no member-id round).
	waiting := async(func() *kmsg.JoinGroupResponse { return e.c.JoinGroup(ctx, ClientInfo{}, joinReq(3, "g", "", "")) })
	for {
		var n int
		e.onLoop(func(s *shard) { n = len(s.groups["g"].classic.members) })
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	e.c.Unload(0)
	if r := recv(t, waiting); r.ErrorCode != codeNotCoordinator {
		t.Fatalf("parked join after unload: %d", r.ErrorCode)
	}
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeNotCoordinator {
		t.Fatalf("heartbeat after unload: %d", code)
	}
	r := e.c.JoinGroup(ctx, ClientInfo{}, joinReq(9, "g", "", ""))
	if r.ErrorCode != codeNotCoordinator {
		t.Fatalf("join after unload: %d", r.ErrorCode)
	}
	// A partition whose log is still being read.
	e.log.scanGate = make(chan struct{})
	e.c.Load(0, e.log)
	if code := e.heartbeat("g", ids[0], gen, ""); code != codeCoordinatorLoadInProgress {
		t.Fatalf("heartbeat while loading: %d", code)
	}
	lr := kmsg.NewPtrListGroupsRequest()
	if r := e.c.ListGroups(ctx, lr); r.ErrorCode != codeCoordinatorLoadInProgress {
		t.Fatalf("list while loading: %d", r.ErrorCode)
	}
	close(e.log.scanGate)
	e.waitLoaded(0)
	if code := e.heartbeat("g", ids[0], gen, ""); code != 0 {
		t.Fatalf("heartbeat after load: %d", code)
	}
	// Through the public API end to end: a second group joins.
	j := e.c.JoinGroup(ctx, ClientInfo{ClientID: "c"}, joinReq(4, "g2", "", ""))
	if j.ErrorCode != codeMemberIDRequired {
		t.Fatalf("join: %d", j.ErrorCode)
	}
	j = e.c.JoinGroup(ctx, ClientInfo{ClientID: "c"}, joinReq(4, "g2", j.MemberID, ""))
	if j.ErrorCode != 0 || j.Generation != 1 {
		t.Fatalf("join: %+v", j)
	}
	sr := kmsg.NewPtrSyncGroupRequest()
	sr.Group, sr.MemberID, sr.Generation = "g2", j.MemberID, 1
	sr.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: j.MemberID, MemberAssignment: []byte("z")}}
	if s := e.c.SyncGroup(ctx, sr); s.ErrorCode != 0 || string(s.MemberAssignment) != "z" {
		t.Fatalf("sync: %+v", s)
	}
}

func TestCommitErrorsFromTheLog(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		err  error
		code int16
	}{
		{fmt.Errorf("wrapped: %w", ErrNotLeader), codeNotCoordinator},
		{ErrRecordTooLarge, codeInvalidCommitOffsetSize},
		{context.DeadlineExceeded, codeCoordinatorNotAvailable},
		{errors.New("disk on fire"), codeCoordinatorNotAvailable},
	} {
		e.log.mu.Lock()
		e.log.failAppends, e.log.failErr = 1, tc.err
		e.log.mu.Unlock()
		if codes := e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 1})); codes[0] != tc.code {
			t.Errorf("%v: code %d, want %d", tc.err, codes[0], tc.code)
		}
	}
	if o, _ := e.fetchAll("g"); len(o) != 0 {
		t.Fatalf("failed commits are visible: %v", o)
	}
}

// TestCommitsAreBatchedWhileAnAppendIsInFlight: commits that arrive while
// an append is in flight go out together in the next one.
func TestCommitsAreBatchedWhileAnAppendIsInFlight(t *testing.T) {
	e := newEnv(t)
	e.log.gate = make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.c.OffsetCommit(ctx, commitReq(fmt.Sprintf("g%d", i), "", -1, "t", map[int32]int64{0: int64(i)}))
		}()
	}
	// Let the first append through once everything is queued.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pending int
		e.onLoop(func(s *shard) { pending = len(s.pending) })
		if pending == 49 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	go func() {
		for range 10 {
			e.log.gate <- struct{}{}
		}
	}()
	wg.Wait()
	_, _, appends := e.log.stats()
	if appends != 2 {
		t.Fatalf("%d appends for 50 commits, want 2", appends)
	}
}

// TestLoadChargesCompressedBatchesToTheScanBudget: a compressed batch in
// the offsets partition (Kafka tools may write them) is decompressed on
// load under the broker's scan budget, and given back after; a budget too
// small for the batch's cap refuses it rather than allocating past it.
func TestLoadChargesCompressedBatchesToTheScanBudget(t *testing.T) {
	for _, c := range []struct {
		name   string
		budget int64
		loaded bool
	}{
		{"fits", recordbatch.DefaultBudgetBytes, true},
		{"too small", 1 << 20, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 1}))
			key := appendOffsetKey(nil, "g", topicPartition{"t", 1})
			value := appendOffsetValue(nil, &offsetEntry{offset: 7, leaderEpoch: -1, commitTs: 1, expireTs: -1})
			e.log.mu.Lock()
			b, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: e.log.next, Codec: recordbatch.CodecZstd, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1},
				[]recordbatch.Record{{Key: key, Value: value}})
			if err != nil {
				t.Fatal(err)
			}
			e.log.batches = append(e.log.batches, b)
			e.log.next++
			e.log.mu.Unlock()
			budget := recordbatch.NewBudget(c.budget)
			e.opts.ScanBudget = budget
			e.start()
			got, _ := e.fetchAll("g")
			if _, ok := got[topicPartition{"t", 1}]; ok != c.loaded || got[topicPartition{"t", 0}] != 1 {
				t.Fatalf("offsets after load: %v (compressed commit loaded: %v, want %v)", got, ok, c.loaded)
			}
			if n := budget.InUse(); n != 0 {
				t.Fatalf("%d budget bytes still taken after the load", n)
			}
		})
	}
}
