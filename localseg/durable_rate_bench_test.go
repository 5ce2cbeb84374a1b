package localseg

import (
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/vfs"
)

// BenchmarkDurableFixedRate is acks=all's latency at a fixed rate, as the
// raw load generator's latency run offers it: 4 logs, each sent a 32 KiB
// batch every 2.6 ms (50 MB/s in all) whatever the answers, each batch
// waited for durable on its own. Its p50 and p99 are the group commit's
// (a sync's duration, the wait for the sync running when a batch comes,
// any hold) on this disk, and again on a disk whose every sync takes 3.5
// ms exactly (sync=3.5ms: a sleep in place of the fsync), where a loaded
// machine's disk tail does not hide what the scheduler adds; hold and
// nohold interleave best as -count rounds. prealloc is hold with
// preallocation: the zeroing's cost to the syncs at this rate. b.N is the batches of each log.
func BenchmarkDurableFixedRate(b *testing.B) {
	for _, disk := range []struct {
		name string
		fs   vfs.FS
	}{{"disk", nil}, {"sync=3.5ms", fixedSyncFS{d: 3500 * time.Microsecond}}} {
		for _, bc := range []struct {
			name           string
			hold, prealloc bool
		}{{"hold", true, false}, {"nohold", false, false}, {"prealloc", true, true}} {
			b.Run(disk.name+"/"+bc.name, func(b *testing.B) {
				old := maxSyncHold
				if !bc.hold {
					maxSyncHold = 0
				}
				defer func() { maxSyncHold = old }()
				benchDurableFixedRate(b, disk.fs, bc.prealloc)
			})
		}
	}
}

// fixedSyncFS is the operating system's filesystem whose file and
// directory syncs take d and make nothing durable.
type fixedSyncFS struct {
	vfs.OSFS
	d time.Duration
}

func (f fixedSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return fixedSyncFile{file, f.d}, nil
}

func (f fixedSyncFS) SyncDir(string) error { time.Sleep(f.d); return nil }

type fixedSyncFile struct {
	vfs.File
	d time.Duration
}

func (f fixedSyncFile) Sync() error { time.Sleep(f.d); return nil }

func benchDurableFixedRate(b *testing.B, fs vfs.FS, prealloc bool) {
	const logs = 4
	const every = 2621 * time.Microsecond // 32 KiB at 12.5 MB/s
	bt := batch(300, 100, 1)
	b.SetBytes(int64(len(bt)) * logs)
	ls := make([]*Log, logs)
	for i := range ls {
		ls[i] = benchLogOn(b, Config{SegmentBytes: 256 << 20, Preallocate: prealloc}, fs)
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lats []time.Duration
	start := time.Now()
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var waits sync.WaitGroup
			mine := make([]time.Duration, 0, b.N)
			var mineMu sync.Mutex
			// Spread the logs' sends over the interval.
			first := start.Add(time.Duration(i) * every / logs)
			for k := range b.N {
				at := first.Add(time.Duration(k) * every)
				time.Sleep(time.Until(at))
				waits.Add(1)
				if !appendWhenDurable(b, l, slices.Clone(bt), func(err error) {
					if err != nil {
						b.Error(err)
					}
					mineMu.Lock()
					mine = append(mine, time.Since(at))
					mineMu.Unlock()
					waits.Done()
				}) {
					waits.Done()
					return
				}
			}
			waits.Wait()
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lats)
	if len(lats) == 0 {
		return
	}
	b.ReportMetric(float64(lats[len(lats)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lats[len(lats)*99/100])/1e6, "p99-ms")
	reportSyncTime(b, ls)
}
