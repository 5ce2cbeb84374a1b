package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, list, describe, configure, grow, move and delete topics",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newTopicCreateCmd(), newTopicListCmd(), newTopicDescribeCmd(), newTopicAlterConfigCmd(), newTopicDeleteCmd(), newTopicAddPartitionsCmd(), newTopicReassignCmd(), newTopicReassignmentsCmd(),
		newTopicLostRangesCmd(), newTopicRestoreCmd(), newTopicElectLeadersCmd())
	return cmd
}

// parseConfigs reads key=value pairs (-c, --set).
func parseConfigs(flag string, kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s: %s given twice", flag, k)
		}
		out[k] = v
	}
	return out, nil
}

type createdTopic struct {
	Topic             string `json:"topic"`
	ID                string `json:"id"`
	Partitions        int32  `json:"partitions"`
	ReplicationFactor int16  `json:"replication_factor"`
}

func newTopicCreateCmd() *cobra.Command {
	var (
		out        outputFlag
		partitions int32
		rf         int16
		configs    []string
	)
	cmd := &cobra.Command{
		Use:     "create NAME...",
		Short:   "Create topics",
		Example: `  shale topic create orders -p 12 -r 3 -c retention.ms=604800000 -c remote.storage.enable=true`,
		Args:    rangeArgs(1, -1, "topic name"),
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			cfg, err := parseConfigs("-c", configs)
			if err != nil {
				return err
			}
			kcfg := map[string]*string{}
			for k, v := range cfg {
				kcfg[k] = &v
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.CreateTopics(ctx, partitions, rf, kcfg, names...)
				if err != nil {
					return err
				}
				var created []createdTopic
				var errs []error
				for _, name := range names {
					r := resps[name]
					if r.Err != nil {
						errs = append(errs, kafkaErr("topic", name, r.Err, r.ErrMessage))
						continue
					}
					created = append(created, createdTopic{Topic: name, ID: kafkaUUID(r.ID), Partitions: r.NumPartitions, ReplicationFactor: r.ReplicationFactor})
				}
				if out.json() {
					if err := writeJSON(cmd, created); err != nil {
						return err
					}
				} else if len(created) > 0 {
					t := newTable(cmd, "TOPIC", "ID", "PARTITIONS", "REPLICATION-FACTOR")
					for _, c := range created {
						t.row(c.Topic, c.ID, c.Partitions, c.ReplicationFactor)
					}
					t.flush()
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.Int32VarP(&partitions, "partitions", "p", -1, "partitions (default: the broker's num.partitions)")
	fs.Int16VarP(&rf, "replication-factor", "r", -1, "replicas of each partition (default: the broker's default.replication.factor)")
	fs.StringArrayVarP(&configs, "config", "c", nil, "topic config key=value, repeatable (Kafka's names: retention.ms, cleanup.policy, remote.storage.enable, ...)")
	out.register(fs)
	return cmd
}

// kafkaUUID prints a topic id as Kafka's tools do (URL-safe base64
// without padding).
func kafkaUUID(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// joinErrs makes one line of several errors.
func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &messageErr{err: errors.Join(errs...), msg: strings.Join(msgs, "; ")}
}

type listedTopic struct {
	Topic             string `json:"topic"`
	ID                string `json:"id"`
	Partitions        int    `json:"partitions"`
	ReplicationFactor int    `json:"replication_factor"`
	Internal          bool   `json:"internal,omitempty"`
}

func newTopicListCmd() *cobra.Command {
	var (
		out      outputFlag
		internal bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List topics",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				list := adm.ListTopics
				if internal {
					list = adm.ListTopicsWithInternal
				}
				tds, err := list(ctx)
				if err != nil {
					return err
				}
				topics := []listedTopic{}
				for _, td := range tds.Sorted() {
					if td.Err != nil {
						return kafkaErr("topic", td.Topic, td.Err, "")
					}
					topics = append(topics, listedTopic{Topic: td.Topic, ID: kafkaUUID(td.ID), Partitions: len(td.Partitions),
						ReplicationFactor: td.Partitions.NumReplicas(), Internal: td.IsInternal})
				}
				if out.json() {
					return writeJSON(cmd, topics)
				}
				t := newTable(cmd, "TOPIC", "PARTITIONS", "REPLICATION-FACTOR", "ID")
				for _, tp := range topics {
					t.row(tp.Topic, tp.Partitions, tp.ReplicationFactor, tp.ID)
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&internal, "internal", "i", false, "include internal topics (__consumer_offsets)")
	out.register(cmd.Flags())
	return cmd
}

type describedTopic struct {
	Topic      string               `json:"topic"`
	ID         string               `json:"id"`
	Internal   bool                 `json:"internal"`
	Partitions []describedPartition `json:"partitions"`
	Configs    []describedConfig    `json:"configs"`
}

type describedPartition struct {
	Partition      int32   `json:"partition"`
	Leader         int32   `json:"leader"`
	LeaderEpoch    int32   `json:"leader_epoch"`
	Replicas       []int32 `json:"replicas"`
	ISR            []int32 `json:"isr"`
	Eligible       []int32 `json:"eligible_leader_replicas"` // KIP-966's ELR; [] when the broker does not say
	Offline        []int32 `json:"offline_replicas,omitempty"`
	LogStartOffset int64   `json:"log_start_offset"`
	HighWatermark  int64   `json:"high_watermark"`
	// LocalBytes is the leader's local log size (DescribeLogDirs);
	// ReplicaBytes every replica's that answered.
	LocalBytes   int64           `json:"local_bytes"`
	ReplicaBytes map[int32]int64 `json:"replica_local_bytes"`
	// RemoteBytes is the size in the object store (-1: unknown, see
	// shale tier status).
	RemoteBytes int64  `json:"remote_bytes"`
	Error       string `json:"error,omitempty"`
}

type describedConfig struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Source    string `json:"source"`
	Sensitive bool   `json:"sensitive,omitempty"`
}

func newTopicDescribeCmd() *cobra.Command {
	var (
		out outputFlag
		hf  httpFlag
	)
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Describe a topic: partitions, leaders, replicas, ISR, ELR, sizes and configs",
		Long: `Describes a topic: each partition's leader, replicas, in-sync replicas and
eligible leader replicas (ELR: KIP-966's replicas that left an ISR smaller than
min.insync.replicas, from DescribeTopicPartitions), offsets, local size
(DescribeLogDirs) and remote size (from the HTTP addresses the brokers
advertise, or --http), and the topic's configs with their source.`,
		Args: exactArgs(1, "topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			name := args[0]
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, cl *cliClient) error {
				d, err := describeTopic(ctx, adm, name)
				if err != nil {
					return err
				}
				// A broker older than KIP-966 does not know
				// DescribeTopicPartitions; the describe still answers.
				eligible, err := eligibleLeaderReplicas(ctx, cl, name)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "shale: eligible leader replicas unknown: %v\n", err)
				}
				for i := range d.Partitions {
					p := &d.Partitions[i]
					p.Eligible = orEmpty(eligible[p.Partition])
				}
				// Remote sizes come from the brokers' HTTP addresses; a
				// describe without them still answers.
				remote, err := fetchTierStatus(ctx, cmd, adm, &hf, name)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "shale: remote sizes unknown: %v\n", err)
				}
				for i := range d.Partitions {
					p := &d.Partitions[i]
					if st, ok := remote.lookup(name, p.Partition); ok && st.Tiered {
						p.RemoteBytes = st.RemoteBytes
					} else if ok {
						p.RemoteBytes = 0
					}
				}
				if out.json() {
					return writeJSON(cmd, d)
				}
				return printTopic(cmd, d)
			})
		},
	}
	hf.register(cmd.Flags())
	out.register(cmd.Flags())
	return cmd
}

