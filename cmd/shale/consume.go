package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeFlags are the flags of `shale consume`.
type consumeFlags struct {
	offset    string
	num       int
	group     string
	partition int32
	format    string
	exitAtEnd bool
}

func newConsumeCmd() *cobra.Command {
	var f consumeFlags
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print records of a topic",
		Long: `Prints the records of TOPIC on standard output, one --format per record, until
-n records were printed, the end of every partition was reached (-e), or
Ctrl-C.

--offset says where to start in each partition:
  start        the oldest record kept (default)
  end          only records produced from now on
  N            offset N (clamped to the partition's range)
  -N           N records before the end
  @TIMESTAMP   the first record at or after TIMESTAMP, in milliseconds since
               1970 or RFC 3339 (@2026-01-02T15:04:05Z)
With -g GROUP the records are consumed as a member of the consumer group:
the group's committed offsets win over --offset, and the offsets of the
records printed are committed. -e then waits for the end of every
partition, so it suits a group with this one member.

--format placeholders (as kcat's):
  %k key    %K key length    %v or %s value    %S value length
  %t topic  %p partition     %o offset         %T timestamp (ms)
  %h headers as k=v,k=v      %% a percent sign
  \n newline  \t tab  \r carriage return  \\ backslash`,
		Example: `  shale consume orders -e
  shale consume orders -o -10 -f '%p/%o %k=%v\n'
  shale consume orders -g billing -n 100`,
		Args: exactArgs(1, "TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConsume(cmd, args[0], f)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&f.offset, "offset", "o", "start", "where to start: start, end, N, -N or @TIMESTAMP (see above)")
	fs.IntVarP(&f.num, "num", "n", 0, "stop after this many records (0: no limit)")
	fs.StringVarP(&f.group, "group", "g", "", "consume as a member of this consumer group and commit its offsets")
	fs.Int32VarP(&f.partition, "partition", "p", -1, "consume only this partition (not with -g)")
	fs.StringVarP(&f.format, "format", "f", `%v\n`, "output format of each record (see above)")
	fs.BoolVarP(&f.exitAtEnd, "exit", "e", false, "exit once the end of every partition (as it was at start) is reached")
	addClientFlags(cmd)
	return cmd
}

// offsetKind is what --offset names.
type offsetKind int

const (
	offsetStart   offsetKind = iota
	offsetEnd                // the high watermark
	offsetExact              // n
	offsetFromEnd            // n records before the end
	offsetAfterMs            // the first record at or after n ms
	offsetInvalid
)

type offsetSpec struct {
	kind offsetKind
	n    int64
}

func parseOffset(s string) (offsetSpec, error) {
	switch s {
	case "start", "beginning", "oldest":
		return offsetSpec{kind: offsetStart}, nil
	case "end", "latest", "newest":
		return offsetSpec{kind: offsetEnd}, nil
	}
	bad := fmt.Errorf("--offset %q: want start, end, N, -N or @TIMESTAMP (milliseconds since 1970 or RFC 3339)", s)
	if ts, ok := strings.CutPrefix(s, "@"); ok {
		if ms, err := strconv.ParseInt(ts, 10, 64); err == nil && ms >= 0 {
			return offsetSpec{kind: offsetAfterMs, n: ms}, nil
		}
		// Kafka reads negative times as "latest" and "earliest".
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || t.UnixMilli() < 0 {
			return offsetSpec{}, bad
		}
		return offsetSpec{kind: offsetAfterMs, n: t.UnixMilli()}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil, n == math.MinInt64:
		return offsetSpec{}, bad
	case n < 0:
		return offsetSpec{kind: offsetFromEnd, n: -n}, nil
	}
	return offsetSpec{kind: offsetExact, n: n}, nil
}

// kgoOffset is the spec as a reset offset of the group consumer.
func (o offsetSpec) kgoOffset() kgo.Offset {
	switch o.kind {
	case offsetEnd:
		return kgo.NewOffset().AtEnd()
	case offsetExact:
		return kgo.NewOffset().At(o.n)
	case offsetFromEnd:
		return kgo.NewOffset().AtEnd().Relative(-o.n)
	case offsetAfterMs:
		return kgo.NewOffset().AfterMilli(o.n)
	}
	return kgo.NewOffset().AtStart()
}

// partitionRange is where consumption of one partition starts and the
// end (high watermark) it had when the command started.
type partitionRange struct{ from, end int64 }

// resolveOffsets lists the topic's partitions and, for each (or only for
// partition when it is not -1), the offset spec points to and the end.
func resolveOffsets(ctx context.Context, adm *kadm.Client, topic string, partition int32, spec offsetSpec) (map[int32]partitionRange, error) {
	ends, err := listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, topic) })
	if err != nil {
		return nil, fmt.Errorf("topic %q: %w", topic, err)
	}
	starts, err := listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, topic) })
	if err != nil {
		return nil, fmt.Errorf("topic %q: %w", topic, err)
	}
	var after kadm.ListedOffsets
	if spec.kind == offsetAfterMs {
		after, err = listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListOffsetsAfterMilli(ctx, spec.n, topic) })
		if err != nil {
			return nil, fmt.Errorf("topic %q: %w", topic, err)
		}
	}
	out := make(map[int32]partitionRange)
	var rangeErr error
	ends.Each(func(e kadm.ListedOffset) {
		if partition >= 0 && e.Partition != partition {
			return
		}
		s, ok := starts.Lookup(topic, e.Partition)
		if !ok {
			rangeErr = fmt.Errorf("topic %q partition %d: no start offset listed", topic, e.Partition)
			return
		}
		r := partitionRange{end: e.Offset}
		switch spec.kind {
		case offsetStart:
			r.from = s.Offset
		case offsetEnd:
			r.from = e.Offset
		case offsetExact:
			r.from = spec.n
		case offsetFromEnd:
			r.from = e.Offset - spec.n
		case offsetAfterMs:
			r.from = e.Offset
			if a, ok := after.Lookup(topic, e.Partition); ok && a.Offset >= 0 {
				r.from = a.Offset
			}
		}
		r.from = max(s.Offset, min(r.from, e.Offset))
		out[e.Partition] = r
	})
	if rangeErr != nil {
		return nil, rangeErr
	}
	if partition >= 0 && len(out) == 0 {
		return nil, fmt.Errorf("topic %q partition %d: %w", topic, partition, kerr.UnknownTopicOrPartition)
	}
	return out, nil
}

