package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceFlags are the flags of `shale produce`.
type produceFlags struct {
	keySep      string
	acks        string
	compression string
	partition   int32
	headers     []string
}

func newProduceCmd() *cobra.Command {
	var f produceFlags
	cmd := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce records read from standard input, one per line",
		Long: `Reads standard input and produces one record per line (without the newline)
to TOPIC, and prints how many records were acknowledged on standard error.
With -k SEP a line is split at the first SEP into key and value; a line
without SEP has no key. A topic that does not exist is created when the
cluster creates topics on first use. On the first failed record, reading
stops and the command fails with the Kafka error's name; records already
acknowledged stay written. Ctrl-C stops reading and waits for the records
in flight.`,
		Example: `  printf 'a:1\nb:2\n' | shale produce orders -k :
  shale produce logs --compression zstd -H source=app < app.log`,
		Args: exactArgs(1, "TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProduce(cmd, args[0], f)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&f.keySep, "key-separator", "k", "", "split each line into key and value at the first occurrence of this string")
	fs.StringVar(&f.acks, "acks", "all", "acknowledgements to wait for: 0, 1 or all")
	fs.StringVarP(&f.compression, "compression", "z", "none", "batch compression: none, gzip, snappy, lz4 or zstd")
	fs.Int32VarP(&f.partition, "partition", "p", -1, "produce every record to this partition (default: by key hash, keyless records spread)")
	fs.StringArrayVarP(&f.headers, "header", "H", nil, "add a header key=value to every record (repeatable)")
	addClientFlags(cmd)
	return cmd
}

// acksOpts are the kgo options of --acks. Idempotent production needs
// acks=all, so it is turned off for 0 and 1.
func acksOpts(acks string) ([]kgo.Opt, error) {
	switch acks {
	case "all", "-1":
		return []kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks())}, nil
	case "1":
		return []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()}, nil
	case "0":
		return []kgo.Opt{kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite()}, nil
	}
	return nil, fmt.Errorf("--acks %q: want 0, 1 or all", acks)
}

// compressionOpt is the kgo option of --compression.
func compressionOpt(name string) (kgo.Opt, error) {
	var c kgo.CompressionCodec
	switch name {
	case "none", "":
		c = kgo.NoCompression()
	case "gzip":
		c = kgo.GzipCompression()
	case "snappy":
		c = kgo.SnappyCompression()
	case "lz4":
		c = kgo.Lz4Compression()
	case "zstd":
		c = kgo.ZstdCompression()
	default:
		return nil, fmt.Errorf("--compression %q: want none, gzip, snappy, lz4 or zstd", name)
	}
	return kgo.ProducerBatchCompression(c), nil
}

// produceBufferBytes bounds the records a producing command holds in
// memory; one record larger than this fails with MESSAGE_TOO_LARGE.
const produceBufferBytes = 128 << 20

// producerOpts are the options shared by produce and bench produce.
func producerOpts(cmd *cobra.Command, acks, compression string) ([]kgo.Opt, error) {
	opts, err := acksOpts(acks)
	if err != nil {
		return nil, err
	}
	copt, err := compressionOpt(compression)
	if err != nil {
		return nil, err
	}
	cfg, err := readClientConfig(cmd)
	if err != nil {
		return nil, err
	}
	return append(opts, copt,
		// Let the cluster decide whether a missing topic is created, as
		// Kafka's own producers do.
		kgo.AllowAutoTopicCreation(),
		// A record not acknowledged within --timeout fails.
		kgo.RecordDeliveryTimeout(cfg.timeout),
		// Bound the memory of records waiting to be sent (long lines
		// would otherwise be held 50,000 at a time); Produce blocks
		// while the buffer is full.
		kgo.MaxBufferedBytes(produceBufferBytes),
	), nil
}

func parseHeaders(hs []string) ([]kgo.RecordHeader, error) {
	var out []kgo.RecordHeader
	for _, h := range hs {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--header %q: want key=value", h)
		}
		out = append(out, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return out, nil
}

// produceError is the one line for a record that failed: a deadline or
// dial error names the cluster, a Kafka error keeps its name.
func produceError(cl *cliClient, topic string, err error) error {
	// A record that timed out or ran out of retries carries the last
	// error the cluster answered (UNKNOWN_TOPIC_OR_PARTITION when the
	// topic does not exist and is not created on first use).
	var kafkaErr *kerr.Error
	if errors.As(err, &kafkaErr) {
		return fmt.Errorf("topic %q: %w", topic, kafkaErr)
	}
	if errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrRecordRetries) {
		err = context.DeadlineExceeded
	}
	return fmt.Errorf("topic %q: %w", topic, cl.explain(err))
}

