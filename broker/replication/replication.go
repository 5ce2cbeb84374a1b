// Package replication holds the decisions of Kafka's replication protocol
// as pure functions: where the high watermark goes, when the ISR shrinks or
// grows, whether a follower's fetch is accepted or told to truncate, where a
// follower truncates, who becomes leader, and whether an acks=all write may
// proceed. They take the state and the time (milliseconds, passed in) and
// return what to do; the broker's partitions, fetchers and controller call
// them and carry out the result. None of them does I/O or reads a clock,
// so the tests are tables.
package replication

import (
	"cmp"
	"errors"
	"slices"
)

// Errors a decision returns. The broker maps them to Kafka codes.
var (
	// ErrNotEnoughReplicas: fewer in-sync replicas than
	// min.insync.replicas for an acks=all write (NOT_ENOUGH_REPLICAS).
	ErrNotEnoughReplicas = errors.New("replication: fewer in-sync replicas than min.insync.replicas")
	// ErrFencedLeaderEpoch: the request carries an older leader epoch
	// than the partition's (FENCED_LEADER_EPOCH).
	ErrFencedLeaderEpoch = errors.New("replication: leader epoch older than the partition's")
	// ErrUnknownLeaderEpoch: the request carries a newer leader epoch
	// than the partition's (UNKNOWN_LEADER_EPOCH): this broker has not
	// yet learned of the change.
	ErrUnknownLeaderEpoch = errors.New("replication: leader epoch newer than the partition's")
	// ErrNotReplica: a fetch with a replica id that is not one of the
	// partition's replicas.
	ErrNotReplica = errors.New("replication: broker is not a replica of the partition")
	// ErrOffsetOutOfRange: a follower fetch offset past the leader's log
	// end or below its log start.
	ErrOffsetOutOfRange = errors.New("replication: fetch offset out of range")
)

// NoEpoch is Kafka's "no leader epoch" (-1) in requests and checkpoints.
const NoEpoch int32 = -1

// Follower is what a leader knows of one follower, from its fetches.
type Follower struct {
	ID int32
	// LogEndOffset is the fetch offset of the follower's last accepted
	// fetch: it has everything below. -1 until its first fetch.
	LogEndOffset int64
	// LogStartOffset is the start of the follower's log, as its last
	// fetch said (-1 until then); rack-aware reads and DeleteRecords'
	// low watermark use it.
	LogStartOffset int64
	// LastCaughtUpMs is the last time the follower was known to have
	// everything the leader had (Kafka's lastCaughtUpTimeMs).
	LastCaughtUpMs int64
	// LastFetchMs and LastFetchLeaderLEO are the previous fetch's time
	// and the leader's log end at that time.
	LastFetchMs        int64
	LastFetchLeaderLEO int64
	// LastSentHW is the high watermark the leader last sent it (-1:
	// none). A fetch waiting for data is answered at once when the high
	// watermark has moved past it, so that followers, and the consumers
	// reading from them (KIP-392), learn it without waiting for data.
	LastSentHW int64
	// LastSentLogStart is the log start the leader last sent it (-1:
	// none). A fetch waiting for data is answered at once when the
	// leader's log start has moved past the follower's and past what it
	// was last sent, so that DeleteRecords, which waits for every live
	// replica's log start, does not wait out the follower's long poll.
	LastSentLogStart int64
}

// NewFollower is a follower the leader has not heard from since it took
// leadership at nowMs: it counts as caught up at that time, so a follower
// gets replica.lag.time.max.ms to show up before it leaves the ISR.
func NewFollower(id int32, nowMs int64) Follower {
	return Follower{ID: id, LogEndOffset: -1, LogStartOffset: -1, LastCaughtUpMs: nowMs, LastFetchMs: nowMs, LastFetchLeaderLEO: -1, LastSentHW: -1, LastSentLogStart: -1}
}

