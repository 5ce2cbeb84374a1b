package main

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The machine's own limits, measured in the same run as the broker so that
// a noisy neighbour moves both: the broker's figures are reported as a
// fraction of them.

// diskWriteRef writes a file sequentially in dir, in 1 MiB writes with an
// fdatasync after every 8 MiB and at the end, for about d (at most 2 GiB),
// and returns the bytes per second the disk sustained.
func diskWriteRef(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "disk-ref-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	const syncEvery = 8
	start := time.Now()
	var written int64
	for n := 1; ; n++ {
		if _, err := f.Write(block); err != nil {
			return 0, err
		}
		written += int64(len(block))
		if n%syncEvery == 0 {
			if err := fdatasync(f); err != nil {
				return 0, err
			}
			if time.Since(start) >= d || written >= 2<<30 {
				break
			}
		}
	}
	return float64(written) / time.Since(start).Seconds(), nil
}

// diskWindowRef is the disk at acks=all's shape: files files written at
// once, each in writes of batch bytes with an fdatasync after every window
// bytes (the requests one connection keeps in flight, which a group commit
// can at best make durable together), for about d. It returns the bytes
// per second the disk sustained: the ceiling of fsynced produce with that
// window, below the sequential reference when the fdatasync's own latency
// dominates.
func diskWindowRef(dir string, files, batch, window int, d time.Duration) (float64, error) {
	var written atomic.Int64
	start := time.Now()
	err := writeFiles(dir, "disk-window-ref-", files, batch, func(f *os.File, block []byte) error {
		for n := 0; time.Since(start) < d && n < 2<<30; {
			for w := 0; w < window; w += batch {
				if _, err := f.Write(block); err != nil {
					return err
				}
				n += batch
			}
			if err := fdatasync(f); err != nil {
				return err
			}
			written.Add(int64(window / batch * batch))
		}
		return nil
	})
	return float64(written.Load()) / time.Since(start).Seconds(), err
}

// writeFiles runs write on files new files in dir at once, each given a
// block of batch patterned bytes to write, and removes the files after.
func writeFiles(dir, prefix string, files, batch int, write func(f *os.File, block []byte) error) error {
	errs := make(chan error, files)
	for i := 0; i < files; i++ {
		go func() {
			errs <- func() error {
				f, err := os.CreateTemp(dir, prefix)
				if err != nil {
					return err
				}
				defer os.Remove(f.Name())
				defer f.Close()
				block := make([]byte, batch)
				for i := range block {
					block[i] = byte(i * 7)
				}
				return write(f, block)
			}()
		}()
	}
	var err error
	for i := 0; i < files; i++ {
		err = errors.Join(err, <-errs)
	}
	return err
}

