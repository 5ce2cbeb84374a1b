package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTopicLostRanges: a byte flipped in a sealed segment of an untiered
// RF=1 partition is found by the scrubber and cannot be repaired (no other
// copy); the broker's GET /v1/lost-ranges and shale topic lost-ranges show
// the range, its segment and what the repair tried.
func TestTopicLostRanges(t *testing.T) {
	p := startDev(t, "", "SHALE_SCRUB_INTERVAL=300ms")
	cli := adminCLI(t, p)
	mustAdmin(t, cli, "topic", "create", "damaged", "-p", "1", "-c", "remote.storage.enable=false", "-c", "segment.bytes=2048")
	mustAdmin(t, cli, "topic", "create", "intact", "-p", "1")
	if text := mustAdmin(t, cli, "topic", "lost-ranges", "--http", p.httpAddr); !strings.Contains(text, "no lost ranges") {
		t.Fatalf("before any damage, topic lost-ranges printed:\n%s", text)
	}
	cl := p.client(kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 60; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "damaged", Value: []byte(strings.Repeat("d", 200))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(p.dataDir, "log", "damaged-0", "*.log"))
	sort.Strings(logs)
	if len(logs) < 3 {
		t.Fatalf("only %d segments: %v", len(logs), logs)
	}
	f, err := os.OpenFile(logs[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	f.WriteAt([]byte{b[0] ^ 0xff}, 100)
	f.Close()

	var parts []lostPartition
	waitUntil(t, "the lost range and its failed repair reported", func() bool {
		parts = nil
		adminJSON(t, cli, &parts, "topic", "lost-ranges", "--http", p.httpAddr)
		return len(parts) == 1 && parts[0].LastRepairError != ""
	})
	lp := parts[0]
	base := strings.TrimSuffix(filepath.Base(logs[1]), ".log")
	if lp.Topic != "damaged" || lp.Partition != 0 || lp.Broker != 0 || !lp.Leader || len(lp.Ranges) != 1 || lp.LastRepair == nil {
		t.Fatalf("lost-ranges: %+v", lp)
	}
	if r := lp.Ranges[0]; r.To <= r.From || strings.TrimLeft(base, "0") != strings.TrimLeft(jsonInt(r.SegmentBase), "0") || time.Since(r.Found) > time.Minute {
		t.Fatalf("range %+v of segment %s", r, base)
	}
	if !strings.Contains(lp.LastRepairError, "no other in-sync replica") {
		t.Fatalf("last repair error %q", lp.LastRepairError)
	}
	// The HTTP answer itself, by topic.
	for topic, want := range map[string]int{"damaged": 1, "intact": 0} {
		resp, err := http.Get("http://" + p.httpAddr + "/v1/lost-ranges?topic=" + topic)
		if err != nil {
			t.Fatal(err)
		}
		var doc lostDocument
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(doc.Partitions) != want {
			t.Fatalf("GET /v1/lost-ranges?topic=%s: %s %v %+v", topic, resp.Status, err, doc)
		}
	}
	text := mustAdmin(t, cli, "topic", "lost-ranges", "damaged")
	if !strings.Contains(text, "LAST-REPAIR-ERROR") || !strings.Contains(text, "damaged") || !strings.Contains(text, "no other in-sync replica") {
		t.Fatalf("topic lost-ranges damaged (advertised HTTP address) printed:\n%s", text)
	}
	if text := mustAdmin(t, cli, "topic", "lost-ranges", "intact"); !strings.Contains(text, "no lost ranges") {
		t.Fatalf("topic lost-ranges intact printed:\n%s", text)
	}
	_, err = cli("topic", "lost-ranges", "nope", "--http", p.httpAddr)
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)
	_, err = cli("topic", "lost-ranges", "--http", freeAddr(t))
	wantErr(t, err, "no broker answered on its HTTP address", "connection refused")
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }
