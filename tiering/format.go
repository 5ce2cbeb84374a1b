package tiering

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"path"
	"strconv"
	"strings"

	"github.com/shale-log/shale/localseg"
)

// ErrCorrupt: an object of the archive format that does not decode (bad
// magic, version, checksum or structure).
var ErrCorrupt = errors.New("tiering: corrupt object")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frozen format constants (see the package doc).
const (
	manifestMagic  = "SHMF"
	spillMagic     = "SHMS"
	companionMagic = "SHCI"
	formatVersion  = 1

	sectionOffsetIndex = 1
	sectionTimeIndex   = 2
	sectionProducers   = 3
	sectionEpochs      = 4
	sectionAbortedTxns = 5

	// abortedTxnSize is the encoded size of an aborted transaction.
	abortedTxnSize = 8 + 8 + 8 + 8

	manifestName = "manifest"
	archiveName  = "shale-archive.json"
	topicName    = "topic.json"
	deletedName  = "deleted.json"
	sweptName    = "swept.json"

	// maxManifestSize bounds what reading a manifest (or spill)
	// allocates.
	maxManifestSize = 64 << 20
	// maxCompanionSize bounds what reading a companion allocates.
	maxCompanionSize = 256 << 20
)

// spillThreshold: a manifest larger than this moves its oldest entries to
// a spilled part, keeping spillKeep bytes of segment entries in the
// manifest (so a part holds about 48 KiB, some 600 segments, and the
// manifest stays near 16 KiB plus 56 bytes per part). Policy, not format:
// variables only so that tests can make them small.
var (
	spillThreshold = 64 << 10
	spillKeep      = 16 << 10
)

// Partition names one partition of a topic in the archive.
type Partition struct {
	Topic   string
	TopicID [16]byte
	Index   int32
}

func (p Partition) String() string { return p.Topic + "-" + strconv.Itoa(int(p.Index)) }

// Layout maps archive objects to keys under a prefix.
type Layout struct{ Prefix string }

func (l Layout) join(parts ...string) string {
	if l.Prefix != "" {
		parts = append([]string{strings.Trim(l.Prefix, "/")}, parts...)
	}
	return path.Join(parts...)
}

// TopicDir is the directory name of a topic: name-base64url(id).
func TopicDir(topic string, id [16]byte) string {
	return topic + "-" + base64.RawURLEncoding.EncodeToString(id[:])
}

// TopicOfKey names the topic whose objects key (or a list prefix) is
// under: the name of the topic directory it starts with, below the
// layout's prefix. ok is false for a key of no topic (the archive
// descriptor, a prefix above the topics, a key outside the layout).
func (l Layout) TopicOfKey(key string) (topic string, ok bool) {
	if p := strings.Trim(l.Prefix, "/"); p != "" {
		if key, ok = strings.CutPrefix(key, p+"/"); !ok {
			return "", false
		}
	}
	dir, _, ok := strings.Cut(key, "/")
	if !ok {
		return "", false
	}
	// The id is the last topicIDLen characters (base64url has '-' among
	// its digits), after a '-'.
	i := len(dir) - topicIDLen - 1
	if i < 0 || dir[i] != '-' {
		return "", false
	}
	if _, err := ParseTopicID(dir[i+1:]); err != nil {
		return "", false
	}
	return dir[:i], true
}

// topicIDLen is the length of a topic id in a topic directory's name.
var topicIDLen = base64.RawURLEncoding.EncodedLen(16)

// ArchiveKey is the archive descriptor's key.
func (l Layout) ArchiveKey() string { return l.join(archiveName) }

// TopicPrefix is the prefix of every object of a topic (with a trailing
// slash).
func (l Layout) TopicPrefix(topic string, id [16]byte) string {
	return l.join(TopicDir(topic, id)) + "/"
}

// TopicKey is a topic descriptor's key.
func (l Layout) TopicKey(topic string, id [16]byte) string {
	return l.join(TopicDir(topic, id), topicName)
}

// DeletedKey is a topic's deletion marker.
func (l Layout) DeletedKey(topic string, id [16]byte) string {
	return l.join(TopicDir(topic, id), deletedName)
}

// PartitionPrefix is the prefix of a partition's objects (with a trailing
// slash).
func (l Layout) PartitionPrefix(p Partition) string {
	return l.join(TopicDir(p.Topic, p.TopicID), strconv.Itoa(int(p.Index))) + "/"
}

