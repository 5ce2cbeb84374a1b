package main

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestAnEligibleReplicaLeadsWhenTheISRsLastMemberIsGone: KIP-966 end to
// end, min.insync.replicas=2. The third replica is down; the follower is
// killed, and the ISR is down to the leader alone, the follower an
// eligible leader replica. acks=1 writes still go in, but the high
// watermark holds still: consumers never see them, and the leader's
// metrics say the partition is under min.insync.replicas. The leader is killed
// too; the follower comes back first and, eligible, leads in a clean
// election, the leader eligible in its place. shale topic describe shows
// the eligible replica both times. The leader, back, follows
// it and cuts the acks=1 records it alone held; every acks=all record is
// read back exactly once, in order, and the three logs agree.
func TestAnEligibleReplicaLeadsWhenTheISRsLastMemberIsGone(t *testing.T) {
	eligibleReplicaLeads(t, workload{rounds: 1})
}

// TestAnEligibleReplicaLeadsATieredPartitionWhenTheISRsLastMemberIsGone:
// as TestAnEligibleReplicaLeadsWhenTheISRsLastMemberIsGone on a tiered
// partition whose segments leave the local disks as they are uploaded:
// the bucket holds none of the acks=1 records the held high watermark
// kept back, so the eligible leader's log reaches as far as the bucket
// (no term appends over records the bucket holds), and everything is read
// back from offset 0, the bucket's part included.
func TestAnEligibleReplicaLeadsATieredPartitionWhenTheISRsLastMemberIsGone(t *testing.T) {
	eligibleReplicaLeads(t, tieredKillWorkload(miniotest.Start(t), "eligible"))
}

