package tiering

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"math"

	"github.com/shale-log/shale/localseg"
)

// AbortedTxns returns the aborted transactions that a read_committed fetch
// of the remote records [from, to) tells its consumer of, as Kafka's
// RemoteLogManager collects them: those with their marker (LastOffset) at
// or above from and their first offset below to, ascending by marker
// offset. to is the end of the records the fetch returns (the offset
// after its last batch), not the fetch's last stable offset: the search
// may have to go on past to, and the closer to is, the sooner it stops.
//
// A marker at or above from lies in the segment holding from or a later
// one, so the search reads the companions (through the reader's cache,
// spilled manifest parts as Read does) of the segments from there on, and
// stops, past to, at the first of these bounds (see the package doc):
//
//   - after an entry whose last stable offset is at or above to (Kafka's
//     rule): every transaction whose marker comes later started at or
//     above that offset, so at or above to;
//   - after a segment ending at or above to whose producer snapshot holds
//     no open transaction that started below to: a transaction that started
//     below to and ends later was open at the segment's end;
//   - at the manifest's end: the local log holds the rest, which the
//     caller adds.
//
// Where manifest entries overlap, a segment's entries below the previous
// segment's next offset are those of offsets read from the previous one,
// and are left out. Nothing (and no error) when to <= from, or when the
// remote log does not reach from.
func (r *Reader) AbortedTxns(ctx context.Context, p Partition, m *Manifest, from, to int64) ([]localseg.AbortedTxn, error) {
	start := m.Start()
	if start < 0 || to <= from || from >= m.End() {
		return nil, nil
	}
	var out []localseg.AbortedTxn
	var loadErr error
	covered := int64(-1) // the previous segment's next offset
	err := WalkSegments(ctx, r, p, m, max(from, start), nil, func(seg Segment) bool {
		comp, err := r.companion(ctx, p, seg)
		if err != nil {
			loadErr = err
			return false
		}
		lo := max(seg.BaseOffset, covered)
		covered = seg.NextOffset
		for _, e := range comp.AbortedTxns {
			if e.LastOffset < lo {
				continue
			}
			if e.LastOffset >= from && e.FirstOffset < to {
				out = append(out, e)
			}
			if e.LastStableOffset >= to {
				return false
			}
		}
		if seg.NextOffset >= to {
			if floor, ok := openTxnFloor(comp.ProducerSnapshot); ok && floor >= to {
				return false
			}
		}
		return true
	})
	if loadErr != nil {
		return nil, loadErr
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Producer snapshot layout (localseg's, version 1; see its package doc):
//
//	magic "SHPS" | version u16 = 1 | crc32c u32 of every byte after it |
//	count u32 | count × entry
//	entry: producer id i64 | epoch i16 | last timestamp i64 |
//	       coordinator epoch i32 | current txn first offset i64 |
//	       batch count u8 | batch count × 32 bytes
const (
	snapshotMagic         = "SHPS"
	snapshotVersion       = 1
	snapshotHeaderSize    = 4 + 2 + 4
	snapshotEntrySize     = 8 + 2 + 8 + 4 + 8 + 1
	snapshotTxnFirstAt    = 8 + 2 + 8 + 4
	snapshotBatchCountAt  = snapshotEntrySize - 1
	snapshotBatchSize     = 4 + 4 + 8 + 8 + 8
	snapshotNoOpenTxnMark = -1
)

// openTxnFloor reads a producer snapshot in localseg's format for the
// first offset of the oldest transaction open at the snapshot's offset:
// math.MaxInt64 when none is. ok is false when snap is no such snapshot
// (none, another version, damaged): the caller then knows nothing.
func openTxnFloor(snap []byte) (floor int64, ok bool) {
	if len(snap) < snapshotHeaderSize+4 || string(snap[:4]) != snapshotMagic ||
		binary.BigEndian.Uint16(snap[4:]) != snapshotVersion ||
		binary.BigEndian.Uint32(snap[6:]) != crc32.Checksum(snap[snapshotHeaderSize:], castagnoli) {
		return 0, false
	}
	d := snap[snapshotHeaderSize:]
	n := binary.BigEndian.Uint32(d)
	d = d[4:]
	floor = math.MaxInt64
	// Each entry takes at least snapshotEntrySize bytes: the loop ends
	// within len(snap)/snapshotEntrySize rounds whatever the count says.
	for range n {
		if len(d) < snapshotEntrySize {
			return 0, false
		}
		first := int64(binary.BigEndian.Uint64(d[snapshotTxnFirstAt:]))
		if first != snapshotNoOpenTxnMark {
			if first < 0 {
				return 0, false
			}
			floor = min(floor, first)
		}
		size := snapshotEntrySize + int(d[snapshotBatchCountAt])*snapshotBatchSize
		if len(d) < size {
			return 0, false
		}
		d = d[size:]
	}
	if len(d) != 0 {
		return 0, false
	}
	return floor, true
}
