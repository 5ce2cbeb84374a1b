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

	fmt.Printf("verification of a remote log (shale tier verify, the leader's remote scrub): the same log uploaded uncompressed, read back whole and checked, beside reading its segment objects (GET)\n")
	var best, bestRead float64
	var size int64
	for round := 0; round < co.rounds; round++ {
		n, mbps, readMBps, err := verifyRound(o)
		if err != nil {
			return err
		}
		best, bestRead, size = max(best, mbps), max(bestRead, readMBps), n
	}
	printTable([]string{"shale verify (best)", "object read (ceiling)", "ratio", "segments"}, [][]string{{
		fmt.Sprintf("%.0f MB/s", best), fmt.Sprintf("%.0f MB/s", bestRead), fmt.Sprintf("%.2fx", best/bestRead), fmt.Sprintf("%.0f MiB", float64(size)/(1<<20))}})
	return nil
}

// remoteLog is a compact run's log uploaded to a filesystem object store.
type remoteLog struct {
	log    *localseg.Log
	opts   localseg.CompactOptions
	bucket objectstore.Bucket
	layout tiering.Layout
	part   tiering.Partition
	store  *tiering.ManifestStore
	reader *tiering.Reader
	segs   []tiering.Segment
}

func (r *remoteLog) Close() {
	r.reader.Close()
	r.log.Close()
}

// uploadCompactLog fills a log under dir and uploads its segments to a
// filesystem object store there.
func uploadCompactLog(o options, codec recordbatch.Codec, dir string) (*remoteLog, error) {
	l, opts, err := fillCompactLog(o, codec, dir)
	if err != nil {
		return nil, err
	}
	r := &remoteLog{log: l, opts: opts, layout: tiering.Layout{}, part: tiering.Partition{Topic: "bench", TopicID: [16]byte{1}, Index: 0}}
	fail := func(err error) (*remoteLog, error) {
		l.Close()
		return nil, err
	}
	if r.bucket, err = objectstore.NewFS(filepath.Join(dir, "bucket")); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	r.store = tiering.NewManifestStore(r.bucket, r.layout.ManifestKey(r.part), nil)
	if _, err := r.store.Load(ctx); err != nil {
		return fail(err)
	}
	arch := tiering.NewArchiver(tiering.ArchiverConfig{Bucket: r.bucket, Layout: r.layout, Partition: r.part, Manifest: r.store, Source: l,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for {
		n, err := arch.UploadNext(ctx, 0, l.LogEndOffset())
		if err != nil {
			return fail(err)
		}
		if n == 0 {
			break
		}
	}
	if r.reader, err = tiering.NewReader(tiering.ReaderConfig{Bucket: r.bucket, Layout: r.layout, ChunkBytes: 4 << 20, CacheBytes: 64 << 20}); err != nil {
		return fail(err)
	}
	if err := tiering.WalkSegments(ctx, r.reader, r.part, r.store.Current(), 0, nil, func(s tiering.Segment) bool {
		r.segs = append(r.segs, s)
		return true
	}); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
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
	r, err := uploadCompactLog(o, codec, dir)
	if err != nil {
		return res, 0, 0, err
	}
	defer r.Close()
	ctx := context.Background()
	start := time.Now()
	for _, s := range r.segs {
		key := r.layout.SegmentKey(r.part, s.BaseOffset, s.ID)
		body, err := r.bucket.Get(ctx, key, 0, -1)
		if err != nil {
			return res, 0, 0, err
		}
		_, err = r.bucket.Put(ctx, "copy/"+key, body, s.Size, objectstore.PutOptions{})
		body.Close()
		if err != nil {
			return res, 0, 0, err
		}
	}
	copySecs := time.Since(start).Seconds()
	start = time.Now()
	opts := r.opts
	opts.Now = start
	res, err = tiering.CompactRemote(ctx, tiering.CompactConfig{Bucket: r.bucket, Layout: r.layout, Partition: r.part, Store: r.store, Reader: r.reader,
		Options: opts, SegmentBytes: 64 << 20, IndexInterval: 4096, LastBatches: r.log.LastBatches(), LocalAbortedTxns: r.log.AbortedTxns,
		ScratchDir: dir})
	if err != nil {
		return res, 0, 0, err
	}
	return res, time.Since(start).Seconds(), copySecs, nil
}

// verifyRound uploads a log, then times reading its segment objects (a
// GET each, to nothing) and a deep verification of its remote log (what
// `shale tier verify` and the leader's remote scrub run): the bytes it
// read and their MB/s and the ceiling's.
func verifyRound(o options) (int64, float64, float64, error) {
	dir, err := os.MkdirTemp("", "shale-bench-verify-")
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	r, err := uploadCompactLog(o, recordbatch.CodecNone, dir)
	if err != nil {
		return 0, 0, 0, err
	}
	defer r.Close()
	ctx := context.Background()
	start := time.Now()
	var n int64
	for _, s := range r.segs {
		body, err := r.bucket.Get(ctx, r.layout.SegmentKey(r.part, s.BaseOffset, s.ID), 0, -1)
		if err != nil {
			return 0, 0, 0, err
		}
		m, err := io.Copy(io.Discard, body)
		body.Close()
		if err != nil {
			return 0, 0, 0, err
		}
		n += m
	}
	readSecs := time.Since(start).Seconds()
	start = time.Now()
	v, err := tiering.VerifyPartition(ctx, r.bucket, r.layout, r.part, tiering.VerifyOptions{Deep: true})
	if err != nil {
		return 0, 0, 0, err
	}
	if len(v.Problems) > 0 || v.ReadBytes != n {
		return 0, 0, 0, fmt.Errorf("verifying the uploaded log: %d of %d bytes read, problems %v", v.ReadBytes, n, v.Problems)
	}
	mib := float64(n) / (1 << 20)
	return n, mib / time.Since(start).Seconds(), mib / readSecs, nil
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
