package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestALeaderBackOnAnEmptyDiskBeforeAnyControllerActsLosesNothing: the
// partition's leader is also the controller. It is killed, its log disk
// lost, and it comes back at once. Its registration is gone (the test
// deletes the key, as etcd does when that lease runs out first), but its
// controller candidacy is not yet, so for up to a lease no controller
// acts: the metadata still names the broker leader, at its old epoch, of
// a log it no longer has, and its followers still fetch from it. It must
// not lead that log (its followers would cut theirs to its empty one):
// it leaves the ISR (before it registers, and again as the partition
// opens, should that write have failed), and the next controller elects
// a follower. Every acknowledged record is read back, and the replicas'
// logs agree.
func TestALeaderBackOnAnEmptyDiskBeforeAnyControllerActsLosesNothing(t *testing.T) {
	failoverWorkloadOn(t, workload{rounds: 1}, func(t *testing.T, c *testCluster, _ int) {
		l := leadingController(t, c)
		c.procs[l].kill(syscall.SIGKILL)
		expireRegistrations(t, c, l)
		loseLogDisk(t, c.procs[l])
		startClusterBroker(t, c.procs[l])
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	})
}

// TestEveryReplicaBackFromAMachineCrashTheLongestLogLeads: the machines of
// all three replicas crash at once (a power cut): each loses a different
// share of its log's unflushed tail, and the one that kept the most comes
// back first, the one that kept the least last. None of them can tell
// alone whether its log is the longest left, so none leaves the ISR or
// leads: each stays in it, recovering, and reports its recovered log end,
// and once all have, the controller elects the longest. Every
// acknowledged record that log kept (here: all) is read back; the others
// truncate to it.
func TestEveryReplicaBackFromAMachineCrashTheLongestLogLeads(t *testing.T) {
	everyReplicaBackFromAMachineCrash(t, true, false)
}

// TestEveryReplicaBackAtOnceFromAMachineCrashTheLongestLogLeads: as above,
// but the machines are back before the brokers' lease has run out, so
// each broker finds the others' old registrations: it checks that they
// answer before it counts on them.
func TestEveryReplicaBackAtOnceFromAMachineCrashTheLongestLogLeads(t *testing.T) {
	everyReplicaBackFromAMachineCrash(t, false, false)
}

// TestEveryReplicaBackTogetherFromAMachineCrashTheLongestLogLeads: as
// above, the three brokers started at the same moment, as machines that
// booted together start them: each finds the others answering, and must
// tell from etcd, not from the view it started with, whether they kept
// their logs. The broker that kept its whole log starts last.
func TestEveryReplicaBackTogetherFromAMachineCrashTheLongestLogLeads(t *testing.T) {
	everyReplicaBackFromAMachineCrash(t, false, true)
}

func everyReplicaBackFromAMachineCrash(t *testing.T, pastTheLease, together bool) {
	failoverWorkloadOn(t, workload{rounds: 1}, func(t *testing.T, c *testCluster, _ int) {
		for _, p := range c.procs {
			p.kill(syscall.SIGKILL)
		}
		if pastTheLease {
			c.waitUnregistered()
		}
		keep := []float64{1, 0.5, 0.25}
		for i, p := range c.procs {
			crashMachine(t, p, "acked-0", keep[i])
		}
		if together {
			startClusterBrokers(t, c.procs[1], c.procs[2], c.procs[0])
			c.waitAcked(c.ackedCount() + 50)
			c.waitISR(3)
			return
		}
		for i, p := range c.procs {
			startClusterBroker(t, p)
			if i == 0 {
				// Alone, it waits for the others, recovering.
				if n := scrape(t, p.httpAddr)["shale_lost_partition_logs"]; n != 1 {
					t.Fatalf("shale_lost_partition_logs of the first broker back = %v, want 1", n)
				}
			}
		}
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	})
}

// waitUnregistered waits until no broker is registered: the machines stay
// down longer than the brokers' lease (no controller is left to act).
func (c *testCluster) waitUnregistered() {
	c.t.Helper()
	waitUnregistered(c.t, c.ctx, c.etcd)
}

