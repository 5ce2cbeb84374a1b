package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestSIGKILLOfATieredLeaderLosesNoRecord: three `shale broker` processes
// on MinIO, an RF=3 topic with 16 KiB segments that keeps about two of
// them on local disk (local.retention.bytes), under an idempotent acks=all
// producer. Once the manifest names several segments and every replica has
// deleted offset 0 from its disk, the leader is killed with SIGKILL
// mid-stream; another leads and uploads on from the manifest, and the
// killed broker restarts and rejoins the ISR. Every acknowledged record
// is read back once, in order, from offset 0, the first of them from the
// bucket alone (no replica's disk holds them), and the replicas' logs
// agree from the higher of their log starts.
func TestSIGKILLOfATieredLeaderLosesNoRecord(t *testing.T) {
	srv := miniotest.Start(t)
	const bucket = "tiered-kill"
	mc := srv.Client()
	failoverWorkloadOn(t, tieredKillWorkload(srv, bucket), func(t *testing.T, c *testCluster, _ int) {
		trimmed := func() (bool, string) {
			m, _ := readTierState(t, c.ctx, mc, bucket)
			starts := localStarts(c.procs, "acked-0")
			return len(m.Segments) >= 3 && allPastZero(starts), fmt.Sprintf("%d segments in the manifest, local log starts %v", len(m.Segments), starts)
		}
		waitUntil(t, "uploads, and local retention on every replica past offset 0", func() bool { ok, _ := trimmed(); return ok })
		l := c.leader()
		m, _ := readTierState(t, c.ctx, mc, bucket)
		_, state := trimmed()
		c.procs[l].kill(syscall.SIGKILL)
		start := time.Now()
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 1)
		t.Logf("killed leader %d with the manifest ending at %d (%s); another acknowledged after %s", l, m.End(), state, time.Since(start).Round(time.Millisecond))
		waitUntil(t, "the next leader uploads past the manifest's end at the kill", func() bool {
			now, _ := readTierState(t, c.ctx, mc, bucket)
			return now.End() > m.End()
		})
		startClusterBroker(t, c.procs[l])
		c.waitISR(3)
		// Local retention never moves a log start back: offset 0 stays
		// in the bucket alone while the records are read from it.
		starts := localStarts(c.procs, "acked-0")
		if !allPastZero(starts) {
			t.Fatalf("after the restart of broker %d, local log starts %v: offset 0 is on a disk, or a replica holds no log", l, starts)
		}
		t.Logf("broker %d restarted and back in the ISR; local log starts %v", l, starts)
	})
}

// TestSIGKILLOfATieredLeaderDuringAStoreOutageLosesNoRecord is the test
// above with MinIO down first, killed (connections refused) or frozen
// with SIGSTOP (requests hang): a zone that loses the leader and the
// object store together. Another replica takes over before it can read
// the manifest and takes acks=all produce at once (it has run since the
// topic was created, so its log holds everything the bucket does); the
// killed broker restarts and rejoins the ISR while the store is still
// down; once the store is back the new leader uploads on from the
// manifest's end, and every acknowledged record is read back once, in
// order, from offset 0, the first of them from the bucket alone.
func TestSIGKILLOfATieredLeaderDuringAStoreOutageLosesNoRecord(t *testing.T) {
	srv := miniotest.Start(t)
	mc := srv.Client()
	for _, store := range []struct {
		name     string
		down, up func() error
	}{
		{"killed", func() error { srv.Kill(); return nil }, srv.Restart},
		{"frozen", func() error { srv.Pause(); return nil }, func() error { srv.Resume(); return nil }},
	} {
		t.Run("store="+store.name, func(t *testing.T) {
			bucket := "tiered-outage-kill-" + store.name
			failoverWorkloadOn(t, tieredKillWorkload(srv, bucket), func(t *testing.T, c *testCluster, _ int) {
				waitUntil(t, "uploads, and local retention on every replica past offset 0", func() bool {
					m, _ := readTierState(t, c.ctx, mc, bucket)
					return len(m.Segments) >= 3 && allPastZero(localStarts(c.procs, "acked-0"))
				})
				l := c.leader()
				m, _ := readTierState(t, c.ctx, mc, bucket)
				if err := store.down(); err != nil {
					t.Fatal(err)
				}
				c.procs[l].kill(syscall.SIGKILL)
				start := time.Now()
				next := c.leaderOtherThan(l)
				c.waitAcked(c.ackedCount() + 100)
				t.Logf("store %s and leader %d killed with the manifest ending at %d; broker %d leads, 100 records acknowledged %s later with the store down",
					store.name, l, m.End(), next, time.Since(start).Round(time.Millisecond))
				startClusterBroker(t, c.procs[l])
				c.waitISR(3)
				c.waitAcked(c.ackedCount() + 50)
				t.Logf("broker %d restarted and back in the ISR %s after the kill, the store still down", l, time.Since(start).Round(time.Millisecond))
				if err := store.up(); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the new leader uploads past the manifest's end at the kill", func() bool {
					now, _ := readTierState(t, c.ctx, mc, bucket)
					return now.End() > m.End()
				})
				if starts := localStarts(c.procs, "acked-0"); !allPastZero(starts) {
					t.Fatalf("local log starts %v: offset 0 is on a disk, or a replica holds no log", starts)
				}
			})
		})
	}
}

// tieredKillWorkload is one round of the failover workload on srv's
// bucket, with 16 KiB segments of which a replica keeps about two on its
// disk once they are uploaded.
func tieredKillWorkload(srv *miniotest.Server, bucket string) workload {
	return workload{
		rounds: 1,
		setup: func(p *brokerProc) {
			p.objectStore, p.env = srv.URL(bucket, "")+"&create_bucket=true", miniotest.Env()
			// Followers read the manifest, and every replica applies
			// local retention, at this interval.
			p.extra = []string{"--retention-check-interval", "200ms"}
		},
		configs: map[string]*string{"segment.bytes": ptr("16384"), "local.retention.bytes": ptr("32768"), "file.delete.delay.ms": ptr("1")},
		// About 700 bytes a record, one to a batch: 23 to a segment.
		keyBytes: 600,
	}
}

// allPastZero reports whether every log start of starts is past offset 0.
func allPastZero(starts []int64) bool {
	return !slices.ContainsFunc(starts, func(s int64) bool { return s <= 0 })
}

// localStarts lists, for each broker, the base offset of the first local
// segment of partition (as "topic-N"; -1 when it holds none).
func localStarts(procs []*brokerProc, partition string) []int64 {
	out := make([]int64, len(procs))
	for i, p := range procs {
		out[i] = -1
		files, _ := filepath.Glob(filepath.Join(p.dataDir, "*", partition, "*.log"))
		for _, f := range files {
			base, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64)
			if err == nil && (out[i] < 0 || base < out[i]) {
				out[i] = base
			}
		}
	}
	return out
}
