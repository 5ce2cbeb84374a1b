package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// `shale txn` shows the transactions the coordinators hold
// (ListTransactions and DescribeTransactions, what kafka-transactions.sh
// list and describe send): each transactional id with its coordinator,
// state, producer id and epoch, timeout, the start of its current or last
// transaction, and the partitions of the open one.

func newTxnCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "List and describe transactions: transactional ids, their state, producer and partitions",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newTxnListCmd(), newTxnDescribeCmd())
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
