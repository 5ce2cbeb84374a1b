package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// `shale txn` shows the transactions the coordinators hold
// (ListTransactions and DescribeTransactions, what kafka-transactions.sh
// list and describe send): each transactional id with its coordinator,
// state, producer id and epoch, timeout, the start of its current or last
// transaction, and the partitions of the open one. `shale txn hanging` and
// `shale txn abort` are kafka-transactions.sh find-hanging and abort: they
// find the transactions partitions hold open that no coordinator will end
// (DescribeProducers at the leaders, checked against the coordinators),
// and end one with an ABORT marker (WriteTxnMarkers).

func newTxnCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "List and describe transactions; find and abort hanging ones",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newTxnListCmd(), newTxnDescribeCmd(), newTxnHangingCmd(), newTxnAbortCmd())
	return cmd
}

// txnStates are Kafka's transaction state names, which --state takes.
var txnStates = []string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"}

// openTxnState reports a state whose transaction has not ended yet: its
// partitions' last stable offsets wait for it.
func openTxnState(s string) bool {
	return s == "Ongoing" || s == "PrepareCommit" || s == "PrepareAbort"
}

// txnInfo is one transactional id as the commands print it.
type txnInfo struct {
	TransactionalID string `json:"transactional_id"`
	Coordinator     int32  `json:"coordinator"`
	State           string `json:"state"`
	ProducerID      int64  `json:"producer_id"`
	// ProducerEpoch, TimeoutMs: -1 when unknown (listed, but gone
	// before it could be described).
	ProducerEpoch int16 `json:"producer_epoch"`
	TimeoutMs     int32 `json:"timeout_ms"`
	// StartTimestamp is when the current (or last) transaction started,
	// in Unix milliseconds; -1 when none has since InitProducerId.
	StartTimestamp int64 `json:"start_timestamp_ms"`
	// Partitions are those of the open transaction (while it completes,
	// those still without their marker).
	Partitions map[string][]int32 `json:"partitions"`
}

func describedTxn(d kadm.DescribedTransaction) txnInfo {
	t := txnInfo{TransactionalID: d.TxnID, Coordinator: d.Coordinator, State: d.State, ProducerID: d.ProducerID,
		ProducerEpoch: d.ProducerEpoch, TimeoutMs: d.TimeoutMillis, StartTimestamp: d.StartTimestamp, Partitions: map[string][]int32{}}
	for topic, ps := range d.Topics {
		t.Partitions[topic] = slices.Sorted(maps.Keys(ps))
	}
	return t
}

