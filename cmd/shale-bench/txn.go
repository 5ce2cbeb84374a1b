package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// txnOptions are the txn run's settings.
type txnOptions struct {
	// duration is the timed length of each produce run and the most an
	// exactly-once copy runs.
	duration time.Duration
	// records ends a transactional produce run early once its timed
	// transactions hold this many records (0: no limit), so that a fast
	// broker's topic stays small enough to read back.
	records int
	// abortEvery aborts every abortEvery-th transaction of the produce
	// runs (0: none), so that read_committed has aborted records to skip.
	abortEvery int
}

// txnSizes are the records of each transaction of the produce runs, one
// run of each.
var txnSizes = []int{1000, 100}

const (
	txnPartitions = 4
	// txnCopyMax is the most records an exactly-once copy's transaction
	// carries (PollRecords' limit).
	txnCopyMax = 1000
	// txnReadTimeout bounds each read of a topic and each copy, and
	// each produce run beyond its duration: a broker gone fails the run.
	txnReadTimeout = 2 * time.Minute
)

// The records of committed transactions start with txnCommitted, those of
// aborted ones with txnAborted: a read_committed consumer that returns one
// of the latter is not measured but reported.
const (
	txnCommitted = 'c'
	txnAborted   = 'a'
)

// txnProduced is what one transactional produce run wrote and how fast.
type txnProduced struct {
	timed         throughput      // acknowledged records of the timed transactions, aborted ones among them
	txns, aborted int             // timed transactions, and of them aborted
	flushes       []time.Duration // BeginTransaction to Flush returning (every record acknowledged), each timed transaction
	commits       []time.Duration // EndTransaction(TryCommit) of each timed commit
	first         time.Duration   // the untimed first transaction: InitProducerId, finding and loading the coordinator
	// addPartitions counts the AddPartitionsToTxn requests the producer
	// sent in all its transactions, the first among them: more than one
	// a transaction are retries (CONCURRENT_TRANSACTIONS while the last
	// one's markers are written, which franz-go backs off 20 ms from).
	addPartitions int64
	// What the topic then holds, the first transaction's records among
	// them: all records, and those of committed transactions.
	records, committed int64
}

// txnTarget is one broker's side of the run: its topics and figures.
type txnTarget struct {
	t      *target
	topics map[int]string // by transaction size
	idem   string         // the idempotent run's topic
	copyTo string
	runs   map[int]txnProduced
	idemTP throughput
}

