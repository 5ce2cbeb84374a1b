package broker

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// Partition-level errors, mapped to Kafka codes by kafkaError.
var (
	errNotLeader         = errors.New("broker: not the leader for this partition")
	errNotEnoughReplicas = errors.New("broker: fewer in-sync replicas than min.insync.replicas")
	// errNotEnoughReplicasAfterAppend: an acks=all write reached the high
	// watermark only after the ISR shrank below min.insync.replicas, so
	// fewer replicas than that hold it: it is not acknowledged (the
	// producer retries; the high watermark holds still until the ISR is
	// back, and the ISR's former members, the partition's eligible
	// leader replicas, hold every record below it).
	errNotEnoughReplicasAfterAppend = errors.New("broker: the ISR shrank below min.insync.replicas before the write reached the high watermark")
	errInvalidTimestamp             = errors.New("broker: record timestamp out of the allowed range")
	errFencedLeaderEpoch            = errors.New("broker: leader epoch older than the partition's")
	errUnknownLeaderEpoch           = errors.New("broker: leader epoch newer than the partition's")
	errPartitionClosed              = errors.New("broker: partition closed")
)

// partition is one partition this broker holds a replica of. The log is
// localseg's; the partition adds what replication decides: leadership, the
// leader epoch, the ISR and the high watermark, and it wakes the requests
// waiting on them.
type partition struct {
	topic   string
	topicID [16]byte
	index   int32
	nodeID  int32
	log     *localseg.Log
	cfg     atomic.Pointer[topicConfig]
	// internal: the broker writes this partition itself (the group
	// coordinator's records); clients may not produce to it.
	internal bool
	tier     *partitionTier // nil: not tiered
	// sinceCreation: this process created the log while none of the
	// partition's records had reached the object store (the partition
	// was unarchived), so the log has lost nothing of the history it
	// holds: no crash since, and no earlier copy gone.
	sinceCreation bool
	// createdHere: this process created the log (its directory did not
	// exist: a new replica, or a disk lost), so whatever it holds it
	// has held since, without a crash.
	createdHere bool
	// joinedISR: this process saw the ISR take this replica in (out of
	// it in the metadata, then in), so its log has held everything below
	// the high watermark since, with no crash in between.
	joinedISR atomic.Bool
	// logLost: the log of the partition on this broker's disk was lost,
	// or may have lost its unflushed tail in a machine crash, though the
	// ISR named this broker (lostAtOpen), so history the ISR counted on
	// it may be gone. Until the metadata shows it out of the
	// ISR it leads nothing and asks to leave
	// (replicaManager.applyLostLocked). Set before the partition is
	// installed; read and cleared under the replica manager's lock.
	logLost bool
	// leavingISR: a request about this broker's place in the ISR runs
	// (leaving it, or reporting a recovered log end).
	leavingISR atomic.Bool
	// counters are the topic's produced and fetched byte counters.
	counters *topicCounters
	// host is the broker's side of replication (fetchers, ISR writes);
	// nil in tests of the partition alone.
	host replicaHost

	// hw is the high watermark: the offset below which every ISR member
	// has the data, the end of what consumers may read. It only grows
	// (compare-and-swap), except through setLeadership.
	hw atomic.Int64

	// state is the leadership as metadata last said, an immutable value
	// replaced whole: readers (fetch, list offsets, metadata) load it
	// and never wait for an append, its write or its fsync.
	state atomic.Pointer[partitionState]
	// superseded is a peer's proof that this broker's leadership at
	// some epoch has ended, found while cut off from etcd
	// (superseded.go); it applies while state is at that epoch.
	superseded atomic.Pointer[supersession]
	// contact is the other replicas' latest words that this broker's
	// leadership holds, asked while its lease was running out
	// (superseded.go).
	contact atomic.Pointer[contactProof]
	// appendMu is held shared by appends and exclusively by leadership
	// changes and close, so that an append stamps the leader epoch that
	// is current for its whole duration (Kafka's leaderIsrUpdateLock).
	// Readers never take it.
	appendMu sync.RWMutex

	// repl is the replication state (partition_replica.go). Lock order:
	// appendMu, then repl, then mu.
	repl struct {
		sync.Mutex
		replicaState
	}

	mu struct {
		sync.Mutex
		// waiters are woken whenever the log end or the high
		// watermark moves (long-poll fetches).
		waiters map[*waiter]struct{}
		// hwWaits are acks=all produces waiting for the high
		// watermark: wake answers those it passed, on the goroutine
		// that moved it, with no goroutine parked per produce.
		// hwWaitMin is the smallest offset among them, hwWaitMinISR
		// the largest min.insync.replicas.
		hwWaits      map[*hwWait]struct{}
		hwWaitMin    int64
		hwWaitMinISR int32
	}
}

