package group

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

const txnTestEpoch = 2

func txnReq(group, member string, gen int32, producer int64, topic string, offsets map[int32]int64) *kmsg.TxnOffsetCommitRequest {
	r := kmsg.NewPtrTxnOffsetCommitRequest()
	r.Version = 3
	r.TransactionalID = fmt.Sprintf("tx-%d", producer)
	r.Group, r.MemberID, r.Generation = group, member, gen
	r.ProducerID, r.ProducerEpoch = producer, txnTestEpoch
	t := kmsg.NewTxnOffsetCommitRequestTopic()
	t.Topic = topic
	ps := make([]int32, 0, len(offsets))
	for p := range offsets {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	for _, p := range ps {
		pp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		pp.Partition, pp.Offset, pp.LeaderEpoch = p, offsets[p], 4
		pp.Metadata = strPtr("txn")
		t.Partitions = append(t.Partitions, pp)
	}
	r.Topics = []kmsg.TxnOffsetCommitRequestTopic{t}
	return r
}

// txnCommit returns partition -> code of a TxnOffsetCommit.
func (e *env) txnCommit(req *kmsg.TxnOffsetCommitRequest) map[int32]int16 {
	resp := e.c.TxnOffsetCommit(ctx, req)
	out := map[int32]int16{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p.ErrorCode
		}
	}
	return out
}

type fetched struct {
	offset int64
	code   int16
}

// fetchParts fetches partitions of one topic (v9), with RequireStable when
// stable is set.
func (e *env) fetchParts(group string, stable bool, topic string, parts ...int32) map[int32]fetched {
	e.t.Helper()
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = 9
	r.RequireStable = stable
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = group
	g.Topics = []kmsg.OffsetFetchRequestGroupTopic{{Topic: topic, Partitions: parts}}
	r.Groups = []kmsg.OffsetFetchRequestGroup{g}
	resp := e.c.OffsetFetch(ctx, r)
	out := map[int32]fetched{}
	for _, t := range resp.Groups[0].Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = fetched{p.Offset, p.ErrorCode}
		}
	}
	return out
}

// view describes what clients see of a group's partitions of topic t,
// with and without RequireStable, for comparisons across reloads.
func (e *env) view(group string, parts ...int32) string {
	e.t.Helper()
	all, code := e.fetchAll(group)
	return fmt.Sprintf("all=%v/%d plain=%v stable=%v", all, code, e.fetchParts(group, false, "t", parts...), e.fetchParts(group, true, "t", parts...))
}

// complete appends the producer's marker to the log and reports it, as
// the broker does for the transaction coordinator.
func (e *env) complete(producer int64, commit bool) int64 {
	e.t.Helper()
	off := e.log.appendMarker(e.t, producer, txnTestEpoch, commit)
	e.c.CompleteTxn(0, producer, commit, off)
	return off
}

// txnBatches returns the base offsets of the log's transactional
// (non-control) batches of the producer.
func (l *memLog) txnBatches(producer int64) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	for _, b := range l.batches {
		if b := recordbatch.Batch(b); b.Transactional() && !b.Control() && b.ProducerID() == producer {
			out = append(out, b.BaseOffset())
		}
	}
	return out
}