func runConsume(cmd *cobra.Command, topic string, f consumeFlags) error {
	spec, err := parseOffset(f.offset)
	if err != nil {
		return err
	}
	format, err := parseFormat(f.format)
	if err != nil {
		return err
	}
	switch {
	case f.num < 0:
		return fmt.Errorf("--num %d: want 0 (no limit) or more", f.num)
	case f.partition < -1:
		return fmt.Errorf("--partition %d: want a partition number (0 or more)", f.partition)
	case f.partition >= 0 && f.group != "":
		return errors.New("--partition and --group cannot be combined: the group assigns the partitions")
	}

	// Find the partitions and where each starts and ends before
	// consuming: a missing topic or an unreachable cluster fails here,
	// within --timeout, and -e knows where to stop.
	probe, err := newClient(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := probe.context(cmd.Context())
	ranges, err := resolveOffsets(ctx, probe.admin(), topic, f.partition, spec)
	if err == nil && f.group != "" {
		err = applyCommitted(ctx, probe.admin(), f.group, topic, ranges)
	}
	cancel()
	probe.Close()
	if err != nil {
		return probe.explain(err)
	}

	var opts []kgo.Opt
	if f.group != "" {
		opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(f.group),
			kgo.ConsumeResetOffset(spec.kgoOffset()), kgo.AutoCommitMarks())
	} else {
		at := make(map[int32]kgo.Offset, len(ranges))
		for p, r := range ranges {
			at[p] = kgo.NewOffset().At(r.from)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: at}))
	}
	cl, err := newClient(cmd, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, release := onInterrupt(cmd.Context())
	defer release()
	c := &consumer{cl: cl, format: format, out: bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10),
		errOut: cmd.ErrOrStderr(), ranges: ranges, group: f.group != "", limit: f.num, exitAtEnd: f.exitAtEnd}
	err = c.run(ctx)
	if ferr := c.out.Flush(); err == nil {
		err = ferr
	}
	if f.group != "" {
		cctx, ccancel := cl.context(context.Background())
		cerr := cl.CommitMarkedOffsets(cctx)
		ccancel()
		if err == nil && cerr != nil {
			err = fmt.Errorf("group %q: committing offsets: %w", f.group, cl.explain(cerr))
		}
	}
	return err
}

// applyCommitted moves the start of each partition to the group's
// committed offset, where it has one.
func applyCommitted(ctx context.Context, adm *kadm.Client, group, topic string, ranges map[int32]partitionRange) error {
	var committed kadm.OffsetResponses
	var err error
	// The group's coordinator may be starting (a new cluster creates its
	// offsets topic on first use): retry what Kafka calls retriable.
	for {
		committed, err = adm.FetchOffsets(ctx, group)
		if err == nil || !kerr.IsRetriable(err) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %q: %w", group, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("group %q: %w", group, err)
	}
	for p, r := range ranges {
		if o, ok := committed.Lookup(topic, p); ok && o.Err == nil && o.At >= 0 {
			r.from = o.At
			ranges[p] = r
		}
	}
	return nil
}

