package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runCluster measures acks=all production to a topic with three replicas
// on a three-broker cluster (`shale dev --brokers 3`: three brokers and
// their etcd in one process on this machine, replicating over loopback),
// beside ceilings measured in the same run. First the raw load generator's
// latency at a fixed rate (runClusterRawLatency), then, with -cluster-franz,
// franz-go's: the same load on the single broker (replication factor 1)
// with acks=all, which waits for the fsync, and with acks=1, and on kfake
// with acks=all. Throughput first (one client, as fast as it goes, the
// best of -cluster-rounds alternating runs), then latency at a fixed rate.
func runCluster(o options, single, ceiling *target) error {
	cluster, err := startShaleBrokers(o, 3)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer cluster.close()
	if err := runClusterRawLatency(o, cluster, single); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if !o.clusterFranz {
		return nil
	}
	fmt.Println()
	if err := createReplicatedTopic(cluster.addr, topic, o.partitions, 3); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	o.duration, o.producers, o.rateMBps = o.clusterDuration, 1, o.clusterRate
	runs := []struct {
		name    string
		t       *target
		acksAll bool
	}{
		{"shale, 3 brokers, RF=3, acks=all", cluster, true},
		{"shale, 1 broker, RF=1, acks=all (fsync)", single, true},
		{"shale, 1 broker, RF=1, acks=1 (ceiling)", single, false},
		{"kfake, acks=all (ceiling)", ceiling, true},
	}
	// Rounds alternate between the targets and each keeps its best, so
	// that a burst of load from elsewhere on the machine does not decide
	// a ratio.
	// Each keeps the broker CPU per MB of its best run: on a machine with
	// few cores the brokers and the load generator share them, so CPU per
	// MB is what bounds the cluster's throughput.
	tps := make([]throughput, len(runs))
	cpus := make([]float64, len(runs))
	for round := range max(1, o.clusterRounds) {
		for i, r := range runs {
			o := o
			o.acksAll = r.acksAll
			settleDisk()
			profiled := profileRun(r.t, o, round == 0, "cluster-tput-"+strconv.Itoa(i))
			cpu := startCPU(r.t.pid)
			tp := produceThroughput(r.t.addr, o)
			used := cpu.stop()[0]
			<-profiled
			if tp.perSec() > tps[i].perSec() || tps[i].elapsed == 0 {
				tps[i] = tp
				cpus[i] = msPerMB(used, tp.records*int64(o.recordSize))
			}
		}
	}
	ref := tps[2].perSec()
	mb := func(t throughput) float64 { return t.perSec() * float64(o.recordSize) / 1e6 }
	var rows [][]string
	for i, r := range runs {
		rows = append(rows, []string{r.name, fmt.Sprintf("%.0f", tps[i].perSec()), fmt.Sprintf("%.1f", mb(tps[i])),
			fmt.Sprintf("%.2fx", tps[i].perSec()/ref), cpuCell(cpus[i])})
	}
	printTable([]string{fmt.Sprintf("cluster produce, %d partitions, 1 client, best of %d (load %s)", o.partitions, max(1, o.clusterRounds), loadAverage()),
		"rec/s", "MB/s", "vs 1 broker acks=1", "broker CPU ms/MB"}, rows)
	fmt.Println()
	rows = nil
	for i, r := range runs {
		o := o
		o.acksAll = r.acksAll
		settleDisk()
		profiled := profileRun(r.t, o, true, "cluster-latency-"+strconv.Itoa(i))
		cpu := startCPU(r.t.pid)
		l := produceLatency(r.t.addr, o)
		used := cpu.stop()[0]
		<-profiled
		rows = append(rows, []string{r.name, l.p50.String(), l.p99.String(), l.p999.String(), fmt.Sprintf("%.1f", l.mbps),
			cpuCell(msPerMB(used, int64(l.mbps*1e6*o.duration.Seconds())))})
	}
	printTable([]string{"cluster produce latency @" + strconv.FormatFloat(o.rateMBps, 'f', 0, 64) + " MB/s (load " + loadAverage() + ")",
		"p50", "p99", "p999", "achieved MB/s", "broker CPU ms/MB"}, rows)
	return nil
}

