package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"
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