// ManifestKey is a partition's manifest.
func (l Layout) ManifestKey(p Partition) string { return l.PartitionPrefix(p) + manifestName }

// SweepNoteKey is a partition's sweep note (SweepNote).
func (l Layout) SweepNoteKey(p Partition) string { return l.PartitionPrefix(p) + sweptName }

// SegmentKey and CompanionKey name a segment upload.
func (l Layout) SegmentKey(p Partition, base int64, id [16]byte) string {
	return l.PartitionPrefix(p) + objectBase(base, id) + ".log"
}

func (l Layout) CompanionKey(p Partition, base int64, id [16]byte) string {
	return l.PartitionPrefix(p) + objectBase(base, id) + ".indexes"
}

// SpillKey names a spilled manifest part.
func (l Layout) SpillKey(p Partition, base int64, id [16]byte) string {
	return l.PartitionPrefix(p) + "spill-" + objectBase(base, id) + ".manifest"
}

// TailAfter is the key after which a listing of p's objects (ListAfter)
// holds the segments and companions of base offset base and above, the
// manifest, every spilled part and the sweep note, and nothing else: base
// offsets are fixed-width decimal, and the names that do not start with
// one ("manifest", "spill-...", "swept.json") sort after every digit. The
// segments and companions of a base offset below base sort before it.
func (l Layout) TailAfter(p Partition, base int64) string {
	return l.PartitionPrefix(p) + baseDigits(max(base, 0))
}

func objectBase(base int64, id [16]byte) string {
	return baseDigits(base) + "-" + hex.EncodeToString(id[:])
}

// baseDigits is a base offset as it starts an object's name (B).
func baseDigits(base int64) string { return fmt.Sprintf("%020d", base) }

// parseObjectID returns the upload id of a segment, companion or spill
// key (ok false for other keys).
func parseObjectID(key string) (id [16]byte, ok bool) {
	name := path.Base(key)
	for _, ext := range []string{".log", ".indexes", ".manifest"} {
		if s, cut := strings.CutSuffix(name, ext); cut {
			s = strings.TrimPrefix(s, "spill-")
			if len(s) != 20+1+32 || s[20] != '-' {
				return id, false
			}
			if _, err := hex.Decode(id[:], []byte(s[21:])); err != nil {
				return id, false
			}
			return id, true
		}
	}
	return id, false
}

// Segment is one manifest entry: an uploaded segment.
type Segment struct {
	BaseOffset    int64
	NextOffset    int64 // offset after its last batch
	Size          int64 // bytes of the .log object
	CompanionSize int64 // bytes of the .indexes object
	MaxTimestamp  int64 // -1 when unknown
	UploadEpoch   int32 // leader epoch of the uploader
	ID            [16]byte
	Epochs        []localseg.EpochEntry
}

// Spill is a reference to a spilled manifest part: the range of its
// segments, their count, total size and largest timestamp.
type Spill struct {
	BaseOffset   int64 // the first segment's base offset
	NextOffset   int64 // the last segment's next offset
	Count        uint32
	Bytes        int64
	MaxTimestamp int64 // -1 when unknown
	ID           [16]byte

	// part, when set, is the part's content not yet written: Commit
	// writes it before the manifest that names it.
	part *Manifest
}

// Manifest is a partition's list of remote segments.
type Manifest struct {
	CommitID       [16]byte
	LeaderEpoch    int32
	LogStartOffset int64
	CommittedAtMs  int64
	Spills         []Spill
	Segments       []Segment
}

// End is the offset after the last remote segment, or the log start when
// there is none.
func (m *Manifest) End() int64 {
	if n := len(m.Segments); n > 0 {
		return m.Segments[n-1].NextOffset
	}
	if n := len(m.Spills); n > 0 {
		return m.Spills[n-1].NextOffset
	}
	return m.LogStartOffset
}

// firstBase is the base offset of the first segment m names, its spilled
// parts included, or its end when it names none: no object below it is
// part of the archive.
func (m *Manifest) firstBase() int64 {
	switch {
	case len(m.Spills) > 0:
		return m.Spills[0].BaseOffset
	case len(m.Segments) > 0:
		return m.Segments[0].BaseOffset
	}
	return m.End()
}

