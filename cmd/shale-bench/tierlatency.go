package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sys/unix"

	"github.com/shale-log/shale/objectstore"
)

// The produce latency of hot traffic beside a cold replay. Raw Produce
// requests (acks=1, one connection, paced at -tier-latency-rate, latency
// counted from when each request was due) go to a tiered topic in rounds
// of three phases, each round in another order:
//   - alone;
//   - while a cold replay runs: raw fetches, one in flight, of a topic
//     that lives only in the bucket, each phase going on from where the
//     last one stopped (wrapping around at the end: the topic is several
//     times the broker's cache, and the share of the replayed bytes the
//     broker had to GET is printed);
//   - while a load that is not Shale runs on the same machine: ranged GETs
//     of the same objects from MinIO relayed over a loopback connection,
//     paced so that the CPU it adds (MinIO and this process) matches what
//     the replay added (broker, MinIO and this process) over the alone
//     phases; its rate is corrected after each phase;
//   - while this process makes the replay's GETs itself: ranged GETs of
//     the same objects, of the broker's chunk size, as many in flight as
//     the broker's read-ahead GET workers (GOMAXPROCS), paced to the rate
//     the broker's replay GETs reached (the median of the replay phases
//     so far), each body read into a reused buffer and dropped;
//   - after those rounds, as many again of two phases, alone and with
//     the cold replay while MinIO's threads and the replay's client run
//     at nice 19: in a deployment the object store and the consumer run
//     on other machines, and do not compete with the broker for its CPUs
//     as they do here; niced, they take only what the broker leaves. A
//     thread's niceness cannot be lowered again without privilege, so
//     these rounds come last.
//
// The replay's difference from the alone phases says what Shale's replay
// costs hot traffic; the hog's says what the same CPU costs anything on
// this machine, the part no broker change can remove; the GETs' says what
// MinIO serving the replay's GETs, and a client reading them, cost on
// their own: the replay's excess over it is what the broker adds.

type latPhase int

const (
	phaseAlone latPhase = iota
	phaseReplay
	phaseHog
	phaseGets
	phaseRemote
	phases
)

var phaseNames = [phases]string{"alone", "with a cold replay", "with a non-Shale load of equal CPU", "with the replay's GETs by a non-Shale client",
	"with a cold replay, MinIO and the replay's client at nice 19 (on other machines in a deployment)"}

// phaseFlags are the phases' names in -tier-latency-phases.
var phaseFlags = [phases]string{"alone", "replay", "hog", "gets", "remote"}

// latencyPhases parses -tier-latency-phases.
func latencyPhases(list string) ([phases]bool, error) {
	var on [phases]bool
	for _, name := range strings.Split(list, ",") {
		i := slices.Index(phaseFlags[:], strings.TrimSpace(name))
		if i < 0 {
			return on, fmt.Errorf("-tier-latency-phases: unknown phase %q (alone, replay, gets, hog, remote)", name)
		}
		on[i] = true
	}
	return on, nil
}

// phaseResult is one phase of one round.
type phaseResult struct {
	p50, p99 time.Duration
	samples  int
	cores    [3]float64 // broker, MinIO, this process: CPU seconds per second
	mbps     float64    // the replay's, the hog's or the GETs' rate (0 alone)
	getMBps  float64    // the replay's GETs (chunks), MB/s
	elapsed  time.Duration
	// broker50, broker99: the broker's own produce latency (its last
	// byte read to its answer written), as the buckets of its histogram
	// the quantiles fell in; what the client sees beyond it waited in a
	// socket or in the client.
	broker50, broker99 bucketRange
	// gcs and gcPause: the broker's garbage collections in the phase and
	// the time their stop-the-world pauses took (a pause stops every
	// goroutine, produce included; on a loaded machine it lasts until
	// the OS runs every thread that holds a P).
	gcs     float64
	gcPause time.Duration
	// allocMB: what the broker allocated in the phase (MB), which sets
	// how often it collects.
	allocMB float64
	// sched99 and sched999: how long the broker's goroutines waited
	// runnable for a processor (Go's /sched/latencies:seconds), as the
	// buckets of its histogram the quantiles fell in (go_sched_latencies
	// has few: a wait at p99 "in 0.92-10.49 ms" is all it can say).
	sched99, sched999 bucketRange
}

