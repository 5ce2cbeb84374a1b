package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

func init() {
	// Kafka 4 dropped Produce v0-v2 (message formats v0/v1); v3 is the
	// first version that carries only v2 record batches.
	handler(kmsg.Produce, 3, 13, handleProduce)
}

// produceWait answers a produce once every partition that must wait has
// its batch durable (acks=all with the leader alone in sync, or
// flush.messages reached) or replicated (acks=all, the high watermark), or
// once the request's timeout passes. The waits are callbacks, from the
// log's group commit or from whatever moves the high watermark: no
// goroutine per request, and no timer either: the connection's list of
// waits expires them (waitDeadlines).
type produceWait struct {
	r    *request
	resp *kmsg.ProduceResponse
	// pc is the call the wait lies in: each callback registered, and
	// the connection's list while the wait is on it, hold a reference
	// to it (nil: a wait of its own, in tests).
	pc *produceCall
	mu sync.Mutex
	// slots are the partitions waited for; left counts those not done.
	slots    []waitSlot
	left     int
	answered bool
	// deadline is when the wait answers REQUEST_TIMED_OUT: the request's
	// timeout from when it was read. idx is its place in the
	// connection's list (-1: not on it), under the list's lock.
	deadline time.Time
	idx      int
}

type waitSlot struct {
	p       *partition
	offset  int64 // needed durable or replicated: the batch's last offset + 1
	durable bool  // wait for the log's fsync rather than the high watermark
	ti, pi  int   // where its answer sits in the response
	done    bool
	hw      *hwWait // the registered high watermark wait (hwBuf), until done
	hwBuf   hwWait
	// w and i are the wait the slot is in and its place there, for
	// Durable and hwDone.
	w *produceWait
	i int
}

// Durable is the log's answer to the slot's durability wait
// (WhenDurableTell): the slot is its own waiter, so the wait allocates
// nothing.
func (sl *waitSlot) Durable(err error) {
	w := sl.w
	w.complete(sl.i, err, true)
	w.pc.unref() // the callback's reference
}

// hwDone is the partition's answer to the slot's high watermark wait
// (whenHWInto), as Durable is the log's.
func (sl *waitSlot) hwDone(err error, gather bool) {
	w := sl.w
	w.complete(sl.i, err, gather)
	w.pc.unref() // the callback's reference
}

// complete records slot i's outcome, answering when it was the last;
// gather: its answer is left to the connection's writer, with others
// released at the same time (respondGathered).
func (w *produceWait) complete(i int, err error, gather bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sl := &w.slots[i]
	if w.answered || sl.done {
		return
	}
	sl.done = true
	if err != nil {
		w.resp.Topics[sl.ti].Partitions[sl.pi].ErrorCode = kafkaError(err)
	}
	if w.left--; w.left == 0 {
		w.answerLocked(gather)
	}
}

// expire answers with REQUEST_TIMED_OUT for the partitions still waiting.
func (w *produceWait) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.answered {
		return
	}
	for i := range w.slots {
		sl := &w.slots[i]
		if !sl.done {
			w.resp.Topics[sl.ti].Partitions[sl.pi].ErrorCode = kerr.RequestTimedOut.Code
			if sl.hw != nil && sl.p.cancelHW(sl.hw) {
				w.pc.unref() // its callback will not come
			}
		}
	}
	w.answerLocked(false)
}

// answerLocked sends the response. gather: the last wait done was the
// log's group commit, which answers a window of requests at once, or a
// move of the high watermark that released others of the connection's
// requests; the connection's writer then writes them together
// (respondGathered).
// Requires mu.
func (w *produceWait) answerLocked(gather bool) {
	w.answered = true
	w.r.conn.removeWait(w)
	w.r.conn.b.addProduceLeaderHints(w.resp)
	if gather {
		w.r.respondGathered(w.resp)
	} else {
		w.r.respond(w.resp)
	}
}