// RecordFetch updates a follower after the leader accepted its fetch at
// fetchOffset when the leader's log ended at leaderLEO, as Kafka's
// Replica.updateFetchStateOrThrow: the follower is caught up now if it asked
// for the log end, and was caught up at its previous fetch if it asked for
// what the log end was then.
func RecordFetch(f Follower, fetchOffset, leaderLEO, nowMs int64) Follower {
	switch {
	case fetchOffset >= leaderLEO:
		f.LastCaughtUpMs = max(f.LastCaughtUpMs, nowMs)
	case f.LastFetchLeaderLEO >= 0 && fetchOffset >= f.LastFetchLeaderLEO:
		f.LastCaughtUpMs = max(f.LastCaughtUpMs, f.LastFetchMs)
	}
	f.LogEndOffset = fetchOffset
	f.LastFetchMs = nowMs
	f.LastFetchLeaderLEO = leaderLEO
	return f
}

// HighWatermark is where the high watermark goes: the smallest log end
// among the in-sync replicas (the leader's own is leaderLEO), never below
// cur. A member of the ISR the leader has no fetch state for holds it
// where it is. The high watermark never moves back.
func HighWatermark(cur int64, leader int32, leaderLEO int64, isr []int32, followers []Follower) int64 {
	hw := leaderLEO
	for _, id := range isr {
		if id == leader {
			continue
		}
		f, ok := find(followers, id)
		if !ok || f.LogEndOffset < 0 {
			return cur
		}
		hw = min(hw, f.LogEndOffset)
	}
	return max(cur, hw)
}

// ShrinkISR returns the ISR without the followers that have not caught up
// within lagMaxMs (replica.lag.time.max.ms) of nowMs, and whether it
// changed. The leader always stays.
func ShrinkISR(isr []int32, leader int32, followers []Follower, nowMs, lagMaxMs int64) ([]int32, bool) {
	out := make([]int32, 0, len(isr))
	for _, id := range isr {
		if id != leader {
			f, ok := find(followers, id)
			if ok && nowMs-f.LastCaughtUpMs > lagMaxMs {
				continue
			}
		}
		out = append(out, id)
	}
	return out, len(out) != len(isr)
}

// ExpandISR returns the ISR with every replica added that has caught up:
// its log end is at least the high watermark and at least the offset the
// leader's epoch started at (so it holds this epoch's history, not a
// divergent one that happens to be as long), and it caught up within
// lagMaxMs. Replicas are added in the order of the replica list.
func ExpandISR(isr, replicas []int32, followers []Follower, hw, epochStartOffset, nowMs, lagMaxMs int64) ([]int32, bool) {
	out := slices.Clone(isr)
	for _, id := range replicas {
		if slices.Contains(out, id) {
			continue
		}
		f, ok := find(followers, id)
		if !ok || f.LogEndOffset < 0 || f.LogEndOffset < hw || f.LogEndOffset < epochStartOffset || nowMs-f.LastCaughtUpMs > lagMaxMs {
			continue
		}
		out = append(out, id)
	}
	return out, len(out) != len(isr)
}

// CheckEpoch compares a request's view of the leader epoch (NoEpoch: no
// view) with the partition's, as Kafka's fetch, produce and
// OffsetForLeaderEpoch do.
func CheckEpoch(requestEpoch, leaderEpoch int32) error {
	switch {
	case requestEpoch < 0 || requestEpoch == leaderEpoch:
		return nil
	case requestEpoch < leaderEpoch:
		return ErrFencedLeaderEpoch
	default:
		return ErrUnknownLeaderEpoch
	}
}

// EndOffsetForEpoch answers "where did this epoch end in my log": the
// largest epoch at or below epoch and the offset the next epoch started at
// (the log end for the latest epoch), as Kafka's
// LeaderEpochFileCache.endOffsetFor. ok is false when epoch is newer than
// every entry or there are none.
type EndOffsetForEpoch func(epoch int32) (foundEpoch int32, endOffset int64, ok bool)

// FetchRequest is one partition of a follower's fetch, as the leader sees
// it.
type FetchRequest struct {
	ReplicaID          int32
	CurrentLeaderEpoch int32 // NoEpoch when not sent
	FetchOffset        int64
	LastFetchedEpoch   int32 // NoEpoch when not sent (Fetch < v12)
}

// Leader is the leader's side of a fetch decision.
type Leader struct {
	Epoch          int32
	Replicas       []int32
	LogStartOffset int64
	LogEndOffset   int64
	EndOffsetFor   EndOffsetForEpoch
}

