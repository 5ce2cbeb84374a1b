package broker

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A produce that reaches a partition's leader in a transient state is not
// refused at once when the leader will take it in a moment:
//
//   - a tiered partition whose new leader term has not read its manifest
//     yet (tierGate): it takes produce once the manifest is read, one GET
//     away;
//   - a partition the metadata names this broker the leader of, whose log
//     is still opening (a new topic, a replica that just became leader
//     while its log opened): it takes produce once the log is open and
//     installed (leaderOpening).
//
// A refusal costs an acks=0 producer its records (Kafka's answer to an
// acks=0 error is a closed connection). The request is parked instead: it
// waits, off the connection's reader and holding no lock, until the
// partitions it writes are ready or its wait ends (the request's timeout,
// at most maxTierReadyWait), and is then appended and answered as any
// other; a partition still loading is answered NOT_LEADER_OR_FOLLOWER,
// which every client retries. A partition whose log was opening is
// validated once open, against its log and configs, and only if this
// broker still leads it at the leader epoch the metadata named when the
// request was read; otherwise it is answered NOT_LEADER_OR_FOLLOWER too.
// Metadata names the leader meanwhile, as Kafka's does while a new leader
// loads: an answer of LEADER_NOT_AVAILABLE would be cached by admin
// clients (franz-go's kadm fails a DeleteRecords or ListOffsets at once on
// a cached partition error), and the produce that the named leader
// receives waits here instead.
//
// Appends keep the connection's order: once one produce request is
// parked, every later produce request of the connection is parked behind
// it, and they are appended one after the other, in the order they were
// read, by one goroutine the connection starts for them (and ends once
// none is parked). Other requests are served meanwhile, and every answer
// still goes out in request order.

// maxTierReadyWait bounds how long a produce waits for its partitions'
// manifests or logs (a produce with a shorter timeout waits that long):
// long enough for a manifest GET and a retry, or a log's recovery, short
// enough that a store or disk that does not answer turns into a retriable
// error the client sees.
const maxTierReadyWait = 5 * time.Second

// parkedProduces are a connection's parked produce requests.
type parkedProduces struct {
	mu sync.Mutex
	// calls are the parked requests in the order they were read;
	// running: a goroutine appends them (drainParked). Only the reader
	// parks a request and starts the goroutine, so while running is
	// false no parked request is left unappended.
	calls   []*produceCall
	running atomic.Bool // set under mu; read by the reader without it
	wg      sync.WaitGroup
}

// parking reports whether produce requests must be parked: some are
// already. Called by the reader.
func (c *conn) parking() bool { return c.parked.running.Load() }

// mustPark reports whether the reader parks pc rather than appending it
// now: a request of the connection is parked already, or one of pc's
// partitions is loading its manifest or opening its log.
func (c *conn) mustPark(pc *produceCall) bool {
	return c.parking() || pc.loading()
}

// loading reports whether one of the call's partitions leads a term that
// has not read its manifest yet, or has a log still opening.
func (pc *produceCall) loading() bool {
	if len(pc.opening) > 0 {
		return true
	}
	for i := range pc.parts {
		if pc.parts[i].p.tierLoading() {
			return true
		}
	}
	return false
}

// park queues a validated produce call to be appended once its
// partitions are ready. Its batches are copied out of the frame, which
// the reader gives back when the handler returns (a rare path: a
// connection parks during a leader's first GET at most, and holds at most
// maxInflightPerConn requests). Called by the reader.
func (c *conn) park(pc *produceCall) {
	for i := range pc.parts {
		pc.parts[i].batch = bytes.Clone(pc.parts[i].batch)
	}
	var opening [][]byte // the records of the opening partitions, in order
	for _, op := range pc.opening {
		opening = append(opening, bytes.Clone(pc.req.Topics[op.ti].Partitions[op.pi].Records))
	}
	for ti := range pc.req.Topics {
		for pi := range pc.req.Topics[ti].Partitions {
			pc.req.Topics[ti].Partitions[pi].Records = nil // validated: not read again
		}
	}
	for i, op := range pc.opening {
		pc.req.Topics[op.ti].Partitions[op.pi].Records = opening[i] // validated once open
	}
	c.b.parkedProduces.Add(1)
	pc.ref() // the queue's
	c.parked.mu.Lock()
	c.parked.calls = append(c.parked.calls, pc)
	start := !c.parked.running.Load()
	c.parked.running.Store(true)
	if start {
		c.parked.wg.Add(1)
	}
	c.parked.mu.Unlock()
	if start {
		go c.drainParked()
	}
}

