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
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
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

	fmt.Printf("compaction of a remote log: one pass over the same log uploaded to a filesystem object store, beside copying its segment objects through the store (GET, PUT)\n")
	rows = nil
	for _, codec := range []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecZstd} {
		var best, bestCopy float64
		var last tiering.CompactResult
		for round := 0; round < co.rounds; round++ {
			res, secs, copySecs, err := remoteCompactRound(o, codec)
			if err != nil {
				return err
			}
			best = max(best, float64(res.ReadBytes)/(1<<20)/secs)
			bestCopy = max(bestCopy, float64(res.ReadBytes)/(1<<20)/copySecs)
			last = res
		}
		rows = append(rows, []string{codec.String(),
			fmt.Sprintf("%.0f MB/s", best), fmt.Sprintf("%.0f MB/s", bestCopy), fmt.Sprintf("%.2fx", best/bestCopy),
			fmt.Sprintf("%.0f -> %.0f MiB", float64(last.ReadBytes)/(1<<20), float64(last.WrittenBytes)/(1<<20)),
			fmt.Sprintf("%d of %d", last.RemovedRecords, last.Records)})
	}
	printTable([]string{"codec", "shale remote pass (best)", "object copy (ceiling)", "ratio", "segments", "records removed"}, rows)
	return nil
}

// remoteCompactRound fills a log, uploads its segments to a filesystem
// object store, then times the copy of the segment objects (a GET and a
// PUT each, one at a time as the pass goes) and a remote compaction pass.
func remoteCompactRound(o options, codec recordbatch.Codec) (tiering.CompactResult, float64, float64, error) {
	var res tiering.CompactResult
	dir, err := os.MkdirTemp("", "shale-bench-compact-")
	if err != nil {
		return res, 0, 0, err
	}
	defer os.RemoveAll(dir)
	l, opts, err := fillCompactLog(o, codec, dir)
	if err != nil {
		return res, 0, 0, err
	}
	defer l.Close()
	bucket, err := objectstore.NewFS(filepath.Join(dir, "bucket"))
	if err != nil {
		return res, 0, 0, err
	}
	ctx := context.Background()
	layout, part := tiering.Layout{}, tiering.Partition{Topic: "bench", TopicID: [16]byte{1}, Index: 0}
	ms := tiering.NewManifestStore(bucket, layout.ManifestKey(part), nil)
	if _, err := ms.Load(ctx); err != nil {
		return res, 0, 0, err
	}
	arch := tiering.NewArchiver(tiering.ArchiverConfig{Bucket: bucket, Layout: layout, Partition: part, Manifest: ms, Source: l,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for {
		n, err := arch.UploadNext(ctx, 0, l.LogEndOffset())
		if err != nil {
			return res, 0, 0, err
		}
		if n == 0 {
			break
		}
	}
	reader, err := tiering.NewReader(tiering.ReaderConfig{Bucket: bucket, Layout: layout, ChunkBytes: 4 << 20, CacheBytes: 64 << 20})
	if err != nil {
		return res, 0, 0, err
	}
	defer reader.Close()
	var segs []tiering.Segment
	if err := tiering.WalkSegments(ctx, reader, part, ms.Current(), 0, nil, func(s tiering.Segment) bool {
		segs = append(segs, s)
		return true
	}); err != nil {
		return res, 0, 0, err
	}
	start := time.Now()
	for _, s := range segs {
		key := layout.SegmentKey(part, s.BaseOffset, s.ID)
		body, err := bucket.Get(ctx, key, 0, -1)
		if err != nil {
			return res, 0, 0, err
		}
		_, err = bucket.Put(ctx, "copy/"+key, body, s.Size, objectstore.PutOptions{})
		body.Close()
		if err != nil {
			return res, 0, 0, err
		}
	}
	copySecs := time.Since(start).Seconds()
	start = time.Now()
	opts.Now = start
	res, err = tiering.CompactRemote(ctx, tiering.CompactConfig{Bucket: bucket, Layout: layout, Partition: part, Store: ms, Reader: reader,
		Options: opts, SegmentBytes: 64 << 20, IndexInterval: 4096, LastBatches: l.LastBatches(), LocalAbortedTxns: l.AbortedTxns,
		ScratchDir: dir})
	if err != nil {
		return res, 0, 0, err
	}
	return res, time.Since(start).Seconds(), copySecs, nil
}

// compactRound fills a log, then times the copy of its segment files and a
// compaction pass over it.
func compactRound(o options, codec recordbatch.Codec) (localseg.CompactStats, float64, float64, error) {
	dir, err := os.MkdirTemp("", "shale-bench-compact-")
	if err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	defer os.RemoveAll(dir)
	l, opts, err := fillCompactLog(o, codec, dir)
	if err != nil {
		return localseg.CompactStats{}, 0, 0, err
	}
	defer l.Close()
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

// fillCompactLog writes o.compact.mb MiB of keyed records to a new log in
// dir, rolls and flushes it, and waits until all of it is cleanable; opts
// are a pass's options over it.
func fillCompactLog(o options, codec recordbatch.Codec, dir string) (*localseg.Log, localseg.CompactOptions, error) {
	l, err := localseg.Open(filepath.Join(dir, "log"), localseg.Config{SegmentBytes: 64 << 20, RetentionMs: -1},
		localseg.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, localseg.CompactOptions{}, err
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
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
			return nil, localseg.CompactOptions{}, err
		}
		if _, err := l.AppendAsLeader(b, 0); err != nil {
			return nil, localseg.CompactOptions{}, err
		}
	}
	if err := l.Roll(); err != nil {
		return nil, localseg.CompactOptions{}, err
	}
	if err := l.Flush(); err != nil {
		return nil, localseg.CompactOptions{}, err
	}
	// The recovery point follows the background flushes of the sealed
	// segments: wait until the whole log is cleanable.
	opts := localseg.CompactOptions{Now: time.Now(), HighWatermark: l.LogEndOffset()}
	for deadline := time.Now().Add(time.Minute); l.Cleanable(opts).End < l.LogEndOffset(); {
		if time.Now().After(deadline) {
			return nil, localseg.CompactOptions{}, fmt.Errorf("compact run: the log did not become cleanable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ok = true
	return l, opts, nil
}
