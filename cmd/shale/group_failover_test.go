package main

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// TestSIGKILLOfGroupCoordinatorLosesNoCommittedOffset: three `shale
// broker` processes; the one coordinating a consumer group of three
// franz-go members is killed with SIGKILL while they consume an RF=3
// topic and commit. The members find the new coordinator and go on from
// their committed offsets: none lost or moved backwards, every
// acknowledged record consumed.
func TestSIGKILLOfGroupCoordinatorLosesNoCommittedOffset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcdAddr := freeAddr(t)
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: etcdAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var procs []*brokerProc
	var seeds []string
	for id := 0; id < 3; id++ {
		p := &brokerProc{t: t, id: id, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr}
		startClusterBroker(t, p)
		t.Cleanup(func() { p.kill(syscall.SIGKILL) })
		procs = append(procs, p)
		seeds = append(seeds, p.kafkaAddr)
	}
	defer func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("broker %d:\n%s", p.id, tail(p.stderr.String(), 4000))
			}
		}
	}()
	brokertest.RunGroupFailover(t, seeds, func(coordinator int32) {
		procs[coordinator].kill(syscall.SIGKILL)
	})
}