func eligibleReplicaLeads(t *testing.T, w workload) {
	failoverWorkloadOn(t, w, func(t *testing.T, c *testCluster, _ int) {
		// A fourth broker, with no replica, controls once the others'
		// candidacies are gone.
		ctl := startControllingBroker(t, c, w.setup)
		l := c.leader()
		f, away := (l+1)%3, (l+2)%3
		c.procs[away].kill(syscall.SIGKILL)
		expireRegistrations(t, c, away)
		c.waitISR(2)
		c.waitAcked(c.ackedCount() + 50)

		c.procs[f].kill(syscall.SIGKILL)
		expireRegistrations(t, c, f)
		waitPartitionRecord(t, c, "was down to its leader, the follower eligible", func(p metadata.Partition) bool {
			return p.Leader == l && slices.Equal(p.ISR, []int32{l}) && slices.Equal(p.Eligible, []int32{f})
		})
		waitDescribedEligible(t, c, []string{c.procs[l].kafkaAddr, ctl.kafkaAddr}, []int32{l}, []int32{f})
		endOffset := func() int64 {
			t.Helper()
			for {
				ends, err := c.adm.ListEndOffsets(c.ctx, "acked")
				if err == nil {
					if o, ok := ends.Lookup("acked", 0); ok && o.Err == nil {
						return o.Offset
					}
				}
				if c.ctx.Err() != nil {
					t.Fatalf("no end offset: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		metric := `shale_partition_under_min_isr{partition="0",topic="acked"} 1`
		for {
			if _, body := httpStatus(t, "http://"+c.procs[l].httpAddr+"/metrics"); strings.Contains(body, metric) {
				break
			}
			if c.ctx.Err() != nil {
				t.Fatalf("the leader's /metrics never said %s", metric)
			}
			time.Sleep(50 * time.Millisecond)
		}
		held := endOffset()
		acks1, err := kgo.NewClient(kgo.SeedBrokers(c.procs[l].kafkaAddr), kgo.DefaultProduceTopic("acked"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
		if err != nil {
			t.Fatal(err)
		}
		defer acks1.Close()
		for i := range 20 {
			// Values above any the workload writes: should one be read
			// back, the order check fails.
			if err := acks1.ProduceSync(c.ctx, &kgo.Record{Value: []byte(strconv.Itoa(1_000_000_000 + i))}).FirstErr(); err != nil {
				t.Fatalf("acks=1 write with the ISR below min.insync.replicas: %v", err)
			}
		}
		if end := endOffset(); end != held {
			t.Fatalf("the high watermark moved from %d to %d over acks=1 writes with the ISR below min.insync.replicas", held, end)
		}
		if got := fetchFrom(t, c, held); len(got) != 0 {
			t.Fatalf("a consumer read %d records past the held high watermark %d", len(got), held)
		}

		c.procs[l].kill(syscall.SIGKILL)
		expireRegistrations(t, c, l)
		waitPartitionRecord(t, c, "went offline", func(p metadata.Partition) bool { return p.Leader < 0 })
		startClusterBroker(t, c.procs[f])
		p := waitPartitionRecord(t, c, "was led by the eligible follower", func(p metadata.Partition) bool { return p.Leader == f })
		if !slices.Equal(p.ISR, []int32{f}) || !slices.Equal(p.Eligible, []int32{l}) || p.UncleanEpoch == p.LeaderEpoch {
			t.Fatalf("the eligible follower elected: %+v, want ISR [%d], eligible [%d], a clean election", p, f, l)
		}
		waitDescribedEligible(t, c, []string{c.procs[f].kafkaAddr, ctl.kafkaAddr}, []int32{f}, []int32{l})
		startClusterBrokers(t, c.procs[l], c.procs[away])
		c.waitISR(3)
		c.waitAcked(c.ackedCount() + 50)
	})
}

// startControllingBroker starts a fourth broker of c (with setup applied
// first, if any), a replica of nothing: it controls once the others'
// controller candidacies are gone. It is killed, its log kept, at the
// test's end.
func startControllingBroker(t *testing.T, c *testCluster, setup func(p *brokerProc)) *brokerProc {
	t.Helper()
	ctl := &brokerProc{t: t, id: 3, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: c.etcd.addr}
	if setup != nil {
		setup(ctl)
	}
	startClusterBroker(t, ctl)
	t.Cleanup(func() {
		ctl.kill(syscall.SIGKILL)
		keepBrokerLogs(t, []*brokerProc{ctl})
	})
	return ctl
}

// waitPartitionRecord waits until the etcd record of acked-0 satisfies ok,
// and returns it.
func waitPartitionRecord(t *testing.T, c *testCluster, what string, ok func(metadata.Partition) bool) metadata.Partition {
	t.Helper()
	store := metadata.NewStore(c.etcd.client(), "/kill/")
	for {
		p, err := store.Partition(c.ctx, "acked", 0)
		if err == nil && ok(p) {
			return p
		}
		if c.ctx.Err() != nil {
			t.Fatalf("the partition never %s: %+v %v", what, p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDescribedEligible waits until `shale topic describe acked` (JSON,
// then the table), asking the brokers at seeds, shows acked-0 with the ISR
// isr and the eligible leader replicas eligible: a broker's metadata
// follows the etcd record a moment later.
func waitDescribedEligible(t *testing.T, c *testCluster, seeds []string, isr, eligible []int32) {
	t.Helper()
	args := []string{"topic", "describe", "acked", "--brokers", strings.Join(seeds, ","), "--timeout", "10s"}
	for {
		stdout, stderr, err := runCLIIO(t, "", append(args, "-o", "json")...)
		var d describedTopic
		if err == nil {
			err = jsonUnmarshal(stdout, &d)
		}
		if err == nil && len(d.Partitions) == 1 && slices.Equal(d.Partitions[0].ISR, isr) && slices.Equal(d.Partitions[0].Eligible, eligible) {
			break
		}
		if c.ctx.Err() != nil {
			t.Fatalf("topic describe never showed ISR %v, eligible %v: %+v %v\n%s", isr, eligible, d.Partitions, err, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stdout, _, err := runCLIIO(t, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := partitionColumn(t, stdout, "ELR"), []string{ids(eligible)}; !slices.Equal(got, want) {
		t.Fatalf("topic describe's ELR column %q, want %q:\n%s", got, want, stdout)
	}
}

// fetchFrom reads acked-0 from offset for a second and returns what it
// got.
func fetchFrom(t *testing.T, c *testCluster, offset int64) []*kgo.Record {
	t.Helper()
	var seeds []string
	for _, p := range c.procs {
		seeds = append(seeds, p.kafkaAddr)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"acked": {0: kgo.NewOffset().At(offset)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(c.ctx, deadline)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

// TestAnEligibleReplicaLeadsBeforeTheISRsRecoveredLogs: min.insync.replicas
// is 3, so the third replica, killed, is an eligible leader replica of
// the ISR left (the leader and the other follower). Then both of those
// machines crash, losing the unflushed tails of their logs, which held
// acknowledged records (acknowledged by all three). The eligible replica
// comes back first, then the two crashed brokers, which stay in the ISR
// as recovering. Comparing their recovered logs would elect one that lost
// acknowledged records: the eligible replica, which kept its log, leads
// instead, and every acknowledged record is read back.
func TestAnEligibleReplicaLeadsBeforeTheISRsRecoveredLogs(t *testing.T) {
	eligibleLeadsAfterCrashes(t, false)
}

// TestRecoveredLogsWaitForTheEligibleReplicasCrashToo is the same with the
// eligible replica's machine crashed too (its page cache had flushed
// everything) and started last: the recovered logs of the ISR are not
// compared while it is down, and when it is back its log, the longest, is
// compared with them and leads.
func TestRecoveredLogsWaitForTheEligibleReplicasCrashToo(t *testing.T) {
	eligibleLeadsAfterCrashes(t, true)
}

// eligibleLeadsAfterCrashes: with min.insync.replicas=3 the third
// replica y is killed (the ISR is down to the leader and a follower, y
// eligible), then the leader's and the follower's machines crash, losing
// half of each last segment. With crashed, y's machine crashed too and y
// is started after the other two; else y is started first. Either way y,
// which kept every acknowledged record, leads, cleanly.
func eligibleLeadsAfterCrashes(t *testing.T, crashed bool) {
	w := workload{rounds: 1, configs: map[string]*string{"min.insync.replicas": ptr("3")}}
	failoverWorkloadOn(t, w, func(t *testing.T, c *testCluster, _ int) {
		startControllingBroker(t, c, nil)
		l := c.leader()
		f, y := (l+1)%3, (l+2)%3
		c.procs[y].kill(syscall.SIGKILL)
		expireRegistrations(t, c, y)
		waitPartitionRecord(t, c, "was down to the leader and a follower, the third eligible", func(p metadata.Partition) bool {
			return slices.Equal(p.ISR, []int32{l, f}) && slices.Equal(p.Eligible, []int32{y})
		})
		c.procs[l].kill(syscall.SIGKILL)
		c.procs[f].kill(syscall.SIGKILL)
		loseUnflushedTail(t, c.procs[l], "acked-0")
		loseUnflushedTail(t, c.procs[f], "acked-0")
		if crashed {
			// Both registrations lapse in one step, so that the ISR
			// stays the two of them: were one seen gone first, the
			// other, the ISR's only member, would take the eligible
			// replica into the ISR when back (markRecovering), and
			// wait for it as a member.
			expireRegistrations(t, c, l, f)
			offline := waitPartitionRecord(t, c, "was offline with the leader and the follower in the ISR", func(p metadata.Partition) bool {
				return p.Leader < 0 && slices.Equal(p.ISR, []int32{l, f}) && slices.Equal(p.Eligible, []int32{y})
			})
			crashMachine(t, c.procs[y], "acked-0", 1)
			startClusterBrokers(t, c.procs[l], c.procs[f])
			waitPartitionRecord(t, c, "had both recovered logs' ends", func(p metadata.Partition) bool {
				el, lok := p.Recovering.End(l)
				ef, fok := p.Recovering.End(f)
				return lok && fok && el >= 0 && ef >= 0 || p.LeaderEpoch != offline.LeaderEpoch
			})
			// The controller's rounds (a second apart at most) would
			// have compared them by now.
			time.Sleep(3 * time.Second)
			p := waitPartitionRecord(t, c, "was read", func(metadata.Partition) bool { return true })
			if p.Leader >= 0 || p.LeaderEpoch != offline.LeaderEpoch {
				t.Fatalf("elected while the eligible replica was down: %+v, was %+v", p, offline)
			}
			startClusterBroker(t, c.procs[y])
		} else {
			startClusterBroker(t, c.procs[y])
			startClusterBrokers(t, c.procs[l], c.procs[f])
		}
		p := waitPartitionRecord(t, c, "was led by the eligible replica", func(p metadata.Partition) bool { return p.Leader >= 0 })
		if p.Leader != y || p.UncleanEpoch == p.LeaderEpoch {
			t.Fatalf("the partition after the crashes: %+v, want led by the eligible replica %d, cleanly", p, y)
		}
		c.waitISR(3)
		c.waitAcked(c.ackedCount() + 50)
	})
}
