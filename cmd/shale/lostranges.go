package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker"
)

// Lost ranges are the stretches of offsets that damaged batches of sealed
// segments held (found by the scrubber or a read), which reads skip until
// the broker's repairer puts them back from the bucket or another replica.
// Each broker serves those of the partitions it hosts as JSON on its HTTP
// address: GET /v1/lost-ranges?topic=NAME; `shale topic lost-ranges`
// asks every broker.

// lostRange is one range in the /v1/lost-ranges answer: offsets
// [from, to) of the segment whose base offset is segment_base.
type lostRange struct {
	From        int64     `json:"from"`
	To          int64     `json:"to"`
	SegmentBase int64     `json:"segment_base"`
	Found       time.Time `json:"found"`
}

// lostPartition is one partition with lost ranges on one broker.
type lostPartition struct {
	Broker    int32       `json:"broker"`
	Topic     string      `json:"topic"`
	Partition int32       `json:"partition"`
	Leader    bool        `json:"leader"`
	Ranges    []lostRange `json:"ranges"`
	// ReadError: the broker could not read the partition's record of
	// lost ranges.
	ReadError string `json:"read_error,omitempty"`
	// LastRepair and LastRepairError: the last repair that left a range
	// lost, and what each source answered.
	LastRepair      *time.Time `json:"last_repair,omitempty"`
	LastRepairError string     `json:"last_repair_error,omitempty"`
}

// lostDocument is the /v1/lost-ranges answer.
type lostDocument = partitionsDocument[lostPartition]

// lostReport is broker b's lost ranges of topic (every topic when empty).
func lostReport(b *broker.Broker, topic string) []lostPartition {
	var out []lostPartition
	for _, st := range b.LostRanges(topic) {
		lp := lostPartition{Broker: st.Broker, Topic: st.Topic, Partition: st.Partition, Leader: st.Leader,
			Ranges: []lostRange{}, ReadError: st.ReadError, LastRepairError: st.LastRepairError}
		for _, lr := range st.Ranges {
			lp.Ranges = append(lp.Ranges, lostRange{From: lr.From, To: lr.To, SegmentBase: lr.SegmentBase, Found: time.UnixMilli(lr.FoundMs).UTC()})
		}
		if !st.LastRepair.IsZero() {
			t := st.LastRepair.UTC()
			lp.LastRepair = &t
		}
		out = append(out, lp)
	}
	return out
}

// fetchLostRanges asks every --http address, or every address the brokers
// advertise; it returns what those that answered said, and an error naming
// those that did not.
func fetchLostRanges(ctx context.Context, cmd *cobra.Command, adm *kadm.Client, h *httpFlag, topic string) ([]lostPartition, error) {
	addrs, err := h.resolve(cmd)
	if err != nil {
		return nil, err
	}
	out, answered, err := askBrokers[lostPartition](ctx, adm, addrs, "/v1/lost-ranges", topic)
	if err != nil && answered == 0 {
		return nil, fmt.Errorf("no broker answered on its HTTP address: %w", err)
	}
	return out, err
}

func newTopicLostRangesCmd() *cobra.Command {
	var (
		out outputFlag
		hf  httpFlag
	)
	cmd := &cobra.Command{
		Use:   "lost-ranges [TOPIC]",
		Short: "Offsets lost to damaged local segments, and why they are not repaired yet",
		Long: `Lists, for each replica of each partition (of TOPIC, or of every topic), the
stretches of offsets whose batches were found damaged in a sealed local segment
(by the background scrubber or a read), which reads skip, with the segment they
lie in and when they were found. The broker repairs them from the object store
or another in-sync replica; a range listed here is one no source has given
back yet, and LAST-REPAIR-ERROR says what each source answered at the last try
(tried again every 5 minutes). Nothing listed: no known damage.

The lists come from each broker's HTTP address (GET /v1/lost-ranges), found as
for shale tier status; --http (or SHALE_HTTP) names the addresses instead.`,
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
				if topic != "" {
					tds, err := adm.ListTopics(ctx, topic)
					if err != nil {
						return err
					}
					if td, ok := tds[topic]; ok && td.Err != nil {
						return kafkaErr("topic", topic, td.Err, "")
					}
				}
				parts, httpErr := fetchLostRanges(ctx, cmd, adm, &hf, topic)
				if parts == nil && httpErr != nil {
					return httpErr
				}
				if parts == nil {
					parts = []lostPartition{}
				}
				if out.json() {
					if err := writeJSON(cmd, parts); err != nil {
						return err
					}
				} else {
					t := newTable(cmd, "TOPIC", "PARTITION", "BROKER", "LEADER", "OFFSETS", "SEGMENT", "FOUND", "LAST-REPAIR-ERROR")
					now := time.Now()
					for _, p := range parts {
						leader := "no"
						if p.Leader {
							leader = "yes"
						}
						why := p.LastRepairError
						if p.ReadError != "" {
							why = "record unreadable: " + p.ReadError
						}
						if why == "" {
							why = "-"
						}
						if len(p.Ranges) == 0 {
							t.row(p.Topic, p.Partition, p.Broker, leader, "?", "-", "-", why)
						}
						for _, r := range p.Ranges {
							t.row(p.Topic, p.Partition, p.Broker, leader, fmt.Sprintf("%d-%d", r.From, r.To-1), r.SegmentBase, ago(now.Sub(r.Found)), why)
						}
					}
					if err := t.flush(); err != nil {
						return err
					}
					if len(parts) == 0 {
						fmt.Fprintln(cmd.OutOrStdout(), "no lost ranges")
					}
				}
				if httpErr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "shale: some brokers did not report: %v\n", httpErr)
				}
				return nil
			})
		},
	}
	hf.register(cmd.Flags())
	out.register(cmd.Flags())
	return cmd
}
