package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/shale-log/shale/objectstore"
)

// The upload side of the tiering workload, against the broker and MinIO
// runTiering started:
//   - ingest at a fixed rate (raw Produce requests, acks=1, one partition
//     per connection) while segments are sealed and uploaded: the upload
//     lag (sealed segments not yet in the manifest, sampled per partition),
//     the upload throughput over the run, and beside it raw PUTs of as many
//     segment-sized objects with as many in flight as partitions;
//   - where an upload's time goes (the broker's per-phase sums);
//   - object PUTs per GiB ingested, beside the target of two per segment
//     plus the manifest commits;
//   - produce latency at a low fixed rate, alone and while a cold replay
//     runs, in interleaved rounds.
const (
	tierUpTopic   = "tierup"
	tierHotTopic  = "tierhot"
	tierColdTopic = "tiercold"
)

type uploadOptions struct {
	rateMBps   float64       // ingest rate of the upload run
	partitions int           // partitions (and connections) of the upload run
	duration   time.Duration // length of the upload run
	latRounds  int           // rounds of produce latency without and with a replay
	latRate    float64       // produce rate of the latency rounds, MB/s
	latLength  time.Duration // length of each latency round
	coldMB     int           // MiB of each cold topic a latency round replays
}

// runTierUploadTables runs the upload and latency measurements and prints
// their table.
func runTierUploadTables(o options, sh *target, bucket objectstore.Bucket, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	load := loadAverage()
	rows, err := runTierUpload(ctx, o, sh, bucket, cl)
	if err != nil {
		return err
	}
	lat, err := runTierLatency(ctx, o, sh, cl)
	if err != nil {
		return err
	}
	fmt.Printf("\nuploads while producing to MinIO (%d MiB segments; load %s before, %s after)\n", tierSegment>>20, load, loadAverage())
	printTable([]string{"workload", "shale", "same-run ceiling", "ceiling", "ratio"}, append(rows, lat...))
	return nil
}