// produceTally counts acknowledged records and keeps the first failure.
type produceTally struct {
	mu       sync.Mutex
	records  int64
	bytes    int64
	failed   int64
	unsent   int64 // given up on Ctrl-C before they were sent
	firstErr error
}

func (t *produceTally) done(r *kgo.Record, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		t.unsent++
		return
	}
	if err != nil {
		t.failed++
		if t.firstErr == nil {
			t.firstErr = err
		}
		return
	}
	t.records++
	t.bytes += int64(len(r.Key) + len(r.Value))
}

func (t *produceTally) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstErr
}

func runProduce(cmd *cobra.Command, topic string, f produceFlags) error {
	headers, err := parseHeaders(f.headers)
	if err != nil {
		return err
	}
	opts, err := producerOpts(cmd, f.acks, f.compression)
	if err != nil {
		return err
	}
	opts = append(opts, kgo.DefaultProduceTopic(topic))
	if f.partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	} else if f.partition != -1 {
		return fmt.Errorf("--partition %d: want a partition number (0 or more)", f.partition)
	}
	cl, err := newClient(cmd, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if f.partition >= 0 {
		if err := checkPartition(cmd, cl, topic, f.partition); err != nil {
			return err
		}
	}

	ctx, release := onInterrupt(cmd.Context())
	defer release()

	var tally produceTally
	lines := readLines(ctx, cmd.InOrStdin())
	var readErr error
	sep := []byte(f.keySep)
read:
	for tally.err() == nil {
		var l lineOrErr
		select {
		case <-ctx.Done():
			break read
		case l = <-lines:
		}
		if l.err != nil {
			if l.err != io.EOF {
				readErr = fmt.Errorf("reading standard input: %w", l.err)
			}
			break
		}
		r := &kgo.Record{Value: l.line, Headers: headers, Partition: f.partition}
		if len(sep) > 0 {
			if i := bytes.Index(l.line, sep); i >= 0 {
				r.Key, r.Value = l.line[:i], l.line[i+len(sep):]
			}
		}
		// Produce blocks while the client's buffer is full; the
		// context ends that wait on Ctrl-C.
		cl.Produce(ctx, r, tally.done)
	}
	// Wait for the records in flight; a second Ctrl-C is not caught
	// any more and ends the process.
	release()
	cl.Flush(context.Background())

	tally.mu.Lock()
	summary := fmt.Sprintf("produced %d records (%d bytes) to %s", tally.records, tally.bytes, topic)
	if tally.failed > 0 {
		summary += fmt.Sprintf(", %d failed", tally.failed)
	}
	if tally.unsent > 0 {
		summary += fmt.Sprintf(", %d not sent (interrupted)", tally.unsent)
	}
	firstErr := tally.firstErr
	tally.mu.Unlock()
	fmt.Fprintln(cmd.ErrOrStderr(), summary)
	switch {
	case firstErr != nil:
		return produceError(cl, topic, firstErr)
	case readErr != nil:
		return readErr
	}
	return nil
}

// checkPartition refuses a --partition that an existing topic does not
// have, with the error the broker would give (the client would only say
// that its partitioner chose badly). A missing topic passes: it may be
// created on first use.
func checkPartition(cmd *cobra.Command, cl *cliClient, topic string, partition int32) error {
	ctx, cancel := cl.context(cmd.Context())
	defer cancel()
	tds, err := cl.admin().ListTopics(ctx, topic)
	if err != nil {
		return cl.explain(err)
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil || int(partition) < len(td.Partitions) {
		return nil
	}
	return fmt.Errorf("topic %q partition %d: %w (the topic has partitions 0 to %d)", topic, partition, kerr.UnknownTopicOrPartition, len(td.Partitions)-1)
}

// onInterrupt returns a context that Ctrl-C (SIGINT) or SIGTERM cancels,
// and release, which stops catching them without canceling the context:
// records produced with it stay valid while they are flushed, and a
// second Ctrl-C then ends the process.
func onInterrupt(parent context.Context) (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancel(orBackground(parent))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			cancel()
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sig)
			close(done)
		})
	}
}

type lineOrErr struct {
	line []byte
	err  error
}

// readLines reads r line by line (without the line ends) in a goroutine,
// so that the caller can stop waiting for input; the last item carries
// the error that ended the input (io.EOF at its end). A last line without
// a newline counts. The goroutine ends at the end of the input or, when
// ctx ends, after its current read.
func readLines(ctx context.Context, r io.Reader) <-chan lineOrErr {
	out := make(chan lineOrErr, 256)
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 && line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			if len(line) > 0 || err == nil {
				select {
				case out <- lineOrErr{line: line}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				select {
				case out <- lineOrErr{err: err}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return out
}
