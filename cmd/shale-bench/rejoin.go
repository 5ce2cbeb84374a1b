package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/metadata"
)

// The rejoin run: three `shale broker` processes on an etcd embedded in
// this program, a topic of three replicas holding -rejoin-mb MiB. One
// follower is stopped (SIGTERM: controlled shutdown takes it out of every
// ISR), its partition logs are removed while its meta.properties stays (it
// comes back as the same broker id and directory, with an empty log, as
// after a disk replaced under a kept identity), and it is restarted. The
// time from the restart until etcd's partition state lists it in the ISR
// of every partition is printed beside the same run's reference: one
// connection per partition reading the same bytes from its leader with a
// raw Fetch loop over loopback, one request at a time, as a follower does.
// Rounds alternate between the two; each prints its median and maximum.

const rejoinTopic = "rejoin"

// rejoinRecordBytes is the value size of the records produced: large
// enough that producing the load is quick, the bytes to copy are what
// counts.
const rejoinRecordBytes = 1000

func runRejoin(o options) error {
	dir, etcdAddr, e, cleanup, err := startBenchEtcd("rejoin")
	if err != nil {
		return err
	}
	defer cleanup()
	c := &failoverCluster{o: o, etcd: etcdAddr, name: "bench-rejoin", ttl: 2 * time.Second, stop: make(chan struct{})}
	defer c.stopAll()
	for id := 0; id < 3; id++ {
		b := &failoverBroker{id: id, dir: filepath.Join(dir, strconv.Itoa(id)), kafkaAddr: freeAddr(), httpAddr: freeAddr()}
		c.brokers = append(c.brokers, b)
		if err := c.start(b); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cache, err := metadata.NewCache(ctx, metadata.NewStore(e.Client(), "/"+c.name+"/"), nil)
	if err != nil {
		return err
	}
	defer cache.Close()
	c.cache = cache
	partitions := max(1, o.rejoinPartitions)
	if err := createReplicatedTopic(c.brokers[0].kafkaAddr, rejoinTopic, partitions, 3); err != nil {
		return err
	}
	if err := produceMiB(c.brokers[0].kafkaAddr, rejoinTopic, o.rejoinMB); err != nil {
		return fmt.Errorf("producing %d MiB: %w", o.rejoinMB, err)
	}
	if _, err := waitFor(60*time.Second, func() bool {
		ts := c.cache.Snapshot().Topics[rejoinTopic]
		return inEveryISR(ts, 0, partitions) && inEveryISR(ts, 1, partitions) && inEveryISR(ts, 2, partitions)
	}); err != nil {
		return errors.New("the ISR after producing: not full within 60s")
	}

	ends, err := endOffsets(c.brokers[0].kafkaAddr, rejoinTopic, partitions)
	if err != nil {
		return err
	}
	// Rounds alternate between the reference and the rejoin, so that a
	// burst of load from elsewhere on the machine shows in both.
	var rejoins, healthies, refs []time.Duration
	var copied int64
	for range max(1, o.rejoinRounds) {
		// The reference first, from every partition's leader, on hot
		// data as the follower will read it.
		n, took, err := c.readFromLeaders(ends)
		if err != nil {
			return fmt.Errorf("reference fetch: %w", err)
		}
		refs = append(refs, took)
		copied = n
		healthy, rejoin, err := c.rejoinRound(c.brokers[2], partitions)
		if err != nil {
			return err
		}
		healthies = append(healthies, healthy)
		rejoins = append(rejoins, rejoin)
	}
	mb := float64(copied) / 1e6
	median := func(ds []time.Duration) time.Duration { return slices.Sorted(slices.Values(ds))[len(ds)/2] }
	row := func(name string, ds []time.Duration) []string {
		return []string{name, fmt.Sprintf("%s (%s)", median(ds).Round(time.Millisecond), slices.Max(ds).Round(time.Millisecond)),
			fmt.Sprintf("%.1f", mb), fmt.Sprintf("%.1f", mb/median(ds).Seconds()), fmt.Sprintf("%.2fx", median(refs).Seconds()/median(ds).Seconds())}
	}
	fmt.Printf("wiped follower rejoin, %d MiB produced to %d RF=3 partitions (%d-byte records, uncompressed), 3 broker processes, %d rounds (median, max), load %s\n",
		o.rejoinMB, partitions, rejoinRecordBytes, max(1, o.rejoinRounds), loadAverage())
	printTable([]string{"rejoin", "time", "MB", "MB/s", "vs reference"}, [][]string{
		row("follower restarted with empty logs, until in every ISR (etcd)", rejoins),
		{"  of which until its /healthz answered", fmt.Sprintf("%s (%s)", median(healthies).Round(time.Millisecond), slices.Max(healthies).Round(time.Millisecond)), "", "", ""},
		row("raw fetch of the same bytes from the leaders (reference)", refs),
	})
	return nil
}

// rejoinRound stops follower f with SIGTERM (controlled shutdown takes it
// out of every ISR), removes its partition logs, restarts it and returns
// the time from the restart until its /healthz answered and until etcd
// lists it in the ISR of every partition.
func (c *failoverCluster) rejoinRound(f *failoverBroker, partitions int) (healthy, rejoin time.Duration, err error) {
	f.cmd.Process.Signal(syscall.SIGTERM)
	<-f.exited
	if _, err := waitFor(30*time.Second, func() bool {
		ts := c.cache.Snapshot().Topics[rejoinTopic]
		return ts != nil && !slices.ContainsFunc(ts.Partitions, func(p metadata.Partition) bool { return slices.Contains(p.ISR, int32(f.id)) })
	}); err != nil {
		return 0, 0, fmt.Errorf("broker %d out of the ISR after its shutdown: %w", f.id, err)
	}
	// `shale broker` keeps its logs and meta.properties in DATA-DIR/log.
	wiped, err := wipePartitionLogs(filepath.Join(f.dir, "log"), rejoinTopic)
	if err != nil {
		return 0, 0, err
	}
	if wiped != partitions {
		return 0, 0, fmt.Errorf("broker %d held %d of the %d partition logs", f.id, wiped, partitions)
	}
	t0 := time.Now()
	if err := c.start(f); err != nil {
		return 0, 0, err
	}
	healthy = time.Since(t0)
	if c.o.raw.profileDir != "" {
		// The follower's CPU while it copies (the profile's shortest
		// length is a second: use -rejoin-mb large enough to fill it).
		path := filepath.Join(c.o.raw.profileDir, fmt.Sprintf("rejoin-follower-%d.pprof", time.Now().UnixNano()))
		profiled := make(chan struct{})
		defer func() { <-profiled }()
		go func() {
			defer close(profiled)
			if err := fetchProfile(f.httpAddr, "profile", path, time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "profile of the rejoining follower: %v\n", err)
			}
		}()
	}
	in, err := waitFor(10*time.Minute, func() bool { return inEveryISR(c.cache.Snapshot().Topics[rejoinTopic], int32(f.id), partitions) })
	if err != nil {
		return 0, 0, fmt.Errorf("broker %d back in every ISR: %w", f.id, err)
	}
	return healthy, in.Sub(t0), nil
}

