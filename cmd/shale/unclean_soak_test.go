package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// uncleanSoakWait is the soak's --unclean-recovery-wait: long enough
// for a replica started a few seconds after another to say where its log
// ends before the controller gives up on it, on a loaded machine.
const uncleanSoakWait = 10 * time.Second

// uncleanSoakBucket is the bucket of TestUncleanElectionSoak/tiered.
const uncleanSoakBucket = "unclean-soak"

// TestUncleanElectionSoak: three `shale broker` processes, an RF=3 topic
// with unclean.leader.election.enable=true and min.insync.replicas=1,
// under an acks=all producer, idempotent or not as the seed draws (an
// idempotent one finds the sequence numbers it counted cut by an unclean
// election, and must go on with a new producer id). Round after
// round, one fault drawn at random (uncleanSoakFaults): most stop both
// followers, one after the other, so that the ISR shrinks to the leader
// alone and the leader acknowledges records no other replica holds, then
// kill the leader, so that only an unclean election can bring the
// partition back; one makes two such elections in a row, so that at the
// second a shorter log of the latest leader epoch must beat a longer one
// of an older epoch (latestEpochLeads). After each round, once the three
// replicas are in the ISR again, the partition read from offset 0 must
//   - hold, offset for offset, everything the longest log of the
//     replicas that were live at the election held (the election kept the
//     longest log and lost only what the leader alone held);
//   - hold, offset for offset, what the read after the previous round
//     held (nothing below a clean high watermark ever changes);
//   - hold every acknowledged record but those acknowledged while an
//     unclean election was coming (the leader alone in the ISR, or, where
//     the longest follower stays down past the wait, since the first
//     follower stopped), in the order produced, at contiguous offsets.
//
// At the end the replicas' logs agree byte for byte.
//
// It runs twice: on local logs alone, and on a tiered topic on MinIO
// (16 KiB segments, about two kept on local disk), where what the bucket
// held at the election (the killed leader's records below the manifest's
// end) must be kept too, and no leader may append over the bucket
// (requireNoAppendsOverTheBucket).
//
// SHALE_UNCLEAN_SOAK_SEED sets the seed (default: the clock's),
// SHALE_UNCLEAN_SOAK_ROUNDS the rounds of each (default 2), and
// SHALE_UNCLEAN_SOAK_ONLY one kind of fault (its index in
// uncleanSoakFaults).
func TestUncleanElectionSoak(t *testing.T) {
	t.Run("local", func(t *testing.T) { uncleanElectionSoak(t, false) })
	t.Run("tiered", func(t *testing.T) { uncleanElectionSoak(t, true) })
}

