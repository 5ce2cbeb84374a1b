package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/broker/group"
)

// TestGroupSoak: three `shale broker` processes; a consumer group of three
// franz-go members consumes an RF=3 topic under an acks=all producer and
// commits after each poll (brokertest.RunGroupSoak). Round after round,
// one fault drawn at random, healed before the next: the coordinator
// killed with SIGKILL or stopped with SIGTERM, any broker killed, the
// coordinator frozen with SIGSTOP past its lease, the coordinator's
// machine or another broker's crashed (the tails of their logs that only
// the page cache held lost, back at once), every broker's machine crashed
// (one of them with its whole logs), the group's __consumer_offsets
// partition moved off the coordinator and back by two reassignments, etcd
// stopped past the brokers' lease; and network partitions (each broker
// behind its fault proxies, brokerProc.behindProxies): the coordinator cut
// from etcd past its lease (its clients and the other brokers still reach
// it), or from etcd and the other brokers, the coordinator and another
// broker cut from etcd and the coordinator from the third broker too,
// another broker cut from the coordinator past replica.lag.time.max.
// After each the group must commit and
// consume on; throughout, no acknowledged commit is lost or moves
// backwards, no member is handed a record below an acknowledged commit,
// and every acknowledged record is consumed.
//
// SHALE_GROUP_SOAK_SEED sets the seed (default: the clock's),
// SHALE_GROUP_SOAK_ROUNDS the rounds (default 5), and
// SHALE_GROUP_SOAK_ONLY one kind of fault (its index in groupSoakFaults).
func TestGroupSoak(t *testing.T) {
	rng, rounds, only := soakSettings(t, "SHALE_GROUP_SOAK", 5, len(groupSoakFaults))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(rounds)*time.Minute)
	defer cancel()
	etcd := startRestartableEtcd(t, ctx)
	procs, seeds := startBrokerProcs(t, etcd.addr, 3, func(p *brokerProc) { p.behindProxies(t) })
	g := &groupSoak{t: t, ctx: ctx, etcd: etcd, procs: procs, rng: rng}
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	g.adm = kadm.NewClient(admCl)
	brokertest.RunGroupSoak(t, seeds, rounds, func(round int, coordinator int32) {
		f := groupSoakFaults[rng.IntN(len(groupSoakFaults))]
		if only >= 0 {
			f = groupSoakFaults[only]
		}
		start := time.Now()
		f.run(g, coordinator)
		g.wholeAgain()
		t.Logf("round %d: %s (the coordinator was broker %d), healed in %s", round, f.name, coordinator, time.Since(start).Round(time.Millisecond))
	})
}

// groupSoak is what TestGroupSoak's faults act on.
type groupSoak struct {
	t     *testing.T
	ctx   context.Context
	etcd  *testEtcd
	procs []*brokerProc
	rng   *rand.Rand
	adm   *kadm.Client
}

// restart starts broker id again, on its directory.
func (g *groupSoak) restart(id int32) { startClusterBroker(g.t, g.procs[id]) }

// other is a broker other than id, drawn at random.
func (g *groupSoak) other(id int32) int32 {
	return (id + 1 + int32(g.rng.IntN(len(g.procs)-1))) % int32(len(g.procs))
}

// wholeAgain waits until every partition of the consumed topic and of
// __consumer_offsets has all three replicas in its ISR, so that the next
// fault meets a whole cluster.
func (g *groupSoak) wholeAgain() {
	g.t.Helper()
	brokertest.WaitFor(g.t, 60*time.Second, "every ISR whole again", func() (bool, string) {
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		defer cancel()
		td, err := g.adm.ListTopics(ctx, brokertest.GroupFailoverTopic, "__consumer_offsets")
		if err != nil {
			return false, err.Error()
		}
		var short []string
		for _, topic := range td.Sorted() {
			if topic.Err != nil {
				return false, fmt.Sprintf("%s: %v", topic.Topic, topic.Err)
			}
			for _, p := range topic.Partitions.Sorted() {
				if len(p.ISR) != 3 || p.Leader < 0 {
					short = append(short, fmt.Sprintf("%s-%d: leader %d, ISR %v", topic.Topic, p.Partition, p.Leader, p.ISR))
				}
			}
		}
		if len(short) > 0 {
			brokers := "unknown"
			if m, err := g.adm.BrokerMetadata(ctx); err == nil {
				brokers = fmt.Sprint(m.Brokers.NodeIDs())
			}
			return false, fmt.Sprintf("%d partitions not whole (brokers listed: %s): %s", len(short), brokers, strings.Join(short, "; "))
		}
		return true, ""
	})
}

