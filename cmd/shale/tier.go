package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker"
)

// Tiered storage status is not part of the Kafka protocol (Kafka itself
// exposes remote log sizes only as metrics), so each broker serves it as
// JSON on its HTTP address, next to /metrics: GET /v1/tier?topic=NAME
// lists the partitions the broker hosts. `shale tier status` finds every
// broker's HTTP address through the Kafka listener (each describes its
// own as the broker config shale.advertised.http.address), or takes them
// from --http, asks them, and shows each partition as its leader, known
// from the cluster's metadata, reports it.

// tierPartition is one partition in the /v1/tier answer.
type tierPartition struct {
	Broker            int32      `json:"broker"`
	Topic             string     `json:"topic"`
	Partition         int32      `json:"partition"`
	Leader            bool       `json:"leader"`
	Tiered            bool       `json:"tiered"`
	Loading           bool       `json:"loading,omitempty"`
	UploadsStopped    bool       `json:"uploads_stopped,omitempty"`
	Deleting          bool       `json:"deleting,omitempty"`
	LocalBytes        int64      `json:"local_bytes"`
	LocalStartOffset  int64      `json:"local_start_offset"`
	LogEndOffset      int64      `json:"log_end_offset"`
	HighWatermark     int64      `json:"high_watermark"`
	RemoteBytes       int64      `json:"remote_bytes"`
	RemoteSegments    int64      `json:"remote_segments"`
	RemoteStartOffset int64      `json:"remote_start_offset"`
	RemoteEndOffset   int64      `json:"remote_end_offset"`
	UploadLagBytes    int64      `json:"upload_lag_bytes"`
	UploadLagSegments int64      `json:"upload_lag_segments"`
	LastUpload        *time.Time `json:"last_upload,omitempty"`
	// RemoteCleanedTo and RemoteCleanedAt: where and when the last
	// compaction of a compacted topic's remote log left off (its leader's
	// report).
	RemoteCleanedTo *int64     `json:"remote_cleaned_to,omitempty"`
	RemoteCleanedAt *time.Time `json:"remote_cleaned_at,omitempty"`
	// RemoteScrubbedAt, RemoteDamaged and RemoteScrubbingFrom: when the
	// last complete scrub of the remote log ended, the damaged objects
	// the scrub found (the one under way, or else that one), and where
	// the one under way goes on (its leader's report).
	RemoteScrubbedAt    *time.Time `json:"remote_scrubbed_at,omitempty"`
	RemoteDamaged       *int       `json:"remote_damaged_objects,omitempty"`
	RemoteScrubbingFrom *int64     `json:"remote_scrubbing_from,omitempty"`
}

// tierReport is broker b's tiered storage status of topic (every topic
// when empty).
func tierReport(b *broker.Broker, topic string) []tierPartition {
	var out []tierPartition
	for _, st := range b.TierStatus(topic) {
		tp := tierPartition{
			Broker: st.Broker, Topic: st.Topic, Partition: st.Partition, Leader: st.Leader, Tiered: st.Tiered, Loading: st.Loading,
			UploadsStopped: st.UploadsStopped, Deleting: st.Deleting,
			LocalBytes: st.LocalBytes, LocalStartOffset: st.LocalStartOffset, LogEndOffset: st.LogEndOffset, HighWatermark: st.HighWatermark,
			RemoteBytes: st.RemoteBytes, RemoteSegments: st.RemoteSegments, RemoteStartOffset: st.RemoteStartOffset, RemoteEndOffset: st.RemoteEndOffset,
			UploadLagBytes: st.UploadLagBytes, UploadLagSegments: st.UploadLagSegments,
		}
		if !st.LastUpload.IsZero() {
			t := st.LastUpload.UTC()
			tp.LastUpload = &t
		}
		if !st.RemoteScrubbedAt.IsZero() {
			at := st.RemoteScrubbedAt.UTC()
			tp.RemoteScrubbedAt = &at
		}
		if st.Leader && st.Tiered && (!st.RemoteScrubbedAt.IsZero() || st.RemoteScrubbingFrom >= 0) {
			n := st.RemoteDamaged
			tp.RemoteDamaged = &n
		}
		if st.RemoteScrubbingFrom >= 0 {
			from := st.RemoteScrubbingFrom
			tp.RemoteScrubbingFrom = &from
		}
		if st.RemoteCleanedTo >= 0 {
			to, at := st.RemoteCleanedTo, st.RemoteCleanedAt.UTC()
			tp.RemoteCleanedTo, tp.RemoteCleanedAt = &to, &at
		}
		out = append(out, tp)
	}
	return out
}

