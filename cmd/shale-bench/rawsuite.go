package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rawOptions are the raw load generator's flags.
type rawOptions struct {
	conns, inflight, partitions int
	recordBytes, batchBytes     int
	fetchBytes                  int
	warmup, duration            time.Duration
	acks                        string // comma-separated: 0, 1, all
	profileDir                  string
}

func (r rawOptions) config() rawConfig {
	parts := r.partitions
	if parts <= 0 {
		parts = r.conns
	}
	return rawConfig{conns: r.conns, inflight: r.inflight, partitions: parts,
		recordBytes: r.recordBytes, batchBytes: r.batchBytes, warmup: r.warmup, duration: r.duration}
}

// rawMeasure is one raw run against one target with the CPU each side used.
type rawMeasure struct {
	res       rawResult
	brokerCPU time.Duration // -1: unknown
	clientCPU time.Duration
	gcs       int64 // broker GC cycles during the run, -1: unknown
}

// runRawSuite runs raw produce (for each acks) and raw fetch against kfake
// and Shale, each in a process of its own so that their CPU is read apart
// from the load generator's, beside the disk and loopback references
// measured in the same run.
func runRawSuite(o options, shale, kfake *target) error {
	ro := o.raw
	cfg := ro.config()
	fmt.Printf("raw load: %d connections x %d requests in flight, %d partitions, %d-byte records in %d-byte batches, fetches of %d bytes, %s measured after %s of warm-up\n",
		cfg.conns, cfg.inflight, cfg.partitions, cfg.recordBytes, cfg.batchBytes, ro.fetchBytes, cfg.duration, cfg.warmup)
	disk, loop, err := references(shale, cfg.conns)
	if err != nil {
		return err
	}
	fmt.Printf("references (before): disk %.0f MB/s (sequential 1 MiB writes, fdatasync every 8 MiB, %s), loopback TCP %.0f MB/s (%d connections); load average %s\n",
		disk/1e6, dataDirOf(shale), loop/1e6, cfg.conns, loadAverage())

	var rows [][]string
	targets := []*target{kfake, shale}
	acksList := strings.Split(ro.acks, ",")
	fetchTopic := ""
	for i, a := range acksList {
		acks, name, err := parseAcks(a)
		if err != nil {
			return err
		}
		topic := fmt.Sprintf("raw-acks-%s-%d", name, time.Now().UnixNano())
		keep := name == "1" || (fetchTopic == "" && i == len(acksList)-1)
		var ms [2]rawMeasure
		for ti, t := range targets {
			if err := createTopicNamed(t.addr, topic, cfg.partitions); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			workload := "produce acks=" + name
			ms[ti], err = measureRaw(t, ro, workload, cfg, func(cfg rawConfig) (rawResult, error) {
				return rawProduce(t.addr, topic, acks, cfg)
			})
			if err != nil {
				return fmt.Errorf("raw %s against %s: %w", workload, t.name, err)
			}
			if !keep {
				deleteTopic(t.addr, topic)
			}
		}
		if keep {
			fetchTopic = topic
		}
		rows = append(rows, rawRows("produce acks="+name, ms, disk, "disk")...)
	}
	if fetchTopic != "" && ro.fetchBytes > 0 {
		fcfg := cfg
		fcfg.batchBytes = ro.fetchBytes
		batch, records := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
		perFetch := int64(records) * int64(max(1, ro.fetchBytes/len(batch)))
		var ms [2]rawMeasure
		for ti, t := range targets {
			ends, err := endOffsets(t.addr, fetchTopic, cfg.partitions)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			ms[ti], err = measureRaw(t, ro, "fetch", fcfg, func(cfg rawConfig) (rawResult, error) {
				return rawFetch(t.addr, fetchTopic, ends, perFetch, cfg)
			})
			if err != nil {
				return fmt.Errorf("raw fetch against %s: %w", t.name, err)
			}
			deleteTopic(t.addr, fetchTopic)
		}
		rows = append(rows, rawRows("fetch (hot)", ms, loop, "loopback")...)
	}
	disk2, loop2, err := references(shale, cfg.conns)
	if err != nil {
		return err
	}
	printTable([]string{"raw workload", "target", "MB/s", "records/s", "p50", "p99", "broker CPU ms/MB", "client CPU ms/MB", "broker GC/s", "of reference", "vs kfake"}, rows)
	fmt.Printf("references (after): disk %.0f MB/s, loopback TCP %.0f MB/s; load average %s\n", disk2/1e6, loop2/1e6, loadAverage())
	return nil
}

func references(shale *target, conns int) (disk, loop float64, err error) {
	if disk, err = diskWriteRef(dataDirOf(shale), 2*time.Second); err != nil {
		return 0, 0, fmt.Errorf("disk reference: %w", err)
	}
	if loop, err = loopbackRef(conns, time.Second); err != nil {
		return 0, 0, fmt.Errorf("loopback reference: %w", err)
	}
	return disk, loop, nil
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

// measureRaw runs one raw workload against t, reading the CPU both
// processes used in its measured part and, for Shale, its GC cycles and
// optionally a CPU profile.
func measureRaw(t *target, ro rawOptions, workload string, cfg rawConfig, run func(rawConfig) (rawResult, error)) (rawMeasure, error) {
	var (
		m        rawMeasure
		cpu      *cpuMeter
		gc0      int64 = -1
		profiled       = make(chan error, 1)
	)
	cfg.onMeasure = func() {
		cpu = startCPU(t.pid, os.Getpid())
		if ro.profileDir != "" && t.httpAddr != "" {
			name := "raw-" + strings.NewReplacer(" ", "-", "=", "", "(", "", ")", "").Replace(workload) + ".pprof"
			go func() { profiled <- fetchProfile(t.httpAddr, filepath.Join(ro.profileDir, name), cfg.duration) }()
		} else {
			profiled <- nil
		}
		gc0 = gcCount(t.httpAddr)
	}
	res, err := run(cfg)
	if cpu == nil {
		return m, err
	}
	used := cpu.stop()
	gc1 := gcCount(t.httpAddr)
	if perr := <-profiled; perr != nil {
		fmt.Fprintf(os.Stderr, "profile of %s: %v\n", workload, perr)
	}
	m.res, m.brokerCPU, m.clientCPU, m.gcs = res, used[0], used[1], -1
	if gc0 >= 0 && gc1 >= 0 {
		m.gcs = gc1 - gc0
	}
	return m, err
}

// fetchProfile saves a CPU profile of the broker taken over most of a run
// of length d.
func fetchProfile(httpAddr, path string, d time.Duration) error {
	secs := max(1, int(d.Seconds())-1)
	cl := http.Client{Timeout: d + 30*time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", httpAddr, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
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
	fmt.Fprintf(os.Stderr, "broker CPU profile: %s (go tool pprof -top %s)\n", path, path)
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).DeleteTopics(ctx, topic); err != nil {
		fmt.Fprintf(os.Stderr, "deleting %s: %v\n", topic, err)
	}
}
