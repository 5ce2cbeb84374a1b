package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/objectstore/miniotest"
)

// TestTieredClusterSoak: three `shale broker` processes on MinIO, an RF=3
// topic with min.insync.replicas=2 whose uploaded segments leave the
// disks (tieredKillWorkload), under an idempotent acks=all producer. Round
// after round, one fault drawn at random, healed before the next: the
// leader or a follower killed with SIGKILL or stopped with SIGTERM and
// started again, the leader frozen with SIGSTOP past its lease, the log
// disk of a follower, of the leader or of the controller lost while it
// is down (the leader's and the controller's back at once, before or
// while another is elected), a machine crash of the leader (back at once)
// or of a follower, or of every broker at once (one of them with its whole
// log, back at once or past the lease, in a random order), a replica
// (the leader's or a follower's) moved out of the partition and back in
// by two reassignments, etcd stopped past the brokers' lease (alone, or with
// the leader killed meanwhile), MinIO killed or frozen for a few seconds
// while produce goes on, or MinIO and the leader lost together, the
// broker restarting before the store returns; and network partitions (each
// broker behind its fault proxies, brokerProc.behindProxies): the leader,
// a follower or the controller cut from etcd past its lease (still
// reaching the object store, its clients and the other brokers), the
// leader cut from etcd and from the other brokers, the leader and a
// follower cut from etcd and the leader from the other follower too, a
// follower cut from the leader past replica.lag.time.max. Produce must go
// on through each (records acknowledged during the fault, where two
// replicas are up and reach etcd).
// Throughout, a consumer replays
// the partition from offset 0 again and again, its first records from
// the bucket alone: each pass must see contiguous offsets and the
// producer's records in order, and never stall. At the end every
// acknowledged record reads back once, in order, from offset 0, and the
// replicas' logs agree.
//
// SHALE_CLUSTER_SOAK_SEED sets the seed (default: the clock's),
// SHALE_CLUSTER_SOAK_ROUNDS the rounds (default 6), and
// SHALE_CLUSTER_SOAK_ONLY one kind of fault (its index in
// clusterSoakFaults).
func TestTieredClusterSoak(t *testing.T) {
	rng, rounds, only := soakSettings(t, "SHALE_CLUSTER_SOAK", 6, len(clusterSoakFaults))
	srv := miniotest.Start(t)
	w := tieredKillWorkload(srv, "cluster-soak")
	w.rounds = rounds
	tiered := w.setup
	w.setup = func(p *brokerProc) {
		tiered(p)
		p.behindProxies(t)
	}
	// A round takes 1 to 13 s (a frozen leader's lease runs out, and it
	// rejoins).
	w.timeout = time.Minute + time.Duration(rounds)*20*time.Second
	var replay *soakReplayer
	failoverWorkloadOn(t, w, func(t *testing.T, c *testCluster, round int) {
		if round == 0 {
			replay = startSoakReplayer(c)
		}
		if round == rounds-1 {
			defer func() {
				passes, err := replay.stop()
				if err != nil {
					t.Error(err)
				}
				t.Logf("the replaying consumer read the partition from offset 0 %d times", passes)
			}()
		}
		f := clusterSoakFaults[rng.IntN(len(clusterSoakFaults))]
		if only >= 0 {
			f = clusterSoakFaults[only]
		}
		start := time.Now()
		before := c.ackedCount()
		f.run(t, c, srv, rng)
		t.Logf("round %d: %s, healed in %s; %d records acknowledged meanwhile, at most %s apart",
			round, f.name, time.Since(start).Round(time.Millisecond), c.ackedCount()-before, c.longestWait(start, time.Now()).Round(time.Millisecond))
	})
}

// soakSettings reads a randomized soak's settings from the environment:
// PREFIX_SEED the seed (default: the clock's), PREFIX_ROUNDS the rounds
// (default rounds) and PREFIX_ONLY one kind of fault, by its index among
// kinds (-1: all). It logs them, and returns the seed's random source.
func soakSettings(t *testing.T, prefix string, rounds, kinds int) (rng *rand.Rand, n, only int) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(prefix + "_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	n = rounds
	if v := os.Getenv(prefix + "_ROUNDS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	only = -1
	if v := os.Getenv(prefix + "_ONLY"); v != "" {
		only, _ = strconv.Atoi(v)
		only = min(max(only, 0), kinds-1)
	}
	t.Logf("seed %d (%s_SEED), %d rounds", seed, prefix, n)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), n, only
}

