package localseg

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkWindowSync is the disk at acks=all's window (what
// BenchmarkDurableAppendDisk measures: 4 files, each written in windows of
// 8 batches of about 32 KiB, each window made durable before the next is
// written) with each way of writing and syncing a log could use, so that
// a change of the log's write path is weighed against the disk first. Run
// the variants interleaved (-count) with -benchtime=Nx (N batches in all):
//
//	append           write each batch, fdatasync the window (today's log)
//	overwrite-cached the same into blocks already written and synced whose
//	                 pages are cached (a segment pre-written ahead, or a
//	                 recycled one still cached): no block allocation and
//	                 no size change, so the fdatasync writes no metadata,
//	                 only the data, and flushes the cache
//	overwrite-cold   the same with the pages not cached (a recycled
//	                 segment): each write's partial last page is read first
//	overwrite-touch  overwrite-cold, each write's partial last page first
//	                 made whole with a page of zeros (no read)
//	prezero-behind   overwrite-cached, with the next segments being
//	                 pre-written (zeros, 1 MiB writes, fdatasync every
//	                 8 MiB) at the rate the data comes: preparation's
//	                 steady-state cost
//	fallocate        into fallocated (unwritten) extents
//	writeback-each   append, each batch's write-back started at once
//	                 (sync_file_range WRITE)
//	dsync-window     append, each window one pwritev2 with RWF_DSYNC
//	writev-window    append, each window one pwritev, then fdatasync
//	serialized       append, the 4 files' fdatasyncs one at a time
//
// Measured on the development machine's disk (ext4 without a journal on
// a virtio disk with a volatile write cache; 2 cores at load 22-27 from
// other work; 3 runs, MB/s of data): append 133-229, overwrite-cached
// 337-454, overwrite-cold 109-187, overwrite-touch 341-400, prezero-behind
// 123-172, fallocate 262-305, writeback-each 174-196, dsync-window
// 314-385, writev-window 312-403, serialized 65-106. In 4 rounds of
// append, fallocate and writev-window interleaved: 232-305, 254-313 and
// 315-441, each round in that order.
//
// What it means for the log. On that file system an fdatasync after an
// append writes the data, then the block bitmap and group descriptor
// buffers, then the inode block (each a synchronous round trip), then
// flushes the disk's cache; after an overwrite of written blocks there is
// no metadata to write. So overwriting doubles what a window of syncs
// moves, but only where nothing pays for the blocks being written first:
// pre-writing the next segment costs more than it saves (the disk writes
// every byte twice, and the zeros' own metadata), fallocated extents are
// converted on write (metadata again), and a recycled segment's cold pages
// are read back before each partial write unless the write's last page is
// made whole first (overwrite-touch); and a segment file can only be
// recycled within its own partition below the log start, so that
// recovery's offset checks cut its stale tail (another partition's
// batches, or batches a truncation removed, would pass them). Starting
// each batch's write-back at once only splits the writes. RWF_DSYNC is an
// fdatasync by another name (dsync-window against writev-window);
// gathering a window into one write, which wins, is what the log does
// already for the batches of pipelined requests that arrive together (one
// vectored write per partition: 8 or 9 batches per pwritev in a trace of
// the broker at acks=all). Syncing the files one at a time is far slower
// than letting their fdatasyncs overlap, as the logs' group commits do
// (one sync in flight per log, logs independent).
func BenchmarkWindowSync(b *testing.B) {
	const files, window = 4, 8
	bt := batch(300, 100, 1) // about 32 KiB, not page aligned, as a producer's batch
	for _, v := range []struct {
		name string
		prep string // "", "zero" (written, synced, cached), "cold" (the same, uncached), "falloc"
		mode string
	}{
		{"append", "", "fdatasync"},
		{"overwrite-cached", "zero", "fdatasync"},
		{"overwrite-cold", "cold", "fdatasync"},
		{"overwrite-touch", "cold", "touch"},
		{"prezero-behind", "zero", "behind"},
		{"fallocate", "falloc", "fdatasync"},
		{"writeback-each", "", "writeback"},
		{"dsync-window", "", "dsync"},
		{"writev-window", "", "writev"},
		{"serialized", "", "serialized"},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(bt)))
			per := b.N / files
			size := int64(per+window) * int64(len(bt))
			dir := b.TempDir()
			fds := make([]int, files)
			for i := range fds {
				fds[i] = prepWindowFile(b, filepath.Join(dir, fmt.Sprint(i)), v.prep, size)
			}
			syncDir(b, dir)
			var written, prepared atomic.Int64
			var serial sync.Mutex
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if v.mode == "behind" {
				for i := range fds {
					wg.Add(1)
					go func() {
						defer wg.Done()
						preWriteBehind(b, filepath.Join(dir, fmt.Sprint("next-", i)), &written, &prepared, stop)
					}()
				}
			}
			b.ResetTimer()
			var writers sync.WaitGroup
			for _, fd := range fds {
				writers.Add(1)
				go func() {
					defer writers.Done()
					var page [4096]byte
					iov := make([][]byte, window)
					for i := range iov {
						iov[i] = bt
					}
					var off int64
					for n := 0; n < per; n += window {
						var err error
						switch v.mode {
						case "dsync":
							_, err = unix.Pwritev2(fd, iov, off, unix.RWF_DSYNC)
							off += int64(window * len(bt))
						case "writev":
							if _, err = unix.Pwritev(fd, iov, off); err == nil {
								err = unix.Fdatasync(fd)
							}
							off += int64(window * len(bt))
						default:
							for w := 0; w < window && err == nil; w++ {
								if end := off + int64(len(bt)); v.mode == "touch" && end%4096 != 0 && end&^4095 > off {
									_, err = unix.Pwrite(fd, page[:], end&^4095)
								}
								if err == nil {
									_, err = unix.Pwrite(fd, bt, off)
								}
								if err == nil && v.mode == "writeback" {
									err = unix.SyncFileRange(fd, off, int64(len(bt)), unix.SYNC_FILE_RANGE_WRITE)
								}
								off += int64(len(bt))
							}
							if err == nil {
								if v.mode == "serialized" {
									serial.Lock()
								}
								err = unix.Fdatasync(fd)
								if v.mode == "serialized" {
									serial.Unlock()
								}
							}
						}
						if err != nil {
							b.Error(err)
							return
						}
						written.Add(int64(window * len(bt)))
					}
				}()
			}
			writers.Wait()
			b.StopTimer()
			close(stop)
			wg.Wait()
			for _, fd := range fds {
				unix.Close(fd)
			}
		})
	}
}

