package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/tiering"
)

func init() {
	// Kafka 4 dropped Fetch v0-v3 (message formats v0/v1).
	handler(kmsg.Fetch, 4, 18, handleFetch)
}

// fetchOp is one fetch request being answered: the partitions resolved
// once, then read as often as the long poll needs.
type fetchOp struct {
	b        *Broker
	req      *kmsg.FetchRequest
	plan     *fetchPlan
	follower bool
	// replicaID is the fetching follower's broker id (-1: a client).
	replicaID int32
	// servesReads: the follower may serve consumers (KIP-392), so it
	// is answered as soon as the high watermark it was sent moves.
	servesReads bool
	targets     []fetchTarget
	// targetBuf holds the targets of a fetch of up to 4 partitions,
	// sparing their allocations (one per doubling of targets).
	targetBuf [4]fetchTarget
	// planBuf is the plan, in the same allocation.
	planBuf fetchPlan
	// remoteUntil is when the fetch stops waiting for remote reads
	// (RemoteFetchMaxWait from its first one; zero before it).
	remoteUntil time.Time
	// conn and clientID: whose consumer_byte_rate the answer counts
	// against (chargeFetch).
	conn     *conn
	clientID string
	// denied counts the targets the client may not read: as Kafka, a
	// fetch answers them with its other partitions, whose long poll
	// they do not end, or at once when it has no other.
	denied int
}

type fetchTarget struct {
	sp  *sessionPartition
	p   *partition // nil when err is set
	err error
}

// handleFetch answers at once when there is at least MinBytes to send, an
// error to report (but not a partition the client may not read, while it
// may read others: fetchOp.denied), or no wait was asked for; otherwise it
// parks until an append wakes one of the partitions or MaxWaitMs passes.
func handleFetch(b *Broker, r *request, req *kmsg.FetchRequest) kmsg.Response {
	replicaID := fetchReplicaID(req)
	op := &fetchOp{b: b, req: req, follower: replicaID >= 0, replicaID: replicaID, conn: r.conn, clientID: r.header.clientID}
	plan, code := b.fetchSessions.planFetchInto(req, r.conn.fetchClient(r.header.clientID), &op.planBuf)
	if code != 0 {
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.ErrorCode = code
		return resp
	}
	op.plan = plan
	op.servesReads = op.follower && b.servesReads(replicaID)
	op.targets = op.targetBuf[:0]
	if len(plan.parts) > len(op.targetBuf) {
		op.targets = make([]fetchTarget, 0, len(plan.parts))
	}
	// A replica id is honoured only on a connection that authenticated
	// as that broker with the cluster secret; anyone else asking to read
	// past the high watermark as a follower is refused (CVE-2018-1288).
	var refuse error
	if op.follower && r.conn.peer.Load() != replicaID+1 {
		refuse = errReplicaNotAuthorized
		r.refused("refused a follower fetch from a connection not authenticated as that broker", "replica_id", replicaID)
	}
	readable := newACLVerdicts(r, acl.Read, acl.Topic)
	for _, sp := range plan.parts {
		t := fetchTarget{sp: sp}
		if sp.key.topic == "" {
			t.p, t.err = b.partitionByID(sp.key.id, sp.key.index)
			if t.err == errUnknownTopic {
				t.err = errUnknownTopicID
			}
		} else {
			t.p, t.err = b.partitionByName(sp.key.topic, sp.key.index)
		}
		switch {
		case refuse != nil:
			t.p, t.err = nil, refuse
		case !op.follower && !readable.all:
			// READ on the topic, for every partition the fetch or its
			// session names (an id that names no topic is answered
			// UNKNOWN_TOPIC_ID).
			if topic, ok := fetchTopicName(b, t.p, sp.key); ok && !readable.allowed(topic) {
				t.p, t.err = nil, errTopicAuthorization
				op.denied++
			}
		}
		op.targets = append(op.targets, t)
	}
	// Most fetches of hot data are answered by the first read, which
	// needs no waiter: it is made and registered only for a fetch that
	// will wait, before a second read, so that an append between the
	// two reads is not missed. (Registered before every first read, the
	// waiter cost two allocations and a lock of each partition twice.)
	if raw, ok := op.read(false); ok {
		r.respondRaw(raw)
		return nil
	}
	w := newWaiter()
	op.watch(w)
	if raw, ok := op.read(false); ok {
		op.unwatch(w)
		r.respondRaw(raw)
		return nil
	}
	go func() {
		timer := time.NewTimer(time.Duration(req.MaxWaitMillis) * time.Millisecond)
		defer timer.Stop()
		defer op.unwatch(w)
		for {
			select {
			case <-w.ch:
				op.watch(w)
				if raw, ok := op.read(false); ok {
					r.respondRaw(raw)
					return
				}
			case <-timer.C:
				raw, _ := op.read(true)
				r.respondRaw(raw)
				return
			case <-r.ctx().Done():
				r.respond(req.ResponseKind())
				return
			}
		}
	}()
	return nil
}

