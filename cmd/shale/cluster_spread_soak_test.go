package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestSpreadClusterSoak: three `shale broker` processes and a topic of
// six partitions, three replicas each and min.insync.replicas=2, whose
// leaders the cluster spreads over the brokers, under an idempotent
// acks=all producer that writes to every partition at once with several
// requests in flight to each broker (franz-go's defaults: up to five,
// batches of many records). The other cluster soaks produce one record
// at a time to one partition, so a fault there hits a leader or a
// follower; here it hits a broker, which leads some partitions and
// follows others, with batches in flight on both sides: its fetch
// sessions with each leader, the controller moving several leaderships
// in one round, the producer's sequences retried to new leaders.
//
// Round after round one broker, drawn at random, is hit by one fault,
// also drawn: SIGKILL, SIGKILL and back at once, SIGTERM (a controlled
// shutdown), SIGSTOP past its lease, a machine crash (the unflushed tails
// of its logs lost; back at once, or once produce has gone on without
// it), its log disk lost, or a network partition (each broker behind its
// fault proxies, brokerProc.behindProxies): cut from etcd past its lease,
// from etcd and the other brokers, or from the other brokers alone past
// replica.lag.time.max; SIGKILL, and a second broker killed while it is
// down, both back in turn; etcd stopped past the brokers' lease, alone or
// with the broker killed meanwhile. Other rounds move every replica the
// broker holds out of its partition in one reassignment and back in
// another (once with a second broker SIGKILLed as they catch up), or add
// a partition to the topic (CreatePartitions, the cluster placing its
// replicas; once with the broker SIGKILLed as it is created): once the
// producer's client knows the partition, it writes there too, and the
// reader finds it. Produce must go on to every partition while one
// broker is out (two replicas are up), but when it is cut from its peers
// alone: then it stays the leader of its partitions, their ISR shrinks
// to it, and their acks=all produce waits until the links heal.
// Once it is back, the round waits until every partition's ISR holds
// three replicas again, its preferred replica leads it (so that the next
// round finds the leaders spread), and produce has gone on to every
// partition. At the end no record has failed (the producer retries
// without bound, and every fault leaves a broker to retry against, or
// heals), every acknowledged record reads back once, at the offset its
// acknowledgement named, each partition's records in the order they were
// produced, no record twice, and the replicas' logs of every partition
// agree.
//
// The subtest "tiered" does the same on MinIO, with small segments that
// leave the disks once uploaded; there every partition is also read from
// offset 0, from the bucket, at the end. Its topic stores batches with
// zstd (compression.type), so every batch the producer sends (snappy, as
// franz-go compresses by default) is rewritten by its leader, through
// leader changes and the producer's retries to new leaders; and between
// rounds its uploads are stopped and resumed at random
// (remote.log.copy.disable).
//
// SHALE_SPREAD_SOAK_SEED sets the seed (default: the clock's),
// SHALE_SPREAD_SOAK_ROUNDS the rounds (default 3), and
// SHALE_SPREAD_SOAK_ONLY one kind of fault (its index in
// spreadSoakFaults).
func TestSpreadClusterSoak(t *testing.T) {
	// The subtests draw from one source, one after the other.
	rng, rounds, only := soakSettings(t, "SHALE_SPREAD_SOAK", 3, len(spreadSoakFaults))
	for _, tiered := range []bool{false, true} {
		name := "local"
		if tiered {
			name = "tiered"
		}
		t.Run(name, func(t *testing.T) { spreadSoak(t, rng, rounds, only, tiered) })
	}
}

const (
	spreadTopic = "spread"
	// spreadPartitions is the topic's partitions at first; rounds that
	// add partitions take it up to spreadMaxPartitions.
	spreadPartitions    = 6
	spreadMaxPartitions = 10
)

// spreadCluster is the soak's cluster and what its producer was told.
type spreadCluster struct {
	t     *testing.T
	ctx   context.Context
	procs []*brokerProc
	etcd  *testEtcd
	seeds []string

	mu sync.Mutex
	// parts is how many partitions the producer writes to: the topic's,
	// once the producer's client knows them all.
	parts int
	// acked maps each partition's acknowledged sequence numbers to the
	// offsets their acknowledgements named; failed describes the records
	// whose produce failed (none should).
	acked  [spreadMaxPartitions]map[int]int64
	failed []string
}

