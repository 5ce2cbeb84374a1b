package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure produce or consume throughput and latency against a cluster",
		Long: `Load tests in the manner of Kafka's producer and consumer perf tests: a
progress line every second and a final line with latency percentiles.
Ctrl-C ends a run early and still prints the final line.`,
		Args: noCommand,
		RunE: helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newBenchProduceCmd(), newBenchConsumeCmd())
	return cmd
}

type benchProduceFlags struct {
	topic       string
	records     int64
	duration    time.Duration
	recordSize  int
	throughput  float64
	acks        string
	compression string
	partitions  int32
	interval    time.Duration
}

func newBenchProduceCmd() *cobra.Command {
	var f benchProduceFlags
	cmd := &cobra.Command{
		Use:   "produce",
		Short: "Produce records as fast as allowed and report throughput and latency",
		Long: `Produces --records records of --record-size bytes (or for --duration) to
--topic, created with --partitions partitions if it does not exist. Latency
is from handing a record to the client to its acknowledgement. Every
--interval a line reports that interval; the last line the whole run with
its p50, p99 and p99.9 latency.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBenchProduce(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.topic, "topic", "shale-bench", "topic to produce to")
	fs.Int64Var(&f.records, "records", 1_000_000, "records to produce (0: no limit, stop after --duration)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (0: no limit, stop after --records)")
	fs.IntVar(&f.recordSize, "record-size", 100, "value size of each record in bytes")
	fs.Float64Var(&f.throughput, "throughput", -1, "records per second at most (-1: unlimited)")
	fs.StringVar(&f.acks, "acks", "all", "acknowledgements to wait for: 0, 1 or all")
	fs.StringVar(&f.compression, "compression", "none", "batch compression: none, gzip, snappy, lz4 or zstd")
	fs.Int32Var(&f.partitions, "partitions", 1, "partitions of --topic when this command creates it")
	fs.DurationVar(&f.interval, "interval", time.Second, "time between progress lines")
	return cmd
}

type benchConsumeFlags struct {
	topic    string
	records  int64
	duration time.Duration
	interval time.Duration
}

func newBenchConsumeCmd() *cobra.Command {
	var f benchConsumeFlags
	cmd := &cobra.Command{
		Use:   "consume",
		Short: "Consume a topic from its start and report throughput and latency",
		Long: `Consumes --topic from the oldest record of every partition, until --records
records, --duration, or (when neither is given) the end every partition had
at start. Latency is end to end: from a record's timestamp to its arrival
here, so it is meaningful when bench produce runs at the same time (on a
backlog it is the records' age). Every --interval a line reports that
interval; the last line the whole run with its p50, p99 and p99.9 latency.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBenchConsume(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.topic, "topic", "shale-bench", "topic to consume")
	fs.Int64Var(&f.records, "records", 0, "records to consume (0: up to the end at start, or until --duration)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (0: no limit)")
	fs.DurationVar(&f.interval, "interval", time.Second, "time between progress lines")
	return cmd
}

// benchStats accumulates one run: totals with a latency histogram, and the
// current reporting interval.
type benchStats struct {
	mu    sync.Mutex
	total benchWindow
	win   benchWindow
	hist  latencyHist
}

type benchWindow struct {
	records, bytes int64
	latSum, latMax time.Duration
}

func (w *benchWindow) add(bytes int, lat time.Duration) {
	w.records++
	w.bytes += int64(bytes)
	w.latSum += lat
	w.latMax = max(w.latMax, lat)
}

func (s *benchStats) add(bytes int, lat time.Duration) {
	s.mu.Lock()
	s.total.add(bytes, lat)
	s.win.add(bytes, lat)
	s.hist.record(lat)
	s.mu.Unlock()
}

// rates formats w over elapsed: throughput and latency.
func (w benchWindow) rates(elapsed time.Duration) string {
	secs := max(elapsed.Seconds(), 1e-9)
	var avg time.Duration
	if w.records > 0 {
		avg = w.latSum / time.Duration(w.records)
	}
	return fmt.Sprintf("%.1f records/s, %.2f MB/s, latency avg %.2f ms, max %.2f ms",
		float64(w.records)/secs, float64(w.bytes)/1e6/secs, ms(avg), ms(w.latMax))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startReports prints a progress line every interval until the returned
// func is called; that func returns once the reporter has stopped.
func (s *benchStats) startReports(out io.Writer, interval time.Duration) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		s.report(out, interval, quit)
	}()
	return func() {
		close(quit)
		<-exited
	}
}

func (s *benchStats) report(out io.Writer, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			w := s.win
			s.win = benchWindow{}
			s.mu.Unlock()
			fmt.Fprintf(out, "%d records, %s\n", w.records, w.rates(now.Sub(last)))
			last = now
		}
	}
}

