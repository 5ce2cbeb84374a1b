// Command shale-bench measures Shale against a ceiling measured in the
// same run: the in-memory franz-go kfake cluster on the same machine. These
// machines are noisy, so only the ratios compare across runs.
//
// It starts `shale dev` (from ./bin/shale by default) and kfake, each as a
// child process, then runs the raw load generator against both (pre-encoded
// Produce and Fetch requests, so the broker and not the client is measured;
// the CPU each process used per MB; the disk and loopback references), and
// the franz-go workloads: records/s, MB/s, their ratio, produce latency at a
// fixed rate, offset commits, rebalance time, and the broker's peak RSS.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

type options struct {
	shaleBin   string
	duration   time.Duration
	recordSize int
	partitions int
	rateMBps   float64
	only       string
	shaleAddr  string
	shaleEnv   string // extra environment of the shale child, comma-separated
	shaleArgs  string // extra arguments of `shale dev`, space-separated
	producers  int    // producer clients at once (set per run)
	acksAll    bool   // produce with acks=all instead of acks=1 (set per run)
	// clientOpts are added to the producers' and consumers' (TLS and
	// SASL, set per run).
	clientOpts []kgo.Opt

	clusterDuration time.Duration
	clusterRounds   int
	clusterRate     float64
	clusterFranz    bool

	groupMembers int
	tierMB       int // MiB the tiering workload replays each round
	tierRounds   int // cold replay rounds, each beside its ceilings
	tierOnly     bool
	tierPartMax  int // max.partition.fetch.bytes of the raw replays
	upload       uploadOptions

	failoverTTLs   string // session TTLs of the failover run, comma-separated
	failoverRounds int

	rejoinMB         int // MiB a wiped follower copies back in the rejoin run
	rejoinPartitions int
	rejoinRounds     int

	txn     txnOptions
	compact compactOptions

	raw       rawOptions
	aclCount  int  // acl run: ACLs of other principals in force beside the bench's
	aclRounds int  // acl run: rounds of each workload, alternating
	kfakeHost bool // serve kfake in this process (the child the benchmark starts)
	// sendfileHost, when set, serves the sendfile reference in this
	// process (the child the benchmark starts), its file in this directory.
	sendfileHost string
}

