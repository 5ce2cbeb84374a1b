package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

func newGroupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "List, describe, seek and delete consumer groups",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newGroupListCmd(), newGroupDescribeCmd(), newGroupSeekCmd(), newGroupDeleteCmd())
	return cmd
}

type listedGroup struct {
	Group        string `json:"group"`
	State        string `json:"state"`
	ProtocolType string `json:"protocol_type"`
	Coordinator  int32  `json:"coordinator"`
}

func newGroupListCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List consumer groups",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				gs, err := adm.ListGroups(ctx)
				if err != nil {
					return err
				}
				groups := []listedGroup{}
				for _, g := range gs.Sorted() {
					groups = append(groups, listedGroup{Group: g.Group, State: g.State, ProtocolType: g.ProtocolType, Coordinator: g.Coordinator})
				}
				if out.json() {
					return writeJSON(cmd, groups)
				}
				t := newTable(cmd, "GROUP", "STATE", "TYPE", "COORDINATOR")
				for _, g := range groups {
					t.row(g.Group, g.State, g.ProtocolType, g.Coordinator)
				}
				return t.flush()
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}

type describedGroup struct {
	Group        string           `json:"group"`
	State        string           `json:"state"`
	ProtocolType string           `json:"protocol_type"`
	Protocol     string           `json:"protocol"`
	Coordinator  int32            `json:"coordinator"`
	Members      []groupMember    `json:"members"`
	Partitions   []groupPartition `json:"partitions"`
	TotalLag     int64            `json:"total_lag"`
}

type groupMember struct {
	MemberID   string             `json:"member_id"`
	InstanceID string             `json:"instance_id,omitempty"`
	ClientID   string             `json:"client_id"`
	Host       string             `json:"host"`
	Assignment map[string][]int32 `json:"assignment"`
}

type groupPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the group's committed offset (-1: none).
	Committed int64 `json:"committed_offset"`
	// End is the partition's end offset (high watermark; -1: unknown).
	End int64 `json:"end_offset"`
	// Lag is End-Committed (-1: unknown).
	Lag      int64  `json:"lag"`
	MemberID string `json:"member_id,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Host     string `json:"host,omitempty"`
	Error    string `json:"error,omitempty"`
}

func newGroupDescribeCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Describe a group: state, members and their assignment, committed offsets and lag per partition",
		Args:  exactArgs(1, "group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			name := args[0]
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				lags, err := adm.Lag(ctx, name)
				if err != nil {
					return err
				}
				l, ok := lags[name]
				if !ok {
					return fmt.Errorf("group %q: not in the answer", name)
				}
				if l.DescribeErr != nil {
					return kafkaErr("group", name, l.DescribeErr, "")
				}
				if l.FetchErr != nil {
					return kafkaErr("group", name, l.FetchErr, "")
				}
				if l.State == "Dead" && len(l.Members) == 0 && len(l.Lag) == 0 {
					// Kafka describes a group it does not know as Dead.
					return kafkaErr("group", name, kerr.GroupIDNotFound, "the group does not exist")
				}
				d := describedGroup{Group: name, State: l.State, ProtocolType: l.ProtocolType, Protocol: l.Protocol,
					Coordinator: l.Coordinator.NodeID, Members: []groupMember{}, Partitions: []groupPartition{}}
				for _, m := range l.Members {
					gm := groupMember{MemberID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost, Assignment: map[string][]int32{}}
					if m.InstanceID != nil {
						gm.InstanceID = *m.InstanceID
					}
					if c, ok := m.Assigned.AsConsumer(); ok {
						for _, t := range c.Topics {
							ps := append([]int32(nil), t.Partitions...)
							sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
							gm.Assignment[t.Topic] = ps
						}
					}
					d.Members = append(d.Members, gm)
				}
				for _, pl := range l.Lag.Sorted() {
					gp := groupPartition{Topic: pl.Topic, Partition: pl.Partition, Committed: pl.Commit.At, End: -1, Lag: pl.Lag}
					if pl.End.Err == nil {
						gp.End = pl.End.Offset
					}
					if pl.Member != nil {
						gp.MemberID, gp.ClientID, gp.Host = pl.Member.MemberID, pl.Member.ClientID, pl.Member.ClientHost
					}
					if pl.Err != nil {
						gp.Error = pl.Err.Error()
					}
					if gp.Lag > 0 {
						d.TotalLag += gp.Lag
					}
					d.Partitions = append(d.Partitions, gp)
				}
				if out.json() {
					return writeJSON(cmd, d)
				}
				return printGroup(cmd, d)
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}

func printGroup(cmd *cobra.Command, d describedGroup) error {
	t := newTable(cmd)
	t.row("GROUP", d.Group)
	t.row("STATE", d.State)
	t.row("PROTOCOL", strings.Trim(d.ProtocolType+"/"+d.Protocol, "/"))
	t.row("COORDINATOR", d.Coordinator)
	t.row("MEMBERS", len(d.Members))
	t.row("TOTAL-LAG", d.TotalLag)
	t.flush()
	if len(d.Members) > 0 {
		fmt.Fprintln(cmd.OutOrStdout())
		t = newTable(cmd, "MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT")
		for _, m := range d.Members {
			var as []string
			for _, topic := range sortedKeys(m.Assignment) {
				as = append(as, topic+":"+ids(m.Assignment[topic]))
			}
			id := m.MemberID
			if m.InstanceID != "" {
				id += " (" + m.InstanceID + ")"
			}
			t.row(id, m.ClientID, m.Host, strings.Join(as, " "))
		}
		t.flush()
	}
	if len(d.Partitions) > 0 {
		fmt.Fprintln(cmd.OutOrStdout())
		t = newTable(cmd, "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "CLIENT-ID", "HOST")
		for _, p := range d.Partitions {
			lag := offset(p.Lag)
			if p.Error != "" {
				lag = "- (" + p.Error + ")"
			}
			t.row(p.Topic, p.Partition, offset(p.Committed), offset(p.End), lag, orDash(p.ClientID), orDash(p.Host))
		}
		t.flush()
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// seekTarget is where `group seek --to` moves the group.
type seekTarget struct {
	kind   string // start, end, offset, time
	offset int64
	millis int64
}

func parseSeekTarget(s string) (seekTarget, error) {
	switch {
	case s == "start" || s == "earliest":
		return seekTarget{kind: "start"}, nil
	case s == "end" || s == "latest":
		return seekTarget{kind: "end"}, nil
	case strings.HasPrefix(s, "@"):
		v := s[1:]
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
			return seekTarget{kind: "time", millis: ms}, nil
		}
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return seekTarget{kind: "time", millis: t.UnixMilli()}, nil
		}
		return seekTarget{}, fmt.Errorf("--to %q: want @MILLISECONDS since the epoch or @RFC3339 time (2026-01-02T15:04:05Z)", s)
	}
	o, err := strconv.ParseInt(s, 10, 64)
	if err != nil || o < 0 {
		return seekTarget{}, fmt.Errorf("--to %q: want start, end, an offset or @TIMESTAMP", s)
	}
	return seekTarget{kind: "offset", offset: o}, nil
}

type seekedPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Previous is the committed offset before (-1: none).
	Previous int64 `json:"previous_offset"`
	Offset   int64 `json:"offset"`
}

func newGroupSeekCmd() *cobra.Command {
	var (
		out   outputFlag
		topic string
		to    string
	)
	cmd := &cobra.Command{
		Use:   "seek NAME --topic TOPIC --to start|end|OFFSET|@TIMESTAMP",
		Short: "Reset a group's committed offsets on a topic (the group must have no members)",
		Long: `Commits new offsets for every partition of TOPIC on behalf of the group:
start (the log start), end (the high watermark), an offset (clamped to the
partition's range), or @TIMESTAMP (the first record at or after it, in
milliseconds since the epoch or RFC 3339; the end when there is none).
As with Kafka's tools, the group must be inactive: stop its consumers first.`,
		Example: `  shale group seek billing --topic orders --to @2026-01-02T00:00:00Z`,
		Args:    exactArgs(1, "group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			name := args[0]
			if topic == "" {
				return fmt.Errorf("%s: --topic is required; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			target, err := parseSeekTarget(to)
			if err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				seeked, err := seekGroup(ctx, adm, name, topic, target)
				if err != nil {
					return err
				}
				if out.json() {
					return writeJSON(cmd, seeked)
				}
				t := newTable(cmd, "GROUP", "TOPIC", "PARTITION", "PREVIOUS", "OFFSET")
				for _, s := range seeked {
					t.row(name, s.Topic, s.Partition, offset(s.Previous), s.Offset)
				}
				return t.flush()
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&topic, "topic", "t", "", "topic whose offsets to reset (all its partitions)")
	fs.StringVar(&to, "to", "", "start, end, OFFSET or @TIMESTAMP (required)")
	out.register(fs)
	return cmd
}

func seekGroup(ctx context.Context, adm *kadm.Client, group, topic string, target seekTarget) ([]seekedPartition, error) {
	if target.kind == "" {
		return nil, fmt.Errorf("--to is required (start, end, OFFSET or @TIMESTAMP)")
	}
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, err
	}
	g := gs[group]
	if g.Err != nil {
		return nil, kafkaErr("group", group, g.Err, g.ErrMessage)
	}
	if n := len(g.Members); n > 0 || (g.State != "Empty" && g.State != "Dead") {
		return nil, fmt.Errorf("group %q has %d active member(s) (state %s): offsets can only be reset while the group is inactive; stop its consumers first", group, n, g.State)
	}
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	if td := tds[topic]; td.Err != nil {
		return nil, kafkaErr("topic", topic, td.Err, "")
	}
	// A partition's error is reported below, once no retry helps.
	starts, err := listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, topic) })
	if err != nil && starts == nil {
		return nil, err
	}
	ends, err := listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, topic) })
	if err != nil && ends == nil {
		return nil, err
	}
	var byTime kadm.ListedOffsets
	if target.kind == "time" {
		if byTime, err = listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListOffsetsAfterMilli(ctx, target.millis, topic) }); err != nil && byTime == nil {
			return nil, err
		}
	}
	prev, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, kafkaErr("group", group, err, "")
	}
	var commit kadm.Offsets
	var seeked []seekedPartition
	for _, pd := range tds[topic].Partitions.Sorted() {
		p := pd.Partition
		start, ok1 := starts.Lookup(topic, p)
		end, ok2 := ends.Lookup(topic, p)
		if !ok1 || !ok2 || start.Err != nil || end.Err != nil {
			err := start.Err
			if err == nil {
				err = end.Err
			}
			return nil, fmt.Errorf("topic %q partition %d: listing offsets: %w", topic, p, err)
		}
		var at int64
		switch target.kind {
		case "start":
			at = start.Offset
		case "end":
			at = end.Offset
		case "offset":
			at = min(max(target.offset, start.Offset), end.Offset)
		case "time":
			o, ok := byTime.Lookup(topic, p)
			switch {
			case !ok:
				return nil, fmt.Errorf("topic %q partition %d: no offset for the timestamp", topic, p)
			case o.Err != nil:
				return nil, fmt.Errorf("topic %q partition %d: %w", topic, p, o.Err)
			case o.Offset < 0:
				at = end.Offset
			default:
				at = o.Offset
			}
		}
		s := seekedPartition{Topic: topic, Partition: p, Previous: -1, Offset: at}
		if o, ok := prev.Lookup(topic, p); ok && o.Err == nil {
			s.Previous = o.At
		}
		seeked = append(seeked, s)
		commit.AddOffset(topic, p, at, -1)
	}
	resps, err := adm.CommitOffsets(ctx, group, commit)
	if err != nil {
		return nil, kafkaErr("group", group, err, "")
	}
	if err := resps.Error(); err != nil {
		return nil, kafkaErr("group", group, err, "")
	}
	return seeked, nil
}

func newGroupDeleteCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete groups and their committed offsets (the groups must have no members)",
		Args:    rangeArgs(1, -1, "group name"),
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.DeleteGroups(ctx, names...)
				if err != nil {
					return err
				}
				deleted := []string{}
				var errs []error
				for _, name := range names {
					r := resps[name]
					if r.Err != nil {
						errs = append(errs, kafkaErr("group", name, r.Err, r.ErrMessage))
						continue
					}
					deleted = append(deleted, name)
				}
				if out.json() {
					if err := writeJSON(cmd, deleted); err != nil {
						return err
					}
				} else if len(deleted) > 0 {
					t := newTable(cmd, "GROUP", "STATUS")
					for _, d := range deleted {
						t.row(d, "deleted")
					}
					t.flush()
				}
				return joinErrs(errs)
			})
		},
	}
	out.register(cmd.Flags())
	return cmd
}