func TestTxnOffsetCommitIsPendingUntilCommitted(t *testing.T) {
	e := newEnv(t)
	if codes := e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 5})); codes[0] != 0 {
		t.Fatal(codes)
	}
	if codes := e.txnCommit(txnReq("g", "", -1, 7, "t", map[int32]int64{0: 10, 1: 11})); codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("txn commit: %v", codes)
	}
	// One transactional batch of the producer.
	e.log.mu.Lock()
	last := recordbatch.Batch(e.log.batches[len(e.log.batches)-1])
	e.log.mu.Unlock()
	if !last.Transactional() || last.Control() || last.ProducerID() != 7 || last.ProducerEpoch() != txnTestEpoch || last.RecordCount() != 2 {
		t.Fatalf("txn batch: transactional %t control %t producer %d/%d records %d", last.Transactional(), last.Control(), last.ProducerID(), last.ProducerEpoch(), last.RecordCount())
	}

	// Pending: invisible, and unstable to RequireStable.
	if got, _ := e.fetchAll("g"); len(got) != 1 || got[topicPartition{"t", 0}] != 5 {
		t.Fatalf("fetch while pending: %v", got)
	}
	if got := e.fetchParts("g", false, "t", 0, 1); got[0] != (fetched{5, 0}) || got[1] != (fetched{-1, 0}) {
		t.Fatalf("plain fetch while pending: %v", got)
	}
	if got := e.fetchParts("g", true, "t", 0, 1, 2); got[0] != (fetched{-1, codeUnstableOffsetCommit}) || got[1] != (fetched{-1, codeUnstableOffsetCommit}) || got[2] != (fetched{-1, 0}) {
		t.Fatalf("stable fetch while pending: %v", got)
	}
	// The same through OffsetFetch v7's single-group form, and for
	// every committed partition.
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version, r.Group, r.RequireStable = 7, "g", true
	r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0}}}
	if p := e.c.OffsetFetch(ctx, r).Topics[0].Partitions[0]; p.ErrorCode != codeUnstableOffsetCommit || p.Offset != -1 {
		t.Fatalf("v7 stable fetch: %+v", p)
	}
	all := kmsg.NewPtrOffsetFetchRequest()
	all.Version, all.RequireStable = 9, true
	all.Groups = []kmsg.OffsetFetchRequestGroup{{Group: "g"}}
	if ps := e.c.OffsetFetch(ctx, all).Groups[0].Topics[0].Partitions; len(ps) != 1 || ps[0].ErrorCode != codeUnstableOffsetCommit {
		t.Fatalf("stable fetch of all: %+v", ps)
	}

	e.complete(7, true)
	if got := e.fetchParts("g", true, "t", 0, 1); got[0] != (fetched{10, 0}) || got[1] != (fetched{11, 0}) {
		t.Fatalf("after commit: %v", got)
	}
	r.RequireStable = false
	if p := e.c.OffsetFetch(ctx, r).Topics[0].Partitions[0]; p.ErrorCode != 0 || p.Offset != 10 || p.LeaderEpoch != 4 || *p.Metadata != "txn" {
		t.Fatalf("committed txn offset: %+v", p)
	}
}

func TestTxnOffsetCommitAbortDropsOffsets(t *testing.T) {
	e := newEnv(t)
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 5}))
	e.txnCommit(txnReq("g", "", -1, 7, "t", map[int32]int64{0: 10, 1: 11}))
	// Another producer's transaction on the same group is not concerned.
	e.txnCommit(txnReq("g", "", -1, 8, "t", map[int32]int64{2: 12}))
	e.complete(7, false)
	if got := e.fetchParts("g", true, "t", 0, 1, 2); got[0] != (fetched{5, 0}) || got[1] != (fetched{-1, 0}) || got[2].code != codeUnstableOffsetCommit {
		t.Fatalf("after abort: %v", got)
	}
	// A marker of a producer without pending offsets changes nothing.
	e.complete(99, true)
	e.complete(8, true)
	if got := e.fetchParts("g", true, "t", 0, 1, 2); got[0] != (fetched{5, 0}) || got[1] != (fetched{-1, 0}) || got[2] != (fetched{12, 0}) {
		t.Fatalf("after the other commit: %v", got)
	}
	// A partition this coordinator does not hold ignores markers.
	e.c.CompleteTxn(5, 8, true, 0)
}