func main() {
	var o options
	flag.StringVar(&o.shaleBin, "shale", "bin/shale", "path to the shale binary")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "how long each throughput run produces")
	flag.IntVar(&o.recordSize, "record-size", 100, "record value size in bytes")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the benchmark topic")
	flag.Float64Var(&o.rateMBps, "latency-rate", 50, "fixed produce rate (MB/s) for the latency run")
	flag.StringVar(&o.only, "only", "", "comma-separated subset: produce,consume,latency,commits,rebalance,raw,cluster,failover,rejoin,tiering,tls,acl,txn,compact")
	flag.DurationVar(&o.clusterDuration, "cluster-duration", 3*time.Second, "cluster: how long each throughput and latency run produces")
	flag.IntVar(&o.clusterRounds, "cluster-rounds", 2, "cluster: throughput runs of each target, alternating; the best counts")
	flag.Float64Var(&o.clusterRate, "cluster-rate", 20, "cluster: fixed produce rate (MB/s) of the latency runs")
	flag.BoolVar(&o.clusterFranz, "cluster-franz", true, "cluster: after the raw load generator's latency runs, franz-go's throughput and latency runs")
	flag.StringVar(&o.failoverTTLs, "failover-ttls", "1s,2s", "failover run: the brokers' --session-ttl values to measure, comma-separated")
	flag.IntVar(&o.failoverRounds, "failover-rounds", 3, "failover run: leader stops of each kind per session TTL")
	flag.IntVar(&o.rejoinMB, "rejoin-mb", 64, "rejoin run: MiB in the topic a wiped follower copies back")
	flag.IntVar(&o.rejoinPartitions, "rejoin-partitions", 3, "rejoin run: partitions of the topic")
	flag.IntVar(&o.rejoinRounds, "rejoin-rounds", 3, "rejoin run: rounds of the reference read and the follower's rejoin, alternating")
	flag.IntVar(&o.groupMembers, "group-members", 100, "group members committing at once in the commits run")
	flag.IntVar(&o.tierMB, "tier-mb", 1024, "tiering run: MiB produced, uploaded to MinIO and replayed cold, per round (a replay's start, its first GETs and the read-ahead's ramp, is a fixed cost: at 128 MiB it was a third of the round's time, at 1024 a few percent)")
	flag.IntVar(&o.tierRounds, "tier-rounds", 5, "tiering run: cold replay rounds (a topic each), each beside the GET ceilings; medians are printed")
	flag.BoolVar(&o.tierOnly, "tier-replay-only", false, "tiering run: only the cold replay rounds, not the upload, latency and probe measurements")
	flag.IntVar(&o.tierPartMax, "tier-partition-fetch-bytes", tierFetchBytes, "tiering run: what each Fetch of the raw replays asks of the partition (Kafka's max.partition.fetch.bytes; its consumers' default is 1 MiB)")
	flag.Float64Var(&o.upload.rateMBps, "tier-ingest-rate", 150, "tiering run: produce rate (MB/s) while uploads are measured")
	flag.IntVar(&o.upload.partitions, "tier-ingest-partitions", 4, "tiering run: partitions (and connections) of the ingest run")
	flag.DurationVar(&o.upload.duration, "tier-ingest-duration", 10*time.Second, "tiering run: length of the ingest run")
	flag.IntVar(&o.upload.latRounds, "tier-latency-rounds", 6, "tiering run: produce latency rounds, each alone, with a cold replay, with its GETs made by a non-Shale client and with a non-Shale load of equal CPU, in turn first")
	flag.Float64Var(&o.upload.latRate, "tier-latency-rate", 10, "tiering run: produce rate (MB/s) of the latency rounds")
	flag.DurationVar(&o.upload.latLength, "tier-latency-duration", 3*time.Second, "tiering run: measured length of each phase of a latency round")
	flag.IntVar(&o.upload.coldMB, "tier-cold-mb", 1024, "tiering run: MiB of the topic the latency rounds replay cold (several times the broker's cache, as the replay wraps around)")
	flag.BoolVar(&o.upload.latOnly, "tier-latency-only", false, "tiering run: only the produce latency rounds")
	flag.StringVar(&o.upload.latPhases, "tier-latency-phases", "alone,replay,gets,hog", "tiering run: the phases of each latency round, comma-separated (alone, replay, gets: the replay's GETs by a non-Shale client, hog: a non-Shale load of equal CPU; remote, not by default: after those rounds, as many of alone and the replay with MinIO and its client at nice 19, as on other machines)")
	flag.BoolVar(&o.upload.upOnly, "tier-upload-only", false, "tiering run: only the uploads while producing")
	flag.IntVar(&o.upload.largeMB, "tier-upload-large-mb", 128, "tiering run: segment size (MiB) of a second, shorter upload run, checking how many requests a larger segment takes (a broker's default segment is 1 GiB; 0: no second run)")
	flag.StringVar(&o.shaleArgs, "shale-args", "--object-store=none --topic-default=log.segment.bytes=1073741824,log.roll.ms=604800000",
		"extra arguments for `shale dev`, space-separated; the default measures the local log as a broker runs it (Kafka's 1 GiB segments, no tiering), not shale dev's 8 MiB segments each copied to file://DATA/objects; '' keeps shale dev's defaults")
	flag.StringVar(&o.shaleEnv, "shale-env", "", "extra environment for `shale dev` alone, comma-separated (e.g. GOGC=400,GOMEMLIMIT=1GiB)")
	flag.StringVar(&o.shaleAddr, "shale-addr", "", "measure an already running broker at this address instead of starting one")
	flag.IntVar(&o.raw.conns, "raw-conns", 4, "raw load: connections")
	flag.IntVar(&o.raw.inflight, "raw-inflight", 8, "raw load: requests in flight per connection")
	flag.IntVar(&o.raw.partitions, "raw-partitions", 0, "raw load: partitions (connection i uses partition i mod this; 0: one per connection)")
	flag.IntVar(&o.raw.recordBytes, "raw-record-bytes", 100, "raw load: record value size")
	flag.IntVar(&o.raw.batchBytes, "raw-batch-bytes", 32<<10, "raw load: record batch size of each Produce request")
	flag.IntVar(&o.raw.fetchBytes, "raw-fetch-bytes", 1<<20, "raw load: bytes each Fetch asks for per partition, a Kafka consumer's max.partition.fetch.bytes (default 1 MiB, as its) (0: no fetch run)")
	flag.IntVar(&o.raw.fetchMaxBytes, "raw-fetch-max-bytes", 50<<20, "raw load: bytes each Fetch asks for in all, a Kafka consumer's fetch.max.bytes (default 50 MiB, as its)")
	flag.IntVar(&o.raw.fetchPartitions, "raw-fetch-partitions", 0, "raw load: partitions each Fetch asks for (0: all the topic's, as one consumer of the whole topic asks a broker for all its partitions there in one Fetch)")
	flag.IntVar(&o.raw.fetchInflight, "raw-fetch-inflight", 1, "raw load: Fetch requests in flight per connection (1: as a Kafka consumer, which sends the next Fetch to a broker once the last is answered)")
	flag.DurationVar(&o.raw.duration, "raw-duration", 5*time.Second, "raw load: measured length of each run")
	flag.DurationVar(&o.raw.warmup, "raw-warmup", time.Second, "raw load: unmeasured load before each run")
	// acks=all runs first: after the gigabytes of an acks=1 or acks=0
	// run sit in the page cache, this machine (a VM) fills new
	// page-cache pages at about twice the CPU per byte, in the
	// broker's pwritev; dropping the clean cache undoes it with the
	// same broker and topics, so it is the machine's memory and not the
	// broker, and acks=all, the run it halves, would measure that.
	flag.StringVar(&o.raw.acks, "raw-acks", "all,0,1", "raw load: produce runs by acks, in order (the fetch run reads acks=1's data; acks=all first, before the others' gigabytes fill the page cache)")
	flag.IntVar(&o.raw.rounds, "raw-rounds", 1, "raw load: runs of each workload, alternating between kfake and Shale")
	flag.Float64Var(&o.raw.rateMBps, "raw-rate", 50, "raw load: fixed produce rate (MB/s) of the latency runs, acks=1 and all (0: none)")
	flag.StringVar(&o.raw.compressed, "raw-compressed", "zstd", "raw load: codec (gzip, snappy, lz4, zstd) of an acks=1 run of compressed batches, which Shale decompresses to validate (\"\": none)")
	flag.StringVar(&o.raw.recompress, "raw-recompress", "zstd", "raw load: compression.type (gzip, snappy, lz4, zstd) of a topic that an acks=1 run of uncompressed batches goes to, which Shale rewrites with it (\"\": none)")
	flag.IntVar(&o.aclCount, "acl-count", 1000, "acl run: ACLs of other principals in force beside the two that let the raw load's connections write and read (literal and prefixed topics, groups, transactional ids, some DENY), as a cluster's would be")
	flag.IntVar(&o.aclRounds, "acl-rounds", 3, "acl run: rounds of the raw acks=1 produce and hot fetch against the broker with ACLs and the one without, alternating which goes first; their sums are printed")
	flag.IntVar(&o.compact.mb, "compact-mb", 256, "compact run: MiB of keyed records each compaction pass cleans")
	flag.IntVar(&o.compact.keys, "compact-keys", 100000, "compact run: distinct keys among them")
	flag.IntVar(&o.compact.rounds, "compact-rounds", 3, "compact run: passes of each codec, each beside its ceiling; the best counts")
	flag.DurationVar(&o.txn.duration, "txn-duration", 4*time.Second, "txn run: timed length of each transactional and idempotent produce run, and the most each exactly-once copy runs")
	flag.IntVar(&o.txn.records, "txn-records", 300_000, "txn run: a transactional produce run ends early once its transactions hold this many records, so that kfake's topics stay small enough to read back in passes (0: no limit)")
	flag.IntVar(&o.txn.abortEvery, "txn-abort-every", 10, "txn run: abort every this many-th transaction of the produce runs, so that read_committed skips some (0: none)")
	flag.StringVar(&o.raw.profileDir, "profile", "", "save CPU and allocation profiles of the broker during each raw run into this directory")
	flag.BoolVar(&o.kfakeHost, "kfake-host", false, "internal: serve a kfake cluster and print its address")
	flag.StringVar(&o.sendfileHost, "sendfile-host", "", "internal: serve the raw fetch's sendfile reference from a file in this directory and print its address")
	flag.Parse()
	if o.sendfileHost != "" {
		if err := hostSendfileRef(o.sendfileHost, o.raw.recordBytes, o.raw.batchBytes); err != nil {
			fmt.Fprintln(os.Stderr, "shale-bench sendfile reference:", err)
			os.Exit(1)
		}
		return
	}
	if o.kfakeHost {
		if err := hostKfake(o); err != nil {
			fmt.Fprintln(os.Stderr, "shale-bench kfake:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "shale-bench:", err)
		os.Exit(1)
	}
}

type target struct {
	name     string
	addr     string
	httpAddr string // Shale's /metrics and /debug/pprof, when known
	dataDir  string // Shale's data directory, when known
	pid      int    // 0 when in-process
	close    func()
}

func run(o options) error {
	if o.only == "failover" {
		// Its own cluster of broker processes: no shale dev, no kfake.
		return runFailover(o)
	}
	if o.only == "rejoin" {
		return runRejoin(o)
	}
	fmt.Printf("shale-bench: %d-byte records, %d partitions, acks=1, linger 5ms, %s per run, GOMAXPROCS-visible cores: %d\n",
		o.recordSize, o.partitions, o.duration, numCPU())
	if o.shaleAddr == "" {
		fmt.Printf("shale dev %s %s\n", o.shaleArgs, o.shaleEnv)
	}
	fmt.Println()

	ceiling, err := startKfake(o)
	if err != nil {
		return err
	}
	defer ceiling.close()
	var shale *target
	if o.shaleAddr != "" {
		shale = &target{name: "shale", addr: o.shaleAddr, close: func() {}}
	} else if shale, err = startShale(o); err != nil {
		return err
	}
	defer shale.close()
	if err := createTopic(shale.addr, o.partitions); err != nil {
		return err
	}

	want := func(s string) bool { return o.only == "" || strings.Contains(o.only, s) }
	if want("raw") {
		if err := runRawSuite(o, shale, ceiling); err != nil {
			return err
		}
		fmt.Println()
	}
	var rows [][]string
	if want("produce") || want("consume") {
		var kTotal, sTotal int64
		for _, clients := range []int{1, 2} {
			o := o
			o.producers = clients
			kp := produceThroughput(ceiling.addr, o)
			sp := produceThroughput(shale.addr, o)
			kTotal += kp.records
			sTotal += sp.records
			rows = append(rows, ratioRow(fmt.Sprintf("produce, %d client(s)", clients), sp, kp, o))
		}
		if want("consume") {
			kc := consumeThroughput(ceiling.addr, o, kTotal)
			sc := consumeThroughput(shale.addr, o, sTotal)
			rows = append(rows, ratioRow("consume", sc, kc, o))
		}
	}
	if len(rows) > 0 {
		printTable([]string{"workload", "shale rec/s", "shale MB/s", "kfake rec/s", "kfake MB/s", "ratio"}, rows)
	}

	if want("latency") {
		fmt.Println()
		kl := produceLatency(ceiling.addr, o)
		settleDisk()
		sl := produceLatency(shale.addr, o)
		printTable([]string{"produce latency @" + strconv.FormatFloat(o.rateMBps, 'f', 0, 64) + " MB/s", "p50", "p99", "achieved MB/s"}, [][]string{
			{"shale", sl.p50.String(), sl.p99.String(), fmt.Sprintf("%.1f", sl.mbps)},
			{"kfake (ceiling)", kl.p50.String(), kl.p99.String(), fmt.Sprintf("%.1f", kl.mbps)},
		})
	}
	if want("commits") {
		fmt.Println()
		kc, err := commitThroughput(ceiling.addr, o, o.groupMembers)
		if err != nil {
			return fmt.Errorf("commits against kfake: %w", err)
		}
		sc, err := commitThroughput(shale.addr, o, o.groupMembers)
		if err != nil {
			return fmt.Errorf("commits against shale: %w", err)
		}
		printTable([]string{fmt.Sprintf("offset commits, %d members", o.groupMembers), "shale commits/s", "kfake commits/s", "ratio"}, [][]string{
			{"franz-go CommitOffsetsSync", fmt.Sprintf("%.0f", sc.sync.perSec()), fmt.Sprintf("%.0f", kc.sync.perSec()), fmt.Sprintf("%.2fx", sc.sync.perSec()/kc.sync.perSec())},
			{"pipelined, 16 in flight", fmt.Sprintf("%.0f", sc.pipelined.perSec()), fmt.Sprintf("%.0f", kc.pipelined.perSec()), fmt.Sprintf("%.2fx", sc.pipelined.perSec()/kc.pipelined.perSec())},
		})
	}
	if want("rebalance") {
		fmt.Println()
		const session = 6 * time.Second // group.min.session.timeout.ms's default on both
		var rows [][]string
		for _, b := range []struct {
			name     string
			balancer kgo.GroupBalancer
		}{{"range (eager)", kgo.RangeBalancer()}, {"cooperative-sticky", kgo.CooperativeStickyBalancer()}} {
			k, err := rebalanceAfterCrash(ceiling.addr, b.balancer, session)
			if err != nil {
				return fmt.Errorf("rebalance against kfake: %w", err)
			}
			s, err := rebalanceAfterCrash(shale.addr, b.balancer, session)
			if err != nil {
				return fmt.Errorf("rebalance against shale: %w", err)
			}
			rows = append(rows, []string{b.name, s.Round(time.Millisecond).String(), k.Round(time.Millisecond).String()})
		}
		printTable([]string{"member crash to rebalanced, session " + session.String(), "shale", "kfake (ceiling)"}, rows)
	}
	if want("tls") {
		fmt.Println()
		if err := runTLS(o, shale); err != nil {
			return err
		}
	}
	if want("acl") {
		fmt.Println()
		if err := runACL(o, shale); err != nil {
			return err
		}
	}
	if want("txn") {
		fmt.Println()
		if err := runTxn(o, shale, ceiling); err != nil {
			return err
		}
	}
	if want("compact") {
		fmt.Println()
		if err := runCompact(o); err != nil {
			return err
		}
	}
	if want("cluster") {
		fmt.Println()
		if err := runCluster(o, shale, ceiling); err != nil {
			return err
		}
	}
	if want("tiering") {
		fmt.Println()
		if err := runTiering(o); err != nil {
			return err
		}
	}
	if rss, err := peakRSS(shale.pid); err == nil {
		fmt.Printf("\nshale broker peak RSS: %.0f MiB (target < 300 MiB)\n", float64(rss)/(1<<20))
	}
	if want("failover") {
		fmt.Println()
		if err := runFailover(o); err != nil {
			return err
		}
	}
	if want("rejoin") {
		fmt.Println()
		return runRejoin(o)
	}
	return nil
}

type throughput struct {
	records int64
	elapsed time.Duration
}

func (t throughput) perSec() float64 { return float64(t.records) / t.elapsed.Seconds() }

func ratioRow(name string, s, k throughput, o options) []string {
	mb := func(t throughput) float64 { return t.perSec() * float64(o.recordSize) / 1e6 }
	return []string{name,
		fmt.Sprintf("%.0f", s.perSec()), fmt.Sprintf("%.1f", mb(s)),
		fmt.Sprintf("%.0f", k.perSec()), fmt.Sprintf("%.1f", mb(k)),
		fmt.Sprintf("%.2fx", s.perSec()/k.perSec())}
}

func printTable(header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	line := func(cells []string) {
		for i, c := range cells {
			fmt.Printf("%-*s  ", widths[i], c)
		}
		fmt.Println()
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
}

const topic = "bench"

func producerOpts(addr string, o options) []kgo.Opt {
	acks := kgo.LeaderAck()
	if o.acksAll {
		acks = kgo.AllISRAcks()
	}
	return append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(acks),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedRecords(1 << 20),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	}, o.clientOpts...)
}