// runTxn measures Kafka transactions with franz-go against Shale, beside
// kfake, the ceiling, in the same run: a transactional producer's
// throughput and commit latency for two transaction sizes (and Shale's
// and kfake's idempotent produce without transactions, what the
// transactions cost); a read_committed read of what it wrote beside a
// read_uncommitted one (skipping aborted transactions, reading up to the
// last stable offset); and an exactly-once copy (GroupTransactSession)
// of it to another topic.
func runTxn(o options, shale, ceiling *target) error {
	o.txn.duration = max(o.txn.duration, time.Millisecond)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	var sides []*txnTarget
	for _, t := range []*target{ceiling, shale} {
		s := &txnTarget{t: t, topics: map[int]string{}, runs: map[int]txnProduced{},
			idem: "txn-idem-" + stamp, copyTo: "txn-copy-" + stamp}
		names := []string{s.idem, s.copyTo}
		for _, n := range txnSizes {
			s.topics[n] = fmt.Sprintf("txn-%d-%s", n, stamp)
			names = append(names, s.topics[n])
		}
		for _, name := range names {
			if err := createTopicNamed(t.addr, name, txnPartitions); err != nil {
				return fmt.Errorf("txn: creating %s on %s: %w", name, t.name, err)
			}
			defer deleteTopic(t.addr, name)
		}
		sides = append(sides, s)
	}
	k, s := sides[0], sides[1]
	limit := "transactional runs end early at " + strconv.Itoa(o.txn.records) + " records"
	if o.txn.records <= 0 {
		limit = "no record limit"
	}
	aborts := "no transaction aborted"
	if o.txn.abortEvery > 0 {
		aborts = fmt.Sprintf("every %s transaction aborted (its records count in rec/s, not in the commit latency)", ordinal(o.txn.abortEvery))
	}
	fmt.Printf("txn: franz-go, one transactional producer (acks=all, linger 5ms, round-robin over %d partitions; each transaction produced async, flushed, then EndTransaction; transactions before KIP-890 part 2 on both brokers, as Shale speaks them), %d-byte records, %s a run (%s) after an untimed first transaction; %s; kfake the ceiling, and the idempotent produce without transactions, same client settings, beside\n",
		txnPartitions, o.recordSize, o.txn.duration, limit, aborts)

	for _, n := range txnSizes {
		for _, side := range sides {
			r, err := txnProduce(side.t.addr, side.topics[n], n, o)
			if err != nil {
				return fmt.Errorf("txn: transactions of %d against %s: %w", n, side.t.name, err)
			}
			side.runs[n] = r
		}
	}
	for _, side := range sides {
		tp, err := idempotentProduce(side.t.addr, side.idem, o)
		if err != nil {
			return fmt.Errorf("txn: idempotent produce against %s: %w", side.t.name, err)
		}
		side.idemTP = tp
	}

	mb := func(t throughput) string { return fmt.Sprintf("%.1f", t.perSec()*float64(o.recordSize)/1e6) }
	rate := func(t throughput) string { return fmt.Sprintf("%.0f", t.perSec()) }
	ratio := func(a, b throughput) string { return ratioCell(a.perSec() / b.perSec()) }
	var rows [][]string
	for _, n := range txnSizes {
		sr, kr := s.runs[n].timed, k.runs[n].timed
		rows = append(rows, []string{fmt.Sprintf("transactions of %d", n), rate(sr), mb(sr), rate(kr), mb(kr),
			ratio(sr, kr), ratio(sr, s.idemTP), ratio(kr, k.idemTP)})
	}
	rows = append(rows, []string{"idempotent, no transactions", rate(s.idemTP), mb(s.idemTP), rate(k.idemTP), mb(k.idemTP), ratio(s.idemTP, k.idemTP), "1x", "1x"})
	printTable([]string{"txn produce", "shale rec/s", "shale MB/s", "kfake rec/s", "kfake MB/s", "shale/kfake", "shale / shale idempotent", "kfake / kfake idempotent"}, rows)

	// Where a transaction's time goes.
	fmt.Println()
	rows = nil
	lat := func(ds []time.Duration, p int) string {
		if len(ds) == 0 {
			return "-"
		}
		return pct(ds, p).Round(10 * time.Microsecond).String()
	}
	for _, n := range txnSizes {
		for _, side := range []*txnTarget{s, k} {
			r := side.runs[n]
			rows = append(rows, []string{fmt.Sprintf("%s, transactions of %d", side.t.name, n),
				(r.timed.elapsed / time.Duration(max(1, r.txns))).Round(10 * time.Microsecond).String(),
				lat(r.flushes, 50), lat(r.flushes, 99), lat(r.commits, 50), lat(r.commits, 99),
				strconv.Itoa(len(r.commits)), strconv.Itoa(r.aborted),
				fmt.Sprintf("%.2f", float64(r.addPartitions)/float64(r.txns+1)),
				r.first.Round(time.Millisecond).String()})
		}
	}
	printTable([]string{"txn phases", "mean txn", "produce+Flush p50", "p99", "EndTransaction commit p50", "p99", "commits", "aborts", "AddPartitionsToTxn/txn", "first txn"}, rows)
	fmt.Println("  produce+Flush: BeginTransaction to every record acknowledged; AddPartitionsToTxn/txn: requests the producer sent a transaction, above 1 retries of CONCURRENT_TRANSACTIONS (the last transaction's markers still being written), franz-go backing off 20 ms each; first txn: the untimed first transaction (InitProducerId, finding and loading the coordinator)")

	// Each side reads back what it wrote: all of it read_uncommitted, the
	// committed part read_committed; kfake first, as in the produce runs.
	fmt.Println()
	type read struct {
		committed, uncommitted throughput
		passes                 [2]int // read_committed, read_uncommitted
		leaked                 int64
	}
	reads := map[*txnTarget]map[int]read{k: {}, s: {}}
	minRead := o.txn.duration / 4
	for _, n := range txnSizes {
		for _, side := range sides {
			r := side.runs[n]
			c, cp, leaked, err := txnConsume(side.t.addr, side.topics[n], true, r.committed, minRead, o)
			if err != nil {
				return fmt.Errorf("txn: read_committed of %s on %s: %w", side.topics[n], side.t.name, err)
			}
			if leaked > 0 && side == s {
				return fmt.Errorf("txn: read_committed of %s on %s returned %d records of aborted transactions", side.topics[n], side.t.name, leaked)
			}
			u, up, _, err := txnConsume(side.t.addr, side.topics[n], false, r.records, minRead, o)
			if err != nil {
				return fmt.Errorf("txn: read_uncommitted of %s on %s: %w", side.topics[n], side.t.name, err)
			}
			reads[side][n] = read{c, u, [2]int{cp, up}, leaked}
		}
	}
	rows = nil
	for _, n := range txnSizes {
		sr, kr := reads[s][n], reads[k][n]
		rows = append(rows,
			[]string{fmt.Sprintf("read_committed, transactions of %d", n), rate(sr.committed), mb(sr.committed), rate(kr.committed), mb(kr.committed), ratio(sr.committed, kr.committed)},
			[]string{fmt.Sprintf("read_uncommitted, transactions of %d", n), rate(sr.uncommitted), mb(sr.uncommitted), rate(kr.uncommitted), mb(kr.uncommitted), ratio(sr.uncommitted, kr.uncommitted)})
	}
	printTable([]string{"txn consume (the topics just written)", "shale rec/s", "shale MB/s", "kfake rec/s", "kfake MB/s", "shale/kfake"}, rows)
	fmt.Printf("  each read: one client, passes of the topic from offset 0 to its end, seeking back, until %s has passed; rec/s and MB/s count the records returned (read_committed: of committed transactions) over the time from the client's start\n", minRead)
	// Time a pass takes, read_committed over read_uncommitted.
	perPass := func(r read) float64 {
		return (r.committed.elapsed.Seconds() / float64(r.passes[0])) / (r.uncommitted.elapsed.Seconds() / float64(r.passes[1]))
	}
	for _, n := range txnSizes {
		sr, kr := reads[s][n], reads[k][n]
		fmt.Printf("  transactions of %d: read_committed returns %d of shale's %d records (kfake %d of %d), skipping the aborted; a pass takes %.2fx the time of read_uncommitted's on shale, %.2fx on kfake; passes read_committed/read_uncommitted: shale %d/%d, kfake %d/%d\n",
			n, s.runs[n].committed, s.runs[n].records, k.runs[n].committed, k.runs[n].records,
			perPass(sr), perPass(kr), sr.passes[0], sr.passes[1], kr.passes[0], kr.passes[1])
		if kr.leaked > 0 {
			fmt.Printf("  transactions of %d: kfake's read_committed also returned %d records of aborted transactions (a kfake bug; shale's returned none), not counted\n", n, kr.leaked)
		}
	}

	// The exactly-once copy of the largest transactions' topic.
	fmt.Println()
	in := txnSizes[0]
	copies := map[*txnTarget]txnCopied{}
	for _, side := range sides {
		c, err := eosCopy(side.t.addr, side.topics[in], side.copyTo, side.runs[in].committed, o)
		if err != nil {
			return fmt.Errorf("txn: exactly-once copy on %s: %w", side.t.name, err)
		}
		if c.leaked > 0 && side == s {
			return fmt.Errorf("txn: exactly-once copy on %s: read_committed returned %d records of aborted transactions", side.t.name, c.leaked)
		}
		copies[side] = c
	}
	sc, kc := copies[s], copies[k]
	printTable([]string{fmt.Sprintf("exactly-once copy, up to %d records a transaction", txnCopyMax), "shale rec/s", "shale MB/s", "kfake rec/s", "kfake MB/s", "shale/kfake"}, [][]string{
		{"GroupTransactSession", rate(sc.timed), mb(sc.timed), rate(kc.timed), mb(kc.timed), ratio(sc.timed, kc.timed)},
	})
	fmt.Printf("  read_committed from the transactions-of-%d topic, produced to another of %d partitions, the group's offsets committed in each transaction; timed from the first transaction's end for %s or to the input's end; shale %d transactions of %.0f records on average (%d aborted by a rebalance), kfake %d of %.0f (%d); beside the plain transactions of %d: shale %s, kfake %s\n",
		in, txnPartitions, o.txn.duration, sc.txns, sc.avg(), sc.aborted, kc.txns, kc.avg(), kc.aborted, in,
		ratioCell(sc.timed.perSec()/s.runs[in].timed.perSec()), ratioCell(kc.timed.perSec()/k.runs[in].timed.perSec()))
	if kc.leaked > 0 {
		fmt.Printf("  kfake's read_committed returned %d records of aborted transactions to the copy (a kfake bug), skipped\n", kc.leaked)
	}
	return nil
}