// prepWindowFile creates a file for BenchmarkWindowSync: empty, or size
// bytes of zeros written and synced (and dropped from the page cache for
// "cold"), or size bytes fallocated.
func prepWindowFile(b *testing.B, path, prep string, size int64) int {
	b.Helper()
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	switch prep {
	case "zero", "cold":
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(zeros)) {
			if _, err := unix.Pwrite(fd, zeros, off); err != nil {
				b.Fatal(err)
			}
		}
		err = unix.Fdatasync(fd)
		if err == nil && prep == "cold" {
			err = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		}
	case "falloc":
		if err = unix.Fallocate(fd, 0, 0, size); err == nil {
			err = unix.Fsync(fd)
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	return fd
}

// preWriteBehind writes zeros to path, 1 MiB at a time with an fdatasync
// every 8 MiB, as long as what it wrote (prepared, shared by the files)
// is behind what the writers wrote, until stop.
func preWriteBehind(b *testing.B, path string, written, prepared *atomic.Int64, stop chan struct{}) {
	f, err := os.Create(path)
	if err != nil {
		b.Error(err)
		return
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	var off int64
	for {
		select {
		case <-stop:
			return
		default:
		}
		if prepared.Load() >= written.Load() {
			unix.Nanosleep(&unix.Timespec{Nsec: 100_000}, nil)
			continue
		}
		for range 8 {
			if _, err := f.WriteAt(zeros, off); err != nil {
				b.Error(err)
				return
			}
			off += int64(len(zeros))
			prepared.Add(int64(len(zeros)))
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Error(err)
			return
		}
	}
}

func syncDir(b *testing.B, dir string) {
	b.Helper()
	if err := (OSFS{}).SyncDir(dir); err != nil {
		b.Fatal(err)
	}
}
