package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// compactOptions are the compact run's settings.
type compactOptions struct {
	mb     int // MiB of keyed records each pass cleans
	keys   int // distinct keys among them
	rounds int // passes of each codec, each beside its ceiling
}

// compactBatchRecords is the records of each batch the compact run writes.
const compactBatchRecords = 200

// runCompact measures the log cleaner: one compaction pass over a log of
// keyed records (each key written many times), in this process through
// package localseg, as the broker's cleaner runs it. Its ceiling, in the
// same run and on the same disk, is copying the same segment files: read
// them, write them to new files, fsync; the least a pass that rewrites a
// log must do. Both read what the page cache holds (the log was just
// written). kfake has no compaction to compare with.
func runCompact(o options) error {
	co := o.compact
	fmt.Printf("compaction: one pass over %d MiB of %d-byte records (%d keys, each written about %d times), beside copying the same segment files (read, write, fsync)\n",
		co.mb, o.recordSize, co.keys, max(co.mb<<20/(o.recordSize+20)/co.keys, 1))
	var rows [][]string
	for _, codec := range []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecZstd} {
		var best, bestCopy float64
		var last localseg.CompactStats
		for round := 0; round < co.rounds; round++ {
			st, secs, copySecs, err := compactRound(o, codec)
			if err != nil {
				return err
			}
			mbps := float64(st.ReadBytes) / (1 << 20) / secs
			copyMBps := float64(st.ReadBytes) / (1 << 20) / copySecs
			best, bestCopy, last = max(best, mbps), max(bestCopy, copyMBps), st
		}
		rows = append(rows, []string{codec.String(),
			fmt.Sprintf("%.0f MB/s", best), fmt.Sprintf("%.0f MB/s", bestCopy), fmt.Sprintf("%.2fx", best/bestCopy),
			fmt.Sprintf("%.0f -> %.0f MiB", float64(last.ReadBytes)/(1<<20), float64(last.WrittenBytes)/(1<<20)),
			fmt.Sprintf("%d of %d", last.RemovedRecords, last.Records)})
	}
	printTable([]string{"codec", "shale pass (best)", "file copy (ceiling)", "ratio", "segments", "records removed"}, rows)
	return nil
}

// compactRound fills a log, then times the copy of its segment files and a
// compaction pass over it.
func compactRound(o options, codec recordbatch.Codec) (localseg.CompactStats, float64, float64, error) {
	dir, err := os.MkdirTemp("", "shale-bench-compact-")
	if err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	defer os.RemoveAll(dir)
	l, err := localseg.Open(filepath.Join(dir, "log"), localseg.Config{SegmentBytes: 64 << 20, RetentionMs: -1},
		localseg.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	defer l.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, o.recordSize)
	recs := make([]recordbatch.Record, compactBatchRecords)
	for l.Size() < int64(o.compact.mb)<<20 {
		for i := range recs {
			for j := range value {
				value[j] = byte('a' + rng.IntN(26))
			}
			recs[i] = recordbatch.Record{Key: fmt.Appendf(nil, "key-%09d", rng.IntN(o.compact.keys)), Value: append([]byte(nil), value...)}
		}
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Codec: codec, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()}, recs)
		if err != nil {
			return localseg.CompactStats{}, 0, 0, err
		}
		if _, err := l.AppendAsLeader(b, 0); err != nil {
			return localseg.CompactStats{}, 0, 0, err
		}
	}
	if err := l.Roll(); err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	if err := l.Flush(); err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	// The recovery point follows the background flushes of the sealed
	// segments: wait until the whole log is cleanable.
	opts := localseg.CompactOptions{Now: time.Now(), HighWatermark: l.LogEndOffset()}
	for deadline := time.Now().Add(time.Minute); l.Cleanable(opts).End < l.LogEndOffset(); {
		if time.Now().After(deadline) {
			return localseg.CompactStats{}, 0, 0, fmt.Errorf("compact run: the log did not become cleanable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	for i, s := range l.Segments() {
		if !s.Active {
			if err := copyFile(s.Path, filepath.Join(dir, fmt.Sprintf("copy-%d", i))); err != nil {
				return localseg.CompactStats{}, 0, 0, err
			}
		}
	}
	copySecs := time.Since(start).Seconds()
	start = time.Now()
	opts.Now = start
	st, err := l.Compact(context.Background(), opts)
	if err != nil {
		return st, 0, 0, err
	}
	secs := time.Since(start).Seconds()
	return st, secs, copySecs, nil
}

// copyFile copies src to dst and fsyncs dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	// The wrappers hide ReadFrom and WriteTo, so that the copy reads and
	// writes through the buffer as the pass does, not by copy_file_range.
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
