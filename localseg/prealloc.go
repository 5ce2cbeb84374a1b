package localseg

import (
	"fmt"
	"os"
	"sync"

	"github.com/shale-log/shale/localseg/vfs"
)

// Preallocation (Config.Preallocate, the topic config preallocate).
//
// An fdatasync of a file whose appends grew it writes, besides the data,
// the inode (the new size, the extents the writes allocated) in a
// synchronous write of its own: on an ext4 data disk without a journal, four
// device round trips in a row (data, metadata buffers, the inode, the cache
// flush) where an overwrite of blocks already written needs two (data,
// flush). With preallocation the active segment's file is extended ahead of
// the writes with zeros, really written (not fallocate: unwritten extents
// still need their conversion written with the data), and fdatasynced once
// per zeroed stretch, in the background; the appends then overwrite those
// zeros, and the group commit's fdatasyncs (acks=all on a leader alone,
// flush.messages) find no size or extent to write.
//
// The zeros' writes and syncs must not compete with the group commit's:
// each piece is written and written back, and each stretch fdatasynced,
// right after a group-commit sync ends and with the disk's turn
// (Log.diskTurn), so that a sync waits for one piece at most and never
// shares the disk with zeros. And only logs the group commit syncs get
// zeros (a stretch starts only if a sync was asked since the last one
// started): acks=0 and acks=1 traffic would pay for the doubled writes
// and save no fsync. fallocate is no substitute on ext4: its unwritten
// extents (FALLOC_FL_ZERO_RANGE's too) are converted by the first write,
// and the conversion is metadata the next fdatasync writes. Measured
// (256 KiB written then fdatasynced, 64 MiB a file, 8 rounds on a loaded
// ext4 without a journal, median): a growing file 1.47 ms per sync, written
// zeros 0.97, fallocate 2.85, with FALLOC_FL_KEEP_SIZE 2.52,
// FALLOC_FL_ZERO_RANGE 2.25.
//
// The zeros are never part of the log: the segment's size in memory says
// where its batches end, and every reader (fetch, indexes, tiering, scrub,
// the size metrics) goes by it. A roll cuts the file to its batches before
// the segment is sealed, and so does Close; after a crash, recovery cuts
// the zero tail of the active segment (or of a segment sealed just before
// the crash) as the end of the log, not as damage.

// zeroAhead is how far ahead of the reserved writes the zeroing keeps the
// file; zeroPiece is what one write of zeros covers (appends that catch up
// with the zeroing wait for at most one piece). Vars so that tests can
// change them. Measured (BenchmarkDurableAppend, 4 logs of 8 producers'
// windows, interleaved, 2 cores at load 17-20): 32 MiB in 1 MiB pieces
// moved 259 MB/s on average against 232 without preallocation (6 of 7
// pairs won); 8 MiB in 256 KiB pieces 217-239 against 207-251 (no
// gain: a fixed cost, the fdatasync that ends each stretch, paid four
// times as often); 64 MiB in 1 MiB pieces 241-268 against 229-277.
var (
	zeroAhead int64 = 32 << 20
	zeroPiece int64 = maxZeroPiece
)

// maxZeroPiece bounds zeroPiece: the size of the one buffer of zeros.
const maxZeroPiece = 1 << 20

var zeroBuf struct {
	once sync.Once
	b    []byte
}

func zeros(n int64) []byte {
	zeroBuf.once.Do(func() { zeroBuf.b = make([]byte, maxZeroPiece) })
	return zeroBuf.b[:n]
}

// zeroState is an active segment's preallocation. Appends (under the log's
// mu) report the end of each write they reserve; one goroutine at a time
// writes zeros from past the highest reserved end, a piece at a time, so a
// write of zeros and an append never cover the same bytes: an append that
// reaches into the piece being zeroed waits for it first.
type zeroState struct {
	mu       sync.Mutex
	end      int64 // bytes below end are written or reserved by appends, or zeroed
	reserved int64 // the end of the last write reserved
	limit    int64 // no zeros past segment.bytes
	busy     bool  // a piece from end is being written
	done     chan struct{}
	running  bool // a zeroing goroutine runs
	stopped  bool // sealed, truncated or closed: no more zeros
	grown    bool // zeros were written: the file may run past the batches
}

// init starts the state of an active segment whose batches end at size.
func (z *zeroState) init(size, limit int64) {
	z.mu.Lock()
	z.end, z.reserved, z.limit = size, size, limit
	z.mu.Unlock()
}