// hwWait is a callback for when the high watermark reaches offset (nil
// error) or the partition stops being the leader (errNotLeader) first.
type hwWait struct {
	offset int64
	// minISR: the wait ends with errNotEnoughReplicasAfterAppend when
	// the ISR is smaller than this as the high watermark passes offset
	// (an acks=all produce's min.insync.replicas; 0: never).
	minISR int32
	// owner is the connection the wait answers on (nil: none); done's
	// gather says that the same high watermark move released others of
	// its connection (see wake).
	owner *conn
	done  hwWaiter
}

// hwWaiter is told when a high watermark wait ends (hwWait).
type hwWaiter interface {
	hwDone(err error, gather bool)
}

// hwFunc is a function that is an hwWaiter.
type hwFunc func(err error, gather bool)

func (f hwFunc) hwDone(err error, gather bool) { f(err, gather) }

// partitionState is a partition's leadership; never modified once stored.
type partitionState struct {
	closed      bool
	leader      int32
	leaderEpoch int32
	replicas    []int32
	isr         []int32
	// uncleanEpoch: the leader epoch of the last unclean election (0:
	// none).
	uncleanEpoch int32
	// unarchived: none of the partition's records has reached the
	// object store (metadata.Partition.Unarchived).
	unarchived bool
}

// waiter is woken (at most one pending signal) when a partition it is
// registered with changes.
type waiter struct{ ch chan struct{} }

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

func (w *waiter) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func newPartition(topic string, topicID [16]byte, index, nodeID int32, log *localseg.Log, cfg *topicConfig) *partition {
	p := &partition{topic: topic, topicID: topicID, index: index, nodeID: nodeID, log: log, counters: unregisteredCounters}
	p.cfg.Store(cfg)
	p.state.Store(&partitionState{leader: -1})
	p.repl.partitionEpoch = -1
	p.mu.waiters = make(map[*waiter]struct{})
	p.mu.hwWaits = make(map[*hwWait]struct{})
	// The checkpointed high watermark until the leader (this broker or
	// another) says more.
	p.hw.Store(log.HighWatermark())
	return p
}

// leadership is what the partition's metadata says about its replicas.
type leadership struct {
	leader         int32
	leaderEpoch    int32
	replicas       []int32
	isr            []int32
	partitionEpoch int32
	uncleanEpoch   int32
	unarchived     bool
}

// setLeadership applies the partition's state from metadata. A new leader
// or leader epoch changes the replica's role (partition_replica.go).
//
// The new state is published only after the replication state follows it:
// readers that take no lock (OffsetForLeaderEpoch, a follower's fetch)
// must not see this broker lead before its log records the new leader
// epoch. In between, a follower holding a newer epoch than this log (the
// old leader's records this broker never got) would be told its epoch is
// unknown here, and would cut its log further than it diverges.
func (p *partition) setLeadership(l leadership) {
	if p.tier != nil && !l.unarchived {
		// Its records may be in the bucket: its manifest exists.
		p.tier.store.RequireExisting()
	}
	p.appendMu.Lock()
	roleChanged, alone := false, false
	if old := p.state.Load(); !old.closed {
		p.repl.Lock()
		roleChanged = old.leader != l.leader || old.leaderEpoch != l.leaderEpoch || p.repl.partitionEpoch < 0
		if p.repl.partitionEpoch >= 0 && !slices.Contains(old.isr, p.nodeID) && slices.Contains(l.isr, p.nodeID) {
			p.joinedISR.Store(true)
		}
		alone = l.leader == p.nodeID && len(l.isr) <= 1 && (roleChanged || len(old.isr) > 1)
		p.applyReplicationLocked(l, roleChanged, time.Now())
		p.state.Store(&partitionState{leader: l.leader, leaderEpoch: l.leaderEpoch,
			replicas: slices.Clone(l.replicas), isr: slices.Clone(l.isr), uncleanEpoch: l.uncleanEpoch, unarchived: l.unarchived})
		p.repl.Unlock()
		p.maybeAdvanceHW()
	}
	p.appendMu.Unlock()
	p.wake()
	if alone {
		p.syncAlone()
	}
	if roleChanged {
		p.roleChanged(l)
	}
}