// final is the last line: the whole run with latency percentiles.
func (s *benchStats) final(verb string, elapsed time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%s %d records in %.2fs: %s, p50 %.2f ms, p99 %.2f ms, p999 %.2f ms",
		verb, s.total.records, elapsed.Seconds(), s.total.rates(elapsed),
		ms(s.hist.quantile(0.50)), ms(s.hist.quantile(0.99)), ms(s.hist.quantile(0.999)))
}

func runBenchProduce(cmd *cobra.Command, f benchProduceFlags) error {
	switch {
	case f.records < 0:
		return fmt.Errorf("--records %d: want 0 or more", f.records)
	case f.records == 0 && f.duration <= 0:
		return errors.New("--records 0 needs a --duration")
	case f.recordSize < 0:
		return fmt.Errorf("--record-size %d: want 0 or more", f.recordSize)
	case f.throughput == 0 || f.throughput < -1:
		return fmt.Errorf("--throughput %g: want records per second, or -1 for unlimited", f.throughput)
	case f.interval <= 0:
		return fmt.Errorf("--interval %s: want a positive duration", f.interval)
	}
	opts, err := producerOpts(cmd, f.acks, f.compression)
	if err != nil {
		return err
	}
	cl, err := newClient(cmd, append(opts, kgo.DefaultProduceTopic(f.topic))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := ensureTopic(cmd, cl, f.topic, f.partitions); err != nil {
		return err
	}

	// produceCtx ends on Ctrl-C (records not yet sent are given up);
	// ctx also at the end of --duration, which only stops sending.
	produceCtx, release := onInterrupt(cmd.Context())
	defer release()
	ctx := produceCtx
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}

	// One payload of random letters for every record, as Kafka's perf
	// test does: compressible like text, not like zeros.
	payload := make([]byte, f.recordSize)
	for i := range payload {
		payload[i] = 'A' + byte(rand.IntN(26))
	}

	var (
		stats    benchStats
		errMu    sync.Mutex
		firstErr error
		failed   = make(chan struct{})
	)
	promise := func(start time.Time) func(*kgo.Record, error) {
		return func(r *kgo.Record, err error) {
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return // not sent: interrupted
				}
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
					close(failed)
				}
				errMu.Unlock()
				return
			}
			stats.add(len(r.Value), time.Since(start))
		}
	}

	out := cmd.OutOrStdout()
	stopReports := stats.startReports(out, f.interval)
	begin := time.Now()
	var gap time.Duration
	if f.throughput > 0 {
		gap = time.Duration(float64(time.Second) / f.throughput)
	}
	pace := time.NewTimer(0)
	defer pace.Stop()
send:
	for i := int64(0); f.records == 0 || i < f.records; i++ {
		if gap > 0 {
			// Sleep only when more than a millisecond ahead, so that
			// high rates are not dominated by timer overhead.
			if ahead := time.Until(begin.Add(time.Duration(i) * gap)); ahead > time.Millisecond {
				pace.Reset(ahead)
				select {
				case <-pace.C:
				case <-ctx.Done():
					break send
				case <-failed:
					break send
				}
			}
		}
		select {
		case <-ctx.Done():
			break send
		case <-failed:
			break send
		default:
		}
		cl.Produce(produceCtx, &kgo.Record{Value: payload}, promise(time.Now()))
	}
	// Records already sent are waited for, also after Ctrl-C or the end
	// of --duration; a second Ctrl-C ends the process.
	release()
	cl.Flush(context.Background())
	elapsed := time.Since(begin)
	stopReports()
	fmt.Fprintln(out, stats.final("produced", elapsed))
	errMu.Lock()
	defer errMu.Unlock()
	if firstErr != nil {
		return produceError(cl, f.topic, firstErr)
	}
	return nil
}

