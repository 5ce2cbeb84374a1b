package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// rawOptions are the raw load generator's flags.
type rawOptions struct {
	conns, inflight, partitions int
	recordBytes, batchBytes     int
	fetchBytes                  int // per partition (max.partition.fetch.bytes)
	fetchMaxBytes               int // per request (fetch.max.bytes)
	fetchPartitions             int // per request, 0: all
	fetchInflight               int // Fetch requests in flight per connection
	warmup, duration            time.Duration
	rounds                      int
	acks                        string  // comma-separated: 0, 1, all
	rateMBps                    float64 // the fixed-rate latency runs' rate, 0: none
	profileDir                  string
	compressed                  string // codec of an extra acks=1 run of compressed batches, "": none
	recompress                  string // compression.type of an extra acks=1 run of uncompressed batches, "": none
}

func (r rawOptions) config() rawConfig {
	parts := r.partitions
	if parts <= 0 {
		parts = r.conns
	}
	return rawConfig{conns: r.conns, inflight: r.inflight, partitions: parts,
		recordBytes: r.recordBytes, batchBytes: r.batchBytes, warmup: r.warmup, duration: r.duration}
}

// fetchConfig is the hot fetch run's configuration beside cfg, the
// produce runs' whose data it reads, and the records a Fetch of one
// partition returns when full (how far each request in flight moves on).
func (r rawOptions) fetchConfig(cfg rawConfig) (fcfg rawConfig, recordsPerFetch int64) {
	fcfg = cfg
	fcfg.batchBytes = r.fetchBytes
	// A Kafka consumer's defaults: each partition up to
	// max.partition.fetch.bytes (1 MiB), the request up to
	// fetch.max.bytes (50 MiB), all its partitions on the broker in one
	// Fetch.
	fcfg.fetchMaxBytes = r.fetchMaxBytes
	fcfg.fetchPartitions = r.fetchPartitions
	// A Kafka consumer has one Fetch in flight per connection (per
	// broker); more in flight is a load no consumer makes.
	fcfg.inflight = max(1, r.fetchInflight)
	batch, records := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
	return fcfg, int64(records) * int64(max(1, r.fetchBytes/len(batch)))
}

// rawMeasure is one raw workload against one target, summed over its
// rounds, with the CPU each side used.
type rawMeasure struct {
	res       rawResult
	brokerCPU time.Duration // -1: unknown
	brokerSys time.Duration // the part of brokerCPU in the kernel
	clientCPU time.Duration
	gcs       int64 // broker GC cycles during the run, -1: unknown
	// flush is the broker's group commit during the run (from its
	// metrics; zero for kfake): syncs, their seconds, the waiters they
	// answered.
	flush flushStats
}

// flushStats are a broker's group-commit syncs (shale_log_flush_*).
type flushStats struct{ syncs, seconds, waiters float64 }

// brokerCounters reads, in one scrape of a broker's metrics, its GC
// cycles (-1: unknown, as for kfake) and its group commit's syncs.
func brokerCounters(httpAddr string) (int64, flushStats) {
	if httpAddr == "" {
		return -1, flushStats{}
	}
	s := scrape(httpAddr)
	gcs, ok := s["go_gc_duration_seconds_count"]
	if !ok {
		gcs = -1
	}
	return int64(gcs), flushStats{s["shale_log_flush_duration_seconds_count"], s["shale_log_flush_duration_seconds_sum"], s["shale_log_flush_waiters_sum"]}
}

func (f flushStats) minus(o flushStats) flushStats {
	return flushStats{f.syncs - o.syncs, f.seconds - o.seconds, f.waiters - o.waiters}
}

func (f flushStats) plus(o flushStats) flushStats {
	return flushStats{f.syncs + o.syncs, f.seconds + o.seconds, f.waiters + o.waiters}
}

