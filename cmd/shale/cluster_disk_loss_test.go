package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

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
// it leaves the ISR, and the next controller elects a follower. Every
// acknowledged record is read back, and the replicas' logs agree.
func TestALeaderBackOnAnEmptyDiskBeforeAnyControllerActsLosesNothing(t *testing.T) {
	failoverWorkloadOn(t, workload{rounds: 1}, func(t *testing.T, c *testCluster, _ int) {
		l := leadingController(t, c)
		c.procs[l].kill(syscall.SIGKILL)
		key := fmt.Sprintf("/kill/brokers/%010d", l)
		if _, err := c.etcd.client().Delete(c.ctx, key); err != nil {
			t.Fatal(err)
		}
		loseLogDisk(t, c.procs[l])
		startClusterBroker(t, c.procs[l])
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	})
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