// produceThroughput produces as fast as the clients can for o.duration and
// counts acknowledged records.
func produceThroughput(addr string, o options) throughput {
	value := make([]byte, o.recordSize)
	var acked atomic.Int64
	var failed atomic.Int64
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			return
		}
		acked.Add(1)
	}
	start := time.Now()
	deadline := start.Add(o.duration)
	ctx := context.Background()
	var wg sync.WaitGroup
	for p := 0; p < max(1, o.producers); p++ {
		cl, err := kgo.NewClient(producerOpts(addr, o)...)
		if err != nil {
			panic(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for time.Now().Before(deadline) {
				for i := 0; i < 1000; i++ {
					cl.Produce(ctx, &kgo.Record{Value: value}, done)
				}
			}
			cl.Flush(ctx)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "warning: %d records failed against %s\n", n, addr)
	}
	return throughput{records: acked.Load(), elapsed: elapsed}
}

// consumeThroughput reads n records from the start of the topic.
func consumeThroughput(addr string, o options, n int64) throughput {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(16 << 20),
	}, o.clientOpts...)...)
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	var got int64
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			fmt.Fprintf(os.Stderr, "fetch error %s/%d: %v\n", t, p, err)
		})
		got += int64(fs.NumRecords())
	}
	return throughput{records: got, elapsed: time.Since(start)}
}

