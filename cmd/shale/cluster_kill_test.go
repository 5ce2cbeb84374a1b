package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
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
	extra     []string // further flags
	// objectStore is the --object-store URL (default: none); env is
	// added to the process's environment.
	objectStore string
	env         []string
	// etcdLink and listener are the fault proxies in front of the
	// broker's etcd endpoint and its Kafka listener (nil unless
	// behindProxies put them there).
	etcdLink, listener *brokertest.Proxy
	cmd                *exec.Cmd
	stderr             *lockedBuffer
	// earlier is what the broker's earlier processes wrote to stderr.
	earlier strings.Builder
	exited  chan struct{}
}

// startTestEtcd starts an embedded etcd for `shale broker` processes and
// returns its client address; it stops when the test ends, after the
// brokers' processes are killed.
func startTestEtcd(t *testing.T, ctx context.Context) string {
	t.Helper()
	return startRestartableEtcd(t, ctx).addr
}

// testEtcd is a single-member etcd in the test process that can be
// stopped and started again on the same data directory and client
// address, as an operator restarts etcd.
type testEtcd struct {
	t    *testing.T
	dir  string
	addr string
	mu   sync.Mutex
	e    *metadata.Embedded // nil while stopped
	// bcryptCost is the server's --bcrypt-cost (0: etcd's default).
	bcryptCost uint
}

// startRestartableEtcd starts a testEtcd; it stops when the test ends,
// after the brokers' processes are killed.
func startRestartableEtcd(t *testing.T, ctx context.Context, opts ...func(*testEtcd)) *testEtcd {
	t.Helper()
	te := &testEtcd{t: t, dir: filepath.Join(t.TempDir(), "etcd"), addr: freeAddr(t)}
	for _, o := range opts {
		o(te)
	}
	// The address was free when freeAddr picked it, but nothing held
	// it: another process of the test run may have taken it since.
	for attempt := 1; ; attempt++ {
		err := te.tryStart(ctx)
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		te.addr = freeAddr(t)
	}
	t.Cleanup(te.stop)
	return te
}

// start starts the server (stopped) on its directory and address.
func (te *testEtcd) start(ctx context.Context) {
	te.t.Helper()
	if err := te.tryStart(ctx); err != nil {
		te.t.Fatal(err)
	}
}

func (te *testEtcd) tryStart(ctx context.Context) error {
	te.mu.Lock()
	defer te.mu.Unlock()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: te.dir, ClientAddr: te.addr, BcryptCost: te.bcryptCost})
	if err != nil {
		return err
	}
	te.e = e
	return nil
}

// client is a client of the running server.
func (te *testEtcd) client() *clientv3.Client {
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.e == nil {
		te.t.Fatal("etcd is stopped")
	}
	return te.e.Client()
}

// stop stops the server, if it runs.
func (te *testEtcd) stop() {
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}

// startBrokerProcs starts n `shale broker` processes (ids 0 to n-1) on
// the etcd at etcdAddr, setup (if not nil) applied to each before it
// starts, and returns them with their Kafka addresses once each lists
// every one in its metadata. They are killed with SIGKILL when the test
// ends, their stderr logged first if it failed.
func startBrokerProcs(t *testing.T, etcdAddr string, n int, setup func(p *brokerProc)) (procs []*brokerProc, seeds []string) {
	t.Helper()
	var ids []int32
	for id := 0; id < n; id++ {
		p := &brokerProc{t: t, id: id, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr}
		if setup != nil {
			setup(p)
		}
		p.startNew(t)
		t.Cleanup(func() { p.kill(syscall.SIGKILL) })
		procs = append(procs, p)
		seeds = append(seeds, p.kafkaAddr)
		ids = append(ids, int32(id))
	}
	t.Cleanup(func() {
		requireNoAppendsOverTheBucket(t, procs)
		if t.Failed() {
			for _, p := range procs {
				t.Logf("broker %d:\n%s", p.id, tail(p.stderr.String(), 4000))
			}
			keepBrokerLogs(t, procs)
		}
	})
	brokertest.WaitListed(t, 30*time.Second, seeds, ids...)
	return procs, seeds
}

// startClusterBroker starts (or restarts, on the same directory and
// addresses) broker id of cluster "kill" on the etcd at endpoint, and
// waits until it is healthy.
func startClusterBroker(t *testing.T, p *brokerProc) {
	t.Helper()
	startClusterBrokers(t, p)
}