func uncleanElectionSoak(t *testing.T, tiered bool) {
	rng, rounds, only := soakSettings(t, "SHALE_UNCLEAN_SOAK", 2, len(uncleanSoakFaults))
	// A round of latestEpochLeads takes two unclean waits and about a
	// minute on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(rounds)*3*time.Minute)
	defer cancel()
	etcd := startRestartableEtcd(t, ctx)
	configs := map[string]*string{"min.insync.replicas": ptr("1"), "unclean.leader.election.enable": ptr("true")}
	var srv *miniotest.Server
	if tiered {
		srv = miniotest.Start(t)
		configs["segment.bytes"], configs["local.retention.bytes"], configs["file.delete.delay.ms"] = ptr("16384"), ptr("32768"), ptr("1")
	}
	procs, seeds := startBrokerProcs(t, etcd.addr, 3, func(p *brokerProc) {
		p.extra = []string{"--unclean-recovery-wait", uncleanSoakWait.String()}
		if tiered {
			p.objectStore, p.env = srv.URL(uncleanSoakBucket, "")+"&create_bucket=true", miniotest.Env()
			p.extra = append(p.extra, "--retention-check-interval", "200ms")
		}
	})
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, 1, 3, configs, "acked"); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ctx: ctx, etcd: etcd, procs: procs, adm: adm}
	s := &uncleanSoak{c: c, rng: rng, seeds: seeds}
	if tiered {
		s.srv, s.store = srv, srv.Client()
	}
	idempotent := rng.IntN(2) == 0
	t.Logf("the producer is idempotent: %v", idempotent)
	stop := s.produce(idempotent)
	for round := 0; round < rounds; round++ {
		c.waitISR(3)
		c.waitAcked(c.ackedCount() + 100)
		f := uncleanSoakFaults[rng.IntN(len(uncleanSoakFaults))]
		if only >= 0 {
			f = uncleanSoakFaults[only]
		}
		start, before := time.Now(), c.ackedCount()
		s.kept = nil
		f.run(t, s)
		c.waitISR(3)
		n := s.check(fmt.Sprintf("round %d (%s)", round, f.name))
		t.Logf("round %d: %s, healed in %s; %d records acknowledged meanwhile; %d records read back",
			round, f.name, time.Since(start).Round(time.Millisecond), c.ackedCount()-before, n)
	}
	c.waitAcked(c.ackedCount() + 100)
	stop()
	c.waitISR(3)
	if errs := c.errors(); len(errs) > 0 {
		t.Logf("%d produce errors, the last: %v", len(errs), errs[len(errs)-1])
	}
	n := s.check("the end")
	t.Logf("%d records acknowledged, %d of them in %d unclean windows; %d records in the log", c.ackedCount(), s.inWindows(), len(s.windows), n)
	if tiered {
		m, _ := readTierState(t, ctx, s.store, uncleanSoakBucket)
		t.Logf("the bucket holds offsets %d to %d; local log starts %v", m.Start(), m.End(), localStarts(procs, "acked-0"))
	}
	checkReplicasAgree(t, procs, "acked")
}

// uncleanSoak is the state of TestUncleanElectionSoak.
type uncleanSoak struct {
	c     *testCluster
	rng   *rand.Rand
	seeds []string
	// srv and store are the MinIO server and its client when the topic
	// is tiered (nil: local logs alone).
	srv   *miniotest.Server
	store *minio.Client
	// windows are the spans in which an acknowledgement may be lost: a
	// record acknowledged then may have been on the logs of replicas that
	// an unclean election left behind.
	windows []window
	// kept is what the longest log of the replicas live at this round's
	// election held, with what the bucket held, by offset (nil: no
	// follower was stopped).
	kept map[int64]string
	// read is the partition as read after the previous round, by offset.
	read []string
	// hold, while set, keeps the producer from sending.
	hold atomic.Bool
}

type window struct{ from, to time.Time }

