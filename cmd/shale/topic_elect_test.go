package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestTopicElectLeaders: shale topic elect-leaders moves a partition's
// leadership to its preferred replica (after a reassignment reordered its
// replicas, on shale dev --brokers 3), reports partitions that need no
// election as such, and refuses what it cannot elect for.
func TestTopicElectLeaders(t *testing.T) {
	p := startDev(t, "", "SHALE_DEV_BROKERS=3")
	cli := adminCLI(t, p)
	mustAdmin(t, cli, "topic", "create", "elect", "-p", "2", "-r", "3")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(p.client())
	leaderOf := func(part int32) (leader int32, replicas []int32) {
		t.Helper()
		td, err := adm.ListTopics(ctx, "elect")
		if err != nil {
			t.Fatal(err)
		}
		pd := td["elect"].Partitions[part]
		return pd.Leader, pd.Replicas
	}
	var wantLeader int32
	brokertest.WaitFor(t, 20*time.Second, "partition 1 led by its preferred replica, all in sync", func() (bool, string) {
		td, err := adm.ListTopics(ctx, "elect")
		if err != nil {
			return false, err.Error()
		}
		pd := td["elect"].Partitions[1]
		return len(pd.Replicas) == 3 && pd.Leader == pd.Replicas[0] && len(pd.ISR) == 3, fmt.Sprint(pd)
	})

	// Both partitions are led by their preferred replicas already.
	var got []electedLeader
	adminJSON(t, cli, &got, "topic", "elect-leaders", "elect")
	if len(got) != 2 || got[0].Result != "not_needed" || got[1].Result != "not_needed" || got[1].Partition != 1 {
		t.Fatalf("elect-leaders of a topic led by its preferred replicas: %+v, want both not_needed", got)
	}
	out := mustAdmin(t, cli, "topic", "elect-leaders", "elect:1", "--unclean")
	if !strings.Contains(out, "not needed") || strings.Count(out, "\n") != 2 {
		t.Fatalf("unclean election of a led partition printed:\n%s", out)
	}

	// Reorder partition 1's replicas: the new first is its preferred
	// replica, and the leader stays where it was until elected.
	leader, replicas := leaderOf(1)
	reordered := append(slices.DeleteFunc(slices.Clone(replicas), func(id int32) bool { return id == leader }), leader)
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign("elect", 1, reordered)
	res, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil || res["elect"][1].Err != nil {
		t.Fatalf("reordering the replicas to %v: %v %v", reordered, err, res)
	}
	wantLeader = reordered[0]
	brokertest.WaitFor(t, 20*time.Second, "the replicas reordered", func() (bool, string) {
		_, reps := leaderOf(1)
		return slices.Equal(reps, reordered), fmt.Sprint(reps)
	})
	out = mustAdmin(t, cli, "topic", "elect-leaders", "elect:1")
	if !strings.Contains(out, "elect") || !strings.Contains(out, "elected") {
		t.Fatalf("preferred election printed:\n%s", out)
	}
	brokertest.WaitFor(t, 20*time.Second, "the preferred replica leads", func() (bool, string) {
		l, _ := leaderOf(1)
		return l == wantLeader, fmt.Sprint("leader ", l)
	})

	// Every partition of the cluster.
	adminJSON(t, cli, &got, "topic", "elect-leaders", "--all")
	if !slices.ContainsFunc(got, func(o electedLeader) bool { return o.Topic == "elect" && o.Partition == 0 && o.Result == "not_needed" }) {
		t.Fatalf("elect-leaders --all: %+v, want elect's partition 0 among them, not needed", got)
	}

	_, err = cli("topic", "elect-leaders")
	wantErr(t, err, "or give --all")
	_, err = cli("topic", "elect-leaders", "elect", "--all")
	wantErr(t, err, "without topics")
	_, err = cli("topic", "elect-leaders", "elect:one")
	wantErr(t, err, `"elect:one": the partition is not a number`)
	_, err = cli("topic", "elect-leaders", "nope")
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)
	_, err = cli("topic", "elect-leaders", "elect:7")
	wantErr(t, err, `partition "elect:7": UNKNOWN_TOPIC_OR_PARTITION`)
}
