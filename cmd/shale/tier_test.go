package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// sizeOf sums the sizes of the files under dir whose names end with suffix.
func sizeOf(t *testing.T, dir, suffix string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), suffix) {
			if st, err := d.Info(); err == nil {
				n += st.Size()
			}
		}
		return nil
	})
	return n
}

// TestTierStatus: shale tier status reports, per partition, the local
// bytes (the segment files), the remote bytes (the segment objects in the
// bucket), the upload lag and the last upload, from the broker's
// GET /v1/tier; topic describe shows the same remote size.
func TestTierStatus(t *testing.T) {
	p := startDev(t, "", "SHALE_TOPIC_DEFAULT=log.segment.bytes=16384,log.roll.ms=500")
	cli := adminCLI(t, p)
	mustAdmin(t, cli, "topic", "create", "cold", "-p", "1")
	mustAdmin(t, cli, "topic", "create", "hot", "-p", "1", "-c", "remote.storage.enable=false")
	cl := p.client(kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 200; i++ {
		v := []byte(strings.Repeat("c", 500))
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "cold", Value: v}, &kgo.Record{Topic: "hot", Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	var rows []tierRow
	status := func() {
		t.Helper()
		rows = nil
		adminJSON(t, cli, &rows, "tier", "status", "--http", p.httpAddr)
	}
	waitUntil(t, "sealed segments of cold uploaded", func() bool {
		status()
		return len(rows) == 2 && rows[0].Topic == "cold" && rows[0].RemoteSegments >= 3 && rows[0].UploadLagSegments == 0
	})
	// A retention pass rolls the idle active segment (log.roll.ms) and
	// it is uploaded, at any moment: the status, the bucket, the disk and
	// topic describe are read until the bucket and the disk hold what the
	// status read before and after them says, and describe agrees. A
	// disagreement that lasts fails.
	var (
		cold, hot              tierRow
		remote, local, describ int64
		last                   string
	)
	waitUntil(t, "tier status, the bucket, the disk and topic describe agreeing", func() bool {
		status()
		before := rows
		if len(before) != 2 {
			return false
		}
		remote = sizeOf(t, filepath.Join(p.dataDir, "objects"), ".log")
		local = sizeOf(t, filepath.Join(p.dataDir, "log", "cold-0"), ".log")
		var d describedTopic
		adminJSON(t, cli, &d, "topic", "describe", "cold", "--http", p.httpAddr)
		if len(d.Partitions) != 1 {
			return false
		}
		describ = d.Partitions[0].RemoteBytes
		status()
		if len(rows) != 2 {
			return false
		}
		cold, hot = rows[0], rows[1]
		same := before[0].RemoteBytes == cold.RemoteBytes && before[0].LocalBytes == cold.LocalBytes
		if !same || cold.RemoteBytes != remote || cold.LocalBytes != local || describ != cold.RemoteBytes {
			if s := fmt.Sprintf("cold: remote bytes %d then %d, the bucket holds %d bytes of segments, topic describe %d; local bytes %d then %d, the segment files hold %d",
				before[0].RemoteBytes, cold.RemoteBytes, remote, describ, before[0].LocalBytes, cold.LocalBytes, local); s != last {
				t.Log(s)
				last = s
			}
			return false
		}
		return true
	})
	if !cold.Reported || !cold.Tiered || cold.Leader != 0 || cold.LastUpload == nil || time.Since(*cold.LastUpload) > time.Minute {
		t.Fatalf("cold: %+v", cold)
	}
	if remote == 0 {
		t.Fatalf("cold: the bucket holds no segment bytes: %+v", cold)
	}
	if cold.HighWatermark != 200 || cold.RemoteStartOffset != 0 || cold.RemoteEndOffset <= 0 || cold.RemoteEndOffset > 200 {
		t.Fatalf("cold offsets: %+v", cold)
	}
	if hot.Topic != "hot" || !hot.Reported || hot.Tiered || hot.RemoteBytes != 0 || hot.LocalBytes == 0 {
		t.Fatalf("hot: %+v", hot)
	}

	text := mustAdmin(t, cli, "tier", "status", "cold", "--http", p.httpAddr)
	if !strings.Contains(text, "cold   0          0       yes") || !strings.Contains(text, "s ago") || strings.Contains(text, "hot") {
		t.Fatalf("tier status cold printed:\n%s", text)
	}

	_, err := cli("tier", "status", "nope", "--http", p.httpAddr)
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)
	closed := freeAddr(t)
	_, err = cli("tier", "status", "--http", closed)
	wantErr(t, err, "no broker answered on its HTTP address", closed, "connection refused")
	// Without --http: the address the broker advertises.
	if text := mustAdmin(t, cli, "tier", "status", "cold"); !strings.Contains(text, "cold   0          0       yes") {
		t.Fatalf("tier status cold with --brokers alone printed:\n%s", text)
	}
	t.Setenv("SHALE_HTTP", p.httpAddr)
	mustAdmin(t, cli, "tier", "status", "cold")
}

// In shale dev --brokers 3 (here from SHALE_DEV_BROKERS) broker i serves
// its own HTTP address at the HTTP port + i, with its own /metrics, and
// advertises it: tier status, given --brokers alone, shows each partition
// as its leader reports it; topic describe has every replica's local size
// and cluster info every broker.
func TestTierStatusOfAReplicatedDev(t *testing.T) {
	p := startDev(t, "", "SHALE_DEV_BROKERS=3")
	cli := adminCLI(t, p)
	mustAdmin(t, cli, "topic", "create", "spread", "-p", "3", "-r", "3")
	cl := p.client(kgo.DefaultProduceTopic("spread"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 30; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var info clusterInfo
	adminJSON(t, cli, &info, "cluster", "info")
	if len(info.Brokers) != 3 {
		t.Fatalf("cluster info: %+v", info)
	}
	var rows []tierRow
	adminJSON(t, cli, &rows, "tier", "status", "spread")
	leaders := map[int32]bool{}
	for _, r := range rows {
		if !r.Reported || r.Broker != r.Leader || !r.Tiered || r.HighWatermark != 10 {
			t.Fatalf("partition %d: %+v", r.Partition, r)
		}
		leaders[r.Leader] = true
	}
	if len(rows) != 3 || len(leaders) < 2 {
		t.Fatalf("tier status: %+v, want 3 partitions led by several brokers", rows)
	}
	// Each broker's /metrics has the partitions it leads, and only
	// those: the same series from every broker would be counted thrice.
	host, port := splitAddr(t, p.httpAddr)
	for id := int32(0); id < 3; id++ {
		addr := net.JoinHostPort(host, strconv.Itoa(port+int(id)))
		code, body := httpStatus(t, "http://"+addr+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("broker %d /metrics on %s: %d", id, addr, code)
		}
		for _, r := range rows {
			series := fmt.Sprintf(`shale_partition_high_watermark{partition="%d",topic="spread"} 10`, r.Partition)
			if led := r.Leader == id; led != strings.Contains(body, series) {
				t.Errorf("broker %d (%s) leads spread-%d: %v, but its /metrics has %s: %v", id, addr, r.Partition, led, series, !led)
			}
		}
		if id > 0 && strings.Contains(body, "go_goroutines") {
			t.Errorf("broker %d repeats the process's Go collectors", id)
		}
	}
	waitUntil(t, "every replica's size in topic describe", func() bool {
		var d describedTopic
		adminJSON(t, cli, &d, "topic", "describe", "spread")
		for _, dp := range d.Partitions {
			if len(dp.ReplicaBytes) != 3 || dp.LocalBytes <= 0 || dp.ReplicaBytes[1] != dp.LocalBytes || dp.ReplicaBytes[2] != dp.LocalBytes {
				return false
			}
		}
		return true
	})
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}