var uncleanSoakFaults = []struct {
	name string
	run  func(t *testing.T, s *uncleanSoak)
}{
	{"the leader left alone in the ISR and killed, its followers back at once", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{})
		i.back(t, s, i.last, i.first)
		i.elected(t, s, i.longest)
	}},
	{"the same, the shorter log back first, the longer a moment later", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{})
		i.back(t, s, i.shortest)
		time.Sleep(time.Duration(s.rng.IntN(2000)) * time.Millisecond)
		i.back(t, s, i.longest)
		i.elected(t, s, i.longest)
	}},
	{"the same, the shorter log from a machine crash (its unflushed tail lost)", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{crashFirst: true})
		i.back(t, s, i.last, i.first)
		i.elected(t, s, i.longest)
	}},
	{"the same, the longer log down past the wait: the shorter leads", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{})
		// Records acknowledged since the first follower stopped are on
		// the longer log and the leader's only.
		i.win.from = i.firstStopped
		i.back(t, s, i.shortest)
		i.elected(t, s, i.shortest)
	}},
	{"the same, the object store (if any) frozen through the election", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{})
		if s.srv == nil {
			i.back(t, s, i.last, i.first)
			i.elected(t, s, i.longest)
			return
		}
		// The new leader must read the manifest before it takes produce
		// (it was elected uncleanly): produce waits for the store.
		s.srv.Pause()
		i.back(t, s, i.last, i.first)
		l := i.newLeader(t, s)
		time.Sleep(time.Duration(s.rng.IntN(3000)) * time.Millisecond)
		s.srv.Resume()
		t.Logf("broker %d elected with MinIO frozen; MinIO resumed", l)
		i.elected(t, s, i.longest)
	}},
	{"the same, the leader frozen past its lease rather than killed, resumed once another leads: it acknowledges nothing more", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{freezeLeader: true})
		i.back(t, s, i.last, i.first)
		// The loss window closes at the election: a record the old
		// leader acknowledged once resumed, its lease long lapsed, would
		// be lost outside it.
		i.elected(t, s, i.longest)
		s.c.procs[i.leader].cmd.Process.Signal(syscall.SIGCONT)
		// Straight to it, the moment it resumes, before it can have seen
		// the election.
		requireNoAcknowledgement(t, s.c, i.leader, kgo.AllISRAcks(), "resumed with its lease lapsed and another elected")
		s.c.waitAcked(s.c.ackedCount() + 50)
	}},
	{"the same, the leader back with its followers: it leads, nothing lost", func(t *testing.T, s *uncleanSoak) {
		i := s.isolateLeader(isolate{})
		startClusterBrokers(t, s.c.procs[i.leader], s.c.procs[i.first], s.c.procs[i.last])
		i.elected(t, s, i.leader)
	}},
	{"the topic not allowing unclean election: offline until an operator's unclean election", func(t *testing.T, s *uncleanSoak) {
		s.setUnclean(t, false)
		i := s.isolateLeader(isolate{})
		i.back(t, s, i.first, i.last)
		// A moment for the controller, which must not elect either.
		time.Sleep(2 * time.Second)
		if td, err := s.c.adm.ListTopics(s.c.ctx, "acked"); err == nil {
			if l := td["acked"].Partitions[0].Leader; l >= 0 && l != i.leader {
				t.Fatalf("broker %d leads a partition whose topic does not allow unclean election", l)
			}
		}
		var set kadm.TopicsSet
		set.Add("acked", 0)
		res, err := s.c.adm.ElectLeaders(s.c.ctx, kadm.ElectLiveReplica, set)
		if err == nil {
			err = res["acked"][0].Err
		}
		if err != nil {
			t.Fatalf("the operator's unclean election: %v", err)
		}
		i.elected(t, s, i.longest)
		s.setUnclean(t, true)
	}},
	{"a longer log of an older epoch against a shorter one of the latest: the latest leads", latestEpochLeads},
	{"a clean failover: the leader killed, the ISR whole", func(t *testing.T, s *uncleanSoak) {
		c := s.c
		l := c.leader()
		c.procs[l].kill(syscall.SIGKILL)
		c.leaderOtherThan(l)
		c.waitAcked(c.ackedCount() + 50)
		startClusterBroker(t, c.procs[l])
	}},
}

// isolation is a round's partition after isolateLeader: its leader,
// the follower stopped first and the one stopped last, the longest and
// the shortest of their logs (by log end) and where each ends.
type isolation struct {
	leader, first, last int32
	longest, shortest   int32
	ends                map[int32]int64
	// recs are the replicas' records at the election (the isolated
	// leader's too), by offset.
	recs         map[int32]map[int64]string
	firstStopped time.Time
	win          window
	// inBucket is what the bucket held at the election (the leader's
	// records below the manifest's end, of those still on its disk).
	inBucket map[int64]string
}

// isolate says how isolateLeader goes: crashFirst, the follower stopped
// first goes through a machine crash (some of its log's unflushed tail
// lost); freezeLeader, the leader is frozen (SIGSTOP) rather than killed.
type isolate struct{ crashFirst, freezeLeader bool }