// consumer is the poll loop of `shale consume`.
type consumer struct {
	cl        *cliClient
	format    recordFormat
	out       *bufio.Writer
	errOut    interface{ Write([]byte) (int, error) }
	ranges    map[int32]partitionRange // from: the next offset to print
	group     bool
	limit     int // 0: none
	exitAtEnd bool

	printed int
	buf     []byte
}

// atEnd reports whether every partition reached the end it had at start.
func (c *consumer) atEnd() bool {
	for _, r := range c.ranges {
		if r.from < r.end {
			return false
		}
	}
	return true
}

func (c *consumer) run(ctx context.Context) error {
	for {
		if c.limit > 0 && c.printed >= c.limit || c.exitAtEnd && c.atEnd() {
			return nil
		}
		maxPoll := 0
		if c.limit > 0 {
			maxPoll = c.limit - c.printed
		}
		fs := c.cl.PollRecords(ctx, maxPoll)
		if ctx.Err() != nil {
			return nil // Ctrl-C: a clean stop
		}
		for _, fe := range fs.Errors() {
			switch {
			case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, kgo.ErrClientClosed):
				return nil
			case kerr.IsRetriable(fe.Err):
				// The client retries these itself.
			case isDataLoss(fe.Err):
				fmt.Fprintf(c.errOut, "shale consume: topic %q partition %d: %v\n", fe.Topic, fe.Partition, fe.Err)
			default:
				return fmt.Errorf("topic %q partition %d: %w", fe.Topic, fe.Partition, c.cl.explain(fe.Err))
			}
		}
		var err error
		fs.EachRecord(func(r *kgo.Record) {
			if err != nil {
				return
			}
			c.buf = c.format.append(c.buf[:0], r)
			if _, err = c.out.Write(c.buf); err != nil {
				return
			}
			c.printed++
			if c.group {
				c.cl.MarkCommitRecords(r)
			}
			if pr, ok := c.ranges[r.Partition]; ok && r.Offset+1 > pr.from {
				pr.from = r.Offset + 1
				c.ranges[r.Partition] = pr
			}
		})
		if err == nil {
			err = c.out.Flush()
		}
		if err != nil {
			return fmt.Errorf("writing records: %w", err)
		}
	}
}

// recordFormat is a parsed --format: literal bytes and placeholders.
type recordFormat []formatPart

type formatPart struct {
	lit  []byte
	verb byte // 0 for a literal
}

// parseFormat parses kcat-style placeholders and backslash escapes.
func parseFormat(s string) (recordFormat, error) {
	var f recordFormat
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			f = append(f, formatPart{lit: lit})
			lit = nil
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '%', '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("--format %q: %c at the end", s, c)
			}
			i++
			n := s[i]
			if c == '\\' {
				esc, ok := map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', '\\': '\\', '0': 0}[n]
				if !ok {
					return nil, fmt.Errorf("--format %q: unknown escape \\%c", s, n)
				}
				lit = append(lit, esc)
				continue
			}
			if n == '%' {
				lit = append(lit, '%')
				continue
			}
			if !strings.ContainsRune("kKvsStpoTh", rune(n)) {
				return nil, fmt.Errorf("--format %q: unknown placeholder %%%c (see --help)", s, n)
			}
			flush()
			f = append(f, formatPart{verb: n})
		default:
			lit = append(lit, c)
		}
	}
	flush()
	return f, nil
}

// append formats r onto dst.
func (f recordFormat) append(dst []byte, r *kgo.Record) []byte {
	for _, p := range f {
		switch p.verb {
		case 0:
			dst = append(dst, p.lit...)
		case 'k':
			dst = append(dst, r.Key...)
		case 'K':
			dst = strconv.AppendInt(dst, int64(len(r.Key)), 10)
		case 'v', 's':
			dst = append(dst, r.Value...)
		case 'S':
			dst = strconv.AppendInt(dst, int64(len(r.Value)), 10)
		case 't':
			dst = append(dst, r.Topic...)
		case 'p':
			dst = strconv.AppendInt(dst, int64(r.Partition), 10)
		case 'o':
			dst = strconv.AppendInt(dst, r.Offset, 10)
		case 'T':
			dst = strconv.AppendInt(dst, r.Timestamp.UnixMilli(), 10)
		case 'h':
			for i, h := range r.Headers {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, h.Key...)
				dst = append(dst, '=')
				dst = append(dst, h.Value...)
			}
		}
	}
	return dst
}

// isDataLoss reports the client's notice that records it expected are gone
// (the log was truncated under it); consumption goes on.
func isDataLoss(err error) bool {
	var dl *kgo.ErrDataLoss
	return errors.As(err, &dl)
}
