package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// adminCLI runs shale commands against p.
func adminCLI(t *testing.T, p *devProc) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(args, "--brokers", p.kafkaAddr, "--timeout", "20s")...)
	}
}

func mustAdmin(t *testing.T, cli func(...string) (string, error), args ...string) string {
	t.Helper()
	out, err := cli(args...)
	if err != nil {
		t.Fatalf("shale %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func adminJSON(t *testing.T, cli func(...string) (string, error), v any, args ...string) {
	t.Helper()
	out := mustAdmin(t, cli, append(args, "-o", "json")...)
	if err := jsonUnmarshal(out, v); err != nil {
		t.Fatalf("shale %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestTopicCommands: create, list, describe, alter-config and delete round
// trips against shale dev, and their errors.
func TestTopicCommands(t *testing.T) {
	// shale dev ignores SHALE_BROKERS, which is the client commands'.
	p := startDev(t, "", "SHALE_BROKERS=127.0.0.1:9")
	cli := adminCLI(t, p)

	out := mustAdmin(t, cli, "topic", "create", "orders", "-p", "3", "-r", "1", "-c", "retention.ms=3600000", "-c", "cleanup.policy=delete")
	if !strings.Contains(out, "orders") || !strings.HasPrefix(out, "TOPIC ") {
		t.Fatalf("topic create printed:\n%s", out)
	}
	_, err := cli("topic", "create", "orders")
	wantErr(t, err, `topic "orders": TOPIC_ALREADY_EXISTS`)
	_, err = cli("topic", "create", "bad", "-c", "retention.ms")
	wantErr(t, err, `-c "retention.ms": want key=value`)
	_, err = cli("topic", "create", "bad", "-c", "no.such.config=1")
	wantErr(t, err, `topic "bad": INVALID_CONFIG`, "no.such.config")

	var listed []listedTopic
	adminJSON(t, cli, &listed, "topic", "list")
	if len(listed) != 1 || listed[0].Topic != "orders" || listed[0].Partitions != 3 || listed[0].ReplicationFactor != 1 || listed[0].ID == "" {
		t.Fatalf("topic list: %+v", listed)
	}
	if out := mustAdmin(t, cli, "topic", "list"); !strings.Contains(out, "orders  ") {
		t.Fatalf("topic list printed:\n%s", out)
	}

	// Records in partitions 1 and 2, none in 0.
	cl := p.client(kgo.DefaultProduceTopic("orders"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 30; i++ {
		r := &kgo.Record{Partition: int32(1 + i%2), Value: []byte(strings.Repeat("x", 100))}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	var d describedTopic
	adminJSON(t, cli, &d, "topic", "describe", "orders", "--http", p.httpAddr)
	if d.Topic != "orders" || d.ID != listed[0].ID || len(d.Partitions) != 3 {
		t.Fatalf("describe: %+v", d)
	}
	for i, dp := range d.Partitions {
		if dp.Partition != int32(i) || dp.Leader != 0 || len(dp.Replicas) != 1 || len(dp.ISR) != 1 || dp.LogStartOffset != 0 {
			t.Fatalf("partition %d: %+v", i, dp)
		}
		wantHW, sized := int64(15), dp.LocalBytes > 0
		if i == 0 {
			wantHW, sized = 0, dp.LocalBytes == 0
		}
		if dp.HighWatermark != wantHW || !sized || dp.ReplicaBytes[0] != dp.LocalBytes {
			t.Fatalf("partition %d: high watermark %d (want %d), local bytes %d", i, dp.HighWatermark, wantHW, dp.LocalBytes)
		}
		if dp.RemoteBytes != 0 { // tiered (shale dev's default), nothing uploaded yet
			t.Fatalf("partition %d: remote bytes %d", i, dp.RemoteBytes)
		}
	}
	configs := map[string]describedConfig{}
	for _, c := range d.Configs {
		configs[c.Name] = c
	}
	if c := configs["retention.ms"]; c.Value != "3600000" || c.Source != "topic" {
		t.Fatalf("retention.ms: %+v", c)
	}
	if c := configs["segment.bytes"]; c.Source == "topic" || c.Value == "" {
		t.Fatalf("segment.bytes: %+v", c)
	}
	text := mustAdmin(t, cli, "topic", "describe", "orders", "--http", p.httpAddr)
	for _, want := range []string{"PARTITION  LEADER", "LOCAL-SIZE", "retention.ms", "3600000", "topic"} {
		if !strings.Contains(text, want) {
			t.Fatalf("topic describe does not print %q:\n%s", want, text)
		}
	}
	_, err = cli("topic", "describe", "nope")
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)

	mustAdmin(t, cli, "topic", "alter-config", "orders", "--set", "retention.ms=7200000", "--set", "max.message.bytes=2000000", "--delete", "cleanup.policy")
	adminJSON(t, cli, &d, "topic", "describe", "orders", "--http", p.httpAddr)
	configs = map[string]describedConfig{}
	for _, c := range d.Configs {
		configs[c.Name] = c
	}
	if configs["retention.ms"].Value != "7200000" || configs["max.message.bytes"].Value != "2000000" || configs["cleanup.policy"].Source == "topic" {
		t.Fatalf("after alter-config: %+v %+v %+v", configs["retention.ms"], configs["max.message.bytes"], configs["cleanup.policy"])
	}
	_, err = cli("topic", "alter-config", "orders", "--set", "retention.ms=soon")
	wantErr(t, err, `topic "orders": INVALID_CONFIG`)
	_, err = cli("topic", "alter-config", "nope", "--set", "retention.ms=1")
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)
	_, err = cli("topic", "alter-config", "orders")
	wantErr(t, err, "nothing to change", "--help")

	var deleted []deletedTopic
	adminJSON(t, cli, &deleted, "topic", "delete", "orders")
	if len(deleted) != 1 || deleted[0].Topic != "orders" {
		t.Fatalf("delete: %+v", deleted)
	}
	adminJSON(t, cli, &listed, "topic", "list")
	if len(listed) != 0 {
		t.Fatalf("topics after delete: %+v", listed)
	}
	_, err = cli("topic", "delete", "orders")
	wantErr(t, err, `topic "orders": UNKNOWN_TOPIC_OR_PARTITION`)

	_, err = cli("topic", "frobnicate")
	wantErr(t, err, `unknown command "frobnicate" for "shale topic"`, "--help")
	_, err = cli("topic", "describe")
	wantErr(t, err, "missing topic name", "--help")
	_, err = cli("topic", "list", "-o", "yaml")
	wantErr(t, err, `--output "yaml"`)
}

// An unreachable broker fails within --timeout with one line that names
// it and the dial error.
func TestUnreachableBroker(t *testing.T) {
	addr := freeAddr(t) // nothing listens there any more
	for _, args := range [][]string{
		{"topic", "list"},
		{"group", "list"},
		{"cluster", "info"},
		{"tier", "status"},
	} {
		_, err := runCLI(t, append(args, "--brokers", addr, "--timeout", "1s")...)
		wantErr(t, err, "cannot reach the cluster at "+addr+" within 1s", "connection refused")
	}
	_, err := runCLI(t, "topic", "list", "--brokers", "nocolon")
	wantErr(t, err, `--brokers "nocolon": want host:port`)
	t.Setenv("SHALE_BROKERS", addr)
	_, err = runCLI(t, "topic", "list", "--timeout", "1s")
	wantErr(t, err, "cannot reach the cluster at "+addr)
}