// clusterSoakFault is one kind of fault of TestTieredClusterSoak: run
// applies it and heals it.
type clusterSoakFault struct {
	name string
	run  func(t *testing.T, c *testCluster, srv *miniotest.Server, rng *rand.Rand)
}

var clusterSoakFaults = []clusterSoakFault{
	{"SIGKILL of the leader", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, l)
	}},
	{"SIGKILL of a follower", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		f := soakFollower(c, rng)
		c.procs[f].kill(syscall.SIGKILL)
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, f)
	}},
	{"SIGTERM of a broker", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		b := int32(rng.IntN(len(c.procs)))
		c.procs[b].kill(syscall.SIGTERM)
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, b)
	}},
	{"SIGSTOP of the leader past its lease", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].cmd.Process.Signal(syscall.SIGSTOP)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.procs[l].cmd.Process.Signal(syscall.SIGCONT)
		c.waitISR(3)
	}},
	{"the log disk of a follower lost", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		f := soakFollower(c, rng)
		c.procs[f].kill(syscall.SIGKILL)
		loseLogDisk(t, c.procs[f])
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, f)
	}},
	{"the log disk of the leader lost", loseLeaderDisk(false)},
	{"the log disk of the leader lost, the broker restarted at once", loseLeaderDisk(true)},
	{"the log disk of the controller lost, the broker restarted at once", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		k := c.controller()
		t.Logf("the controller is broker %d, the leader broker %d", k, c.leader())
		c.procs[k].kill(syscall.SIGKILL)
		loseLogDisk(t, c.procs[k])
		restartSoakBroker(t, c, k)
	}},
	{"MinIO killed", func(t *testing.T, c *testCluster, srv *miniotest.Server, rng *rand.Rand) {
		srv.Kill()
		c.waitAcked(c.ackedCount() + 50)
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
	}},
	{"MinIO frozen", func(t *testing.T, c *testCluster, srv *miniotest.Server, rng *rand.Rand) {
		srv.Pause()
		c.waitAcked(c.ackedCount() + 50)
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		srv.Resume()
	}},
	{"MinIO frozen and the leader killed, restarted before the store returns", func(t *testing.T, c *testCluster, srv *miniotest.Server, _ *rand.Rand) {
		srv.Pause()
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, l)
		srv.Resume()
	}},
	{"a machine crash of the leader (its unflushed tail lost), back at once", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		loseUnflushedTail(t, c.procs[l], "acked-0")
		restartSoakBroker(t, c, l)
	}},
	{"a machine crash of a follower (its unflushed tail lost)", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		f := soakFollower(c, rng)
		c.procs[f].kill(syscall.SIGKILL)
		loseUnflushedTail(t, c.procs[f], "acked-0")
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, f)
	}},
	{"every broker's machine crashed at once, one keeping its whole log and the others a random share of its tail, back at once or past the lease, together or one after another in a random order", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		for _, p := range c.procs {
			p.kill(syscall.SIGKILL)
		}
		if rng.IntN(2) == 0 {
			c.waitUnregistered()
		}
		// One of them had flushed everything (else records every
		// replica lost are gone, which nothing can help).
		whole := rng.IntN(len(c.procs))
		for i, p := range c.procs {
			keep := rng.Float64()
			if i == whole {
				keep = 1
			}
			crashMachine(t, p, "acked-0", keep)
		}
		if rng.IntN(2) == 0 {
			startClusterBrokers(t, c.procs...) // the machines booted together
		} else {
			for _, i := range rng.Perm(len(c.procs)) {
				startClusterBroker(t, c.procs[i])
			}
		}
		c.waitISR(3)
		c.waitAcked(c.ackedCount() + 50)
	}},
	{"a replica moved out of the partition and back in by two reassignments (the leader's or a follower's), produce going on", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		replicas := replicasOf(t, c.ctx, c.adm, "acked", 0)
		out := replicas[rng.IntN(len(replicas))]
		t.Logf("moving broker %d out of %v (the leader is broker %d)", out, replicas, c.leader())
		rest := slices.DeleteFunc(slices.Clone(replicas), func(id int32) bool { return id == out })
		reassign(t, c.ctx, c.adm, "acked", 0, rest)
		c.waitAcked(c.ackedCount() + 50)
		reassign(t, c.ctx, c.adm, "acked", 0, append(rest, out))
		c.waitISR(3)
	}},
	{"etcd stopped past the brokers' lease", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		c.etcd.stop()
		c.waitAcked(c.ackedCount() + 50)
		time.Sleep(etcdDown + time.Duration(rng.IntN(2000))*time.Millisecond)
		c.etcd.start(c.ctx)
		c.requireWhole(time.Now())
		c.waitISR(3)
	}},
	{"etcd stopped and the leader killed meanwhile", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.etcd.stop()
		c.waitAcked(c.ackedCount() + 20)
		c.procs[l].kill(syscall.SIGKILL)
		time.Sleep(etcdDown)
		c.etcd.start(c.ctx)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		restartSoakBroker(t, c, l)
	}},
	{"the leader cut from etcd past its lease (its clients, the other brokers and the object store still reach it)", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].etcdLink.Cut()
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.procs[l].etcdLink.Heal()
		c.waitISR(3)
	}},
	{"the leader cut from etcd and from the other brokers past its lease (its clients and the object store still reach it)", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].etcdLink.Cut()
		cutFromPeers(c.procs, l)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		c.procs[l].etcdLink.Heal()
		healFromPeers(c.procs, l)
		c.waitISR(3)
	}},
	{"the leader and a follower cut from etcd past their lease, the leader from the other follower too (the first still reaches it)", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		// The controller drops both from the ISR and elects the other
		// follower, alone in it: acks=all waits (min.insync.replicas=2)
		// until the links heal, and the old leader, whose follower
		// still names it leader, acknowledges nothing meanwhile.
		l, f := c.leader(), soakFollower(c, rng)
		other := thirdBroker(l, f)
		c.procs[l].etcdLink.Cut()
		c.procs[f].etcdLink.Cut()
		cutBetween(c.procs, l, other)
		c.leaderOtherThan(l)
		time.Sleep(time.Second)
		c.procs[l].etcdLink.Heal()
		c.procs[f].etcdLink.Heal()
		healBetween(c.procs, l, other)
		c.waitAcked(c.ackedCount() + 50)
		c.waitISR(3)
	}},
	{"a follower cut from etcd past its lease", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		f := soakFollower(c, rng)
		c.procs[f].etcdLink.Cut()
		c.waitAcked(c.ackedCount() + 50)
		time.Sleep(3 * time.Second) // past the lease (--session-ttl 2s)
		c.waitAcked(c.ackedCount() + 20)
		c.procs[f].etcdLink.Heal()
		c.waitISR(3)
	}},
	{"a follower cut from the leader past replica.lag.time.max", func(t *testing.T, c *testCluster, _ *miniotest.Server, rng *rand.Rand) {
		l, f := c.leader(), soakFollower(c, rng)
		c.procs[l].listener.CutClient(peerClientID(f))
		c.waitISR(2)
		c.waitAcked(c.ackedCount() + 50)
		c.procs[l].listener.HealClient(peerClientID(f))
		c.waitISR(3)
	}},
	{"the controller cut from etcd past its lease", func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		k := c.controller()
		t.Logf("the controller is broker %d, the leader broker %d", k, c.leader())
		c.procs[k].etcdLink.Cut()
		for c.controller() == k {
			time.Sleep(50 * time.Millisecond)
		}
		c.waitAcked(c.ackedCount() + 50)
		c.procs[k].etcdLink.Heal()
		c.waitISR(3)
	}},
}

