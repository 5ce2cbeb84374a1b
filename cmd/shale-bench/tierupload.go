package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
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
//     plus the manifest commits (counted from when the topic's one-time
//     descriptors are in the bucket; a multipart PUT counts once), and
//     the PUT-class HTTP requests a bill counts (a multipart upload's
//     create, parts and completion each, retries too) from the broker's
//     shale_objectstore_s3_requests_total;
//   - the same upload run, shorter, with larger segments (-tier-upload-large-mb,
//     128 MiB by default; a broker's default is 1 GiB), above the 64 MiB
//     from which the S3 backend used to upload in 8 MiB parts;
//   - produce latency at a low fixed rate, alone, while a cold replay
//     runs and while a non-Shale load of equal CPU runs, in interleaved
//     rounds (tierlatency.go).
const (
	tierUpTopic   = "tierup"
	tierUpLarge   = "tierup-large"
	tierHotTopic  = "tierhot"
	tierColdTopic = "tiercold"
)

type uploadOptions struct {
	rateMBps   float64       // ingest rate of the upload run
	partitions int           // partitions (and connections) of the upload run
	duration   time.Duration // length of the upload run
	latRounds  int           // rounds of produce latency alone, with a replay, with a non-Shale load
	latRate    float64       // produce rate of the latency rounds, MB/s
	latLength  time.Duration // length of each phase of a latency round
	coldMB     int           // MiB of the cold topic the latency rounds replay
	latOnly    bool          // the latency rounds alone
	latPhases  string        // the phases of each latency round, comma-separated
	upOnly     bool          // the upload run alone
	largeMB    int           // segment size of the second upload run, MiB (0: none)
}

// runTierUploadTables runs the upload and latency measurements and prints
// their table.
func runTierUploadTables(o options, sh *target, bucket objectstore.Bucket, cl *kgo.Client, minioPid int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if !o.upload.latOnly {
		load := loadAverage()
		rows, err := runTierUpload(ctx, o, sh, bucket, cl, minioPid, tierUpTopic, tierSegment, o.upload.duration)
		if err != nil {
			return err
		}
		fmt.Printf("\nuploads while producing to MinIO (%d MiB segments; load %s before, %s after)\n", tierSegment>>20, load, loadAverage())
		printTable([]string{"workload", "shale", "same-run ceiling", "ceiling", "ratio"}, rows)
		if seg := o.upload.largeMB << 20; seg > 0 {
			// Half as long: enough for a few sealed segments per
			// partition at the default rate.
			load = loadAverage()
			rows, err := runTierUpload(ctx, o, sh, bucket, cl, minioPid, tierUpLarge, seg, max(o.upload.duration/2, time.Second))
			if err != nil {
				return err
			}
			fmt.Printf("\nuploads while producing to MinIO (%d MiB segments; load %s before, %s after)\n", seg>>20, load, loadAverage())
			printTable([]string{"workload", "shale", "same-run ceiling", "ceiling", "ratio"}, rows)
		}
	}
	if o.upload.upOnly {
		return nil
	}
	lat, err := runTierLatency(ctx, o, sh, bucket, cl, minioPid)
	if err != nil {
		return err
	}
	printTable([]string{"workload", "shale", "same phases", "", "difference from alone, per round"}, lat)
	return nil
}

