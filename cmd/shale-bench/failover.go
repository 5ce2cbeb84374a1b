package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/metadata"
)

// The failover run: three `shale broker` processes on an etcd embedded in
// this program, one partition of three replicas with
// min.insync.replicas=2, and a default franz-go producer (idempotent,
// acks=all) writing one record at a time. The leader is stopped, each
// round timed from the signal through what an etcd watch sees (the
// leader's registration gone, the new leader written) to the producer's
// first acknowledgement after the new leader was written: a SIGTERM
// (controlled shutdown: the reference, no lease to wait for) and a SIGKILL
// (the lease must expire), for each session TTL asked for. Each step is
// printed as the median and the maximum of the rounds.

const failoverTopic = "failover"

type failoverBroker struct {
	id                  int
	dir                 string
	kafkaAddr, httpAddr string
	cmd                 *exec.Cmd
	exited              chan struct{}
}

type failoverCluster struct {
	o       options
	etcd    string
	name    string // --cluster
	ttl     time.Duration
	brokers []*failoverBroker
	cache   *metadata.Cache

	producers []*ackLog
	stop      chan struct{}
	ended     sync.WaitGroup
}

// ackLog is when one producer's records were acknowledged.
type ackLog struct {
	mu   sync.Mutex
	acks []time.Time
}

func (c *failoverCluster) start(b *failoverBroker) error {
	b.cmd = exec.Command(c.o.shaleBin, "broker", "--id", strconv.Itoa(b.id), "--data-dir", b.dir,
		"--kafka-addr", b.kafkaAddr, "--http-addr", b.httpAddr, "--etcd", c.etcd, "--cluster", c.name,
		"--object-store", "none", "--session-ttl", c.ttl.String(), "--log-level", "warn")
	if c.o.raw.profileDir != "" {
		b.cmd.Args = append(b.cmd.Args, "--pprof")
	}
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return err
	}
	b.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(b.cmd, b.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("broker %d exited at start", b.id)
		default:
		}
		if resp, err := http.Get("http://" + b.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker %d not healthy after 60s", b.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *failoverCluster) stopAll() {
	for _, b := range c.brokers {
		if b.cmd != nil && b.cmd.Process != nil {
			b.cmd.Process.Kill()
			<-b.exited
		}
	}
}

// partition is the failover topic's partition 0 as etcd holds it.
func (c *failoverCluster) partition() (metadata.Partition, bool) {
	ts := c.cache.Snapshot().Topics[failoverTopic]
	if ts == nil || len(ts.Partitions) == 0 {
		return metadata.Partition{}, false
	}
	return ts.Partitions[0], true
}

func (c *failoverCluster) registered(id int) bool {
	return slices.ContainsFunc(c.cache.Snapshot().Brokers, func(b metadata.Broker) bool { return int(b.ID) == id })
}

// waitFor polls cond every 5 ms (etcd changes arrive through the cache's
// watch; the poll only reads memory) and returns when it held.
func waitFor(timeout time.Duration, cond func() bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, errors.New("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *failoverCluster) produce(cl *kgo.Client, l *ackLog) {
	defer c.ended.Done()
	for i := 0; ; i++ {
		select {
		case <-c.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr()
		cancel()
		if err == nil {
			l.mu.Lock()
			l.acks = append(l.acks, time.Now())
			l.mu.Unlock()
		}
	}
}

// firstAckAfter is the first acknowledgement after t.
func (l *ackLog) firstAckAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.acks), func(i int) bool { return l.acks[i].After(t) })
	if i == len(l.acks) {
		return time.Time{}, false
	}
	return l.acks[i], true
}

type failoverRound struct {
	sig            syscall.Signal
	lease, elected time.Duration   // from the signal; lease -1 when not waited for
	firstAck       []time.Duration // from the signal, by producer
}

// round stops the partition's leader with sig and times what follows,
// then restarts it and waits for all three replicas in the ISR.
func (c *failoverCluster) round(sig syscall.Signal) (failoverRound, error) {
	p, ok := c.partition()
	if !ok || p.Leader < 0 {
		return failoverRound{}, errors.New("no leader")
	}
	old := c.brokers[p.Leader]
	epoch := p.LeaderEpoch
	r := failoverRound{sig: sig, lease: -1}
	t0 := time.Now()
	old.cmd.Process.Signal(sig)
	var leaseAt, electedAt time.Time
	var err error
	if sig == syscall.SIGKILL {
		if leaseAt, err = waitFor(30*time.Second, func() bool { return !c.registered(old.id) }); err != nil {
			return r, fmt.Errorf("broker %d's registration: %w", old.id, err)
		}
		r.lease = leaseAt.Sub(t0)
	}
	electedAt, err = waitFor(30*time.Second, func() bool {
		p, ok := c.partition()
		return ok && p.Leader >= 0 && int(p.Leader) != old.id && p.LeaderEpoch > epoch
	})
	if err != nil {
		return r, fmt.Errorf("a new leader: %w", err)
	}
	r.elected = electedAt.Sub(t0)
	for _, l := range c.producers {
		if _, err = waitFor(30*time.Second, func() bool { _, ok := l.firstAckAfter(electedAt); return ok }); err != nil {
			return r, fmt.Errorf("an acknowledgement on the new leader: %w", err)
		}
		ackAt, _ := l.firstAckAfter(electedAt)
		r.firstAck = append(r.firstAck, ackAt.Sub(t0))
	}
	<-old.exited
	if err := c.start(old); err != nil {
		return r, err
	}
	if _, err := waitFor(60*time.Second, func() bool { p, ok := c.partition(); return ok && len(p.ISR) == 3 }); err != nil {
		return r, fmt.Errorf("broker %d back in the ISR: %w", old.id, err)
	}
	return r, nil
}