func (r phaseResult) totalCores() float64 { return r.cores[0] + r.cores[1] + r.cores[2] }

// runTierLatency runs the rounds and returns the table rows.
func runTierLatency(ctx context.Context, o options, sh *target, bucket objectstore.Bucket, cl *kgo.Client, minioPid int) ([][]string, error) {
	uo := o.upload
	on, err := latencyPhases(uo.latPhases)
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	for _, name := range []string{tierHotTopic, tierColdTopic} {
		cfg := map[string]*string{"segment.bytes": ptr(strconv.Itoa(tierSegment)), "local.retention.ms": ptr("1"), "file.delete.delay.ms": ptr("1")}
		resp, err := adm.CreateTopic(ctx, 1, 1, cfg, name)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", name, err)
		}
	}
	value := make([]byte, 1000)
	for n := 0; n < uo.coldMB<<20; n += len(value) {
		cl.Produce(ctx, &kgo.Record{Topic: tierColdTopic, Value: value}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	for localSegments(sh.dataDir, tierColdTopic+"-0") != 1 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tiering: %s was not uploaded", tierColdTopic)
		}
		time.Sleep(100 * time.Millisecond)
	}
	end, err := earliestLocal(ctx, cl, tierColdTopic)
	if err != nil {
		return nil, err
	}
	var objs []objectstore.Attrs
	err = bucket.List(ctx, "", func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, ".log") && inTopic(a.Key, tierColdTopic) {
			objs = append(objs, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The hog reads the objects from the last one back, the replay from
	// the first one on.
	slices.Reverse(objs)
	hogChunks, _ := chunksOf(objs, tierChunk)
	// The GETs phases read them from the middle on.
	getChunks := append(slices.Clone(hogChunks[len(hogChunks)/2:]), hogChunks[:len(hogChunks)/2]...)

	cfg := rawConfig{conns: 1, inflight: 8, partitions: 1, recordBytes: 1000, batchBytes: 16 << 10,
		warmup: 500 * time.Millisecond, duration: uo.latLength, rateMBps: uo.latRate}
	rounds := max(uo.latRounds, 1)
	res := make([][phases]phaseResult, rounds)
	var (
		next, hogAt, getsAt   int64 // where the next replay, hog and GETs phases start
		replayBytes, gotBytes float64
		lastAlone, lastReplay = -1.0, -1.0
		hogRate               float64
		replayGets            []float64 // the replay phases' GET rates, MB/s
		getsInflight          = runtime.GOMAXPROCS(0)
		load                  = loadAverage()
		profiled              bool
		// A replay phase comes before the first GETs phase, which
		// takes its rate.
		orders = [][]latPhase{{phaseAlone, phaseReplay, phaseGets, phaseHog}, {phaseReplay, phaseGets, phaseHog, phaseAlone},
			{phaseGets, phaseHog, phaseAlone, phaseReplay}, {phaseHog, phaseAlone, phaseReplay, phaseGets}}
	)
	// measure runs phase ph of round r.
	measure := func(r int, ph latPhase) (phaseResult, error) {
		pctx, cancel := context.WithCancel(ctx)
		var (
			wg      sync.WaitGroup
			moved   int64
			loadErr error
		)
		switch ph {
		case phaseReplay:
			wg.Add(1)
			go func() {
				defer wg.Done()
				next, moved, loadErr = replayLoop(pctx, sh.addr, tierColdTopic, next, end, false)
			}()
			if o.raw.profileDir != "" && !profiled {
				profiled = true
				prefix := filepath.Join(o.raw.profileDir, "tier-latency-replay")
				d := cfg.warmup + cfg.duration
				for _, kind := range []string{"profile", "mutex", "block", "trace", "allocs"} {
					go func() {
						if err := fetchProfile(sh.httpAddr, kind, prefix+"."+kind+".pprof", d); err != nil {
							fmt.Fprintln(os.Stderr, "tier latency profile:", err)
						}
					}()
				}
			}
		case phaseRemote:
			wg.Add(1)
			go func() {
				defer wg.Done()
				next, moved, loadErr = replayLoop(pctx, sh.addr, tierColdTopic, next, end, true)
			}()
		case phaseHog:
			if hogRate == 0 {
				hogRate = res[max(r-1, 0)][phaseReplay].mbps
				if hogRate == 0 {
					hogRate = 100
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				hogAt, moved, loadErr = pacedGets(pctx, bucket, hogChunks, hogAt, hogRate, 4, true)
			}()
		case phaseGets:
			rate := median(replayGets)
			if rate <= 0 {
				rate = 100
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				getsAt, moved, loadErr = pacedGets(pctx, bucket, getChunks, getsAt, rate, getsInflight, false)
			}()
		}
		before := scrape(sh.httpAddr)
		cpu := startCPU(sh.pid, minioPid, os.Getpid())
		start := time.Now()
		pr, err := rawProduce(sh.addr, tierHotTopic, 1, cfg)
		cancel()
		wg.Wait()
		elapsed := time.Since(start)
		used := cpu.stop()
		if err != nil {
			return phaseResult{}, fmt.Errorf("round %d, produce %s: %w", r, phaseNames[ph], err)
		}
		if loadErr != nil && !errors.Is(loadErr, context.Canceled) {
			return phaseResult{}, fmt.Errorf("round %d, load %s: %w", r, phaseNames[ph], loadErr)
		}
		out := phaseResult{p50: pr.percentile(0.5), p99: pr.percentile(0.99), samples: len(pr.latencies), elapsed: elapsed,
			mbps: float64(moved) / elapsed.Seconds() / 1e6}
		for i, u := range used {
			out.cores[i] = u.Seconds() / elapsed.Seconds()
		}
		after := scrape(sh.httpAddr)
		out.broker50, out.broker99 = histogramBuckets(before, after, `shale_kafka_request_duration_seconds_bucket{api="Produce",`, 0.5, 0.99)
		out.sched99, out.sched999 = histogramBuckets(before, after, "go_sched_latencies_seconds_bucket{", 0.99, 0.999)
		out.gcs = after["go_gc_duration_seconds_count"] - before["go_gc_duration_seconds_count"]
		out.gcPause = time.Duration((after["go_gc_duration_seconds_sum"] - before["go_gc_duration_seconds_sum"]) * 1e9)
		out.allocMB = (after["go_memstats_alloc_bytes_total"] - before["go_memstats_alloc_bytes_total"]) / 1e6
		switch ph {
		case phaseAlone:
			lastAlone = out.totalCores()
		case phaseReplay:
			lastReplay = out.totalCores()
			replayBytes += float64(moved)
			// The bytes of the broker's GET bodies: a read-ahead GET
			// spans several chunks, so GETs times the chunk size is
			// not what was fetched.
			const getBytes = `shale_objectstore_bytes_total{op="get"}`
			got := after[getBytes] - before[getBytes]
			gotBytes += got
			out.getMBps = got / elapsed.Seconds() / 1e6
			replayGets = append(replayGets, out.getMBps)
		case phaseHog:
			// Correct the hog's rate towards the CPU the replay added.
			if lastAlone >= 0 && lastReplay >= 0 {
				want, got := lastReplay-lastAlone, out.totalCores()-lastAlone
				if want > 0 && got > 0 {
					hogRate *= min(max(want/got, 0.5), 2)
				}
			}
		}
		return out, nil
	}
	for r := range rounds {
		for _, ph := range orders[r%len(orders)] {
			if !on[ph] {
				continue
			}
			if res[r][ph], err = measure(r, ph); err != nil {
				return nil, err
			}
		}
	}
	// The rounds with MinIO and the replay's client niced, last: the
	// niceness stays.
	var remote [][2]phaseResult // alone, remote
	if on[phaseRemote] {
		if err := niceProcess(minioPid, 19); err != nil {
			return nil, fmt.Errorf("nicing MinIO: %w", err)
		}
		remote = make([][2]phaseResult, rounds)
		for r := range rounds {
			order := []int{0, 1}
			if r%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				ph := []latPhase{phaseAlone, phaseRemote}[i]
				if remote[r][i], err = measure(r, ph); err != nil {
					return nil, err
				}
			}
		}
	}

	// Tables: medians (min-max) over the rounds, and each round's p99
	// difference from its own alone phase.
	var rows [][]string
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	col := func(ph latPhase, f func(phaseResult) float64) []float64 {
		var xs []float64
		for r := range res {
			xs = append(xs, f(res[r][ph]))
		}
		return xs
	}
	mr := func(xs []float64, format string) string {
		if len(xs) == 1 {
			return fmt.Sprintf(format, xs[0])
		}
		return fmt.Sprintf(format+" ("+format+" to "+format+")", median(xs), slices.Min(xs), slices.Max(xs))
	}
	alone99 := col(phaseAlone, func(p phaseResult) float64 { return ms(p.p99) })
	for _, ph := range []latPhase{phaseAlone, phaseReplay, phaseGets, phaseHog} {
		if !on[ph] {
			continue
		}
		p50 := col(ph, func(p phaseResult) float64 { return ms(p.p50) })
		p99 := col(ph, func(p phaseResult) float64 { return ms(p.p99) })
		cores := col(ph, phaseResult.totalCores)
		row := []string{fmt.Sprintf("produce at %.0f MB/s %s: p50 / p99 ms", uo.latRate, phaseNames[ph]), mr(p50, "%.2f") + " / " + mr(p99, "%.2f"),
			"CPU cores busy (broker+MinIO+bench)", mr(cores, "%.2f"), ""}
		if ph != phaseAlone {
			diff := make([]float64, len(p99))
			for i := range p99 {
				diff[i] = p99[i] - alone99[i]
			}
			row[4] = "p99 " + mr(diff, "%+.2f") + " ms"
		}
		rows = append(rows, row)
		buckets := func(f func(phaseResult) bucketRange) string {
			var rs []bucketRange
			for r := range res {
				rs = append(rs, f(res[r][ph]))
			}
			return medianBucket(rs)
		}
		rows = append(rows, []string{"  the same, the broker's own time (the histogram bucket each lay in), p50 / p99 ms",
			buckets(func(p phaseResult) bucketRange { return p.broker50 }) + " / " + buckets(func(p phaseResult) bucketRange { return p.broker99 }),
			"the broker's GCs / their pauses, ms / MB it allocated", mr(col(ph, func(p phaseResult) float64 { return p.gcs }), "%.0f") + " / " + mr(col(ph, func(p phaseResult) float64 { return ms(p.gcPause) }), "%.1f") +
				" / " + mr(col(ph, func(p phaseResult) float64 { return p.allocMB }), "%.0f"), ""})
		rows = append(rows, []string{"  the broker's goroutines' wait for a processor (the histogram bucket each lay in), p99 / p99.9 ms",
			buckets(func(p phaseResult) bucketRange { return p.sched99 }) + " / " + buckets(func(p phaseResult) bucketRange { return p.sched999 }), "", "", ""})
	}
	rows = append(rows,
		[]string{"  the replay's rate during its phases, MB/s", mr(col(phaseReplay, func(p phaseResult) float64 { return p.mbps }), "%.0f"),
			"share of its bytes GET from MinIO (cold)", fmt.Sprintf("%.0f%%", 100*gotBytes/max(replayBytes, 1)), ""},
		[]string{"  the replay's GETs, MB/s", mr(col(phaseReplay, func(p phaseResult) float64 { return p.getMBps }), "%.0f"),
			"the same GETs by a non-Shale client, MB/s (in flight)", mr(col(phaseGets, func(p phaseResult) float64 { return p.mbps }), "%.0f") + fmt.Sprintf(" (%d)", getsInflight), ""},
		[]string{"  the non-Shale load's rate (relayed GETs), MB/s", mr(col(phaseHog, func(p phaseResult) float64 { return p.mbps }), "%.0f"), "", "", ""},
	)
	// The replay's p99 excess over its GETs made by a non-Shale client,
	// round by round: what the broker adds beyond the machine's part.
	if on[phaseReplay] && on[phaseGets] {
		var broker []float64
		for r := range res {
			broker = append(broker, ms(res[r][phaseReplay].p99-res[r][phaseGets].p99))
		}
		rows = append(rows, []string{"  p99 of the replay less that of its GETs by a non-Shale client (the broker's part), ms", mr(broker, "%+.2f"), "", "", ""})
	}
	// The rounds with MinIO and the replay's client niced: a figure of
	// their own, beside the alone phases of the same rounds.
	if len(remote) > 0 {
		var a50, a99, r50, r99, diff []float64
		var aBroker, rBroker, rSched []bucketRange
		for _, rr := range remote {
			a50, a99 = append(a50, ms(rr[0].p50)), append(a99, ms(rr[0].p99))
			r50, r99 = append(r50, ms(rr[1].p50)), append(r99, ms(rr[1].p99))
			diff = append(diff, ms(rr[1].p99-rr[0].p99))
			aBroker, rBroker, rSched = append(aBroker, rr[0].broker99), append(rBroker, rr[1].broker99), append(rSched, rr[1].sched99)
		}
		rows = append(rows,
			[]string{fmt.Sprintf("produce at %.0f MB/s alone, in the rounds after MinIO was niced: p50 / p99 ms", uo.latRate), mr(a50, "%.2f") + " / " + mr(a99, "%.2f"),
				"the broker's own p99, ms", medianBucket(aBroker), ""},
			[]string{fmt.Sprintf("produce at %.0f MB/s %s: p50 / p99 ms", uo.latRate, phaseNames[phaseRemote]), mr(r50, "%.2f") + " / " + mr(r99, "%.2f"),
				"the broker's own p99 / its goroutines' wait p99, ms", medianBucket(rBroker) + " / " + medianBucket(rSched), "p99 " + mr(diff, "%+.2f") + " ms"})
	}
	fmt.Printf("\nproduce latency beside a cold replay: %d rounds of %s (+%s warm-up) per phase, %d requests of %d KiB per phase; load %s before, %s after\n",
		rounds, uo.latLength, cfg.warmup, res[0][phaseAlone].samples, cfg.batchBytes>>10, load, loadAverage())
	for r := range res {
		a, rp, g, h := res[r][phaseAlone], res[r][phaseReplay], res[r][phaseGets], res[r][phaseHog]
		fmt.Printf("  round %d: p99 alone %.2f ms, replay %.2f ms (%+.2f), GETs %.2f ms (%+.2f), hog %.2f ms (%+.2f); broker's own p99 in %s / %s / %s / %s ms; cores %.2f / %.2f / %.2f / %.2f (broker %.2f / %.2f / %.2f / %.2f, MinIO %.2f / %.2f / %.2f / %.2f, bench %.2f / %.2f / %.2f / %.2f)\n",
			r, ms(a.p99), ms(rp.p99), ms(rp.p99-a.p99), ms(g.p99), ms(g.p99-a.p99), ms(h.p99), ms(h.p99-a.p99), a.broker99, rp.broker99, g.broker99, h.broker99,
			a.totalCores(), rp.totalCores(), g.totalCores(), h.totalCores(), a.cores[0], rp.cores[0], g.cores[0], h.cores[0],
			a.cores[1], rp.cores[1], g.cores[1], h.cores[1], a.cores[2], rp.cores[2], g.cores[2], h.cores[2])
	}
	for r, rr := range remote {
		fmt.Printf("  round %d, MinIO and the replay's client at nice 19: p99 alone %.2f ms, replay %.2f ms (%+.2f); broker's own p99 in %s / %s ms; cores %.2f / %.2f (broker %.2f / %.2f, MinIO %.2f / %.2f, bench %.2f / %.2f)\n",
			r, ms(rr[0].p99), ms(rr[1].p99), ms(rr[1].p99-rr[0].p99), rr[0].broker99, rr[1].broker99, rr[0].totalCores(), rr[1].totalCores(),
			rr[0].cores[0], rr[1].cores[0], rr[0].cores[1], rr[1].cores[1], rr[0].cores[2], rr[1].cores[2])
	}
	return rows, nil
}

// replayLoop reads topic's partition 0 with raw fetches, one in flight,
// from offset from until ctx ends, going back to offset 0 at end. It
// returns where it stopped and the bytes of whole batches read. With
// niced, it runs on a thread of its own at nice 19.
func replayLoop(ctx context.Context, addr, topic string, from, end int64, niced bool) (int64, int64, error) {
	if niced {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		if err := niceThread(19); err != nil {
			return from, 0, err
		}
	}
	ff, err := newFetchFrame(topic, []int32{0}, tierFetchBytes, tierFetchBytes)
	if err != nil {
		return from, 0, err
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return from, 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReaderSize(c, 64<<10)
	var buf, body []byte
	next, moved := from, int64(0)
	for corr := int32(0); ; corr++ {
		if next >= end {
			next = 0
		}
		setCorrelationID(ff.frame, corr)
		ff.setOffset(0, next)
		if _, err := c.Write(ff.frame); err != nil {
			return next, moved, errors.Join(ctx.Err(), err)
		}
		if body, buf, err = readResponse(r, buf, corr); err != nil {
			return next, moved, errors.Join(ctx.Err(), err)
		}
		f, err := parseFetchResponse(body)
		if err != nil {
			return next, moved, err
		}
		if f.records == 0 {
			return next, moved, fmt.Errorf("replay fetch at %d returned no whole batch", next)
		}
		next, moved = f.next, moved+f.bytes
		if ctx.Err() != nil {
			return next, moved, ctx.Err()
		}
	}
}

// pacedGets GETs chunks from index at on (wrapping around), inflight at
// a time, paced to rate MB/s, until ctx ends, and returns the next chunk's
// index and the bytes moved. With relay, each chunk is written to a
// loopback connection another goroutine drains: the work of relaying the
// bucket to a client, done outside the broker. Without, each GET's body is
// read into a buffer of its slot, reused (as the broker reads into pooled
// chunk buffers), and dropped: the object store's and a client's part of
// a replay's GETs alone.
func pacedGets(ctx context.Context, b objectstore.Bucket, chunks []chunk, at int64, rate float64, inflight int, relay bool) (int64, int64, error) {
	if len(chunks) == 0 {
		return at, 0, errors.New("no objects to GET")
	}
	var c net.Conn
	if relay {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return at, 0, err
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
		if c, err = net.Dial("tcp", l.Addr().String()); err != nil {
			return at, 0, err
		}
		defer c.Close()
	}
	var (
		mu    sync.Mutex
		moved int64
		first error
		wg    sync.WaitGroup
		slots = make(chan []byte, inflight)
	)
	for range inflight {
		slots <- nil
	}
	start := time.Now()
	for i := at; ctx.Err() == nil; i++ {
		ch := chunks[i%int64(len(chunks))]
		mu.Lock()
		due := start.Add(time.Duration(float64(moved) / (rate * 1e6) * float64(time.Second)))
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(due)):
		}
		var buf []byte
		select {
		case <-ctx.Done():
		case buf = <-slots:
		}
		if ctx.Err() != nil {
			at = i
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if relay {
				var data []byte
				if data, err = getChunk(ctx, b, ch.key, ch.off, ch.len); err == nil {
					mu.Lock()
					_, err = c.Write(data)
					moved += int64(len(data))
					mu.Unlock()
				}
			} else {
				if int64(cap(buf)) < ch.len {
					buf = make([]byte, ch.len)
				}
				if err = readChunk(ctx, b, ch, buf[:ch.len]); err == nil {
					mu.Lock()
					moved += ch.len
					mu.Unlock()
				}
			}
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				first = cmpOr(first, err)
				mu.Unlock()
			}
			slots <- buf
		}()
		at = i + 1
	}
	wg.Wait()
	return at, moved, first
}

