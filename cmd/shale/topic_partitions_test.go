package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestTopicAddPartitionsAndReassign, on shale dev --brokers 3:
// add-partitions grows a topic, its new partitions led by the brokers
// that led the fewest, and refuses to shrink it; reassign moves a
// partition to other brokers; reassignments lists a move held back by a
// replication throttle, and reassign --cancel takes it back; and their
// argument errors.
func TestTopicAddPartitionsAndReassign(t *testing.T) {
	p := startDev(t, "", "SHALE_DEV_BROKERS=3")
	cli := adminCLI(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(p.client(kgo.MetadataMinAge(10 * time.Millisecond)))
	describe := func(part int32) kadm.PartitionDetail {
		t.Helper()
		td, err := adm.ListTopics(ctx, "grow")
		if err != nil {
			t.Fatal(err)
		}
		return td["grow"].Partitions[part]
	}
	mustAdmin(t, cli, "topic", "create", "grow", "-p", "3", "-r", "2")

	var grown []grownTopic
	adminJSON(t, cli, &grown, "topic", "add-partitions", "grow", "--to", "6")
	if len(grown) != 1 || grown[0] != (grownTopic{Topic: "grow", Partitions: 6}) {
		t.Fatalf("add-partitions printed %+v", grown)
	}
	td, err := adm.ListTopics(ctx, "grow")
	if err != nil {
		t.Fatal(err)
	}
	led := map[int32]int{}
	for _, pd := range td["grow"].Partitions {
		led[pd.Replicas[0]]++
	}
	if len(td["grow"].Partitions) != 6 || led[0] != 2 || led[1] != 2 || led[2] != 2 {
		t.Fatalf("after add-partitions: %d partitions, preferred leaders per broker %v; want 6, two each", len(td["grow"].Partitions), led)
	}
	if out, err := cli("topic", "add-partitions", "grow", "--to", "4"); err == nil || !strings.Contains(err.Error(), "INVALID_PARTITIONS") {
		t.Fatalf("shrinking a topic: %v\n%s", err, out)
	}
	if _, err := cli("topic", "add-partitions", "grow"); err == nil || !strings.Contains(err.Error(), "--to") {
		t.Fatalf("add-partitions without --to: %v", err)
	}

	// Partition 0 moves to the broker it is not on, and the first of
	// those it is on.
	before := describe(0).Replicas
	var third int32
	for slices.Contains(before, third) {
		third++
	}
	target := []int32{third, before[0]}
	out := mustAdmin(t, cli, "topic", "reassign", "grow:0", "--replicas", fmt.Sprintf("%d,%d", target[0], target[1]))
	if !strings.Contains(out, "started") {
		t.Fatalf("reassign printed:\n%s", out)
	}
	brokertest.WaitFor(t, 30*time.Second, "partition 0 moved", func() (bool, string) {
		pd := describe(0)
		return slices.Equal(pd.Replicas, target) && len(pd.ISR) == 2, fmt.Sprintf("replicas %v isr %v", pd.Replicas, pd.ISR)
	})

	// A move held back: partition 1 holds 2 MiB, and the leaders may
	// send a replica that a reassignment adds 32 KiB a second.
	prod := p.client(kgo.DefaultProduceTopic("grow"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	var recs []*kgo.Record
	for range 128 {
		recs = append(recs, &kgo.Record{Partition: 1, Value: make([]byte, 16<<10)})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rate := "32768"
	if _, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "leader.replication.throttled.rate", Value: &rate}}); err != nil {
		t.Fatal(err)
	}
	orig := describe(1).Replicas
	var adding int32
	for slices.Contains(orig, adding) {
		adding++
	}
	wide := append(slices.Clone(orig), adding)
	mustAdmin(t, cli, "topic", "reassign", "grow:1", "--replicas", strings.Trim(strings.ReplaceAll(fmt.Sprint(wide), " ", ","), "[]"))
	var moving []reassignment
	adminJSON(t, cli, &moving, "topic", "reassignments", "grow")
	if len(moving) != 1 || moving[0].Partition != 1 || !slices.Equal(moving[0].Adding, []int32{adding}) || !slices.Equal(moving[0].Replicas, wide) {
		t.Fatalf("reassignments listed %+v; want partition 1 adding broker %d", moving, adding)
	}
	if out := mustAdmin(t, cli, "topic", "reassignments"); !strings.Contains(out, "grow") || !strings.Contains(out, "ADDING") {
		t.Fatalf("reassignments of every topic printed:\n%s", out)
	}
	var cancelled []reassigned
	adminJSON(t, cli, &cancelled, "topic", "reassign", "grow:1", "--cancel")
	if len(cancelled) != 1 || cancelled[0].Result != "cancelled" {
		t.Fatalf("reassign --cancel printed %+v", cancelled)
	}
	brokertest.WaitFor(t, 30*time.Second, "partition 1 back on its replicas", func() (bool, string) {
		pd := describe(1)
		return slices.Equal(pd.Replicas, orig), fmt.Sprintf("replicas %v", pd.Replicas)
	})
	if out := mustAdmin(t, cli, "topic", "reassignments"); !strings.Contains(out, "no reassignment in progress") {
		t.Fatalf("reassignments after the cancel printed:\n%s", out)
	}

	// Errors: nothing to cancel, a broker that does not exist, and the
	// arguments.
	if out, err := cli("topic", "reassign", "grow:2", "--cancel"); err == nil || !strings.Contains(err.Error(), "NO_REASSIGNMENT_IN_PROGRESS") || !strings.Contains(out, "failed") {
		t.Fatalf("cancelling no reassignment: %v\n%s", err, out)
	}
	if _, err := cli("topic", "reassign", "grow:2", "--replicas", "0,9"); err == nil || !strings.Contains(err.Error(), `"grow:2"`) {
		t.Fatalf("reassigning to broker 9: %v", err)
	}
	for _, args := range [][]string{
		{"grow:2"},
		{"grow:2", "--replicas", "0,1", "--cancel"},
		{"grow:2", "--replicas", "0,0"},
		{"grow", "--replicas", "0,1"},
		{"grow:x", "--replicas", "0,1"},
	} {
		if _, err := cli(append([]string{"topic", "reassign"}, args...)...); err == nil {
			t.Errorf("reassign %v: no error", args)
		}
	}
}