// runTierUpload measures uploads while producing; it returns table rows.
func runTierUpload(ctx context.Context, o options, sh *target, bucket objectstore.Bucket, cl *kgo.Client) ([][]string, error) {
	uo := o.upload
	adm := kadm.NewClient(cl)
	create := func(name string, partitions int, seg int) error {
		cfg := map[string]*string{"segment.bytes": ptr(strconv.Itoa(seg)), "local.retention.ms": ptr("1"), "file.delete.delay.ms": ptr("1")}
		resp, err := adm.CreateTopic(ctx, int32(partitions), 1, cfg, name)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
		return nil
	}
	if err := create(tierUpTopic, uo.partitions, tierSegment); err != nil {
		return nil, err
	}

	before := scrape(sh.httpAddr)
	var (
		mu     sync.Mutex
		maxLag float64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			s := scrape(sh.httpAddr)
			mu.Lock()
			for k, v := range s {
				if strings.HasPrefix(k, "shale_tiering_lag_segments{") && strings.Contains(k, `topic="`+tierUpTopic+`"`) {
					maxLag = max(maxLag, v)
				}
			}
			mu.Unlock()
		}
	}()
	cfg := rawConfig{conns: uo.partitions, inflight: 4, partitions: uo.partitions, recordBytes: 1000, batchBytes: 256 << 10,
		duration: uo.duration, rateMBps: uo.rateMBps}
	if o.raw.profileDir != "" {
		// Where the broker's CPU goes while it ingests and uploads.
		go fetchProfile(sh.httpAddr, "profile", filepath.Join(o.raw.profileDir, "tier-upload.cpu.pprof"), uo.duration)
		go fetchProfile(sh.httpAddr, "allocs", filepath.Join(o.raw.profileDir, "tier-upload.allocs.pprof"), uo.duration)
	}
	start := time.Now()
	res, err := rawProduce(sh.addr, tierUpTopic, 1, cfg)
	if err != nil {
		close(stop)
		return nil, err
	}
	produced := time.Now()
	// Caught up: no sealed segment of the topic waits for upload.
	for {
		s := scrape(sh.httpAddr)
		lag := 0.0
		for k, v := range s {
			if strings.HasPrefix(k, "shale_tiering_lag_segments{") && strings.Contains(k, `topic="`+tierUpTopic+`"`) {
				lag += v
			}
		}
		if lag == 0 {
			break
		}
		if ctx.Err() != nil {
			close(stop)
			return nil, fmt.Errorf("tiering: uploads of %s did not catch up", tierUpTopic)
		}
		time.Sleep(20 * time.Millisecond)
	}
	caughtUp := time.Now()
	close(stop)
	<-sampled
	after := scrape(sh.httpAddr)
	d := func(name string) float64 { return after[name] - before[name] }
	upBytes, upSegs := d("shale_tiering_uploaded_bytes_total"), d("shale_tiering_uploaded_segments_total")
	commits := d("shale_tiering_upload_commits_total")
	puts := d(`shale_objectstore_requests_total{op="put",result="ok"}`)
	upMBps := upBytes / caughtUp.Sub(start).Seconds() / 1e6
	ingested := float64(res.bytes)

	// Ceiling: PUTs of as many segment-sized objects, as many in flight
	// as partitions, alone.
	segSize := int64(upBytes / max(upSegs, 1))
	putMBps, err := parallelPuts(ctx, bucket, "ceiling/upload-parallel", int(upSegs), segSize, uo.partitions)
	if err != nil {
		return nil, err
	}
	serialMBps, err := parallelPuts(ctx, bucket, "ceiling/upload-serial", min(int(upSegs), 16), segSize, 1)
	if err != nil {
		return nil, err
	}

	ms := func(phase string) string {
		return fmt.Sprintf("%.1f", d(`shale_tiering_upload_phase_seconds_total{phase="`+phase+`"}`)/max(upSegs, 1)*1e3)
	}
	gib := ingested / (1 << 30)
	rows := [][]string{
		{fmt.Sprintf("ingest, %d partitions, raw produce acks=1, MB/s", uo.partitions), fmt.Sprintf("%.0f", res.mbps()), "asked", fmt.Sprintf("%.0f", uo.rateMBps), fmt.Sprintf("%.2fx", res.mbps()/uo.rateMBps)},
		{"upload while producing (first produce to caught up), MB/s", fmt.Sprintf("%.0f", upMBps),
			fmt.Sprintf("raw PUTs of %d MiB, %d in flight, alone", segSize>>20, uo.partitions), fmt.Sprintf("%.0f", putMBps), fmt.Sprintf("%.2fx", upMBps/putMBps)},
		{"", "", "raw PUTs, 1 in flight, alone", fmt.Sprintf("%.0f", serialMBps), ""},
		{"upload lag, max sealed segments waiting in a partition", fmt.Sprintf("%.0f", maxLag), "target", "< 2", ""},
		{"uploads caught up after the last acknowledgement", caughtUp.Sub(produced).Round(10 * time.Millisecond).String(), "", "", ""},
		{"upload time per segment, ms: wait / open / read / put / companion / commit",
			strings.Join([]string{ms("wait"), ms("open"), ms("read"), ms("put"), ms("companion"), ms("commit")}, " / "), "", "", ""},
		{"segments per manifest commit", fmt.Sprintf("%.1f", upSegs/max(commits, 1)), "", "", ""},
		{"object PUTs per GiB ingested", fmt.Sprintf("%.0f", puts/gib), "target: 2 per segment + commits", fmt.Sprintf("%.0f", (2*upSegs+commits)/gib), fmt.Sprintf("%.2fx", puts/(2*upSegs+commits))},
	}
	return rows, nil
}

