package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// lookTool finds a tool the Makefile's tools target installs: missing, the
// test is skipped locally and fails under CI.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (make tools installs it): %v", name, err)
		}
		t.Skipf("%s not found (make tools installs it)", name)
	}
	return path
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestStatusEndpoints: /healthz and /readyz answer 200 once shale dev
// serves; /debug/pprof is not served without --pprof.
func TestStatusEndpoints(t *testing.T) {
	p := startDev(t, "")
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpStatus(t, "http://"+p.httpAddr+path); code != http.StatusOK {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, _ := httpStatus(t, "http://"+p.httpAddr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
}

// promServer is a real Prometheus server scraping one target every second.
type promServer struct {
	t    *testing.T
	addr string
}

// startPrometheus starts a Prometheus server scraping target every second,
// with ruleFiles as its rule_files.
func startPrometheus(t *testing.T, bin, target string, ruleFiles ...string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shale\n    static_configs:\n      - targets: [%q]\n", target)
	if len(ruleFiles) > 0 {
		cfg += "rule_files:\n"
		for _, f := range ruleFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg += fmt.Sprintf("  - %q\n", abs)
		}
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pr := &promServer{t: t, addr: freeAddr(t)}
	stderr := &lockedBuffer{}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+pr.addr, "--web.console.templates="+dir, "--web.console.libraries="+dir)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus:\n%s", stderr)
		}
	})
	waitUntil(t, "prometheus scraping shale dev", func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", stderr)
		default:
		}
		return len(pr.query(`up{job="shale"} == 1`)) > 0
	})
	return pr
}