// httpFlag is --http: the brokers' HTTP addresses (SHALE_HTTP); none:
// ask the cluster.
type httpFlag struct{ addrs []string }

func (h *httpFlag) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&h.addrs, "http", nil, "the brokers' HTTP addresses (--http-addr of shale dev and shale broker), host:port, comma-separated (env SHALE_HTTP; default: the addresses the brokers advertise)")
}

// resolve returns the addresses given with --http or SHALE_HTTP (none:
// discover them).
func (h *httpFlag) resolve(cmd *cobra.Command) ([]string, error) {
	f := cmd.Flags().Lookup("http")
	if v, ok := os.LookupEnv("SHALE_HTTP"); ok && !f.Changed {
		if err := f.Value.Set(v); err != nil {
			return nil, fmt.Errorf("SHALE_HTTP=%q: %w", v, err)
		}
	}
	for _, a := range h.addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("--http %q: want host:port", a)
		}
	}
	return h.addrs, nil
}

// tierStatuses are the partitions the brokers reported, the leader's
// report kept where several replicas answered.
type tierStatuses map[string]map[int32]tierPartition

func (s tierStatuses) lookup(topic string, partition int32) (tierPartition, bool) {
	p, ok := s[topic][partition]
	return p, ok
}

func (s tierStatuses) add(p tierPartition) {
	if s[p.Topic] == nil {
		s[p.Topic] = map[int32]tierPartition{}
	}
	if old, ok := s[p.Topic][p.Partition]; ok && old.Leader && !p.Leader {
		return
	}
	s[p.Topic][p.Partition] = p
}

// advertisedHTTPAddrs asks every broker in the cluster's metadata for the
// HTTP address it advertises; it returns those it learnt, and an error
// naming the brokers that did not say.
func advertisedHTTPAddrs(ctx context.Context, adm *kadm.Client) ([]string, error) {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	ids := md.Brokers.NodeIDs()
	found, err := brokerHTTPAddrs(ctx, adm, ids)
	var addrs []string
	for _, id := range ids {
		if a, ok := found[id]; ok {
			addrs = append(addrs, a)
		}
	}
	return addrs, err
}

// brokerHTTPAddrs asks brokers ids for the HTTP address each advertises
// (the broker config shale.advertised.http.address); the error names
// those that did not say.
func brokerHTTPAddrs(ctx context.Context, adm *kadm.Client, ids []int32) (map[int32]string, error) {
	found := map[int32]string{}
	rcs, err := adm.DescribeBrokerConfigs(ctx, ids...)
	if err != nil && len(rcs) == 0 {
		return found, fmt.Errorf("describing the brokers' configs: %w", err)
	}
	failed := map[int32]error{}
	for _, rc := range rcs {
		id, _ := strconv.ParseInt(rc.Name, 10, 32)
		if rc.Err != nil {
			failed[int32(id)] = rc.Err
			continue
		}
		for _, c := range rc.Configs {
			if c.Key == broker.HTTPAddressConfig && c.MaybeValue() != "" {
				found[int32(id)] = c.MaybeValue()
			}
		}
	}
	var errs []string
	for _, id := range ids {
		if _, ok := found[id]; ok {
			continue
		}
		if err := failed[id]; err != nil {
			errs = append(errs, fmt.Sprintf("broker %d: %v", id, err))
		} else {
			errs = append(errs, fmt.Sprintf("broker %d advertises no HTTP address (give them with --http)", id))
		}
	}
	if len(errs) > 0 {
		return found, errors.New(strings.Join(errs, "; "))
	}
	return found, nil
}

// fetchTierStatus asks every --http address, or every address the brokers
// advertise; it returns what those that answered said, and an error naming
// those that did not.
func fetchTierStatus(ctx context.Context, cmd *cobra.Command, adm *kadm.Client, h *httpFlag, topic string) (tierStatuses, error) {
	out := tierStatuses{}
	addrs, err := h.resolve(cmd)
	if err != nil {
		return out, err
	}
	parts, _, err := askBrokers[tierPartition](ctx, adm, addrs, "/v1/tier", topic)
	for _, p := range parts {
		out.add(p)
	}
	return out, err
}

func newTierCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tier",
		Short: "Tiered storage: what is local, what is in the object store",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newTierStatusCmd(), newTierVerifyCmd())
	return cmd
}

// tierRow is one partition of `shale tier status`.
type tierRow struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Leader    int32  `json:"leader"`
	// Reported: the leader's HTTP address answered (--http); without it
	// the other fields are unknown.
	Reported bool `json:"reported"`
	tierPartition
}

