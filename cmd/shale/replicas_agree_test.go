package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// checkReplicasAgree kills the brokers (production has stopped) and
// checks that the log of partition 0 of topic on each is a prefix of the
// others' or the same, byte for byte, from the higher of every two
// replicas' log starts (brokertest.ReplicaLogsDisagree): followers keep
// the leader's bytes, so a divergent tail left untruncated on any replica
// (a broker that was leader, or behind one, before a failover) is a
// difference, even one that no consumer reading from the current leader
// would see.
func checkReplicasAgree(t *testing.T, procs []*brokerProc, topic string) {
	t.Helper()
	checkReplicasAgreeBelow(t, procs, topic+"-0", math.MaxInt64)
}

// checkReplicasAgreeBelow is checkReplicasAgree for partition (as
// "topic-N") over the batches below offset end.
func checkReplicasAgreeBelow(t *testing.T, procs []*brokerProc, partition string, end int64) {
	t.Helper()
	for _, p := range procs {
		p.kill(syscall.SIGKILL)
	}
	dirs := make([]brokertest.ReplicaDir, 0, len(procs))
	for _, p := range procs {
		dirs = append(dirs, brokertest.ReplicaDir{Broker: p.id, Dir: p.dataDir})
	}
	brokertest.CheckLogsAgree(t, partition, end, dirs...)
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

	brokertest.RewriteValue(t, procs[2].dataDir, "edited-0", 10, "010", "999")
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