func spreadSoak(t *testing.T, rng *rand.Rand, rounds, only int, tiered bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+time.Duration(rounds)*time.Minute)
	defer cancel()
	configs := map[string]*string{"min.insync.replicas": ptr("2"), "segment.bytes": ptr("32768")}
	var (
		tieredSetup func(p *brokerProc)
		storeURL    string
	)
	if tiered {
		srv := miniotest.Start(t)
		for _, kv := range miniotest.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v) // for waitDescribed's reads of the bucket
		}
		tieredSetup, storeURL = tieredKillWorkload(srv, "spread-soak").setup, srv.URL("spread-soak", "")
		configs["local.retention.bytes"] = ptr("65536")
		configs["file.delete.delay.ms"] = ptr("1")
		configs["compression.type"] = ptr("zstd")
	}
	setup := func(p *brokerProc) {
		if tieredSetup != nil {
			tieredSetup(p)
		}
		// Leaderships go back to their preferred replicas soon after
		// a broker is back, so that every round finds them spread.
		p.extra = append(p.extra, "--leader-imbalance-check-interval", "1s")
		p.behindProxies(t)
	}
	etcd := startRestartableEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcd.addr, 3, setup)
	c := &spreadCluster{t: t, ctx: ctx, procs: procs, etcd: etcd, seeds: seeds, parts: spreadPartitions}
	for p := range c.acked {
		c.acked[p] = map[int]int64{}
	}

	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopic(ctx, spreadPartitions, 3, configs, spreadTopic); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("the topic is created")
	leaders, _ := c.leaders()
	t.Logf("leaders: %v", leaders)

	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(spreadTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(2*time.Millisecond),
		kgo.RequestTimeoutOverhead(3*time.Second), kgo.ProduceRequestTimeout(3*time.Second),
		kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	stop, produced := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(produced)
		c.produce(prod, stop)
	}()
	reader := startSpreadReader(c, seeds)

	// The tiered half stops and resumes uploads now and then
	// (remote.log.copy.disable, KIP-950) between rounds, so that faults
	// find them either way: while stopped, the local logs keep every
	// record (no local retention but the total's, which keeps all).
	copyOff := false
	toggleCopy := func() {
		copyOff = !copyOff
		ops := []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "remote.log.copy.disable", Value: ptr("true")}, {Op: kadm.DeleteConfig, Name: "local.retention.bytes"}}
		if !copyOff {
			ops = []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "remote.log.copy.disable"}, {Op: kadm.SetConfig, Name: "local.retention.bytes", Value: ptr("65536")}}
		}
		if err := c.admin(func(ctx context.Context, adm *kadm.Client) error {
			rs, err := adm.AlterTopicConfigs(ctx, ops, spreadTopic)
			if err == nil {
				err = rs[0].Err
			}
			return err
		}); err != nil {
			t.Fatalf("setting remote.log.copy.disable=%v: %v", copyOff, err)
		}
		t.Logf("remote.log.copy.disable=%v", copyOff)
	}

	for round := range rounds {
		if round == 0 {
			// Segments have rolled (about 130 bytes a record).
			c.waitProgress("before the first round", 400, nil)
		}
		f := spreadSoakFaults[rng.IntN(len(spreadSoakFaults))]
		if only >= 0 {
			f = spreadSoakFaults[only]
		}
		b := int32(rng.IntN(len(procs)))
		leaders, epochs := c.leaders()
		start, before := time.Now(), c.ackedTotal()
		f.run(c, b, rng)
		c.waitSettled("the broker is back")
		c.produceToAll(prod)
		c.waitProgress("after the round", 30, nil)
		now, epochsNow := c.leaders()
		t.Logf("round %d: %s of broker %d (leaders were %v), healed in %s; %d records acknowledged meanwhile; leaders now %v, %d leader elections",
			round, f.name, b, leaders, time.Since(start).Round(time.Millisecond), c.ackedTotal()-before, now, epochsNow-epochs)
		if tiered && rng.IntN(2) == 0 {
			toggleCopy()
		}
	}
	if copyOff {
		toggleCopy() // the first records leave the local disks again
	}
	if tiered {
		c.waitShed()
		c.waitDescribed(storeURL)
		// The leaders rewrote the producer's snappy batches with the
		// topic's zstd (the brokers' counters start again at a restart:
		// the leaders since the last round have).
		var rewritten float64
		for _, p := range procs {
			rewritten += scrape(t, p.httpAddr)[`shale_produce_recompressed_bytes_total{side="received"}`]
		}
		if rewritten == 0 {
			t.Fatal("no batch was rewritten with the topic's compression.type")
		}
	}
	close(stop)
	<-produced
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	log := c.checkReadOnce(seeds)
	reader.check(t, log)
	// The first check kills the brokers (production has stopped).
	for p := range c.parts {
		checkReplicasAgreeBelow(t, procs, fmt.Sprintf("%s-%d", spreadTopic, p), math.MaxInt64)
	}
}

