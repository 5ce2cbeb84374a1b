package broker

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"
)

// A produce to a tiered partition whose new leader term has not read its
// manifest yet (tierGate) is not refused at once: the leader will take it
// as soon as the manifest is read, one GET away, and a refusal costs an
// acks=0 producer its records (Kafka's answer to an acks=0 error is a
// closed connection). The request is parked instead: it waits, off the
// connection's reader and holding no lock, until the partitions it writes
// are ready or its wait ends (the request's timeout, at most
// maxTierReadyWait), and is then appended and answered as any other;
// a partition still loading is answered NOT_LEADER_OR_FOLLOWER, which
// every client retries. Metadata names the leader meanwhile, as Kafka's
// does while a new leader loads: an answer of LEADER_NOT_AVAILABLE would
// be cached by admin clients (franz-go's kadm fails a DeleteRecords or
// ListOffsets at once on a cached partition error), and the produce that
// the named leader receives waits here instead.
//
// Appends keep the connection's order: once one produce request is
// parked, every later produce request of the connection is parked behind
// it, and they are appended one after the other, in the order they were
// read, by one goroutine the connection starts for them (and ends once
// none is parked). Other requests are served meanwhile, and every answer
// still goes out in request order.

// maxTierReadyWait bounds how long a produce waits for its partitions'
// manifests (a produce with a shorter timeout waits that long): long
// enough for a manifest GET and a retry, short enough that a store that
// does not answer turns into a retriable error the client sees.
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
// partitions is loading its manifest.
func (c *conn) mustPark(pc *produceCall) bool {
	return c.parking() || pc.loading()
}

// loading reports whether one of the call's partitions leads a term that
// has not read its manifest yet.
func (pc *produceCall) loading() bool {
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
	for ti := range pc.req.Topics {
		for pi := range pc.req.Topics[ti].Partitions {
			pc.req.Topics[ti].Partitions[pi].Records = nil // validated: not read again
		}
	}
	if c.b.tier != nil {
		c.b.tier.parked.Add(1)
	}
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

		c.awaitTiers(pc)
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

// awaitTiers waits until none of pc's partitions is loading its manifest,
// until the call's wait is over (its timeout, at most maxTierReadyWait,
// from when it was read; acks=0 has no timeout to honour), or until the
// connection closes.
func (c *conn) awaitTiers(pc *produceCall) {
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
	for i := range pc.parts {
		for {
			gate, loading := pc.parts[i].p.tierGate()
			if !loading {
				break
			}
			if timer == nil {
				left := time.Until(pc.r.p.start.Add(wait))
				if left <= 0 {
					return
				}
				timer = time.NewTimer(left)
			}
			select {
			case <-gate:
			case <-timer.C:
				return
			case <-c.ctx.Done():
				return
			}
		}
	}
}