// start begins every wait; the response goes out when they are done, or
// with REQUEST_TIMED_OUT once timeout has passed since the request was
// read.
func (w *produceWait) start(timeout time.Duration) {
	w.mu.Lock()
	w.left = len(w.slots)
	w.idx = -1
	w.deadline = w.r.p.start.Add(timeout)
	// A closed connection ends the waits at once: nothing is answered,
	// and the request's budget is given back. On the list, the wait
	// holds a reference to its call.
	w.pc.ref()
	if !w.r.conn.addWait(w) {
		w.pc.unref()
		w.mu.Unlock()
		w.expire()
		return
	}
	w.mu.Unlock()
	// The caller holds a reference to the call throughout: one taken
	// for a callback and given back here, when it will not come, is
	// never the last.
	for i := range w.slots {
		sl := &w.slots[i]
		sl.w, sl.i = w, i
		if sl.durable {
			w.pc.ref()
			if sl.p.log.WhenDurableTell(sl.offset, sl) {
				w.pc.unref()
				w.complete(i, nil, true)
			}
			continue
		}
		// Replication waits (acks=all with followers in sync).
		w.pc.ref()
		hw := &sl.hwBuf
		reached, err := sl.p.whenHWInto(hw, sl.offset, sl.p.cfg.Load().minInsyncReplicas, w.r.conn, sl)
		if reached {
			w.pc.unref()
			w.complete(i, err, false)
			continue
		}
		w.mu.Lock()
		answered := w.answered
		if !answered {
			w.slots[i].hw = hw
		}
		w.mu.Unlock()
		if answered && sl.p.cancelHW(hw) {
			// Timed out meanwhile: expire did not see this wait.
			w.pc.unref()
		}
	}
}

// handleProduce validates and appends each partition's batch in request
// order (so pipelined requests of an idempotent producer stay in sequence),
// then answers at once (acks=1), or, for acks=all, once every partition's
// batch is durable on the leader (when it is the only in-sync replica) or
// covered by the high watermark (when followers are in sync), or the
// request's timeout passes. A batch that reaches flush.messages is answered
// once it is durable whatever the acks. Pipelined produce requests that
// arrived together are handled as one group (produceGroup): validated one
// by one, then appended together, then answered in order.
func handleProduce(b *Broker, r *request, req *kmsg.ProduceRequest) kmsg.Response {
	pc := new(produceCall)
	pc.validate(b, r, req)
	return pc.handle()
}

// handle appends the call's validated batches and answers as
// handleProduce does. A partition whose log was still opening is looked
// up again first (resolveOpening).
func (pc *produceCall) handle() kmsg.Response {
	pc.resolveOpening()
	appendProduces([]*produceCall{pc})
	return pc.finish()
}

// produceCall is one produce request between its validation and its
// answer.
type produceCall struct {
	b    *Broker
	r    *request
	req  *kmsg.ProduceRequest
	resp *kmsg.ProduceResponse
	// parts are the partitions whose batch passed validation, in
	// request order.
	parts []producePart
	// opening are the partitions this broker leads whose logs were
	// still opening when the request was read: validated once they are
	// open (resolveOpening).
	opening  []openingPart
	anyError bool
	// The storage of a request of one topic and one partition, the
	// common case: the call, its response and its part are then one
	// allocation.
	respBuf  kmsg.ProduceResponse
	topicBuf [1]kmsg.ProduceResponseTopic
	partBuf  [1]kmsg.ProduceResponseTopicPartition
	partsBuf [1]producePart
	// The wait of a request answered later (acks=all, flush.messages),
	// and its partition's slot in the common case: the wait holds the
	// response, which lies in the call already.
	wait     produceWait
	slotsBuf [1]waitSlot
	// A request read by the connection is decoded into its call
	// (decodeProduce), with storage for one topic of one partition, and
	// the call holds its place in the response order too: the request,
	// its pending, the call and its response are one allocation.
	reqBuf      kmsg.ProduceRequest
	reqTopicBuf [1]kmsg.ProduceRequestTopic
	reqPartBuf  [1]kmsg.ProduceRequestTopicPartition
	pend        pending
	// owner is the connection whose call this is (newCall), nil for
	// one made otherwise; refs counts the references to it (see
	// newCall): at zero, nothing refers to it and it is reused.
	owner *conn
	refs  atomic.Int32
}