// runTierUpload measures uploads while producing for duration to topic,
// created with segments of seg bytes; it returns table rows.
func runTierUpload(ctx context.Context, o options, sh *target, bucket objectstore.Bucket, cl *kgo.Client, minioPid int, topic string, seg int, duration time.Duration) ([][]string, error) {
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
	if err := create(topic, uo.partitions, seg); err != nil {
		return nil, err
	}

	// The topic's one-time objects (the archive and topic descriptors,
	// and each partition's manifest, fenced when its leader starts) are
	// not part of the ingest's cost: wait for them before counting PUTs
	// (and producing: a leader takes produce once it has fenced).
	if err := waitForDescriptors(ctx, bucket, topic, uo.partitions); err != nil {
		return nil, err
	}
	before := scrape(sh.httpAddr)
	// The lag, sampled per partition every 50 ms: the sealed segments
	// eligible for upload (below the high watermark) that the manifest
	// does not hold yet, as the target counts them (uploads in flight
	// included), and all sealed segments it does not hold (those waiting
	// for the high watermark too). Without the eligible series (an older
	// broker) its rows print n/a.
	var (
		mu                sync.Mutex
		maxLag, maxSealed float64
		lagSamples        []float64 // per sample, the largest eligible lag of any partition
	)
	eligibleSeen := false
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
			top := 0.0
			for k, v := range s {
				if !strings.Contains(k, `topic="`+topic+`"`) {
					continue
				}
				switch {
				case strings.HasPrefix(k, "shale_tiering_lag_eligible_segments{"):
					eligibleSeen = true
					top = max(top, v)
				case strings.HasPrefix(k, "shale_tiering_lag_segments{"):
					maxSealed = max(maxSealed, v)
				}
			}
			maxLag = max(maxLag, top)
			lagSamples = append(lagSamples, top)
			mu.Unlock()
		}
	}()
	cfg := rawConfig{conns: uo.partitions, inflight: 4, partitions: uo.partitions, recordBytes: 1000, batchBytes: 256 << 10,
		duration: duration, rateMBps: uo.rateMBps}
	if o.raw.profileDir != "" && topic == tierUpTopic {
		// Where the broker's CPU goes while it ingests and uploads.
		go fetchProfile(sh.httpAddr, "profile", filepath.Join(o.raw.profileDir, "tier-upload.cpu.pprof"), uo.duration)
		go fetchProfile(sh.httpAddr, "allocs", filepath.Join(o.raw.profileDir, "tier-upload.allocs.pprof"), uo.duration)
	}
	cpu := startCPU(sh.pid, minioPid)
	start := time.Now()
	res, err := rawProduce(sh.addr, topic, 1, cfg)
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
			if strings.HasPrefix(k, "shale_tiering_lag_segments{") && strings.Contains(k, `topic="`+topic+`"`) {
				lag += v
			}
		}
		if lag == 0 {
			break
		}
		if ctx.Err() != nil {
			close(stop)
			return nil, fmt.Errorf("tiering: uploads of %s did not catch up", topic)
		}
		time.Sleep(20 * time.Millisecond)
	}
	caughtUp := time.Now()
	used := cpu.stop()
	close(stop)
	<-sampled
	after := scrape(sh.httpAddr)
	d := func(name string) float64 { return after[name] - before[name] }
	upBytes, upSegs := d("shale_tiering_uploaded_bytes_total"), d("shale_tiering_uploaded_segments_total")
	commits := d("shale_tiering_upload_commits_total")
	puts := d(`shale_objectstore_requests_total{op="put",result="ok"}`)
	// What a bill counts: every PUT-class request the broker's bucket
	// sent (a multipart upload's create, parts and completion, retried
	// attempts, lists), by operation.
	var billable float64
	byOp := map[string]float64{}
	for k := range after {
		if op, ok := strings.CutPrefix(k, `shale_objectstore_s3_requests_total{class="put",operation="`); ok {
			op = strings.TrimSuffix(op, `"}`)
			byOp[op] = d(k)
			billable += byOp[op]
		}
	}
	var opCounts []string
	for _, op := range []string{"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListObjectsV2"} {
		opCounts = append(opCounts, fmt.Sprintf("%.0f", byOp[op]))
	}
	upMBps := upBytes / caughtUp.Sub(start).Seconds() / 1e6
	ingested := float64(res.bytes)

	// Ceiling: PUTs of as many segment-sized objects, as many in flight
	// as partitions, alone.
	segSize := int64(upBytes / max(upSegs, 1))
	putMBps, err := parallelPuts(ctx, bucket, "ceiling/"+topic+"/upload-parallel", int(upSegs), segSize, uo.partitions)
	if err != nil {
		return nil, err
	}
	serialMBps, err := parallelPuts(ctx, bucket, "ceiling/"+topic+"/upload-serial", min(int(upSegs), 16), segSize, 1)
	if err != nil {
		return nil, err
	}

	ms := func(phase string) string {
		return fmt.Sprintf("%.1f", d(`shale_tiering_upload_phase_seconds_total{phase="`+phase+`"}`)/max(upSegs, 1)*1e3)
	}
	gib := ingested / (1 << 30)
	lagMax, lagShares := "n/a", "n/a"
	if eligibleSeen {
		lagMax = fmt.Sprintf("%.0f", maxLag)
		var n [4]int
		for _, v := range lagSamples {
			n[min(int(v), 3)]++
		}
		total := float64(max(len(lagSamples), 1))
		lagShares = fmt.Sprintf("%.0f%% / %.0f%% / %.0f%% / %.0f%%", 100*float64(n[0])/total, 100*float64(n[1])/total, 100*float64(n[2])/total, 100*float64(n[3])/total)
	}
	rows := [][]string{
		{fmt.Sprintf("ingest, %d partitions, raw produce acks=1, MB/s", uo.partitions), fmt.Sprintf("%.0f", res.mbps()), "asked", fmt.Sprintf("%.0f", uo.rateMBps), fmt.Sprintf("%.2fx", res.mbps()/uo.rateMBps)},
		{"upload while producing (first produce to caught up), MB/s", fmt.Sprintf("%.0f", upMBps),
			fmt.Sprintf("raw PUTs of %d MiB, %d in flight, alone", segSize>>20, uo.partitions), fmt.Sprintf("%.0f", putMBps), fmt.Sprintf("%.2fx", upMBps/putMBps)},
		{"", "", "raw PUTs, 1 in flight, alone", fmt.Sprintf("%.0f", serialMBps), ""},
		{"upload lag, eligible segments not in the manifest, max in a partition", lagMax, "target", "< 2", ""},
		{"the same, share of 50 ms samples whose largest is 0 / 1 / 2 / 3+", lagShares, "", "", ""},
		{"sealed segments not in the manifest (with those not yet below the high watermark), max", fmt.Sprintf("%.0f", maxSealed), "", "", ""},
		{"uploads caught up after the last acknowledgement", caughtUp.Sub(produced).Round(10 * time.Millisecond).String(), "", "", ""},
		{"upload time per segment, ms: wait / open / read / put / companion / queue / commit",
			strings.Join([]string{ms("wait"), ms("open"), ms("read"), ms("put"), ms("companion"), ms("queue"), ms("commit")}, " / "), "", "", ""},
		{"CPU ms per MB, first produce to caught up: broker per MB ingested (and uploaded) / MinIO per MB uploaded",
			fmt.Sprintf("%.2f / %.2f", msPerMB(used[0], res.bytes), msPerMB(used[1], int64(upBytes))), "", "", ""},
		{"segments per manifest commit", fmt.Sprintf("%.1f", upSegs/max(commits, 1)), "", "", ""},
		{"object PUTs per GiB ingested", fmt.Sprintf("%.0f", puts/gib), "target: 2 per segment + commits", fmt.Sprintf("%.0f", (2*upSegs+commits)/gib), fmt.Sprintf("%.2fx", puts/(2*upSegs+commits))},
		{"S3 PUT-class requests per GiB ingested (billable, retries included)", fmt.Sprintf("%.0f", billable/gib), "target: 2 per segment + commits", fmt.Sprintf("%.0f", (2*upSegs+commits)/gib), fmt.Sprintf("%.2fx", billable/(2*upSegs+commits))},
		{"the same per segment, manifest commits left out", fmt.Sprintf("%.1f", (billable-commits)/max(upSegs, 1)), "target", "2", ""},
		{"PUT-class requests: PutObject / CreateMultipartUpload / UploadPart / CompleteMultipartUpload / ListObjectsV2", strings.Join(opCounts, " / "), "", "", ""},
	}
	return rows, nil
}

// waitForDescriptors waits until the bucket holds the archive descriptor,
// the topic's descriptor and the manifests of its partitions.
func waitForDescriptors(ctx context.Context, bucket objectstore.Bucket, topic string, partitions int) error {
	for {
		archive, desc, manifests := false, false, 0
		err := bucket.List(ctx, "", func(a objectstore.Attrs) error {
			switch {
			case strings.HasSuffix(a.Key, "shale-archive.json"):
				archive = true
			case strings.HasSuffix(a.Key, "/topic.json") && inTopic(a.Key, topic):
				desc = true
			case strings.HasSuffix(a.Key, "/manifest") && inTopic(a.Key, topic):
				manifests++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if archive && desc && manifests >= partitions {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tiering: the descriptors of %s are not in the bucket: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
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

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + d.Round(10*time.Microsecond).String()
	}
	return "-" + (-d).Round(10*time.Microsecond).String()
}
