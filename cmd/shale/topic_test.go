package main

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
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
		if dp.Eligible == nil || len(dp.Eligible) != 0 { // [], not null: a healthy ISR leaves none eligible
			t.Fatalf("partition %d: eligible leader replicas %#v, want []", i, dp.Eligible)
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
	text, stderr := mustCLIIO(t, "", "topic", "describe", "orders", "--http", p.httpAddr, "--brokers", p.kafkaAddr)
	for _, want := range []string{"PARTITION  LEADER", "LOCAL-SIZE", "retention.ms", "3600000", "topic"} {
		if !strings.Contains(text, want) {
			t.Fatalf("topic describe does not print %q:\n%s", want, text)
		}
	}
	if stderr != "" {
		t.Fatalf("topic describe wrote on stderr:\n%s", stderr)
	}
	if elr := partitionColumn(t, text, "ELR"); !slices.Equal(elr, []string{"-", "-", "-"}) {
		t.Fatalf("ELR column %q, want a dash for each partition:\n%s", elr, text)
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

// partitionColumn returns the cells under header in the partition table
// `shale topic describe` printed, one a partition, after checking that ELR
// follows ISR. The cells before REMOTE-SIZE hold no spaces.
func partitionColumn(t *testing.T, text, header string) []string {
	t.Helper()
	var col []string
	i := -1
	for _, line := range outLines(text) {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "PARTITION":
			if j := slices.Index(f, "ISR"); j < 0 || j+1 >= len(f) || f[j+1] != "ELR" {
				t.Fatalf("partition table header %q: want ELR right after ISR", line)
			}
			i = slices.Index(f, header)
		case i >= 0 && len(f) > i:
			col = append(col, f[i])
		case i >= 0: // the blank line that ends the table
			return col
		}
	}
	if i < 0 {
		t.Fatalf("no partition table with %s:\n%s", header, text)
	}
	return col
}

// TestTopicDescribeEligibleLeaderReplicas: topic describe reads the
// eligible leader replicas from DescribeTopicPartitions, following its
// cursor over pages, and a broker that does not serve it (too old, or
// refusing) leaves them empty with a note on stderr rather than failing
// the describe. A kfake cluster stands in for the broker: the pages and
// refusals are its control functions.
func TestTopicDescribeEligibleLeaderReplicas(t *testing.T) {
	const topic, partitions = "orders", 5
	old := kversion.Stable()
	old.SetMaxKeyVersion(int16(kmsg.DescribeTopicPartitions), -1)
	for _, tc := range []struct {
		name string
		opts []kfake.Opt
		// control, if set, serves each DescribeTopicPartitions.
		control func(t *testing.T, req *kmsg.DescribeTopicPartitionsRequest) kmsg.Response
		want    [][]int32 // each partition's
		wantELR []string  // the table's column
		note    string    // on stderr
	}{{
		// Pages of two partitions, as a broker whose limit is below
		// the 2000 asked for sends them; partition p has p+100
		// eligible, and 4 none.
		name: "paged",
		control: func(t *testing.T, req *kmsg.DescribeTopicPartitionsRequest) kmsg.Response {
			if req.ResponsePartitionLimit != 2000 || len(req.Topics) != 1 || req.Topics[0].Topic != topic {
				t.Errorf("request: limit %d, topics %+v", req.ResponsePartitionLimit, req.Topics)
			}
			resp := req.ResponseKind().(*kmsg.DescribeTopicPartitionsResponse)
			var from int32
			if req.Cursor != nil {
				from = req.Cursor.Partition
			}
			rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
			rt.Topic = kmsg.StringPtr(topic)
			for p := from; p < min(from+2, partitions); p++ {
				rp := kmsg.NewDescribeTopicPartitionsResponseTopicPartition()
				rp.Partition, rp.LeaderID, rp.Replicas, rp.ISR = p, 0, []int32{0}, []int32{0}
				if p < 4 {
					rp.EligibleLeaderReplicas = []int32{p + 100}
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
			if from+2 < partitions {
				resp.NextCursor = &kmsg.DescribeTopicPartitionsResponseNextCursor{Topic: topic, Partition: from + 2}
			}
			return resp
		},
		want:    [][]int32{{100}, {101}, {102}, {103}, {}},
		wantELR: []string{"100", "101", "102", "103", "-"},
	}, {
		name:    "old broker",
		opts:    []kfake.Opt{kfake.MaxVersions(old)},
		want:    [][]int32{{}, {}, {}, {}, {}},
		wantELR: []string{"-", "-", "-", "-", "-"},
		note:    "shale: eligible leader replicas unknown: DescribeTopicPartitions: broker is too old",
	}, {
		name: "refused",
		control: func(t *testing.T, req *kmsg.DescribeTopicPartitionsRequest) kmsg.Response {
			resp := req.ResponseKind().(*kmsg.DescribeTopicPartitionsResponse)
			rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
			rt.Topic = kmsg.StringPtr(topic)
			rt.ErrorCode = kerr.UnsupportedVersion.Code
			resp.Topics = append(resp.Topics, rt)
			return resp
		},
		want:    [][]int32{{}, {}, {}, {}, {}},
		wantELR: []string{"-", "-", "-", "-", "-"},
		note:    "shale: eligible leader replicas unknown: DescribeTopicPartitions: UNSUPPORTED_VERSION",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			var requests atomic.Int32
			if tc.control != nil {
				c.ControlKey(int16(kmsg.DescribeTopicPartitions), func(r kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					requests.Add(1)
					return tc.control(t, r.(*kmsg.DescribeTopicPartitionsRequest)), nil, true
				})
			}
			// Nothing answers --http: the remote sizes are unknown too.
			args := []string{"topic", "describe", topic, "--brokers", c.ListenAddrs()[0], "--http", freeAddr(t), "--timeout", "10s"}
			stdout, stderr := mustCLIIO(t, "", append(args, "-o", "json")...)
			var d describedTopic
			if err := jsonUnmarshal(stdout, &d); err != nil {
				t.Fatalf("%v\n%s", err, stdout)
			}
			var got [][]int32
			for _, p := range d.Partitions {
				if p.Eligible == nil {
					t.Fatalf("partition %d: eligible leader replicas null, want a list", p.Partition)
				}
				got = append(got, p.Eligible)
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal[[]int32]) {
				t.Fatalf("eligible leader replicas %v, want %v", got, tc.want)
			}
			if tc.name == "paged" && requests.Load() != 3 {
				t.Fatalf("%d DescribeTopicPartitions requests for %d partitions in pages of 2, want 3", requests.Load(), partitions)
			}
			if hasNote := strings.Contains(stderr, "eligible leader replicas unknown"); tc.note == "" && hasNote || !strings.Contains(stderr, tc.note) {
				t.Fatalf("stderr:\n%s\nwant the note %q", stderr, tc.note)
			}
			text, _ := mustCLIIO(t, "", args...)
			if elr := partitionColumn(t, text, "ELR"); !slices.Equal(elr, tc.wantELR) {
				t.Fatalf("ELR column %q, want %q:\n%s", elr, tc.wantELR, text)
			}
		})
	}
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