// drainParked appends and answers the parked calls in order, each once
// its partitions are ready or its wait is over; it returns when none is
// left.
func (c *conn) drainParked() {
	defer c.parked.wg.Done()
	for {
		c.parked.mu.Lock()
		if len(c.parked.calls) == 0 {
			c.parked.running.Store(false)
			c.parked.mu.Unlock()
			return
		}
		pc := c.parked.calls[0]
		c.parked.mu.Unlock()

		c.awaitReady(pc)
		now := time.Now()
		for i := range pc.parts {
			pt := &pc.parts[i]
			if err := c.ctx.Err(); err != nil {
				pt.err = err // the client is gone: nothing is appended
			}
			// Appended now: the leadership's lease is checked, and
			// the append time taken, at the append.
			pt.now = now
		}
		if resp := pc.handle(); resp != nil {
			pc.r.respond(resp)
		}

		c.parked.mu.Lock()
		c.parked.calls[0] = nil
		c.parked.calls = c.parked.calls[1:]
		c.parked.mu.Unlock()
		pc.unref() // the queue's
	}
}

// awaitReady waits until none of pc's partitions is opening its log or
// loading its manifest, until the call's wait is over (its timeout, at
// most maxTierReadyWait, from when it was read; acks=0 has no timeout to
// honour), or until the connection closes. The partitions whose logs
// were opening are validated in between (resolveOpening): a newly opened
// tiered log's leader term reads its manifest next.
func (c *conn) awaitReady(pc *produceCall) {
	wait := maxTierReadyWait
	if pc.req.Acks != 0 {
		wait = min(wait, max(time.Duration(pc.req.TimeoutMillis)*time.Millisecond, 0))
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// await waits for gate, reporting whether the wait may go on.
	await := func(gate <-chan struct{}) bool {
		if timer == nil {
			left := time.Until(pc.r.p.start.Add(wait))
			if left <= 0 {
				return false
			}
			timer = time.NewTimer(left)
		}
		select {
		case <-gate:
			return true
		case <-timer.C:
		case <-c.ctx.Done():
		}
		return false
	}
	ok := true
	for _, op := range pc.opening {
		if ok {
			ok = await(op.po.settled)
		}
	}
	pc.resolveOpening()
	for i := range pc.parts {
		for ok {
			gate, loading := pc.parts[i].p.tierGate()
			if !loading {
				break
			}
			ok = await(gate)
		}
	}
}

// openingPart is a partition of a produce call that the metadata named
// this broker the leader of, at leader epoch epoch, when the call was
// read, while its log was being opened (po).
type openingPart struct {
	po     *pendingOpen
	epoch  int32
	ti, pi int
}

// leaderOpening returns, for a partition of a produce request that
// validation refused with err, the open of its log when err is only that
// the log is not open yet: the metadata names this broker its leader
// (at the returned leader epoch) and the log is being opened.
func (b *Broker) leaderOpening(req *kmsg.ProduceRequest, rt *kmsg.ProduceRequestTopic, index int32, err error) (*pendingOpen, int32) {
	if !errors.Is(err, errNotLeader) {
		return nil, 0
	}
	view := b.meta.snapshot()
	tv := view.topics[rt.Topic]
	if req.Version >= 13 {
		tv = view.topicsByID[rt.TopicID]
	}
	if tv == nil || index < 0 || int(index) >= len(tv.partitions) {
		return nil, 0
	}
	pv := &tv.partitions[index]
	if pv.index != index || pv.leader != b.cfg.NodeID {
		return nil, 0
	}
	po := b.replicas.openingLog(tv.name, tv.id, index)
	if po == nil {
		return nil, 0
	}
	return po, pv.leaderEpoch
}

// resolveOpening validates the batches of the call's partitions whose
// logs were opening, now against their logs: those whose log is open and
// that this broker still leads at the leader epoch the metadata named
// when the request was read join the call's parts; the others are
// refused (NOT_LEADER_OR_FOLLOWER while the log is still opening or the
// leadership moved).
func (pc *produceCall) resolveOpening() {
	for _, op := range pc.opening {
		rt := &pc.req.Topics[op.ti]
		rp := &rt.Partitions[op.pi]
		sp := &pc.resp.Topics[op.ti].Partitions[op.pi]
		p, batch, sum, err := validateOne(pc.r.ctx(), pc.b, pc.req, rt, rp, sp)
		if err == nil {
			if leader, epoch := p.leaderState(); leader != p.nodeID || epoch != op.epoch {
				err = errNotLeader
			}
		}
		rp.Records = nil
		if err != nil {
			pc.refuse(sp, rt, rp.Partition, err)
			continue
		}
		pc.parts = append(pc.parts, producePart{p: p, batch: batch, sum: sum, acks: pc.req.Acks, now: pc.r.p.start, ti: op.ti, pi: op.pi})
	}
	pc.opening = nil
}
