package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// This file holds the commands that change where a topic's partitions
// are: how many there are (CreatePartitions) and which brokers hold them
// (AlterPartitionReassignments, ListPartitionReassignments), what
// kafka-topics.sh --alter --partitions and kafka-reassign-partitions.sh do.

type grownTopic struct {
	Topic      string `json:"topic"`
	Partitions int    `json:"partitions"`
}

func newTopicAddPartitionsCmd() *cobra.Command {
	var (
		out outputFlag
		to  int
	)
	cmd := &cobra.Command{
		Use:   "add-partitions NAME... --to COUNT",
		Short: "Add partitions to topics, up to COUNT in all (CreatePartitions)",
		Long: `Adds partitions to each topic named until it has COUNT, as
kafka-topics.sh --alter --partitions COUNT does. The cluster places the new
partitions' replicas (as many as the topic's replication factor), each led by
the broker that leads the fewest of the topic's partitions. Partitions can only
be added: records keyed to a partition by hash go to another one from then on.`,
		Example: `  shale topic add-partitions orders --to 12`,
		Args:    rangeArgs(1, -1, "topic name"),
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if to < 1 {
				return fmt.Errorf("%s: give the partitions each topic is to have, --to COUNT", cmd.CommandPath())
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.UpdatePartitions(ctx, to, names...)
				if err != nil {
					return err
				}
				grown := []grownTopic{}
				var errs []error
				for _, name := range names {
					r, ok := resps[name]
					switch {
					case !ok:
						errs = append(errs, fmt.Errorf("topic %q: not in the answer", name))
					case r.Err != nil:
						errs = append(errs, kafkaErr("topic", name, r.Err, r.ErrMessage))
					default:
						grown = append(grown, grownTopic{Topic: name, Partitions: to})
					}
				}
				if out.json() {
					if err := writeJSON(cmd, grown); err != nil {
						return err
					}
				} else if len(grown) > 0 {
					t := newTable(cmd, "TOPIC", "PARTITIONS", "STATUS")
					for _, g := range grown {
						t.row(g.Topic, g.Partitions, "partitions added")
					}
					if err := t.flush(); err != nil {
						return err
					}
				}
				return joinErrs(errs)
			})
		},
	}
	cmd.Flags().IntVar(&to, "to", 0, "the partitions each topic is to have in all")
	out.register(cmd.Flags())
	return cmd
}

// reassigned is one partition's outcome of a reassignment asked for.
type reassigned struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas,omitempty"` // the target; none when cancelled
	// Result is started, cancelled or failed.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

