package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// rawConfig is one raw run: conns connections, each with up to inflight
// requests written but not yet answered, loading the broker for warmup and
// then for duration, which alone is measured.
type rawConfig struct {
	conns       int
	inflight    int
	partitions  int // connection i uses partition i % partitions
	recordBytes int
	batchBytes  int // produce: record batch size; fetch: partition max bytes
	// fetchMaxBytes is a Fetch request's limit over all its partitions
	// (fetch.max.bytes); 0: batchBytes times the partitions fetched.
	fetchMaxBytes int
	// fetchPartitions is how many partitions each Fetch asks for
	// (0: all of them, as one consumer of the whole topic).
	fetchPartitions int
	warmup          time.Duration
	duration        time.Duration
	// rateMBps, if set, paces produce requests to this many MB/s in
	// all (acks 1 and all only); latency is then counted from the time
	// each request was due, so a stalled broker cannot hide the wait.
	rateMBps float64
	// onMeasure, if set, is called when the warm-up ends and the
	// measured part begins.
	onMeasure func()
	// leaders, if set, is each partition's leader address (a cluster):
	// a connection produces to its partition's leader, not to the
	// address the run was given.
	leaders []string
}

// rawResult counts what the broker acknowledged (produce) or returned
// (fetch) in the measured part of a run: record batch bytes and records,
// with each request's latency.
type rawResult struct {
	bytes, records int64
	requests       int64
	elapsed        time.Duration
	latencies      []time.Duration // sorted; acks=1 and all, and fetch; empty for acks=0
}

func (r rawResult) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }
func (r rawResult) recordsPerSec() float64 {
	return float64(r.records) / r.elapsed.Seconds()
}

func (r rawResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(float64(len(r.latencies))*p))]
}

// meter counts what the connections of a run completed, read when the
// warm-up ends and when the run ends.
// meter counts the requests that complete from warmAt on; what completes
// during the warm-up is not counted. Each completion decides by its own
// clock, so no snapshot taken at warmAt can race with the connections.
type meter struct {
	warmAt                   time.Time
	bytes, records, requests atomic.Int64
}

func (m *meter) add(bytes, records int64) {
	if time.Now().Before(m.warmAt) {
		return
	}
	m.bytes.Add(bytes)
	m.records.Add(records)
	m.requests.Add(1)
}

func (m *meter) read() rawResult {
	return rawResult{bytes: m.bytes.Load(), records: m.records.Load(), requests: m.requests.Load()}
}

// connRun is one connection's part of a run: it counts what completes in
// m and returns the latencies of the requests sent from warmAt on.
type connRun func(i int, m *meter, warmAt, stopAt time.Time) ([]time.Duration, error)

// runConns runs one connection function per connection at once. The result
// counts what completed from the end of the warm-up until the last
// connection finished.
func runConns(cfg rawConfig, each connRun) (rawResult, error) {
	warmAt := time.Now().Add(cfg.warmup)
	stopAt := warmAt.Add(cfg.duration)
	var (
		m     = meter{warmAt: warmAt}
		mu    sync.Mutex
		lat   []time.Duration
		first error
		wg    sync.WaitGroup
	)
	for i := 0; i < cfg.conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := each(i, &m, warmAt, stopAt)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, l...)
			if err != nil && first == nil {
				first = fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	time.Sleep(time.Until(warmAt))
	if cfg.onMeasure != nil {
		cfg.onMeasure()
	}
	wg.Wait()
	res := m.read()
	res.elapsed = time.Since(warmAt)
	slices.Sort(lat)
	res.latencies = lat
	return res, first
}

// rawProduce produces one pre-encoded batch again and again on every
// connection until the run's time is up. With acks=0 nothing is answered:
// a request counts when written, and each connection ends with one acks=1
// request whose answer means the broker has handled every one before it.
func rawProduce(addr, topic string, acks int16, cfg rawConfig) (rawResult, error) {
	batch, records := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
	return rawProduceBatch(addr, topic, acks, cfg, batch, records)
}

// rawProduceBatch is rawProduce with a given batch of records records.
func rawProduceBatch(addr, topic string, acks int16, cfg rawConfig, batch []byte, records int) (rawResult, error) {
	return runConns(cfg, func(i int, m *meter, warmAt, stopAt time.Time) ([]time.Duration, error) {
		partition := int32(i % max(1, cfg.partitions))
		pc := produceConn{
			frame: produceFrame(topic, partition, acks, batch), last: produceFrame(topic, partition, 1, batch),
			acks: acks, bytes: int64(len(batch)), records: int64(records),
		}
		if cfg.rateMBps > 0 && acks != 0 {
			pc.every = time.Duration(float64(len(batch)) / (cfg.rateMBps * 1e6 / float64(cfg.conns)) * float64(time.Second))
		}
		to := addr
		if int(partition) < len(cfg.leaders) {
			to = cfg.leaders[partition]
		}
		return pc.run(to, m, cfg.inflight, warmAt, stopAt)
	})
}

type produceConn struct {
	frame, last    []byte // the request, and for acks=0 the acks=1 one that ends the run
	acks           int16
	bytes, records int64         // what each request carries
	every          time.Duration // pace: one request per every, 0: as fast as answered
}