// query runs an instant query through the HTTP API and returns its
// samples' label sets (nil on an error, which the caller retries).
func (pr *promServer) query(expr string) []map[string]string {
	resp, err := http.Get("http://" + pr.addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Status != "success" {
		if out.Error != "" {
			pr.t.Fatalf("query %s: %s", expr, out.Error)
		}
		return nil
	}
	var ms []map[string]string
	for _, r := range out.Data.Result {
		ms = append(ms, r.Metric)
	}
	return ms
}

// waitSeries waits until every expression returns a series.
func (pr *promServer) waitSeries(what string, exprs []string) {
	pr.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, e := range exprs {
		for len(pr.query(e)) == 0 {
			if time.Now().After(deadline) {
				pr.t.Fatalf("%s: no series for %s", what, e)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// waitRulesEvaluated waits until Prometheus has evaluated every loaded
// rule, and fails the test for one whose evaluation failed.
func (pr *promServer) waitRulesEvaluated() {
	pr.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + pr.addr + "/api/v1/rules")
		if err != nil {
			pr.t.Fatal(err)
		}
		var out struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			pr.t.Fatal(err)
		}
		rules, unknown := 0, 0
		for _, g := range out.Data.Groups {
			for _, r := range g.Rules {
				rules++
				switch r.Health {
				case "ok":
				case "unknown":
					unknown++
				default:
					pr.t.Fatalf("rule %s: %s: %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		if rules > 0 && unknown == 0 {
			return
		}
		if time.Now().After(deadline) {
			pr.t.Fatalf("%d of %d rules not evaluated after 20s", unknown, rules)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dashboardExprs are the queries of the Grafana dashboard, with Grafana's
// $__rate_interval replaced by a range the test's scrapes fill.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "shale.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("deploy/grafana/shale.json: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m"))
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("the dashboard has only %d queries", len(exprs))
	}
	return exprs
}

// TestPrometheusScrapesEveryFamily runs a real Prometheus against shale dev:
// after produce, fetch, a group commit, tiered uploads and remote reads,
// every metric family is present, and counters and gauges have moved
// between two rounds of traffic. Every query of the Grafana dashboard
// parses (promtool check rules) and returns a series (promtool query
// instant). /debug/pprof is served with --pprof.
func TestPrometheusScrapesEveryFamily(t *testing.T) {
	promBin := lookTool(t, "prometheus")
	promtool := lookTool(t, "promtool")
	exprs := dashboardExprs(t)

	// Every query parses, checked before anything starts.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		fmt.Fprintf(&rules, "      - record: shale:dashboard_query_%d\n        expr: %q\n", i, e)
	}
	rulesPath := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(rulesPath, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rulesPath).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	p := startDev(t, "",
		"SHALE_PPROF=true",
		"SHALE_TOPIC_DEFAULT=log.segment.bytes=16384,log.local.retention.ms=1,log.roll.ms=500,log.segment.delete.delay.ms=1",
		"SHALE_RETENTION_CHECK_INTERVAL=100ms")
	if code, _ := httpStatus(t, "http://"+p.httpAddr+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("/debug/pprof/cmdline with --pprof: %d", code)
	}
	alertsPath := filepath.Join("..", "..", "deploy", "prometheus", "shale-alerts.yml")
	costPath := filepath.Join("..", "..", "deploy", "prometheus", "shale-cost.yml")
	pr := startPrometheus(t, promBin, p.httpAddr, alertsPath, costPath)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// "prom" is tiered with small segments that leave the local disk as
	// soon as they are uploaded; "prom-local" stays on the local disk.
	const topic, localTopic = "prom", "prom-local"
	adm := kadm.NewClient(p.client())
	off := "false"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"remote.storage.enable": &off}, localTopic); err != nil {
		t.Fatal(err)
	}
	prod := p.client(kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.AllowAutoTopicCreation())
	produced := map[string]int{}
	produce := func(topic string, n int) {
		for i := 0; i < n; i += 20 {
			var recs []*kgo.Record
			for j := produced[topic] + i; j < produced[topic]+i+20; j++ {
				recs = append(recs, &kgo.Record{Topic: topic, Value: tieredRecord(j)})
			}
			if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		produced[topic] += n
	}
	// readAll reads a topic from offset 0 (for "prom", from the object
	// store: a miss per chunk, then hits).
	readAll := func(topic, group string) {
		opts := []kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
		if group != "" {
			opts = append(opts, kgo.ConsumerGroup(group), kgo.DisableAutoCommit())
		}
		cl := p.client(opts...)
		consumeAll(t, cl, produced[topic])
		if group != "" {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				t.Fatal(err)
			}
		}
		cl.Close()
	}
	// allRemote waits until every record of "prom" is uploaded and gone
	// from the local disk.
	allRemote := func(segments int) {
		logDir := filepath.Join(p.dataDir, "log", topic+"-0")
		waitUntil(t, "every segment uploaded and deleted locally", func() bool {
			return files(filepath.Join(p.dataDir, "objects"), ".log") >= segments && localSegmentsEmpty(logDir)
		})
	}
	round := func() {
		produce(topic, 200)
		produce(localTopic, 50)
		readAll(localTopic, "")
		allRemote(produced[topic] / 60)
	}

	// Round one: produce, upload, read from the bucket twice, commit as
	// a group, and one refused request.
	round()
	readAll(topic, "prom-group")
	readAll(topic, "")
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = 1, 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = 9 // the topic has one partition
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.RequestWith(ctx, prod)

	families := []string{
		`shale_kafka_requests_total{api="Produce",error="NONE"}`,
		`shale_kafka_requests_total{api="Produce",error!="NONE"}`,
		`shale_kafka_requests_total{api="OffsetCommit"}`,
		`shale_kafka_request_duration_seconds_bucket{api="Fetch"}`,
		`shale_produced_bytes_total{topic="prom"}`,
		`shale_fetched_bytes_total{topic="prom-local",source="local"}`,
		`shale_fetched_bytes_total{topic="prom",source="remote"}`,
		`shale_partition_high_watermark{topic="prom",partition="0"}`,
		`shale_partition_under_replicated{topic="prom",partition="0"} == 0`,
		`shale_partition_under_min_isr{topic="prom",partition="0"} == 0`,
		`shale_tiering_lag_bytes{topic="prom",partition="0"}`,
		`shale_tiering_uploaded_bytes_total > 0`,
		`shale_remote_cache_hits_total > 0`,
		`shale_remote_cache_misses_total > 0`,
		`shale_consumer_group_lag{group="prom-group",topic="prom",partition="0"} == 0`,
		`shale_objectstore_requests_total{op="put",result="ok"}`,
		`shale_objectstore_topic_requests_total{topic="prom",class="put"} > 0`,
		`shale_objectstore_topic_requests_total{topic="prom",class="get"} > 0`,
		`shale_local_log_bytes{topic="prom-local"} > 0`,
		`shale_log_dir_usable_bytes > 0`, `shale_log_dir_total_bytes >= shale_log_dir_usable_bytes`, `shale_log_dir_reserve_bytes`,
		`go_goroutines`, `go_memstats_heap_inuse_bytes`, `process_cpu_seconds_total`, `process_resident_memory_bytes`,
	}
	pr.waitSeries("after the first round of traffic", families)

	// Round two: more of everything except the group's commits, so its
	// lag grows.
	round()
	readAll(topic, "")
	moving := []string{
		`increase(shale_kafka_requests_total{api="Produce",error="NONE"}[1m]) > 0`,
		`increase(shale_kafka_request_duration_seconds_count{api="Fetch"}[1m]) > 0`,
		`increase(shale_produced_bytes_total{topic="prom"}[1m]) > 0`,
		`increase(shale_fetched_bytes_total{topic="prom-local",source="local"}[1m]) > 0`,
		`increase(shale_fetched_bytes_total{topic="prom",source="remote"}[1m]) > 0`,
		`delta(shale_partition_high_watermark{topic="prom"}[1m]) > 0`,
		`increase(shale_tiering_uploaded_bytes_total[1m]) > 0`,
		`increase(shale_remote_cache_hits_total[1m]) > 0`,
		`increase(shale_remote_cache_misses_total[1m]) > 0`,
		`increase(shale_objectstore_topic_requests_total{topic="prom",class="put"}[1m]) > 0`,
		`shale_consumer_group_lag{group="prom-group",topic="prom",partition="0"} == 200`,
		`increase(process_cpu_seconds_total[1m]) > 0`,
	}
	pr.waitSeries("after the second round of traffic", moving)

	// The alerting rules name only families the broker serves, and
	// Prometheus evaluates each rule (alerts and costs) without an error.
	var named []string
	rulesText, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`shale_[a-z0-9_]+`).FindAllString(string(rulesText), -1) {
		if !slices.Contains(named, name) {
			named = append(named, name)
			pr.waitSeries("a family the alerting rules name", []string{fmt.Sprintf(`{__name__=%q}`, name)})
		}
	}
	if len(named) < 10 {
		t.Fatalf("the alerting rules name only %d families: %v", len(named), named)
	}
	pr.waitRulesEvaluated()
	// The cost rules price the tiered topic, not the local one.
	pr.waitSeries("the cost recording rules", []string{
		`topic:shale_objectstore_storage_dollars_per_month{topic="prom"} > 0`,
		`topic:shale_objectstore_request_dollars_per_month{topic="prom"} > 0`,
		`topic:shale_objectstore_dollars_per_month{topic="prom"} > 0`,
	})
	if got := pr.query(`topic:shale_objectstore_dollars_per_month{topic="prom-local"}`); len(got) != 0 {
		t.Errorf("a topic kept on the local disk has an object-store cost: %v", got)
	}

	// Every dashboard query returns a series, asked through promtool.
	for _, e := range exprs {
		out, err := exec.Command(promtool, "query", "instant", "http://"+pr.addr, e).CombinedOutput()
		if err != nil {
			t.Errorf("promtool query instant %s: %v\n%s", e, err, out)
			continue
		}
		if strings.TrimSpace(string(out)) == "" {
			t.Errorf("dashboard query returns no series: %s", e)
		}
	}
}