func (m *rawMeasure) merge(o rawMeasure) {
	if m.res.elapsed == 0 {
		*m = o
		return
	}
	m.res.bytes += o.res.bytes
	m.res.records += o.res.records
	m.res.requests += o.res.requests
	m.res.elapsed += o.res.elapsed
	m.res.latencies = append(m.res.latencies, o.res.latencies...)
	slices.Sort(m.res.latencies)
	sum := func(a, b time.Duration) time.Duration {
		if a < 0 || b < 0 {
			return -1
		}
		return a + b
	}
	m.brokerCPU = sum(m.brokerCPU, o.brokerCPU)
	m.brokerSys = sum(m.brokerSys, o.brokerSys)
	m.flush = m.flush.plus(o.flush)
	m.clientCPU = sum(m.clientCPU, o.clientCPU)
	if m.gcs < 0 || o.gcs < 0 {
		m.gcs = -1
	} else {
		m.gcs += o.gcs
	}
}

// rawWorkload is one row pair of the raw table: its name, the reference
// Shale's MB/s is a fraction of, and kfake's and Shale's figures.
type rawWorkload struct {
	name   string
	refFor string // "disk", "window" (the disk at the acks=all window) or "loopback"
	ms     [2]rawMeasure
	// diskLatency, for acks=all at a fixed rate, is the disk's own
	// latency at that load (diskLatencyRef), sorted.
	diskLatency []time.Duration
	// ownRef, when set, is the reference measured beside this workload
	// (before and after it), which its row is a fraction of instead of
	// the suite's.
	ownRef float64
	// roundTripRef, for acks=all, is the disk at its window with the
	// producers' round trip between syncs (diskRoundTripRef), measured
	// beside it: what of the window a closed loop of producers can reach
	// without a broker's work.
	roundTripRef float64
	// pageCacheRef, for acks=1 and acks=all, is the kernel's CPU per
	// MB (ms) of plain writes of as many bytes into new files, measured
	// right after it (pageCacheRef): the machine's share of the
	// broker's kernel time.
	pageCacheRef float64
	// pipelineRef, for acks=all, is the disk with the producers' round
	// trip and each batch answered once synced (diskPipelineRef), with 1
	// and with 2 fdatasyncs in flight per file, measured beside it: what
	// overlapping syncs could buy a group commit on this disk.
	pipelineRef [2]float64
}

// ref is the reference w's Shale figure is a fraction of: its own, or
// the suite's (refs) for its kind.
func (w rawWorkload) ref(refs map[string]float64) float64 {
	if w.ownRef > 0 {
		return w.ownRef
	}
	return refs[w.refFor]
}