// ratioCell prints a ratio with two significant digits at least.
func ratioCell(r float64) string {
	if r < 0.1 {
		return fmt.Sprintf("%.3fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return strconv.Itoa(n) + "th"
	case n%10 == 1:
		return strconv.Itoa(n) + "st"
	case n%10 == 2:
		return strconv.Itoa(n) + "nd"
	case n%10 == 3:
		return strconv.Itoa(n) + "rd"
	}
	return strconv.Itoa(n) + "th"
}

// txnClientOpts are the clients' settings of the txn run, transactional
// or not: as producerOpts, with acks=all and idempotence, which
// transactions require, and the transactions Shale speaks (classicTxns).
func txnClientOpts(addr, topic string, o options, more ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.MaxVersions(classicTxns()),
		kgo.SeedBrokers(addr),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedRecords(1 << 20),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	}
	return append(append(opts, o.clientOpts...), more...)
}

// classicTxns are franz-go's versions with EndTxn at most v4: without
// v5 the client keeps to the transactions before KIP-890 part 2
// (AddPartitionsToTxn for each transaction's partitions, no epoch bump at
// each end), the ones Shale speaks (it advertises no transaction.version
// feature), where kfake, which advertises transaction.version 2, would
// otherwise be measured on the other protocol.
func classicTxns() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	return v
}