// loseLogDisk empties a stopped broker's log directory, as a replaced
// disk would (its meta.properties, which lives there, goes too).
func loseLogDisk(t *testing.T, p *brokerProc) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(p.dataDir, "log")); err != nil {
		t.Fatal(err)
	}
}

// loseLeaderDisk is the fault that kills the leader and loses its log
// disk, the broker restarted at once, or once another leads and produce
// goes on.
func loseLeaderDisk(atOnce bool) func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
	return func(t *testing.T, c *testCluster, _ *miniotest.Server, _ *rand.Rand) {
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		loseLogDisk(t, c.procs[l])
		if !atOnce {
			c.leaderOtherThan(l)
			c.waitAcked(c.ackedCount() + 50)
		}
		restartSoakBroker(t, c, l)
	}
}

// replicasOf returns the replicas of partition p of topic, as its leader
// lists them.
func replicasOf(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, p int32) []int32 {
	t.Helper()
	for {
		td, err := adm.ListTopics(ctx, topic)
		if err == nil && td[topic].Err == nil && len(td[topic].Partitions[p].Replicas) > 0 {
			return td[topic].Partitions[p].Replicas
		}
		if ctx.Err() != nil {
			t.Fatalf("no replicas listed for %s-%d", topic, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reassign moves partition p of topic to the replicas given
// (AlterPartitionReassignments) and waits until the move is done: no
// reassignment in progress, and those replicas listed.
func reassign(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, p int32, replicas []int32) {
	t.Helper()
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign(topic, p, replicas)
	for {
		resp, err := adm.AlterPartitionAssignments(ctx, req)
		if err == nil {
			err = resp[topic][p].Err
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("reassigning %s-%d to %v: %v", topic, p, replicas, err)
		}
		t.Logf("reassigning %s-%d to %v: %v; retrying", topic, p, replicas, err)
		time.Sleep(200 * time.Millisecond)
	}
	var set kadm.TopicsSet
	set.Add(topic, p)
	for {
		moving, err := adm.ListPartitionReassignments(ctx, set)
		_, inProgress := moving[topic][p]
		if err == nil && !inProgress && slices.Equal(replicasOf(t, ctx, adm, topic, p), replicas) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the reassignment of %s-%d to %v never ended (listed %v, %v)", topic, p, replicas, moving, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// controller returns the broker a broker's metadata names the cluster's
// controller, asked anew: kadm's BrokerMetadata answers from the client's
// cache, which a client that consumes and produces nothing never renews,
// while a request naming a topic is sent unless the cache is younger than
// MetadataMinAge.
func (c *testCluster) controller() int32 {
	c.t.Helper()
	for {
		m, err := c.adm.Metadata(c.ctx, "acked")
		if err == nil && m.Controller >= 0 {
			return m.Controller
		}
		if c.ctx.Err() != nil {
			c.t.Fatal("no controller")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// soakFollower picks a broker that does not lead.
func soakFollower(c *testCluster, rng *rand.Rand) int32 {
	n := int32(len(c.procs))
	return (c.leader() + 1 + int32(rng.IntN(int(n)-1))) % n
}

// restartSoakBroker starts broker id again and waits until the ISR holds
// every replica and produce goes on.
func restartSoakBroker(t *testing.T, c *testCluster, id int32) {
	t.Helper()
	startClusterBroker(t, c.procs[id])
	c.waitISR(3)
	c.waitAcked(c.ackedCount() + 20)
}

// soakReplayer reads partition 0 of "acked" from offset 0 to about the
// records acknowledged when the pass began, pass after pass, each with a
// new client.
type soakReplayer struct {
	quit, done chan struct{}
	passes     int
	err        error
}

func startSoakReplayer(c *testCluster) *soakReplayer {
	r := &soakReplayer{quit: make(chan struct{}), done: make(chan struct{})}
	var seeds []string
	for _, p := range c.procs {
		seeds = append(seeds, p.kafkaAddr)
	}
	go func() {
		defer close(r.done)
		for r.err == nil {
			select {
			case <-r.quit:
				return
			default:
			}
			r.err = r.pass(c, seeds, c.ackedCount())
			if r.err == nil {
				r.passes++
			}
		}
	}()
	return r
}

// pass reads offsets 0 to n-1: contiguous, the producer's values
// increasing. It gives up quietly when told to stop.
func (r *soakReplayer) pass(c *testCluster, seeds []string, n int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics("acked"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(256<<10))
	if err != nil {
		return err
	}
	defer cl.Close()
	next, last := int64(0), -1
	progress := time.Now()
	for next < int64(n) {
		select {
		case <-r.quit:
			return nil
		default:
		}
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		for _, rec := range fs.Records() {
			if rec.Offset != next {
				return fmt.Errorf("replay pass %d: offset %d after %d", r.passes, rec.Offset, next-1)
			}
			v, err := strconv.Atoi(string(rec.Value))
			if err != nil || v <= last {
				return fmt.Errorf("replay pass %d: offset %d holds %q after record %d", r.passes, rec.Offset, rec.Value, last)
			}
			next, last = next+1, v
			progress = time.Now()
		}
		if time.Since(progress) > time.Minute {
			return fmt.Errorf("replay pass %d: no record for a minute at offset %d", r.passes, next)
		}
	}
	return nil
}

// stop ends the replays and returns the passes completed and the first
// fault seen.
func (r *soakReplayer) stop() (int, error) {
	close(r.quit)
	<-r.done
	return r.passes, r.err
}