// scrape reads a broker's /metrics into a map from series (name and
// labels as printed) to value; empty when it cannot be read.
func scrape(httpAddr string) map[string]float64 {
	out := map[string]float64{}
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// parallelPuts PUTs n objects of size bytes under prefix, inflight at a
// time, and returns MB/s.
func parallelPuts(ctx context.Context, b objectstore.Bucket, prefix string, n int, size int64, inflight int) (float64, error) {
	data := make([]byte, size)
	var g errgroup.Group
	g.SetLimit(inflight)
	start := time.Now()
	for i := range n {
		g.Go(func() error {
			_, err := b.Put(ctx, fmt.Sprintf("%s/%d", prefix, i), bytes.NewReader(data), size, objectstore.PutOptions{IfNoneMatch: true})
			return err
		})
	}
	err := g.Wait()
	return float64(int64(n)*size) / time.Since(start).Seconds() / 1e6, err
}

// runTierLatency measures produce latency at a low fixed rate on a tiered
// topic, in rounds alone and while a cold replay of another topic (one
// that lives only in the bucket, a new one each round) runs, alternating.
func runTierLatency(ctx context.Context, o options, sh *target, cl *kgo.Client) ([][]string, error) {
	uo := o.upload
	adm := kadm.NewClient(cl)
	cold := make([]string, uo.latRounds)
	topics := []string{tierHotTopic}
	for i := range cold {
		cold[i] = fmt.Sprintf("%s-%d", tierColdTopic, i)
		topics = append(topics, cold[i])
	}
	for _, name := range topics {
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
	for _, name := range cold {
		for n := 0; n < uo.coldMB<<20; n += len(value) {
			cl.Produce(ctx, &kgo.Record{Topic: name, Value: value}, nil)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	ends := make([]int64, len(cold))
	for {
		local := 0
		for _, name := range cold {
			local += localSegments(sh.dataDir, name+"-0")
		}
		if local == len(cold) {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tiering: the cold topics were not uploaded (%d local segments)", local)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, name := range cold {
		end, err := earliestLocal(ctx, cl, name)
		if err != nil {
			return nil, err
		}
		ends[i] = end
	}

	cfg := rawConfig{conns: 1, inflight: 8, partitions: 1, recordBytes: 1000, batchBytes: 16 << 10,
		warmup: 500 * time.Millisecond, duration: uo.latLength, rateMBps: uo.latRate}
	var alone, replaying rawResult
	var replayBytes int64
	var replayTime time.Duration
	for r := range uo.latRounds {
		res, err := rawProduce(sh.addr, tierHotTopic, 1, cfg)
		if err != nil {
			return nil, err
		}
		alone.latencies = append(alone.latencies, res.latencies...)
		rctx, cancel := context.WithCancel(ctx)
		type replayed struct {
			bytes int64
			took  time.Duration
			err   error
		}
		done := make(chan replayed, 1)
		go func() {
			start := time.Now()
			n, err := replayTopic(rctx, sh.addr, cold[r], ends[r])
			done <- replayed{n, time.Since(start), err}
		}()
		if o.raw.profileDir != "" && r == 0 {
			go fetchProfile(sh.httpAddr, "profile", filepath.Join(o.raw.profileDir, "tier-latency-replay.cpu.pprof"), cfg.warmup+cfg.duration)
		}
		res, err = rawProduce(sh.addr, tierHotTopic, 1, cfg)
		cancel()
		rp := <-done
		if err != nil {
			return nil, err
		}
		if rp.err != nil && rctx.Err() == nil {
			return nil, rp.err
		}
		replaying.latencies = append(replaying.latencies, res.latencies...)
		replayBytes += rp.bytes
		replayTime += rp.took
	}
	slices.Sort(alone.latencies)
	slices.Sort(replaying.latencies)
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	diff := replaying.percentile(0.99) - alone.percentile(0.99)
	return [][]string{
		{fmt.Sprintf("produce p50 / p99 at %.0f MB/s, with a cold replay (%.0f MB/s)", uo.latRate, float64(replayBytes)/replayTime.Seconds()/1e6),
			r(replaying.percentile(0.5)) + " / " + r(replaying.percentile(0.99)), "alone, same run",
			r(alone.percentile(0.5)) + " / " + r(alone.percentile(0.99)), "p99 " + signed(diff) + " (target < +1ms)"},
	}, nil
}

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + d.Round(10*time.Microsecond).String()
	}
	return "-" + (-d).Round(10*time.Microsecond).String()
}

// replayTopic consumes topic's partition 0 from offset 0 up to end (or
// until ctx ends) and returns the record bytes read.
func replayTopic(ctx context.Context, addr, topic string, end int64) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var n int64
	for next := int64(0); next < end; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return n, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			n += int64(len(r.Value))
		})
	}
	return n, nil
}