func TestTxnOffsetCommitValidation(t *testing.T) {
	e := newEnv(t)
	ids, gen := e.stableGroup("g", 1)
	static := recv(t, e.join(joinReq(9, "gs", "", "i1")))
	if static.ErrorCode != 0 {
		t.Fatal(static.ErrorCode)
	}
	v2 := txnReq("g", "nobody", 99, 1, "t", map[int32]int64{0: 1})
	v2.Version = 2 // no member fields on the wire
	noProducer := txnReq("new2", "", -1, 1, "t", map[int32]int64{0: 1})
	noProducer.ProducerID = -1
	long := txnReq("g", ids[0], gen, 1, "t", map[int32]int64{0: 1})
	long.Topics[0].Partitions[0].Metadata = strPtr(strings.Repeat("x", e.cfg.OffsetMetadataMaxBytes+1))
	withInstance := func(r *kmsg.TxnOffsetCommitRequest, instance string) *kmsg.TxnOffsetCommitRequest {
		r.InstanceID = &instance
		return r
	}
	for _, tc := range []struct {
		name string
		req  *kmsg.TxnOffsetCommitRequest
		want int16
	}{
		{"member", txnReq("g", ids[0], gen, 1, "t", map[int32]int64{0: 1}), 0},
		{"wrong generation", txnReq("g", ids[0], gen+1, 1, "t", map[int32]int64{0: 1}), codeIllegalGeneration},
		{"unknown member", txnReq("g", "nobody", gen, 1, "t", map[int32]int64{0: 1}), codeUnknownMemberID},
		{"unknown instance", withInstance(txnReq("g", ids[0], gen, 1, "t", map[int32]int64{0: 1}), "i9"), codeUnknownMemberID},
		{"no member to a live group", txnReq("g", "", -1, 1, "t", map[int32]int64{0: 1}), 0},
		{"v2 carries no member", v2, 0},
		{"fenced instance", withInstance(txnReq("gs", "other-id", static.Generation, 1, "t", map[int32]int64{0: 1}), "i1"), codeFencedInstanceID},
		{"static member", withInstance(txnReq("gs", static.MemberID, static.Generation, 1, "t", map[int32]int64{0: 1}), "i1"), 0},
		{"generation to a missing group", txnReq("missing", "m", 3, 1, "t", map[int32]int64{0: 1}), codeIllegalGeneration},
		{"member without generation to a missing group", txnReq("new", "m", -1, 1, "t", map[int32]int64{0: 1}), 0},
		{"no producer id", noProducer, codeInvalidProducerIDMapping},
		{"metadata too large", long, codeOffsetMetadataTooLarge},
		{"empty group id", txnReq("", "", -1, 1, "t", map[int32]int64{0: 1}), codeInvalidGroupID},
	} {
		if codes := e.txnCommit(tc.req); codes[0] != tc.want {
			t.Errorf("%s: code %d, want %d", tc.name, codes[0], tc.want)
		}
	}
	if d := e.describe("new"); d.State != "Empty" {
		t.Errorf("group created by a transactional commit: %s", d.State)
	}
	if d := e.describe("missing"); d.State != "Dead" {
		t.Errorf("refused commit created a group: %s", d.State)
	}

	// A fenced producer epoch leaves nothing pending.
	e.log.mu.Lock()
	e.log.fencedBelow = map[int64]int16{5: txnTestEpoch + 1}
	e.log.mu.Unlock()
	if codes := e.txnCommit(txnReq("g", ids[0], gen, 5, "t", map[int32]int64{3: 1})); codes[3] != codeInvalidProducerEpoch {
		t.Errorf("fenced producer: %v", codes)
	}
	if got := e.fetchParts("g", true, "t", 3); got[3] != (fetched{-1, 0}) {
		t.Errorf("after a fenced commit: %v", got)
	}
}

func TestTxnOffsetCommitUnknownTopics(t *testing.T) {
	e := newEnv(t)
	e.opts.Topics = fakeTopics{"t": {id: topicID(1), partitions: 2}}
	e.start()
	req := txnReq("g", "", -1, 1, "t", map[int32]int64{0: 1, 5: 2})
	other := kmsg.NewTxnOffsetCommitRequestTopic()
	other.Topic = "zz"
	other.Partitions = []kmsg.TxnOffsetCommitRequestTopicPartition{kmsg.NewTxnOffsetCommitRequestTopicPartition()}
	req.Topics = append(req.Topics, other)
	resp := e.c.TxnOffsetCommit(ctx, req)
	if ps := resp.Topics[0].Partitions; ps[0].ErrorCode != 0 || ps[1].ErrorCode != codeUnknownTopicOrPartition {
		t.Fatalf("topic t: %+v", ps)
	}
	if p := resp.Topics[1].Partitions[0]; p.ErrorCode != codeUnknownTopicOrPartition {
		t.Fatalf("topic zz: %+v", p)
	}
	e.complete(1, true)
	if got := e.fetchParts("g", false, "t", 0, 5); got[0].offset != 1 || got[5].offset != -1 {
		t.Fatalf("after commit: %v", got)
	}
}