func waitUnregistered(t *testing.T, ctx context.Context, etcd *testEtcd) {
	t.Helper()
	store := metadata.NewStore(etcd.client(), "/kill/")
	for {
		bs, err := store.Brokers(ctx)
		if err == nil && len(bs) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the registrations never lapsed: %v %v", bs, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leadingController restarts brokers that are neither the controller nor
// the leader of the workload's partition until the controller leads it
// (the oldest candidacy is the controller: each restart moves a broker's
// to the back), and returns it.
func leadingController(t *testing.T, c *testCluster) int32 {
	t.Helper()
	for range 3 {
		k, l := c.controller(), c.leader()
		if k == l {
			return k
		}
		c.procs[k].kill(syscall.SIGTERM)
		startClusterBroker(t, c.procs[k])
		c.waitISR(3)
		for c.controller() == k {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("the controller (%d) never led the partition (leader %d)", c.controller(), c.leader())
	return -1
}

// TestAReplicaBackFromALostDiskLeadsThroughAStoreOutage: a follower of a
// tiered partition loses its log disk and comes back: restored where the
// bucket ends, it catches up and rejoins the ISR. Then the object store
// freezes, and the leader and the other follower are killed together, so
// the restored replica is elected, and cannot read its manifest. Its log
// was created by this process and has lost nothing it was given, so it
// takes produce before the store returns (the other follower, restarted,
// rejoins it): acknowledgements go on while the store is frozen.
func TestAReplicaBackFromALostDiskLeadsThroughAStoreOutage(t *testing.T) {
	srv := miniotest.Start(t)
	w := tieredKillWorkload(srv, "disk-loss-outage")
	failoverWorkloadOn(t, w, func(t *testing.T, c *testCluster, _ int) {
		l := c.leader()
		restored, other := (l+1)%3, (l+2)%3
		c.procs[restored].kill(syscall.SIGKILL)
		loseLogDisk(t, c.procs[restored])
		c.waitAcked(c.ackedCount() + 50)
		startClusterBroker(t, c.procs[restored])
		c.waitISR(3)
		c.waitAcked(c.ackedCount() + 50)

		srv.Pause()
		defer srv.Resume()
		c.procs[l].kill(syscall.SIGKILL)
		c.procs[other].kill(syscall.SIGKILL)
		if got := c.leaderOtherThan(l); got != restored {
			t.Fatalf("broker %d leads, want the restored broker %d", got, restored)
		}
		startClusterBroker(t, c.procs[other])
		c.waitAcked(c.ackedCount() + 50)
		t.Logf("acknowledged with the store frozen, led by the broker whose disk was lost")
		srv.Resume()
		startClusterBroker(t, c.procs[l])
		c.waitISR(3)
	})
}

// TestTheLastInSyncReplicaBackOnAnEmptyDiskIsNotElected: the ISR is down
// to the leader and one follower (the third replica is down), and a
// fourth broker, no replica of the partition, is the controller. The
// leader and the follower are killed, their registrations expiring
// together (the test deletes both keys in one transaction): the
// partition goes offline with its ISR kept. The follower comes back on an
// empty disk while the leader is still away. The ISR still names it, and
// it is the only live member, so the controller would elect it as soon as
// it registers, and the leader, back, would cut its log to the empty one.
// It leaves the ISRs that counted on its lost logs before it registers:
// the partition waits, offline, for the leader, and every acknowledged
// record is read back.
func TestTheLastInSyncReplicaBackOnAnEmptyDiskIsNotElected(t *testing.T) {
	lastMemberBackOnAnEmptyDisk(t, false)
}

// TestTheISRsLastMemberBackOnAnEmptyDiskLeavesItToTheEligibleReplica: as
// TestTheLastInSyncReplicaBackOnAnEmptyDiskIsNotElected, but the leader's
// registration expires first: the controller elects the follower, still
// registered, and the ISR is down to it alone, below
// min.insync.replicas=2, the leader an eligible leader replica (KIP-966).
// Then its registration expires too. Back on an empty disk, it is the
// ISR's only member, but not all there is: it leaves the ISR to the
// eligible leader, and the partition waits for it, offline, rather than
// being led from the empty log. Every acknowledged record is read back.
func TestTheISRsLastMemberBackOnAnEmptyDiskLeavesItToTheEligibleReplica(t *testing.T) {
	lastMemberBackOnAnEmptyDisk(t, true)
}

func lastMemberBackOnAnEmptyDisk(t *testing.T, leaderExpiresFirst bool) {
	failoverWorkloadOn(t, workload{rounds: 1}, func(t *testing.T, c *testCluster, _ int) {
		l := c.leader()
		lost, away := (l+1)%3, (l+2)%3
		c.procs[away].kill(syscall.SIGKILL)
		c.waitISR(2)
		c.waitAcked(c.ackedCount() + 50)
		waitPartition := func(what string, ok func(metadata.Partition) bool) metadata.Partition {
			t.Helper()
			return waitPartitionRecord(t, c, what, ok)
		}
		startControllingBroker(t, c, nil)
		if leaderExpiresFirst {
			// The follower restarts, so that its controller candidacy
			// queues behind the fourth broker's: once the leader's is
			// gone, the fourth broker controls, not the dead follower.
			c.procs[lost].kill(syscall.SIGTERM)
			startClusterBroker(t, c.procs[lost])
			waitPartition("took the follower back in", func(p metadata.Partition) bool {
				return slices.Contains(p.ISR, lost) && p.Eligible == nil
			})
			c.waitAcked(c.ackedCount() + 50)
		}
		c.procs[l].kill(syscall.SIGKILL)
		c.procs[lost].kill(syscall.SIGKILL)
		if leaderExpiresFirst {
			expireRegistrations(t, c, l)
			p := waitPartition("was led by the follower alone", func(p metadata.Partition) bool {
				return p.Leader == lost && slices.Equal(p.ISR, []int32{lost})
			})
			if !slices.Equal(p.Eligible, []int32{l}) {
				t.Fatalf("the ISR down to %d below min.insync.replicas: eligible %v, want [%d]", lost, p.Eligible, l)
			}
			expireRegistrations(t, c, lost)
		} else {
			expireRegistrations(t, c, l, lost)
		}
		// The controller (the fourth broker, the only one up) takes the
		// partition offline.
		waitPartition("went offline", func(p metadata.Partition) bool { return p.Leader < 0 })
		loseLogDisk(t, c.procs[lost])
		startClusterBroker(t, c.procs[lost])
		// Whatever the controller does with it, it does at once.
		time.Sleep(time.Second)
		if p := waitPartition("was read", func(metadata.Partition) bool { return true }); p.Leader >= 0 || slices.Contains(p.Counted(), lost) {
			t.Fatalf("the broker back on an empty disk: %+v, want the partition offline and %d neither in its ISR nor eligible", p, lost)
		}
		startClusterBroker(t, c.procs[l])
		startClusterBroker(t, c.procs[away])
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	})
}

// expireRegistrations does to the killed brokers ids what etcd does when
// their leases run out, all at once: it deletes every key under their
// leases (the registration, the controller candidacy, which has a lease of
// its own) in one transaction.
func expireRegistrations(t *testing.T, c *testCluster, ids ...int32) {
	t.Helper()
	cl := c.etcd.client()
	leases := map[int64]bool{}
	for _, id := range ids {
		r, err := cl.Get(c.ctx, fmt.Sprintf("/kill/brokers/%010d", id))
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			leases[kv.Lease] = true
		}
		r, err = cl.Get(c.ctx, "/kill/controller/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			if string(kv.Value) == fmt.Sprint(id) {
				leases[kv.Lease] = true
			}
		}
	}
	all, err := cl.Get(c.ctx, "/kill/", clientv3.WithPrefix()) // not WithKeysOnly: it leaves out the leases
	if err != nil {
		t.Fatal(err)
	}
	var ops []clientv3.Op
	for _, kv := range all.Kvs {
		if kv.Lease != 0 && leases[kv.Lease] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	if _, err := cl.Txn(c.ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestALeaderBackFromAMachineCrashBeforeAnyControllerActsLosesNothing: the
// partition's leader is also the controller. Its machine crashes: the
// broker dies, and the tail of its log that was only in the page cache is
// gone (the test cuts the log and gives the directory another boot id).
// The machine comes back at once. The broker's registration is replaced
// at once (the same directory), but its dead controller candidacy holds
// the role for up to a lease, so no controller acts: the metadata still
// names the broker leader, at its old epoch, and its followers, which
// hold the records it lost, still fetch from it. It must not lead its
// short log (they would cut theirs to it): after an unclean shutdown on
// another boot it leaves the ISRs that count on it, as a broker back on
// an empty disk does. Every acknowledged record is read back.
func TestALeaderBackFromAMachineCrashBeforeAnyControllerActsLosesNothing(t *testing.T) {
	failoverWorkloadOn(t, workload{rounds: 1}, func(t *testing.T, c *testCluster, _ int) {
		l := leadingController(t, c)
		c.procs[l].kill(syscall.SIGKILL)
		loseUnflushedTail(t, c.procs[l], "acked-0")
		startClusterBroker(t, c.procs[l])
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	})
}

// loseUnflushedTail does to the stopped broker p what a machine crash does
// when the page cache held the tails of its logs: the last segment of
// each partition directory matching pattern (a glob: "acked-0", "*") loses
// its second half (cut wherever that falls, a torn batch included), and
// the machine boots again (another boot id).
func loseUnflushedTail(t *testing.T, p *brokerProc, pattern string) {
	t.Helper()
	crashMachine(t, p, pattern, 0.5)
}

// crashMachine is loseUnflushedTail keeping the given share of each last
// segment (1: the page cache had flushed everything).
func crashMachine(t *testing.T, p *brokerProc, pattern string, keep float64) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(p.dataDir, "log", pattern))
	var cut []string
	segments := 0
	for _, dir := range dirs {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		if len(logs) == 0 {
			continue
		}
		segments++
		last := logs[len(logs)-1] // zero-padded base offsets sort by name
		st, err := os.Stat(last)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() == 0 {
			// Rolled an instant before: no tail to lose.
			cut = append(cut, fmt.Sprintf("%s (empty, nothing)", filepath.Join(filepath.Base(dir), filepath.Base(last))))
			continue
		}
		size := int64(float64(st.Size()) * keep)
		if err := os.Truncate(last, size); err != nil {
			t.Fatal(err)
		}
		cut = append(cut, fmt.Sprintf("%s %d to %d bytes", filepath.Join(filepath.Base(dir), filepath.Base(last)), st.Size(), size))
	}
	if segments == 0 {
		t.Fatalf("no segment in %s of broker %d", pattern, p.id)
	}
	t.Logf("broker %d's machine crashed: cut %s", p.id, strings.Join(cut, ", "))
	if err := os.WriteFile(filepath.Join(p.dataDir, "log", "boot-id"), []byte("another-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
