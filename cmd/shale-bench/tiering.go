package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// The tiering workload runs its own `shale dev` tiering to a MinIO this
// program starts, and measures beside ceilings taken from the same MinIO
// in the same run:
//   - the upload of sealed segments (bytes over the time each upload and
//     manifest commit took), beside raw PUTs of as many segment-sized
//     objects, one at a time as a partition uploads;
//   - in rounds (-tier-rounds, a topic each so that every replay is
//     cold; after one unmeasured replay of a topic of its own, as the
//     broker's first replay fills its memory), a cold replay from
//     offset 0 of a partition that lives only in the bucket (segment
//     bytes per second), by a raw fetch loop that reads
//     each response into one buffer and looks at batch headers alone, so
//     the broker is measured and not a client's decoding; beside ranged
//     GETs of the same segment objects, as wide as the broker's
//     read-ahead GETs (tierGet) and read a chunk at a time, four in
//     flight, and beside the same GETs relayed over one loopback TCP
//     connection (the bytes cross two hops, as a replay's do); with the
//     CPU each process used per MB, the broker's largest RSS against its
//     cache bound, and a profile of the broker with -profile; the
//     replay and its ceilings run in each round, in turn first, and the
//     table prints their medians (a shared machine swings from run to
//     run, and one replay beside one ceiling swung with it);
//   - the same replay warm, raw and with franz-go (which decodes records);
//   - the latency of a cold fetch (its response, the first bytes a
//     consumer gets) at segments nothing has read, and of the same fetch
//     again (warm), beside a GET of the segment's indexes object and then
//     of its first chunk, the two requests a cold read needs.
const (
	tierTopic      = "tier"
	tierProbeTopic = "tierprobe"
	// tierWarmTopic is replayed once before the rounds, unmeasured.
	tierWarmTopic = "tierwarm"
	// tierSegment: each segment is one PUT, as a broker's segments below
	// the S3 backend's multipart threshold (5 GiB, S3's largest PUT) are;
	// the upload run repeats with larger ones (-tier-upload-large-mb).
	tierSegment  = 16 << 20
	tierProbeSeg = 1 << 20
	tierChunk    = 4 << 20
	// tierGet is the size of the ceilings' ranged GETs: that of the
	// broker's read-ahead GETs (tiering's default ReadAheadSpan), which
	// fetch most of a replay. A store serves wide GETs for less CPU per
	// byte than chunk-sized ones, so a ceiling of narrower GETs would
	// sit below what the same store can do.
	tierGet    = 16 << 20
	tierProbes = 16
	// tierCache is the broker's --remote-cache-bytes, the bound its RSS
	// during the replay is compared with.
	tierCache = 256 << 20
	// tierFetchBytes is what each Fetch of the replay asks for, and of
	// its partition unless -tier-partition-fetch-bytes says less.
	tierFetchBytes = 16 << 20
	// tierProfile is how much of the replay -profile covers.
	tierProfile = 3 * time.Second
)