// isolateLeader stops the leader's followers one after the other
// (SIGKILL), each once the ISR has shrunk past it and produce goes on, so
// that the leader acknowledges records alone; then kills the leader (or
// freezes it, as how says). The span in which records only it held were
// acknowledged opens a loss window, closed once another leads (elected).
// It reads the followers' logs, of which the election must keep the
// longest.
func (s *uncleanSoak) isolateLeader(how isolate) *isolation {
	c, t := s.c, s.c.t
	t.Helper()
	i := &isolation{leader: c.leader(), ends: map[int32]int64{}, recs: map[int32]map[int64]string{}}
	i.first = (i.leader + 1 + int32(s.rng.IntN(2))) % 3
	i.last = thirdBroker(i.leader, i.first)
	i.firstStopped = time.Now()
	c.procs[i.first].kill(syscall.SIGKILL)
	c.waitISR(2)
	c.waitAcked(c.ackedCount() + 30)
	i.win.from = time.Now()
	c.procs[i.last].kill(syscall.SIGKILL)
	c.waitISR(1)
	c.waitAcked(c.ackedCount() + 30)
	if how.freezeLeader {
		c.procs[i.leader].cmd.Process.Signal(syscall.SIGSTOP)
	} else {
		c.procs[i.leader].kill(syscall.SIGKILL)
	}
	if how.crashFirst {
		crashMachine(t, c.procs[i.first], "acked-0", s.rng.Float64())
	}
	for _, id := range []int32{i.leader, i.first, i.last} {
		i.recs[id], i.ends[id] = replicaRecords(t, c.procs[id], "acked-0")
	}
	i.longest, i.shortest = i.last, i.first
	if i.ends[i.first] > i.ends[i.last] {
		i.longest, i.shortest = i.first, i.last
	}
	t.Logf("broker %d led; its followers stopped: broker %d first, then %d; the logs end at %v", i.leader, i.first, i.last, i.ends)
	if s.store != nil {
		i.inBucket = s.inBucket(t, i.recs[i.leader])
	}
	return i
}

// inBucket is what the bucket holds of the tiered partition: of the
// records of its stopped leader (recs, read from its disk), those below
// the manifest's end.
func (s *uncleanSoak) inBucket(t *testing.T, recs map[int64]string) map[int64]string {
	t.Helper()
	m, _ := readTierState(t, s.c.ctx, s.store, uncleanSoakBucket)
	in := map[int64]string{}
	for o, v := range recs {
		if o < m.End() {
			in[o] = v
		}
	}
	t.Logf("the bucket holds offsets %d to %d; %d of them still on the leader's disk", m.Start(), m.End(), len(in))
	return in
}

// latestEpochLeads makes two unclean elections in a row, so that at the
// second the replica whose log ends in the latest leader epoch has the
// shorter log: the old leader L acknowledges records alone and is
// killed; its followers come back without it, and the longer, X, is
// elected at a new epoch once L is down past the wait. The producer is
// held once X has acknowledged a few records in it, so that the third
// broker, Y, back in the ISR, ends its log in the new epoch but short of
// L's (by about what L acknowledged alone). Then Y is killed, X
// acknowledges records alone and is killed, and L and Y come back
// together with X down past the wait: Y must lead. L's longer log ends
// in an epoch that the partition left behind; its records past the
// divergence were never acknowledged in the ISR, while Y's were (with
// min.insync.replicas=1 and X and Y in the ISR) and must be kept.
func latestEpochLeads(t *testing.T, s *uncleanSoak) {
	c := s.c
	i := s.isolateLeader(isolate{})
	l := i.leader
	// Records acknowledged since the last follower stopped are L's only.
	i.back(t, s, i.first, i.last)
	x := i.leads(t, s, i.longest)
	y := thirdBroker(l, x)
	c.waitAcked(c.ackedCount() + 5)
	s.hold.Store(true)
	c.waitISR(2)
	// Everything the first election must have kept is read back, and
	// below the high watermark now, which Y holds.
	s.check("after the first election")
	yStopped := time.Now()
	c.procs[y].kill(syscall.SIGKILL)
	s.hold.Store(false)
	c.waitISR(1)
	c.waitAcked(c.ackedCount() + 30)
	c.procs[x].kill(syscall.SIGKILL)

	j := &isolation{leader: x, first: y, last: l, win: window{from: yStopped}, ends: map[int32]int64{l: i.ends[l]}, recs: map[int32]map[int64]string{l: i.recs[l]}}
	j.recs[y], j.ends[y] = replicaRecords(t, c.procs[y], "acked-0")
	if s.store != nil {
		xRecs, _ := replicaRecords(t, c.procs[x], "acked-0")
		j.inBucket = s.inBucket(t, xRecs)
	}
	t.Logf("broker %d led at a new epoch and is killed; broker %d's log ends there at %d, the old leader %d's, an epoch before, at %d (the rule matters: %v)",
		x, y, j.ends[y], l, j.ends[l], j.ends[l] > j.ends[y])
	j.back(t, s, l, y)
	j.elected(t, s, y)
}