// startBenchEtcd makes a temporary directory for a cluster run and starts
// an embedded etcd in it; cleanup stops etcd and removes the directory.
func startBenchEtcd(name string) (dir, addr string, e *metadata.Embedded, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", "shale-bench-"+name+"-")
	if err != nil {
		return "", "", nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr = freeAddr()
	e, err = metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(dir, "etcd"), ClientAddr: addr})
	if err != nil {
		os.RemoveAll(dir)
		return "", "", nil, nil, err
	}
	return dir, addr, e, func() { e.Close(); os.RemoveAll(dir) }, nil
}

// runFailover runs the failover rounds for each session TTL.
func runFailover(o options) error {
	dir, etcdAddr, e, cleanup, err := startBenchEtcd("failover")
	if err != nil {
		return err
	}
	defer cleanup()
	var rows [][]string
	for _, s := range strings.Split(o.failoverTTLs, ",") {
		ttl, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-failover-ttls: %w", err)
		}
		rs, err := failoverRounds(o, e, etcdAddr, filepath.Join(dir, "ttl-"+s), ttl)
		if err != nil {
			return fmt.Errorf("failover with session TTL %s: %w", ttl, err)
		}
		rows = append(rows, rs...)
	}
	fmt.Printf("leader failover, one RF=3 partition, min.insync.replicas=2, idempotent acks=all producer, %d rounds each (median, max), load %s\n",
		o.failoverRounds, loadAverage())
	printTable([]string{"stop", "session TTL", "registration gone", "new leader in etcd", "first ack: franz-go defaults", "first ack: MetadataMinAge 100ms"}, rows)
	return nil
}

func failoverRounds(o options, e *metadata.Embedded, etcdAddr, dir string, ttl time.Duration) ([][]string, error) {
	name := "bench-" + strings.ReplaceAll(ttl.String(), ".", "_")
	c := &failoverCluster{o: o, etcd: etcdAddr, name: name, ttl: ttl, stop: make(chan struct{})}
	defer c.stopAll()
	for id := 0; id < 3; id++ {
		b := &failoverBroker{id: id, dir: filepath.Join(dir, strconv.Itoa(id)), kafkaAddr: freeAddr(), httpAddr: freeAddr()}
		c.brokers = append(c.brokers, b)
		if err := c.start(b); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cache, err := metadata.NewCache(ctx, metadata.NewStore(e.Client(), "/"+name+"/"), nil)
	if err != nil {
		return nil, err
	}
	defer cache.Close()
	c.cache = cache
	var seeds []string
	for _, b := range c.brokers {
		seeds = append(seeds, b.kafkaAddr)
	}
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, failoverTopic); err != nil {
		return nil, err
	}
	if _, err := waitFor(30*time.Second, func() bool { p, ok := c.partition(); return ok && len(p.ISR) == 3 }); err != nil {
		return nil, errors.New("three replicas in the ISR: timed out")
	}
	// Two producers: franz-go's defaults, which after a failed produce
	// refresh metadata at most every MetadataMinAge (5 s) unless the
	// broker hints the new leader (KIP-951, which a dead leader cannot
	// give), and one refreshing as soon as 100 ms, as the Java client's
	// retry.backoff.ms lets it: the second shows what the cluster takes.
	for _, opts := range [][]kgo.Opt{nil, {kgo.MetadataMinAge(100 * time.Millisecond)}} {
		prod, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(failoverTopic)}, opts...)...)
		if err != nil {
			return nil, err
		}
		defer prod.Close()
		l := &ackLog{}
		c.producers = append(c.producers, l)
		c.ended.Add(1)
		go c.produce(prod, l)
	}
	defer func() {
		close(c.stop)
		c.ended.Wait()
	}()
	var rows [][]string
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		var rs []failoverRound
		for i := 0; i < o.failoverRounds; i++ {
			// Steady production first, and past the default
			// client's MetadataMinAge since the last failover, so
			// that each round starts alike.
			time.Sleep(6 * time.Second)
			r, err := c.round(sig)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
		rows = append(rows, summarize(rs, ttl))
	}
	return rows, nil
}

// summarize is one table row: the median and the maximum of each step.
func summarize(rs []failoverRound, ttl time.Duration) []string {
	stat := func(get func(failoverRound) time.Duration) string {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, get(r))
		}
		slices.Sort(ds)
		if ds[0] < 0 {
			return "-"
		}
		return fmt.Sprintf("%s (%s)", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	name := "SIGTERM (controlled shutdown)"
	if rs[0].sig == syscall.SIGKILL {
		name = "SIGKILL"
	}
	return []string{name, ttl.String(),
		stat(func(r failoverRound) time.Duration { return r.lease }),
		stat(func(r failoverRound) time.Duration { return r.elected }),
		stat(func(r failoverRound) time.Duration { return r.firstAck[0] }),
		stat(func(r failoverRound) time.Duration { return r.firstAck[1] })}
}