// startClusterBrokers starts the brokers all at once, as machines that
// booted together do (each start races the others' marks in etcd), and
// waits until each is healthy. One started for the first time whose
// address was taken meanwhile starts again on others, as startNew.
func startClusterBrokers(t *testing.T, ps ...*brokerProc) {
	t.Helper()
	first := make([]bool, len(ps))
	for i, p := range ps {
		first[i] = p.cmd == nil
		p.start(t)
	}
	for i, p := range ps {
		if p.waitHealthyOrBusy(t, first[i]) {
			p.moveAddrs(t)
			p.startNew(t)
		}
	}
}

// start starts the broker's process.
func (p *brokerProc) start(t *testing.T) {
	t.Helper()
	if p.stderr != nil {
		p.earlier.WriteString(p.stderr.String())
		fmt.Fprintf(&p.earlier, "--- broker %d started again ---\n", p.id)
	}
	p.stderr, p.exited = &lockedBuffer{}, make(chan struct{})
	store := p.objectStore
	if store == "" {
		store = "none"
	}
	p.cmd = exec.Command(shaleBin, "broker", "--id", strconv.Itoa(p.id), "--data-dir", p.dataDir,
		"--kafka-addr", p.kafkaAddr, "--http-addr", p.httpAddr, "--etcd", p.etcd, "--cluster", "kill",
		"--object-store", store, "--session-ttl", "2s", "--replica-lag-time-max", "5s",
		"--group-initial-rebalance-delay", "0s")
	if level := os.Getenv("SHALE_TEST_LOG_LEVEL"); level != "" {
		p.cmd.Args = append(p.cmd.Args, "--log-level", level)
	}
	p.cmd.Args = append(p.cmd.Args, p.extra...)
	p.cmd.Stderr = p.stderr
	if p.env != nil {
		p.cmd.Env = append(os.Environ(), p.env...)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := p.exited
	cmd := p.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
}

// startNew starts the broker for the first time and waits until it is
// healthy. Its addresses were free when freeAddr picked them, but nothing
// holds them: another process of the test run can take one before the
// broker binds it (seen in CI: "bind: address already in use"), and the
// broker then starts again on others.
func (p *brokerProc) startNew(t *testing.T) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p.start(t)
		if !p.waitHealthyOrBusy(t, attempt < 5) {
			return
		}
		p.moveAddrs(t)
	}
}

// moveAddrs gives a broker whose address was taken before it could bind
// it new ones.
func (p *brokerProc) moveAddrs(t *testing.T) {
	t.Helper()
	t.Logf("broker %d: an address was taken before it could bind it; starting it on others", p.id)
	p.kafkaAddr, p.httpAddr = freeAddr(t), freeAddr(t)
	if p.listener != nil {
		p.listener.Retarget(p.kafkaAddr)
	}
}

// behindProxies puts the broker's links behind fault proxies that a test
// can cut, with no test-only flag: its --etcd endpoint is a proxy in front
// of etcd's, and it advertises (--advertised-addr) a proxy in front of its
// Kafka listener, which clients past their first metadata and the other
// brokers' replica fetchers dial. The Kafka proxy tells the fetchers of
// broker N by the client id they present (broker-N), so one follower can
// be cut from its leader alone. Call it before the broker first starts.
func (p *brokerProc) behindProxies(t *testing.T) {
	t.Helper()
	p.etcdLink = brokertest.NewProxy(t, p.etcd)
	p.etcd = p.etcdLink.Addr()
	p.listener = brokertest.NewKafkaProxy(t, p.kafkaAddr)
	p.extra = append(p.extra, "--advertised-addr", p.listener.Addr())
}

// waitHealthy waits until the started broker answers /healthz.
func (p *brokerProc) waitHealthy(t *testing.T) {
	t.Helper()
	p.waitHealthyOrBusy(t, false)
}

