package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// electedLeader is one partition's outcome of an election asked for.
type electedLeader struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Result is elected, not_needed (ELECTION_NOT_NEEDED: the preferred
	// replica leads already, or, unclean, the partition has a live
	// leader) or failed.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

func newTopicElectLeadersCmd() *cobra.Command {
	var (
		out     outputFlag
		unclean bool
		all     bool
	)
	cmd := &cobra.Command{
		Use:   "elect-leaders [NAME[:PARTITION]...] [--unclean] [--all]",
		Short: "Elect partition leaders: the preferred replica, or (--unclean) any live replica of a leaderless partition (ElectLeaders)",
		Long: `Runs the leader elections kafka-leader-election.sh runs (ElectLeaders, KIP-183
and KIP-460), for every partition of the topics named, one partition of a
topic (NAME:PARTITION), or every partition of the cluster (--all).

Preferred (the default) moves a partition's leadership to its preferred
replica, the first of its replicas, when that one is in sync. --unclean gives a
partition whose in-sync replicas are all down a leader from outside them: the
live replica whose log holds the latest history. Records only the in-sync
replicas held are lost; prefer bringing them back.

A partition that needs no election (its preferred replica leads, or, unclean,
it has a live leader) is reported as such, not as an error.`,
		Example: `  shale topic elect-leaders orders
  shale topic elect-leaders orders:3 --unclean
  shale topic elect-leaders --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if len(args) == 0 && !all {
				return fmt.Errorf("%s: name topics (NAME or NAME:PARTITION) or give --all; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			if len(args) > 0 && all {
				return fmt.Errorf("%s: --all elects every partition; give it without topics", cmd.CommandPath())
			}
			how := kadm.ElectPreferredReplica
			if unclean {
				how = kadm.ElectLiveReplica
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				var set kadm.TopicsSet // nil: every partition
				if !all {
					var err error
					if set, err = electionSet(ctx, adm, args); err != nil {
						return err
					}
				}
				res, err := adm.ElectLeaders(ctx, how, set)
				if err != nil {
					return err
				}
				var (
					outcomes []electedLeader
					errs     []error
				)
				var sorted []kadm.ElectLeadersResult
				for _, ps := range res {
					for _, r := range ps {
						sorted = append(sorted, r)
					}
				}
				slices.SortFunc(sorted, func(a, b kadm.ElectLeadersResult) int {
					return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
				})
				for _, r := range sorted {
					o := electedLeader{Topic: r.Topic, Partition: r.Partition, Result: "elected"}
					switch {
					case errors.Is(r.Err, kerr.ElectionNotNeeded):
						o.Result = "not_needed"
					case r.Err != nil:
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
					t := newTable(cmd, "TOPIC", "PARTITION", "RESULT")
					for _, o := range outcomes {
						t.row(o.Topic, o.Partition, strings.ReplaceAll(o.Result, "_", " "))
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
	fs.BoolVar(&unclean, "unclean", false, "elect a live replica from outside the ISR for partitions whose in-sync replicas are all down (may lose records)")
	fs.BoolVar(&all, "all", false, "every partition of every topic")
	out.register(fs)
	return cmd
}

// electionSet turns NAME and NAME:PARTITION arguments into the partitions
// to elect for: every partition of a topic named alone, as the metadata
// lists them.
func electionSet(ctx context.Context, adm *kadm.Client, args []string) (kadm.TopicsSet, error) {
	set := kadm.TopicsSet{}
	var whole []string
	for _, a := range args {
		if a == "" || a[0] == ':' {
			return nil, fmt.Errorf("%q: want NAME or NAME:PARTITION", a)
		}
		if !strings.Contains(a, ":") {
			whole = append(whole, a)
			continue
		}
		name, p, err := topicPartitionArg(a)
		if err != nil {
			return nil, err
		}
		set.Add(name, p)
	}
	if len(whole) > 0 {
		tds, err := adm.ListTopicsWithInternal(ctx, whole...)
		if err != nil {
			return nil, err
		}
		for _, name := range whole {
			td, ok := tds[name]
			if !ok {
				return nil, fmt.Errorf("topic %q: not in the metadata answer", name)
			}
			if td.Err != nil {
				return nil, kafkaErr("topic", name, td.Err, "")
			}
			parts := td.Partitions.Numbers()
			slices.Sort(parts)
			set.Add(name, parts...)
		}
	}
	return set, nil
}