func runTiering(o options) error {
	dir, err := os.MkdirTemp("", "shale-bench-tier-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := miniotest.StartIn(filepath.Join(dir, "minio"))
	if err != nil {
		return fmt.Errorf("tiering: %w (run `make tools`)", err)
	}
	defer srv.Close()
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	const bucketName = "bench"
	url := srv.URL(bucketName, "") + "&create_bucket=true"
	to := o
	to.shaleArgs = "--object-store=" + url + " --retention-check-interval=500ms --log-level=warn --remote-cache-bytes=" + strconv.Itoa(tierCache)
	// MinIO's credentials, and -shale-env after them.
	env := miniotest.Env()
	if o.shaleEnv != "" {
		env = append(env, strings.Split(o.shaleEnv, ",")...)
	}
	to.shaleEnv = strings.Join(env, ",")
	sh, err := startShale(to)
	if err != nil {
		return err
	}
	defer sh.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bucket, err := objectstore.Open(ctx, url, objectstore.OpenOptions{})
	if err != nil {
		return err
	}
	defer bucket.Close()

	cl, err := kgo.NewClient(kgo.SeedBrokers(sh.addr), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerLinger(5*time.Millisecond), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(), kgo.MaxBufferedRecords(1<<16))
	if err != nil {
		return err
	}
	defer cl.Close()
	if o.upload.latOnly || o.upload.upOnly {
		return runTierUploadTables(o, sh, bucket, cl, srv.Pid())
	}
	adm := kadm.NewClient(cl)
	// A replay topic per round, so that every round's replay is cold.
	rounds := max(o.tierRounds, 1)
	replayTopics := make([]string, rounds)
	type tierTopicSeg struct {
		name string
		seg  int
	}
	var create []tierTopicSeg
	for i := range replayTopics {
		replayTopics[i] = fmt.Sprintf("%s%d", tierTopic, i)
		create = append(create, tierTopicSeg{replayTopics[i], tierSegment})
	}
	create = append(create, tierTopicSeg{tierWarmTopic, tierSegment})
	if !o.tierOnly {
		create = append(create, tierTopicSeg{tierProbeTopic, tierProbeSeg})
	}
	for _, t := range create {
		cfg := map[string]*string{"segment.bytes": ptr(strconv.Itoa(t.seg)), "local.retention.ms": ptr("1"), "file.delete.delay.ms": ptr("1")}
		resp, err := adm.CreateTopic(ctx, 1, 1, cfg, t.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", t.name, err)
		}
	}
	// Fill: each replay topic with o.tierMB, the probe topic with one
	// small segment per probe and two between probes.
	value := make([]byte, 1000)
	fill := func(topic string, bytes int) error {
		var failed error
		var mu sync.Mutex
		for n := 0; n < bytes; n += len(value) {
			cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		return failed
	}
	fillStart := time.Now()
	filled := 0
	for _, t := range replayTopics {
		if err := fill(t, o.tierMB<<20); err != nil {
			return err
		}
		filled += o.tierMB << 20
	}
	if err := fill(tierWarmTopic, o.tierMB<<20); err != nil {
		return err
	}
	filled += o.tierMB << 20
	if !o.tierOnly {
		if err := fill(tierProbeTopic, 3*tierProbes*tierProbeSeg+tierProbeSeg); err != nil {
			return err
		}
		filled += 3*tierProbes*tierProbeSeg + tierProbeSeg
	}
	produced := time.Now()
	produceMBps := float64(filled) / produced.Sub(fillStart).Seconds() / 1e6
	// Wait until every sealed segment is uploaded and deleted locally.
	for {
		lag := metricSum(sh.httpAddr, "shale_tiering_lag_bytes")
		local := 0
		for _, t := range create {
			local += localSegments(sh.dataDir, t.name+"-0")
		}
		if lag == 0 && local == len(create) {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("tiering: uploads did not catch up (lag %v bytes, %d local segments)", lag, local)
		}
		time.Sleep(100 * time.Millisecond)
	}
	caughtUp := time.Since(produced)
	upBytes, upSecs := metricSum(sh.httpAddr, "shale_tiering_uploaded_bytes_total"), metricSum(sh.httpAddr, "shale_tiering_upload_seconds_sum")
	upSegs := metricSum(sh.httpAddr, "shale_tiering_uploaded_segments_total")

	// The objects in the bucket: each replay topic's segments.
	segs := make([][]objectstore.Attrs, rounds)
	remote := make([]int64, rounds)
	var warmRemote int64
	err = bucket.List(ctx, "", func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, ".log") && inTopic(a.Key, tierWarmTopic) {
			warmRemote += a.Size
		}
		for i, t := range replayTopics {
			if strings.HasSuffix(a.Key, ".log") && inTopic(a.Key, t) {
				segs[i] = append(segs[i], a)
				remote[i] += a.Size
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	ends := make([]int64, rounds)
	for i, t := range replayTopics {
		if ends[i], err = earliestLocal(ctx, cl, t); err != nil {
			return err
		}
	}

	warmEnd, err := earliestLocal(ctx, cl, tierWarmTopic)
	if err != nil {
		return err
	}

	// Ceiling of the upload: PUTs of as many segment-sized objects, one
	// at a time.
	putMBps, err := rawPuts(ctx, bucket, int(upSegs), int64(upBytes/max(upSegs, 1)))
	if err != nil {
		return err
	}

	// The broker's first replay fills its chunk pool and grows its heap:
	// it faulted in 10-14 thousand fresh pages (40-56 MiB), the next
	// ones 0-8 thousand, and it was the slowest of three rounds in 5 of
	// 8 runs (the object store was no colder for it: MinIO read nothing
	// from the disk in any round). A replay of a topic of its own before
	// the rounds takes that one-time cost, so that the first round is as
	// cold as the others, not the first of the broker's life.
	warmFaults := minorFaults(sh.pid)
	warmTook, err := rawReplay(ctx, sh.addr, tierWarmTopic, warmEnd, o.tierPartMax)
	if err != nil {
		return err
	}
	warmFaults = minorFaults(sh.pid) - warmFaults

	// Rounds: the cold replay of a round's topic and the GET ceilings of
	// the same objects, the replay first in even rounds and last in odd
	// ones, so neither side always runs on a store the other has warmed.
	replayLoad := loadAverage()
	var (
		replayMBps, getMBps, relayMBps, ratio, relayRatio []float64
		replayCPU, getCPU, relayCPU                       = make([]time.Duration, 3), make([]time.Duration, 2), make([]time.Duration, 2)
		replayTime                                        time.Duration
		replayed, faults                                  int64
		replayGets, topicGets                             float64
		// The replayed topic's GETs per GiB and the read-ahead chunks
		// skipped for want of budget, by round.
		roundGets, roundSkipped []float64
		waited                  float64
	)
	add := func(sum, d []time.Duration) {
		for i := range sum {
			sum[i] += d[i]
		}
	}
	profiled := make(chan error, 1)
	if o.raw.profileDir == "" {
		profiled <- nil
	}
	rss := sampleRSS(sh.pid)
	for i, t := range replayTopics {
		replay := func() error {
			if i == 0 && o.raw.profileDir != "" {
				// The first seconds of the first replay: run with a larger
				// -tier-mb for the profile to cover all of it.
				go func() {
					prefix := filepath.Join(o.raw.profileDir, "tiering-cold-replay")
					allocs := make(chan error, 1)
					go func() { allocs <- fetchProfile(sh.httpAddr, "allocs", prefix+".allocs.pprof", tierProfile) }()
					profiled <- errors.Join(fetchProfile(sh.httpAddr, "profile", prefix+".pprof", tierProfile), <-allocs)
				}()
			}
			w := metricSum(sh.httpAddr, "shale_tiering_remote_fetch_seconds_sum")
			before := scrape(sh.httpAddr)
			cpu := startCPU(sh.pid, srv.Pid(), os.Getpid())
			f := minorFaults(sh.pid)
			took, err := rawReplay(ctx, sh.addr, t, ends[i], o.tierPartMax)
			if err != nil {
				return err
			}
			add(replayCPU, cpu.stop())
			faults += minorFaults(sh.pid) - f
			// How much of the replay the broker spent waiting in remote
			// reads (the object store and the cache) rather than in the
			// client.
			waited += metricSum(sh.httpAddr, "shale_tiering_remote_fetch_seconds_sum") - w
			after := scrape(sh.httpAddr)
			replayGets += after[replayGetsMetric] - before[replayGetsMetric]
			n := after[topicGetsMetric(t)] - before[topicGetsMetric(t)]
			topicGets += n
			roundGets = append(roundGets, n/(float64(remote[i])/(1<<30)))
			roundSkipped = append(roundSkipped, after[aheadSkippedMetric]-before[aheadSkippedMetric])
			replayTime += took
			replayed += remote[i]
			replayMBps = append(replayMBps, float64(remote[i])/took.Seconds()/1e6)
			return nil
		}
		ceilings := func() error {
			cpu := startCPU(srv.Pid(), os.Getpid())
			g, err := parallelGets(ctx, bucket, segs[i], 4)
			if err != nil {
				return err
			}
			add(getCPU, cpu.stop())
			// The ceiling of anything that serves the bucket to a client
			// over TCP: the same GETs, each chunk then written to one
			// loopback connection that a reader drains, as the broker's
			// response is.
			cpu = startCPU(srv.Pid(), os.Getpid())
			rl, err := relayedGets(ctx, bucket, segs[i], 4)
			if err != nil {
				return err
			}
			add(relayCPU, cpu.stop())
			getMBps, relayMBps = append(getMBps, g), append(relayMBps, rl)
			return nil
		}
		steps := []func() error{replay, ceilings}
		if i%2 == 1 {
			steps[0], steps[1] = ceilings, replay
		}
		for _, step := range steps {
			if err := step(); err != nil {
				rss()
				return err
			}
		}
		ratio = append(ratio, replayMBps[i]/getMBps[i])
		relayRatio = append(relayRatio, replayMBps[i]/relayMBps[i])
	}
	replayRSS := rss()
	if err := <-profiled; err != nil {
		fmt.Fprintln(os.Stderr, "tiering profile:", err)
	}
	last := replayTopics[rounds-1]
	lastRemote := remote[rounds-1]
	mbps := func(b float64, d time.Duration) float64 { return b / d.Seconds() / 1e6 }
	var rows [][]string
	if !o.tierOnly {
		upMBps := upBytes / upSecs / 1e6
		rows = append(rows, []string{"upload of sealed segments while producing, MB/s", fmt.Sprintf("%.0f", upMBps), "raw PUTs of the same sizes, 1 at a time, alone", fmt.Sprintf("%.0f", putMBps), fmt.Sprintf("%.2fx", upMBps/putMBps)})
	}
	rows = append(rows,
		[]string{fmt.Sprintf("cold replay from offset 0 (raw fetches, 1 in flight), MB/s, median (min-max) of %d", rounds), medianRange(replayMBps),
			fmt.Sprintf("ranged GETs of the segments, %d MiB each, 4 in flight", tierGet>>20), medianRange(getMBps), fmt.Sprintf("%.2fx", median(ratio))},
		[]string{"", "", "the same GETs relayed over one TCP connection", medianRange(relayMBps), fmt.Sprintf("%.2fx", median(relayRatio))},
		[]string{"cold replay: share of its time in remote reads", fmt.Sprintf("%.0f%%", 100*waited/replayTime.Seconds()), "", "", ""},
		[]string{"cold replay: broker's GETs per GiB replayed (of the replayed topic's objects)", fmt.Sprintf("%.0f (%.0f)", replayGets/(float64(replayed)/(1<<30)), topicGets/(float64(replayed)/(1<<30))),
			"GETs of the ceilings", fmt.Sprintf("%d", (1<<30)/tierGet), ""},
		[]string{"cold replay: CPU ms per MB of broker + MinIO + client", fmt.Sprintf("%.2f + %.2f + %.2f", msPerMB(replayCPU[0], replayed), msPerMB(replayCPU[1], replayed), msPerMB(replayCPU[2], replayed)),
			"MinIO + client of the GETs (relayed)", fmt.Sprintf("%.2f + %.2f (%.2f + %.2f)", msPerMB(getCPU[0], replayed), msPerMB(getCPU[1], replayed), msPerMB(relayCPU[0], replayed), msPerMB(relayCPU[1], replayed)), ""},
		// A chunk read into memory the process has not touched yet faults
		// in each of its pages (the kernel zeroes each one first): the
		// share of the replayed bytes' pages that faulted.
		[]string{"cold replay: broker page faults per replayed 4 KiB page", fmt.Sprintf("%.2f", float64(faults)/(float64(replayed)/4096)), "", "", ""},
		[]string{"cold replay: broker RSS, max", fmt.Sprintf("%d MiB", replayRSS>>20), "cache bound + 200 MiB", fmt.Sprintf("%d MiB", (tierCache>>20)+200), fmt.Sprintf("%.2fx", float64(replayRSS)/float64(tierCache+200<<20))},
	)
	if !o.tierOnly {
		// The last round's replay again, from the broker's cache: what
		// the broker costs without the object store; and with franz-go,
		// which decodes every record as an application's consumer does.
		// A replay's chunks enter the cache when read a second time, so
		// unmeasured replays first put them there; of as much of the
		// topic as half the cache holds, or each replay would evict what
		// the last one cached (the records are all of one size, so
		// offsets measure bytes).
		warmEnd, warmBytes := ends[rounds-1], lastRemote
		if half := int64(tierCache / 2); lastRemote > half {
			warmEnd, warmBytes = warmEnd*half/lastRemote, half
		}
		// Two of them: the round's own replay, a round's worth of chunks
		// ago, may no longer count as the first read of these.
		for range 2 {
			if _, err := rawReplay(ctx, sh.addr, last, warmEnd, o.tierPartMax); err != nil {
				return err
			}
		}
		warmReplay, err := rawReplay(ctx, sh.addr, last, warmEnd, o.tierPartMax)
		if err != nil {
			return err
		}
		warmFranz, err := coldReplay(ctx, sh.addr, last, warmEnd)
		if err != nil {
			return err
		}
		// Cold and warm fetch latency at probe segments, and the ceiling.
		cold, warm, ceil, err := fetchProbes(ctx, cl, bucket)
		if err != nil {
			return err
		}
		rows = append(rows,
			[]string{fmt.Sprintf("the same replay warm (cache, raw fetches), its first %d MiB, MB/s", warmBytes>>20), fmt.Sprintf("%.0f", mbps(float64(warmBytes), warmReplay)), "", "", ""},
			[]string{"the same warm with franz-go (decodes records), MB/s", fmt.Sprintf("%.0f", mbps(float64(warmBytes), warmFranz)), "", "", ""},
			[]string{fmt.Sprintf("cold fetch first-record latency, p50 / p99 of %d", len(cold)), durs(cold), "GET of the indexes, then of the chunk", durs(ceil), fmt.Sprintf("%.2fx", float64(pct(ceil, 50))/float64(pct(cold, 50)))},
			[]string{"the same fetch warm (cached), p50 / p99", durs(warm), "", "", ""},
		)
	}
	fmt.Printf("tiering to MinIO (%d rounds of %d MiB replayed in fetches of %d KiB, %d MiB segments, %d MiB chunks; load %s at the replays); produced at %.0f MB/s, uploads caught up %s after the last acknowledgement\n",
		rounds, lastRemote>>20, o.tierPartMax>>10, tierSegment>>20, tierChunk>>20, replayLoad, produceMBps, caughtUp.Round(10*time.Millisecond))
	printTable([]string{"workload", "shale", "same-run ceiling", "ceiling", "ratio"}, rows)
	var each []string
	for i := range replayMBps {
		each = append(each, fmt.Sprintf("%.0f / %.0f / %.0f (%.0f, %.0f)", replayMBps[i], getMBps[i], relayMBps[i], roundGets[i], roundSkipped[i]))
	}
	fmt.Printf("cold replay / GETs / relayed GETs by round, MB/s (the replay's GETs per GiB, read-ahead chunks skipped): %s\n", strings.Join(each, ", "))
	fmt.Printf("the broker's first replay, before the rounds and not in them: %.0f MB/s, %.2f page faults per replayed 4 KiB page\n",
		mbps(float64(warmRemote), warmTook), float64(warmFaults)/(float64(max(warmRemote, 1))/4096))
	if o.tierOnly {
		return nil
	}
	return runTierUploadTables(o, sh, bucket, cl, srv.Pid())
}

// minorFaults is the count of minor page faults of a process so far
// (/proc/<pid>/stat field 10), 0 when unknown.
func minorFaults(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name's closing parenthesis: minflt is
	// the eighth (field 10).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 8 {
		return 0
	}
	n, _ := strconv.ParseInt(f[7], 10, 64)
	return n
}

// median is the median of xs (the mean of the middle two when even).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// medianRange prints xs as "median (min-max)", or the value alone when
// there is one.
func medianRange(xs []float64) string {
	if len(xs) == 1 {
		return fmt.Sprintf("%.0f", xs[0])
	}
	return fmt.Sprintf("%.0f (%.0f-%.0f)", median(xs), slices.Min(xs), slices.Max(xs))
}

func ptr(s string) *string { return &s }

// inTopic tells whether an archive key is under topic's directory
// (topic-ID/).
func inTopic(key, topic string) bool {
	return strings.HasPrefix(key, topic+"-") || strings.Contains(key, "/"+topic+"-")
}

// metricSum sums the samples of a metric (all label sets) on a broker's
// /metrics; -1 when it cannot be read.
func metricSum(httpAddr, name string) float64 {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) > 0 {
			v, _ := strconv.ParseFloat(f[0], 64)
			sum += v
		}
	}
	return sum
}

// localSegments counts the segment files of a partition directory under
// dir.
func localSegments(dir, partition string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".log") && filepath.Base(filepath.Dir(p)) == partition {
			n++
		}
		return nil
	})
	return n
}