// runClusterRawLatency measures produce latency at -cluster-rate with the
// raw load generator (pre-encoded requests: franz-go's own latency at this
// rate on a small machine is more than the brokers'): one connection per
// partition, each to its partition's leader as metadata names it, on the
// three-broker cluster with replication factor 3 and acks=all, and with
// acks=1 (the leader's path alone, under replication), beside the single
// broker with acks=1 at the same rate, the ceiling. -cluster-rounds
// rounds alternate between the three, each round in another order; the
// latencies of all rounds are pooled.
func runClusterRawLatency(o options, cluster, single *target) error {
	cfg := o.raw.config()
	cfg.partitions, cfg.conns = o.partitions, o.partitions
	cfg.rateMBps = o.clusterRate
	name := fmt.Sprintf("raw-cluster-latency-%d", time.Now().UnixNano())
	if err := createReplicatedTopic(cluster.addr, name, o.partitions, 3); err != nil {
		return err
	}
	defer deleteTopic(cluster.addr, name)
	if err := createReplicatedTopic(single.addr, name, o.partitions, 1); err != nil {
		return err
	}
	defer deleteTopic(single.addr, name)
	runs := []struct {
		name string
		t    *target
		acks int16
	}{
		{"shale, 3 brokers, RF=3, acks=all", cluster, -1},
		{"shale, 3 brokers, RF=3, acks=1", cluster, 1},
		{"shale, 1 broker, RF=1, acks=1 (ceiling)", single, 1},
	}
	leaders := make([][]string, len(runs))
	for i, r := range runs {
		var err error
		if leaders[i], err = partitionLeaders(r.t.addr, name, o.partitions); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	fmt.Printf("cluster raw latency: %d connections (one per partition, to its leader) x %d requests in flight, %d-byte records in %d-byte batches, %g MB/s in all, %d round(s) of %s after %s of warm-up\n",
		cfg.conns, cfg.inflight, cfg.recordBytes, cfg.batchBytes, cfg.rateMBps, max(1, o.clusterRounds), cfg.duration, cfg.warmup)
	ms := make([]rawMeasure, len(runs))
	for round := range max(1, o.clusterRounds) {
		for k := range runs {
			i := (k + round) % len(runs)
			r := runs[i]
			rcfg := cfg
			rcfg.leaders = leaders[i]
			profile := ""
			if round == 0 && o.raw.profileDir != "" && r.t.httpAddr != "" {
				profile = filepath.Join(o.raw.profileDir, "cluster-raw-latency-"+strconv.Itoa(i))
			}
			m, err := measureRaw(r.t, profile, rcfg, func(t *target, cfg rawConfig) (rawResult, error) {
				return rawProduce(t.addr, name, r.acks, cfg)
			})
			if err != nil {
				return fmt.Errorf("raw latency, %s: %w", r.name, err)
			}
			ms[i].merge(m)
		}
	}
	ceil := ms[len(ms)-1].res
	var rows [][]string
	for i, r := range runs {
		m := ms[i]
		rows = append(rows, []string{r.name,
			m.res.percentile(0.5).Round(10 * time.Microsecond).String(),
			m.res.percentile(0.99).Round(10 * time.Microsecond).String(),
			m.res.percentile(0.999).Round(10 * time.Microsecond).String(),
			fmt.Sprintf("%.1f", m.res.mbps()),
			cpuCell(msPerMB(m.brokerCPU, m.res.bytes)),
			fmt.Sprintf("%.2fx", float64(m.res.percentile(0.99))/float64(ceil.percentile(0.99))),
		})
	}
	printTable([]string{fmt.Sprintf("cluster raw produce latency @%g MB/s (load %s)", cfg.rateMBps, loadAverage()),
		"p50", "p99", "p999", "achieved MB/s", "broker CPU ms/MB", "p99 vs ceiling"}, rows)
	fmt.Printf("  3 brokers, RF=3, acks=all: p99 %s (target < 5ms)\n", ms[0].res.percentile(0.99).Round(10*time.Microsecond))
	return nil
}

// partitionLeaders returns the address of each partition's leader.
func partitionLeaders(addr, name string, partitions int) ([]string, error) {
	var md kadm.Metadata
	err := withAdmin(addr, func(ctx context.Context, adm *kadm.Client) (err error) {
		md, err = adm.Metadata(ctx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[name]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("no metadata for %s: %v", name, td.Err)
	}
	out := make([]string, partitions)
	for p := range out {
		pd, ok := td.Partitions[int32(p)]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return nil, fmt.Errorf("%s/%d has no leader", name, p)
		}
		for _, b := range md.Brokers {
			if b.NodeID == pd.Leader {
				out[p] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
			}
		}
		if out[p] == "" {
			return nil, fmt.Errorf("%s/%d: leader %d is not among the brokers", name, p, pd.Leader)
		}
	}
	return out, nil
}

// profileRun saves a CPU profile of t's process taken during a run of
// o.duration when -profile names a directory, want is set and t serves
// /debug/pprof (with three brokers in one process, one profile holds the
// leaders and the followers). The channel is closed when it is saved.
func profileRun(t *target, o options, want bool, name string) <-chan struct{} {
	done := make(chan struct{})
	if !want || o.raw.profileDir == "" || t.httpAddr == "" || t.pid == 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := fetchProfile(t.httpAddr, "profile", filepath.Join(o.raw.profileDir, name+".pprof"), o.duration); err != nil {
			fmt.Fprintf(os.Stderr, "profile %s: %v\n", name, err)
		}
	}()
	return done
}

func cpuCell(msPerMB float64) string {
	if msPerMB < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", msPerMB)
}

// createReplicatedTopic creates a topic with rf replicas per partition and
// waits until every partition has a leader and all rf in sync.
func createReplicatedTopic(addr, name string, partitions, rf int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(partitions), int16(rf), nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return err
	}
	for {
		td, err := adm.ListTopics(ctx, name)
		if err == nil && td[name].Err == nil && len(td[name].Partitions) == partitions {
			ready := 0
			for _, p := range td[name].Partitions {
				if p.Leader >= 0 && len(p.ISR) == rf {
					ready++
				}
			}
			if ready == partitions {
				return nil
			}
		}
		if ctx.Err() != nil {
			return errors.New("the replicated topic's partitions did not all have a leader and a full ISR within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