type latency struct {
	p50, p99, p999 time.Duration
	mbps           float64
}

// produceLatency produces at a fixed rate and records each record's time
// from Produce to acknowledgement.
func produceLatency(addr string, o options) latency {
	cl, err := kgo.NewClient(producerOpts(addr, o)...)
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	value := make([]byte, o.recordSize)
	perMs := int(o.rateMBps * 1e6 / float64(o.recordSize) / 1000)
	var mu sync.Mutex
	lat := make([]time.Duration, 0, perMs*int(o.duration.Milliseconds()))
	ctx := context.Background()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	for time.Since(start) < o.duration {
		<-tick.C
		due := int(time.Since(start).Milliseconds()+1) * perMs
		for ; sent < due; sent++ {
			t0 := time.Now()
			cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
				if err == nil {
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
		}
	}
	cl.Flush(ctx)
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return latency{}
	}
	return latency{
		p50:  lat[len(lat)/2].Round(10 * time.Microsecond),
		p99:  lat[len(lat)*99/100].Round(10 * time.Microsecond),
		p999: lat[len(lat)*999/1000].Round(10 * time.Microsecond),
		mbps: float64(len(lat)*o.recordSize) / elapsed.Seconds() / 1e6,
	}
}

func createTopic(addr string, partitions int) error {
	err := createTopicNamed(addr, topic, partitions)
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return nil // a broker given with -shale-addr may have it already
	}
	return err
}

