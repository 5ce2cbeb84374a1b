package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// rawConfig is one raw run: conns connections, each with up to inflight
// requests written but not yet answered.
type rawConfig struct {
	conns       int
	inflight    int
	partitions  int // connection i uses partition i % partitions
	recordBytes int
	batchBytes  int // produce: record batch size; fetch: partition max bytes
	duration    time.Duration
}

// rawResult counts what the broker acknowledged (produce) or returned
// (fetch): record batch bytes and records, with each request's latency.
type rawResult struct {
	bytes, records int64
	requests       int64
	elapsed        time.Duration
	latencies      []time.Duration // acks=1 and all, and fetch; empty for acks=0
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

func (r *rawResult) add(o rawResult) {
	r.bytes += o.bytes
	r.records += o.records
	r.requests += o.requests
	r.latencies = append(r.latencies, o.latencies...)
}

// runConns runs one function per connection at once and sums their
// results; elapsed is the time until the last one finished.
func runConns(cfg rawConfig, each func(i int, stopAt time.Time) (rawResult, error)) (rawResult, error) {
	var (
		mu    sync.Mutex
		total rawResult
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	stopAt := start.Add(cfg.duration)
	for i := 0; i < cfg.conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := each(i, stopAt)
			mu.Lock()
			defer mu.Unlock()
			total.add(r)
			if err != nil && first == nil {
				first = fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	slices.Sort(total.latencies)
	return total, first
}

// rawProduce produces one pre-encoded batch again and again on every
// connection until the run's time is up. With acks=0 nothing is answered,
// so each connection ends with one acks=1 request: its answer means the
// broker has handled every request before it.
func rawProduce(addr, topic string, acks int16, cfg rawConfig) (rawResult, error) {
	batch, records := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
	return runConns(cfg, func(i int, stopAt time.Time) (rawResult, error) {
		partition := int32(i % max(1, cfg.partitions))
		return produceConn(addr, produceFrame(topic, partition, acks, batch), produceFrame(topic, partition, 1, batch),
			acks, int64(len(batch)), int64(records), cfg.inflight, stopAt)
	})
}

func produceConn(addr string, frame, last []byte, acks int16, batchBytes, records int64, inflight int, stopAt time.Time) (rawResult, error) {
	var res rawResult
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	// sent holds each request awaiting its answer; its capacity is the
	// window of requests in flight.
	sent := make(chan sentRequest, inflight)
	wrote := make(chan writerResult, 1)
	go func() {
		defer close(sent)
		var w writerResult
		var corr int32
		for ; time.Now().Before(stopAt); corr++ {
			if acks != 0 {
				sent <- sentRequest{corr, time.Now()}
			}
			setCorrelationID(frame, corr)
			if _, w.err = c.Write(frame); w.err != nil {
				wrote <- w
				return
			}
			w.written++
		}
		if acks == 0 {
			setCorrelationID(last, corr)
			sent <- sentRequest{corr, time.Now()}
			if _, w.err = c.Write(last); w.err == nil {
				w.written++
			}
		}
		wrote <- w
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	var buf []byte
	for s := range sent {
		var body []byte
		body, buf, err = readResponse(r, buf, s.corr)
		if err == nil {
			err = produceResponseErr(body)
		}
		if err != nil {
			c.Close() // unblocks the writer
			for range sent {
			}
			<-wrote
			return res, err
		}
		res.latencies = append(res.latencies, time.Since(s.at))
		res.requests++
	}
	w := <-wrote
	if w.err != nil {
		return res, w.err
	}
	if acks == 0 {
		res.latencies = nil
		res.requests = w.written
	}
	res.bytes = res.requests * batchBytes
	res.records = res.requests * records
	return res, nil
}

type sentRequest struct {
	corr int32
	at   time.Time
}

type writerResult struct {
	written int64
	err     error
}

// rawFetch reads each connection's partition from offset 0 to end (its
// high watermark, as the caller read it), then again from 0, until the
// run's time is up: hot data, in the page cache. Requests in flight ask
// for consecutive ranges: the next offset is guessed from the records a
// full response holds, so they need not wait for each other's answers.
func rawFetch(addr, topic string, ends []int64, recordsPerFetch int64, cfg rawConfig) (rawResult, error) {
	return runConns(cfg, func(i int, stopAt time.Time) (rawResult, error) {
		partition := i % max(1, cfg.partitions)
		if ends[partition] <= 0 {
			return rawResult{}, fmt.Errorf("partition %d is empty", partition)
		}
		ff, err := newFetchFrame(topic, int32(partition), int32(cfg.batchBytes))
		if err != nil {
			return rawResult{}, err
		}
		// Connections sharing a partition start at different places.
		start := ends[partition] * int64(i/max(1, cfg.partitions)) / int64(max(1, cfg.conns/max(1, cfg.partitions)))
		return fetchConn(addr, ff, start, ends[partition], max(1, recordsPerFetch), cfg.inflight, stopAt)
	})
}

func fetchConn(addr string, ff *fetchFrame, start, end, step int64, inflight int, stopAt time.Time) (rawResult, error) {
	var res rawResult
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	sent := make(chan sentRequest, inflight)
	wrote := make(chan writerResult, 1)
	go func() {
		defer close(sent)
		var w writerResult
		off := start
		for corr := int32(0); time.Now().Before(stopAt); corr++ {
			sent <- sentRequest{corr, time.Now()}
			setCorrelationID(ff.frame, corr)
			ff.setOffset(off)
			if _, w.err = c.Write(ff.frame); w.err != nil {
				break
			}
			w.written++
			if off += step; off >= end {
				off = 0
			}
		}
		wrote <- w
	}()
	r := bufio.NewReaderSize(c, 1<<20)
	var buf []byte
	for s := range sent {
		var body []byte
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
			return res, err
		}
		res.latencies = append(res.latencies, time.Since(s.at))
		res.requests++
		res.bytes += f.bytes
		res.records += f.records
	}
	return res, (<-wrote).err
}