func newTxnListCmd() *cobra.Command {
	var (
		out    outputFlag
		states []string
		pids   []int64
	)
	cmd := &cobra.Command{
		Use:     "list [--state S]... [--producer-id N]...",
		Aliases: []string{"ls"},
		Short:   "List transactional ids: coordinator, state, producer, timeout, age of the open transaction",
		Long: `Lists the transactional ids every coordinator holds (ListTransactions), then
describes them (DescribeTransactions) for their producer epoch, timeout,
start and partitions. AGE is the time since the open transaction (Ongoing,
PrepareCommit, PrepareAbort) started: one open for long holds back the
last stable offset of its partitions, and read_committed consumers with it
(shale_partitions_unstable counts such partitions).`,
		Example: `  shale txn list --state Ongoing
  shale txn list --producer-id 4001 -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			filter, err := txnStateFilter(states)
			if err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				var listed kadm.ListedTransactions
				err := retryRetriable(ctx, func() error {
					var err error
					listed, err = adm.ListTransactions(ctx, pids, filter)
					return err
				})
				var errs []error
				var se *kadm.ShardErrors
				switch {
				case errors.As(err, &se):
					for _, e := range se.Errs { // some coordinators answered: show them
						errs = append(errs, fmt.Errorf("listing transactions on broker %d: %w", e.Broker.NodeID, e.Err))
					}
				case err != nil:
					return fmt.Errorf("listing transactions: %w", err)
				}
				txns := []txnInfo{}
				var described kadm.DescribedTransactions
				if ids := listed.TransactionalIDs(); len(ids) > 0 {
					// Best effort: an id gone meanwhile keeps what the
					// listing said.
					described, _ = adm.DescribeTransactions(ctx, ids...)
				}
				for _, l := range listed.Sorted() {
					if d, ok := described[l.TxnID]; ok && d.Err == nil {
						txns = append(txns, describedTxn(d))
						continue
					}
					txns = append(txns, txnInfo{TransactionalID: l.TxnID, Coordinator: l.Coordinator, State: l.State, ProducerID: l.ProducerID,
						ProducerEpoch: -1, TimeoutMs: -1, StartTimestamp: -1, Partitions: map[string][]int32{}})
				}
				if out.json() {
					if err := writeJSON(cmd, txns); err != nil {
						return err
					}
				} else if err := printTxns(cmd, txns, time.Now(), false); err != nil {
					return err
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&states, "state", nil, "only transactional ids in this state (repeatable): "+strings.Join(txnStates, ", "))
	fs.Int64SliceVar(&pids, "producer-id", nil, "only transactional ids of this producer id (repeatable or comma-separated)")
	out.register(fs)
	return cmd
}

// txnStateFilter checks --state values, any case, and returns Kafka's
// names (the brokers match them exactly).
func txnStateFilter(vals []string) ([]string, error) {
	var out []string
	for _, v := range vals {
		i := slices.IndexFunc(txnStates, func(s string) bool { return strings.EqualFold(s, strings.TrimSpace(v)) })
		if i < 0 {
			return nil, fmt.Errorf("--state %q: want one of %s", v, strings.Join(txnStates, ", "))
		}
		if !slices.Contains(out, txnStates[i]) {
			out = append(out, txnStates[i])
		}
	}
	return out, nil
}

func newTxnDescribeCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "describe ID...",
		Short: "Describe transactional ids: coordinator, state, producer id and epoch, timeout, start, partitions",
		Long: `Describes each transactional id named (DescribeTransactions), asking its
coordinator: state, producer id and epoch, transaction timeout, the start
of its current or last transaction (AGE: how long the open one has run),
and the partitions of the open transaction (while it completes, those
still without their marker). An id no coordinator holds is an error.`,
		Example: `  shale txn describe payments-0 payments-1`,
		Args:    rangeArgs(1, -1, "transactional id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			ids := uniqueNames(args)
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				res, err := adm.DescribeTransactions(ctx, ids...)
				failed := map[string]error{}
				var se *kadm.ShardErrors
				switch {
				case errors.As(err, &se):
					for _, e := range se.Errs {
						if req, ok := e.Req.(*kmsg.DescribeTransactionsRequest); ok {
							for _, id := range req.TransactionalIDs {
								failed[id] = e.Err
							}
						}
					}
				case err != nil:
					return fmt.Errorf("describing transactions: %w", err)
				}
				txns := []txnInfo{}
				var errs []error
				for _, id := range ids {
					d, ok := res[id]
					switch {
					case ok && d.Err == nil:
						txns = append(txns, describedTxn(d))
					case ok:
						errs = append(errs, kafkaErr("transactional id", id, d.Err, ""))
					case failed[id] != nil:
						errs = append(errs, kafkaErr("transactional id", id, failed[id], ""))
					default:
						errs = append(errs, fmt.Errorf("transactional id %q: not in the answer", id))
					}
				}
				slices.SortFunc(txns, func(a, b txnInfo) int { return strings.Compare(a.TransactionalID, b.TransactionalID) })
				if out.json() {
					if err := writeJSON(cmd, txns); err != nil {
						return err
					}
				} else if len(txns) > 0 {
					if err := printTxns(cmd, txns, time.Now(), true); err != nil {
						return err
					}
				}
				return joinErrs(errs)
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}

// printTxns prints one row per transactional id; the partitions in full,
// or their count.
func printTxns(cmd *cobra.Command, txns []txnInfo, now time.Time, fullPartitions bool) error {
	t := newTable(cmd, "TRANSACTIONAL-ID", "COORDINATOR", "STATE", "PRODUCER-ID", "EPOCH", "TIMEOUT", "START", "AGE", "PARTITIONS")
	for _, x := range txns {
		epoch, timeout, start, age := "-", "-", "-", "-"
		if x.ProducerEpoch >= 0 {
			epoch = fmt.Sprint(x.ProducerEpoch)
		}
		if x.TimeoutMs >= 0 {
			timeout = (time.Duration(x.TimeoutMs) * time.Millisecond).String()
		}
		if x.StartTimestamp >= 0 {
			at := time.UnixMilli(x.StartTimestamp)
			start = at.UTC().Format(time.RFC3339)
			if openTxnState(x.State) {
				age = max(now.Sub(at), 0).Round(time.Second).String()
			}
		}
		n := 0
		var parts []string
		for _, topic := range sortedKeys(x.Partitions) {
			n += len(x.Partitions[topic])
			parts = append(parts, topic+":"+ids(x.Partitions[topic]))
		}
		partitions := fmt.Sprint(n)
		if fullPartitions {
			partitions = orDash(strings.Join(parts, " "))
		}
		t.row(x.TransactionalID, x.Coordinator, x.State, x.ProducerID, epoch, timeout, start, age, partitions)
	}
	return t.flush()
}

// A hanging transaction is one a partition holds open that no coordinator
// will end: a transactional batch reached the partition outside any
// transaction its coordinator knows of (a buggy client that wrote before
// AddPartitionsToTxn, a zombie whose transaction was already ended), so no
// marker will ever come. Kafka before 3.6 (KIP-890) lets such batches in,
// and so does Shale. The partition's last stable offset stays at the
// transaction's first offset: read_committed consumers, and tiering
// uploads, stop there.

// defaultMaxTxnTimeout is --max-transaction-timeout's default: the
// default transaction.max.timeout.ms, the longest timeout a producer may
// ask for.
const defaultMaxTxnTimeout = 15 * time.Minute

// hangingTxn is an open transaction of a partition that its producer's
// coordinator does not hold open there, as shale txn hanging prints it.
type hangingTxn struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Leader    int32  `json:"leader"` // the broker that described it
	// ProducerID and ProducerEpoch are those of the transaction's
	// batches.
	ProducerID    int64 `json:"producer_id"`
	ProducerEpoch int16 `json:"producer_epoch"`
	// CoordinatorEpoch is the epoch of the coordinator that wrote the
	// producer's last marker on the partition; -1 before any.
	CoordinatorEpoch int32 `json:"coordinator_epoch"`
	// StartOffset is the transaction's first offset: the partition's
	// last stable offset stays there.
	StartOffset int64 `json:"start_offset"`
	// LastTimestamp is the largest timestamp of the producer's batches,
	// in Unix milliseconds.
	LastTimestamp int64 `json:"last_timestamp_ms"`
	// TransactionalID is the id a coordinator holds for the producer
	// id, "" when none does (an idempotent producer's id, or one whose
	// transactional id expired).
	TransactionalID string `json:"transactional_id"`
}

func newTxnHangingCmd() *cobra.Command {
	var (
		out        outputFlag
		topics     []string
		maxTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:     "hanging [--topic T]... [--max-transaction-timeout D]",
		Aliases: []string{"find-hanging"},
		Short:   "Find hanging transactions: open on a partition, and no coordinator will end them",
		Long: `Finds the hanging transactions, as kafka-transactions.sh find-hanging does.
It asks each partition's leader for its producers (DescribeProducers) and
takes those with an open transaction whose last write is older than
--max-transaction-timeout: the longest transaction timeout the producers
may use (transaction.max.timeout.ms, 15m by default). Their coordinators
should have ended them. One that a coordinator still holds open
(ListTransactions by producer id, then DescribeTransactions) with the
partition in it will be ended yet; the others hang: their batches reached
the partition outside any transaction the coordinator knows of, and no
marker will come. The partition's last stable offset stays at the
transaction's START-OFFSET: read_committed consumers and tiering uploads
stop there until shale txn abort ends it.

It searches every partition of the --topic topics, else of every topic but
the internal ones. Run it as a super user: ListTransactions shows only the
transactional ids one may describe, and a transaction hidden so would be
reported as hanging. None found is said in one line, and not an error.`,
		Example: `  shale txn hanging
  shale txn hanging --topic orders --max-transaction-timeout 5m
  shale txn abort --topic orders --partition 3 --producer-id 4001`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if maxTimeout < 0 {
				return fmt.Errorf("--max-transaction-timeout %s: want 0 or more", maxTimeout)
			}
			if slices.Contains(topics, "") {
				return errors.New("--topic: a name")
			}
			named := uniqueNames(topics)
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				tds, err := adm.ListTopics(ctx, named...)
				if err != nil {
					return fmt.Errorf("listing topics: %w", err)
				}
				var errs []error
				set := kadm.TopicsSet{}
				for _, td := range tds.Sorted() {
					if td.Err != nil {
						errs = append(errs, kafkaErr("topic", td.Topic, td.Err, ""))
						continue
					}
					for _, pd := range td.Partitions.Sorted() {
						set.Add(td.Topic, pd.Partition)
					}
				}
				described, failed, err := describeProducers(ctx, adm, set)
				if err != nil {
					return fmt.Errorf("describing producers: %w", err)
				}
				hanging := []hangingTxn{}
				if cands := hangingCandidates(described, time.Now().UnixMilli(), maxTimeout); len(cands) > 0 {
					pids := make([]int64, 0, len(cands))
					for _, c := range cands {
						if !slices.Contains(pids, c.ProducerID) {
							pids = append(pids, c.ProducerID)
						}
					}
					txns, err := producerTxns(ctx, adm, pids)
					if err != nil {
						return fmt.Errorf("%d open transaction(s) older than %s: cannot tell whether their coordinators hold them: %w", len(cands), maxTimeout, err)
					}
					hanging = stillHanging(cands, txns)
				}
				if len(failed) > 0 {
					errs = append(errs, describeFailures(failed))
				}
				switch {
				case out.json():
					if err := writeJSON(cmd, hanging); err != nil {
						return err
					}
				case len(hanging) == 0:
					fmt.Fprintf(cmd.OutOrStdout(), "no hanging transactions in %d partition(s) (max transaction timeout %s)\n", len(described), maxTimeout)
				default:
					if err := printHanging(cmd, hanging, time.Now()); err != nil {
						return err
					}
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&topics, "topic", nil, "search this topic's partitions only (repeatable; default: every topic but the internal ones)")
	fs.DurationVar(&maxTimeout, "max-transaction-timeout", defaultMaxTxnTimeout, "the longest transaction timeout of the cluster's producers (transaction.max.timeout.ms): open transactions whose producer wrote last more recently are not searched")
	out.register(fs)
	return cmd
}

// hangingCandidates are the open transactions of the partitions described
// whose producer wrote last more than maxTimeout before nowMs (Unix
// milliseconds): no transaction may last that long, so their coordinators
// should have ended them.
func hangingCandidates(parts []kadm.DescribedProducersPartition, nowMs int64, maxTimeout time.Duration) []hangingTxn {
	var out []hangingTxn
	for _, dp := range parts {
		for _, p := range dp.ActiveProducers.Sorted() {
			if p.CurrentTxnStartOffset < 0 || nowMs-p.LastTimestamp <= maxTimeout.Milliseconds() {
				continue
			}
			out = append(out, hangingTxn{Topic: dp.Topic, Partition: dp.Partition, Leader: dp.Leader,
				ProducerID: p.ProducerID, ProducerEpoch: p.ProducerEpoch, CoordinatorEpoch: p.CoordinatorEpoch,
				StartOffset: p.CurrentTxnStartOffset, LastTimestamp: p.LastTimestamp})
		}
	}
	return out
}

// stillHanging is the candidates that hang: those whose producer's
// transaction, as its coordinator describes it (txns, by producer id; not
// there: no coordinator holds one), is not open with the candidate's
// partition in it (Kafka's find-hanging rule). Sorted by topic,
// partition and producer id.
func stillHanging(cands []hangingTxn, txns map[int64]kadm.DescribedTransaction) []hangingTxn {
	out := []hangingTxn{}
	for _, c := range cands {
		if d, ok := txns[c.ProducerID]; ok {
			if openTxnState(d.State) && d.Topics.Lookup(c.Topic, c.Partition) {
				continue
			}
			c.TransactionalID = d.TxnID
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b hangingTxn) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.ProducerID, b.ProducerID))
	})
	return out
}

func printHanging(cmd *cobra.Command, hanging []hangingTxn, now time.Time) error {
	t := newTable(cmd, "TOPIC", "PARTITION", "PRODUCER-ID", "EPOCH", "COORDINATOR-EPOCH", "START-OFFSET", "LAST-TIMESTAMP", "AGE", "TRANSACTIONAL-ID")
	for _, h := range hanging {
		at := time.UnixMilli(h.LastTimestamp)
		t.row(h.Topic, h.Partition, h.ProducerID, h.ProducerEpoch, h.CoordinatorEpoch, h.StartOffset,
			at.UTC().Format(time.RFC3339), max(now.Sub(at), 0).Round(time.Second), orDash(h.TransactionalID))
	}
	return t.flush()
}

// txnPartition names a partition.
type txnPartition struct {
	topic     string
	partition int32
}

// describeProducers asks each partition of set's leader for the
// partition's producers (DescribeProducers), and asks again, a few times,
// for those that answered a retriable error (a leader moving). It returns
// the partitions described, by topic and partition, and the error of each
// that was not; err when the request failed as a whole (an authorization
// error).
func describeProducers(ctx context.Context, adm *kadm.Client, set kadm.TopicsSet) ([]kadm.DescribedProducersPartition, map[txnPartition]error, error) {
	got := map[txnPartition]kadm.DescribedProducersPartition{}
	failed := map[txnPartition]error{}
	pending := set
	for attempt := 1; ; attempt++ {
		res, err := adm.DescribeProducers(ctx, pending)
		var se *kadm.ShardErrors
		if err != nil && !errors.As(err, &se) {
			return nil, nil, err
		}
		answered := map[txnPartition]error{}
		if se != nil {
			for _, e := range se.Errs {
				if req, ok := e.Req.(*kmsg.DescribeProducersRequest); ok {
					for _, rt := range req.Topics {
						for _, p := range rt.Partitions {
							answered[txnPartition{rt.Topic, p}] = e.Err
						}
					}
				}
			}
		}
		res.EachPartition(func(dp kadm.DescribedProducersPartition) {
			tp := txnPartition{dp.Topic, dp.Partition}
			switch {
			case dp.Err != nil && dp.ErrMessage != "":
				answered[tp] = &messageErr{err: dp.Err, msg: dp.Err.Error() + ": " + dp.ErrMessage}
			case dp.Err != nil:
				answered[tp] = dp.Err
			default:
				answered[tp] = nil
				got[tp] = dp
			}
		})
		retry := kadm.TopicsSet{}
		pending.Each(func(t string, p int32) {
			tp := txnPartition{t, p}
			err, ok := answered[tp]
			switch {
			case !ok:
				err = errors.New("not in the answer")
			case err == nil:
				delete(failed, tp)
				return
			}
			failed[tp] = err
			if kerr.IsRetriable(err) {
				retry.Add(t, p)
			}
		})
		if len(retry) == 0 || attempt == 5 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
		if ctx.Err() != nil {
			break
		}
		pending = retry
	}
	described := slices.SortedFunc(maps.Values(got), func(a, b kadm.DescribedProducersPartition) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return described, failed, nil
}

// describeFailures says in one line which partitions' producers could not
// be described, and why (the first few).
func describeFailures(failed map[txnPartition]error) error {
	tps := slices.SortedFunc(maps.Keys(failed), func(a, b txnPartition) int {
		return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	const shown = 3
	var msgs []string
	for _, tp := range tps[:min(len(tps), shown)] {
		msgs = append(msgs, fmt.Sprintf("topic %q partition %d: %v", tp.topic, tp.partition, failed[tp]))
	}
	if len(tps) > shown {
		msgs = append(msgs, fmt.Sprintf("and %d more", len(tps)-shown))
	}
	return &messageErr{err: failed[tps[0]], msg: fmt.Sprintf("describing the producers of %d partition(s), not searched: %s", len(tps), strings.Join(msgs, "; "))}
}

// producerTxns asks the coordinators which transactional ids the producer
// ids are theirs (ListTransactions filtered by them) and describes those
// (DescribeTransactions): the transaction of each producer id that a
// coordinator holds. An id gone before it was described
// (TRANSACTIONAL_ID_NOT_FOUND) is left out, as held by none. Any other
// failure is an error: a coordinator that did not answer could hold any of
// them.
func producerTxns(ctx context.Context, adm *kadm.Client, pids []int64) (map[int64]kadm.DescribedTransaction, error) {
	var listed kadm.ListedTransactions
	err := retryRetriable(ctx, func() error {
		var err error
		listed, err = adm.ListTransactions(ctx, pids, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the transactions of the producer ids: %w", err)
	}
	pidOf := map[string]int64{}
	for _, l := range listed.Sorted() {
		if slices.Contains(pids, l.ProducerID) { // the brokers filter; so does Kafka's tool
			pidOf[l.TxnID] = l.ProducerID
		}
	}
	txns := map[int64]kadm.DescribedTransaction{}
	if len(pidOf) == 0 {
		return txns, nil
	}
	ids := slices.Sorted(maps.Keys(pidOf))
	var described kadm.DescribedTransactions
	err = retryRetriable(ctx, func() error {
		var err error
		if described, err = adm.DescribeTransactions(ctx, ids...); err != nil {
			return err
		}
		for _, d := range described {
			if kerr.IsRetriable(d.Err) {
				return d.Err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("describing transactional ids: %w", err)
	}
	for _, id := range ids {
		d, ok := described[id]
		switch {
		case !ok:
			return nil, fmt.Errorf("transactional id %q: not in the answer", id)
		case errors.Is(d.Err, kerr.TransactionalIDNotFound):
		case d.Err != nil:
			return nil, kafkaErr("transactional id", id, d.Err, "")
		default:
			txns[pidOf[id]] = d
		}
	}
	return txns, nil
}

// abortedTxn is what shale txn abort did on a partition.
type abortedTxn struct {
	Topic            string `json:"topic"`
	Partition        int32  `json:"partition"`
	ProducerID       int64  `json:"producer_id"`
	ProducerEpoch    int16  `json:"producer_epoch"`
	CoordinatorEpoch int32  `json:"coordinator_epoch"`
	// StartOffset is the transaction's first offset as the leader told
	// it; -1 when the epochs were given and the leader not asked.
	StartOffset int64  `json:"start_offset"`
	Result      string `json:"result"` // aborted or failed
	Error       string `json:"error,omitempty"`
}

func newTxnAbortCmd() *cobra.Command {
	var (
		out        outputFlag
		topic      string
		partition  int32
		pid        int64
		epoch      int16
		coordEpoch int32
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "abort --topic T --partition P --producer-id N [--producer-epoch E --coordinator-epoch C]",
		Short: "Abort a hanging transaction on one partition: its ABORT marker (WriteTxnMarkers)",
		Long: `Ends a hanging transaction (see shale txn hanging) on one partition, as
kafka-transactions.sh abort does: it writes an ABORT marker for the
producer at the partition's leader (WriteTxnMarkers). The partition's last
stable offset then moves past the transaction, and read_committed consumers
skip its records.

The producer's epoch, and the epoch of the coordinator that wrote its last
marker there, come from the leader (DescribeProducers), which must show
the producer's transaction open on the partition; --producer-epoch and
--coordinator-epoch give them instead, and the leader is not asked. A
coordinator epoch below 0 (no marker yet) is written as 0, as Kafka does.

A transaction that its coordinator holds open with this partition in it is
not hanging: the coordinator will end it, and aborting it here would break
its atomicity. It is refused, unless --force.

Needs CLUSTER_ACTION on the cluster (super users have it).`,
		Example: `  shale txn abort --topic orders --partition 3 --producer-id 4001
  shale txn abort --topic orders --partition 3 --producer-id 4001 --producer-epoch 0 --coordinator-epoch -1`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			fs := cmd.Flags()
			epochsGiven := fs.Changed("producer-epoch")
			switch {
			case topic == "":
				return errors.New("--topic: give the topic of the hanging transaction's partition")
			case !fs.Changed("partition") || partition < 0:
				return errors.New("--partition: give the hanging transaction's partition, 0 or more")
			case !fs.Changed("producer-id") || pid < 0:
				return errors.New("--producer-id: give the hanging transaction's producer id, 0 or more (shale txn hanging lists them)")
			case epochsGiven != fs.Changed("coordinator-epoch"):
				return errors.New("give --producer-epoch and --coordinator-epoch together, or neither (the partition's leader tells them)")
			case epochsGiven && epoch < 0:
				return fmt.Errorf("--producer-epoch %d: want 0 or more", epoch)
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				where := fmt.Sprintf("topic %q partition %d", topic, partition)
				tds, err := adm.ListTopics(ctx, topic)
				if err != nil {
					return fmt.Errorf("listing topics: %w", err)
				}
				td := tds[topic]
				if td.Err != nil {
					return kafkaErr("topic", topic, td.Err, "")
				}
				if _, ok := td.Partitions[partition]; !ok {
					return fmt.Errorf("%s: %w (the topic has partitions 0 to %d)", where, kerr.UnknownTopicOrPartition, len(td.Partitions)-1)
				}
				res := abortedTxn{Topic: topic, Partition: partition, ProducerID: pid, ProducerEpoch: epoch, CoordinatorEpoch: coordEpoch, StartOffset: -1}
				if !epochsGiven {
					described, failed, err := describeProducers(ctx, adm, kadm.TopicsSet{topic: {partition: {}}})
					if err == nil {
						err = failed[txnPartition{topic, partition}]
					}
					if err != nil {
						return fmt.Errorf("%s: describing its producers: %w", where, err)
					}
					p, ok := described[0].ActiveProducers[pid]
					if !ok || p.CurrentTxnStartOffset < 0 {
						return fmt.Errorf("%s: producer %d has no open transaction there (its leader, broker %d, says): nothing to abort", where, pid, described[0].Leader)
					}
					res.ProducerEpoch, res.CoordinatorEpoch, res.StartOffset = p.ProducerEpoch, p.CoordinatorEpoch, p.CurrentTxnStartOffset
				}
				res.CoordinatorEpoch = max(res.CoordinatorEpoch, 0)
				if !force {
					txns, err := producerTxns(ctx, adm, []int64{pid})
					if err != nil {
						return fmt.Errorf("%s: asking the coordinators whether producer %d's transaction is theirs: %w (--force aborts without asking)", where, pid, err)
					}
					if d, ok := txns[pid]; ok && openTxnState(d.State) && d.Topics.Lookup(topic, partition) {
						return fmt.Errorf("%s: producer %d's transaction is open on its coordinator, broker %d (transactional id %q, %s), with this partition in it: not hanging, the coordinator will end it; not aborted (--force aborts it anyway)",
							where, pid, d.Coordinator, d.TxnID, d.State)
					}
				}
				err = writeAbortMarker(ctx, adm, res)
				res.Result = "aborted"
				if err != nil {
					if errors.Is(err, kerr.ClusterAuthorizationFailed) {
						err = fmt.Errorf("%w (WriteTxnMarkers takes CLUSTER_ACTION on the cluster: ask a super user)", err)
					}
					err = fmt.Errorf("%s: aborting producer %d's transaction: %w", where, pid, err)
					res.Result, res.Error = "failed", err.Error()
				}
				if out.json() {
					if e := writeJSON(cmd, []abortedTxn{res}); e != nil {
						return e
					}
				} else {
					t := newTable(cmd, "TOPIC", "PARTITION", "PRODUCER-ID", "EPOCH", "COORDINATOR-EPOCH", "START-OFFSET", "RESULT")
					t.row(res.Topic, res.Partition, res.ProducerID, res.ProducerEpoch, res.CoordinatorEpoch, offset(res.StartOffset), res.Result)
					if e := t.flush(); e != nil {
						return e
					}
				}
				return err
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&topic, "topic", "", "the topic of the partition (required)")
	fs.Int32Var(&partition, "partition", 0, "the partition (required)")
	fs.Int64Var(&pid, "producer-id", 0, "the producer id of the hanging transaction (required)")
	fs.Int16Var(&epoch, "producer-epoch", 0, "the producer epoch of its batches, with --coordinator-epoch (default: the partition's leader tells it)")
	fs.Int32Var(&coordEpoch, "coordinator-epoch", 0, "the epoch of the coordinator of the producer's last marker on the partition, with --producer-epoch (default: the partition's leader tells it)")
	fs.BoolVar(&force, "force", false, "abort even a transaction its coordinator holds open with this partition in it (or when the coordinators cannot be asked)")
	out.register(fs)
	return cmd
}

// writeAbortMarker writes the ABORT marker of a's producer on a's
// partition at its leader (kadm routes WriteTxnMarkers there), again while
// the answer is a retriable error (a leader moving). A second marker
// after one that landed unanswered closes nothing.
func writeAbortMarker(ctx context.Context, adm *kadm.Client, a abortedTxn) error {
	m := kadm.TxnMarkers{ProducerID: a.ProducerID, ProducerEpoch: a.ProducerEpoch, CoordinatorEpoch: a.CoordinatorEpoch,
		Topics: kadm.TopicsSet{a.Topic: {a.Partition: {}}}}
	return retryRetriable(ctx, func() error {
		res, err := adm.WriteTxnMarkers(ctx, m)
		if err != nil {
			return err
		}
		err = errors.New("not in the answer")
		res.EachPartition(func(p kadm.TxnMarkersPartitionResponse) {
			if p.ProducerID == a.ProducerID && p.Topic == a.Topic && p.Partition == a.Partition {
				err = p.Err
			}
		})
		return err
	})
}