// startKfake starts the in-memory kfake cluster in a child process (this
// program again, with -kfake-host), so that its CPU is read apart from the
// load generator's.
func startKfake(o options) (*target, error) {
	return startChild("kfake", "-kfake-host", "-partitions", strconv.Itoa(o.partitions))
}

// startChild starts this program again with args as the target named
// name, in a process of its own so that its CPU is read apart from the
// load generator's. The child prints the address it serves on its first
// line and exits when its stdin closes.
func startChild(name string, args ...string) (*target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &target{name: name, pid: cmd.Process.Pid, close: func() {
		stdin.Close() // the child exits when its stdin closes
		cmd.Wait()
	}}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case t.addr = <-addr:
	case <-time.After(30 * time.Second):
	}
	if t.addr == "" {
		t.close()
		return nil, fmt.Errorf("%s did not report its address", name)
	}
	return t, nil
}

// hostKfake is the child's side: it serves kfake, prints the address and
// runs until its stdin closes.
func hostKfake(o options) error {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.partitions), topic))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println(c.ListenAddrs()[0])
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func startShale(o options) (*target, error) { return startShaleBrokers(o, 1) }

// startShaleBrokers starts `shale dev --brokers n`: broker i listens on
// the first's Kafka and HTTP ports plus i.
func startShaleBrokers(o options, n int) (*target, error) {
	dir, err := os.MkdirTemp("", "shale-bench-")
	if err != nil {
		return nil, err
	}
	kafkaAddrs, releaseKafka := freeAddrRun(n)
	httpAddrs, releaseHTTP := freeAddrRun(n)
	releaseKafka()
	releaseHTTP()
	kafkaAddr, httpAddr := kafkaAddrs[0], httpAddrs[0]
	args := []string{"dev", "--data-dir", filepath.Join(dir, "data"), "--kafka-addr", kafkaAddr, "--http-addr", httpAddr}
	if o.raw.profileDir != "" {
		args = append(args, "--pprof") // -profile reads /debug/pprof
	}
	if n > 1 {
		args = append(args, "--brokers", strconv.Itoa(n))
	}
	cmd := exec.Command(o.shaleBin, append(args, strings.Fields(o.shaleArgs)...)...)
	cmd.Stderr = os.Stderr
	if o.shaleEnv != "" {
		cmd.Env = append(os.Environ(), strings.Split(o.shaleEnv, ",")...)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s (run `make build` first): %w", o.shaleBin, err)
	}
	t := &target{name: "shale", addr: kafkaAddr, httpAddr: httpAddr, dataDir: dir, pid: cmd.Process.Pid, close: func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.RemoveAll(dir)
	}}
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range kafkaAddrs {
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.close()
				return nil, errors.New("shale dev did not start listening within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return t, nil
}

// freeAddrRun finds n free loopback ports in a row (for `shale dev
// --brokers n`, whose broker i listens on the first port plus i). They
// stay held until release, so that runs picked in turn do not overlap: the
// kernel may hand out a port just after another run's first one.
func freeAddrRun(n int) (addrs []string, release func()) {
	for {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		held := []net.Listener{first}
		release = func() {
			for _, l := range held {
				l.Close()
			}
		}
		base := first.Addr().(*net.TCPAddr).Port
		addrs = []string{first.Addr().String()}
		for i := 1; i < n && base+i < 65536; i++ {
			a := net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i))
			l, err := net.Listen("tcp", a)
			if err != nil {
				break
			}
			held = append(held, l)
			addrs = append(addrs, a)
		}
		if len(addrs) == n {
			return addrs, release
		}
		release()
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// peakRSS reads the process's high-water resident set size.
func peakRSS(pid int) (int64, error) {
	if pid == 0 {
		return 0, errors.New("in-process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}