// diskRoundTripRef is diskWindowRef with the producers' round trip: each
// of files loopback TCP connections carries a window of batch-byte writes
// at a time to a receiver, which reads them, writes them to its file and
// fdatasyncs it, then answers with a few bytes, on which the sender sends
// the next window, for about d (the sender stops, the receiver reads to
// the end). It returns the bytes per second the disk sustained that way:
// the ceiling of fsynced produce from producers that
// keep window bytes in flight, with no broker work beyond reading, writing
// and fsyncing. A group commit that syncs a producer's whole window at
// once waits, between two syncs, for its answers to reach the producer
// and the next requests to arrive; diskWindowRef, which writes the next
// window at once, does not.
func diskRoundTripRef(dir string, files, batch, window int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	window = window / batch * batch
	var written atomic.Int64
	errs := make(chan error, 2*files)
	start := time.Now()
	for i := 0; i < files; i++ {
		go func() { // the sender: a producer with window bytes in flight
			errs <- func() error {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return err
				}
				defer c.Close()
				block := make([]byte, batch)
				for i := range block {
					block[i] = byte(i * 7)
				}
				answer := make([]byte, 8)
				for time.Since(start) < d {
					for w := 0; w < window; w += batch {
						if _, err := c.Write(block); err != nil {
							return err
						}
					}
					if _, err := io.ReadFull(c, answer); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
		c, err := ln.Accept()
		if err != nil {
			return 0, err
		}
		go func() { // the receiver: read a window, write it, fdatasync, answer
			errs <- func() error {
				defer c.Close()
				f, err := os.CreateTemp(dir, "disk-round-trip-ref-")
				if err != nil {
					return err
				}
				defer os.Remove(f.Name())
				defer f.Close()
				buf := make([]byte, batch)
				answer := make([]byte, 8)
				for {
					for w := 0; w < window; w += batch {
						if _, err := io.ReadFull(c, buf); err != nil {
							if w == 0 && errors.Is(err, io.EOF) {
								return nil // the sender is done
							}
							return err
						}
						if _, err := f.Write(buf); err != nil {
							return err
						}
					}
					if err := fdatasync(f); err != nil {
						return err
					}
					written.Add(int64(window))
					if _, err := c.Write(answer); err != nil {
						return err
					}
				}
			}()
		}()
	}
	for i := 0; i < 2*files; i++ {
		err = errors.Join(err, <-errs)
	}
	return float64(written.Load()) / time.Since(start).Seconds(), err
}

// loopbackRef sends over conns loopback TCP connections at once, 1 MiB
// writes read into 1 MiB buffers, for about d, and returns the bytes per
// second received.
func loopbackRef(conns int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var received atomic.Int64
	var wg sync.WaitGroup
	accepted := make(chan error, conns)
	go func() {
		for i := 0; i < conns; i++ {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			accepted <- nil
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 1<<20)
				for {
					n, err := c.Read(buf)
					received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	clients := make([]net.Conn, conns)
	for i := range clients {
		if clients[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			return 0, err
		}
		if err := <-accepted; err != nil {
			return 0, err
		}
	}
	start := time.Now()
	stopAt := start.Add(d)
	var sendErr atomic.Value
	var senders sync.WaitGroup
	for _, c := range clients {
		senders.Add(1)
		go func() {
			defer senders.Done()
			block := make([]byte, 1<<20)
			for time.Now().Before(stopAt) {
				if _, err := c.Write(block); err != nil {
					sendErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	senders.Wait()
	got := received.Load()
	elapsed := time.Since(start)
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
	if err, _ := sendErr.Load().(error); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return float64(got) / elapsed.Seconds(), nil
}

// loopbackCPU is loopbackRef with the CPU this process used per MB
// received (ms), sender and receiver together: beside a fetch's broker
// plus client CPU per MB, it says how far the fetch path is from the
// machine's own TCP over loopback.
func loopbackCPU(conns int, d time.Duration) (bps, msPerMB float64, err error) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if bps, err = loopbackRef(conns, d); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	after, err := processCPU(os.Getpid())
	if err != nil {
		return 0, 0, err
	}
	return bps, float64((after - before).Milliseconds()) / (bps * elapsed.Seconds() / 1e6), nil
}

// dataDirOf is where the disk reference writes: beside the broker's data,
// on the same file system.
func dataDirOf(t *target) string {
	if t.dataDir != "" {
		return t.dataDir
	}
	return filepath.Clean(os.TempDir())
}

func fdatasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}

// settleDisk writes the machine's dirty pages back (sync(2)) before a
// measured run, so that a run does not pay for the write-back the run
// before it left (an acks=1 run leaves its data in the page cache: the
// next fsync, or the kernel's flusher, writes it during the next run) and
// each figure measures one thing.
func settleDisk() {
	syscall.Sync()
}

// diskLatencyRef is the disk's own latency at the paced produce load of
// cfg (cfg.rateMBps in cfg.batchBytes writes, cfg.conns writers each at
// its share of the rate, writer i into file i % cfg.partitions), without a
// broker: each write is made when its request would be due, and each
// file's syncer fdatasyncs what was written to it as soon as its last
// fdatasync returned. That is the best a group commit with one sync in
// flight can do: a batch written while a sync runs waits for it and the
// next. It returns, sorted, each batch's latency from when it was due to
// the return of the first fdatasync that started after its write, for
// the batches due after cfg.warmup, over cfg.duration.
func diskLatencyRef(dir string, cfg rawConfig) ([]time.Duration, error) {
	files := max(1, cfg.partitions)
	every := time.Duration(float64(cfg.batchBytes) / (cfg.rateMBps * 1e6 / float64(cfg.conns)) * float64(time.Second))
	block := make([]byte, cfg.batchBytes)
	for i := range block {
		block[i] = byte(i * 7)
	}
	type file struct {
		f       *os.File
		mu      sync.Mutex
		pending []time.Time // the due times of the batches written, not yet syncing
		kick    chan struct{}
		lat     []time.Duration
	}
	fs := make([]*file, files)
	for i := range fs {
		f, err := os.CreateTemp(dir, "disk-latency-ref-")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		fs[i] = &file{f: f, kick: make(chan struct{}, 1)}
	}
	start := time.Now()
	warmAt := start.Add(cfg.warmup)
	stopAt := warmAt.Add(cfg.duration)
	var writers, syncers sync.WaitGroup
	errs := make(chan error, cfg.conns+files)
	for w := 0; w < cfg.conns; w++ {
		fl := fs[w%files]
		writers.Add(1)
		go func() {
			defer writers.Done()
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k) * every)
				if !at.Before(stopAt) {
					return
				}
				time.Sleep(time.Until(at))
				fl.mu.Lock()
				_, err := fl.f.Write(block)
				fl.pending = append(fl.pending, at)
				fl.mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
				select {
				case fl.kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	done := make(chan struct{})
	for _, fl := range fs {
		syncers.Add(1)
		go func() {
			defer syncers.Done()
			var syncing []time.Time
			for {
				select {
				case <-fl.kick:
				case <-done:
					// The writers have stopped: a last kick may
					// be pending.
					select {
					case <-fl.kick:
					default:
						return
					}
				}
				fl.mu.Lock()
				syncing, fl.pending = fl.pending, syncing[:0]
				fl.mu.Unlock()
				if len(syncing) == 0 {
					continue
				}
				if err := fdatasync(fl.f); err != nil {
					errs <- err
					return
				}
				now := time.Now()
				for _, at := range syncing {
					if !at.Before(warmAt) {
						fl.lat = append(fl.lat, now.Sub(at))
					}
				}
			}
		}()
	}
	writers.Wait()
	close(done)
	syncers.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	var lat []time.Duration
	for _, fl := range fs {
		lat = append(lat, fl.lat...)
	}
	slices.Sort(lat)
	return lat, err
}

// pageCacheRef is the kernel's own cost of taking a produce's bytes into
// the page cache: files new files written at once, each in writes of
// batch bytes, size bytes in all, with no fdatasync (an acks=1 produce's
// writes). It returns the system CPU time this process used per MB
// written (ms). The broker's kernel time per MB at acks=1 is mostly
// these same copies; beside this figure it says how much of it is the
// machine's. On a virtual machine whose host backs the guest's memory
// only when first touched, a page-cache page that the guest never used
// (or gave back) costs several times a reused one: there the cost
// depends on how far the page cache has grown, so this is measured right
// after the workload it is set beside, writing as many bytes as it did.
func pageCacheRef(dir string, files, batch int, size int64) (float64, error) {
	sys0, err := systemTime()
	if err != nil {
		return 0, err
	}
	per := size / int64(files)
	err = writeFiles(dir, "page-cache-ref-", files, batch, func(f *os.File, block []byte) error {
		for n := int64(0); n < per; n += int64(batch) {
			if _, err := f.Write(block); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	sys1, err := systemTime()
	if err != nil {
		return 0, err
	}
	written := per / int64(batch) * int64(batch) * int64(files)
	if written == 0 {
		return 0, errors.New("page cache reference: nothing to write")
	}
	return float64((sys1 - sys0).Microseconds()) / 1e3 / (float64(written) / 1e6), nil
}

// systemTime is the system CPU time this process has used, from
// getrusage(2): finer than /proc's clock ticks.
func systemTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Stime.Nano()), nil
}