func rawPuts(ctx context.Context, b objectstore.Bucket, n int, size int64) (float64, error) {
	data := make([]byte, size)
	start := time.Now()
	for i := range n {
		if _, err := b.Put(ctx, fmt.Sprintf("ceiling/put-%d", i), bytes.NewReader(data), size, objectstore.PutOptions{IfNoneMatch: true}); err != nil {
			return 0, err
		}
	}
	return float64(int64(n)*size) / time.Since(start).Seconds() / 1e6, nil
}

// earliestLocal is the first offset of topic's partition 0 on the
// broker's disk (ListOffsets -4): below it, the bucket serves.
func earliestLocal(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = -4
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, errors.New("tiering: ListOffsets answered no partition")
	}
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 {
		return 0, fmt.Errorf("tiering: ListOffsets earliest-local: error %d", p.ErrorCode)
	}
	return p.Offset, nil
}

// replayGetsMetric counts the broker's GETs (segment chunks, companions,
// manifests), of every topic: the archive loops of the others, say.
const replayGetsMetric = `shale_objectstore_requests_total{op="get",result="ok"}`

// aheadSkippedMetric counts the chunks the broker's read-ahead skipped
// because its budget was spent (a read then GETs each itself).
const aheadSkippedMetric = "shale_remote_readahead_skipped_total"