// newCall returns a produce call for a request the reader read: one
// nothing refers to any more, or a new one. It holds two references, the
// reader's (given back once the reader is done with it: handleFrame, or
// endGroup for a grouped request) and the response order's (given back
// once the answer is written or dropped: pending.sentOrDropped); a wait
// takes more (produceWait). The last to give one back returns the call to
// the connection (unref).
func (c *conn) newCall() *produceCall {
	var pc *produceCall
	select {
	case pc = <-c.calls:
		*pc = produceCall{}
	default:
		pc = new(produceCall)
	}
	pc.owner = c
	pc.refs.Store(2)
	pc.pend.call = pc
	return pc
}

// ref takes a reference to a call of a connection (nothing for one made
// otherwise, handleProduce's).
func (pc *produceCall) ref() {
	if pc != nil && pc.owner != nil {
		pc.refs.Add(1)
	}
}

// unref gives a reference back; the last returns the call to its
// connection for a later request (or, when the connection keeps enough,
// to the garbage collector).
func (pc *produceCall) unref() {
	if pc == nil || pc.owner == nil {
		return
	}
	switch n := pc.refs.Add(-1); {
	case n == 0:
		select {
		case pc.owner.calls <- pc:
		default:
		}
	case n < 0:
		panic("broker: produce call released more often than referenced")
	}
}

// prepareRequest gives the call's request its storage for one topic of
// one partition, for decodeProduce to fill.
func (pc *produceCall) prepareRequest() {
	pc.reqTopicBuf[0].Partitions = pc.reqPartBuf[:0]
	pc.reqBuf.Topics = pc.reqTopicBuf[:0]
}

// producePart is one partition's batch of a produce request: validated,
// then appended.
type producePart struct {
	p      *partition
	batch  recordbatch.Batch
	sum    recordbatch.Summary
	acks   int16
	now    time.Time
	ti, pi int // where its answer sits in the response
	// Set by the append (appendProduceRun).
	res        localseg.AppendResult
	appendTime int64
	err        error
}

// validate checks each partition's batch of req, and builds the response
// with the errors of those refused.
func (pc *produceCall) validate(b *Broker, r *request, req *kmsg.ProduceRequest) {
	pc.b, pc.r, pc.req = b, r, req
	pc.respBuf = kmsg.NewProduceResponse()
	pc.respBuf.Version = req.Version
	pc.resp = &pc.respBuf
	pc.parts = pc.partsBuf[:0]
	if len(req.Topics) == 1 {
		pc.resp.Topics = pc.topicBuf[:0]
	}
	// When the request was read, a moment ago (validation follows the
	// read): the append time and the leadership lease's check.
	now := r.p.start
	if b.tier != nil {
		// A replay's read-ahead yields to hot traffic.
		b.tier.reader.NoteHot(now)
	}
	// A transactional producer's request needs WRITE on its
	// transactional id, asked once, before the topics.
	txnWritable := req.TransactionID == nil || r.authorized(acl.Write, acl.TransactionalID, *req.TransactionID)
	for ti := range req.Topics {
		rt := &req.Topics[ti]
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		if len(req.Topics) == 1 && len(rt.Partitions) == 1 {
			st.Partitions = pc.partBuf[:]
		} else {
			st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		}
		// WRITE on the topic, asked before whether it exists.
		writable := txnWritable && pc.writable(rt)
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			sp := &st.Partitions[pi]
			*sp = kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset = -1
			sp.LogAppendTime = -1
			sp.LogStartOffset = -1
			if !writable {
				err := errTopicAuthorization
				if !txnWritable {
					err = errTransactionalIDAuthorization
				}
				pc.refuse(sp, rt, rp.Partition, err)
				continue
			}
			p, batch, sum, err := validateOne(r.ctx(), b, req, rt, rp, sp)
			if err != nil {
				if po, epoch := b.leaderOpening(req, rt, rp.Partition, err); po != nil {
					pc.opening = append(pc.opening, openingPart{po: po, epoch: epoch, ti: ti, pi: pi})
					continue
				}
				pc.refuse(sp, rt, rp.Partition, err)
				continue
			}
			pc.parts = append(pc.parts, producePart{p: p, batch: batch, sum: sum, acks: req.Acks, now: now, ti: ti, pi: pi})
		}
		pc.resp.Topics = append(pc.resp.Topics, st)
	}
}