// waitHealthyOrBusy is waitHealthy, returning true instead when the broker
// exited because one of its addresses was in use and busyOK.
func (p *brokerProc) waitHealthyOrBusy(t *testing.T, busyOK bool) (busy bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.exited:
			if busyOK && strings.Contains(p.stderr.String(), "address already in use") {
				return true
			}
			t.Fatalf("broker %d exited:\n%s", p.id, p.stderr)
		default:
		}
		if resp, err := http.Get("http://" + p.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return false
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
	failoverWorkload(t, nil, func(t *testing.T, c *testCluster, round int) {
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		// The next acknowledgement counted may be the killed leader's
		// own (answered before the kill, counted after): the failover
		// is over once another broker leads and acknowledges.
		start := time.Now()
		c.leaderOtherThan(l)
		moved := time.Since(start)
		c.waitAcked(c.ackedCount() + 1)
		t.Logf("round %d: killed leader %d; leadership moved after %s, next acknowledgement after %s", round, l,
			moved.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		startClusterBroker(t, c.procs[l])
	})
}

// TestSIGSTOPOfLeaderPastItsLease: a paused leader (a zombie) loses its
// lease and its leadership; when it resumes, nothing it was asked to
// acknowledge is acknowledged by it, and it truncates and rejoins the ISR
// as a follower.
func TestSIGSTOPOfLeaderPastItsLease(t *testing.T) {
	failoverWorkload(t, nil, func(t *testing.T, c *testCluster, round int) {
		l := c.leader()
		c.procs[l].cmd.Process.Signal(syscall.SIGSTOP)
		start := time.Now()
		c.leaderOtherThan(l)
		moved := time.Since(start)
		c.waitAcked(c.ackedCount() + 1)
		t.Logf("round %d: paused leader %d; leadership moved after %s, next acknowledgement after %s", round, l,
			moved.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		// Writes sent to the zombie while it sleeps, read when it wakes
		// (values past any the producer sends: were one kept, the
		// read-back would find it out of order).
		var late []*queuedProduce
		for i, acks := range []int16{1, -1} {
			late = append(late, queueProduce(t, c.procs[l].kafkaAddr, "acked", acks, strconv.Itoa(1<<40+2*round+i)))
		}
		c.procs[l].cmd.Process.Signal(syscall.SIGCONT)
		for i, q := range late {
			if code := q.errorCode(); code == 0 {
				t.Fatalf("round %d: the resumed zombie %d acknowledged a write (acks=%d) sent while it was paused", round, l, []int{1, -1}[i])
			}
		}
		c.waitISR(3)
	})
}

// TestLaggingFollowerLeavesAndRejoinsTheISR: a follower paused for longer
// than replica.lag.time.max.ms (but within its lease) is removed from the
// ISR by the leader, production continues, and once resumed it catches up
// and is added back.
func TestLaggingFollowerLeavesAndRejoinsTheISR(t *testing.T) {
	failoverWorkload(t, []string{"--session-ttl", "60s", "--replica-lag-time-max", "2s"}, func(t *testing.T, c *testCluster, round int) {
		l := c.leader()
		f := (l + 1) % 3
		c.procs[f].cmd.Process.Signal(syscall.SIGSTOP)
		start := time.Now()
		c.waitISR(2)
		t.Logf("round %d: follower %d paused; left the ISR after %s", round, f, time.Since(start).Round(time.Millisecond))
		c.waitAcked(c.ackedCount() + 100)
		c.procs[f].cmd.Process.Signal(syscall.SIGCONT)
		start = time.Now()
		c.waitISR(3)
		t.Logf("round %d: follower %d resumed; back in the ISR after %s", round, f, time.Since(start).Round(time.Millisecond))
	})
}

// testCluster is three broker processes under a producer.
type testCluster struct {
	t     *testing.T
	ctx   context.Context
	etcd  *testEtcd
	procs []*brokerProc
	adm   *kadm.Client
	mu    sync.Mutex
	acked []int
	// ackedAt is when each of acked was acknowledged.
	ackedAt []time.Time
	errs    []error // production errors
}

// longestWait is the longest time from since to until without an
// acknowledgement.
func (c *testCluster) longestWait(since, until time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, worst := since, time.Duration(0)
	for _, at := range c.ackedAt {
		if at.Before(since) {
			continue
		}
		if at.After(until) {
			break
		}
		worst = max(worst, at.Sub(last))
		last = at
	}
	return max(worst, until.Sub(last))
}

// errors returns the production errors so far.
func (c *testCluster) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

func (c *testCluster) ackedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked)
}

// produced records the outcome of producing record i: acknowledged now,
// or err.
func (c *testCluster) produced(i int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	c.acked = append(c.acked, i)
	c.ackedAt = append(c.ackedAt, time.Now())
}