// spreadSoakFaults are the faults of TestSpreadClusterSoak, each applied
// to one broker and healed.
var spreadSoakFaults = []struct {
	name string
	run  func(c *spreadCluster, b int32, rng *rand.Rand)
}{
	{"SIGKILL", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].kill(syscall.SIGKILL)
		c.waitProgress("broker down", 30, &b)
		startClusterBroker(c.t, c.procs[b])
	}},
	{"SIGKILL, back at once", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].kill(syscall.SIGKILL)
		startClusterBroker(c.t, c.procs[b])
	}},
	{"SIGTERM", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].kill(syscall.SIGTERM)
		c.waitProgress("broker shut down", 30, &b)
		startClusterBroker(c.t, c.procs[b])
	}},
	{"SIGSTOP past its lease", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].cmd.Process.Signal(syscall.SIGSTOP)
		c.waitProgress("broker frozen", 30, &b)
		c.procs[b].cmd.Process.Signal(syscall.SIGCONT)
	}},
	{"a machine crash (the unflushed tails of its logs lost)", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].kill(syscall.SIGKILL)
		loseUnflushedTail(c.t, c.procs[b], spreadTopic+"-*")
		if rng.IntN(2) == 0 {
			// Back once the others have moved on without it, or at once.
			c.waitProgress("machine down", 30, &b)
		}
		startClusterBroker(c.t, c.procs[b])
	}},
	{"its log disk lost", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].kill(syscall.SIGKILL)
		loseLogDisk(c.t, c.procs[b])
		c.waitProgress("disk lost", 30, &b)
		startClusterBroker(c.t, c.procs[b])
	}},
	{"SIGKILL, and of a second broker while it is down; both back, in turn", func(c *spreadCluster, b int32, rng *rand.Rand) {
		// With one broker left, every ISR shrinks to it and acks=all
		// waits (min.insync.replicas=2) until another is back in sync.
		n := int32(len(c.procs))
		second := (b + 1 + int32(rng.IntN(int(n)-1))) % n
		c.procs[b].kill(syscall.SIGKILL)
		c.waitProgress("broker down", 30, &b)
		c.procs[second].kill(syscall.SIGKILL)
		c.t.Logf("broker %d killed too", second)
		first, then := b, second
		if rng.IntN(2) == 0 {
			first, then = second, b
		}
		startClusterBroker(c.t, c.procs[first])
		c.waitProgress("one broker back", 30, nil)
		startClusterBroker(c.t, c.procs[then])
	}},
	{"etcd stopped past the brokers' lease (the broker drawn is left alone)", func(c *spreadCluster, b int32, rng *rand.Rand) {
		// The leaders go on leading without it; once it is back, a
		// broker whose lease lapsed meanwhile registers again.
		c.etcd.stop()
		c.waitProgress("etcd down", 30, nil)
		time.Sleep(etcdDown + time.Duration(rng.IntN(2000))*time.Millisecond)
		c.etcd.start(c.ctx)
	}},
	{"SIGKILL while etcd is stopped past the brokers' lease", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.etcd.stop()
		c.waitProgress("etcd down", 30, nil)
		c.procs[b].kill(syscall.SIGKILL)
		time.Sleep(etcdDown)
		c.etcd.start(c.ctx)
		c.waitProgress("etcd back, broker down", 30, &b)
		startClusterBroker(c.t, c.procs[b])
	}},
	{"cut from etcd past its lease (its clients and the other brokers still reach it)", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].etcdLink.Cut()
		c.waitProgress("cut from etcd", 30, &b)
		c.procs[b].etcdLink.Heal()
	}},
	{"cut from etcd and from the other brokers past its lease (its clients still reach it)", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.procs[b].etcdLink.Cut()
		cutFromPeers(c.procs, b)
		c.waitProgress("cut from etcd and its peers", 30, &b)
		c.procs[b].etcdLink.Heal()
		healFromPeers(c.procs, b)
	}},
	{"cut from the other brokers past replica.lag.time.max (it still reaches etcd)", func(c *spreadCluster, b int32, rng *rand.Rand) {
		// It stays the leader of its partitions, their ISR shrinks to
		// it alone, and acks=all waits there (min.insync.replicas=2)
		// until the links heal; the others drop it from theirs and go
		// on.
		cutFromPeers(c.procs, b)
		c.waitRecords("cut from its peers: the ISRs shrunk", func(ps []metadata.Partition) bool {
			return !slices.ContainsFunc(ps, func(p metadata.Partition) bool {
				if p.Leader == b {
					return !slices.Equal(p.ISR, []int32{b})
				}
				return slices.Contains(p.ISR, b)
			})
		})
		healFromPeers(c.procs, b)
	}},
	{"every replica on the broker moved out in one reassignment and back in another", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.moveOutAndBack(b, false, rng)
	}},
	{"every replica on the broker moved out in one reassignment and back in another, a second broker SIGKILLed as they catch up", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.moveOutAndBack(b, true, rng)
	}},
	{"a partition added while producing", func(c *spreadCluster, b int32, rng *rand.Rand) {
		c.addPartition(-1, rng)
	}},
	{"a partition added, and the broker SIGKILLed as it is created", func(c *spreadCluster, b int32, rng *rand.Rand) {
		if !c.addPartition(b, rng) {
			c.waitProgress("broker down", 30, &b)
			startClusterBroker(c.t, c.procs[b])
		}
	}},
}

