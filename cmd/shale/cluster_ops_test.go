package main

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMOfLeaderHandsOverBeforeExit: a leader sent SIGTERM during
// idempotent acks=all production asks the controller to move its
// leadership, waits for it, then exits: the producer sees no error, every
// acknowledged record is read back once in order, and the broker's log
// says its partition moved before it stopped.
func TestSIGTERMOfLeaderHandsOverBeforeExit(t *testing.T) {
	moved := regexp.MustCompile(`controlled shutdown: leadership moved.* moved=(\d+) kept=(\d+) took=(\S+)`)
	failoverWorkload(t, nil, func(t *testing.T, c *testCluster, round int) {
		l := c.leader()
		errs := len(c.errors())
		start, before := time.Now(), c.ackedCount()
		c.procs[l].kill(syscall.SIGTERM)
		exited := time.Since(start)
		m := moved.FindStringSubmatch(c.procs[l].stderr.String())
		if m == nil || m[1] == "0" {
			t.Fatalf("broker %d did not hand its leadership over before exiting:\n%s", l, tail(c.procs[l].stderr.String(), 3000))
		}
		c.waitAcked(before + 1)
		t.Logf("round %d: SIGTERM to leader %d; leadership moved in %s (%s partitions, %s kept), exited after %s, next acknowledgement after %s",
			round, l, m[3], m[1], m[2], exited.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if e := c.errors(); len(e) > errs {
			t.Fatalf("the producer saw %d errors during the hand-over, first: %v", len(e)-errs, e[errs])
		}
		if strings.Contains(c.procs[l].stderr.String(), "controlled shutdown: timed out") {
			t.Fatalf("controlled shutdown timed out")
		}
		startClusterBroker(t, c.procs[l])
		c.waitISR(3)
	})
}

// TestDoubleFailoverStopsAndResumesWrites: the leader is killed, then its
// successor; with three replicas and min.insync.replicas=2 the last broker
// standing takes over but refuses acks=all writes, which resume once a
// killed broker is back in the ISR; every acknowledged record is read back
// once, in order.
func TestDoubleFailoverStopsAndResumesWrites(t *testing.T) {
	failoverWorkload(t, nil, func(t *testing.T, c *testCluster, round int) {
		if round > 0 {
			return
		}
		first := c.leader()
		c.procs[first].kill(syscall.SIGKILL)
		// The leadership moves once the killed broker's lease expires.
		// An acknowledgement counted after the kill may still be the
		// killed leader's (its answer read before the kill, counted
		// after), so the next leader is waited for, not read at the
		// next acknowledgement.
		second := c.leaderOtherThan(first)
		c.waitAcked(c.ackedCount() + 1)
		c.procs[second].kill(syscall.SIGKILL)
		start := time.Now()
		c.leaderOtherThan(second)
		// One replica left: acks=all stops.
		stalled := c.ackedCount()
		time.Sleep(time.Second)
		if n := c.ackedCount(); n > stalled+1 {
			t.Fatalf("%d records acknowledged with one in-sync replica", n-stalled)
		}
		startClusterBroker(t, c.procs[first])
		c.waitAcked(c.ackedCount() + 1)
		t.Logf("killed leaders %d then %d; writes resumed %s after the second kill, with %d back", first, second,
			time.Since(start).Round(time.Millisecond), first)
		startClusterBroker(t, c.procs[second])
		c.waitISR(3)
	})
}