// topicGetsMetric counts the GET-class requests of topic's objects
// (GETs and HEADs, each attempt), those a replay of topic makes.
func topicGetsMetric(topic string) string {
	return `shale_objectstore_topic_requests_total{class="get",topic="` + topic + `"}`
}

// rawReplay reads the replay topic from offset 0 up to end as a consumer
// does, one Fetch in flight on one connection, but reads each response
// into one reused buffer and looks at the batch headers alone, as the GET
// ceiling reads its chunks into a buffer: what it measures is the broker
// and the store, not a client decoding records. Each Fetch asks partMax
// bytes of the partition.
func rawReplay(ctx context.Context, addr, topic string, end int64, partMax int) (time.Duration, error) {
	ff, err := newFetchFrame(topic, []int32{0}, int32(partMax), int32(max(partMax, tierFetchBytes)))
	if err != nil {
		return 0, err
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	var buf, body []byte
	start := time.Now()
	for corr, next := int32(0), int64(0); next < end; corr++ {
		setCorrelationID(ff.frame, corr)
		ff.setOffset(0, next)
		if _, err := c.Write(ff.frame); err != nil {
			return 0, err
		}
		if body, buf, err = readResponse(r, buf, corr); err != nil {
			return 0, err
		}
		f, err := parseFetchResponse(body)
		if err != nil {
			return 0, err
		}
		if f.records == 0 {
			return 0, fmt.Errorf("tiering: replay fetch at %d returned no whole batch", next)
		}
		next = f.next
	}
	return time.Since(start), nil
}

// sampleRSS samples a process's resident set size every 20 ms until the
// returned function is called, which returns the largest.
func sampleRSS(pid int) func() int64 {
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, rssOf(pid))
			select {
			case <-stop:
				done <- max(peak, rssOf(pid))
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// rssOf is a process's resident set size now (VmRSS), 0 when unknown.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// coldReplay consumes the replay topic from offset 0 up to end with a new
// franz-go client and returns how long it took.
func coldReplay(ctx context.Context, addr, topic string, end int64) (time.Duration, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	for next := int64(0); next < end; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return 0, fmt.Errorf("tiering: replay stopped at %d of %d", next, end)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return 0, ferr
		}
		fs.EachRecord(func(r *kgo.Record) { next = r.Offset + 1 })
	}
	return time.Since(start), nil
}