// ensureTopic creates topic with partitions partitions (the cluster's
// default replication) unless it exists.
func ensureTopic(cmd *cobra.Command, cl *cliClient, topic string, partitions int32) error {
	if partitions < 1 {
		return fmt.Errorf("--partitions %d: want 1 or more", partitions)
	}
	ctx, cancel := cl.context(cmd.Context())
	defer cancel()
	_, err := cl.admin().CreateTopic(ctx, partitions, -1, nil, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %q: %w", topic, cl.explain(err))
	}
	return nil
}

func runBenchConsume(cmd *cobra.Command, f benchConsumeFlags) error {
	switch {
	case f.records < 0:
		return fmt.Errorf("--records %d: want 0 or more", f.records)
	case f.interval <= 0:
		return fmt.Errorf("--interval %s: want a positive duration", f.interval)
	}
	probe, err := newClient(cmd)
	if err != nil {
		return err
	}
	pctx, pcancel := probe.context(cmd.Context())
	ranges, err := resolveOffsets(pctx, probe.admin(), f.topic, -1, offsetSpec{kind: offsetStart})
	pcancel()
	probe.Close()
	if err != nil {
		return probe.explain(err)
	}
	at := make(map[int32]kgo.Offset, len(ranges))
	for p, r := range ranges {
		at[p] = kgo.NewOffset().At(r.from)
	}
	cl, err := newClient(cmd, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{f.topic: at}))
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, release := onInterrupt(cmd.Context())
	defer release()
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	untilEnd := f.records == 0 && f.duration <= 0
	atEnd := func() bool {
		for _, r := range ranges {
			if r.from < r.end {
				return false
			}
		}
		return true
	}

	var stats benchStats
	out := cmd.OutOrStdout()
	stopReports := stats.startReports(out, f.interval)
	begin := time.Now()
	var consumed int64
	var runErr error
	for ctx.Err() == nil && !(untilEnd && atEnd()) && (f.records == 0 || consumed < f.records) {
		maxPoll := 0
		if f.records > 0 {
			maxPoll = int(min(f.records-consumed, math.MaxInt32))
		}
		fs := cl.PollRecords(ctx, maxPoll)
		if ctx.Err() != nil {
			break
		}
		for _, fe := range fs.Errors() {
			if !kerr.IsRetriable(fe.Err) && !errors.Is(fe.Err, context.Canceled) && runErr == nil {
				runErr = fmt.Errorf("topic %q partition %d: %w", fe.Topic, fe.Partition, cl.explain(fe.Err))
			}
		}
		if runErr != nil {
			break
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			consumed++
			stats.add(len(r.Key)+len(r.Value), max(now.Sub(r.Timestamp), 0))
			if pr, ok := ranges[r.Partition]; ok && r.Offset+1 > pr.from {
				pr.from = r.Offset + 1
				ranges[r.Partition] = pr
			}
		})
	}
	elapsed := time.Since(begin)
	stopReports()
	fmt.Fprintln(out, stats.final("consumed", elapsed))
	return runErr
}

// latencyHist is a log-linear histogram of latencies in microseconds, in
// the manner of HdrHistogram: exact below 128µs, then 64 buckets per
// power of two (under 1.6% relative error), over the whole range of
// time.Duration (under 2^54µs). Its memory (25 KiB) is fixed whatever the
// number of samples.
type latencyHist struct {
	counts [64*47 + 128]uint64
	n      uint64
	max    time.Duration
}

func histBucket(us uint64) int {
	if us < 128 {
		return int(us)
	}
	e := bits.Len64(us) - 7 // us>>e is in [64, 128)
	return 64*e + int(us>>e)
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < 128 {
		return float64(i)
	}
	e := i/64 - 1
	m := uint64(i%64 + 64)
	return float64(m<<e) + float64(uint64(1)<<e)/2
}

func (h *latencyHist) record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[histBucket(us)]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the latency at or under which a q share of the samples
// lie (0 without samples): the middle of its bucket, never more than the
// largest sample, and the largest sample for q = 1.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	if rank >= h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(histValue(i)*float64(time.Microsecond)), h.max)
		}
	}
	return h.max
}