// addPartition adds a partition to the topic through the Kafka API (the
// cluster places its replicas) and waits until etcd records it. With
// kill set, that broker is SIGKILLed a moment after the request is sent:
// before, while or after the brokers create the partition's logs; if the
// partition was not added then, the broker is started again (three
// replicas need three live brokers) and the request sent again, and
// addPartition says it restarted the broker. A topic that has
// spreadMaxPartitions already gets none (the broker is killed all the
// same).
func (c *spreadCluster) addPartition(kill int32, rng *rand.Rand) (restarted bool) {
	c.t.Helper()
	want := c.partitionCount() + 1
	if want > spreadMaxPartitions {
		c.t.Logf("the topic has %d partitions already: none added", want-1)
		if kill >= 0 {
			c.procs[kill].kill(syscall.SIGKILL)
		}
		return false
	}
	update := func() error {
		return c.admin(func(ctx context.Context, adm *kadm.Client) error {
			rs, err := adm.UpdatePartitions(ctx, want, spreadTopic)
			if err == nil {
				err = rs.Error()
			}
			return err
		})
	}
	answered := make(chan error, 1)
	go func() { answered <- update() }()
	if kill >= 0 {
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		c.procs[kill].kill(syscall.SIGKILL)
	}
	err := <-answered
	// A request cut by the kill may have been applied or not: an admin
	// sends it again (to another broker), and then it may find the
	// partition there.
	for n := c.partitionCount(); n != want; n = c.partitionCount() {
		if kill < 0 || n > want || c.ctx.Err() != nil {
			c.t.Fatalf("partition %d: not added (%d partitions; the request's error: %v)", want-1, n, err)
		}
		if !restarted {
			c.t.Logf("partition %d: not added (the request's error: %v); broker %d started again", want-1, err, kill)
			startClusterBroker(c.t, c.procs[kill])
			restarted = true
		}
		err = update()
		if err != nil {
			c.t.Logf("partition %d: not added yet (the request's error: %v)", want-1, err)
			time.Sleep(200 * time.Millisecond)
		}
	}
	c.t.Logf("partition %d added (the request's error: %v)", want-1, err)
	return restarted
}