// txnValue is a record value of n bytes starting with mark.
func txnValue(n int, mark byte) []byte {
	v := make([]byte, max(1, n))
	for i := range v {
		v[i] = 'x'
	}
	v[0] = mark
	return v
}

// produceErrs counts the records a produce run failed and keeps the first
// error.
type produceErrs struct {
	mu    sync.Mutex
	n     int
	first error
}

func (p *produceErrs) promise(_ *kgo.Record, err error) {
	if err == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		p.first = err
	}
	p.n++
}

func (p *produceErrs) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return nil
	}
	return fmt.Errorf("%d records failed: %w", p.n, p.first)
}

// requestCounter counts the requests a client writes of one key.
type requestCounter struct {
	key int16
	n   atomic.Int64
}

func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == c.key && err == nil {
		c.n.Add(1)
	}
}

var _ kgo.HookBrokerWrite = (*requestCounter)(nil)

// txnProduce runs transactions of size records against topic with a
// producer of its own: the first untimed, then for o.txn.duration or
// until they hold o.txn.records (and at least o.txn.abortEvery of them,
// so that one aborts), every o.txn.abortEvery-th aborted.
func txnProduce(addr, topic string, size int, o options) (txnProduced, error) {
	id := fmt.Sprintf("shale-bench-%s-%d", topic, time.Now().UnixNano())
	adds := &requestCounter{key: 24} // AddPartitionsToTxn
	cl, err := kgo.NewClient(txnClientOpts(addr, topic, o, kgo.TransactionalID(id), kgo.WithHooks(adds))...)
	if err != nil {
		return txnProduced{}, err
	}
	defer cl.Close()
	committed, aborted := txnValue(o.recordSize, txnCommitted), txnValue(o.recordSize, txnAborted)
	// Only a broker gone for minutes ends the context: EndTransaction
	// cancelled may leave the client not knowing the outcome, which
	// fails the run all the same.
	ctx, cancel := context.WithTimeout(context.Background(), o.txn.duration+txnReadTimeout)
	defer cancel()
	var errs produceErrs
	var r txnProduced
	one := func(commit bool) (flushed, ended time.Duration, err error) {
		t0 := time.Now()
		if err := cl.BeginTransaction(); err != nil {
			return 0, 0, err
		}
		v := aborted
		if commit {
			v = committed
		}
		for range size {
			cl.Produce(ctx, &kgo.Record{Value: v}, errs.promise)
		}
		if err := cl.Flush(ctx); err != nil {
			return 0, 0, err
		}
		if err := errs.err(); err != nil {
			return 0, 0, err
		}
		flushed = time.Since(t0)
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		t1 := time.Now()
		if err := cl.EndTransaction(ctx, end); err != nil {
			return 0, 0, fmt.Errorf("EndTransaction (commit %v): %w", commit, err)
		}
		r.records += int64(size)
		if commit {
			r.committed += int64(size)
		}
		return flushed, time.Since(t1), nil
	}
	start := time.Now()
	if _, _, err := one(true); err != nil {
		return r, fmt.Errorf("first transaction: %w", err)
	}
	r.first = time.Since(start)
	start = time.Now()
	more := func(i int) bool {
		if i < o.txn.abortEvery {
			return true // one aborts, however short the run
		}
		return time.Since(start) < o.txn.duration && (o.txn.records <= 0 || i*size < o.txn.records)
	}
	for i := 0; more(i); i++ {
		commit := o.txn.abortEvery <= 0 || i%o.txn.abortEvery != o.txn.abortEvery-1
		flushed, ended, err := one(commit)
		if err != nil {
			return r, fmt.Errorf("transaction %d: %w", i+1, err)
		}
		r.txns++
		r.flushes = append(r.flushes, flushed)
		if commit {
			r.commits = append(r.commits, ended)
		} else {
			r.aborted++
		}
	}
	r.timed = throughput{records: int64(r.txns * size), elapsed: time.Since(start)}
	r.addPartitions = adds.n.Load()
	return r, nil
}