func newTopicReassignCmd() *cobra.Command {
	var (
		out      outputFlag
		replicas []int
		cancel   bool
	)
	cmd := &cobra.Command{
		Use:   "reassign NAME:PARTITION... (--replicas ID,ID,... | --cancel)",
		Short: "Move partitions to other brokers, or cancel such a move (AlterPartitionReassignments)",
		Long: `Moves each partition named to the replicas given, in that order (the first is
its preferred leader), as kafka-reassign-partitions.sh --execute does: the
brokers added copy the partition from its leader, join its ISR, and only then
are the brokers left out removed, so the partition keeps its copies
throughout, and produce and fetch go on. A different number of replicas changes
the partition's replication factor. The command returns once the move has
started; 'shale topic reassignments' lists the moves still going on.

--cancel stops the moves of the partitions named: each goes back to the
replicas it had, and the brokers it was being copied to drop their copies.`,
		Example: `  shale topic reassign orders:0 orders:1 --replicas 2,3,4
  shale topic reassign orders:0 --cancel
  shale topic reassignments orders`,
		Args: rangeArgs(1, -1, "NAME:PARTITION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if cancel == (len(replicas) > 0) {
				return fmt.Errorf("%s: give either --replicas or --cancel; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			var target []int32
			for _, id := range replicas {
				if id < 0 || slices.Contains(target, int32(id)) {
					return fmt.Errorf("%s: --replicas %v: each broker id once, none negative", cmd.CommandPath(), replicas)
				}
				target = append(target, int32(id))
			}
			var req kadm.AlterPartitionAssignmentsReq
			for _, a := range args {
				name, p, err := topicPartitionArg(a)
				if err != nil {
					return err
				}
				if cancel {
					req.CancelAssign(name, p)
				} else {
					req.Assign(name, p, target)
				}
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.AlterPartitionAssignments(ctx, req)
				if err != nil {
					return err
				}
				var (
					outcomes []reassigned
					errs     []error
				)
				for _, r := range resps.Sorted() {
					o := reassigned{Topic: r.Topic, Partition: r.Partition, Replicas: target, Result: "started"}
					if cancel {
						o.Result = "cancelled"
					}
					if r.Err != nil {
						err := kafkaErr("partition", r.Topic+":"+strconv.Itoa(int(r.Partition)), r.Err, r.ErrMessage)
						o.Result, o.Error = "failed", err.Error()
						errs = append(errs, err)
					}
					outcomes = append(outcomes, o)
				}
				if out.json() {
					if err := writeJSON(cmd, orEmpty(outcomes)); err != nil {
						return err
					}
				} else {
					t := newTable(cmd, "TOPIC", "PARTITION", "REPLICAS", "RESULT")
					for _, o := range outcomes {
						t.row(o.Topic, o.Partition, idsOrDash(o.Replicas), o.Result)
					}
					if err := t.flush(); err != nil {
						return err
					}
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.IntSliceVar(&replicas, "replicas", nil, "the broker ids to hold each partition, the preferred leader first")
	fs.BoolVar(&cancel, "cancel", false, "cancel the partitions' reassignments in progress")
	out.register(fs)
	return cmd
}

// topicPartitionArg reads NAME:PARTITION.
func topicPartitionArg(a string) (string, int32, error) {
	name, part, ok := strings.Cut(a, ":")
	if !ok || name == "" {
		return "", 0, fmt.Errorf("%q: want NAME:PARTITION", a)
	}
	p, err := strconv.ParseInt(part, 10, 32)
	if err != nil || p < 0 {
		return "", 0, fmt.Errorf("%q: the partition is not a number", a)
	}
	return name, int32(p), nil
}

// reassignment is a partition's reassignment in progress.
type reassignment struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas"` // the target, then the replicas being removed
	Adding    []int32 `json:"adding"`
	Removing  []int32 `json:"removing"`
}

func newTopicReassignmentsCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "reassignments [NAME...]",
		Short: "List the reassignments in progress, of every topic or of those named (ListPartitionReassignments)",
		Example: `  shale topic reassignments
  shale topic reassignments orders -o json`,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, cl *cliClient) error {
				req := kmsg.NewPtrListPartitionReassignmentsRequest()
				req.TimeoutMillis = int32(cl.cfg.timeout.Milliseconds())
				if len(names) > 0 {
					// Every partition of the topics named: the request
					// names partitions, not topics.
					set, err := electionSet(ctx, adm, names)
					if err != nil {
						return err
					}
					for name, ps := range set {
						rt := kmsg.NewListPartitionReassignmentsRequestTopic()
						rt.Topic = name
						for p := range ps {
							rt.Partitions = append(rt.Partitions, p)
						}
						req.Topics = append(req.Topics, rt)
					}
				}
				resp, err := req.RequestWith(ctx, cl.Client)
				if err != nil {
					return err
				}
				if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
					msg := ""
					if resp.ErrorMessage != nil {
						msg = *resp.ErrorMessage
					}
					return kafkaErr("cluster", "reassignments", err, msg)
				}
				moving := []reassignment{}
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						moving = append(moving, reassignment{Topic: t.Topic, Partition: p.Partition,
							Replicas: orEmpty(p.Replicas), Adding: orEmpty(p.AddingReplicas), Removing: orEmpty(p.RemovingReplicas)})
					}
				}
				slices.SortFunc(moving, func(a, b reassignment) int {
					return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
				})
				if out.json() {
					return writeJSON(cmd, moving)
				}
				if len(moving) == 0 {
					_, err := fmt.Fprintln(cmd.OutOrStdout(), "no reassignment in progress")
					return err
				}
				t := newTable(cmd, "TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING")
				for _, m := range moving {
					t.row(m.Topic, m.Partition, idsOrDash(m.Replicas), idsOrDash(m.Adding), idsOrDash(m.Removing))
				}
				return t.flush()
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}

// idsOrDash is ids, or "-" for none.
func idsOrDash(s []int32) string {
	if len(s) == 0 {
		return "-"
	}
	return ids(s)
}