// admin calls do with an admin client of its own, within 30 s: franz-go
// sends admin requests to the controller its metadata named, and forgets
// it on a refused dial only, where a broker down behind its fault proxy
// resets the connection the proxy accepted.
func (c *spreadCluster) admin(do func(ctx context.Context, adm *kadm.Client) error) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	return do(ctx, kadm.NewClient(cl))
}

// moveOutAndBack moves every replica broker b holds out of its partition
// in one reassignment (each partition down to two replicas), waits until
// produce has gone on without it, then moves them all back in another,
// to the replicas each partition had, in their order (so that b leads
// again what it led). With kill, another broker is SIGKILLed while b's
// replicas catch up, and started again a moment later: until then the
// partitions it was in have one replica in sync besides the ones still
// catching up, and their acks=all produce waits.
func (c *spreadCluster) moveOutAndBack(b int32, kill bool, rng *rand.Rand) {
	c.t.Helper()
	var before []metadata.Partition
	c.waitRecords("the partitions are read", func(ps []metadata.Partition) bool {
		before = ps
		return true
	})
	out, back := map[int32][]int32{}, map[int32][]int32{}
	for _, p := range before {
		back[p.Index] = p.Replicas
		out[p.Index] = slices.DeleteFunc(slices.Clone(p.Replicas), func(id int32) bool { return id == b })
	}
	c.reassignAll("out of broker "+fmt.Sprint(b), out)
	c.waitReassigned("moved out", out)
	c.waitProgress("moved out", 30, &b)
	c.reassignAll("back into broker "+fmt.Sprint(b), back)
	if kill {
		n := int32(len(c.procs))
		other := (b + 1 + int32(rng.IntN(int(n)-1))) % n
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		c.procs[other].kill(syscall.SIGKILL)
		c.t.Logf("broker %d killed while broker %d's replicas catch up", other, b)
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
		startClusterBroker(c.t, c.procs[other])
	}
	c.waitReassigned("moved back", back)
}

