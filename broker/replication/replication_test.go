package replication

import (
	"errors"
	"slices"
	"testing"
)

func TestRecordFetchCaughtUpTime(t *testing.T) {
	for _, tc := range []struct {
		name        string
		f           Follower
		fetchOffset int64
		leaderLEO   int64
		now         int64
		wantCaught  int64
	}{
		{"fetch at the log end is caught up now", NewFollower(2, 100), 50, 50, 200, 200},
		{"fetch past the log end is caught up now", NewFollower(2, 100), 60, 50, 200, 200},
		{"behind, first fetch keeps the start time", NewFollower(2, 100), 10, 50, 200, 100},
		{"behind now but at the previous log end: caught up at the previous fetch",
			Follower{ID: 2, LogEndOffset: 30, LastCaughtUpMs: 100, LastFetchMs: 150, LastFetchLeaderLEO: 40}, 40, 50, 200, 150},
		{"behind both: unchanged",
			Follower{ID: 2, LogEndOffset: 30, LastCaughtUpMs: 100, LastFetchMs: 150, LastFetchLeaderLEO: 40}, 35, 50, 200, 100},
		{"never goes back",
			Follower{ID: 2, LogEndOffset: 30, LastCaughtUpMs: 300, LastFetchMs: 150, LastFetchLeaderLEO: 40}, 40, 50, 200, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RecordFetch(tc.f, tc.fetchOffset, tc.leaderLEO, tc.now)
			if got.LastCaughtUpMs != tc.wantCaught {
				t.Fatalf("LastCaughtUpMs = %d, want %d", got.LastCaughtUpMs, tc.wantCaught)
			}
			if got.LogEndOffset != tc.fetchOffset || got.LastFetchMs != tc.now || got.LastFetchLeaderLEO != tc.leaderLEO {
				t.Fatalf("fetch state not recorded: %+v", got)
			}
		})
	}
}

func fol(id int32, leo, caught int64) Follower {
	return Follower{ID: id, LogEndOffset: leo, LastCaughtUpMs: caught, LastFetchLeaderLEO: -1}
}