func TestTxnOffsetCommitToConsumerGroup(t *testing.T) {
	e := newConsumerEnv(t)
	a := &cgMember{e: e, id: "member-a", owned: partitionSet{}}
	mustHB(t, a)
	mustHB(t, a)
	if len(a.owned) == 0 {
		t.Fatal("no assignment")
	}
	for _, tc := range []struct {
		name  string
		req   *kmsg.TxnOffsetCommitRequest
		want  int16
		topic string
	}{
		{"member epoch", txnReq("cg", "member-a", a.epoch, 1, "t", map[int32]int64{0: 1}), 0, "t"},
		{"unknown member", txnReq("cg", "member-z", a.epoch, 1, "t", map[int32]int64{0: 1}), codeUnknownMemberID, "t"},
		{"future epoch", txnReq("cg", "member-a", a.epoch+1, 1, "t", map[int32]int64{0: 1}), codeFencedMemberEpoch, "t"},
		{"stale epoch", txnReq("cg", "member-a", a.epoch-1, 1, "u", map[int32]int64{0: 1}), codeIllegalGeneration, "u"},
		{"no member to a live group", txnReq("cg", "", -1, 1, "t", map[int32]int64{0: 1}), codeUnknownMemberID, "t"},
	} {
		if codes := e.txnCommit(tc.req); codes[0] != tc.want {
			t.Errorf("%s: code %d, want %d", tc.name, codes[0], tc.want)
		}
	}
	e.complete(1, true)
	if got := e.fetchParts("cg", true, "t", 0); got[0] != (fetched{1, 0}) {
		t.Fatalf("after commit: %v", got)
	}
}

// TestTxnOffsetsReloadFromLog: committed, aborted and open transactions
// replay to the state the coordinator had, and the open one completes
// after the reload.
func TestTxnOffsetsReloadFromLog(t *testing.T) {
	e := newEnv(t)
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{3: 40}))
	e.txnCommit(txnReq("g", "", -1, 1, "t", map[int32]int64{0: 10}))
	e.txnCommit(txnReq("g", "", -1, 2, "t", map[int32]int64{1: 20, 3: 41}))
	e.txnCommit(txnReq("g", "", -1, 3, "t", map[int32]int64{2: 30}))
	e.txnCommit(txnReq("h", "", -1, 3, "t", map[int32]int64{0: 50}))
	// The second transaction of producer 1 (after its first's marker).
	firstMarker := e.complete(1, true)
	e.complete(2, false)
	e.txnCommit(txnReq("g", "", -1, 1, "t", map[int32]int64{0: 11}))
	wantG, wantH := e.view("g", 0, 1, 2, 3), e.view("h", 0)
	if !strings.Contains(wantG, "stable=map[0:{-1 88} 1:{-1 0} 2:{-1 88} 3:{40 0}]") {
		t.Fatalf("state before reload: %s", wantG)
	}
	e.start()
	if got := e.view("g", 0, 1, 2, 3); got != wantG {
		t.Fatalf("g after reload:\n got %s\nwant %s", got, wantG)
	}
	if got := e.view("h", 0); got != wantH {
		t.Fatalf("h after reload:\n got %s\nwant %s", got, wantH)
	}
	// The broker reports the first marker again (it was applied by the
	// load): the second transaction stays pending.
	e.c.CompleteTxn(0, 1, true, firstMarker)
	if got := e.fetchParts("g", true, "t", 0); got[0] != (fetched{-1, codeUnstableOffsetCommit}) {
		t.Fatalf("second transaction after a repeated marker: %v", got)
	}
	e.complete(3, true)
	e.complete(1, true)
	wantG, wantH = e.view("g", 0, 1, 2, 3), e.view("h", 0)
	if !strings.Contains(wantG, "stable=map[0:{11 0} 1:{-1 0} 2:{30 0} 3:{40 0}]") || !strings.Contains(wantH, "stable=map[0:{50 0}]") {
		t.Fatalf("after the commits: %s %s", wantG, wantH)
	}
	e.start()
	if got := e.view("g", 0, 1, 2, 3); got != wantG {
		t.Fatalf("g after second reload:\n got %s\nwant %s", got, wantG)
	}
	if got := e.view("h", 0); got != wantH {
		t.Fatalf("h after second reload:\n got %s\nwant %s", got, wantH)
	}
}

