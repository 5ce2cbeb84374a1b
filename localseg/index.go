package localseg

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"
)

// indexEntry maps a relative offset to the position of the batch that
// contains it (the offset index, one entry every index.interval.bytes).
type indexEntry struct {
	rel uint32
	pos uint32
}

// timeEntry maps a timestamp to the relative offset of the first batch
// after which the segment's largest timestamp reaches it (the time index).
type timeEntry struct {
	ts  int64
	rel uint32
}

// Index files: entries, then a 16-byte trailer.
//
//	.index      entries of relative offset u32 | position u32
//	.timeindex  entries of timestamp i64 | relative offset u32
//	trailer     magic ("SHIX" or "SHTX") | entry count u32 | crc32c u32 of
//	            the entries | reserved u32 (0)
//
// Big endian. Index files are written whole when a segment is sealed or the
// log is closed, through a temporary and a rename. A file whose trailer or
// checksum does not match is rebuilt from the segment, never trusted.
const (
	indexEntrySize     = 8
	timeIndexEntrySize = 12
	indexTrailerSize   = 16
	offsetIndexMagic   = "SHIX"
	timeIndexMagic     = "SHTX"
)

func appendTrailer(b []byte, magic string, count int, entries []byte) []byte {
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint32(b, uint32(count))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(entries, castagnoli))
	return binary.BigEndian.AppendUint32(b, 0)
}

func checkTrailer(data []byte, magic string, entrySize int) ([]byte, error) {
	if len(data) < indexTrailerSize {
		return nil, fmt.Errorf("%w: index shorter than its trailer", errBadCheckpoint)
	}
	entries, tr := data[:len(data)-indexTrailerSize], data[len(data)-indexTrailerSize:]
	if string(tr[:4]) != magic {
		return nil, fmt.Errorf("%w: index trailer magic %q", errBadCheckpoint, tr[:4])
	}
	n := binary.BigEndian.Uint32(tr[4:])
	if uint64(n)*uint64(entrySize) != uint64(len(entries)) {
		return nil, fmt.Errorf("%w: index holds %d bytes for %d entries", errBadCheckpoint, len(entries), n)
	}
	if binary.BigEndian.Uint32(tr[8:]) != crc32.Checksum(entries, castagnoli) {
		return nil, fmt.Errorf("%w: index checksum mismatch", errBadCheckpoint)
	}
	return entries, nil
}

func encodeOffsetIndex(es []indexEntry) []byte {
	b := make([]byte, 0, len(es)*indexEntrySize+indexTrailerSize)
	for _, e := range es {
		b = binary.BigEndian.AppendUint32(b, e.rel)
		b = binary.BigEndian.AppendUint32(b, e.pos)
	}
	return appendTrailer(b, offsetIndexMagic, len(es), b)
}

// decodeOffsetIndex checks an offset index file against the segment it
// indexes: entries ascending in both fields, positions inside the segment.
func decodeOffsetIndex(data []byte, segSize int64) ([]indexEntry, error) {
	raw, err := checkTrailer(data, offsetIndexMagic, indexEntrySize)
	if err != nil {
		return nil, err
	}
	es := make([]indexEntry, len(raw)/indexEntrySize)
	for i := range es {
		e := indexEntry{rel: binary.BigEndian.Uint32(raw[i*8:]), pos: binary.BigEndian.Uint32(raw[i*8+4:])}
		if int64(e.pos) >= segSize || (i > 0 && (e.rel <= es[i-1].rel || e.pos <= es[i-1].pos)) {
			return nil, fmt.Errorf("%w: offset index entry %d out of order or past the segment", errBadCheckpoint, i)
		}
		es[i] = e
	}
	return es, nil
}

func encodeTimeIndex(es []timeEntry) []byte {
	b := make([]byte, 0, len(es)*timeIndexEntrySize+indexTrailerSize)
	for _, e := range es {
		b = binary.BigEndian.AppendUint64(b, uint64(e.ts))
		b = binary.BigEndian.AppendUint32(b, e.rel)
	}
	return appendTrailer(b, timeIndexMagic, len(es), b)
}

func decodeTimeIndex(data []byte) ([]timeEntry, error) {
	raw, err := checkTrailer(data, timeIndexMagic, timeIndexEntrySize)
	if err != nil {
		return nil, err
	}
	es := make([]timeEntry, len(raw)/timeIndexEntrySize)
	for i := range es {
		e := timeEntry{ts: int64(binary.BigEndian.Uint64(raw[i*12:])), rel: binary.BigEndian.Uint32(raw[i*12+8:])}
		if i > 0 && (e.ts <= es[i-1].ts || e.rel < es[i-1].rel) {
			return nil, fmt.Errorf("%w: time index entry %d out of order", errBadCheckpoint, i)
		}
		es[i] = e
	}
	return es, nil
}

// floorEntry returns the last entry whose relative offset is <= rel, or the
// zero entry (position 0).
func floorEntry(es []indexEntry, rel uint32) indexEntry {
	i := sort.Search(len(es), func(i int) bool { return es[i].rel > rel })
	if i == 0 {
		return indexEntry{}
	}
	return es[i-1]
}

// floorTime returns the last time entry with a timestamp < ts (every batch
// before its offset has only smaller timestamps), or ok=false.
func floorTime(es []timeEntry, ts int64) (timeEntry, bool) {
	i := sort.Search(len(es), func(i int) bool { return es[i].ts >= ts })
	if i == 0 {
		return timeEntry{}, false
	}
	return es[i-1], true
}