func TestHighWatermark(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cur       int64
		leaderLEO int64
		isr       []int32
		followers []Follower
		want      int64
	}{
		{"leader alone: its log end", 0, 10, []int32{1}, nil, 10},
		{"smallest ISR log end", 0, 10, []int32{1, 2, 3}, []Follower{fol(2, 7, 0), fol(3, 9, 0)}, 7},
		{"followers outside the ISR do not hold it", 0, 10, []int32{1, 2}, []Follower{fol(2, 10, 0), fol(3, 1, 0)}, 10},
		{"an ISR member never heard from holds it", 5, 10, []int32{1, 2}, []Follower{NewFollower(2, 0)}, 5},
		{"an ISR member without state holds it", 5, 10, []int32{1, 2}, nil, 5},
		{"never moves back", 8, 10, []int32{1, 2}, []Follower{fol(2, 6, 0)}, 8},
		{"a follower ahead of the leader counts as the leader's end", 0, 10, []int32{1, 2}, []Follower{fol(2, 12, 0)}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := HighWatermark(tc.cur, 1, tc.leaderLEO, tc.isr, tc.followers); got != tc.want {
				t.Fatalf("HighWatermark = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestShrinkISR(t *testing.T) {
	const lag = 30_000
	for _, tc := range []struct {
		name      string
		isr       []int32
		followers []Follower
		now       int64
		want      []int32
	}{
		{"all caught up", []int32{1, 2, 3}, []Follower{fol(2, 5, 90_000), fol(3, 5, 100_000)}, 100_000, []int32{1, 2, 3}},
		{"lagging past the limit leaves", []int32{1, 2, 3}, []Follower{fol(2, 5, 69_999), fol(3, 5, 100_000)}, 100_000, []int32{1, 3}},
		{"exactly at the limit stays", []int32{1, 2}, []Follower{fol(2, 5, 70_000)}, 100_000, []int32{1, 2}},
		{"the leader never leaves", []int32{1, 2}, []Follower{fol(1, 0, 0), fol(2, 5, 0)}, 100_000, []int32{1}},
		{"a new follower gets the full lag time", []int32{1, 2}, []Follower{NewFollower(2, 80_000)}, 100_000, []int32{1, 2}},
		{"a new follower that never fetched leaves after it", []int32{1, 2}, []Follower{NewFollower(2, 60_000)}, 100_000, []int32{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := ShrinkISR(tc.isr, 1, tc.followers, tc.now, lag)
			if !slices.Equal(got, tc.want) || changed != !slices.Equal(tc.isr, tc.want) {
				t.Fatalf("ShrinkISR = %v %v, want %v", got, changed, tc.want)
			}
		})
	}
}

func TestExpandISR(t *testing.T) {
	const lag = 30_000
	replicas := []int32{1, 2, 3}
	for _, tc := range []struct {
		name       string
		isr        []int32
		followers  []Follower
		hw, epochS int64
		want       []int32
	}{
		{"caught up to the HW joins", []int32{1}, []Follower{fol(2, 10, 100_000)}, 10, 0, []int32{1, 2}},
		{"below the HW stays out", []int32{1}, []Follower{fol(2, 9, 100_000)}, 10, 0, []int32{1}},
		{"below the leader epoch's start stays out", []int32{1}, []Follower{fol(2, 10, 100_000)}, 10, 11, []int32{1}},
		{"not caught up lately stays out", []int32{1}, []Follower{fol(2, 10, 60_000)}, 10, 0, []int32{1}},
		{"never fetched stays out", []int32{1}, []Follower{NewFollower(2, 100_000)}, 0, 0, []int32{1}},
		{"added in replica order", []int32{1}, []Follower{fol(3, 10, 100_000), fol(2, 10, 100_000)}, 10, 0, []int32{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := ExpandISR(tc.isr, replicas, tc.followers, tc.hw, tc.epochS, 100_000, lag)
			if !slices.Equal(got, tc.want) || changed != !slices.Equal(tc.isr, tc.want) {
				t.Fatalf("ExpandISR = %v %v, want %v", got, changed, tc.want)
			}
		})
	}
}

// epochs returns an EndOffsetForEpoch over a checkpoint and log end.
func epochs(logEnd int64, entries ...[2]int64) EndOffsetForEpoch {
	return func(epoch int32) (int32, int64, bool) {
		if len(entries) == 0 {
			return NoEpoch, -1, false
		}
		if int64(epoch) >= entries[len(entries)-1][0] {
			if int64(epoch) == entries[len(entries)-1][0] {
				return epoch, logEnd, true
			}
			return NoEpoch, -1, false
		}
		if int64(epoch) < entries[0][0] {
			return epoch, entries[0][1], true
		}
		for i := len(entries) - 2; i >= 0; i-- {
			if entries[i][0] <= int64(epoch) {
				return int32(entries[i][0]), entries[i+1][1], true
			}
		}
		return NoEpoch, -1, false
	}
}

func TestAcceptFollowerFetch(t *testing.T) {
	leader := Leader{Epoch: 5, Replicas: []int32{1, 2, 3}, LogStartOffset: 10, LogEndOffset: 100,
		EndOffsetFor: epochs(100, [2]int64{1, 0}, [2]int64{3, 40}, [2]int64{5, 80})}
	for _, tc := range []struct {
		name    string
		req     FetchRequest
		want    FetchAnswer
		wantErr error
	}{
		{"in step", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 90, LastFetchedEpoch: 5}, FetchAnswer{}, nil},
		{"at the end of an older epoch", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 80, LastFetchedEpoch: 3}, FetchAnswer{}, nil},
		{"no epoch views (old versions)", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: -1, FetchOffset: 50, LastFetchedEpoch: -1}, FetchAnswer{}, nil},
		{"not a replica", FetchRequest{ReplicaID: 4, CurrentLeaderEpoch: 5, FetchOffset: 50}, FetchAnswer{}, ErrNotReplica},
		{"stale follower epoch is fenced", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 4, FetchOffset: 50}, FetchAnswer{}, ErrFencedLeaderEpoch},
		{"follower knows a newer epoch", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 6, FetchOffset: 50}, FetchAnswer{}, ErrUnknownLeaderEpoch},
		{"past the old epoch's end diverges",
			FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 85, LastFetchedEpoch: 3},
			FetchAnswer{Diverging: true, DivergingEpoch: 3, DivergingEndOffset: 80}, nil},
		{"an epoch the leader never had diverges at the largest below it",
			FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 60, LastFetchedEpoch: 2},
			FetchAnswer{Diverging: true, DivergingEpoch: 1, DivergingEndOffset: 40}, nil},
		{"an epoch newer than the leader's diverges at the log end",
			FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 60, LastFetchedEpoch: 7},
			FetchAnswer{Diverging: true, DivergingEpoch: NoEpoch, DivergingEndOffset: 100}, nil},
		{"past the log end in the same epoch diverges",
			FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 101, LastFetchedEpoch: 5},
			FetchAnswer{Diverging: true, DivergingEpoch: 5, DivergingEndOffset: 100}, nil},
		{"past the log end without an epoch", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 101, LastFetchedEpoch: -1}, FetchAnswer{}, ErrOffsetOutOfRange},
		{"below the log start", FetchRequest{ReplicaID: 2, CurrentLeaderEpoch: 5, FetchOffset: 5, LastFetchedEpoch: -1}, FetchAnswer{}, ErrOffsetOutOfRange},
		{"from zero an epoch is not checked", FetchRequest{ReplicaID: 3, CurrentLeaderEpoch: 5, FetchOffset: 0, LastFetchedEpoch: 9}, FetchAnswer{}, ErrOffsetOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AcceptFollowerFetch(leader, tc.req)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("answer = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTruncationOffset(t *testing.T) {
	// The follower's log: epoch 1 from 0, epoch 2 from 40, epoch 4 from
	// 70, log end 90.
	local := epochs(90, [2]int64{1, 0}, [2]int64{2, 40}, [2]int64{4, 70})
	for _, tc := range []struct {
		name        string
		asked       int32
		leaderEpoch int32
		leaderEnd   int64
		want        int64
	}{
		{"same epoch, leader ended earlier", 4, 4, 75, 75},
		{"same epoch, leader ended later: keep all", 4, 4, 120, 90},
		{"leader answers an older epoch: the smaller of both ends", 4, 2, 65, 65},
		{"leader answers an older epoch ending later than ours", 4, 2, 80, 70},
		// KIP-279: the leader has none of our epochs between the one
		// it names and the one asked, so what we hold under them (from
		// 70, epoch 4) is not its.
		{"leader answers an epoch we lack: cut where our later epochs begin", 4, 3, 85, 70},
		{"leader answers an epoch older than all of ours: cut everything", 4, 0, 85, 0},
		{"leader knows nothing of our epochs", 4, NoEpoch, 30, 30},
		{"leader cannot place the epoch (UNDEFINED_EPOCH_OFFSET): keep all", 4, NoEpoch, -1, 90},
		{"leader cannot place an epoch it names: keep all", 4, 2, -1, 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TruncationOffset(tc.asked, tc.leaderEpoch, tc.leaderEnd, local, 90); got != tc.want {
				t.Fatalf("TruncationOffset = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestElectLeader(t *testing.T) {
	live := func(ids ...int32) []Candidate {
		var out []Candidate
		for _, id := range ids {
			out = append(out, Candidate{ID: id, Live: true})
		}
		return out
	}
	replicas := []int32{1, 2, 3}
	for _, tc := range []struct {
		name    string
		isr     []int32
		cands   []Candidate
		unclean bool
		want    Election
	}{
		{"preferred replica first", []int32{1, 2, 3}, live(1, 2, 3), false, Election{Leader: 1, ISR: []int32{1, 2, 3}}},
		{"dead leader: next ISR member, dead leave the ISR", []int32{1, 2, 3}, live(2, 3), false, Election{Leader: 2, ISR: []int32{2, 3}}},
		{"only from the ISR", []int32{1, 3}, live(2, 3), false, Election{Leader: 3, ISR: []int32{3}}},
		{"no live ISR member: offline, ISR kept", []int32{1}, live(2, 3), false, Election{Leader: -1, ISR: []int32{1}}},
		{"unclean election when enabled", []int32{1}, live(2, 3), true, Election{Leader: 2, ISR: []int32{2}, Unclean: true}},
		{"clean ISR member wins over an unclean one (KIP-966)", []int32{1, 2, 3},
			[]Candidate{{ID: 2, Live: true, UncleanShutdown: true}, {ID: 3, Live: true}}, false, Election{Leader: 3, ISR: []int32{2, 3}}},
		{"an unclean ISR member when it is the only one", []int32{2, 3},
			[]Candidate{{ID: 2, Live: true, UncleanShutdown: true}, {ID: 3, Live: false}}, false, Election{Leader: 2, ISR: []int32{2}}},
		{"an ISR member not shutting down wins over one that is", []int32{1, 2, 3},
			[]Candidate{{ID: 1, Live: true, ShuttingDown: true}, {ID: 2, Live: true, UncleanShutdown: true}, {ID: 3, Live: true}}, false, Election{Leader: 3, ISR: []int32{1, 2, 3}}},
		{"a member shutting down leads when no other can", []int32{1, 2},
			[]Candidate{{ID: 1, Live: true, ShuttingDown: true}, {ID: 2, Live: false}, {ID: 3, Live: true}}, false, Election{Leader: 1, ISR: []int32{1}}},
		{"a candidate not live does not count", []int32{1, 2}, []Candidate{{ID: 1, Live: false}, {ID: 2, Live: true}}, false, Election{Leader: 2, ISR: []int32{2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ElectLeader(replicas, tc.isr, tc.cands, tc.unclean)
			if got.Leader != tc.want.Leader || !slices.Equal(got.ISR, tc.want.ISR) || got.Unclean != tc.want.Unclean {
				t.Fatalf("ElectLeader = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLongest(t *testing.T) {
	replicas := []int32{1, 2, 3}
	end := func(epoch int32, offset int64) LogEnd { return LogEnd{Epoch: epoch, Offset: offset} }
	for _, tc := range []struct {
		name  string
		cands []Candidate
		ends  map[int32]LogEnd
		want  int32
	}{
		{"the longest log", []Candidate{{ID: 1, Live: true}, {ID: 2, Live: true}, {ID: 3, Live: true}},
			map[int32]LogEnd{1: end(4, 100), 2: end(4, 250), 3: end(4, 180)}, 2},
		{"a later last epoch before a longer log", []Candidate{{ID: 1, Live: true}, {ID: 2, Live: true}},
			map[int32]LogEnd{1: end(5, 100), 2: end(4, 250)}, 1},
		{"an empty log is still a candidate", []Candidate{{ID: 1, Live: false}, {ID: 2, Live: true}},
			map[int32]LogEnd{1: end(5, 100), 2: end(NoEpoch, 0)}, 2},
		{"not live: passed over, however long", []Candidate{{ID: 1, Live: false}, {ID: 3, Live: true}},
			map[int32]LogEnd{1: end(9, 900), 3: end(2, 10)}, 3},
		{"no report: passed over", []Candidate{{ID: 1, Live: true}, {ID: 2, Live: true}},
			map[int32]LogEnd{2: end(1, 5)}, 2},
		{"not a replica: passed over", []Candidate{{ID: 4, Live: true}, {ID: 3, Live: true}},
			map[int32]LogEnd{4: end(9, 900), 3: end(2, 10)}, 3},
		{"equal logs: a clean shutdown first", []Candidate{{ID: 1, Live: true, UncleanShutdown: true}, {ID: 2, Live: true}},
			map[int32]LogEnd{1: end(4, 100), 2: end(4, 100)}, 2},
		{"equal logs: one staying before a clean one shutting down", []Candidate{{ID: 1, Live: true, ShuttingDown: true}, {ID: 2, Live: true, UncleanShutdown: true}},
			map[int32]LogEnd{1: end(4, 100), 2: end(4, 100)}, 2},
		{"equal logs, equal ranks: replica order", []Candidate{{ID: 3, Live: true}, {ID: 2, Live: true}},
			map[int32]LogEnd{2: end(4, 100), 3: end(4, 100)}, 2},
		{"nobody reported", []Candidate{{ID: 1, Live: true}}, nil, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Longest(replicas, tc.cands, tc.ends); got != tc.want {
				t.Fatalf("Longest = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCheckMinISR(t *testing.T) {
	for _, tc := range []struct {
		acks   int16
		isr    int
		minISR int32
		want   error
	}{
		{-1, 2, 2, nil},
		{-1, 1, 2, ErrNotEnoughReplicas},
		{1, 1, 2, nil},
		{0, 1, 3, nil},
		{-1, 3, 1, nil},
	} {
		if got := CheckMinISR(tc.acks, tc.isr, tc.minISR); got != tc.want {
			t.Errorf("CheckMinISR(%d, %d, %d) = %v, want %v", tc.acks, tc.isr, tc.minISR, got, tc.want)
		}
	}
}

func TestCheckEpoch(t *testing.T) {
	for _, tc := range []struct {
		req, cur int32
		want     error
	}{
		{-1, 5, nil}, {5, 5, nil}, {4, 5, ErrFencedLeaderEpoch}, {6, 5, ErrUnknownLeaderEpoch},
	} {
		if got := CheckEpoch(tc.req, tc.cur); got != tc.want {
			t.Errorf("CheckEpoch(%d, %d) = %v, want %v", tc.req, tc.cur, got, tc.want)
		}
	}
}