// fetchTopicName is the name of the topic of a partition p (nil when it was
// not found) a fetch knows by key, and false for an id that names no
// topic.
func fetchTopicName(b *Broker, p *partition, key sessionKey) (string, bool) {
	switch {
	case p != nil:
		return p.topic, true
	case key.topic != "":
		return key.topic, true
	}
	tv := b.meta.snapshot().topicsByID[key.id]
	if tv == nil {
		return "", false
	}
	return tv.name, true
}

// fetchReplicaID is the broker id of a follower fetching, or -1 for clients.
func fetchReplicaID(req *kmsg.FetchRequest) int32 {
	if req.Version >= 15 {
		return req.ReplicaState.ID
	}
	return req.ReplicaID
}

func (op *fetchOp) watch(w *waiter) {
	for _, t := range op.targets {
		if t.p != nil {
			t.p.watch(w)
		}
	}
}

func (op *fetchOp) unwatch(w *waiter) {
	for _, t := range op.targets {
		if t.p != nil {
			t.p.unwatch(w)
		}
	}
}

// read reads every partition once. It reports whether the result should be
// sent now: at least MinBytes, an error, no wait asked, or final (the wait
// is over). When it should not, the ranges are released; when it should,
// the session (if any) records what was sent and moves to its next epoch.
func (op *fetchOp) read(final bool) (*rawResponse, bool) {
	req := op.req
	// The parts as read, then (second half) grouped by topic: one
	// allocation where a slice per topic grown by append cost one per
	// doubling.
	n := len(op.targets)
	partsBuf := make([]fetchPart, 2*n)
	parts := partsBuf[:n:n]
	var total int64
	anyError := false
	var errCode int16
	// KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER answers.
	var view *metaView
	var leaders []int32
	remaining := int64(req.MaxBytes)
	for i, t := range op.targets {
		fp := &parts[i]
		fp.FetchResponseTopicPartition = kmsg.NewFetchResponseTopicPartition()
		fp.Partition = t.sp.key.index
		fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = -1, -1, -1
		err := t.err
		if err == nil {
			err = op.readPartition(t.p, t.sp, fp, remaining, total == 0)
		}
		if err != nil {
			if err != errTopicAuthorization || op.denied == n {
				anyError = true
			}
			fp.ErrorCode = kafkaError(err)
			if errCode == 0 {
				errCode = fp.ErrorCode
			}
			if l := op.b.fetchLeaderHint(&view, t.p, t.sp.key.topic, t.sp.key.id, t.sp.key.index, fp); l >= 0 {
				leaders = append(leaders, l)
			}
			continue
		}
		if fp.DivergingEpoch.Epoch >= 0 || fp.DivergingEpoch.EndOffset >= 0 || fp.PreferredReadReplica >= 0 {
			// A follower told to truncate, or a consumer told to read
			// elsewhere, is answered at once.
			anyError = true
		}
		if op.servesReads && t.p.followerNeedsHW(op.replicaID, fp.HighWatermark) {
			anyError = true
		}
		if op.follower && t.p.followerNeedsLogStart(op.replicaID, fp.LogStartOffset, t.sp.logStartOffset, t.sp.fetchOffset) {
			// A DeleteRecords waits for the follower's log start.
			anyError = true
		}
		total += fp.size()
		remaining -= fp.size()
	}
	if !final && !anyError && req.MaxWaitMillis > 0 && total < int64(req.MinBytes) {
		for i := range parts {
			parts[i].release()
		}
		return nil, false
	}
	if op.follower {
		for i, t := range op.targets {
			if t.p != nil && parts[i].ErrorCode == 0 {
				t.p.sentHW(op.replicaID, parts[i].HighWatermark, parts[i].LogStartOffset)
			}
		}
	} else if d := op.conn.chargeFetch(op.clientID, total); d > 0 {
		// Past the client's consumer_byte_rate: answered at once,
		// empty, with the throttle time, as Kafka answers; the
		// session's partitions stay as last sent. A session this
		// fetch created is named all the same (Kafka creates none for
		// a throttled fetch; here it exists already): a consumer
		// throttled again and again would otherwise make one a fetch.
		for i := range parts {
			parts[i].release()
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.ThrottleMillis = int32(min(d.Milliseconds(), 1<<31-1))
		resp.SessionID = op.plan.sessionID()
		return encodeFetch(req.Version, resp, nil), true
	}
	// Group by topic in order of first appearance; an incremental
	// response carries only the partitions with something new.
	var topicsBuf [4]fetchTopic
	topics := topicsBuf[:0]
	at := map[sessionKey]int{}
	// topicOf[i] is the index in topics of target i's topic, -1 when
	// its part is not included.
	topicOf := make([]int32, n)
	op.plan.record(func() {
		for i, t := range op.targets {
			if !op.plan.include(t.sp, &parts[i]) {
				topicOf[i] = -1
			}
		}
	})
	for i, t := range op.targets {
		fp := &parts[i]
		if topicOf[i] < 0 {
			fp.release()
			continue
		}
		if t.p != nil && op.follower {
			if n := fp.size(); n > 0 {
				t.p.counters.replicationOut.Add(float64(n))
			}
		} else if t.p != nil {
			if fp.remote.Bufs != nil {
				t.p.counters.fetchedRemote.Add(float64(fp.size()))
			} else if n := fp.size(); n > 0 {
				t.p.counters.fetchedLocal.Add(float64(n))
			}
		}
		tk := sessionKey{topic: t.sp.key.topic, id: t.sp.key.id}
		ti, ok := at[tk]
		if !ok {
			ti = len(topics)
			at[tk] = ti
			ft := fetchTopic{name: t.sp.key.topic, id: t.sp.key.id}
			if t.p != nil {
				ft.name, ft.id = t.p.topic, t.p.topicID
			}
			topics = append(topics, ft)
		}
		topicOf[i] = int32(ti)
		topics[ti].n++
	}
	grouped := partsBuf[n:]
	for ti := range topics {
		k := topics[ti].n
		topics[ti].parts, grouped = grouped[:0:k], grouped[k:]
	}
	for i, ti := range topicOf {
		if ti >= 0 {
			topics[ti].parts = append(topics[ti].parts, parts[i])
		}
	}
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	resp.SessionID = op.plan.sessionID()
	if req.Version >= 16 && len(leaders) > 0 {
		resp.Brokers = op.b.fetchNodeEndpoints(view, leaders)
	}
	raw := encodeFetch(req.Version, resp, topics)
	raw.errCode = errCode
	return raw, true
}

// readPartition reads one partition into fp.
func (op *fetchOp) readPartition(p *partition, sp *sessionPartition, fp *fetchPart, remaining int64, first bool) error {
	if op.follower {
		if p.isLeader() && p.checkTierReady() != nil && sp.fetchOffset < p.log.LogStartOffset() {
			// Below the log start of a leader that appends before it
			// has read its manifest: that start is what its local log
			// last recorded, and the out-of-range answer would send
			// the follower there. Where the follower starts over is
			// the bucket's to say. (Between that start and the local
			// log's, the follower is sent to the bucket below.)
			return errTierLoading
		}
		// The follower's position is recorded (it may move the high
		// watermark) before the high watermark it is sent is read.
		ans, err := p.followerFetch(op.replicaID, sp.currentLeaderEpoch, sp.fetchOffset, sp.logStartOffset, sp.lastFetchedEpoch, time.Now())
		if errors.Is(err, localseg.ErrOffsetOutOfRange) {
			// The answer says where the log starts, as a consumer's
			// does: a follower whose log ends below it starts over
			// from there, and without it took the answer for a fetch
			// past the leader's end and asked again forever.
			fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = p.highWatermark(), p.lastStableOffset(), p.logStartOffset()
		}
		if err != nil {
			return err
		}
		if ans.Diverging {
			fp.DivergingEpoch.Epoch, fp.DivergingEpoch.EndOffset = ans.DivergingEpoch, ans.DivergingEndOffset
			fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = p.highWatermark(), p.lastStableOffset(), p.logStartOffset()
			return nil
		}
	} else {
		// Consumers of Fetch v11+ may read from a follower (KIP-392);
		// the leader points one that names its rack at a replica there,
		// sending no records.
		v11 := op.req.Version >= 11
		if err := p.checkClientRead(sp.currentLeaderEpoch, v11); err != nil {
			return err
		}
		if v11 {
			if id := op.b.preferredReadReplica(p, op.req.Rack, sp.fetchOffset); id >= 0 {
				fp.PreferredReadReplica = id
				fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = p.highWatermark(), p.lastStableOffset(), p.logStartOffset()
				return nil
			}
		}
	}
	tierErr := p.checkTierReady()
	if tierErr != nil && ((p.isLeader() && (!p.tier.early.Load() || sp.fetchOffset < p.log.LocalLogStartOffset())) || sp.fetchOffset < p.log.LogStartOffset()) {
		// Only a leader reads its manifest and becomes ready; a
		// follower serving a consumer (KIP-392) needs none for the
		// records on its disk, and refused them all: the consumer went
		// back to the leader, which pointed it here again. Nor does a
		// leader that appends before it has read its manifest
		// (appendsBeforeManifest), for its local log: its followers
		// copy it, or acks=all would wait for the store. Below its
		// local log such a leader needs the manifest: read without it,
		// the bucket's records were "out of range", and a consumer
		// replaying the partition went back to its reset offset.
		return tierErr
	}
	log := p.log
	hw := p.highWatermark()
	fp.HighWatermark = hw
	fp.LastStableOffset = p.lastStableOffset()
	fp.LogStartOffset = p.logStartOffset()
	upper := hw
	switch {
	case op.follower:
		upper = log.LogEndOffset()
	case op.req.IsolationLevel == 1:
		upper = fp.LastStableOffset
	}
	if sp.fetchOffset < fp.LogStartOffset || sp.fetchOffset > log.LogEndOffset() {
		if !op.follower && sp.fetchOffset > log.LogEndOffset() {
			switch {
			case p.leadershipLapsed():
				// A leader that cannot prove its leadership may have
				// been replaced by one whose log has grown past its
				// own: a consumer that read there (one sending no
				// leader epoch) is told to look for the leader, not to
				// reset its offset.
				return errLeadershipUnproven
			case sp.currentLeaderEpoch < 0 && !p.isLeader():
				// A follower serving a consumer that sends no leader
				// epoch (KIP-392 reads at Fetch v11 without KIP-320,
				// or stale metadata) cannot tell an offset it has not
				// copied yet from one past the leader's end: as Kafka
				// does, it answers with no records and the consumer
				// asks again, rather than reset. One sending an epoch
				// is told OFFSET_OUT_OF_RANGE and asks the leader.
				return nil
			}
		}
		return localseg.ErrOffsetOutOfRange
	}
	if tierErr != nil && op.follower {
		// Until the manifest is read, the whole log's start is
		// unknown: the local one may be above it, and a follower moves
		// its own log start to the one it is told (followerAppend).
		fp.LogStartOffset = -1
	}
	if sp.fetchOffset >= upper {
		return nil
	}
	max := int64(sp.maxBytes)
	if remaining < max {
		max = remaining
	}
	if max <= 0 && !first {
		return nil
	}
	if max < 0 {
		max = 0
	}
	if op.follower && p.tier != nil && sp.fetchOffset < log.LocalLogStartOffset() {
		// A follower does not copy the history the bucket holds: it
		// rebuilds its state from the bucket and fetches from there
		// (KIP-405).
		return errOffsetMovedToTiered
	}
	if p.tier != nil && sp.fetchOffset < log.LocalLogStartOffset() {
		// Below the local log: the object store has it.
		if op.remoteUntil.IsZero() {
			op.remoteUntil = time.Now().Add(op.b.tier.cfg.RemoteFetchMaxWait)
		}
		data, err := p.tier.remoteRead(p, sp.fetchOffset, int(max), upper, first, op.remoteUntil)
		if errors.Is(err, errRemotePending) {
			// Answered without records: the read goes on, and wakes
			// this fetch if it waits (a long poll) when it ends.
			return nil
		}
		if err != nil || data.Bufs != nil {
			fp.remote = data
			if err == nil && op.req.IsolationLevel == 1 && data.Len() > 0 {
				ctx, cancel := context.WithDeadline(op.b.ctx, op.remoteUntil)
				txns, err := p.tier.remoteAbortedTxns(ctx, p, sp.fetchOffset, batchesEnd(&dataReader{bufs: data.Bufs}, 0, data.Len()))
				cancel()
				if err != nil {
					fp.remote.Release()
					fp.remote = tiering.Data{}
					return err
				}
				fp.AbortedTransactions = abortedTransactions(txns)
			}
			return err
		}
		// The bucket had nothing to return: the records at the offset
		// did not fit (another partition took the response's bytes),
		// or the manifest this broker holds ends at or below it. The
		// local log cannot answer for an offset below its start: a
		// read there returned the records from its start (a consumer
		// skipped those between) or OFFSET_OUT_OF_RANGE (it went back
		// to its reset offset, the log start for a replay). No records:
		// the consumer asks again.
		return nil
	}
	// A throttled replica out of the ISR copies at most
	// leader.replication.throttled.rate: while the budget is spent it is
	// sent nothing, as Kafka leaves throttled partitions out
	// (replication_quota.go). A read is charged even when a long poll
	// drops it unsent, which only slows the copy.
	var throttled, hold bool
	if op.follower {
		throttled, hold = op.b.quotas.leaderThrottled(op.b.meta.snapshot(), p.topic, p.index, op.replicaID)
	}
	if hold && !op.b.quotas.leader.Allow(time.Now()) {
		return nil
	}
	rng, err := log.Read(sp.fetchOffset, int(max), upper, first)
	if err != nil {
		return err
	}
	if op.b.tier != nil && rng.Len() > 0 {
		// Records from the local log are hot traffic, as a produce
		// is: a replay's read-ahead and cold copies yield to them. A
		// long poll at the end reads nothing and yields nothing.
		op.b.tier.reader.NoteHot(time.Now())
	}
	if throttled {
		op.b.quotas.leader.Charge(time.Now(), rng.Len())
	}
	fp.rng = rng
	if !op.follower && op.req.IsolationLevel == 1 && rng.Len() > 0 {
		txns := log.AbortedTxns(sp.fetchOffset, upper)
		if len(txns) > abortedUnbounded {
			// Many aborted transactions lie between the fetch and the
			// last stable offset: only those that began in the records
			// returned go with them, as Kafka bounds its list by the
			// end of the fetched data.
			end := batchesEnd(rng.File(), rng.Offset(), rng.Len())
			txns = slices.DeleteFunc(txns, func(t localseg.AbortedTxn) bool { return t.FirstOffset >= end })
		}
		fp.AbortedTransactions = abortedTransactions(txns)
	}
	return nil
}

// abortedUnbounded is how many aborted transactions a read_committed
// fetch answers without looking at where its records end (the headers of
// its batches, read from the file): a few more than the consumer needs cost
// less than the reads.
const abortedUnbounded = 32

// batchesEnd returns the offset after the last batch whose header lies
// whole within [off, off+n) of r (that batch may be cut short), or
// math.MaxInt64 (no bound) when no header does. A read_committed fetch
// needs the aborted transactions that began before it.
func batchesEnd(r io.ReaderAt, off, n int64) int64 {
	var hdr [recordbatch.HeaderSize]byte
	end := int64(-1)
	for pos := off; pos+int64(len(hdr)) <= off+n; {
		if _, err := r.ReadAt(hdr[:], pos); err != nil {
			break
		}
		b := recordbatch.Batch(hdr[:])
		end = b.NextOffset()
		length := int64(binary.BigEndian.Uint32(hdr[8:12]))
		if length <= 0 {
			break
		}
		pos += 12 + length
	}
	if end < 0 {
		return math.MaxInt64
	}
	return end
}

// dataReader reads remote record data (slices of chunks) as one run of
// bytes.
type dataReader struct{ bufs [][]byte }

func (d *dataReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for _, b := range d.bufs {
		if off >= int64(len(b)) {
			off -= int64(len(b))
			continue
		}
		c := copy(p[n:], b[off:])
		n += c
		off = 0
		if n == len(p) {
			return n, nil
		}
	}
	return n, io.EOF
}

// abortedTransactions lists aborted transactions as a read_committed
// fetch answers them: the consumer drops their batches. The list is
// never nil: read_committed answers carry one, empty or not, as Kafka's.
func abortedTransactions(txns []localseg.AbortedTxn) []kmsg.FetchResponseTopicPartitionAbortedTransaction {
	out := make([]kmsg.FetchResponseTopicPartitionAbortedTransaction, len(txns))
	for i, t := range txns {
		out[i] = kmsg.FetchResponseTopicPartitionAbortedTransaction{ProducerID: t.ProducerID, FirstOffset: t.FirstOffset}
	}
	return out
}