// syncAlone starts an fsync of everything this broker's log holds, once
// it leads the partition as its only in-sync replica. What the others
// acknowledged by replication is then in this broker's page cache alone:
// the others left the ISR (their machines down, say) and are not elected,
// so a crash of this machine would lose it, even from a replica that kept
// it. From now on acks=all waits for the fsync of each batch
// (inSyncAlone); this covers those answered before.
func (p *partition) syncAlone() {
	p.log.WhenDurable(p.log.LogEndOffset(), func(error) {
		// A failed fsync takes the log offline, which is reported
		// and reopened as any write failure is.
	})
}

func (p *partition) leaderState() (leader, epoch int32) {
	s := p.state.Load()
	return s.leader, s.leaderEpoch
}

// inSyncAlone: this broker leads and is the only in-sync replica, so
// acks=all means "on this broker's stable storage".
func (p *partition) inSyncAlone() bool {
	s := p.state.Load()
	return s.leader == p.nodeID && len(s.isr) <= 1
}

func (p *partition) isLeader() bool {
	l, _ := p.leaderState()
	return l == p.nodeID
}

// checkLeaderEpoch compares a client's view of the leader epoch (-1: no
// view) with the partition's, as Kafka's fetch and list-offsets do.
func (s *partitionState) checkLeaderEpoch(clientEpoch int32) error {
	switch {
	case clientEpoch < 0 || clientEpoch == s.leaderEpoch:
		return nil
	case clientEpoch < s.leaderEpoch:
		return errFencedLeaderEpoch
	default:
		return errUnknownLeaderEpoch
	}
}

// writable returns nil when this broker may append as leader in state s.
func (p *partition) writable(s *partitionState) error {
	switch {
	case s.closed:
		return errPartitionClosed
	case s.leader != p.nodeID:
		return errNotLeader
	case p.supersededAt(s.leaderEpoch) != nil:
		return errNotLeader
	}
	return nil
}

// checkLeader returns nil when this broker leads the partition, its log is
// online, and the client's epoch (if any) matches. It takes no lock.
func (p *partition) checkLeader(clientEpoch int32) error {
	s := p.state.Load()
	if err := p.writable(s); err != nil {
		return err
	}
	if err := p.log.Offline(); err != nil {
		return err
	}
	return s.checkLeaderEpoch(clientEpoch)
}

// checkReplica returns nil when this broker holds an online log of the
// partition, as leader or follower, and the client's epoch (if any)
// matches. It takes no lock.
func (p *partition) checkReplica(clientEpoch int32) error {
	s := p.state.Load()
	if s.closed {
		return errPartitionClosed
	}
	if err := p.log.Offline(); err != nil {
		return err
	}
	return s.checkLeaderEpoch(clientEpoch)
}