// TestCompleteTxnWhileLoading: a marker reported while the partition
// loads applies once loaded, once.
func TestCompleteTxnWhileLoading(t *testing.T) {
	e := newEnv(t)
	e.txnCommit(txnReq("g", "", -1, 4, "t", map[int32]int64{0: 10}))
	e.log.scanGate = make(chan struct{})
	e.c.Load(0, e.log)
	off := e.log.appendMarker(t, 4, txnTestEpoch, true)
	e.c.CompleteTxn(0, 4, true, off)
	close(e.log.scanGate)
	e.waitLoaded(0)
	if got := e.fetchParts("g", true, "t", 0); got[0] != (fetched{10, 0}) {
		t.Fatalf("after load: %v", got)
	}
}

// TestNonTxnCommitAfterPendingTxnWins follows Kafka: at the commit marker
// a pending transactional offset replaces the committed one only if its
// record came later in the log. Snapshots in between (which rewrite the
// committed offsets) and reloads do not change the outcome.
func TestNonTxnCommitAfterPendingTxnWins(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SnapshotMinBytes = 2 << 10 })
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{1: 3})) // before the transaction
	e.txnCommit(txnReq("g", "", -1, 6, "t", map[int32]int64{0: 10, 1: 10}))
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 3})) // after it
	churn(t, e, 300)
	var snaps int64
	e.onLoop(func(s *shard) { snaps = s.stats.snapshots })
	if snaps == 0 {
		t.Fatal("no snapshot taken")
	}
	want := e.view("g", 0, 1)
	if !strings.Contains(want, "plain=map[0:{3 0} 1:{3 0}]") {
		t.Fatalf("before the marker: %s", want)
	}
	e.start()
	if got := e.view("g", 0, 1); got != want {
		t.Fatalf("after reload:\n got %s\nwant %s", got, want)
	}
	e.complete(6, true)
	want = e.view("g", 0, 1)
	if !strings.Contains(want, "stable=map[0:{3 0} 1:{10 0}]") {
		t.Fatalf("after the marker: %s", want)
	}
	churn(t, e, 300)
	e.start()
	if got := e.view("g", 0, 1); got != want {
		t.Fatalf("after the marker and a reload:\n got %s\nwant %s", got, want)
	}
}

// churn commits to other groups to grow the log (and take snapshots).
func churn(t *testing.T, e *env, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		g := fmt.Sprintf("s%d", i%7)
		if codes := e.commit(commitReq(g, "", -1, "t", map[int32]int64{int32(i % 5): int64(i)})); codes[int32(i%5)] != 0 {
			t.Fatal(codes)
		}
	}
	e.barrier()
	e.settle()
}