// writable reports whether the client may write the topic rt names
// (authorizedTopic, once for all its partitions). A topic id that names
// no topic is left to validateOne, which answers UNKNOWN_TOPIC_ID.
func (pc *produceCall) writable(rt *kmsg.ProduceRequestTopic) bool {
	if pc.req.Version < 13 {
		return pc.r.authorizedTopic(acl.Write, rt.Topic)
	}
	if pc.r.conn.unrestricted() {
		return true // spares the lookup of the id
	}
	tv := pc.b.meta.snapshot().topicsByID[rt.TopicID]
	return tv == nil || pc.r.authorizedTopic(acl.Write, tv.name)
}

// refuse puts err in a partition's answer.
func (pc *produceCall) refuse(sp *kmsg.ProduceResponseTopicPartition, rt *kmsg.ProduceRequestTopic, partition int32, err error) {
	pc.anyError = true
	sp.ErrorCode = kafkaError(err)
	if refusedBatch(err) {
		pc.r.refused("refused a produce batch", "topic", pc.b.topicName(rt.Topic, rt.TopicID), "partition", partition, "err", err)
	}
	if pc.req.Version >= 8 {
		sp.ErrorMessage = errorMessage(err)
	}
}

// appendProduces appends the validated batches of produce requests read
// one after the other: each partition's batches together, in request
// order (appendProduceRun).
func appendProduces(pcs []*produceCall) {
	// On the stack for a group of requests of one partition each.
	var allBuf, runBuf [maxProduceGroup]*producePart
	all := allBuf[:0]
	for _, pc := range pcs {
		for i := range pc.parts {
			all = append(all, &pc.parts[i])
		}
	}
	if len(all) == 1 {
		all[0].p.appendProduceRun(all)
		return
	}
	var doneBuf [maxProduceGroup]bool
	done := doneBuf[:]
	if len(all) > len(done) {
		done = make([]bool, len(all))
	}
	done = done[:len(all)]
	run := runBuf[:0]
	for i, pt := range all {
		if done[i] {
			continue
		}
		run = append(run[:0], pt)
		for j := i + 1; j < len(all); j++ {
			if !done[j] && all[j].p == pt.p {
				done[j] = true
				run = append(run, all[j])
			}
		}
		pt.p.appendProduceRun(run)
	}
}