// maybeAdvanceHW moves the high watermark to the smallest log end among
// the in-sync replicas (those of an ISR change not yet committed included,
// so that a follower being added already holds what the high watermark
// covers). With this broker as the only replica that is its own log end.
// It holds still while the ISR is below min.insync.replicas
// (underMinISRLocked). Requires appendMu (shared is enough: it only
// grows).
func (p *partition) maybeAdvanceHW() {
	s := p.state.Load()
	if s.leader != p.nodeID {
		return
	}
	p.repl.Lock()
	if p.underMinISRLocked(s) {
		p.repl.Unlock()
		return
	}
	hw := replication.HighWatermark(p.hw.Load(), p.nodeID, p.log.LogEndOffset(), p.maximalISRLocked(s), p.repl.followers)
	p.repl.Unlock()
	for {
		cur := p.hw.Load()
		if hw <= cur {
			return
		}
		if p.hw.CompareAndSwap(cur, hw) {
			p.log.SetHighWatermark(hw) // checkpointed periodically and at close
			if p.tier != nil {
				p.tier.hwPassed(hw)
			}
			return
		}
	}
}

// underMinISRLocked reports whether the ISR, as sure as this broker can be
// of it (an ISR change in flight that drops members counts as landed), has
// fewer members than min.insync.replicas, or than the replicas when there
// are fewer of those: KIP-966's strict min ISR. The high watermark holds
// still then, whatever acks=1 appends: every record below it is on every
// member that left the ISR since, the eligible leader replicas
// (metadata.Partition.Eligible), so the controller may elect one of them
// when the ISR's last member is gone, and the object store, which holds
// only records below a high watermark, never holds one such a leader
// lacks. Requires repl.
func (p *partition) underMinISRLocked(s *partitionState) bool {
	minISR := min(p.cfg.Load().minInsyncReplicas, int32(len(s.replicas)))
	return int32(len(p.minimalISRLocked(s))) < minISR
}

// wake wakes every registered waiter, and calls back the high watermark
// waits it passed (all of them, with errNotLeader, when this broker no
// longer leads). Every change of the high watermark, the log end or the
// leadership is followed by a wake.
func (p *partition) wake() {
	p.mu.Lock()
	for w := range p.mu.waiters {
		w.wake()
		delete(p.mu.waiters, w)
	}
	var ready []*hwWait
	var err error
	var isr int
	if len(p.mu.hwWaits) > 0 {
		ready, isr, err = p.takeHWWaitsLocked()
	}
	p.mu.Unlock()
	if len(ready) == 0 {
		return
	}
	if len(ready) == 1 {
		ready[0].done.hwDone(ready[0].result(err, isr), false)
		return
	}
	// Released together, a connection's answers are gathered: its
	// writer writes them in one system call (respondGathered), in
	// request order, instead of this goroutine writing each alone, a
	// system call and a wake-up of the writer each. A lone answer is
	// written by this goroutine when the writer waits for it alone
	// (writeAnswer): that saves the writer's wake-up.
	slices.SortFunc(ready, func(a, b *hwWait) int { return cmp.Compare(a.offset, b.offset) })
	var per map[*conn]int
	for _, w := range ready {
		if w.owner != nil {
			if per == nil {
				per = make(map[*conn]int)
			}
			per[w.owner]++
		}
	}
	for _, w := range ready {
		w.done.hwDone(w.result(err, isr), w.owner != nil && per[w.owner] > 1)
	}
}

// result is what the wait ends with when it is taken with err and an ISR
// of isr members (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND check as a
// delayed produce completes).
func (w *hwWait) result(err error, isr int) error {
	if err == nil && int32(isr) < w.minISR {
		return errNotEnoughReplicasAfterAppend
	}
	return err
}

// takeHWWaitsLocked removes and returns the high watermark waits that are
// due, with the error to call them with and the size of the ISR they end
// with (hwWait.result). A wait whose min.insync.replicas the ISR is below
// is due at once: the high watermark holds still until the ISR is back
// (underMinISRLocked), and the wait could end only as this one does
// (NOT_ENOUGH_REPLICAS_AFTER_APPEND, retriable), or as a timeout. Requires
// mu.
func (p *partition) takeHWWaitsLocked() (ready []*hwWait, isr int, err error) {
	if !p.isLeader() {
		ready = make([]*hwWait, 0, len(p.mu.hwWaits))
		for w := range p.mu.hwWaits {
			ready = append(ready, w)
		}
		clear(p.mu.hwWaits)
		return ready, 0, errNotLeader
	}
	isr = len(p.state.Load().isr)
	short := int32(isr) < p.mu.hwWaitMinISR
	hw := p.hw.Load()
	if hw < p.mu.hwWaitMin && !short {
		return nil, isr, nil
	}
	next, nextMinISR := int64(math.MaxInt64), int32(0)
	for w := range p.mu.hwWaits {
		if w.offset <= hw || int32(isr) < w.minISR {
			ready = append(ready, w)
			delete(p.mu.hwWaits, w)
		} else {
			next, nextMinISR = min(next, w.offset), max(nextMinISR, w.minISR)
		}
	}
	p.mu.hwWaitMin, p.mu.hwWaitMinISR = next, nextMinISR
	return ready, isr, nil
}