// FetchAnswer is the decision on a follower's fetch. When Diverging, the
// follower must truncate (to at most DivergingEndOffset, after looking up
// DivergingEpoch in its own log) before fetching again, and no data is
// sent; otherwise data from FetchOffset may be sent and the follower's
// position recorded.
type FetchAnswer struct {
	Diverging          bool
	DivergingEpoch     int32
	DivergingEndOffset int64
}

// AcceptFollowerFetch decides a follower's fetch as Kafka's
// Partition.fetchRecords: the fetcher must be a replica, its epoch must
// match the leader's (fencing), and its last fetched epoch must agree with
// the leader's log at its fetch offset (KIP-320); a disagreement answers
// with the epoch and end offset to truncate to instead of data.
func AcceptFollowerFetch(l Leader, r FetchRequest) (FetchAnswer, error) {
	if !slices.Contains(l.Replicas, r.ReplicaID) {
		return FetchAnswer{}, ErrNotReplica
	}
	if err := CheckEpoch(r.CurrentLeaderEpoch, l.Epoch); err != nil {
		return FetchAnswer{}, err
	}
	if r.LastFetchedEpoch >= 0 && r.FetchOffset > 0 && l.EndOffsetFor != nil {
		epoch, end, ok := l.EndOffsetFor(r.LastFetchedEpoch)
		switch {
		case !ok:
			// The follower has an epoch newer than any in the
			// leader's log: everything it has from that epoch on is
			// divergent. Truncate to where the leader's log ends.
			return FetchAnswer{Diverging: true, DivergingEpoch: NoEpoch, DivergingEndOffset: l.LogEndOffset}, nil
		case epoch != r.LastFetchedEpoch || end < r.FetchOffset:
			return FetchAnswer{Diverging: true, DivergingEpoch: epoch, DivergingEndOffset: end}, nil
		}
	}
	if r.FetchOffset < l.LogStartOffset || r.FetchOffset > l.LogEndOffset {
		return FetchAnswer{}, ErrOffsetOutOfRange
	}
	return FetchAnswer{}, nil
}

// TruncationOffset is where a follower cuts its log after the leader
// answered that its epoch leaderEpoch ends at leaderEnd (from
// OffsetForLeaderEpoch or a fetch's diverging epoch), as KIP-279: when the
// leader's answer names another epoch than the follower asked about, the
// follower looks that epoch up in its own log and takes the smaller end.
// The result never exceeds the follower's log end. leaderEpoch NoEpoch
// (the leader knows nothing of the follower's epochs) cuts to leaderEnd.
//
// A leaderEnd below zero is UNDEFINED_EPOCH_OFFSET: the leader could not
// place the epoch (it knows none as new, or none at all). That says
// nothing of where the logs diverge, so nothing is cut, as Kafka's
// fetcher then truncates to its fetch offset, the log end: the fetches
// that follow carry the follower's last epoch, and the leader's check of
// it finds the divergence, if any. Cutting to zero would discard
// committed records the follower may be the last to hold.
func TruncationOffset(asked, leaderEpoch int32, leaderEnd int64, local EndOffsetForEpoch, localLEO int64) int64 {
	if leaderEnd < 0 {
		return localLEO
	}
	end := leaderEnd
	if leaderEpoch >= 0 && leaderEpoch != asked && local != nil {
		// The follower's own answer for leaderEpoch: where it ends, or,
		// when the follower lacks it, where the follower's epochs after
		// it begin (or its first epoch, for one older than all). Those
		// epochs lie between leaderEpoch and asked, which the leader
		// does not have: what the follower holds under them is not the
		// leader's (KIP-279's intermediate truncation, here in one step).
		if _, localEnd, ok := local(leaderEpoch); ok {
			end = min(end, localEnd)
		}
	}
	return min(end, localLEO)
}

// Candidate is a replica as leader election sees it.
type Candidate struct {
	ID   int32
	Live bool
	// UncleanShutdown: the broker's last shutdown was a crash, so its
	// unflushed tail may be gone (KIP-966).
	UncleanShutdown bool
	// ShuttingDown: the broker is in a controlled shutdown; it leads
	// only when no other live in-sync replica can.
	ShuttingDown bool
}

