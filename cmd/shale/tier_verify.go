package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shale-log/shale/tiering"
)

// verifiedPartition is one partition of `shale tier verify`.
type verifiedPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	*tiering.Verification
}

// errDamaged: tier verify found damage (exit status 1 after its report).
var errDamaged = errors.New("the object store's remote logs are damaged")

func newTierVerifyCmd() *cobra.Command {
	var (
		out      outputFlag
		storeURL string
		quick    bool
		rate     int64
	)
	cmd := &cobra.Command{
		Use:   "verify [TOPIC...] --object-store URL",
		Short: "Check the remote logs in the object store, object by object",
		Long: `Reads the remote log of every partition (of each TOPIC, or of every topic the
object store holds) from the object store alone, as a lost cluster's would be
read back: each manifest and spilled manifest part decodes and matches its
reference, the entries ascend, every segment and companion object the
manifests name is there with the size they record, every companion decodes,
and every segment's record batches check out (lengths, CRC-32C, offsets within
the manifest's entry) with its companion's offset index and aborted
transactions; a topic descriptor that does not decode is reported too, and
the other topics still checked. It needs no broker and may run beside a live cluster: an object
that retention or compaction replaced while it ran is not reported.

It prints one line per partition, then each damaged object with what is
wrong, and exits with status 1 when it found any. --quick leaves out reading
the segments (a listing and the companions only); --bytes-per-second bounds
how fast it reads them. Objects no manifest names (a failed upload's, those
the leader's sweeps have not deleted yet) are counted, not reported.`,
		Example: `  shale tier verify --object-store 's3://logs/shale?region=eu-west-1'
  shale tier verify orders --object-store file:///var/lib/shale/objects --bytes-per-second 50000000`,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if storeURL == "" {
				return fmt.Errorf("--object-store: the URL the cluster's brokers tier to")
			}
			if rate < 0 {
				return fmt.Errorf("--bytes-per-second: %d is negative", rate)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// A topic descriptor that does not decode is damage to
			// report, not a reason to check nothing else.
			var mu sync.Mutex
			var badTopics []verifiedPartition
			bucket, descs, err := openBucketTopics(ctx, storeURL, names, func(key string, err error) {
				mu.Lock()
				defer mu.Unlock()
				badTopics = append(badTopics, verifiedPartition{Topic: path.Base(path.Dir(key)), Partition: -1,
					Verification: &tiering.Verification{Start: -1, End: -1, Problems: []tiering.Problem{{Key: key, BaseOffset: -1, NextOffset: -1, What: err.Error()}}}})
			})
			if err != nil {
				return err
			}
			defer bucket.Close()
			opts := tiering.VerifyOptions{Deep: !quick, BytesPerSecond: rate}
			rows := badTopics
			var errs []error
			damaged := len(badTopics)
			for _, d := range descs {
				vs, err := tiering.VerifyTopic(ctx, bucket, tiering.Layout{}, d, opts)
				for _, v := range vs {
					rows = append(rows, verifiedPartition{Topic: d.Name, Partition: v.Partition.Index, Verification: v})
					damaged += len(v.Problems)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("topic %s: %w", d.Name, err))
					if ctx.Err() != nil {
						break
					}
				}
			}
			if rows == nil {
				rows = []verifiedPartition{}
			}
			if out.json() {
				if err := writeJSON(cmd, rows); err != nil {
					return err
				}
			} else if err := printVerifyRows(cmd, rows, !quick); err != nil {
				return err
			}
			if damaged > 0 {
				errs = append(errs, fmt.Errorf("%w: %d problem(s)", errDamaged, damaged))
			}
			return joinErrs(errs)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&storeURL, "object-store", "", "the object store the cluster's brokers tier to (their --object-store URL)")
	fs.BoolVar(&quick, "quick", false, "check the manifests, the companions and the objects' sizes, without reading the segments")
	fs.Int64Var(&rate, "bytes-per-second", 0, "read the segments at most this fast (0: no bound)")
	out.register(fs)
	return cmd
}

func printVerifyRows(cmd *cobra.Command, rows []verifiedPartition, deep bool) error {
	t := newTable(cmd, "TOPIC", "PARTITION", "OFFSETS", "SEGMENTS", "BYTES", "READ", "UNNAMED", "PROBLEMS")
	for _, r := range rows {
		offsets := "-"
		if r.Start >= 0 {
			offsets = fmt.Sprintf("%d-%d", r.Start, r.End)
		}
		read := "-"
		if deep {
			read = humanBytes(r.ReadBytes)
		}
		t.row(r.Topic, r.Partition, offsets, r.Segments, humanBytes(r.Bytes), read, r.Unnamed, len(r.Problems))
	}
	if err := t.flush(); err != nil {
		return err
	}
	first := true
	for _, r := range rows {
		for _, p := range r.Problems {
			if first {
				fmt.Fprintln(cmd.OutOrStdout())
				first = false
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s-%d [%d, %d) %s: %s\n", r.Topic, r.Partition, p.BaseOffset, p.NextOffset, p.Key, p.What)
		}
	}
	return nil
}