// back starts the followers given, at once.
func (i *isolation) back(t *testing.T, s *uncleanSoak, ids ...int32) {
	t.Helper()
	var ps []*brokerProc
	for _, id := range ids {
		ps = append(ps, s.c.procs[id])
	}
	startClusterBrokers(t, ps...)
}

// elected waits until a broker leads (leads), waits for produce to go on,
// and starts the brokers still down.
func (i *isolation) elected(t *testing.T, s *uncleanSoak, want int32) {
	t.Helper()
	c := s.c
	i.leads(t, s, want)
	c.waitAcked(c.ackedCount() + 50)
	var down []*brokerProc
	for _, p := range c.procs {
		select {
		case <-p.exited:
			down = append(down, p)
		default:
		}
	}
	startClusterBrokers(t, down...)
}

// leads waits until a broker leads, requires it to be want (unless the
// logs that could lead end at the same offset), closes the loss window,
// sets what must be kept (the elected log, the longest where the old
// leader leads again, which holds it all, and the bucket's records), and
// returns the leader.
func (i *isolation) leads(t *testing.T, s *uncleanSoak, want int32) int32 {
	t.Helper()
	var got int32
	if want != i.leader {
		got = i.newLeader(t, s)
		i.win.to = time.Now()
		s.windows = append(s.windows, i.win)
		if got != want && i.ends[got] != i.ends[want] {
			t.Fatalf("broker %d was elected (its log ends at %d); broker %d's ends at %d", got, i.ends[got], want, i.ends[want])
		}
	} else if got = s.c.leader(); got != want {
		t.Fatalf("broker %d was elected; broker %d, the ISR's only member, was back", got, want)
	}
	keptLog := got
	if got == i.leader {
		keptLog = i.longest
	}
	s.kept = maps.Clone(i.recs[keptLog])
	maps.Copy(s.kept, i.inBucket)
	return got
}

// newLeader waits until the partition's record in etcd names a leader
// other than the isolated one, and returns it. The record is read rather
// than a broker's metadata, which follows it a moment later, and which a
// client may ask the frozen leader for, waiting for its request timeout:
// the election's time closes the loss window.
func (i *isolation) newLeader(t *testing.T, s *uncleanSoak) int32 {
	t.Helper()
	p := waitPartitionRecord(t, s.c, "elected a leader other than broker "+strconv.Itoa(int(i.leader)), func(p metadata.Partition) bool {
		return p.Leader >= 0 && p.Leader != i.leader
	})
	return p.Leader
}