// chunk is one ranged GET: tierChunk bytes of an object (less at its
// end), or as many as chunksOf was asked for.
type chunk struct {
	key      string
	off, len int64
}

// chunksOf splits the objects into ranged GETs of size bytes (less at an
// object's end), in order.
func chunksOf(objs []objectstore.Attrs, size int64) (out []chunk, total int64) {
	for _, o := range objs {
		for off := int64(0); off < o.Size; off += size {
			out = append(out, chunk{o.Key, off, min(size, o.Size-off)})
		}
		total += o.Size
	}
	return out, total
}

// getSpan reads one ranged GET a chunk at a time, each into a buffer
// taken from bufs and handed to done as soon as it is full, as the
// broker's read-ahead hands over each chunk of a wide GET as it arrives.
// done takes the buffer on an error too.
func getSpan(ctx context.Context, b objectstore.Bucket, s chunk, bufs chan []byte, done func([]byte)) error {
	body, err := b.Get(ctx, s.key, s.off, s.len)
	if err != nil {
		return err
	}
	defer body.Close()
	for left := s.len; left > 0; {
		buf := <-bufs
		n := min(left, int64(len(buf)))
		_, err := io.ReadFull(body, buf[:n])
		done(buf[:n])
		if err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// parallelGets reads the objects in tierGet-sized ranged GETs, n in
// flight, and returns MB/s. Each GET reads into buffers of a pool of n,
// as the broker reads into its pooled chunk buffers: a fresh buffer per
// chunk would add the zeroing, page faults and garbage collection of
// 4 MiB per chunk to the ceiling's CPU, which on a loaded machine MinIO
// then lacks.
func parallelGets(ctx context.Context, b objectstore.Bucket, objs []objectstore.Attrs, n int) (float64, error) {
	spans, total := chunksOf(objs, tierGet)
	bufs := newChunkBufs(n)
	var g errgroup.Group
	g.SetLimit(n)
	start := time.Now()
	for _, s := range spans {
		g.Go(func() error {
			return getSpan(ctx, b, s, bufs, func(buf []byte) { bufs <- buf[:cap(buf)] })
		})
	}
	err := g.Wait()
	return float64(total) / time.Since(start).Seconds() / 1e6, err
}

// newChunkBufs returns a pool of n chunk-sized buffers, their pages
// touched.
func newChunkBufs(n int) chan []byte {
	bufs := make(chan []byte, n)
	for range n {
		buf := make([]byte, tierChunk)
		for i := 0; i < len(buf); i += 4096 {
			buf[i] = 1
		}
		bufs <- buf
	}
	return bufs
}

// relayedGets reads the objects as parallelGets does, n in flight, and
// writes each chunk as it arrives to one loopback TCP connection whose
// other end reads into one buffer: the bytes cross the same two hops as a
// replay's (store to server, server to client). It returns MB/s.
func relayedGets(ctx context.Context, b objectstore.Bucket, objs []objectstore.Attrs, n int) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	spans, total := chunksOf(objs, tierGet)
	drained := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			drained <- err
			return
		}
		defer c.Close()
		buf := make([]byte, tierFetchBytes)
		for left := total; left > 0; {
			m, err := c.Read(buf[:min(int64(len(buf)), left)])
			if err != nil {
				drained <- err
				return
			}
			left -= int64(m)
		}
		drained <- nil
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// The GETs read into a pool of buffers, one back once written (as
	// parallelGets does); n more than in flight, so a GET need not wait
	// for the write of the chunk before it. Each chunk is written as it
	// arrives.
	bufs := newChunkBufs(2 * n)
	out := make(chan []byte, n)
	wrote := make(chan error, 1)
	go func() {
		var werr error
		for data := range out {
			if werr == nil {
				_, werr = c.Write(data)
			}
			bufs <- data[:cap(data)]
		}
		wrote <- werr
	}()
	var g errgroup.Group
	g.SetLimit(n)
	start := time.Now()
	for _, s := range spans {
		g.Go(func() error {
			return getSpan(ctx, b, s, bufs, func(buf []byte) { out <- buf })
		})
	}
	failed := g.Wait()
	close(out)
	if err := errors.Join(<-wrote, failed); err != nil {
		return 0, err
	}
	if err := <-drained; err != nil {
		return 0, err
	}
	return float64(total) / time.Since(start).Seconds() / 1e6, nil
}