func describeTopic(ctx context.Context, adm *kadm.Client, name string) (describedTopic, error) {
	d := describedTopic{Topic: name, Partitions: []describedPartition{}, Configs: []describedConfig{}}
	tds, err := adm.ListTopicsWithInternal(ctx, name)
	if err != nil {
		return d, err
	}
	td, ok := tds[name]
	if !ok {
		return d, fmt.Errorf("topic %q: not in the metadata answer", name)
	}
	if td.Err != nil {
		return d, kafkaErr("topic", name, td.Err, "")
	}
	d.ID, d.Internal = kafkaUUID(td.ID), td.IsInternal
	starts, err := adm.ListStartOffsets(ctx, name)
	if err != nil {
		return d, err
	}
	ends, err := adm.ListEndOffsets(ctx, name)
	if err != nil {
		return d, err
	}
	dirs, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{name: partitionSet(td)})
	if err != nil {
		var se *kadm.ShardErrors
		if !errors.As(err, &se) { // some brokers answered: use what they said
			return d, err
		}
	}
	for _, pd := range td.Partitions.Sorted() {
		p := describedPartition{Partition: pd.Partition, Leader: pd.Leader, LeaderEpoch: pd.LeaderEpoch,
			Replicas: orEmpty(pd.Replicas), ISR: orEmpty(pd.ISR), Eligible: []int32{}, Offline: pd.OfflineReplicas,
			LogStartOffset: -1, HighWatermark: -1, LocalBytes: -1, RemoteBytes: -1, ReplicaBytes: map[int32]int64{}}
		if pd.Err != nil {
			p.Error = pd.Err.Error()
		}
		if o, ok := starts.Lookup(name, pd.Partition); ok && o.Err == nil {
			p.LogStartOffset = o.Offset
		}
		if o, ok := ends.Lookup(name, pd.Partition); ok && o.Err == nil {
			p.HighWatermark = o.Offset
		}
		dirs.Each(func(ld kadm.DescribedLogDir) {
			if dp, ok := ld.Topics[name][pd.Partition]; ok {
				p.ReplicaBytes[ld.Broker] = dp.Size
			}
		})
		if n, ok := p.ReplicaBytes[pd.Leader]; ok {
			p.LocalBytes = n
		}
		d.Partitions = append(d.Partitions, p)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, name)
	if err != nil {
		return d, err
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return d, kafkaErr("topic", name, rc.Err, rc.ErrMessage)
		}
		for _, c := range rc.Configs {
			dc := describedConfig{Name: c.Key, Value: c.MaybeValue(), Source: configSource(c.Source), Sensitive: c.Sensitive}
			d.Configs = append(d.Configs, dc)
		}
	}
	sort.Slice(d.Configs, func(i, j int) bool { return d.Configs[i].Name < d.Configs[j].Name })
	return d, nil
}