// whenHW calls done once the high watermark reaches offset, or with
// errNotLeader once this broker stops leading first (with minISR, see
// whenHWInto). When either is already so it returns that (reached true)
// and never calls done; otherwise the returned wait may be given to
// cancelHW.
func (p *partition) whenHW(offset int64, minISR int32, done func(error)) (w *hwWait, reached bool, err error) {
	return p.whenHWOn(offset, minISR, nil, func(err error, _ bool) { done(err) })
}

// whenHWOn is whenHW for a wait that answers on connection owner: done
// learns whether others of owner's were released with it (see wake).
func (p *partition) whenHWOn(offset int64, minISR int32, owner *conn, done func(err error, gather bool)) (w *hwWait, reached bool, err error) {
	w = new(hwWait)
	if reached, err = p.whenHWInto(w, offset, minISR, owner, hwFunc(done)); reached {
		return nil, reached, err
	}
	return w, false, nil
}

// whenHWInto is whenHWOn with the wait's storage and its waiter given: an
// acks=all produce's are its slot (waitSlot), so that the wait allocates
// nothing. w is the partition's until its waiter is told or cancelHW
// drops it. With minISR (an acks=all produce's min.insync.replicas; 0
// for other waits) the wait ends with errNotEnoughReplicasAfterAppend
// when the high watermark passes offset while the ISR is smaller, or as
// soon as the ISR is smaller (takeHWWaitsLocked).
func (p *partition) whenHWInto(w *hwWait, offset int64, minISR int32, owner *conn, done hwWaiter) (reached bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	*w = hwWait{offset: offset, minISR: minISR, owner: owner, done: done}
	// A high watermark, ISR or leadership change after these loads is
	// followed by a wake, which takes mu after this registration.
	isr := len(p.state.Load().isr)
	if p.hw.Load() >= offset {
		return true, w.result(nil, isr)
	}
	if !p.isLeader() {
		return true, errNotLeader
	}
	if int32(isr) < minISR {
		return true, w.result(nil, isr)
	}
	if len(p.mu.hwWaits) == 0 {
		p.mu.hwWaitMin, p.mu.hwWaitMinISR = offset, minISR
	}
	p.mu.hwWaitMin, p.mu.hwWaitMinISR = min(p.mu.hwWaitMin, offset), max(p.mu.hwWaitMinISR, minISR)
	p.mu.hwWaits[w] = struct{}{}
	return false, nil
}

// cancelHW drops a wait whose produce was answered otherwise (its
// timeout). It reports whether it did: false when the wait was taken to
// be called back already.
func (p *partition) cancelHW(w *hwWait) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.mu.hwWaits[w]
	delete(p.mu.hwWaits, w)
	return ok
}

// wakeReaders wakes the fetches waiting on the partition, as an append
// does, but not what waits for the high watermark: a remote read they may
// wait for has ended.
func (p *partition) wakeReaders() {
	p.mu.Lock()
	for w := range p.mu.waiters {
		w.wake()
		delete(p.mu.waiters, w)
	}
	p.mu.Unlock()
}

// watch registers w to be woken on the next change. Registration is one
// shot: a woken waiter re-registers before it looks again.
func (p *partition) watch(w *waiter) {
	p.mu.Lock()
	p.mu.waiters[w] = struct{}{}
	p.mu.Unlock()
}

func (p *partition) unwatch(w *waiter) {
	p.mu.Lock()
	delete(p.mu.waiters, w)
	p.mu.Unlock()
}