// runRawSuite runs raw produce (for each acks, then at a fixed rate) and raw
// fetch against kfake and Shale, each in a process of its own so that their
// CPU is read apart from the load generator's, beside the disk and loopback
// references measured in the same run. Each workload runs o.raw.rounds
// times, alternating between the targets, so that a noisy neighbour weighs
// on both.
func runRawSuite(o options, shale, kfake *target) error {
	ro := o.raw
	cfg := ro.config()
	fetchParts := ro.fetchPartitions
	if fetchParts <= 0 || fetchParts > cfg.partitions {
		fetchParts = cfg.partitions
	}
	fmt.Printf("raw load: %d connections x %d requests in flight, %d partitions, %d-byte records in %d-byte batches, fetches of %d partitions x %d bytes (%d at most in all) with %d in flight per connection, %d round(s) of %s measured after %s of warm-up\n",
		cfg.conns, cfg.inflight, cfg.partitions, cfg.recordBytes, cfg.batchBytes, fetchParts, ro.fetchBytes, ro.fetchMaxBytes, max(1, ro.fetchInflight), max(1, ro.rounds), cfg.duration, cfg.warmup)
	disk, loop, loopMs, err := references(shale, cfg.conns)
	if err != nil {
		return err
	}
	window, err := windowReference(shale, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("references (before): disk %.0f MB/s (sequential 1 MiB writes, fdatasync every 8 MiB, %s), loopback TCP %.0f MB/s at %.2f CPU ms/MB, both ends (%d connections), disk at the acks=all window %.0f MB/s (%d files at once, %d-byte writes, fdatasync every %d KiB); load average %s\n",
		disk/1e6, dataDirOf(shale), loop/1e6, loopMs, cfg.conns, window/1e6, cfg.conns, cfg.batchBytes, cfg.inflight*cfg.batchBytes>>10, loadAverage())

	targets := [2]*target{kfake, shale}
	// rounds runs one workload on both targets, rounds times, each
	// round in the other order; run gets the round, for profiles.
	// roundsOf is rounds over any targets, each round in another order.
	roundsOf := func(targets []*target, name string, cfg rawConfig, run func(t *target, cfg rawConfig) (rawResult, error)) ([]rawMeasure, error) {
		return alternateRounds(targets, ro.rounds, name, cfg, run, func(t *target) string {
			if ro.profileDir == "" || t.httpAddr == "" {
				return ""
			}
			return filepath.Join(ro.profileDir, "raw-"+profileSlug(name))
		})
	}
	rounds := func(name string, cfg rawConfig, run func(t *target, cfg rawConfig) (rawResult, error)) ([2]rawMeasure, error) {
		ms, err := roundsOf(targets[:], name, cfg, run)
		if err != nil {
			return [2]rawMeasure{}, err
		}
		return [2]rawMeasure{ms[0], ms[1]}, nil
	}

	var done []rawWorkload
	var sendfileMeasure *rawMeasure // the fetch's sendfile reference
	fetchTopic := ""
	for _, a := range strings.Split(ro.acks, ",") {
		acks, name, err := parseAcks(a)
		if err != nil {
			return err
		}
		topic, err := createRawTopic(targets, "raw-acks-"+name, cfg.partitions, nil)
		if err != nil {
			return err
		}
		workload := "produce acks=" + name
		// An fsynced run's ceiling, the disk at its window, is taken
		// right before and after it as well: the runs before it (acks=1
		// writes gigabytes) leave this machine's disk slower for a
		// while, which the references at the start of the suite do not
		// see, and both should meet the same disk.
		var beside, besideRT []float64
		var besidePipe [2][]float64 // 1 and 2 syncs in flight per file
		besideRef := func() error {
			if acks != -1 {
				return nil
			}
			w, err := windowReference(shale, cfg)
			if err != nil {
				return err
			}
			beside = append(beside, w)
			rt, err := diskRoundTripRef(dataDirOf(shale), cfg.conns, cfg.batchBytes, cfg.inflight*cfg.batchBytes, 2*time.Second)
			if err != nil {
				return fmt.Errorf("disk round trip reference: %w", err)
			}
			besideRT = append(besideRT, rt)
			for k := range besidePipe {
				p, err := diskPipelineRef(dataDirOf(shale), cfg.conns, cfg.batchBytes, cfg.inflight, k+1, 2*time.Second)
				if err != nil {
					return fmt.Errorf("disk pipeline reference: %w", err)
				}
				besidePipe[k] = append(besidePipe[k], p)
			}
			return nil
		}
		if err := besideRef(); err != nil {
			return err
		}
		ms, err := rounds(workload, cfg, func(t *target, cfg rawConfig) (rawResult, error) {
			return rawProduce(t.addr, topic, acks, cfg)
		})
		if err != nil {
			return err
		}
		if err := besideRef(); err != nil {
			return err
		}
		w := rawWorkload{name: workload, refFor: "disk", ms: ms}
		if acks != 0 {
			perRound := ms[1].res.bytes / int64(max(1, ro.rounds))
			if w.pageCacheRef, err = pageCacheRef(dataDirOf(shale), cfg.conns, cfg.batchBytes, perRound); err != nil {
				return fmt.Errorf("page cache reference: %w", err)
			}
		}
		if acks == -1 {
			w.refFor = "window" // fsynced: the disk at the window in flight
			w.ownRef = (beside[0] + beside[1]) / 2
			w.roundTripRef = (besideRT[0] + besideRT[1]) / 2
			for k := range besidePipe {
				w.pipelineRef[k] = (besidePipe[k][0] + besidePipe[k][1]) / 2
			}
			fmt.Printf("reference beside produce acks=all: disk at the acks=all window %.0f MB/s before it, %.0f after it; with a loopback round trip per fdatasync (the window sent, synced, answered, as producers keeping it in flight) %.0f before, %.0f after; with the round trip and each batch answered once synced, 1 fdatasync in flight per file %.0f before, %.0f after, 2 in flight %.0f before, %.0f after\n",
				beside[0]/1e6, beside[1]/1e6, besideRT[0]/1e6, besideRT[1]/1e6, besidePipe[0][0]/1e6, besidePipe[0][1]/1e6, besidePipe[1][0]/1e6, besidePipe[1][1]/1e6)
		}
		done = append(done, w)
		if fetchTopic == "" && name == "1" {
			fetchTopic = topic // read back by the fetch run
		} else {
			deleteRawTopic(targets, topic)
		}
	}
	if ro.compressed != "" {
		w, err := compressedRawWorkload(ro.compressed, targets, cfg, rounds)
		if err != nil {
			return err
		}
		done = append(done, w)
	}
	if ro.recompress != "" {
		w, err := recompressRawWorkload(ro.recompress, targets, cfg, rounds)
		if err != nil {
			return err
		}
		done = append(done, w)
	}
	if ro.rateMBps > 0 {
		for _, name := range []string{"1", "all"} {
			acks, _, _ := parseAcks(name)
			topic, err := createRawTopic(targets, "raw-rate-acks-"+name, cfg.partitions, nil)
			if err != nil {
				return err
			}
			rcfg := cfg
			rcfg.rateMBps = ro.rateMBps
			workload := fmt.Sprintf("produce acks=%s @%g MB/s", name, ro.rateMBps)
			// acks=all's latency beside the disk's own at the same
			// load, measured before and after it.
			var diskLat []time.Duration
			latencyRef := func() error {
				if acks != -1 {
					return nil
				}
				settleDisk()
				lat, err := diskLatencyRef(dataDirOf(shale), rcfg)
				if err != nil {
					return fmt.Errorf("disk latency reference: %w", err)
				}
				diskLat = append(diskLat, lat...)
				return nil
			}
			if err := latencyRef(); err != nil {
				return err
			}
			ms, err := rounds(workload, rcfg, func(t *target, cfg rawConfig) (rawResult, error) {
				return rawProduce(t.addr, topic, acks, cfg)
			})
			if err != nil {
				return err
			}
			if err := latencyRef(); err != nil {
				return err
			}
			slices.Sort(diskLat)
			done = append(done, rawWorkload{name: workload, refFor: "disk", ms: ms, diskLatency: diskLat})
			deleteRawTopic(targets, topic)
		}
	}
	if fetchTopic != "" && ro.fetchBytes > 0 {
		fcfg, perFetch := ro.fetchConfig(cfg)
		var ends [2][]int64
		for ti, t := range targets {
			if ends[ti], err = endOffsets(t.addr, fetchTopic, cfg.partitions); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
		// Beside kfake and Shale, the sendfile reference answers the
		// same requests with the same batches from a page-cached file.
		ref, err := startSendfileRef(dataDirOf(shale), cfg.recordBytes, cfg.batchBytes)
		if err != nil {
			return fmt.Errorf("sendfile reference: %w", err)
		}
		defer ref.close()
		ms3, err := roundsOf([]*target{kfake, shale, ref}, "fetch", fcfg, func(t *target, cfg rawConfig) (rawResult, error) {
			if t == ref {
				return rawFetch(t.addr, fetchTopic, ends[1], perFetch, cfg)
			}
			ti := slices.Index(targets[:], t)
			return rawFetch(t.addr, fetchTopic, ends[ti], perFetch, cfg)
		})
		if err != nil {
			return err
		}
		done = append(done, rawWorkload{name: "fetch (hot)", refFor: "loopback", ms: [2]rawMeasure{ms3[0], ms3[1]}})
		sendfileMeasure = &ms3[2]
		deleteRawTopic(targets, fetchTopic)
	}
	disk2, loop2, loopMs2, err := references(shale, cfg.conns)
	if err != nil {
		return err
	}
	window2, err := windowReference(shale, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("references (after): disk %.0f MB/s, loopback TCP %.0f MB/s at %.2f CPU ms/MB, disk at the acks=all window %.0f MB/s; load average %s\n", disk2/1e6, loop2/1e6, loopMs2, window2/1e6, loadAverage())
	refs := map[string]float64{"disk": (disk + disk2) / 2, "loopback": (loop + loop2) / 2, "window": (window + window2) / 2, "loopback CPU": (loopMs + loopMs2) / 2}
	var rows [][]string
	for _, w := range done {
		rows = append(rows, rawRows(w.name, w.ms, w.ref(refs), w.refFor)...)
		if w.name == "fetch (hot)" && sendfileMeasure != nil {
			r := rawRows(w.name, [2]rawMeasure{w.ms[0], *sendfileMeasure}, w.ref(refs), w.refFor)[1]
			r[1], r[len(r)-1] = "sendfile ref", ""
			rows = append(rows, r)
		}
		if len(w.diskLatency) > 0 {
			ref := rawResult{latencies: w.diskLatency}
			rows = append(rows, []string{w.name, "disk latency ref", "-", "-",
				ref.percentile(0.5).Round(10 * time.Microsecond).String(), ref.percentile(0.99).Round(10 * time.Microsecond).String(),
				"-", "-", "-", "-", ""})
		}
	}
	printTable([]string{"raw workload", "target", "MB/s", "records/s", "p50", "p99", "broker CPU ms/MB", "client CPU ms/MB", "broker GC/s", "of reference (mean)", "vs kfake"}, rows)
	printRawTargets(done, refs, cfg.inflight, cfg.partitions, sendfileMeasure)
	return nil
}

// printRawTargets sets the figures beside the throughput targets Shale
// aims for on this machine.
func printRawTargets(done []rawWorkload, refs map[string]float64, inflight, partitions int, sendfileRef *rawMeasure) {
	find := func(name string) *rawMeasure {
		for i := range done {
			if done[i].name == name {
				return &done[i].ms[1]
			}
		}
		return nil
	}
	var lines []string
	if a1 := find("produce acks=1"); a1 != nil {
		for i := range done {
			if done[i].name == "produce acks=1" {
				k := done[i].ms[0]
				// The kernel's part (the socket reads, the page cache
				// writes, the answers' sends) apart from the broker's
				// own code.
				lines = append(lines, fmt.Sprintf("acks=1: %.2fx kfake (target >= 1.5x), %.2f broker CPU ms/MB (<= 1.2; %.2f of it in the kernel), %.0f%% of disk (>= 70%%)",
					a1.res.mbps()/k.res.mbps(), msPerMB(a1.brokerCPU, a1.res.bytes), msPerMB(a1.brokerSys, a1.res.bytes), 100*a1.res.mbps()*1e6/refs["disk"]))
				lines = append(lines, pageCacheLines("acks=1", done[i])...)
			}
		}
		if all := find("produce acks=all"); all != nil {
			// Each acks=all request waits for an fsync: with few
			// in flight, the window over the fsync latency bounds it.
			// The disk's own window reference bounds it: when that
			// is below 0.6x acks=1, the target is out of reach at
			// this window on this disk, whatever the broker does.
			win, rt, pipe := refs["window"]/1e6, 0.0, [2]float64{}
			for _, w := range done {
				if w.name == "produce acks=all" {
					win, rt = w.ref(refs)/1e6, w.roundTripRef/1e6
					pipe = [2]float64{w.pipelineRef[0] / 1e6, w.pipelineRef[1] / 1e6}
				}
			}
			reach := "reachable"
			if win < 0.6*a1.res.mbps() {
				reach = "beyond the disk at this window"
			}
			lines = append(lines, fmt.Sprintf("acks=all: %.0f MB/s beside acks=1 %.0f MB/s and the disk at the acks=all window %.0f MB/s: %.2fx acks=1 (target >= 0.6x: %s, the disk's window is %.2fx acks=1), %.0f%% of the disk at its window, p50 %s with %d in flight per connection (-raw-inflight)",
				all.res.mbps(), a1.res.mbps(), win, all.res.mbps()/a1.res.mbps(), reach, win/a1.res.mbps(),
				100*all.res.mbps()/win, all.res.percentile(0.5).Round(10*time.Microsecond), inflight))
			if rt > 0 {
				lines = append(lines, fmt.Sprintf("acks=all: %.0f%% of the disk at its window with the producers' round trip per fdatasync (%.0f MB/s, %.2fx acks=1, %.0f%% of the window): what is left to the broker",
					100*all.res.mbps()/rt, rt, rt/a1.res.mbps(), 100*rt/win))
			}
			if pipe[0] > 0 && pipe[1] > 0 {
				lines = append(lines, fmt.Sprintf("acks=all: the disk with the round trip, each batch answered once synced: %.0f MB/s with 1 fdatasync in flight per file (%.2fx acks=1), %.0f MB/s with 2 (%.2fx acks=1, %.2fx of 1 in flight): what overlapping syncs could buy",
					pipe[0], pipe[0]/a1.res.mbps(), pipe[1], pipe[1]/a1.res.mbps(), pipe[1]/pipe[0]))
			}
			// Producers that keep a window in flight wait a round
			// trip between a sync's answers and the next requests:
			// the best of the references that have it (one sync per
			// window, or syncs as soon as possible, one or two in
			// flight) bounds what a group commit can reach here.
			if loop := max(rt, pipe[0], pipe[1]); loop > 0 {
				reach := "reachable"
				if loop < 0.6*a1.res.mbps() {
					reach = "beyond this disk with the producers' round trip"
				}
				lines = append(lines, fmt.Sprintf("acks=all: the best disk reference with the producers' round trip is %.0f MB/s, %.2fx acks=1 (target >= 0.6x: %s); Shale reaches %.0f%% of it",
					loop, loop/a1.res.mbps(), reach, 100*all.res.mbps()/loop))
			}
		}
	}
	for _, w := range done {
		if w.name != "produce acks=all" {
			continue
		}
		// With or without an acks=1 run to set it beside.
		if f, secs := w.ms[1].flush, w.ms[1].res.elapsed.Seconds(); f.syncs > 0 && secs > 0 {
			// How the group commit batched: a sync's fixed cost paid
			// per this many produces, and the share of the run each
			// partition's log spent in its syncs (the rest: the
			// producers' round trip and the reading, validating and
			// appending of what they sent).
			lines = append(lines, fmt.Sprintf("acks=all: group commit: %.0f syncs a second, %.2f ms each, %.1f produces answered per sync (of %d in flight per connection); each of the %d partitions' logs syncing %.0f%% of the run",
				f.syncs/secs, 1e3*f.seconds/f.syncs, f.waiters/f.syncs, inflight, partitions, 100*f.seconds/secs/float64(partitions)))
		}
		lines = append(lines, pageCacheLines("acks=all", w)...)
	}
	for _, w := range done {
		if !strings.Contains(w.name, "@") {
			continue
		}
		s := w.ms[1].res
		line := fmt.Sprintf("%s: p99 %s (target < 5ms)", w.name, s.percentile(0.99).Round(10*time.Microsecond))
		if len(w.diskLatency) > 0 {
			// The disk's own latency at this load, with the best
			// group commit and no broker: what of acks=all's
			// latency is the disk's.
			d := rawResult{latencies: w.diskLatency}
			line += fmt.Sprintf(", p50 %s; the disk alone at this load (same batches, fdatasync as soon as the last returned): p50 %s, p99 %s; the broker adds %s at p50, %s at p99",
				s.percentile(0.5).Round(10*time.Microsecond), d.percentile(0.5).Round(10*time.Microsecond), d.percentile(0.99).Round(10*time.Microsecond),
				(s.percentile(0.5) - d.percentile(0.5)).Round(10*time.Microsecond), (s.percentile(0.99) - d.percentile(0.99)).Round(10*time.Microsecond))
		}
		lines = append(lines, line)
	}
	if f := find("fetch (hot)"); f != nil {
		// Broker and client share the machine's cores: the CPU both
		// spend per MB, against what loopback TCP's two ends spend,
		// bounds the fraction of loopback a fetch can reach.
		b, c := msPerMB(f.brokerCPU, f.res.bytes), msPerMB(f.clientCPU, f.res.bytes)
		lines = append(lines, fmt.Sprintf("fetch: %.0f MB/s (target >= 3000), %.0f%% of loopback TCP (%.0f MB/s); %.2f broker + %.2f client CPU ms/MB against loopback's %.2f for both ends",
			f.res.mbps(), 100*f.res.mbps()*1e6/refs["loopback"], refs["loopback"]/1e6, b, c, refs["loopback CPU"]))
		if s := sendfileRef; s != nil {
			// The same requests answered by a server doing nothing
			// but sendfile of a page-cached file: what a
			// sendfile-based broker can reach here, with the client
			// beside it on the same cores.
			lines = append(lines, fmt.Sprintf("fetch: %.0f%% of the same-run sendfile reference (%.0f MB/s, %.2f server + %.2f client CPU ms/MB; %.0f%% of loopback TCP)",
				100*f.res.mbps()/s.res.mbps(), s.res.mbps(), msPerMB(s.brokerCPU, s.res.bytes), msPerMB(s.clientCPU, s.res.bytes), 100*s.res.mbps()*1e6/refs["loopback"]))
		}
	}
	for _, l := range lines {
		fmt.Println("  " + l)
	}
}

// pageCacheLines sets a produce run's broker CPU beside the page-cache
// reference measured after it, if any: most of the kernel's part of the
// broker's CPU is the copies into the page cache, whose cost is the
// machine's (see pageCacheRef).
func pageCacheLines(name string, w rawWorkload) []string {
	m := w.ms[1]
	if w.pageCacheRef <= 0 || m.brokerCPU < 0 || m.res.bytes == 0 {
		return nil
	}
	cpu := msPerMB(m.brokerCPU, m.res.bytes)
	return []string{fmt.Sprintf("%s: plain writes of as many bytes into new files, right after it, cost the kernel %.2f ms/MB here (page-cache reference): the broker's CPU beside it is %.2f ms/MB (%.2f in all)",
		name, w.pageCacheRef, cpu-w.pageCacheRef, cpu)}
}

func createRawTopic(targets [2]*target, prefix string, partitions int, configs map[string]*string) (string, error) {
	topic := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	for _, t := range targets {
		if err := createTopicWith(t.addr, topic, partitions, configs); err != nil {
			return "", fmt.Errorf("creating %s on %s: %w", topic, t.name, err)
		}
	}
	return topic, nil
}

func deleteRawTopic(targets [2]*target, topic string) {
	for _, t := range targets {
		deleteTopic(t.addr, topic)
	}
}

// references measures the disk and loopback TCP, with the CPU loopback's
// two ends use per MB.
func references(shale *target, conns int) (disk, loop, loopMs float64, err error) {
	if disk, err = diskWriteRef(dataDirOf(shale), 2*time.Second); err != nil {
		return 0, 0, 0, fmt.Errorf("disk reference: %w", err)
	}
	if loop, loopMs, err = loopbackCPU(conns, time.Second); err != nil {
		return 0, 0, 0, fmt.Errorf("loopback reference: %w", err)
	}
	return disk, loop, loopMs, nil
}

// windowReference is diskWindowRef at the raw load's shape: a file per
// connection, its batches, its window.
func windowReference(shale *target, cfg rawConfig) (float64, error) {
	w, err := diskWindowRef(dataDirOf(shale), cfg.conns, cfg.batchBytes, cfg.inflight*cfg.batchBytes, 2*time.Second)
	if err != nil {
		return 0, fmt.Errorf("disk window reference: %w", err)
	}
	return w, nil
}

func parseAcks(s string) (int16, string, error) {
	switch strings.TrimSpace(s) {
	case "0":
		return 0, "0", nil
	case "1":
		return 1, "1", nil
	case "all", "-1":
		return -1, "all", nil
	}
	return 0, "", fmt.Errorf("-raw-acks: %q is not 0, 1 or all", s)
}

// alternateRounds runs one raw workload on each of targets, rounds times,
// each round in another order, so that a noisy neighbour weighs on all of
// them, and sums each target's measures. profile names the CPU and
// allocation profiles of a target's first round ("": none; see
// measureRaw).
func alternateRounds(targets []*target, rounds int, name string, cfg rawConfig, run func(t *target, cfg rawConfig) (rawResult, error), profile func(t *target) string) ([]rawMeasure, error) {
	ms := make([]rawMeasure, len(targets))
	for r := 0; r < max(1, rounds); r++ {
		for k := range targets {
			ti := (k + r) % len(targets)
			t := targets[ti]
			p := ""
			if r == 0 {
				p = profile(t)
			}
			m, err := measureRaw(t, p, cfg, run)
			if err != nil {
				return ms, fmt.Errorf("raw %s against %s: %w", name, t.name, err)
			}
			ms[ti].merge(m)
		}
	}
	return ms, nil
}

// profileSlug is a workload's name as a file name.
func profileSlug(name string) string {
	return strings.NewReplacer(" ", "-", "=", "", "@", "", "/", "", "(", "", ")", "").Replace(name)
}

// measureRaw runs one raw workload against t, reading the CPU both
// processes used in its measured part and, for Shale, its GC cycles and,
// when profile is set, CPU and allocation profiles saved under that name.
func measureRaw(t *target, profile string, cfg rawConfig, run func(*target, rawConfig) (rawResult, error)) (rawMeasure, error) {
	var (
		m        rawMeasure
		cpu      *cpuMeter
		gc0      int64 = -1
		flush0   flushStats
		profiled = make(chan error, 1)
	)
	settleDisk()
	cfg.onMeasure = func() {
		cpu = startCPU(t.pid, os.Getpid())
		if profile != "" {
			go func() {
				allocs := make(chan error, 1)
				go func() { allocs <- fetchProfile(t.httpAddr, "allocs", profile+".allocs.pprof", cfg.duration) }()
				err := fetchProfile(t.httpAddr, "profile", profile+".pprof", cfg.duration)
				profiled <- errors.Join(err, <-allocs)
			}()
		} else {
			profiled <- nil
		}
		gc0, flush0 = brokerCounters(t.httpAddr)
	}
	res, err := run(t, cfg)
	if cpu == nil {
		return m, err
	}
	used := cpu.stop()
	gc1, flush1 := brokerCounters(t.httpAddr)
	m.flush = flush1.minus(flush0)
	if perr := <-profiled; perr != nil {
		fmt.Fprintf(os.Stderr, "profile %s: %v\n", profile, perr)
	}
	m.res, m.brokerCPU, m.brokerSys, m.clientCPU, m.gcs = res, used[0], cpu.system[0], used[1], -1
	if gc0 >= 0 && gc1 >= 0 {
		m.gcs = gc1 - gc0
	}
	return m, err
}

// fetchProfile saves a profile of the broker (kind: "profile" for CPU,
// "allocs" for what was allocated) taken over most of a run of length d.
func fetchProfile(httpAddr, kind, path string, d time.Duration) error {
	secs := max(1, int(d.Seconds())-1)
	cl := http.Client{Timeout: d + 30*time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", httpAddr, kind, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s", kind, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "broker %s profile: %s\n", kind, path)
	return f.Close()
}

// rawRows formats kfake's and Shale's figures for one workload; ref is the
// reference Shale's MB/s is a fraction of.
func rawRows(workload string, ms [2]rawMeasure, ref float64, refName string) [][]string {
	ms2 := func(m rawMeasure, cpu time.Duration) string {
		v := msPerMB(cpu, m.res.bytes)
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	lat := func(m rawMeasure, p float64) string {
		if len(m.res.latencies) == 0 {
			return "-"
		}
		return m.res.percentile(p).Round(10 * time.Microsecond).String()
	}
	gcs := func(m rawMeasure) string {
		if m.gcs < 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", float64(m.gcs)/m.res.elapsed.Seconds())
	}
	row := func(name string, m rawMeasure) []string {
		return []string{workload, name,
			fmt.Sprintf("%.0f", m.res.mbps()), fmt.Sprintf("%.0f", m.res.recordsPerSec()),
			lat(m, 0.5), lat(m, 0.99),
			ms2(m, m.brokerCPU), ms2(m, m.clientCPU), gcs(m),
			fmt.Sprintf("%.0f%% %s", 100*m.res.mbps()*1e6/ref, refName)}
	}
	k, s := row("kfake", ms[0]), row("shale", ms[1])
	k = append(k, "")
	s = append(s, fmt.Sprintf("%.2fx", ms[1].res.mbps()/ms[0].res.mbps()))
	return [][]string{k, s}
}

// endOffsets returns each partition's high watermark.
func endOffsets(addr, topic string, partitions int) ([]int64, error) {
	var offs kadm.ListedOffsets
	err := withAdmin(addr, func(ctx context.Context, adm *kadm.Client) (err error) {
		offs, err = adm.ListEndOffsets(ctx, topic)
		return err
	})
	if err != nil {
		return nil, err
	}
	ends := make([]int64, partitions)
	for p := range ends {
		o, ok := offs.Lookup(topic, int32(p))
		if !ok {
			return nil, fmt.Errorf("no end offset for %s/%d", topic, p)
		}
		if o.Err != nil {
			return nil, o.Err
		}
		ends[p] = o.Offset
	}
	return ends, nil
}

func deleteTopic(addr, topic string) {
	err := withAdmin(addr, func(ctx context.Context, adm *kadm.Client) error {
		_, err := adm.DeleteTopics(ctx, topic)
		return err
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "deleting %s: %v\n", topic, err)
	}
}
