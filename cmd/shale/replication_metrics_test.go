package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// scrape reads the series of /metrics at httpAddr: "name{labels}" (or
// "name" without labels) to value.
func scrape(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReplicationByteRatesPerTopic: KIP-973's per-topic replication byte
// rates, read from /metrics of two `shale broker` processes. Once the
// follower is in sync, what it appended of a replicated topic
// (shale_replication_bytes_in_total) is what its leader took from
// producers, and the leader sent at least that
// (shale_replication_bytes_out_total); a topic of one replica counts no
// replication bytes on either broker.
func TestReplicationByteRatesPerTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcdAddr, 2, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 2, nil, "replicated"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "alone"); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000)
	for i := 0; i < 200; i++ {
		for _, topic := range []string{"replicated", "alone"} {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: value}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	td, err := adm.ListTopics(ctx, "replicated")
	if err != nil {
		t.Fatal(err)
	}
	leader := td["replicated"].Partitions[0].Leader
	follower := 1 - leader
	series := func(name, topic string) string { return fmt.Sprintf("%s{topic=%q}", name, topic) }
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, f := scrape(t, procs[leader].httpAddr), scrape(t, procs[follower].httpAddr)
		produced := l[series("shale_produced_bytes_total", "replicated")]
		in := f[series("shale_replication_bytes_in_total", "replicated")]
		out := l[series("shale_replication_bytes_out_total", "replicated")]
		last = fmt.Sprintf("leader %d took %v bytes from producers and sent %v to followers; follower %d appended %v", leader, produced, out, follower, in)
		if produced >= 200*float64(len(value)) && in == produced {
			if out < in {
				t.Fatalf("%s: the leader counted fewer bytes sent than the follower appended", last)
			}
			for _, m := range []map[string]float64{l, f} {
				for _, name := range []string{"shale_replication_bytes_in_total", "shale_replication_bytes_out_total"} {
					if v := m[series(name, "alone")]; v != 0 {
						t.Fatalf("%s = %v for a topic of one replica", series(name, "alone"), v)
					}
				}
			}
			if _, ok := l[series("shale_replication_bytes_in_total", "replicated")]; !ok {
				t.Fatalf("the leader shows no %s series", series("shale_replication_bytes_in_total", "replicated"))
			}
			t.Log(last)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