// idempotentProduce produces to topic for o.txn.duration with the txn
// run's client settings and no transactions, after one untimed record
// (InitProducerId).
func idempotentProduce(addr, topic string, o options) (throughput, error) {
	cl, err := kgo.NewClient(txnClientOpts(addr, topic, o)...)
	if err != nil {
		return throughput{}, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), o.txn.duration+txnReadTimeout)
	defer cancel()
	value := txnValue(o.recordSize, txnCommitted)
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
		return throughput{}, fmt.Errorf("first record: %w", err)
	}
	var acked atomic.Int64
	var errs produceErrs
	done := func(r *kgo.Record, err error) {
		if err == nil {
			acked.Add(1)
		}
		errs.promise(r, err)
	}
	start := time.Now()
	for time.Since(start) < o.txn.duration && ctx.Err() == nil {
		for range 1000 {
			cl.Produce(ctx, &kgo.Record{Value: value}, done)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return throughput{}, err
	}
	tp := throughput{records: acked.Load(), elapsed: time.Since(start)}
	return tp, errs.err()
}

// fetchErr is the first error of fs that is not its context ending.
func fetchErr(fs kgo.Fetches) error {
	var first error
	fs.EachError(func(t string, p int32, err error) {
		if first == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			first = fmt.Errorf("%s/%d: %w", t, p, err)
		}
	})
	return first
}

