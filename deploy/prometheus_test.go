package deploy

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// promtool finds promtool, which `make prometheus` installs.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		missing(t, "no promtool: run `make prometheus` (installs the Debian package)")
	}
	return p
}

// TestCostRules checks deploy/prometheus/shale-cost.yml with promtool: the
// recording rules parse, and price storage and requests per topic as
// their unit tests (shale-cost_test.yml) expect.
func TestCostRules(t *testing.T) {
	promtool := promtool(t)
	dir := filepath.Join(moduleRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "shale-cost.yml"}, {"test", "rules", "shale-cost_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// alertRule is one alerting rule of prometheus/shale-alerts.yml.
type alertRule struct {
	Alert       string
	Expr        string
	For         string
	Labels      map[string]string
	Annotations map[string]string
}

// alertRules reads prometheus/shale-alerts.yml.
func alertRules(t *testing.T) (path string, rules []alertRule) {
	t.Helper()
	path = filepath.Join(moduleRoot(t), "deploy", "prometheus", "shale-alerts.yml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []alertRule
		}
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return path, rules
}

// alertCase is one promtool unit test of the alerting rules: the series
// Prometheus scraped once a minute, and the alerts of one name firing at
// one time (none: it must not fire). Each firing alert gives its labels
// beyond the rule's own, and its rendered summary; the rule's labels and
// its description (plain text, no template) are added from the rules
// file, so that the test states only what the series decide.
type alertCase struct {
	name   string
	series map[string]string // series -> values, in promtool's notation
	at     string            // eval_time
	alert  string
	fires  []firing
}

type firing struct {
	labels  map[string]string
	summary string
}

// b1 is the labels of the scrape target the cases' series come from.
var b1 = map[string]string{"job": "shale", "instance": "b1:9644"}

// with returns b1's labels with more.
func with(kv ...string) map[string]string {
	m := maps.Clone(b1)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var alertCases = []alertCase{
	{"broker down for 2 minutes", map[string]string{`up{job="shale",instance="b1:9644"}`: "1 1 0x5", `up{job="node",instance="n1:9100"}`: "0x7"},
		"3m", "ShaleBrokerDown", nil},
	{"broker down for 2 minutes", map[string]string{`up{job="shale",instance="b1:9644"}`: "1 1 0x5", `up{job="node",instance="n1:9100"}`: "0x7"},
		"4m", "ShaleBrokerDown", []firing{{b1, "Shale broker b1:9644 is not answering scrapes"}}},
	{"offline partitions", map[string]string{`shale_offline_partitions{job="shale",instance="b1:9644"}`: "0 2x5"},
		"1m", "ShaleOfflinePartitions", nil},
	{"offline partitions", map[string]string{`shale_offline_partitions{job="shale",instance="b1:9644"}`: "0 2x5"},
		"2m", "ShaleOfflinePartitions", []firing{{b1, "Partition logs offline on b1:9644: 2"}}},
	{"1 produce in 21 refused for want of replicas", map[string]string{
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Produce",version="11",error="NONE"}`:                "0+100x20",
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Produce",version="11",error="NOT_ENOUGH_REPLICAS"}`: "0+5x20",
	}, "6m", "ShaleProduceFailing", []firing{{b1, "4.762% of produce requests to b1:9644 fail on the broker's side"}}},
	{"produce to a topic that does not exist is the client's error", map[string]string{
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Produce",version="11",error="NONE"}`:                       "0+100x20",
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Produce",version="11",error="UNKNOWN_TOPIC_OR_PARTITION"}`: "0+50x20",
	}, "10m", "ShaleProduceFailing", nil},
	{"1 fetch in 11 fails while the store is down", map[string]string{
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Fetch",version="16",error="NONE"}`:                "0+100x20",
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Fetch",version="16",error="KAFKA_STORAGE_ERROR"}`: "0+10x20",
	}, "11m", "ShaleFetchFailing", []firing{{b1, "9.091% of fetch requests to b1:9644 fail on the broker's side"}}},
	{"fetches from followers that lost leadership are the client's to retry", map[string]string{
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Fetch",version="16",error="NONE"}`:                   "0+100x20",
		`shale_kafka_requests_total{job="shale",instance="b1:9644",api="Fetch",version="16",error="NOT_LEADER_OR_FOLLOWER"}`: "0+100x20",
	}, "15m", "ShaleFetchFailing", nil},
	{"a log recovering for 5 minutes", map[string]string{`shale_lost_partition_logs{job="shale",instance="b1:9644"}`: "0 1x10"},
		"5m", "ShaleLostPartitionLogs", nil},
	{"a log recovering for 5 minutes", map[string]string{`shale_lost_partition_logs{job="shale",instance="b1:9644"}`: "0 1x10"},
		"6m", "ShaleLostPartitionLogs", []firing{{b1, "Partition logs lost or recovering on b1:9644: 1"}}},
	{"under-replicated partitions summed per topic", map[string]string{
		`shale_partition_under_replicated{job="shale",instance="b1:9644",topic="t",partition="0"}`: "1x20",
		`shale_partition_under_replicated{job="shale",instance="b2:9644",topic="t",partition="1"}`: "0 0 1x20",
		`shale_partition_under_replicated{job="shale",instance="b2:9644",topic="u",partition="0"}`: "0x20",
	}, "12m", "ShaleUnderReplicatedPartitions", []firing{{map[string]string{"topic": "t"}, "Partitions of topic t under-replicated for 10 minutes: 2"}}},
	{"a partition below min.insync.replicas", map[string]string{
		`shale_partition_under_min_isr{job="shale",instance="b1:9644",topic="t",partition="0"}`: "0 1x5",
		`shale_partition_under_min_isr{job="shale",instance="b1:9644",topic="u",partition="0"}`: "0x6",
	}, "1m", "ShaleUnderMinISRPartitions", nil},
	{"a partition below min.insync.replicas", map[string]string{
		`shale_partition_under_min_isr{job="shale",instance="b1:9644",topic="t",partition="0"}`: "0 1x5",
		`shale_partition_under_min_isr{job="shale",instance="b1:9644",topic="u",partition="0"}`: "0x6",
	}, "3m", "ShaleUnderMinISRPartitions", []firing{{map[string]string{"topic": "t"}, "Partitions of topic t below min.insync.replicas: 1"}}},
	{"stray directories for an hour", map[string]string{`shale_stray_partition_logs{job="shale",instance="b1:9644"}`: "1x70"},
		"59m", "ShaleStrayPartitionLogs", nil},
	{"stray directories for an hour", map[string]string{`shale_stray_partition_logs{job="shale",instance="b1:9644"}`: "1x70"},
		"61m", "ShaleStrayPartitionLogs", []firing{{b1, "Partition directories kept but not served on b1:9644: 1"}}},
	{"below the reserve", map[string]string{
		`shale_log_dir_usable_bytes{job="shale",instance="b1:9644"}`:  "2048 1536 1000x5",
		`shale_log_dir_reserve_bytes{job="shale",instance="b1:9644"}`: "1024x7",
	}, "3m", "ShaleLogDirBelowReserve", []firing{{b1, "Data directory of b1:9644 is below its free-space reserve, 1000B left: produce is refused"}}},
	{"no reserve, no alert", map[string]string{
		`shale_log_dir_usable_bytes{job="shale",instance="b1:9644"}`:  "0x7",
		`shale_log_dir_reserve_bytes{job="shale",instance="b1:9644"}`: "0x7",
	}, "5m", "ShaleLogDirBelowReserve", nil},
	{"filling up at 100 MB a minute", map[string]string{
		`shale_log_dir_usable_bytes{job="shale",instance="b1:9644"}`:  "10000000000-100000000x60",
		`shale_log_dir_reserve_bytes{job="shale",instance="b1:9644"}`: "1000000000x60",
	}, "35m", "ShaleLogDirFillingUp", []firing{{b1, "Data directory of b1:9644 reaches its reserve within 6 hours at the last hour's rate"}}},
	{"steady free space", map[string]string{
		`shale_log_dir_usable_bytes{job="shale",instance="b1:9644"}`:  "5000000000x60",
		`shale_log_dir_reserve_bytes{job="shale",instance="b1:9644"}`: "1000000000x60",
	}, "50m", "ShaleLogDirFillingUp", nil},
	{"uploads 3 segments behind for 15 minutes", map[string]string{
		`shale_tiering_lag_eligible_segments{job="shale",instance="b1:9644",topic="t",partition="0"}`: "1 3x30",
		`shale_tiering_lag_eligible_segments{job="shale",instance="b1:9644",topic="t",partition="1"}`: "2x31",
		`shale_tiering_lag_eligible_segments{job="shale",instance="b1:9644",topic="u",partition="0"}`: "2x31",
	}, "16m", "ShaleTieringLagging", []firing{{with("topic", "t"), "Segments of topic t waiting for upload on b1:9644: 3"}}},
	{"uploads failing", map[string]string{`shale_tiering_upload_errors_total{job="shale",instance="b1:9644"}`: "0+1x30"},
		"17m", "ShaleTieringUploadErrors", []firing{{b1, "Segment uploads from b1:9644 keep failing"}}},
	{"uploads failing no more", map[string]string{`shale_tiering_upload_errors_total{job="shale",instance="b1:9644"}`: "0+1x10 10x20"},
		"25m", "ShaleTieringUploadErrors", nil},
	{"1 object store call in 11 fails", map[string]string{
		`shale_objectstore_requests_total{job="shale",instance="b1:9644",op="put",result="ok"}`:    "0+100x30",
		`shale_objectstore_requests_total{job="shale",instance="b1:9644",op="get",result="error"}`: "0+10x30",
	}, "20m", "ShaleObjectStoreErrors", []firing{{b1, "9.091% of object store calls from b1:9644 fail"}}},
	{"1 object store call in 101 fails", map[string]string{
		`shale_objectstore_requests_total{job="shale",instance="b1:9644",op="put",result="ok"}`:    "0+100x30",
		`shale_objectstore_requests_total{job="shale",instance="b1:9644",op="get",result="error"}`: "0+1x30",
	}, "20m", "ShaleObjectStoreErrors", nil},
	{"an unclean election", map[string]string{`shale_unclean_leader_elections_total{job="shale",instance="b1:9644",by="controller"}`: "0 0 1x10"},
		"3m", "ShaleUncleanLeaderElection", []firing{{with("by", "controller"), "b1:9644 elected a leader from outside the ISR (asked by the controller)"}}},
	{"no unclean election", map[string]string{`shale_unclean_leader_elections_total{job="shale",instance="b1:9644",by="operator"}`: "0x12"},
		"3m", "ShaleUncleanLeaderElection", nil},
	{"compaction failing for 10 minutes", map[string]string{`shale_log_cleaner_uncleanable_partitions{job="shale",instance="b1:9644"}`: "0 2x15"},
		"10m", "ShaleUncleanablePartitions", nil},
	{"compaction failing for 10 minutes", map[string]string{`shale_log_cleaner_uncleanable_partitions{job="shale",instance="b1:9644"}`: "0 2x15"},
		"12m", "ShaleUncleanablePartitions", []firing{{b1, "Compaction fails for 2 partitions on b1:9644"}}},
	{"the scrubber finds a lost range", map[string]string{`shale_lost_ranges_total{job="shale",instance="b1:9644"}`: "0 0 1x10"},
		"3m", "ShaleLostRanges", []firing{{b1, "The scrubber found damaged segment data on b1:9644"}}},
	{"the remote scrub finds damaged objects", map[string]string{`shale_remote_damaged_objects{job="shale",instance="b1:9644"}`: "0 0 2x10"},
		"3m", "ShaleRemoteObjectsDamaged", []firing{{b1, "The remote logs b1:9644 leads hold 2 damaged objects"}}},
	{"a clean remote scrub", map[string]string{`shale_remote_damaged_objects{job="shale",instance="b1:9644"}`: "0x12"},
		"3m", "ShaleRemoteObjectsDamaged", nil},
	{"a repair fails", map[string]string{
		`shale_lost_range_repairs_total{job="shale",instance="b1:9644",result="failed"}`:   "0 0 1x10",
		`shale_lost_range_repairs_total{job="shale",instance="b1:9644",result="repaired"}`: "0+1x12",
	}, "3m", "ShaleLostRangeRepairsFailing", []firing{{with("result", "failed"), "Damaged segment data on b1:9644 could not be repaired"}}},
	{"repairs succeed", map[string]string{`shale_lost_range_repairs_total{job="shale",instance="b1:9644",result="repaired"}`: "0+1x12"},
		"3m", "ShaleLostRangeRepairsFailing", nil},
}

// TestAlertRules checks deploy/prometheus/shale-alerts.yml with promtool:
// the rules parse (check rules), and each alert fires with the labels and
// summary expected from the series of its cases and not before, or not
// at all (test rules). Every alert has a case where it fires, and each
// has a severity, a summary and a description.
func TestAlertRules(t *testing.T) {
	promtool := promtool(t)
	path, rules := alertRules(t)
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	byName := map[string]alertRule{}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if _, ok := byName[r.Alert]; ok {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
			t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s has no summary or no description", r.Alert)
		}
		if strings.Contains(r.Annotations["description"], "{{") {
			t.Errorf("alert %s: its description is a template; the cases compare it as plain text", r.Alert)
		}
		byName[r.Alert] = r
	}
	fired := map[string]bool{}
	type expAlert struct {
		ExpLabels      map[string]string `yaml:"exp_labels"`
		ExpAnnotations map[string]string `yaml:"exp_annotations"`
	}
	type ruleTest struct {
		EvalTime  string     `yaml:"eval_time"`
		AlertName string     `yaml:"alertname"`
		ExpAlerts []expAlert `yaml:"exp_alerts"`
	}
	type series struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	type testGroup struct {
		Name      string     `yaml:"name"`
		Interval  string     `yaml:"interval"`
		Input     []series   `yaml:"input_series"`
		RuleTests []ruleTest `yaml:"alert_rule_test"`
	}
	var groups []testGroup
	for _, c := range alertCases {
		r, ok := byName[c.alert]
		if !ok {
			t.Errorf("case %q: no alert %s in %s", c.name, c.alert, path)
			continue
		}
		g := testGroup{Name: c.alert + " at " + c.at + ": " + c.name, Interval: "1m"}
		for _, s := range slices.Sorted(maps.Keys(c.series)) {
			g.Input = append(g.Input, series{s, c.series[s]})
		}
		rt := ruleTest{EvalTime: c.at, AlertName: c.alert, ExpAlerts: []expAlert{}}
		for _, f := range c.fires {
			labels := maps.Clone(f.labels)
			maps.Copy(labels, r.Labels)
			rt.ExpAlerts = append(rt.ExpAlerts, expAlert{labels, map[string]string{"summary": f.summary, "description": r.Annotations["description"]}})
			fired[c.alert] = true
		}
		g.RuleTests = append(g.RuleTests, rt)
		groups = append(groups, g)
	}
	for name := range byName {
		if !fired[name] {
			t.Errorf("alert %s has no case where it fires", name)
		}
	}
	raw, err := yaml.Marshal(map[string]any{"rule_files": []string{path}, "evaluation_interval": "1m", "tests": groups})
	if err != nil {
		t.Fatal(err)
	}
	testPath := filepath.Join(t.TempDir(), "shale-alerts_test.yml")
	if err := os.WriteFile(testPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", testPath).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