// reassignAll sends one AlterPartitionReassignments request moving the
// topic's partitions to the replicas given, again until it is answered
// without an error.
func (c *spreadCluster) reassignAll(what string, to map[int32][]int32) {
	c.t.Helper()
	for {
		err := c.admin(func(ctx context.Context, adm *kadm.Client) error {
			var req kadm.AlterPartitionAssignmentsReq
			for p, rs := range to {
				req.Assign(spreadTopic, p, rs)
			}
			resp, err := adm.AlterPartitionAssignments(ctx, req)
			if err != nil {
				return err
			}
			for p := range to {
				if err := resp[spreadTopic][p].Err; err != nil {
					return fmt.Errorf("partition %d: %w", p, err)
				}
			}
			return nil
		})
		if err == nil {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("reassigning %s: %v", what, err)
		}
		c.t.Logf("reassigning %s: %v; sent again", what, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReassigned waits until etcd records every partition with the
// replicas given and no reassignment in progress.
func (c *spreadCluster) waitReassigned(what string, to map[int32][]int32) {
	c.t.Helper()
	c.waitRecords(what+": reassignments done", func(ps []metadata.Partition) bool {
		return !slices.ContainsFunc(ps, func(p metadata.Partition) bool {
			return !slices.Equal(p.Replicas, to[p.Index]) || len(p.AddingReplicas) > 0 || len(p.RemovingReplicas) > 0
		})
	})
}

// produceToAll makes the producer write to every partition of the topic,
// once its client knows them: a partition it has not learned of yet
// fails a record sent to it at once.
func (c *spreadCluster) produceToAll(prod *kgo.Client) {
	c.t.Helper()
	n := c.partitionCount()
	c.mu.Lock()
	parts := c.parts
	c.mu.Unlock()
	if n == parts {
		return
	}
	brokertest.WaitFor(c.t, 30*time.Second, "the producer learns the new partitions", func() (bool, string) {
		prod.ForceMetadataRefresh()
		leader, _, err := prod.PartitionLeader(spreadTopic, int32(n-1))
		return leader >= 0, fmt.Sprintf("partition %d: leader %d, %v", n-1, leader, err)
	})
	c.mu.Lock()
	c.parts = n
	c.mu.Unlock()
}

// produce sends about three records a millisecond, spread over the
// partitions in turn, until stop. Their values are random bytes, which
// the producer's compression keeps whole, so that segments fill.
func (c *spreadCluster) produce(cl *kgo.Client, stop chan struct{}) {
	var next [spreadMaxPartitions]int
	random := rand.NewChaCha8([32]byte{})
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		parts := c.parts
		c.mu.Unlock()
		for j := range 3 {
			p := int32((3*i + j) % parts)
			seq := next[p]
			next[p]++
			value := make([]byte, 100)
			random.Read(value)
			r := &kgo.Record{Partition: p, Key: []byte(fmt.Sprintf("%d-%d", p, seq)), Value: value}
			cl.Produce(c.ctx, r, func(r *kgo.Record, err error) {
				c.mu.Lock()
				defer c.mu.Unlock()
				if err != nil {
					c.failed = append(c.failed, fmt.Sprintf("partition %d: record %d failed: %v", p, seq, err))
				} else {
					c.acked[p][seq] = r.Offset
				}
			})
		}
	}
}

func (c *spreadCluster) ackedTotal() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.acked {
		n += len(a)
	}
	return n
}

// waitProgress waits until every partition has n more records
// acknowledged than now. With down set, it first waits until no
// partition's leader is that broker (read from etcd: a client's
// metadata request sent to a frozen broker waits out its timeout).
func (c *spreadCluster) waitProgress(what string, n int, down *int32) {
	c.t.Helper()
	if down != nil {
		c.waitRecords(what+": leaders moved", func(ps []metadata.Partition) bool {
			return !slices.ContainsFunc(ps, func(p metadata.Partition) bool { return p.Leader == *down })
		})
	}
	c.mu.Lock()
	want := make([]int, c.parts)
	for p := range want {
		want[p] = len(c.acked[p]) + n
	}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var short []string
		for p := range want {
			if got := len(c.acked[p]); got < want[p] {
				short = append(short, fmt.Sprintf("%d: %d of %d", p, got, want[p]))
			}
		}
		c.mu.Unlock()
		if len(short) == 0 {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("%s: produce stalled (partition: acknowledged of wanted) %s", what, strings.Join(short, ", "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitShed waits until no broker holds any partition's first records on
// its disk (they were uploaded and local retention removed them), so that
// a read from offset 0 starts in the bucket.
func (c *spreadCluster) waitShed() {
	c.t.Helper()
	for {
		var held []string
		for p := range c.partitionCount() {
			for i, start := range localStarts(c.procs, fmt.Sprintf("%s-%d", spreadTopic, p)) {
				if start == 0 {
					held = append(held, fmt.Sprintf("%d on broker %d", p, i))
				}
			}
		}
		if len(held) == 0 {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("local disks still hold offset 0 of partitions %s", strings.Join(held, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDescribed waits until the topic's descriptor in the bucket counts
// every partition the topic has: the bucket describes itself, for a
// reader or a restore from it alone, partitions added included.
func (c *spreadCluster) waitDescribed(storeURL string) {
	c.t.Helper()
	bucket, err := objectstore.Open(c.ctx, storeURL, objectstore.OpenOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	defer bucket.Close()
	want := c.partitionCount()
	var got []*tiering.TopicDescriptor
	for {
		got, err = tiering.ListTopics(c.ctx, bucket, tiering.Layout{})
		if err == nil && len(got) == 1 && got[0].Name == spreadTopic && int(got[0].Partitions) == want {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("the bucket's topics %+v (%v), want %s with %d partitions", got, err, spreadTopic, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSettled waits until every partition has three replicas in its ISR
// and is led by its preferred replica, and has been for settleFor: a
// broker that comes back may only then register again (a lapsed lease
// seen late; after an etcd outage, every broker), and the controller
// then moves its leaderships off it and back, as it does for a restart.
func (c *spreadCluster) waitSettled(what string) {
	c.t.Helper()
	const settleFor = 3 * time.Second
	var since time.Time
	c.waitRecords(what+": every ISR whole, every leader preferred", func(ps []metadata.Partition) bool {
		if slices.ContainsFunc(ps, func(p metadata.Partition) bool { return len(p.ISR) != 3 || p.Leader != p.Replicas[0] }) {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= settleFor
	})
}

// waitRecords waits until the partitions' etcd records satisfy ok.
func (c *spreadCluster) waitRecords(what string, ok func([]metadata.Partition) bool) {
	c.t.Helper()
	var ps []metadata.Partition
	for {
		ps = c.records()
		if ps != nil && ok(ps) {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("%s: never; the partitions are %+v", what, ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// records reads the partitions' etcd records (nil on an error): as many
// as the topic's record counts. An addition cut short may have left
// records past the count, which no broker serves (the next addition
// deletes them).
func (c *spreadCluster) records() []metadata.Partition {
	cli := c.etcd.client() // the running server's (etcd may have restarted)
	resp, err := cli.Get(c.ctx, "/kill/topics/"+spreadTopic)
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	var topic metadata.Topic
	if err := json.Unmarshal(resp.Kvs[0].Value, &topic); err != nil {
		c.t.Fatalf("the topic's record %q: %v", resp.Kvs[0].Value, err)
	}
	store := metadata.NewStore(cli, "/kill/")
	var ps []metadata.Partition
	for i := range topic.PartitionCount {
		p, err := store.Partition(c.ctx, spreadTopic, i)
		if err != nil {
			return nil
		}
		ps = append(ps, p)
	}
	return ps
}

// partitionCount reads how many partitions etcd records for the topic.
func (c *spreadCluster) partitionCount() int {
	var n int
	c.waitRecords("the partitions are read", func(ps []metadata.Partition) bool {
		n = len(ps)
		return true
	})
	return n
}

// leaders lists each partition's leader, and sums their leader epochs.
func (c *spreadCluster) leaders() (ls []int32, epochs int) {
	for _, p := range c.records() {
		ls = append(ls, p.Leader)
		epochs += int(p.LeaderEpoch)
	}
	return ls, epochs
}

// checkReadOnce reads every partition from offset 0 to its high
// watermark: every acknowledged record must be at the offset its
// acknowledgement named, and each partition's sequence numbers must rise
// (no record twice, none out of order). It returns each partition's keys
// by offset.
func (c *spreadCluster) checkReadOnce(seeds []string) (log [spreadMaxPartitions]map[int64]string) {
	t := c.t
	t.Helper()
	// The producer is flushed: nothing writes acked or failed now.
	c.mu.Lock()
	defer c.mu.Unlock()
	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(spreadTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var ends kadm.ListedOffsets
	brokertest.WaitFor(t, 30*time.Second, "the high watermarks of "+spreadTopic, func() (bool, string) {
		ends, err = kadm.NewClient(cons).ListEndOffsets(c.ctx, spreadTopic)
		if err == nil {
			err = ends.Error()
		}
		if err != nil && !kerr.IsRetriable(err) {
			t.Fatal(err)
		}
		return err == nil, fmt.Sprint(err)
	})
	var total, want int64
	if n := len(ends[spreadTopic]); n != c.parts {
		t.Errorf("the topic has %d partitions, the producer wrote to %d", n, c.parts)
	}
	for _, o := range ends[spreadTopic] {
		want += o.Offset
	}
	var last [spreadMaxPartitions]int
	for p := range log {
		log[p], last[p] = map[int64]string{}, -1
	}
	found := 0
	for total < want {
		fs := cons.PollFetches(c.ctx)
		if c.ctx.Err() != nil {
			t.Fatalf("read %d of %d records", total, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			total++
			var p, seq int
			if _, err := fmt.Sscanf(string(r.Key), "%d-%d", &p, &seq); err != nil || int32(p) != r.Partition {
				t.Errorf("partition %d offset %d: key %q", r.Partition, r.Offset, r.Key)
				return
			}
			log[p][r.Offset] = string(r.Key)
			if seq <= last[p] {
				t.Errorf("partition %d offset %d: record %d after record %d", p, r.Offset, seq, last[p])
			}
			last[p] = seq
			if off, ok := c.acked[p][seq]; ok {
				found++
				if off != r.Offset {
					t.Errorf("partition %d: record %d acknowledged at offset %d is at %d", p, seq, off, r.Offset)
				}
			}
		})
	}
	// Retried without bound, a record fails only on an answer the
	// producer cannot retry: every fault here leaves a broker it can
	// retry against, or heals.
	for _, f := range c.failed {
		t.Error(f)
	}
	acked := 0
	for p := range c.parts {
		acked += len(c.acked[p])
		for seq := range c.acked[p] {
			if seq > last[p] {
				t.Errorf("partition %d: acknowledged record %d (offset %d) is past the end (the last record read is %d)", p, seq, c.acked[p][seq], last[p])
			}
		}
	}
	if found != acked {
		t.Errorf("%d of %d acknowledged records read back", found, acked)
	}
	t.Logf("%d records acknowledged (%d failed), all read back once at their offsets, %d records in the log", acked, len(c.failed), total)
	return log
}

// spreadReader is a consumer that reads every partition from offset 0
// while the faults go on, as an application would: its fetches follow
// the leaders as they move (to the bucket, on the tiered topic, for what
// has left the disks). What it is handed must never change: every
// record it reads must be at the same offset in the log at the end (a
// consumer reads below the high watermark only, and what is below it is
// never lost or replaced), each partition's offsets must follow on from
// the last, without a gap, and the client must never report data loss
// (kgo.ErrDataLoss: the log start or end moved below what it had read)
// or a Kafka error it cannot retry.
type spreadReader struct {
	stop context.CancelFunc
	done chan struct{}
	seen [spreadMaxPartitions]map[int64]string
	next [spreadMaxPartitions]int64
	errs []string
	// transient counts the connection errors the client retried past,
	// lastTransient the last.
	transient     int
	lastTransient error
}

func startSpreadReader(c *spreadCluster, seeds []string) *spreadReader {
	r := &spreadReader{done: make(chan struct{})}
	for p := range r.seen {
		r.seen[p] = map[int64]string{}
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(spreadTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond),
		// New partitions are found by a metadata refresh.
		kgo.MetadataMaxAge(time.Second))
	if err != nil {
		c.t.Fatal(err)
	}
	var ctx context.Context
	ctx, r.stop = context.WithCancel(c.ctx)
	go func() {
		defer close(r.done)
		defer cons.Close()
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(topic string, p int32, err error) {
				var loss *kgo.ErrDataLoss
				var ke *kerr.Error
				switch {
				case ctx.Err() != nil:
				case errors.As(err, &loss), errors.As(err, &ke) && !ke.Retriable:
					r.errs = append(r.errs, fmt.Sprintf("partition %d: %v", p, err))
				default:
					// A broker down or starting (its fault proxy
					// resets what it accepts then), a moved leader:
					// the client retries.
					r.transient++
					r.lastTransient = err
				}
			})
			fs.EachRecord(func(rec *kgo.Record) {
				p := rec.Partition
				switch {
				case rec.Offset < r.next[p]:
					if k := r.seen[p][rec.Offset]; k != string(rec.Key) {
						r.errs = append(r.errs, fmt.Sprintf("partition %d offset %d read again as %q, first as %q", p, rec.Offset, rec.Key, k))
					}
				case rec.Offset > r.next[p]:
					r.errs = append(r.errs, fmt.Sprintf("partition %d: offsets %d to %d skipped", p, r.next[p], rec.Offset-1))
					fallthrough
				default:
					r.seen[p][rec.Offset] = string(rec.Key)
					r.next[p] = rec.Offset + 1
				}
			})
		}
	}()
	return r
}

// check stops the reader and compares what it read with the log, each
// partition's keys by offset.
func (r *spreadReader) check(t *testing.T, log [spreadMaxPartitions]map[int64]string) {
	t.Helper()
	r.stop()
	<-r.done
	for _, e := range r.errs {
		t.Error("the reader during the faults: " + e)
	}
	n := 0
	for p := range r.seen {
		for off, k := range r.seen[p] {
			n++
			if log[p][off] != k {
				t.Errorf("partition %d offset %d: read as %q during the faults, %q in the log", p, off, k, log[p][off])
			}
		}
	}
	t.Logf("the reader during the faults read %d records, each as the log holds it (%d errors it retried past, the last: %v)", n, r.transient, r.lastTransient)
}