// waitAcked waits until n records are acknowledged.
func (c *testCluster) waitAcked(n int) {
	c.t.Helper()
	for c.ackedCount() < n {
		if c.ctx.Err() != nil {
			c.t.Fatalf("production stalled at %d acknowledged records", c.ackedCount())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leaderOtherThan waits until a broker other than old leads, and returns
// it.
func (c *testCluster) leaderOtherThan(old int32) int32 {
	c.t.Helper()
	for {
		if l := c.leader(); l != old {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *testCluster) leader() int32 {
	c.t.Helper()
	for {
		td, err := c.adm.ListTopics(c.ctx, "acked")
		if err == nil {
			if l := td["acked"].Partitions[0].Leader; l >= 0 {
				return l
			}
		}
		if c.ctx.Err() != nil {
			c.t.Fatal("no leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitISR waits until the partition's ISR has n members.
func (c *testCluster) waitISR(n int) {
	c.t.Helper()
	for {
		td, err := c.adm.ListTopics(c.ctx, "acked")
		if err == nil && len(td["acked"].Partitions[0].ISR) == n {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("ISR never reached %d members", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// failoverWorkload starts three brokers (with extra flags), creates a
// partition with three replicas and min.insync.replicas=2, produces with
// an idempotent acks=all producer, applies fault twice while producing,
// then reads everything back: every acknowledged record exactly once, in
// order.
func failoverWorkload(t *testing.T, extra []string, fault func(t *testing.T, c *testCluster, round int)) {
	failoverWorkloadWith(t, func(p *brokerProc) { p.extra = extra }, fault)
}

// failoverWorkloadWith is failoverWorkload with setup applied to each
// broker before it first starts (its flags, the etcd endpoint it is
// given).
func failoverWorkloadWith(t *testing.T, setup func(p *brokerProc), fault func(t *testing.T, c *testCluster, round int)) {
	failoverWorkloadRounds(t, 2, setup, fault)
}

// failoverWorkloadRounds is failoverWorkloadWith applying fault rounds
// times.
func failoverWorkloadRounds(t *testing.T, rounds int, setup func(p *brokerProc), fault func(t *testing.T, c *testCluster, round int)) {
	failoverWorkloadOn(t, workload{rounds: rounds, setup: setup}, fault)
}

// workload is what failoverWorkloadOn runs: rounds of the fault, setup
// applied to each broker before it first starts, configs of the topic
// besides min.insync.replicas=2, keyBytes of key on each record
// (padding, so that segments fill), and the time it may take (default
// 2 minutes).
type workload struct {
	rounds   int
	setup    func(p *brokerProc)
	configs  map[string]*string
	keyBytes int
	timeout  time.Duration
}

// failoverWorkloadOn is failoverWorkload as w says.
func failoverWorkloadOn(t *testing.T, w workload, fault func(t *testing.T, c *testCluster, round int)) {
	if w.timeout <= 0 {
		w.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	etcd := startRestartableEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcd.addr, 3, w.setup)
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("acked"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.RequestTimeoutOverhead(3*time.Second), kgo.ProduceRequestTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The admin client is the test's view of the partition: its own client,
	// so that kadm's answers are not served from the producer's metadata
	// cache (kgo keeps it for MetadataMinAge, 5 s by default), which can name
	// a leader that has already handed over.
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	configs := map[string]*string{"min.insync.replicas": ptr("2")}
	maps.Copy(configs, w.configs)
	if _, err := adm.CreateTopic(ctx, 1, 3, configs, "acked"); err != nil {
		t.Fatal(err)
	}

	c := &testCluster{t: t, ctx: ctx, etcd: etcd, procs: procs, adm: adm}
	// Produce until told to stop, recording what was acknowledged.
	var key []byte // null unless padded
	if w.keyBytes > 0 {
		// Random bytes: the producer's compression keeps them whole.
		key = make([]byte, w.keyBytes)
		rand.NewChaCha8([32]byte{}).Read(key)
	}
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
			r := &kgo.Record{Key: key, Value: []byte(strconv.Itoa(i))}
			err := cl.ProduceSync(ctx, r).FirstErr()
			c.produced(i, err)
		}
	}()
	for round := 0; round < w.rounds; round++ {
		c.waitAcked(c.ackedCount() + 200)
		fault(t, c, round)
	}
	c.waitAcked(c.ackedCount() + 200)
	close(stop)
	<-produced
	acked := c.acked

	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics("acked"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	brokertest.CheckAckedReadOnce(t, ctx, cons, "acked", acked)
	t.Logf("%d records acknowledged, all read exactly once in order", len(acked))
	c.waitISR(3)
	checkReplicasAgree(t, procs, "acked")
}

// requireNoAppendsOverTheBucket fails t when a broker logged that a leader
// term had appended at offsets the bucket holds other records at: it moves
// its log past them (adoptRemoteEnd), and the records it dropped may not
// show in a soak's checks (a failed produce, or a seq number read back
// from elsewhere).
func requireNoAppendsOverTheBucket(t *testing.T, procs []*brokerProc) {
	t.Helper()
	for _, p := range procs {
		for _, line := range strings.Split(p.earlier.String()+p.stderr.String(), "\n") {
			if strings.Contains(line, "records the term appended are lost") {
				t.Errorf("broker %d: %.400s", p.id, line)
			}
		}
	}
}

// keepBrokerLogs writes the whole stderr of every process of each broker
// to SHALE_TEST_LOG_DIR/TEST/broker-ID.log, when that is set
// (SHALE_TEST_LOG_LEVEL sets the brokers' --log-level).
func keepBrokerLogs(t *testing.T, procs []*brokerProc) {
	dir := os.Getenv("SHALE_TEST_LOG_DIR")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	for _, p := range procs {
		name := filepath.Join(dir, fmt.Sprintf("broker-%d.log", p.id))
		if err := os.WriteFile(name, []byte(p.earlier.String()+p.stderr.String()), 0o644); err != nil {
			t.Log(err)
			continue
		}
		t.Logf("broker %d's whole log: %s", p.id, name)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestDevThreeBrokersReplicate: `shale dev --brokers 3` runs a replicated
// cluster in one process: metadata shows three brokers, an auto-created
// topic has three in-sync replicas, and acks=all production works.
func TestDevThreeBrokersReplicate(t *testing.T) {
	p := startDev(t, "", "SHALE_DEV_BROKERS=3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := p.client(kgo.DefaultProduceTopic("three"), kgo.AllowAutoTopicCreation())
	adm := kadm.NewClient(cl)
	for {
		ids, err := brokertest.ListedBrokers(cl)
		if err == nil && len(ids) == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("three brokers never registered: %v %v\n%s", ids, err, tail(p.stderr.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 20; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for {
		td, err := adm.ListTopics(ctx, "three")
		if err == nil {
			if ps := td["three"].Partitions; len(ps) == 1 && len(ps[0].Replicas) == 3 && len(ps[0].ISR) == 3 {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("topic never had three in-sync replicas: %v %v", td, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `shale broker` too: a second SIGTERM ends a shutdown held by a client.
func TestBrokerSecondSIGTERMExitsAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	p := &brokerProc{t: t, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr}
	startClusterBroker(t, p)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	secondSIGTERMExitsAtOnce(t, p.cmd, p.stderr, p.exited, p.kafkaAddr)
}

// queuedProduce is a Produce request (v7, acks as given, one record of
// value to partition 0 of topic) written to a connection to addr: to a
// paused broker it waits in the socket until the broker resumes.
type queuedProduce struct {
	t  *testing.T
	nc net.Conn
}

func queueProduce(t *testing.T, addr, topic string, acks int16, value string) *queuedProduce {
	t.Helper()
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: recordbatch.NoProducerID, ProducerEpoch: recordbatch.NoProducerEpoch,
		BaseSequence: recordbatch.NoSequence, BaseTimestamp: time.Now().UnixMilli()}, []recordbatch.Record{{Value: []byte(value)}})
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Version = 7
	req.Acks = acks
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("zombie-probe")).AppendRequest(nil, req, 1)); err != nil {
		t.Fatal(err)
	}
	return &queuedProduce{t: t, nc: nc}
}

// errorCode reads the answer: the partition's error code, or -1 with no
// answer (the connection closed) within 30 s.
func (q *queuedProduce) errorCode() int16 {
	q.t.Helper()
	q.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(q.nc, size[:]); err != nil {
		return -1
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(q.nc, body); err != nil || len(body) < 4 {
		return -1
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 7
	if err := resp.ReadFrom(body[4:]); err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		q.t.Fatalf("produce answer %v: %+v", err, resp)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}