func newTierStatusCmd() *cobra.Command {
	var (
		out outputFlag
		hf  httpFlag
	)
	cmd := &cobra.Command{
		Use:   "status [TOPIC]",
		Short: "Per partition: local and remote bytes, upload lag, last upload",
		Long: `Shows, for each partition (of TOPIC, or of every topic), its local size, its
size in the object store, the sealed segments not uploaded yet (upload lag) and
the time of the last upload, as the partition's leader reports them.

The numbers come from each broker's HTTP address (GET /v1/tier), which each
broker advertises (its --advertised-http-addr, shown by DescribeConfigs as
shale.advertised.http.address), so --brokers alone is enough; --http (or
SHALE_HTTP) names the addresses instead, for brokers whose advertised HTTP
address is not reachable from here.`,
		Args: rangeArgs(0, 1, "topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			topic := ""
			if len(args) == 1 {
				topic = args[0]
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				var topics []string
				if topic != "" {
					topics = []string{topic}
				}
				tds, err := adm.ListTopics(ctx, topics...)
				if err != nil {
					return err
				}
				if td, ok := tds[topic]; topic != "" && ok && td.Err != nil {
					return kafkaErr("topic", topic, td.Err, "")
				}
				st, httpErr := fetchTierStatus(ctx, cmd, adm, &hf, topic)
				rows := []tierRow{}
				var missing []string
				for _, td := range tds.Sorted() {
					for _, pd := range td.Partitions.Sorted() {
						r := tierRow{Topic: td.Topic, Partition: pd.Partition, Leader: pd.Leader}
						if p, ok := st.lookup(td.Topic, pd.Partition); ok && p.Leader && p.Broker == pd.Leader {
							r.Reported, r.tierPartition = true, p
						} else {
							missing = append(missing, fmt.Sprintf("%s-%d (leader %d)", td.Topic, pd.Partition, pd.Leader))
						}
						rows = append(rows, r)
					}
				}
				if len(rows) > 0 && len(missing) == len(rows) && httpErr != nil {
					return fmt.Errorf("no broker answered on its HTTP address: %w", httpErr)
				}
				if out.json() {
					if err := writeJSON(cmd, rows); err != nil {
						return err
					}
				} else if err := printTierRows(cmd, rows); err != nil {
					return err
				}
				if len(missing) > 0 {
					why := "their leader's HTTP address did not report them"
					if httpErr != nil {
						why = httpErr.Error()
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "shale: no report for %d partition(s) from their leader, e.g. %s: %s\n", len(missing), missing[0], why)
				}
				return nil
			})
		},
	}
	hf.register(cmd.Flags())
	out.register(cmd.Flags())
	return cmd
}

func printTierRows(cmd *cobra.Command, rows []tierRow) error {
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Topic != rows[j].Topic {
			return rows[i].Topic < rows[j].Topic
		}
		return rows[i].Partition < rows[j].Partition
	})
	now := time.Now()
	t := newTable(cmd, "TOPIC", "PARTITION", "LEADER", "TIERED", "LOCAL", "REMOTE", "REMOTE-OFFSETS", "UPLOAD-LAG", "LAST-UPLOAD")
	for _, r := range rows {
		if !r.Reported {
			t.row(r.Topic, r.Partition, r.Leader, "?", "-", "-", "-", "-", "-")
			continue
		}
		tiered, remote, offsets, lag, last := "no", "-", "-", "-", "-"
		if r.Tiered {
			switch {
			case r.Loading:
				tiered = "loading"
			case r.Deleting:
				tiered = "deleting" // remote storage turned off
			case r.UploadsStopped:
				tiered = "stopped" // remote.log.copy.disable
			default:
				tiered = "yes"
			}
			remote = humanBytes(r.RemoteBytes)
			if r.RemoteStartOffset >= 0 {
				offsets = fmt.Sprintf("%d-%d", r.RemoteStartOffset, r.RemoteEndOffset)
			}
			lag = fmt.Sprintf("%s (%d segments)", humanBytes(r.UploadLagBytes), r.UploadLagSegments)
			if r.UploadLagSegments == 1 {
				lag = fmt.Sprintf("%s (1 segment)", humanBytes(r.UploadLagBytes))
			}
			if r.LastUpload != nil {
				last = ago(now.Sub(*r.LastUpload))
			} else {
				last = "never"
			}
		}
		t.row(r.Topic, r.Partition, r.Leader, tiered, humanBytes(r.LocalBytes), remote, offsets, lag, last)
	}
	return t.flush()
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