// groupSoakFaults are the faults of TestGroupSoak: each applies one and
// heals it.
var groupSoakFaults = []struct {
	name string
	run  func(g *groupSoak, coordinator int32)
}{
	{"SIGKILL of the coordinator", func(g *groupSoak, c int32) {
		g.procs[c].kill(syscall.SIGKILL)
		time.Sleep(time.Duration(g.rng.IntN(3000)) * time.Millisecond)
		g.restart(c)
	}},
	{"SIGTERM of the coordinator", func(g *groupSoak, c int32) {
		g.procs[c].kill(syscall.SIGTERM)
		g.restart(c)
	}},
	{"SIGKILL of another broker", func(g *groupSoak, c int32) {
		b := g.other(c)
		g.procs[b].kill(syscall.SIGKILL)
		time.Sleep(time.Duration(g.rng.IntN(3000)) * time.Millisecond)
		g.restart(b)
	}},
	{"SIGSTOP of the coordinator past its lease", func(g *groupSoak, c int32) {
		g.procs[c].cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(3 * time.Second)
		g.procs[c].cmd.Process.Signal(syscall.SIGCONT)
	}},
	{"a machine crash of the coordinator, back at once", func(g *groupSoak, c int32) {
		g.procs[c].kill(syscall.SIGKILL)
		loseUnflushedTail(g.t, g.procs[c], "*-*")
		g.restart(c)
	}},
	{"a machine crash of another broker, back at once", func(g *groupSoak, c int32) {
		b := g.other(c)
		g.procs[b].kill(syscall.SIGKILL)
		loseUnflushedTail(g.t, g.procs[b], "*-*")
		g.restart(b)
	}},
	{"every broker's machine crashed at once, one keeping its whole logs, back at once or past the lease, together or one after another in a random order", func(g *groupSoak, _ int32) {
		for _, p := range g.procs {
			p.kill(syscall.SIGKILL)
		}
		if g.rng.IntN(2) == 0 {
			waitUnregistered(g.t, g.ctx, g.etcd)
		}
		whole := g.rng.IntN(len(g.procs))
		for i, p := range g.procs {
			keep := g.rng.Float64()
			if i == whole {
				keep = 1
			}
			crashMachine(g.t, p, "*-*", keep)
		}
		if g.rng.IntN(2) == 0 {
			startClusterBrokers(g.t, g.procs...) // the machines booted together
			return
		}
		for _, i := range g.rng.Perm(len(g.procs)) {
			g.restart(int32(i))
		}
	}},
	{"the group's __consumer_offsets partition moved off the coordinator and back by two reassignments", func(g *groupSoak, c int32) {
		td, err := g.adm.ListTopics(g.ctx, "__consumer_offsets")
		if err != nil {
			g.t.Fatal(err)
		}
		p := group.PartitionFor(brokertest.GroupFailoverGroup, int32(len(td["__consumer_offsets"].Partitions)))
		replicas := replicasOf(g.t, g.ctx, g.adm, "__consumer_offsets", p)
		rest := slices.DeleteFunc(slices.Clone(replicas), func(id int32) bool { return id == c })
		reassign(g.t, g.ctx, g.adm, "__consumer_offsets", p, rest)
		time.Sleep(time.Duration(g.rng.IntN(2000)) * time.Millisecond)
		reassign(g.t, g.ctx, g.adm, "__consumer_offsets", p, append(rest, c))
	}},
	{"etcd stopped past the brokers' lease", func(g *groupSoak, _ int32) {
		g.etcd.stop()
		time.Sleep(etcdDown)
		g.etcd.start(g.ctx)
	}},
	{"the coordinator cut from etcd past its lease (its clients and the other brokers still reach it)", func(g *groupSoak, c int32) {
		g.procs[c].etcdLink.Cut()
		time.Sleep(3*time.Second + time.Duration(g.rng.IntN(3000))*time.Millisecond) // past --session-ttl 2s
		g.procs[c].etcdLink.Heal()
	}},
	{"the coordinator cut from etcd and from the other brokers past its lease (its clients still reach it)", func(g *groupSoak, c int32) {
		g.procs[c].etcdLink.Cut()
		cutFromPeers(g.procs, c)
		time.Sleep(3*time.Second + time.Duration(g.rng.IntN(3000))*time.Millisecond)
		g.procs[c].etcdLink.Heal()
		healFromPeers(g.procs, c)
	}},
	{"the coordinator and another broker cut from etcd past their lease, the coordinator from the third broker too (the other still reaches it)", func(g *groupSoak, c int32) {
		// The controller drops both from the ISR and elects the third,
		// which acknowledges commits alone (min.insync.replicas=1); the
		// broker cut with the coordinator still names it leader.
		b := g.other(c)
		third := thirdBroker(c, b)
		g.procs[c].etcdLink.Cut()
		g.procs[b].etcdLink.Cut()
		cutBetween(g.procs, c, third)
		time.Sleep(3*time.Second + time.Duration(g.rng.IntN(3000))*time.Millisecond)
		g.procs[c].etcdLink.Heal()
		g.procs[b].etcdLink.Heal()
		healBetween(g.procs, c, third)
	}},
	{"another broker cut from the coordinator past replica.lag.time.max", func(g *groupSoak, c int32) {
		b := g.other(c)
		g.procs[c].listener.CutClient(peerClientID(b))
		time.Sleep(6*time.Second + time.Duration(g.rng.IntN(3000))*time.Millisecond) // past --replica-lag-time-max 5s
		g.procs[c].listener.HealClient(peerClientID(b))
	}},
}