// TestSnapshotNeverMovesLogStartPastPendingTxn: while a transaction is
// pending the log start stays at or before its batch (and before the
// committed record it may lose to), and snapshots do not run on every
// append; after the marker the log start moves on.
func TestSnapshotNeverMovesLogStartPastPendingTxn(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SnapshotMinBytes = 2 << 10 })
	churn(t, e, 100)
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 1}))
	_, committedAt, _ := e.log.stats()
	committedAt-- // the commit's batch
	e.txnCommit(txnReq("g", "", -1, 9, "t", map[int32]int64{0: 100, 1: 101}))
	pendingAt := e.log.txnBatches(9)[0]
	churn(t, e, 600)
	var snaps, held int64
	e.onLoop(func(s *shard) { snaps, held = s.stats.snapshots, s.stats.snapshotsHeld })
	e.log.mu.Lock()
	deletes := append([]int64(nil), e.log.deletes...)
	start := e.log.start
	e.log.mu.Unlock()
	t.Logf("snapshots %d (held %d), deletes %v, committed at %d, pending at %d", snaps, held, deletes, committedAt, pendingAt)
	if held == 0 {
		t.Fatal("no snapshot while the transaction was pending")
	}
	if start > committedAt {
		t.Fatalf("log start %d past the committed record at %d a pending transaction may lose to", start, committedAt)
	}
	if snaps > 60 {
		t.Fatalf("%d snapshots for 600 commits", snaps)
	}
	want := e.view("g", 0, 1)
	e.start()
	if got := e.view("g", 0, 1); got != want {
		t.Fatalf("after reload:\n got %s\nwant %s", got, want)
	}
	e.complete(9, true)
	want = e.view("g", 0, 1)
	if !strings.Contains(want, "stable=map[0:{100 0} 1:{101 0}]") {
		t.Fatalf("after commit: %s", want)
	}
	churn(t, e, 400)
	e.log.mu.Lock()
	start = e.log.start
	e.log.mu.Unlock()
	if start <= pendingAt {
		t.Fatalf("log start %d did not move past the committed transaction at %d", start, pendingAt)
	}
	e.start()
	if got := e.view("g", 0, 1); got != want {
		t.Fatalf("after the log start moved and a reload:\n got %s\nwant %s", got, want)
	}
}

// TestPendingTxnKeepsGroupFromDeletionAndExpiry: a group with a pending
// transaction is not deleted (DeleteGroups answers NON_EMPTY_GROUP), and
// neither it nor the partition's offset expires, until the marker.
func TestPendingTxnKeepsGroupFromDeletionAndExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.OffsetsRetention = time.Minute
		c.OffsetsRetentionCheckInterval = 5 * time.Second
	})
	e.commit(commitReq("g", "", -1, "t", map[int32]int64{0: 5, 1: 6}))
	e.txnCommit(txnReq("g", "", -1, 3, "t", map[int32]int64{0: 7}))
	del := func() int16 {
		r := kmsg.NewPtrDeleteGroupsRequest()
		r.Version = 2
		r.Groups = []string{"g"}
		return e.c.DeleteGroups(ctx, r).Groups[0].ErrorCode
	}
	if code := del(); code != codeNonEmptyGroup {
		t.Fatalf("delete with a pending transaction: %d", code)
	}
	e.advance(2 * time.Minute)
	if got, _ := e.fetchAll("g"); len(got) != 1 || got[topicPartition{"t", 0}] != 5 {
		t.Fatalf("after expiry with a pending transaction: %v", got)
	}
	e.complete(3, false)
	if code := del(); code != 0 {
		t.Fatalf("delete after the abort: %d", code)
	}
}

// TestTxnOffsetCommitFailedAppend: a failed write answers with the log's
// code and leaves nothing pending.
func TestTxnOffsetCommitFailedAppend(t *testing.T) {
	e := newEnv(t)
	e.log.mu.Lock()
	e.log.failAppends, e.log.failErr = 1, fmt.Errorf("gone: %w", ErrNotLeader)
	e.log.mu.Unlock()
	if codes := e.txnCommit(txnReq("g", "", -1, 1, "t", map[int32]int64{0: 1})); codes[0] != codeNotCoordinator {
		t.Fatalf("failed append: %v", codes)
	}
	if got := e.fetchParts("g", true, "t", 0); got[0] != (fetched{-1, 0}) {
		t.Fatalf("after a failed append: %v", got)
	}
}

func TestDecodeMarker(t *testing.T) {
	for _, tc := range []struct {
		key             []byte
		commit, ok, bad bool
	}{
		{key: []byte{0, 0, 0, 1}, commit: true, ok: true},
		{key: []byte{0, 0, 0, 0}, ok: true},
		{key: []byte{0, 1, 0, 1, 9}, commit: true, ok: true}, // a newer version reads as v0
		{key: []byte{0, 0, 0, 3}},                            // not a transaction marker
		{key: []byte{0, 0, 0}, bad: true},
		{key: nil, bad: true},
		{key: []byte{0xff, 0xff, 0, 1}, bad: true},
	} {
		commit, ok, err := decodeMarker(tc.key)
		if commit != tc.commit || ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("%x: commit %t ok %t err %v", tc.key, commit, ok, err)
		}
	}
}
