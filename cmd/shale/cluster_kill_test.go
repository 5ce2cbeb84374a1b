package main

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/metadata"
)

// brokerProc is one `shale broker` process of a test cluster.
type brokerProc struct {
	t         *testing.T
	id        int
	dataDir   string
	kafkaAddr string
	httpAddr  string
	etcd      string
	cmd       *exec.Cmd
	stderr    *lockedBuffer
	exited    chan struct{}
}

// startClusterBroker starts (or restarts, on the same directory and
// addresses) broker id of cluster "kill" on the etcd at endpoint.
func startClusterBroker(t *testing.T, p *brokerProc) {
	t.Helper()
	p.stderr, p.exited = &lockedBuffer{}, make(chan struct{})
	p.cmd = exec.Command(shaleBin, "broker", "--id", strconv.Itoa(p.id), "--data-dir", p.dataDir,
		"--kafka-addr", p.kafkaAddr, "--http-addr", p.httpAddr, "--etcd", p.etcd, "--cluster", "kill",
		"--object-store", "none", "--session-ttl", "2s", "--replica-lag-time-max", "5s",
		"--group-initial-rebalance-delay", "0s")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := p.exited
	cmd := p.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("broker %d exited:\n%s", p.id, p.stderr)
		default:
		}
		if resp, err := http.Get("http://" + p.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker %d not healthy after 30s:\n%s", p.id, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *brokerProc) kill(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// TestSIGKILLOfLeaderLosesNoAcknowledgedRecord runs three `shale broker`
// processes on one etcd and produces with an idempotent acks=all producer
// while the partition's leader is killed with SIGKILL, twice, each killed
// broker restarting. Every acknowledged record is read back exactly once
// and in order.
func TestSIGKILLOfLeaderLosesNoAcknowledgedRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("acked"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.RequestTimeoutOverhead(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	minISR := "2"
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": &minISR}, "acked"); err != nil {
		t.Fatal(err)
	}

	// Produce until told to stop, recording what was acknowledged.
	var mu sync.Mutex
	var acked []int
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := &kgo.Record{Value: []byte(strconv.Itoa(i))}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err == nil {
				mu.Lock()
				acked = append(acked, i)
				mu.Unlock()
			}
		}
	}()
	leaderOf := func() int32 {
		for {
			td, err := adm.ListTopics(ctx, "acked")
			if err == nil {
				if l := td["acked"].Partitions[0].Leader; l >= 0 {
					return l
				}
			}
			if ctx.Err() != nil {
				t.Fatal("no leader")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for round := 0; round < 2; round++ {
		// Let some records through, then kill the leader mid-stream.
		for n := ackedCount(); ackedCount() < n+200; {
			if ctx.Err() != nil {
				t.Fatalf("round %d: production stalled at %d", round, ackedCount())
			}
			time.Sleep(10 * time.Millisecond)
		}
		l := leaderOf()
		procs[l].kill(syscall.SIGKILL)
		start, before := time.Now(), ackedCount()
		for ackedCount() == before {
			if ctx.Err() != nil {
				t.Fatalf("round %d: no record acknowledged after killing leader %d", round, l)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("round %d: killed leader %d; next acknowledgement after %s", round, l, time.Since(start).Round(time.Millisecond))
		startClusterBroker(t, procs[l])
	}
	for n := ackedCount(); ackedCount() < n+200; {
		if ctx.Err() != nil {
			t.Fatal("production stalled after the restarts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-produced

	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics("acked"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	end, err := kadm.NewClient(cons).ListEndOffsets(ctx, "acked")
	if err != nil {
		t.Fatal(err)
	}
	hw, _ := end.Lookup("acked", 0)
	seen := map[int]int{}
	last := -1
	for read := int64(0); read < hw.Offset; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", read, hw.Offset)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			v, _ := strconv.Atoi(string(r.Value))
			seen[v]++
			if v <= last {
				t.Errorf("record %d at offset %d after record %d", v, r.Offset, last)
			}
			last = v
		})
	}
	for _, v := range acked {
		if seen[v] != 1 {
			t.Fatalf("acknowledged record %d read %d times (%d acknowledged, %d in the log)", v, seen[v], len(acked), hw.Offset)
		}
	}
	t.Logf("%d records acknowledged, %d in the log, all acknowledged read exactly once in order", len(acked), hw.Offset)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