// eligibleLeaderReplicas asks DescribeTopicPartitions (KIP-966) for the
// eligible leader replicas of each of the topic's partitions, a page of at
// most maxDescribedPartitions at a time.
func eligibleLeaderReplicas(ctx context.Context, cl *cliClient, name string) (map[int32][]int32, error) {
	const maxDescribedPartitions = 2000 // Kafka's max.request.partition.size.limit
	out := map[int32][]int32{}
	req := kmsg.NewPtrDescribeTopicPartitionsRequest()
	rt := kmsg.NewDescribeTopicPartitionsRequestTopic()
	rt.Topic = name
	req.Topics = append(req.Topics, rt)
	req.ResponsePartitionLimit = maxDescribedPartitions
	var from int32
	for {
		resp, err := req.RequestWith(ctx, cl.Client)
		if err != nil {
			return out, fmt.Errorf("DescribeTopicPartitions: %w", err)
		}
		for _, t := range resp.Topics {
			if t.Topic == nil || *t.Topic != name {
				continue
			}
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
				return out, fmt.Errorf("DescribeTopicPartitions: %w", err)
			}
			for _, p := range t.Partitions {
				out[p.Partition] = p.EligibleLeaderReplicas
			}
		}
		next := resp.NextCursor
		if next == nil || next.Topic != name {
			return out, nil
		}
		// A cursor that does not move on would ask for the same page
		// forever.
		if next.Partition <= from {
			return out, fmt.Errorf("the next cursor, partition %d, is not past this page's first, %d", next.Partition, from)
		}
		from = next.Partition
		req.Cursor = &kmsg.DescribeTopicPartitionsRequestCursor{Topic: name, Partition: from}
	}
}

func partitionSet(td kadm.TopicDetail) map[int32]struct{} {
	s := map[int32]struct{}{}
	for p := range td.Partitions {
		s[p] = struct{}{}
	}
	return s
}

// orEmpty is s, or an empty slice for nil: JSON shows [] rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// configSource names a config's source as Kafka's tools do.
func configSource(s kmsg.ConfigSource) string {
	switch s {
	case kmsg.ConfigSourceDynamicTopicConfig:
		return "topic"
	case kmsg.ConfigSourceStaticBrokerConfig, kmsg.ConfigSourceDynamicBrokerConfig, kmsg.ConfigSourceDynamicDefaultBrokerConfig:
		return "broker"
	case kmsg.ConfigSourceDefaultConfig:
		return "default"
	}
	return strings.ToLower(s.String())
}