func (pc produceConn) run(addr string, m *meter, inflight int, warmAt, stopAt time.Time) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// sent holds each request awaiting its answer but the one whose
	// answer is being read: with that one, the window in flight.
	sent := make(chan sentRequest, max(1, inflight)-1)
	wrote := make(chan error, 1)
	go func() {
		defer close(sent)
		var corr int32
		start := time.Now()
		for ; time.Now().Before(stopAt); corr++ {
			at := time.Now()
			if pc.every > 0 {
				at = start.Add(time.Duration(corr) * pc.every)
				time.Sleep(time.Until(at))
			}
			if pc.acks != 0 {
				sent <- sentRequest{corr, at}
			}
			setCorrelationID(pc.frame, corr)
			if _, err := c.Write(pc.frame); err != nil {
				wrote <- err
				return
			}
			if pc.acks == 0 {
				m.add(pc.bytes, pc.records)
			}
		}
		if pc.acks == 0 {
			setCorrelationID(pc.last, corr)
			sent <- sentRequest{corr, time.Now()}
			if _, err := c.Write(pc.last); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	var buf, body []byte
	var lat []time.Duration
	for s := range sent {
		body, buf, err = readResponse(r, buf, s.corr)
		if err == nil {
			err = produceResponseErr(body)
		}
		if err != nil {
			c.Close() // unblocks the writer
			for range sent {
			}
			<-wrote
			return lat, err
		}
		m.add(pc.bytes, pc.records)
		if pc.acks != 0 && !s.at.Before(warmAt) {
			lat = append(lat, time.Since(s.at))
		}
	}
	return lat, <-wrote
}

type sentRequest struct {
	corr int32
	at   time.Time
}

// rawFetch has each connection read its partitions from offset 0 to end
// (their high watermarks, as the caller read them), then again from 0,
// until the run's time is up: hot data, in the page cache. Each Fetch asks
// for cfg.fetchPartitions partitions (connection i's run from partition i
// on), up to cfg.batchBytes each, as a consumer assigned them asks for all
// its partitions in one Fetch. Requests in flight ask for consecutive
// ranges: each partition's next offset is guessed from the records a full
// response holds, so they need not wait for each other's answers.
func rawFetch(addr, topic string, ends []int64, recordsPerFetch int64, cfg rawConfig) (rawResult, error) {
	partitions := max(1, cfg.partitions)
	per := cfg.fetchPartitions
	if per <= 0 || per > partitions {
		per = partitions
	}
	// Connections reading the same partition start at different places.
	sharing := max(1, cfg.conns*per/partitions)
	return runConns(cfg, func(i int, m *meter, warmAt, stopAt time.Time) ([]time.Duration, error) {
		var parts []int32
		var starts, partEnds []int64
		for k := 0; k < per; k++ {
			p := (i + k) % partitions
			if ends[p] <= 0 {
				return nil, fmt.Errorf("partition %d is empty", p)
			}
			parts = append(parts, int32(p))
			partEnds = append(partEnds, ends[p])
			starts = append(starts, ends[p]*int64(i%sharing)/int64(sharing))
		}
		maxBytes := cfg.fetchMaxBytes
		if maxBytes <= 0 {
			maxBytes = cfg.batchBytes * per
		}
		ff, err := newFetchFrame(topic, parts, int32(cfg.batchBytes), int32(maxBytes))
		if err != nil {
			return nil, err
		}
		return fetchConn(addr, ff, m, starts, partEnds, max(1, recordsPerFetch), cfg.inflight, warmAt, stopAt)
	})
}

func fetchConn(addr string, ff *fetchFrame, m *meter, start, end []int64, step int64, inflight int, warmAt, stopAt time.Time) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sent := make(chan sentRequest, max(1, inflight)-1) // as in produceConn.run
	wrote := make(chan error, 1)
	go func() {
		defer close(sent)
		off := slices.Clone(start)
		for corr := int32(0); time.Now().Before(stopAt); corr++ {
			sent <- sentRequest{corr, time.Now()}
			setCorrelationID(ff.frame, corr)
			for k := range off {
				ff.setOffset(k, off[k])
				if off[k] += step; off[k] >= end[k] {
					off[k] = 0
				}
			}
			if _, err := c.Write(ff.frame); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	// Small: a response body larger than the buffer is read straight
	// into its own, not copied through this one.
	r := bufio.NewReaderSize(c, 64<<10)
	var buf, body []byte
	var lat []time.Duration
	for s := range sent {
		body, buf, err = readResponse(r, buf, s.corr)
		var f fetched
		if err == nil {
			f, err = parseFetchResponse(body)
		}
		if err == nil && f.records == 0 {
			err = errors.New("fetch returned no whole batch")
		}
		if err != nil {
			c.Close()
			for range sent {
			}
			<-wrote
			return lat, err
		}
		m.add(f.bytes, f.records)
		if !s.at.Before(warmAt) {
			lat = append(lat, time.Since(s.at))
		}
	}
	return lat, <-wrote
}
