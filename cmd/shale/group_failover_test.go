package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestSIGKILLOfGroupCoordinatorLosesNoCommittedOffset: three `shale
// broker` processes; the one coordinating a consumer group of three
// franz-go members is killed with SIGKILL while they consume an RF=3
// topic and commit. The members find the new coordinator and go on from
// their committed offsets: none lost or moved backwards, every
// acknowledged record consumed.
func TestSIGKILLOfGroupCoordinatorLosesNoCommittedOffset(t *testing.T) {
	groupFailoverOfBrokerProcs(t, func(procs []*brokerProc, coordinator int32) {
		procs[coordinator].kill(syscall.SIGKILL)
	})
}

// TestAMachineCrashOfTheGroupCoordinatorLosesNoCommittedOffset: as above,
// but the coordinator's machine crashes: the tails of its logs that only
// the page cache held are gone (the group's commits in __consumer_offsets
// and the consumed records), and the broker is back at once, on another
// boot. It follows before it leads again, so another replica coordinates
// the group: no acknowledged commit is lost or moves backwards, and every
// acknowledged record is consumed.
func TestAMachineCrashOfTheGroupCoordinatorLosesNoCommittedOffset(t *testing.T) {
	groupFailoverOfBrokerProcs(t, func(procs []*brokerProc, coordinator int32) {
		procs[coordinator].kill(syscall.SIGKILL)
		loseUnflushedTail(t, procs[coordinator], "*-*")
		startClusterBroker(t, procs[coordinator])
	})
}

// groupFailoverOfBrokerProcs runs brokertest.RunGroupFailover on three
// `shale broker` processes, fault given them and the group's coordinator.
func groupFailoverOfBrokerProcs(t *testing.T, fault func(procs []*brokerProc, coordinator int32)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcdAddr, 3, nil)
	brokertest.RunGroupFailover(t, seeds, func(coordinator int32) { fault(procs, coordinator) })
}