// inEveryISR reports whether broker id is in the ISR of each of the
// topic's partitions (and the topic has them all).
func inEveryISR(ts *metadata.TopicState, id int32, partitions int) bool {
	if ts == nil || len(ts.Partitions) != partitions {
		return false
	}
	for _, p := range ts.Partitions {
		if !slices.Contains(p.ISR, id) {
			return false
		}
	}
	return true
}

// wipePartitionLogs removes the logs of topic's partitions from a
// broker's data directory (Kafka's TOPIC-N directories), keeping
// everything else: meta.properties, the clean-shutdown marker. It returns
// how many it removed.
func wipePartitionLogs(dataDir, topic string) (int, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ent := range ents {
		if _, ok := cutPartitionDir(ent.Name(), topic); !ok || !ent.IsDir() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dataDir, ent.Name())); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// cutPartitionDir reports whether name is the directory of one of topic's
// partitions, TOPIC-N, and returns N.
func cutPartitionDir(name, topic string) (int, bool) {
	s, ok := strings.CutPrefix(name, topic+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// produceMiB produces mib MiB of rejoinRecordBytes-byte records to topic,
// spread over its partitions, with acks=all and uncompressed (the values
// repeat: compressed, the log would hold a small fraction of mib).
func produceMiB(addr, topic string, mib int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	value := recordValue(rejoinRecordBytes)
	errc := make(chan error, 1)
	for sent := 0; sent < mib<<20; sent += len(value) {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// readFromLeaders reads every partition of the rejoin topic from offset 0
// to ends[partition] from its leader, one connection per partition at
// once, and returns the record batch bytes read and the time it took.
func (c *failoverCluster) readFromLeaders(ends []int64) (int64, time.Duration, error) {
	ts := c.cache.Snapshot().Topics[rejoinTopic]
	if ts == nil || len(ts.Partitions) != len(ends) {
		return 0, 0, errors.New("the topic's partitions are not in the metadata")
	}
	type result struct {
		bytes int64
		err   error
	}
	results := make(chan result, len(ends))
	start := time.Now()
	for _, p := range ts.Partitions {
		if p.Leader < 0 || int(p.Leader) >= len(c.brokers) {
			return 0, 0, fmt.Errorf("partition %d has no leader", p.Index)
		}
		go func(addr string, index int32) {
			n, _, err := readPartition(addr, rejoinTopic, index, ends[index])
			results <- result{n, err}
		}(c.brokers[p.Leader].kafkaAddr, p.Index)
	}
	var total int64
	var err error
	for range ts.Partitions {
		r := <-results
		total += r.bytes
		err = errors.Join(err, r.err)
	}
	return total, time.Since(start), err
}

// readPartition reads one partition from offset 0 to end, one raw Fetch
// (1 MiB) at a time, and returns the record batch bytes and records read.
// A fetch that finds nothing yet (a new leader's high watermark still
// below end) waits in the broker and is asked again.
func readPartition(addr, topic string, partition int32, end int64) (bytes, records int64, err error) {
	ff, err := newFetchFrame(topic, []int32{partition}, 1<<20, 1<<20)
	if err != nil {
		return 0, 0, err
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	r := bufio.NewReaderSize(conn, 64<<10)
	var buf, body []byte
	var off int64
	for corr := int32(0); off < end; corr++ {
		setCorrelationID(ff.frame, corr)
		ff.setOffset(0, off)
		if _, err := conn.Write(ff.frame); err != nil {
			return bytes, records, err
		}
		if body, buf, err = readResponse(r, buf, corr); err != nil {
			return bytes, records, err
		}
		f, err := parseFetchResponse(body)
		if err != nil {
			return bytes, records, err
		}
		bytes += f.bytes
		records += f.records
		if f.next > off {
			off = f.next
		}
	}
	return bytes, records, nil
}