// appendProduce appends one validated producer batch (sum is what
// validation read from its records) as leader, as appendProduceRun does.
// It returns the append result and the log append time (-1 for
// CreateTime).
func (p *partition) appendProduce(b recordbatch.Batch, sum recordbatch.Summary, acks int16, now time.Time) (localseg.AppendResult, int64, error) {
	part := producePart{batch: b, sum: sum, acks: acks, now: now}
	p.appendProduceRun([]*producePart{&part})
	return part.res, part.appendTime, part.err
}

// appendProduceRun appends validated producer batches of this partition,
// in order (one request's, or several pipelined requests'), setting each
// part's result, log append time (-1 for CreateTime) and error. It checks
// leadership, the ISR size for acks=all, and the records' timestamps;
// stamps the broker's time for LogAppendTime topics, or else makes the
// header's max timestamp the records' (the time index and retention trust
// it); and advances the high watermark. The batches that pass go to the
// log together, which writes those that fit the active segment with one
// system call. The caller wakes the partition's waiters once the
// request's appends are all done (wakeAppended), so that a follower whose
// fetch is parked on several partitions of this leader gets them in one
// answer rather than one round trip each.
func (p *partition) appendProduceRun(parts []*producePart) {
	cfg := p.cfg.Load()
	for _, pt := range parts {
		pt.appendTime = -1
		nowMs := pt.now.UnixMilli()
		if cfg.logAppendTime {
			pt.appendTime = nowMs
			pt.batch.SetLogAppendTime(nowMs)
		} else {
			if err := checkTimestamps(pt.sum, nowMs, cfg); err != nil {
				pt.err = err
				continue
			}
			if pt.batch.MaxTimestamp() != pt.sum.MaxTimestamp {
				pt.batch.SetMaxTimestamp(pt.sum.MaxTimestamp)
			}
		}
	}
	p.appendMu.RLock()
	defer p.appendMu.RUnlock()
	s := p.state.Load()
	// On the stack for a group's run (maxProduceGroup batches at most,
	// unless its requests carry several batches of the partition).
	var okBuf [maxProduceGroup]*producePart
	ok := okBuf[:0]
	for _, pt := range parts {
		if pt.err != nil {
			continue
		}
		switch {
		case p.writable(s) != nil:
			pt.err = p.writable(s)
		case !p.leadershipProven(s, pt.now):
			pt.err = errLeadershipUnproven
		case p.checkTierAppend() != nil:
			pt.err = p.checkTierAppend()
		case pt.acks == -1 && int32(len(s.isr)) < cfg.minInsyncReplicas:
			pt.err = errNotEnoughReplicas
		default:
			ok = append(ok, pt)
		}
	}
	switch len(ok) {
	case 0:
		return
	case 1:
		ok[0].res, ok[0].err = p.log.AppendAsLeader(ok[0].batch, s.leaderEpoch)
	default:
		var bsBuf [maxProduceGroup]localseg.Batch
		var resBuf [maxProduceGroup]localseg.AppendResult
		var errsBuf [maxProduceGroup]error
		bs, res, errs := bsBuf[:], resBuf[:], errsBuf[:]
		if len(ok) > maxProduceGroup {
			bs, res, errs = make([]localseg.Batch, len(ok)), make([]localseg.AppendResult, len(ok)), make([]error, len(ok))
		}
		bs, res, errs = bs[:len(ok)], res[:len(ok)], errs[:len(ok)]
		for i, pt := range ok {
			bs[i] = pt.batch
		}
		p.log.AppendBatchesAsLeader(bs, s.leaderEpoch, res, errs)
		for i, pt := range ok {
			pt.res, pt.err = res[i], errs[i]
		}
	}
	appended := false
	for _, pt := range ok {
		if pt.err != nil {
			pt.res, pt.appendTime = localseg.AppendResult{}, -1
			continue
		}
		appended = true
		if pt.res.Duplicate {
			pt.appendTime = -1
		}
	}
	if appended {
		p.maybeAdvanceHW()
	}
}