func printTopic(cmd *cobra.Command, d describedTopic) error {
	t := newTable(cmd)
	t.row("TOPIC", d.Topic)
	t.row("ID", d.ID)
	t.row("PARTITIONS", len(d.Partitions))
	if d.Internal {
		t.row("INTERNAL", "true")
	}
	t.flush()
	fmt.Fprintln(cmd.OutOrStdout())
	t = newTable(cmd, "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "ELR", "LOG-START", "HIGH-WATERMARK", "LOCAL-SIZE", "REMOTE-SIZE")
	for _, p := range d.Partitions {
		leader := fmt.Sprint(p.Leader)
		if p.Leader < 0 {
			leader = "none"
		}
		isr := ids(p.ISR)
		if p.Error != "" {
			isr += " (" + p.Error + ")"
		}
		// ids prints nothing for none; a dash keeps the column
		// visible.
		t.row(p.Partition, leader, p.LeaderEpoch, ids(p.Replicas), isr, orDash(ids(p.Eligible)), offset(p.LogStartOffset), offset(p.HighWatermark),
			humanBytes(p.LocalBytes), humanBytes(p.RemoteBytes))
	}
	t.flush()
	fmt.Fprintln(cmd.OutOrStdout())
	t = newTable(cmd, "CONFIG", "VALUE", "SOURCE")
	for _, c := range d.Configs {
		v := c.Value
		if c.Sensitive {
			v = "(sensitive)"
		}
		t.row(c.Name, v, c.Source)
	}
	return t.flush()
}

func ids(s []int32) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ",")
}

func offset(o int64) string {
	if o < 0 {
		return "-"
	}
	return fmt.Sprint(o)
}

type alteredConfig struct {
	Topic   string            `json:"topic"`
	Set     map[string]string `json:"set"`
	Deleted []string          `json:"deleted"`
}

func newTopicAlterConfigCmd() *cobra.Command {
	var (
		out     outputFlag
		set     []string
		deletes []string
	)
	cmd := &cobra.Command{
		Use:     "alter-config NAME --set key=value --delete key",
		Short:   "Change a topic's configs (IncrementalAlterConfigs)",
		Example: `  shale topic alter-config orders --set retention.ms=86400000 --delete cleanup.policy`,
		Args:    exactArgs(1, "topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			name := args[0]
			kv, err := parseConfigs("--set", set)
			if err != nil {
				return err
			}
			if len(kv) == 0 && len(deletes) == 0 {
				return fmt.Errorf("%s: nothing to change (--set key=value, --delete key); see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			var alters []kadm.AlterConfig
			for _, k := range slices.Sorted(maps.Keys(kv)) {
				v := kv[k]
				alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
			}
			for _, k := range deletes {
				if _, both := kv[k]; both {
					return fmt.Errorf("%s is both set and deleted", k)
				}
				alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.AlterTopicConfigs(ctx, alters, name)
				if err != nil {
					return err
				}
				for _, r := range resps {
					if r.Err != nil {
						return kafkaErr("topic", name, r.Err, r.ErrMessage)
					}
				}
				res := alteredConfig{Topic: name, Set: kv, Deleted: orEmpty(deletes)}
				if out.json() {
					return writeJSON(cmd, res)
				}
				t := newTable(cmd, "TOPIC", "CONFIG", "CHANGE")
				for _, a := range alters {
					change := "deleted (back to the default)"
					if a.Op == kadm.SetConfig {
						change = "set to " + *a.Value
					}
					t.row(name, a.Name, change)
				}
				return t.flush()
			})
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&set, "set", nil, "config key=value to set, repeatable")
	fs.StringArrayVar(&deletes, "delete", nil, "config key to delete (back to the broker default), repeatable")
	out.register(fs)
	return cmd
}

type deletedTopic struct {
	Topic string `json:"topic"`
	ID    string `json:"id"`
}

func newTopicDeleteCmd() *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete topics (their records, local and in the object store)",
		Args:    rangeArgs(1, -1, "topic name"),
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				resps, err := adm.DeleteTopics(ctx, names...)
				if err != nil {
					return err
				}
				deleted := []deletedTopic{}
				var errs []error
				for _, name := range names {
					r := resps[name]
					if r.Err != nil {
						errs = append(errs, kafkaErr("topic", name, r.Err, r.ErrMessage))
						continue
					}
					deleted = append(deleted, deletedTopic{Topic: name, ID: kafkaUUID(r.ID)})
				}
				if out.json() {
					if err := writeJSON(cmd, deleted); err != nil {
						return err
					}
				} else if len(deleted) > 0 {
					t := newTable(cmd, "TOPIC", "ID", "STATUS")
					for _, d := range deleted {
						t.row(d.Topic, d.ID, "deleted")
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