// keyBase returns the base offset a segment or companion key starts with
// (ok false for other keys).
func keyBase(key string) (int64, bool) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	if len(name) < 21 || name[20] != '-' {
		return 0, false
	}
	for _, c := range name[:20] {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	base, err := strconv.ParseInt(name[:20], 10, 64)
	return base, err == nil
}

// Start is the first remote offset a consumer may read: the log start, or
// the first segment's base when that is higher (-1 when the manifest has
// no segments).
func (m *Manifest) Start() int64 {
	first := int64(-1)
	switch {
	case len(m.Spills) > 0:
		first = m.Spills[0].BaseOffset
	case len(m.Segments) > 0:
		first = m.Segments[0].BaseOffset
	default:
		return -1
	}
	return max(first, m.LogStartOffset)
}

// Bytes is the total size of the remote segments above the log start.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, s := range m.Spills {
		n += s.Bytes
	}
	for _, s := range m.Segments {
		n += s.Size
	}
	return n
}

// Clone returns a deep copy that can be changed without affecting m.
func (m *Manifest) Clone() *Manifest {
	c := *m
	c.Spills = append([]Spill(nil), m.Spills...)
	c.Segments = append([]Segment(nil), m.Segments...)
	return &c
}

// Encoded sizes of the manifest's parts.
const (
	manifestHeaderSize = 12 + 16 + 4 + 8 + 8 + 4 + 4
	spillRefSize       = 8 + 8 + 4 + 8 + 8 + 16
	segmentRefSize     = 8 + 8 + 8 + 8 + 8 + 4 + 16 + 2
)

func (s *Segment) encodedSize() int { return segmentRefSize + 12*len(s.Epochs) }

// encodedSize is the length of EncodeManifest(m).
func (m *Manifest) encodedSize() int {
	n := manifestHeaderSize + spillRefSize*len(m.Spills)
	for i := range m.Segments {
		n += m.Segments[i].encodedSize()
	}
	return n
}

// EncodeManifest encodes a manifest (or, with spill, a spilled part).
func EncodeManifest(m *Manifest, spill bool) []byte {
	magic := manifestMagic
	if spill {
		magic = spillMagic
	}
	b := make([]byte, 0, m.encodedSize())
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, formatVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = append(b, 0, 0, 0, 0) // crc, back-filled
	b = append(b, m.CommitID[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.LeaderEpoch))
	b = binary.BigEndian.AppendUint64(b, uint64(m.LogStartOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(m.CommittedAtMs))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Spills)))
	for _, s := range m.Spills {
		b = binary.BigEndian.AppendUint64(b, uint64(s.BaseOffset))
		b = binary.BigEndian.AppendUint64(b, uint64(s.NextOffset))
		b = binary.BigEndian.AppendUint32(b, s.Count)
		b = binary.BigEndian.AppendUint64(b, uint64(s.Bytes))
		b = binary.BigEndian.AppendUint64(b, uint64(s.MaxTimestamp))
		b = append(b, s.ID[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Segments)))
	for _, s := range m.Segments {
		b = binary.BigEndian.AppendUint64(b, uint64(s.BaseOffset))
		b = binary.BigEndian.AppendUint64(b, uint64(s.NextOffset))
		b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
		b = binary.BigEndian.AppendUint64(b, uint64(s.CompanionSize))
		b = binary.BigEndian.AppendUint64(b, uint64(s.MaxTimestamp))
		b = binary.BigEndian.AppendUint32(b, uint32(s.UploadEpoch))
		b = append(b, s.ID[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Epochs)))
		for _, e := range s.Epochs {
			b = binary.BigEndian.AppendUint32(b, uint32(e.Epoch))
			b = binary.BigEndian.AppendUint64(b, uint64(e.StartOffset))
		}
	}
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(b[12:], castagnoli))
	return b
}