// checkTimestamps enforces message.timestamp.before/after.max.ms on a
// CreateTime batch, using its records' smallest and largest timestamps (as
// Kafka checks every record's; records without a timestamp are skipped).
// The comparisons cannot overflow: both bounds are at least 0 and nowMs is
// positive.
func checkTimestamps(sum recordbatch.Summary, nowMs int64, cfg *topicConfig) error {
	if ts := sum.MaxTimestamp; ts > nowMs && ts-nowMs > cfg.timestampAfterMax {
		return errInvalidTimestamp
	}
	if ts := sum.MinTimestamp; ts != recordbatch.NoTimestamp && ts < nowMs-cfg.timestampBeforeMax {
		return errInvalidTimestamp
	}
	return nil
}

// close marks the partition closed and wakes everyone waiting on it. The
// log is closed by the caller.
func (p *partition) close() {
	p.appendMu.Lock()
	p.state.Store(&partitionState{closed: true, leader: -1})
	p.appendMu.Unlock()
	p.wake()
	if p.host != nil {
		// A closed replica is fetched no more.
		p.host.follow(p, -1, -1)
	}
}

// highWatermark is the offset below which consumers may read.
func (p *partition) highWatermark() int64 { return p.hw.Load() }

// highWatermarkBehindEpochStart reports a leader whose high watermark has
// not yet reached the log end at which its epoch began: what the last
// leader counted as committed is not all known to be committed here yet.
func (p *partition) highWatermarkBehindEpochStart() bool {
	if !p.isLeader() {
		return false
	}
	p.repl.Lock()
	defer p.repl.Unlock()
	return p.hw.Load() < p.repl.epochStart
}

// lastStableOffset is the offset below which read_committed consumers
// may read: the high watermark, or the first offset of the oldest open
// transaction when that is lower (Kafka's LSO).
func (p *partition) lastStableOffset() int64 {
	hw := p.hw.Load()
	if first, ok := p.log.FirstUnstableOffset(); ok && first < hw {
		return first
	}
	return hw
}

// appendInternal appends a batch the broker built itself (the group
// coordinator's records) as leader, skipping the producer checks. It is an
// acks=all write: refused while the ISR is smaller than
// min.insync.replicas, as Kafka's coordinator's appends are.
func (p *partition) appendInternal(b recordbatch.Batch) (localseg.AppendResult, error) {
	return p.appendAsCoordinator(func(leaderEpoch int32) (localseg.AppendResult, error) {
		return p.log.AppendAsLeader(b, leaderEpoch)
	})
}

// appendMarker appends a transaction marker as leader, with appendInternal's
// checks (an acks=all write, as Kafka's markers are) and the log's: a
// marker of an older producer epoch, or from a coordinator of an older
// epoch, is refused.
func (p *partition) appendMarker(m localseg.Marker) (localseg.AppendResult, error) {
	return p.appendAsCoordinator(func(leaderEpoch int32) (localseg.AppendResult, error) {
		return p.log.AppendMarker(m, leaderEpoch)
	})
}

// appendAsCoordinator runs a coordinator's append as leader: writable, the
// ISR at least min.insync.replicas, the leadership proven.
func (p *partition) appendAsCoordinator(appendAt func(leaderEpoch int32) (localseg.AppendResult, error)) (localseg.AppendResult, error) {
	p.appendMu.RLock()
	s := p.state.Load()
	if err := p.writable(s); err != nil {
		p.appendMu.RUnlock()
		return localseg.AppendResult{}, err
	}
	if int32(len(s.isr)) < p.cfg.Load().minInsyncReplicas {
		p.appendMu.RUnlock()
		return localseg.AppendResult{}, errNotEnoughReplicas
	}
	if !p.leadershipProven(s, time.Now()) {
		p.appendMu.RUnlock()
		return localseg.AppendResult{}, errLeadershipUnproven
	}
	res, err := appendAt(s.leaderEpoch)
	if err == nil {
		p.maybeAdvanceHW()
	}
	p.appendMu.RUnlock()
	if err != nil {
		return res, err
	}
	p.wake()
	return res, nil
}