// finish completes the response from the appends' results: it returns it
// when it is ready (acks=1, or acks=all already satisfied), or nil when it
// is answered later (waits) or not at all (acks=0).
func (pc *produceCall) finish() kmsg.Response {
	b, r, req, resp := pc.b, pc.r, pc.req, pc.resp
	waits := pc.slotsBuf[:0]
	var appended []*partition
	for i := range pc.parts {
		pt := &pc.parts[i]
		rt := &req.Topics[pt.ti]
		sp := &resp.Topics[pt.ti].Partitions[pt.pi]
		if pt.err != nil {
			pc.refuse(sp, rt, sp.Partition, pt.err)
			continue
		}
		p, res, batch := pt.p, pt.res, pt.batch
		b.logSpace.wrote(int64(len(batch)))
		p.counters.producedBytes.Add(float64(len(batch)))
		p.counters.producedRecords.Add(float64(batch.RecordCount()))
		sp.BaseOffset = res.FirstOffset
		sp.LogAppendTime = pt.appendTime
		sp.LogStartOffset = p.logStartOffset()
		if !slices.Contains(appended, p) {
			appended = append(appended, p)
		}
		switch {
		case req.Acks == -1 && p.inSyncAlone(), req.Acks != 0 && res.FlushDue:
			waits = append(waits, waitSlot{p: p, offset: res.LastOffset + 1, durable: true, ti: pt.ti, pi: pt.pi})
		case req.Acks == -1 && p.highWatermark() <= res.LastOffset:
			waits = append(waits, waitSlot{p: p, offset: res.LastOffset + 1, ti: pt.ti, pi: pt.pi})
		}
	}
	wakeAppended(appended)
	if req.Acks == 0 {
		// No response: an error can only be signalled by closing the
		// connection, which makes the producer refresh its metadata.
		if pc.anyError {
			r.closeConnection(resp)
		} else {
			r.respondNothing()
		}
		return nil
	}
	if len(waits) == 0 {
		b.addProduceLeaderHints(resp)
		return resp
	}
	w := &pc.wait
	w.r, w.resp, w.slots, w.pc = r, resp, waits, pc
	w.start(time.Duration(req.TimeoutMillis) * time.Millisecond)
	return nil
}

// Pipelined produce requests that arrive together (read with one read, and
// handled where they lie in the reader's chunk) form a group: each is
// validated as it is read, then, once the next frame is not a produce
// request read already, all are appended, each partition's batches
// together (the log writes a run of them with one system call), and
// answered in order. Up to maxProduceGroup requests form a group.
const maxProduceGroup = 32

// produceGroup is a connection's open group (owned by its reader):
// validated requests, and what gives each one's frame back.
type produceGroup struct {
	calls   []*produceCall
	release []frameHold
}

func (g *produceGroup) add(pc *produceCall, release frameHold) {
	g.calls = append(g.calls, pc)
	g.release = append(g.release, release)
}

// groupableProduce reports whether a frame that begins with head (api key
// and version) is a produce request of a version the broker serves.
func groupableProduce(head []byte) bool {
	if len(head) < 4 || int16(binary.BigEndian.Uint16(head)) != int16(kmsg.Produce) {
		return false
	}
	v, a := int16(binary.BigEndian.Uint16(head[2:])), apis[int16(kmsg.Produce)]
	return v >= a.min && v <= a.max
}

// groupProduce reports whether frame, read in place, joins a group: it is
// a produce request, and a group is open or the next frame, read already,
// is one too. A full group is ended first.
func (c *conn) groupProduce(frame []byte, fr *frameReader) bool {
	if !groupableProduce(frame) {
		return false
	}
	if len(c.group.calls) >= maxProduceGroup {
		c.endGroup()
	}
	return len(c.group.calls) > 0 || groupableProduce(fr.next())
}

// endGroup appends the open group's batches, answers its requests, gives
// their frames back and places them in the response order: held for the
// reader's next write when answered with nothing queued before them, or
// else queued for the writer.
func (c *conn) endGroup() {
	g := &c.group
	if len(g.calls) == 0 {
		return
	}
	// From the first request that must wait for a partition's manifest
	// on, the group's requests are parked, in order (park).
	k := len(g.calls)
	if c.parking() {
		k = 0
	} else {
		for i, pc := range g.calls {
			if pc.loading() {
				k = i
				break
			}
		}
	}
	appendProduces(g.calls[:k])
	for i, pc := range g.calls {
		if i >= k {
			c.park(pc)
		} else if resp := pc.finish(); resp != nil {
			pc.r.respond(resp)
		}
		c.releaseFrame(g.release[i])
		p := pc.r.p
		if c.queued.Load() == 0 {
			c.sendOrQueue(p)
		} else {
			// Behind a request the writer has: it follows. The
			// writer takes every queued request until the queue
			// is closed.
			c.queued.Add(1)
			c.queue <- p
		}
		pc.unref() // the reader is done with it
	}
	clear(g.calls)
	clear(g.release)
	g.calls, g.release = g.calls[:0], g.release[:0]
}

