package localseg

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/localseg/vfs"
)

// Run with -benchmem: the append and tail-read paths should allocate
// nothing per append and one small object per read (the Range reference).

func benchLog(b *testing.B, cfg Config) *Log {
	b.Helper()
	return benchLogOn(b, cfg, nil)
}

// benchLogOn is benchLog on fs (nil: the operating system's).
func benchLogOn(b *testing.B, cfg Config, fs FS) *Log {
	b.Helper()
	cfg.RetentionBytes = 64 << 20 // keep the disk use of long runs bounded
	cfg.FileDeleteDelayMs = 1
	l, err := Open(b.TempDir(), cfg, Options{FS: fs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func BenchmarkAppendAsLeader(b *testing.B) {
	for _, bc := range []struct {
		name string
		mk   func(seq int32) Batch
	}{
		{"plain-1KiB", func(int32) Batch { return batch(4, 230, 1) }},
		{"idempotent-1KiB", func(seq int32) Batch { return idemBatch(1, 0, seq, 4) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := benchLog(b, Config{SegmentBytes: 16 << 20})
			bt := bc.mk(0)
			b.SetBytes(int64(len(bt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if bt.HasProducerID() {
					// The next sequence (the CRC goes stale: the log
					// does not re-check a leader's batches).
					binary.BigEndian.PutUint32(bt[53:], uint32(i*4))
				}
				if _, err := l.AppendAsLeader(bt, 1); err != nil {
					b.Fatal(err)
				}
				if i%100_000 == 99_999 {
					b.StopTimer()
					l.ApplyRetention(time.Now())
					b.StartTimer()
				}
			}
		})
	}
}

func BenchmarkAppendAsFollower(b *testing.B) {
	l := benchLog(b, Config{SegmentBytes: 16 << 20})
	var set []byte
	for i := 0; i < 16; i++ {
		bt := batch(4, 230, 1)
		bt.SetBaseOffset(int64(i * 4))
		set = append(set, bt...)
	}
	b.SetBytes(int64(len(set)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := l.LogEndOffset()
		for off := 0; off < len(set); {
			bt := Batch(set[off:])
			n, _ := recordbatch.Size(bt)
			bt.SetBaseOffset(base + int64(off/n)*4)
			off += n
		}
		if _, err := l.AppendAsFollower(set); err != nil {
			b.Fatal(err)
		}
		if i%10_000 == 9_999 {
			b.StopTimer()
			l.ApplyRetention(time.Now())
			b.StartTimer()
		}
	}
}

func BenchmarkRead(b *testing.B) {
	l := benchLog(b, Config{SegmentBytes: 4 << 20})
	for i := 0; i < 40_000; i++ { // about 10 segments
		if _, err := l.AppendAsLeader(batch(4, 230, 1), 1); err != nil {
			b.Fatal(err)
		}
	}
	leo := l.LogEndOffset()
	for _, bc := range []struct {
		name      string
		offset    func(i int) int64
		maxOffset int64
	}{
		// A consumer at the tail, reading up to the log end.
		{"tail-to-log-end", func(i int) int64 { return leo - 40 }, math.MaxInt64},
		// A consumer at the tail, cut at a recent high watermark.
		{"tail-to-high-watermark", func(i int) int64 { return leo - 40 }, leo - 8},
		// Catch-up reads anywhere in sealed segments.
		{"sealed-random", func(i int) int64 { return int64(i*7919) % (leo - 20_000) }, math.MaxInt64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := l.Read(bc.offset(i), 1<<20, bc.maxOffset, true)
				if err != nil {
					b.Fatal(err)
				}
				if r.Len() == 0 {
					b.Fatal("empty read")
				}
				r.Release()
			}
		})
	}
}

// BenchmarkDurableAppend is acks=all on one broker at the log's level:
// each of 4 logs takes 32 KiB batches from a producer that keeps 8 of them
// waiting for durability (the raw generator's window), so that its MB/s
// is the group commit's, bounded by the fsync's latency and not the CPU.
// Sub-benchmarks: whether a sync that answered waiters holds the next one
// for their return (nohold: the next starts at once).
// BenchmarkDurableAppend: producers waiting for their appends to be
// durable, with and without the sync hold, and with the hold and
// preallocation (prealloc: the appends overwrite zeros written ahead).
func BenchmarkDurableAppend(b *testing.B) {
	for _, bc := range []struct {
		name           string
		hold, prealloc bool
	}{{"hold", true, false}, {"nohold", false, false}, {"prealloc", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			old := maxSyncHold
			if !bc.hold {
				maxSyncHold = 0
			}
			defer func() { maxSyncHold = old }()
			benchDurableAppend(b, bc.prealloc)
		})
	}
}

func benchDurableAppend(b *testing.B, prealloc bool) {
	const logs, window = 4, 8
	bt := batch(300, 100, 1)
	b.SetBytes(int64(len(bt)))
	ls := make([]*Log, logs)
	for i := range ls {
		ls[i] = benchLog(b, Config{SegmentBytes: 256 << 20, Preallocate: prealloc})
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var lat atomic.Int64
	for i, l := range ls {
		n := b.N / logs
		if i == 0 {
			n += b.N % logs
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, window)
			var waits sync.WaitGroup
			buf := make([]byte, len(bt))
			for range n {
				sem <- struct{}{}
				copy(buf, bt)
				start := time.Now()
				waits.Add(1)
				if !appendWhenDurable(b, l, buf, func(err error) {
					if err != nil {
						b.Error(err)
					}
					lat.Add(int64(time.Since(start)))
					<-sem
					waits.Done()
				}) {
					waits.Done()
					return
				}
			}
			waits.Wait()
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(lat.Load())/float64(b.N)/1e6, "ms/ack")
	reportSyncTime(b, ls)
}

// reportSyncTime reports the logs' mean time in fdatasync, ms per log.
func reportSyncTime(b *testing.B, ls []*Log) {
	var syncDur time.Duration
	for _, l := range ls {
		l.sync.mu.Lock()
		syncDur += l.sync.mu.syncDur
		l.sync.mu.Unlock()
	}
	b.ReportMetric(float64(syncDur)/float64(len(ls))/1e6, "ms/sync")
}

// appendWhenDurable appends batch to l as its leader and calls done once
// the batch is durable (at once when it is already).
func appendWhenDurable(b *testing.B, l *Log, batch []byte, done func(error)) bool {
	res, err := l.AppendAsLeader(batch, 1)
	if err != nil {
		b.Error(err)
		return false
	}
	if l.WhenDurable(res.LastOffset+1, done) {
		done(nil)
	}
	return true
}

// BenchmarkDurableAppendDisk is BenchmarkDurableAppend's ceiling: the same
// 4 files, each written in whole windows (8 batches of 32 KiB) and each
// window fdatasynced, with no acknowledgement round trips between them.
func BenchmarkDurableAppendDisk(b *testing.B) {
	const logs, window = 4, 8
	bt := batch(300, 100, 1)
	b.SetBytes(int64(len(bt)))
	dir := b.TempDir()
	var wg sync.WaitGroup
	for i := 0; i < logs; i++ {
		f, err := vfs.OSFS{}.OpenFile(fmt.Sprintf("%s/%d", dir, i), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var off int64
			for n := 0; n < b.N/logs; {
				for w := 0; w < window && n < b.N/logs; w++ {
					writeFull(f, bt, off)
					off += int64(len(bt))
					n++
				}
				vfs.Datasync(f)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkFsyncAfterUnsyncedAppends times the fsync an acks=all producer
// waits for after 64 MiB of appends nobody waited for (acks=1 traffic on
// the same partition), given half a second for the disk to catch up: with
// background write-back the backlog is on its way to the disk already;
// without it (the kernel starts writing only at its dirty thresholds) the
// fsync writes all of it. Run with -benchtime=Nx; the two interleave best
// as -count rounds.
func BenchmarkFsyncAfterUnsyncedAppends(b *testing.B) {
	for _, bc := range []struct {
		name  string
		bytes int64
	}{{"write-back", writeBehindBytes}, {"none", math.MaxInt64}} {
		b.Run(bc.name, func(b *testing.B) {
			defer func(v int64) { writeBehindBytes = v }(writeBehindBytes)
			writeBehindBytes = bc.bytes
			bt := batch(64, 1000, 1)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l, err := Open(b.TempDir(), Config{SegmentBytes: 1 << 30}, Options{Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				for l.Size() < 64<<20 {
					if _, err := l.AppendAsLeader(bt, 1); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(500 * time.Millisecond)
				res, err := l.AppendAsLeader(bt, 1)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if err := waitDurable(l, res.LastOffset+1); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				l.Discard()
			}
			b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "ms/fsync")
		})
	}
}

// BenchmarkRoll rolls 4 MiB segments back to back, so each roll meets the
// background flush of the one before (its fsync and recovery-point
// write): the log's lock is held for the whole roll, appends waiting. It
// reports the rolls' median, p90 and longest times.
func BenchmarkRoll(b *testing.B) {
	l := benchLog(b, Config{SegmentBytes: 8 << 20})
	bt := batch(16, 1000, 1)
	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for l.active().size.Load() < 4<<20 {
			if _, err := l.AppendAsLeader(bt, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if err := l.Roll(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		if i%16 == 15 {
			b.StopTimer()
			l.ApplyRetention(time.Now())
			b.StartTimer()
		}
	}
	slices.Sort(times)
	q := func(f float64) float64 { return float64(times[int(f*float64(len(times)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-us")
	b.ReportMetric(q(0.9), "p90-us")
	b.ReportMetric(q(1), "max-us")
}

// BenchmarkRemoveDeletedSegments deletes four 4 MiB segments per
// iteration and removes their files once their delay has passed, as
// ApplyRetention does: it reports the median and longest time to unlink
// them (the work ApplyRetention does after releasing the log's lock).
func BenchmarkRemoveDeletedSegments(b *testing.B) {
	l := benchLog(b, Config{SegmentBytes: 4 << 20})
	l.SetConfig(Config{SegmentBytes: 4 << 20, FileDeleteDelayMs: 1, RetentionMs: -1, RetentionBytes: -1})
	bt := batch(16, 1000, 1)
	var times []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for l.LogEndOffset()-l.LogStartOffset() < 4*(4<<20)/int64(len(bt))*16 {
			if _, err := l.AppendAsLeader(bt, 1); err != nil {
				b.Fatal(err)
			}
		}
		l.Roll()
		if err := l.SetLogStartOffset(l.LogEndOffset()); err != nil {
			b.Fatal(err)
		}
		l.ApplyRetention(time.Now())
		time.Sleep(2 * time.Millisecond)
		l.mu.Lock()
		due := l.takeDueLocked(time.Now(), false)
		l.mu.Unlock()
		b.StartTimer()
		start := time.Now()
		l.removeFiles(due)
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(times[len(times)-1].Microseconds()), "max-us")
}

// BenchmarkAppendAcrossRolls appends 32 KiB batches back to back to a log
// of 4 MiB segments (a roll every 128 appends) and reports the latency of
// the appends that rolled (which create the next segment's file under the
// log's lock) beside that of the others, its same-run ceiling. The
// rolling appends also meet the background work of the roll before
// (the sealed segment's index files, fsyncs and directory fsync).
func BenchmarkAppendAcrossRolls(b *testing.B) {
	l := benchLog(b, Config{SegmentBytes: 4 << 20})
	bt := batch(32, 1000, 1)
	var rolls, others []time.Duration
	b.SetBytes(int64(len(bt)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		segs := len(l.segments())
		start := time.Now()
		if _, err := l.AppendAsLeader(bt, 1); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if len(l.segments()) != segs {
			rolls = append(rolls, d)
		} else {
			others = append(others, d)
		}
		if i%1024 == 1023 {
			b.StopTimer()
			l.ApplyRetention(time.Now())
			b.StartTimer()
		}
	}
	q := func(ts []time.Duration, f float64) float64 {
		if len(ts) == 0 {
			return 0
		}
		slices.Sort(ts)
		return float64(ts[int(f*float64(len(ts)-1))].Microseconds())
	}
	b.ReportMetric(q(rolls, 0.5), "roll-p50-us")
	b.ReportMetric(q(rolls, 0.9), "roll-p90-us")
	b.ReportMetric(q(others, 0.5), "append-p50-us")
	b.ReportMetric(q(others, 0.99), "append-p99-us")
}

// BenchmarkHighWatermarkCheckpoint writes a partition's high watermark
// checkpoint as the periodic checkpoint does, in place (overwriteNoSync),
// beside its same-run reference, the write through a temporary and a
// rename it replaced (writeFileNoSync), in the benchmark's temporary
// directory (the data disk when TMPDIR is on it). Each reports the p50 and
// the largest of its writes.
func BenchmarkHighWatermarkCheckpoint(b *testing.B) {
	for _, bc := range []struct {
		name  string
		write func(FS, string, []byte) error
	}{{"in-place", overwriteNoSync}, {"rename", writeFileNoSync}} {
		b.Run(bc.name, func(b *testing.B) {
			path := b.TempDir() + "/" + highWatermarkFile
			var times []time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := bc.write(vfs.OSFS{}, path, encodeHighWatermark(int64(i))); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-us")
			b.ReportMetric(float64(times[len(times)-1].Microseconds()), "max-us")
		})
	}
}
