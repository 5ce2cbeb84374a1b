package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shale-log/shale/broker"
)

// Hooks for the process-level tests, set through the environment of
// `shale broker`. They are not part of the user interface.
//
// SHALE_TEST_KILL_AT=POINT[:N] makes the process kill itself with SIGKILL
// the Nth time (default the first) an upload reaches POINT, one of
// tiering's fault points ("uploaded": objects in the bucket, manifest not
// committed; "committed": manifest committed, local log not told;
// "compact-uploaded" and "compact-committed", the same of a compaction of
// a remote log).
// SHALE_TEST_ORPHAN_GRACE=DURATION is the age past which orphan cleanup
// deletes objects no manifest names (instead of an hour).
// SHALE_TEST_GROUP_OFFSETS_INTERVAL=DURATION is how often the groups'
// committed offsets are written to the bucket (instead of a minute).
// SHALE_TEST_FULL_SWEEP_EVERY=DURATION is about how often a leader's orphan
// sweep lists all of a partition's objects (instead of a day).
// SHALE_TEST_REPLACED_DELETE_DELAY=DURATION is how long after a remote
// compaction the objects it replaced are deleted (instead of 5 minutes).
// `shale dev` takes them too.
func applyTestHooks(c *broker.TieringConfig) error {
	for env, d := range map[string]*time.Duration{"SHALE_TEST_ORPHAN_GRACE": &c.OrphanGrace, "SHALE_TEST_GROUP_OFFSETS_INTERVAL": &c.GroupOffsetsInterval,
		"SHALE_TEST_FULL_SWEEP_EVERY": &c.FullSweepEvery, "SHALE_TEST_REPLACED_DELETE_DELAY": &c.ReplacedDeleteDelay} {
		if v := os.Getenv(env); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil {
				return fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	v := os.Getenv("SHALE_TEST_KILL_AT")
	if v == "" {
		return nil
	}
	point, nth, hasN := strings.Cut(v, ":")
	n := 1
	if hasN {
		var err error
		if n, err = strconv.Atoi(nth); err != nil || n < 1 {
			return fmt.Errorf("SHALE_TEST_KILL_AT: bad count in %q", v)
		}
	}
	var reached atomic.Int64
	c.Fault = func(p string) {
		if p == point && reached.Add(1) == int64(n) {
			fmt.Fprintf(os.Stderr, "SHALE_TEST_KILL_AT: killing the process at %s (%d)\n", p, n)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal ends the process
		}
	}
	return nil
}