// wakeAppended wakes the waiters of the partitions a produce request
// appended to, once all its appends are done: a follower's fetch parked on
// several of them then carries all their batches in one answer.
func wakeAppended(ps []*partition) {
	for _, p := range ps {
		p.wake()
	}
}

// validateOne checks one partition's records, filling sp's log start
// offset. It returns the partition, the batch and what validation read
// from its records.
func validateOne(ctx context.Context, b *Broker, req *kmsg.ProduceRequest, rt *kmsg.ProduceRequestTopic, rp *kmsg.ProduceRequestTopicPartition, sp *kmsg.ProduceResponseTopicPartition) (*partition, recordbatch.Batch, recordbatch.Summary, error) {
	var none recordbatch.Summary
	if req.Acks != 0 && req.Acks != 1 && req.Acks != -1 {
		return nil, nil, none, errInvalidRequiredAcks
	}
	var p *partition
	var err error
	if req.Version >= 13 {
		p, err = b.partitionByID(rt.TopicID, rp.Partition)
		if err == errUnknownTopic {
			err = errUnknownTopicID
		}
	} else {
		p, err = b.partitionByName(rt.Topic, rp.Partition)
	}
	if err != nil {
		return nil, nil, none, err
	}
	if p.internal {
		// Kafka's answer to a client writing an internal topic: only
		// the coordinators write them, and a forged record there would
		// become a group's committed offset.
		return nil, nil, none, fmt.Errorf("%w: %s is an internal topic; clients may not produce to it", errInvalidTopic, p.topic)
	}
	sp.LogStartOffset = p.logStartOffset()
	cfg := p.cfg.Load()
	if len(rp.Records) > int(cfg.maxMessageBytes) {
		return nil, nil, none, fmt.Errorf("%w: batch of %d bytes exceeds max.message.bytes %d", errMessageTooLarge, len(rp.Records), cfg.maxMessageBytes)
	}
	batch, rest, err := recordbatch.Next(rp.Records)
	if err != nil {
		return nil, nil, none, err
	}
	if batch == nil || len(rest) != 0 {
		return nil, nil, none, fmt.Errorf("%w: a produce request must carry exactly one record batch per partition", recordbatch.ErrInvalidRecord)
	}
	switch {
	case batch.Control():
		// Markers are the transaction coordinator's (WriteTxnMarkers).
		return nil, nil, none, fmt.Errorf("%w: clients may not write control batches", recordbatch.ErrInvalidRecord)
	case batch.Transactional() && req.TransactionID == nil:
		// Kafka asks WRITE on the request's transactional id for a
		// transactional batch: without one it is refused.
		return nil, nil, none, fmt.Errorf("%w: a transactional batch in a produce request without a transactional id", errTransactionalIDAuthorization)
	case batch.Transactional() && batch.ProducerID() < 0:
		return nil, nil, none, fmt.Errorf("%w: a transactional batch without a producer id", recordbatch.ErrInvalidRecord)
	}
	if pid := batch.ProducerID(); pid >= 0 && !b.producerIDs.known(pid) {
		return nil, nil, none, fmt.Errorf("%w: %d", errUnknownProducerID, pid)
	}
	// Every record is looked at, compressed or not (as Kafka's
	// LogValidator does): the header's record count and timestamps are
	// only claims, and a compressed body may be garbage under a valid CRC.
	// A compacted topic refuses records without a key (INVALID_RECORD),
	// as Kafka's LogValidator does: the cleaner keeps the last record of
	// each key, and has nothing to keep a keyless one by.
	opts := recordbatch.ValidateOptions{
		MaxDecompressed: recordbatch.MaxDecompressedFor(int(cfg.maxMessageBytes)),
		Budget:          b.scanBudget,
		RequireKeys:     cfg.compact,
	}
	sum, err := recordbatch.ValidateProduce(ctx, batch, opts)
	if err != nil {
		b.metrics.refusedBatches.WithLabelValues(refusalReason(err)).Inc()
		return nil, nil, none, err
	}
	if cfg.recompress && batch.Codec() != cfg.compression {
		if batch, err = recompress(ctx, b, batch, cfg, opts); err != nil {
			return nil, nil, none, err
		}
	}
	if err := b.logSpace.check(int64(len(batch))); err != nil {
		return nil, nil, none, err
	}
	return p, batch, sum, nil
}

