package localseg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// highWatermarkFile holds the partition's high watermark (Kafka's
// replication-offset-checkpoint, one per partition here), so that a
// restarted replica knows what was committed before it hears from the
// leader.
const highWatermarkFile = "high-watermark"

// hwState is the high watermark the partition last reported, and what
// its checkpoint file holds.
type hwState struct {
	value   int64
	written int64 // -1: never written by this process
}

// HighWatermark is the high watermark last given to SetHighWatermark; after
// Open, the checkpointed one, kept within [log start, log end] (a machine
// crash can lose records the checkpoint had counted; a missing or corrupt
// checkpoint reads as the log start).
func (l *Log) HighWatermark() int64 {
	l.hw.Lock()
	defer l.hw.Unlock()
	return l.hw.value
}

// SetHighWatermark records the partition's high watermark (in memory; the
// file is written by CheckpointHighWatermark and Close).
func (l *Log) SetHighWatermark(hw int64) {
	l.hw.Lock()
	l.hw.value = hw
	l.hw.Unlock()
}

// CheckpointHighWatermark writes the high watermark to its checkpoint when
// it changed since the last write. It does not fsync: a checkpoint lost or
// stale after a crash only reads lower (Open keeps it within the log), and
// Close writes it durably.
func (l *Log) CheckpointHighWatermark() error {
	if l.closed.Load() {
		return ErrClosed
	}
	return l.checkpointHW(false)
}

func (l *Log) checkpointHW(durable bool) error {
	if err := l.Offline(); err != nil {
		return err
	}
	// The file is written holding hwFile alone: a write can take long (a
	// rename that frees the old file's blocks waits for their discard on
	// a filesystem mounted with it), and the leader's high watermark
	// moves (SetHighWatermark) with its partition's appends held.
	l.hwFile.Lock()
	defer l.hwFile.Unlock()
	l.hw.Lock()
	hw, written := l.hw.value, l.hw.written
	l.hw.Unlock()
	if hw == written && !durable {
		return nil
	}
	path := filepath.Join(l.dir, highWatermarkFile)
	data := encodeHighWatermark(hw)
	write := overwriteNoSync
	if durable {
		write = writeFileAtomic
	}
	if err := write(l.fs, path, data); err != nil {
		return fmt.Errorf("localseg: writing the high watermark: %w", err)
	}
	// A value set meanwhile differs from written: the next checkpoint
	// writes it.
	l.hw.Lock()
	l.hw.written = hw
	l.hw.Unlock()
	return nil
}

// loadHighWatermark reads the checkpoint at open, within [start, end].
func (l *Log) loadHighWatermark(start, end int64) {
	hw := l.readOffsetCheckpoint(highWatermarkFile, "high-watermark")
	l.hw.value = min(max(hw, start), end)
	l.hw.written = -1
}

// lowerHighWatermark keeps the high watermark within a log truncated to
// end.
func (l *Log) lowerHighWatermark(end int64) {
	l.hw.Lock()
	l.hw.value = min(l.hw.value, end)
	l.hw.Unlock()
}

// encodeHighWatermark is the high watermark's checkpoint, the offset
// written with all 19 digits an int64 can need: every checkpoint has the
// same length, so that the periodic one overwrites the last in place
// (overwriteNoSync). The offset line reads as any other offset
// checkpoint's (leading zeros parse).
func encodeHighWatermark(hw int64) []byte {
	return encodeCheckpoint("high-watermark", 1, []string{fmt.Sprintf("%019d", hw)})
}

// overwriteNoSync writes data over the file at path when it has data's
// length (no fsync), and through a temporary and a rename otherwise
// (writeFileNoSync).
//
// The high watermark's checkpoint is written every few seconds for every
// partition whose high watermark moved: through a temporary, each write
// created an inode, updated the directory and freed the old file's
// blocks, which on a filesystem mounted with discard waits for their
// discard (tens of milliseconds here). In place it is one write of a few
// dozen bytes into a block already allocated. A crash in the middle of
// it can tear the file; its checksum then fails, and it reads as the log
// start, as a missing checkpoint does: the high watermark only reads
// lower after a crash (see HighWatermark), never higher.
func overwriteNoSync(fs FS, path string, data []byte) error {
	f, err := fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return writeFileNoSync(fs, path, data)
		}
		return err
	}
	size, err := f.Size()
	if err == nil && size == int64(len(data)) {
		err = writeFull(f, data, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	f.Close()
	if err != nil {
		return err
	}
	return writeFileNoSync(fs, path, data)
}