// Election is the outcome of a leader election.
type Election struct {
	Leader int32 // -1: no leader could be chosen (offline)
	ISR    []int32
	// Unclean: the leader came from outside the ISR, so acknowledged
	// records may be lost (unclean.leader.election.enable).
	Unclean bool
}

// ElectLeader chooses a leader for a partition whose leader is gone or
// must change. Candidates are live ISR members in replica order (the
// preferred replica first); among them one not shutting down wins over one
// that is, then one that shut down cleanly over one that did not; the dead
// leave the ISR. With no live ISR
// member the partition stays offline (Leader -1, the ISR kept as it was so
// that its last member can come back and lead), unless unclean election is
// enabled, when the first live replica leads alone.
func ElectLeader(replicas, isr []int32, cands []Candidate, unclean bool) Election {
	live := func(id int32) (Candidate, bool) {
		for _, c := range cands {
			if c.ID == id {
				return c, c.Live
			}
		}
		return Candidate{}, false
	}
	var newISR []int32
	for _, id := range isr {
		if _, ok := live(id); ok {
			newISR = append(newISR, id)
		}
	}
	leader := int32(-1)
	for _, rank := range [...]struct{ clean, staying bool }{{true, true}, {false, true}, {true, false}, {false, false}} {
		for _, id := range replicas {
			c, ok := live(id)
			if ok && slices.Contains(newISR, id) && c.UncleanShutdown != rank.clean && c.ShuttingDown != rank.staying {
				leader = id
				break
			}
		}
		if leader >= 0 {
			break
		}
	}
	if leader >= 0 {
		return Election{Leader: leader, ISR: newISR}
	}
	if unclean {
		for _, id := range replicas {
			if _, ok := live(id); ok {
				return Election{Leader: id, ISR: []int32{id}, Unclean: true}
			}
		}
	}
	return Election{Leader: -1, ISR: slices.Clone(isr)}
}

// LogEnd is where a replica's log ends: the leader epoch of its last
// record (NoEpoch when it holds none) and its log end offset.
type LogEnd struct {
	Epoch  int32
	Offset int64
}

// Compare orders log ends by the history they hold: the later last epoch
// first (a log that ends in an older epoch may hold a tail that a newer
// leader never had), then the longer log.
func (a LogEnd) Compare(b LogEnd) int {
	if a.Epoch != b.Epoch {
		return cmp.Compare(a.Epoch, b.Epoch)
	}
	return cmp.Compare(a.Offset, b.Offset)
}

// Longest chooses, for an unclean election, the live replica whose log
// holds the latest history (KIP-966's unclean recovery): the greatest log
// end of those ends reports (LogEnd.Compare), then one not shutting down,
// then one that shut down cleanly, then replica order. It returns -1 when
// no live replica reported: the caller then elects as Kafka does.
func Longest(replicas []int32, cands []Candidate, ends map[int32]LogEnd) int32 {
	best, bestRank := int32(-1), 0
	var bestEnd LogEnd
	for _, id := range replicas {
		i := slices.IndexFunc(cands, func(c Candidate) bool { return c.ID == id })
		end, reported := ends[id]
		if i < 0 || !cands[i].Live || !reported {
			continue
		}
		rank := 0 // lower is better among equal logs
		if cands[i].ShuttingDown {
			rank += 2
		}
		if cands[i].UncleanShutdown {
			rank++
		}
		if c := end.Compare(bestEnd); best < 0 || c > 0 || c == 0 && rank < bestRank {
			best, bestEnd, bestRank = id, end, rank
		}
	}
	return best
}

// CheckMinISR refuses an acks=all write when the ISR is smaller than
// min.insync.replicas. Other acks are never refused for this.
func CheckMinISR(acks int16, isrSize int, minISR int32) error {
	if acks == -1 && int32(isrSize) < minISR {
		return ErrNotEnoughReplicas
	}
	return nil
}

func find(fs []Follower, id int32) (Follower, bool) {
	for _, f := range fs {
		if f.ID == id {
			return f, true
		}
	}
	return Follower{}, false
}