// recompress rewrites a validated batch with the topic's compression.type
// codec (Kafka's LogValidator does the same). The new batch is the
// producer's in every field but its codec, length and CRC: its sequence
// numbers, timestamps and records are the producer's, so that idempotence,
// the time index and consumers see what it sent. It is refused when it
// comes out larger than max.message.bytes, as Kafka refuses it. The scan
// budget bounds the memory of the recompressions running at once; the new
// batch, at most max.message.bytes, then lives with the request as the
// frame's did.
func recompress(ctx context.Context, b *Broker, batch recordbatch.Batch, cfg *topicConfig, opts recordbatch.ValidateOptions) (recordbatch.Batch, error) {
	out, charged, err := recordbatch.Recompress(ctx, batch, cfg.compression, cfg.compressionLevel, opts)
	opts.Budget.Release(charged)
	if err != nil {
		b.metrics.refusedBatches.WithLabelValues(refusalReason(err)).Inc()
		return nil, err
	}
	if len(out) > int(cfg.maxMessageBytes) {
		return nil, fmt.Errorf("%w: batch of %d bytes once compressed with %s (compression.type) exceeds max.message.bytes %d",
			errMessageTooLarge, len(out), cfg.compression, cfg.maxMessageBytes)
	}
	b.metrics.recompressedBytes.WithLabelValues("received").Add(float64(len(batch)))
	b.metrics.recompressedBytes.WithLabelValues("stored").Add(float64(len(out)))
	return out, nil
}

// topicName names a topic a request gives by name or, from v13, by id.
func (b *Broker) topicName(name string, id [16]byte) string {
	if name != "" {
		return name
	}
	if tv := b.meta.snapshot().topicsByID[id]; tv != nil {
		return tv.name
	}
	return topicIDString(id)
}

// refusedBatch reports the produce errors that refuse what the client sent
// (corrupt or invalid batches, writes to internal topics), as opposed to
// the cluster's state (not the leader, no space): those are logged.
func refusedBatch(err error) bool {
	return errors.Is(err, recordbatch.ErrCorrupt) || errors.Is(err, recordbatch.ErrInvalidRecord) ||
		errors.Is(err, recordbatch.ErrDecompressTooLarge) || errors.Is(err, errInvalidTopic) ||
		errors.Is(err, errUnknownProducerID)
}

// refusalReason labels a validation error for the refused-batches metric.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, recordbatch.ErrDecompressTooLarge):
		return "too_large"
	case errors.Is(err, recordbatch.ErrNoKey):
		return "no_key" // a record without a key on a compacted topic
	case errors.Is(err, recordbatch.ErrInvalidRecord):
		return "invalid_record"
	case errors.Is(err, recordbatch.ErrCorrupt):
		return "corrupt"
	}
	return "other" // the request ended while waiting for the scan budget
}