func getRange(ctx context.Context, b objectstore.Bucket, key string, off, n int64) error {
	body, err := b.Get(ctx, key, off, n)
	if err != nil {
		return err
	}
	defer body.Close()
	buf := make([]byte, n)
	_, err = io.ReadFull(body, buf)
	return err
}

// fetchProbes fetches the probe topic at the start of every third segment
// (a cold read fetches the next segment ahead, not the one after), then
// again, and measures the ceiling on the same objects: a GET of the
// segment's indexes object, then of its first chunk.
func fetchProbes(ctx context.Context, cl *kgo.Client, b objectstore.Bucket) (cold, warm, ceil []time.Duration, err error) {
	type seg struct {
		base       int64
		log, index objectstore.Attrs
	}
	bySeg := map[string]*seg{}
	err = b.List(ctx, "", func(a objectstore.Attrs) error {
		if !inTopic(a.Key, tierProbeTopic) {
			return nil
		}
		name := filepath.Base(a.Key)
		stem, ext := strings.TrimSuffix(strings.TrimSuffix(name, ".log"), ".indexes"), filepath.Ext(name)
		if ext != ".log" && ext != ".indexes" {
			return nil
		}
		base, err := strconv.ParseInt(strings.SplitN(stem, "-", 2)[0], 10, 64)
		if err != nil {
			return nil
		}
		s := bySeg[stem]
		if s == nil {
			s = &seg{base: base}
			bySeg[stem] = s
		}
		if ext == ".log" {
			s.log = a
		} else {
			s.index = a
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	var segs []*seg
	for _, s := range bySeg {
		segs = append(segs, s)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].base < segs[j].base })
	topics, err := kadm.NewClient(cl).ListTopics(ctx, tierProbeTopic)
	if err != nil {
		return nil, nil, nil, err
	}
	topicID := topics[tierProbeTopic].ID
	fetch := func(offset int64) (time.Duration, error) {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 1, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = tierProbeTopic, topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = offset, 1<<20, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		start := time.Now()
		resp, err := req.RequestWith(ctx, cl)
		took := time.Since(start)
		if err != nil {
			return 0, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, errors.New("tiering: fetch answered no partition")
		}
		if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) == 0 {
			return 0, fmt.Errorf("tiering: fetch at %d: error %d, %d bytes", offset, p.ErrorCode, len(p.RecordBatches))
		}
		return took, nil
	}
	for i := 0; i < len(segs) && len(cold) < tierProbes; i += 3 {
		s := segs[i]
		if s.log.Key == "" || s.index.Key == "" {
			continue
		}
		d, err := fetch(s.base)
		if err != nil {
			return nil, nil, nil, err
		}
		cold = append(cold, d)
		if d, err = fetch(s.base); err != nil {
			return nil, nil, nil, err
		}
		warm = append(warm, d)
		start := time.Now()
		if err := getRange(ctx, b, s.index.Key, 0, s.index.Size); err != nil {
			return nil, nil, nil, err
		}
		if err := getRange(ctx, b, s.log.Key, 0, min(tierChunk, s.log.Size)); err != nil {
			return nil, nil, nil, err
		}
		ceil = append(ceil, time.Since(start))
	}
	if len(cold) == 0 {
		return nil, nil, nil, errors.New("tiering: no probe segment in the bucket")
	}
	return cold, warm, ceil, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func durs(ds []time.Duration) string {
	return pct(ds, 50).Round(10*time.Microsecond).String() + " / " + pct(ds, 99).Round(10*time.Microsecond).String()
}

func getChunk(ctx context.Context, b objectstore.Bucket, key string, off, n int64) ([]byte, error) {
	body, err := b.Get(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	buf := make([]byte, n)
	_, err = io.ReadFull(body, buf)
	return buf, err
}