// txnConsume reads topic from its start to its end, read_committed or
// not, in passes with one client, seeking back to the start after each,
// until minTime has passed since the client's start and it has read at
// least two passes: a small topic read once would time little more than
// the client's start. A pass ends once
// it has returned want records: read_committed, want records of committed
// transactions, so that it reads the whole topic even if the broker
// returns some of aborted ones, which it counts (leaked). It checks that
// no pass returns more than want.
func txnConsume(addr, topic string, committed bool, want int64, minTime time.Duration, o options) (tp throughput, passes int, leaked int64, err error) {
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	start := time.Now()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(iso),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(16 << 20),
	}, o.clientOpts...)...)
	if err != nil {
		return throughput{}, 0, 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), txnReadTimeout)
	defer cancel()
	toStart := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for p := range int32(txnPartitions) {
		toStart[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: 0}
	}
	var total int64
	for {
		var got int64
		for got < want {
			fs := cl.PollFetches(ctx)
			if err := fetchErr(fs); err != nil {
				return throughput{}, passes, leaked, err
			}
			if ctx.Err() != nil {
				return throughput{}, passes, leaked, fmt.Errorf("pass %d read %d records of %d in %s", passes+1, got, want, txnReadTimeout)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if committed && len(r.Value) > 0 && r.Value[0] == txnAborted {
					leaked++
					return
				}
				got++
			})
		}
		passes++
		total += got
		if got > want {
			return throughput{}, passes, leaked, fmt.Errorf("pass %d read %d records, the topic holds %d", passes, got, want)
		}
		if passes >= 2 && time.Since(start) >= minTime {
			return throughput{records: total, elapsed: time.Since(start)}, passes, leaked, nil
		}
		cl.SetOffsets(toStart)
	}
}

// txnCopied is what an exactly-once copy did in its timed part.
type txnCopied struct {
	timed         throughput
	txns, aborted int
	// leaked counts the records of aborted transactions the input's
	// read_committed returned, which the copy skips.
	leaked int64
}

func (c txnCopied) avg() float64 { return float64(c.timed.records) / float64(max(1, c.txns)) }

// eosCopy copies the records of topic in (want of them, read_committed)
// to out with a GroupTransactSession, up to txnCopyMax records a
// transaction, each committing the group's offsets with its records;
// records of aborted transactions that read_committed returns it skips
// and counts. The
// first transaction is untimed (the group's join, the first fetch,
// InitProducerId); then it copies until the input's end or for
// o.txn.duration.
func eosCopy(addr, in, out string, want int64, o options) (txnCopied, error) {
	stamp := time.Now().UnixNano()
	s, err := kgo.NewGroupTransactSession(txnClientOpts(addr, out, o,
		kgo.TransactionalID(fmt.Sprintf("shale-bench-copy-%d", stamp)),
		kgo.ConsumerGroup(fmt.Sprintf("shale-bench-copy-%d", stamp)),
		kgo.ConsumeTopics(in),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20),
		kgo.FetchMaxPartitionBytes(16<<20),
	)...)
	if err != nil {
		return txnCopied{}, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), txnReadTimeout)
	defer cancel()
	var errs produceErrs
	var c txnCopied
	var copied int64
	var start time.Time // the first transaction's end
	for copied < want && (start.IsZero() || time.Since(start) < o.txn.duration) {
		if ctx.Err() != nil {
			return c, fmt.Errorf("copied %d records of %d in %s", copied, want, txnReadTimeout)
		}
		fs := s.PollRecords(ctx, txnCopyMax)
		if err := fetchErr(fs); err != nil {
			return c, err
		}
		n := int64(fs.NumRecords())
		if n == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			return c, err
		}
		var leaked int64
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Value) > 0 && r.Value[0] == txnAborted {
				leaked++
				return
			}
			s.Produce(ctx, &kgo.Record{Value: r.Value}, errs.promise)
		})
		n -= leaked
		ok, err := s.End(ctx, kgo.TryCommit)
		if err == nil {
			err = errs.err()
		}
		if err != nil {
			return c, fmt.Errorf("ending a transaction: %w", err)
		}
		switch {
		case start.IsZero() && ok:
			start = time.Now()
		case !ok:
			c.aborted++ // a rebalance: the records are polled again
		default:
			c.txns++
			c.timed.records += n
		}
		if ok {
			copied += n
			c.leaked += leaked
		}
	}
	if start.IsZero() || c.txns == 0 {
		return c, fmt.Errorf("copied %d records of %d: nothing left to time after the first transaction", copied, want)
	}
	c.timed.elapsed = time.Since(start)
	if copied > want {
		return c, fmt.Errorf("copied %d records from %s, which holds %d committed", copied, in, want)
	}
	return c, nil
}