// reader is a sticky-error big-endian reader: after a short read every
// getter returns zero and ok stays false.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) take(n int) []byte {
	if !r.ok || n < 0 || len(r.b) < n {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) i64() int64 {
	if v := r.take(8); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func (r *reader) id() (id [16]byte) {
	copy(id[:], r.take(16))
	return id
}

// DecodeManifest decodes a manifest (spill false) or a spilled part, and
// checks its invariants: offsets non-negative and ascending, sizes
// non-negative, epochs ascending.
func DecodeManifest(data []byte, spill bool) (*Manifest, error) {
	magic := manifestMagic
	if spill {
		magic = spillMagic
	}
	if len(data) < 12 || string(data[:4]) != magic {
		return nil, fmt.Errorf("%w: manifest: bad magic", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(data[4:6]); v != formatVersion {
		return nil, fmt.Errorf("%w: manifest: version %d", ErrCorrupt, v)
	}
	if f := binary.BigEndian.Uint16(data[6:8]); f != 0 {
		return nil, fmt.Errorf("%w: manifest: unknown flags %#x", ErrCorrupt, f)
	}
	if crc32.Checksum(data[12:], castagnoli) != binary.BigEndian.Uint32(data[8:12]) {
		return nil, fmt.Errorf("%w: manifest: checksum mismatch", ErrCorrupt)
	}
	r := &reader{b: data[12:], ok: true}
	m := &Manifest{CommitID: r.id(), LeaderEpoch: int32(r.u32()), LogStartOffset: r.i64(), CommittedAtMs: r.i64()}
	n := r.u32()
	if !r.ok || uint64(n)*spillRefSize > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: manifest: spill count %d", ErrCorrupt, n)
	}
	m.Spills = make([]Spill, 0, n)
	for range n {
		m.Spills = append(m.Spills, Spill{BaseOffset: r.i64(), NextOffset: r.i64(), Count: r.u32(), Bytes: r.i64(), MaxTimestamp: r.i64(), ID: r.id()})
	}
	n = r.u32()
	if !r.ok || uint64(n)*segmentRefSize > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: manifest: segment count %d", ErrCorrupt, n)
	}
	m.Segments = make([]Segment, 0, n)
	for range n {
		s := Segment{BaseOffset: r.i64(), NextOffset: r.i64(), Size: r.i64(), CompanionSize: r.i64(),
			MaxTimestamp: r.i64(), UploadEpoch: int32(r.u32()), ID: r.id()}
		ne := int(r.u16())
		if !r.ok || ne*12 > len(r.b) {
			return nil, fmt.Errorf("%w: manifest: epoch count %d", ErrCorrupt, ne)
		}
		s.Epochs = make([]localseg.EpochEntry, 0, ne)
		for range ne {
			s.Epochs = append(s.Epochs, localseg.EpochEntry{Epoch: int32(r.u32()), StartOffset: r.i64()})
		}
		m.Segments = append(m.Segments, s)
	}
	if !r.ok {
		return nil, fmt.Errorf("%w: manifest: truncated", ErrCorrupt)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: manifest: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	if err := m.check(spill); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manifest) check(spill bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	if m.LogStartOffset < 0 {
		return bad("negative log start")
	}
	if spill && len(m.Spills) > 0 {
		return bad("a spilled part with spills")
	}
	prev := int64(0)
	for i, s := range m.Spills {
		if s.BaseOffset < 0 || s.NextOffset <= s.BaseOffset || s.NextOffset <= prev || s.Bytes < 0 || s.Count == 0 {
			return bad("spill %d: offsets [%d, %d), %d segments", i, s.BaseOffset, s.NextOffset, s.Count)
		}
		prev = s.NextOffset
	}
	for i, s := range m.Segments {
		if s.BaseOffset < 0 || s.NextOffset <= s.BaseOffset || s.NextOffset <= prev || s.Size <= 0 || s.CompanionSize < 0 {
			return bad("segment %d: offsets [%d, %d), size %d", i, s.BaseOffset, s.NextOffset, s.Size)
		}
		if err := checkEpochs(s.Epochs); err != nil {
			return bad("segment %d: %v", i, err)
		}
		prev = s.NextOffset
	}
	return nil
}

func checkEpochs(es []localseg.EpochEntry) error {
	for i, e := range es {
		if e.Epoch < 0 || e.StartOffset < 0 || (i > 0 && (e.Epoch <= es[i-1].Epoch || e.StartOffset < es[i-1].StartOffset)) {
			return fmt.Errorf("leader epochs out of order")
		}
	}
	return nil
}

// Companion is the decoded .indexes object of a segment.
type Companion struct {
	OffsetIndex      []localseg.IndexEntry
	TimeIndex        []localseg.TimeEntry
	ProducerSnapshot []byte
	Epochs           []localseg.EpochEntry
	// AbortedTxns are the transactions aborted by a marker inside the
	// segment, ascending by the marker's offset (LastOffset); nil for a
	// segment without any, and for companions written before the section
	// existed.
	AbortedTxns []localseg.AbortedTxn
}

// memSize is what a decoded companion costs in the cache.
func (c *Companion) memSize() int64 {
	return int64(len(c.OffsetIndex)*8+len(c.TimeIndex)*16+len(c.ProducerSnapshot)+len(c.Epochs)*16+len(c.AbortedTxns)*32) + 128
}

// EncodeCompanion encodes a segment's companion object. The aborted
// transactions section is written only when there are some, so that a
// segment without transactions has the companion it had before the section
// existed.
func EncodeCompanion(c *Companion) []byte {
	sections := make([][]byte, 0, 5)
	kinds := make([]uint16, 0, 5)
	add := func(kind uint16, sec []byte) {
		kinds = append(kinds, kind)
		sections = append(sections, sec)
	}
	s := make([]byte, 0, len(c.OffsetIndex)*8)
	for _, e := range c.OffsetIndex {
		s = binary.BigEndian.AppendUint32(s, e.RelOffset)
		s = binary.BigEndian.AppendUint32(s, e.Position)
	}
	add(sectionOffsetIndex, s)
	s = make([]byte, 0, len(c.TimeIndex)*12)
	for _, e := range c.TimeIndex {
		s = binary.BigEndian.AppendUint64(s, uint64(e.Timestamp))
		s = binary.BigEndian.AppendUint32(s, e.RelOffset)
	}
	add(sectionTimeIndex, s)
	add(sectionProducers, c.ProducerSnapshot)
	s = make([]byte, 0, len(c.Epochs)*12)
	for _, e := range c.Epochs {
		s = binary.BigEndian.AppendUint32(s, uint32(e.Epoch))
		s = binary.BigEndian.AppendUint64(s, uint64(e.StartOffset))
	}
	add(sectionEpochs, s)
	if len(c.AbortedTxns) > 0 {
		s = make([]byte, 0, len(c.AbortedTxns)*abortedTxnSize)
		for _, e := range c.AbortedTxns {
			s = binary.BigEndian.AppendUint64(s, uint64(e.ProducerID))
			s = binary.BigEndian.AppendUint64(s, uint64(e.FirstOffset))
			s = binary.BigEndian.AppendUint64(s, uint64(e.LastOffset))
			s = binary.BigEndian.AppendUint64(s, uint64(e.LastStableOffset))
		}
		add(sectionAbortedTxns, s)
	}
	size := 12 + 12*len(sections)
	for _, sec := range sections {
		size += len(sec)
	}
	b := make([]byte, 0, size)
	b = append(b, companionMagic...)
	b = binary.BigEndian.AppendUint16(b, formatVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sections)))
	b = append(b, 0, 0, 0, 0) // table crc, back-filled
	for i, sec := range sections {
		b = binary.BigEndian.AppendUint16(b, kinds[i])
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(len(sec)))
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(sec, castagnoli))
	}
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(b[12:], castagnoli))
	for _, sec := range sections {
		b = append(b, sec...)
	}
	return b
}

