package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// checkReplicasAgree kills the brokers (production has stopped) and
// checks that the log of partition 0 of topic on each is a prefix of the
// others' or the same, byte for byte: followers keep the leader's bytes,
// so a divergent tail left untruncated on any replica (a broker that was
// leader, or behind one, before a failover) is a difference, even one
// that no consumer reading from the current leader would see.
func checkReplicasAgree(t *testing.T, procs []*brokerProc, topic string) {
	t.Helper()
	for _, p := range procs {
		p.kill(syscall.SIGKILL)
	}
	logs := make([]brokertest.ReplicaLog, 0, len(procs))
	for _, p := range procs {
		l, err := brokertest.ReadReplicaLog(p.id, p.dataDir, topic+"-0")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	if err := brokertest.ReplicaLogsDisagree(logs); err != nil {
		t.Fatal(err)
	}
	sizes := make([]string, len(logs))
	for i, l := range logs {
		sizes[i] = fmt.Sprintf("broker %d: %d bytes", l.Broker, len(l.Bytes))
	}
	t.Logf("the replicas' logs of %s-0 agree (%s)", topic, strings.Join(sizes, ", "))
}

// testBatches returns n one-record batches of offsets 0 to n-1, the
// record at offset i of value value(i), encoded one after the other.
func testBatches(t *testing.T, n int, value func(i int) string) []byte {
	t.Helper()
	var log []byte
	for i := 0; i < n; i++ {
		var err error
		log, err = recordbatch.Build(log, recordbatch.BuildOptions{BaseOffset: int64(i), ProducerID: recordbatch.NoProducerID,
			ProducerEpoch: recordbatch.NoProducerEpoch, BaseSequence: recordbatch.NoSequence, BaseTimestamp: 1_700_000_000_000},
			[]recordbatch.Record{{Value: []byte(value(i))}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return log
}

// TestReplicaLogsDisagreeFindsDivergence: the comparison that ends every
// fault test of three broker processes fails on replica logs that part,
// and names where; it passes logs that are prefixes of each other.
func TestReplicaLogsDisagreeFindsDivergence(t *testing.T) {
	same := func(i int) string { return fmt.Sprintf("v%03d", i) }
	other := func(at int) func(int) string { // a different record at offset at, as long
		return func(i int) string {
			if i == at {
				return fmt.Sprintf("x%03d", i)
			}
			return same(i)
		}
	}
	full := testBatches(t, 20, same)
	batchSize := len(full) / 20 // every batch is as long
	for _, tc := range []struct {
		name string
		logs [][]byte
		want string // in the error; "" when they agree
	}{
		{"equal", [][]byte{full, full, full}, ""},
		{"one behind and one torn", [][]byte{full, testBatches(t, 12, same), full[:len(full)-7]}, ""},
		{"a different record at offset 15", [][]byte{full, full, testBatches(t, 20, other(15))},
			"brokers 0 and 2 differ at byte " + strconv.Itoa(15*batchSize+17) + " (of 1440 and 1440), in the batch of offsets 15 to 15"}, // its CRC
		{"a divergent tail", [][]byte{full, append(testBatches(t, 12, same), testBatches(t, 20, other(12))[12*batchSize:]...), full},
			"in the batch of offsets 12 to 12"},
		// The first log is the shortest: the two others part past its end.
		{"two long logs parting past a short one", [][]byte{testBatches(t, 5, same), full, testBatches(t, 20, other(17))},
			"brokers 1 and 2 differ at byte " + strconv.Itoa(17*batchSize+17) + " (of 1440 and 1440), in the batch of offsets 17 to 17"},
		{"an empty replica", [][]byte{full, nil, full}, "the log of broker 1 holds no whole batch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs []brokertest.ReplicaLog
			for id, b := range tc.logs {
				logs = append(logs, brokertest.ReplicaLog{Broker: id, Bytes: b})
			}
			err := brokertest.ReplicaLogsDisagree(logs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("logs that agree were refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("logs that part were accepted (want %q)", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if err != nil {
				t.Log(err)
			}
		})
	}
}

// TestReplicaLogsDisagreeOnARecordEditedOnOneBroker: three broker
// processes replicate 30 records; stopped, their logs agree; then the
// record at offset 10 on broker 2 is rewritten (another value as long, the
// batch's CRC recomputed: a log a broker would serve) and the comparison
// fails, naming broker 2 and offset 10.
func TestReplicaLogsDisagreeOnARecordEditedOnOneBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcdAddr, 3, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("edited"), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "edited"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("%03d", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Once all three are in the ISR, an acks=all write is on all three,
	// and so is everything before it.
	for {
		td, err := adm.ListTopics(ctx, "edited")
		if err == nil && len(td["edited"].Partitions[0].ISR) == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the ISR never had three members: %v %v", td, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("030")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	checkReplicasAgree(t, procs, "edited") // stops them

	files, _ := filepath.Glob(filepath.Join(procs[2].dataDir, "*", "edited-0", "*.log"))
	more, _ := filepath.Glob(filepath.Join(procs[2].dataDir, "edited-0", "*.log"))
	files = append(files, more...)
	edited := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for rest := b; !edited; {
			batch, next, err := recordbatch.Next(rest)
			if err != nil || batch == nil {
				break
			}
			if batch.BaseOffset() == 10 {
				v := bytes.LastIndex(batch, []byte("010"))
				if v < 0 {
					t.Fatalf("the batch of offset 10 on broker 2 does not hold its value: %x", []byte(batch))
				}
				copy(batch[v:], "999")
				batch.SetMaxTimestamp(batch.MaxTimestamp()) // recomputes the CRC
				if err := recordbatch.Check(batch); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, b, 0o644); err != nil {
					t.Fatal(err)
				}
				edited = true
			}
			rest = next
		}
	}
	if !edited {
		t.Fatalf("no batch of offset 10 in broker 2's log %v", files)
	}
	var logs []brokertest.ReplicaLog
	for _, p := range procs {
		l, err := brokertest.ReadReplicaLog(p.id, p.dataDir, "edited-0")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	err = brokertest.ReplicaLogsDisagree(logs)
	if err == nil {
		t.Fatal("the comparison accepted a log with a different record at offset 10")
	}
	if s := err.Error(); !strings.Contains(s, "brokers 0 and 2") || !strings.Contains(s, "in the batch of offsets 10 to 10") {
		t.Fatalf("the comparison failed without naming broker 2 and offset 10: %v", err)
	}
	t.Log(err)
}