// reserveZeros records a write reserved up to to in the active segment s
// and returns a channel to wait on before writing it, when it reaches into
// zeros being written (nil otherwise). With preallocation on, it starts
// the zeroing when the zeroed stretch ahead is under half of zeroAhead.
// Requires mu.
func (l *Log) reserveZeros(s *segment, to int64) <-chan struct{} {
	z := &s.zero
	z.mu.Lock()
	z.reserved = max(z.reserved, to)
	var wait <-chan struct{}
	if z.busy && to > z.end {
		wait = z.done
	}
	start := l.mu.cfg.Preallocate && !z.stopped && !z.running &&
		max(z.end, z.reserved) < z.limit && z.end-z.reserved < zeroAhead/2 &&
		l.sync.asked.CompareAndSwap(true, false)
	if start {
		z.running = true
	}
	z.mu.Unlock()
	if start {
		l.zeroers.Add(1)
		go l.zeroAheadOf(s)
	}
	return wait
}

// next claims the next piece to zero: from past the reserved writes, up to
// zeroAhead beyond them. ok is false when there is none (the goroutine
// then ends).
func (z *zeroState) next() (start, n int64, ok bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	start = max(z.end, z.reserved)
	target := min(z.reserved+zeroAhead, z.limit)
	if z.stopped || start >= target {
		z.running = false
		return 0, 0, false
	}
	z.end = start
	z.busy, z.done = true, make(chan struct{})
	z.grown = true
	return start, min(zeroPiece, maxZeroPiece, target-start), true
}

// wrote ends the piece next claimed.
func (z *zeroState) wrote(n int64, err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.busy = false
	close(z.done)
	if err != nil {
		z.stopped = true
		z.running = false
		return
	}
	z.end += n
}

// stop ends the preallocation of s (a seal, truncation or close) and waits
// for a write of zeros in flight: none starts after it returns. It reports
// whether zeros were ever written (the file may then run past the batches).
func (z *zeroState) stop() (grown bool) {
	z.mu.Lock()
	z.stopped = true
	var wait chan struct{}
	if z.busy {
		wait = z.done
	}
	grown = z.grown
	z.mu.Unlock()
	if wait != nil {
		<-wait
	}
	return grown
}

// zeroAheadOf writes zeros ahead of the writes of s until zeroAhead past
// them is zeroed, then fdatasyncs the file once so that the zeros' blocks
// and the file's new size are on the disk before the appends overwrite
// them. It uses a descriptor of its own: a writeback error it sees is
// still reported to the segment's descriptor, whose fsyncs decide what is
// durable (see Log.syncSegment).
func (l *Log) zeroAheadOf(s *segment) {
	defer l.zeroers.Done()
	f, err := l.fs.OpenFile(s.path(".log"), os.O_WRONLY, 0)
	if err != nil {
		s.zero.mu.Lock()
		s.zero.running, s.zero.stopped = false, true
		s.zero.mu.Unlock()
		return
	}
	defer f.Close()
	wrote := false
	for {
		// A piece at a time, right after a sync of the group commit
		// ends and never beside one: each piece is written and written
		// back (so that no sync finds zeros to write) with the disk's
		// turn, which the next sync waits for.
		l.sync.awaitSyncEnd()
		l.diskTurn.Lock()
		start, n, ok := s.zero.next()
		if !ok {
			l.diskTurn.Unlock()
			break
		}
		err := writeFull(f, zeros(n), start)
		s.zero.wrote(n, err)
		if err == nil {
			err = vfs.WriteOut(f, start, n)
		}
		l.diskTurn.Unlock()
		if err != nil {
			// Only a loss of speed: appends past the zeros extend the
			// file as without preallocation.
			l.log.Debug("preallocating a segment", "segment", s.path(".log"), "err", err)
			break
		}
		wrote = true
	}
	if wrote {
		l.sync.awaitSyncEnd()
		l.diskTurn.Lock()
		err := vfs.Datasync(f)
		l.diskTurn.Unlock()
		if err != nil {
			l.log.Debug("syncing a segment's preallocated zeros", "segment", s.path(".log"), "err", err)
		}
	}
}

// trimZeros cuts the file of the active segment s, whose zeroing is
// stopped, to its batches (a roll). The flush that follows makes the cut
// durable with an fsync (fullSync). Requires mu, with no write in flight.
func (l *Log) trimZeros(s *segment) error {
	w, err := l.fc.acquire(s)
	if err != nil {
		return fmt.Errorf("localseg: cutting the preallocated tail of %s: %w", s.path(".log"), err)
	}
	defer l.fc.release(s)
	if err := w.Truncate(s.size.Load()); err != nil {
		return fmt.Errorf("localseg: cutting the preallocated tail of %s: %w", s.path(".log"), err)
	}
	s.fullSync.Store(true)
	return nil
}