// DecodeCompanion decodes a companion and checks it against the segment it
// belongs to (base offset, next offset, size): index entries ascending and
// inside the segment, aborted transactions possible (see the package doc)
// and strictly ascending by marker offset, each marker inside the segment. Sections of kinds it does not know are
// skipped (their checksums still checked).
func DecodeCompanion(data []byte, seg *Segment) (*Companion, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: companion: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	if len(data) < 12 || string(data[:4]) != companionMagic {
		return nil, bad("bad magic")
	}
	if v := binary.BigEndian.Uint16(data[4:6]); v != formatVersion {
		return nil, bad("version %d", v)
	}
	n := int(binary.BigEndian.Uint16(data[6:8]))
	if 12+n*12 > len(data) {
		return nil, bad("section count %d", n)
	}
	table := data[12 : 12+n*12]
	if crc32.Checksum(table, castagnoli) != binary.BigEndian.Uint32(data[8:12]) {
		return nil, bad("section table checksum mismatch")
	}
	body := data[12+n*12:]
	c := &Companion{}
	maxRel := seg.NextOffset - seg.BaseOffset
	for i := range n {
		e := table[i*12:]
		kind, length, sum := binary.BigEndian.Uint16(e), binary.BigEndian.Uint32(e[4:]), binary.BigEndian.Uint32(e[8:])
		if uint64(length) > uint64(len(body)) {
			return nil, bad("section %d longer than the object", i)
		}
		sec := body[:length]
		body = body[length:]
		if crc32.Checksum(sec, castagnoli) != sum {
			return nil, bad("section %d checksum mismatch", i)
		}
		switch kind {
		case sectionOffsetIndex:
			if len(sec)%8 != 0 {
				return nil, bad("offset index length %d", len(sec))
			}
			c.OffsetIndex = make([]localseg.IndexEntry, 0, len(sec)/8)
			for j := 0; j < len(sec); j += 8 {
				ie := localseg.IndexEntry{RelOffset: binary.BigEndian.Uint32(sec[j:]), Position: binary.BigEndian.Uint32(sec[j+4:])}
				if int64(ie.RelOffset) >= maxRel || int64(ie.Position) >= seg.Size {
					return nil, bad("offset index entry outside the segment")
				}
				if k := len(c.OffsetIndex); k > 0 && (ie.RelOffset <= c.OffsetIndex[k-1].RelOffset || ie.Position <= c.OffsetIndex[k-1].Position) {
					return nil, bad("offset index not ascending")
				}
				c.OffsetIndex = append(c.OffsetIndex, ie)
			}
		case sectionTimeIndex:
			if len(sec)%12 != 0 {
				return nil, bad("time index length %d", len(sec))
			}
			c.TimeIndex = make([]localseg.TimeEntry, 0, len(sec)/12)
			for j := 0; j < len(sec); j += 12 {
				te := localseg.TimeEntry{Timestamp: int64(binary.BigEndian.Uint64(sec[j:])), RelOffset: binary.BigEndian.Uint32(sec[j+8:])}
				if int64(te.RelOffset) >= maxRel {
					return nil, bad("time index entry outside the segment")
				}
				if k := len(c.TimeIndex); k > 0 && (te.Timestamp < c.TimeIndex[k-1].Timestamp || te.RelOffset < c.TimeIndex[k-1].RelOffset) {
					return nil, bad("time index not ascending")
				}
				c.TimeIndex = append(c.TimeIndex, te)
			}
		case sectionProducers:
			if len(sec) > 0 {
				c.ProducerSnapshot = append([]byte(nil), sec...)
			}
		case sectionEpochs:
			if len(sec)%12 != 0 {
				return nil, bad("leader epochs length %d", len(sec))
			}
			for j := 0; j < len(sec); j += 12 {
				c.Epochs = append(c.Epochs, localseg.EpochEntry{Epoch: int32(binary.BigEndian.Uint32(sec[j:])), StartOffset: int64(binary.BigEndian.Uint64(sec[j+4:]))})
			}
			if err := checkEpochs(c.Epochs); err != nil {
				return nil, bad("%v", err)
			}
		case sectionAbortedTxns:
			if len(sec)%abortedTxnSize != 0 {
				return nil, bad("aborted transactions length %d", len(sec))
			}
			c.AbortedTxns = nil
			if len(sec) > 0 {
				c.AbortedTxns = make([]localseg.AbortedTxn, 0, len(sec)/abortedTxnSize)
			}
			for j := 0; j < len(sec); j += abortedTxnSize {
				at := localseg.AbortedTxn{
					ProducerID:       int64(binary.BigEndian.Uint64(sec[j:])),
					FirstOffset:      int64(binary.BigEndian.Uint64(sec[j+8:])),
					LastOffset:       int64(binary.BigEndian.Uint64(sec[j+16:])),
					LastStableOffset: int64(binary.BigEndian.Uint64(sec[j+24:])),
				}
				if at.LastOffset < seg.BaseOffset || at.LastOffset >= seg.NextOffset {
					return nil, bad("aborted transaction's marker %d outside the segment", at.LastOffset)
				}
				if at.ProducerID < 0 || at.FirstOffset < 0 || at.FirstOffset > at.LastOffset ||
					at.LastStableOffset < 0 || at.LastStableOffset > at.LastOffset+1 {
					return nil, bad("impossible aborted transaction %+v", at)
				}
				if k := len(c.AbortedTxns); k > 0 && at.LastOffset <= c.AbortedTxns[k-1].LastOffset {
					return nil, bad("aborted transactions not ascending")
				}
				c.AbortedTxns = append(c.AbortedTxns, at)
			}
		}
	}
	if len(body) != 0 {
		return nil, bad("%d trailing bytes", len(body))
	}
	return c, nil
}
