package main

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// diskPipelineRef is the disk at acks=all's shape with the producers'
// round trip and syncs pipelined: each of files loopback TCP connections
// keeps inflight batches of batch bytes in flight, sending the next one
// for each answer; its receiver writes every batch to its file as it
// arrives and fdatasyncs whatever was written and not yet covered as soon
// as fewer than syncs fdatasyncs of the file run (each through a
// descriptor of its own, since Linux reports a writeback error once per
// open file description), answering every batch once a sync that started
// after its write, and every sync started before that one, returned. It
// runs for about d and returns the bytes per second answered.
//
// With syncs at 1 it is a group commit that starts the next sync the
// moment the last returns, with no broker work; with 2, one that overlaps
// a sync with the round trip of the batches the last one answered. Beside
// diskRoundTripRef (one sync per whole window) it says whether splitting
// a window over overlapping syncs buys anything on this disk, where each
// sync has a fixed cost (a journal commit and a cache flush).
func diskPipelineRef(dir string, files, batch, inflight, syncs int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var answered atomic.Int64
	errs := make(chan error, 2*files)
	start := time.Now()
	for i := 0; i < files; i++ {
		go func() { errs <- pipelineSender(ln.Addr().String(), batch, inflight, start.Add(d)) }()
		c, err := ln.Accept()
		if err != nil {
			return 0, err
		}
		go func() { errs <- pipelineReceiver(c, dir, batch, syncs, &answered) }()
	}
	for i := 0; i < 2*files; i++ {
		err = errors.Join(err, <-errs)
	}
	return float64(answered.Load()) / time.Since(start).Seconds(), err
}

// pipelineSender keeps inflight batches in flight until stop, then waits
// for the answers to those sent.
func pipelineSender(addr string, batch, inflight int, stop time.Time) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	block := make([]byte, batch)
	for i := range block {
		block[i] = byte(i * 7)
	}
	answer := make([]byte, 8)
	out := 0
	for ; out < inflight; out++ {
		if _, err := c.Write(block); err != nil {
			return err
		}
	}
	for out > 0 {
		if _, err := io.ReadFull(c, answer); err != nil {
			return err
		}
		out--
		if time.Now().Before(stop) {
			if _, err := c.Write(block); err != nil {
				return err
			}
			out++
		}
	}
	return nil
}

// pipelineReceiver writes the batches read from c to a file of its own
// and answers them as diskPipelineRef says, until c ends.
func pipelineReceiver(c net.Conn, dir string, batch, syncs int, answered *atomic.Int64) error {
	defer c.Close()
	f, err := os.CreateTemp(dir, "disk-pipeline-ref-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	fds := []*os.File{f}
	for len(fds) < syncs {
		g, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer g.Close()
		fds = append(fds, g)
	}
	var (
		mu       sync.Mutex
		idle     = sync.NewCond(&mu)
		written  int64 // batches written
		started  int64 // batches covered by a sync started
		acked    int64 // batches answered
		running  int
		busy     = make([]bool, len(fds))
		ends     []int64 // the running syncs' ends, in start order
		done     []bool  // whether each of them returned
		syncErr  error
		wmu      sync.Mutex // the answers' writes
		zeros    = make([]byte, 8*64)
		startAny func()
	)
	answer := func(n int64) error {
		wmu.Lock()
		defer wmu.Unlock()
		for n > 0 {
			k := min(n, int64(len(zeros)/8))
			if _, err := c.Write(zeros[:8*k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	// startAny starts syncs while some are free and something written is
	// not covered. Requires mu.
	startAny = func() {
		for running < len(fds) && written > started && syncErr == nil {
			k := 0
			for busy[k] {
				k++
			}
			busy[k], running = true, running+1
			started = written
			ends, done = append(ends, written), append(done, false)
			end := written
			go func() {
				err := fdatasync(fds[k])
				mu.Lock()
				busy[k], running = false, running-1
				if err != nil && syncErr == nil {
					syncErr = err
				}
				for j := range ends {
					if ends[j] == end {
						done[j] = true
					}
				}
				// Apply in start order.
				var n int64
				for len(ends) > 0 && done[0] {
					if ends[0] > acked {
						n += ends[0] - acked
						acked = ends[0]
					}
					ends, done = ends[1:], done[1:]
				}
				failed := syncErr != nil
				if failed {
					n = 0
				}
				startAny()
				idle.Broadcast()
				mu.Unlock()
				if failed {
					c.Close() // the sender waits for answers that will not come
				}
				if n > 0 {
					answered.Add(n * int64(batch))
					if err := answer(n); err != nil {
						mu.Lock()
						if syncErr == nil {
							syncErr = err
						}
						mu.Unlock()
					}
				}
			}()
		}
	}
	buf := make([]byte, batch)
	var off int64
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			mu.Lock()
			for running > 0 {
				idle.Wait()
			}
			serr := syncErr
			mu.Unlock()
			if errors.Is(err, io.EOF) {
				return serr // the sender is done
			}
			return errors.Join(err, serr)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		off += int64(batch)
		mu.Lock()
		written++
		startAny()
		mu.Unlock()
	}
}