// readChunk reads a chunk whole into buf (of its length).
func readChunk(ctx context.Context, b objectstore.Bucket, ch chunk, buf []byte) error {
	body, err := b.Get(ctx, ch.key, ch.off, ch.len)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = io.ReadFull(body, buf)
	return err
}

// bucketRange is the bucket of a histogram a quantile fell in, in
// seconds: the quantile lay above lo and at most hi (lo 0 for the first
// bucket, hi +Inf above the last bound; both -1: no histogram). A bucket's
// bound is not a measurement: the quantile may lie anywhere in it.
type bucketRange struct{ lo, hi float64 }

// String prints the bucket in milliseconds, "lo-hi".
func (r bucketRange) String() string {
	switch {
	case r.hi < 0:
		return "n/a"
	case math.IsInf(r.hi, 1):
		return fmt.Sprintf(">%.2f", r.lo*1e3)
	}
	return fmt.Sprintf("%.2f-%.2f", r.lo*1e3, r.hi*1e3)
}

// histogramBuckets returns the buckets holding the quantiles qs of what a
// Prometheus histogram (the series whose names start with prefix, then
// le="...") counted between two scrapes.
func histogramBuckets(before, after map[string]float64, prefix string, qs ...float64) (bucketRange, bucketRange) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range after {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		i := strings.Index(rest, `le="`)
		if i < 0 {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(rest[i+4:], "}"), `"`), 64) // +Inf included
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - before[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	out := make([]bucketRange, len(qs))
	if len(bs) == 0 {
		return bucketRange{-1, -1}, bucketRange{-1, -1}
	}
	total := bs[len(bs)-1].n
	if total <= 0 {
		return bucketRange{-1, -1}, bucketRange{-1, -1}
	}
	for i, q := range qs {
		lo := 0.0
		out[i] = bucketRange{lo, bs[len(bs)-1].le}
		for _, b := range bs {
			if b.n >= q*total {
				out[i] = bucketRange{lo, b.le}
				break
			}
			lo = b.le
		}
		if math.IsInf(out[i].hi, 1) && len(bs) > 1 {
			out[i].lo = bs[len(bs)-2].le
		}
	}
	return out[0], out[1]
}

// medianBucket prints the buckets of several rounds: the median round's
// (by upper bound, the upper of the two middle ones for an even count),
// then the lowest and highest rounds' when they differ from it.
func medianBucket(rs []bucketRange) string {
	if len(rs) == 0 {
		return "n/a"
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b bucketRange) int { return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo)) })
	m := s[len(s)/2]
	if s[0] == s[len(s)-1] {
		return m.String()
	}
	return fmt.Sprintf("%s (%s to %s)", m, s[0], s[len(s)-1])
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// niceThread sets the calling thread's niceness (Linux nices threads one
// by one).
func niceThread(n int) error {
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n)
}

// niceProcess sets the niceness of every thread of process pid; the
// threads it starts later inherit it from theirs.
func niceProcess(pid, n int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