// setUnclean sets the topic's unclean.leader.election.enable.
func (s *uncleanSoak) setUnclean(t *testing.T, on bool) {
	t.Helper()
	v := strconv.FormatBool(on)
	res, err := s.c.adm.AlterTopicConfigs(s.c.ctx, []kadm.AlterConfig{{Name: "unclean.leader.election.enable", Value: &v}}, "acked")
	if err == nil {
		err = res[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// produce produces one record at a time, acks=all, recording what was
// acknowledged and when, until the returned function is called.
func (s *uncleanSoak) produce(idempotent bool) (stop func()) {
	c := s.c
	opts := []kgo.Opt{kgo.SeedBrokers(s.seeds...), kgo.DefaultProduceTopic("acked"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequestTimeoutOverhead(3 * time.Second), kgo.ProduceRequestTimeout(3 * time.Second)}
	if !idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			if s.hold.Load() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			err := cl.ProduceSync(c.ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr()
			c.produced(i, err)
		}
	}()
	return func() {
		close(quit)
		<-done
		cl.Close()
	}
}

// check reads the partition from offset 0 and checks it against what the
// soak knows (see TestUncleanElectionSoak), failing the test with when
// in the message. It returns the records read.
func (s *uncleanSoak) check(when string) int {
	c, t := s.c, s.c.t
	t.Helper()
	c.mu.Lock()
	acked, ackedAt := append([]int(nil), c.acked...), append([]time.Time(nil), c.ackedAt...)
	c.mu.Unlock()
	read := readPartition(t, c.ctx, s.seeds, "acked")
	at := map[int]int64{}
	last := -1
	for o, v := range read {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: offset %d holds %q", when, o, v)
		}
		if n <= last && !(n == last && read[o-1] == v) {
			t.Fatalf("%s: offset %d holds record %d after record %d", when, o, n, last)
		}
		last = n
		if _, ok := at[n]; !ok {
			at[n] = int64(o)
		}
	}
	for o, v := range s.read {
		if o >= len(read) || read[o] != v {
			t.Fatalf("%s: offset %d held record %s after the previous round; now %s", when, o, v, recordAt(read, int64(o)))
		}
	}
	for o, v := range s.kept {
		if o >= int64(len(read)) || read[o] != v {
			t.Fatalf("%s: offset %d held record %s on the longest log at the election; now %s", when, o, v, recordAt(read, o))
		}
	}
	for k, v := range acked {
		if _, ok := at[v]; !ok && !s.inWindow(ackedAt[k]) {
			t.Fatalf("%s: record %d, acknowledged at %s outside every unclean window, is not in the log (%d records)",
				when, v, ackedAt[k].Format(time.StampMilli), len(read))
		}
	}
	s.read = read
	return len(read)
}

// recordAt names the record read at offset o, or its absence.
func recordAt(read []string, o int64) string {
	if o >= int64(len(read)) {
		return fmt.Sprintf("the log ends at %d", len(read))
	}
	return "record " + read[o]
}

func (s *uncleanSoak) inWindow(at time.Time) bool {
	for _, w := range s.windows {
		if !at.Before(w.from) && !at.After(w.to) {
			return true
		}
	}
	return false
}

// inWindows counts the acknowledged records in the loss windows.
func (s *uncleanSoak) inWindows() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	n := 0
	for _, at := range s.c.ackedAt {
		if s.inWindow(at) {
			n++
		}
	}
	return n
}

// readPartition reads partition 0 of topic from offset 0 to its high
// watermark with a new client, and returns the values by offset; the
// offsets must be contiguous.
func readPartition(t *testing.T, ctx context.Context, seeds []string, topic string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var hw kadm.ListedOffset
	brokertest.WaitFor(t, 30*time.Second, "the high watermark of "+topic+"-0", func() (bool, string) {
		end, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if err == nil {
			hw, _ = end.Lookup(topic, 0)
			err = hw.Err
		}
		return err == nil, fmt.Sprint(err)
	})
	var out []string
	for int64(len(out)) < hw.Offset {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s-0", len(out), hw.Offset, topic)
		}
		for _, r := range fs.Records() {
			if r.Offset != int64(len(out)) {
				t.Fatalf("%s-0: offset %d after %d", topic, r.Offset, len(out)-1)
			}
			out = append(out, string(r.Value))
		}
	}
	return out[:hw.Offset]
}

// replicaRecords reads a stopped broker's log of partition (as "topic-N")
// from its data directory: the values by offset, and where it ends.
func replicaRecords(t *testing.T, p *brokerProc, partition string) (map[int64]string, int64) {
	t.Helper()
	l, err := brokertest.ReadReplicaLog(p.id, p.dataDir, partition)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	end := int64(0)
	for rest := recordbatch.WholePrefix(l.Bytes); len(rest) > 0; {
		b, next, err := recordbatch.Next(rest)
		if err != nil || b == nil {
			break
		}
		err = recordbatch.Records(context.Background(), b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
			out[r.Offset] = string(r.Value)
			return nil
		})
		if err != nil {
			t.Fatalf("broker %d's log of %s, batch at %d: %v", p.id, partition, b.BaseOffset(), err)
		}
		end, rest = b.NextOffset(), next
	}
	return out, end
}
