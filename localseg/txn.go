package localseg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Transactions, the partition log's part (Kafka's ProducerStateManager and
// TransactionIndex): the producer state tracks each producer's open
// transaction (producer.go), the log appends the markers that end them,
// serves the first unstable offset that bounds read_committed fetches, and
// keeps, per segment, the aborted transactions whose ABORT marker lies in
// it (the .txnindex file, see the package doc), which a read_committed
// fetch returns with its records so that the consumer drops theirs.

// Marker is a transaction marker (Kafka's EndTransactionMarker) that the
// transaction coordinator writes to each partition of a transaction when
// it ends.
type Marker struct {
	ProducerID    int64
	ProducerEpoch int16
	// Commit is true for a COMMIT marker, false for an ABORT.
	Commit bool
	// CoordinatorEpoch is the epoch of the coordinator writing it (the
	// leader epoch of its transaction-log partition).
	CoordinatorEpoch int32
	// Timestamp is the marker batch's timestamp (ms).
	Timestamp int64
}

// AbortedTxn is an aborted transaction, one entry of a segment's
// transaction index (Kafka's AbortedTxn).
type AbortedTxn struct {
	ProducerID int64
	// FirstOffset is the offset of the transaction's first batch in this
	// partition; LastOffset the offset of its ABORT marker.
	FirstOffset, LastOffset int64
	// LastStableOffset is the log's first unstable offset right after the
	// transaction ended: the first offset of the oldest transaction
	// still open then, or LastOffset+1 when none was. Fetches stop
	// looking for aborted transactions at an entry whose last stable
	// offset is past their upper bound: no later one can overlap it.
	LastStableOffset int64
}

// Control record types (Kafka's ControlRecordType) and the versions of the
// marker record's key and value that Shale writes.
const (
	controlAbort        = 0
	controlCommit       = 1
	controlKeyVersion   = 0
	markerValueVersion  = 0
	controlKeySize      = 4 // version i16 | type i16
	markerValueSize     = 6 // version i16 | coordinator epoch i32
	maxControlBatchSize = 1 << 20
)

// errFirstRecordRead stops readMarker's walk of the records after the
// first, the only one a marker's reader looks at.
var errFirstRecordRead = errors.New("localseg: first record read")

// marker is what a control batch says.
type marker struct {
	commit           bool
	coordinatorEpoch int32
	// empty: the batch holds no record (compaction removed it).
	empty bool
}

// readMarker reads the transaction marker of a control batch (its first
// record, as Kafka reads it): key version i16 (>= 0) | type i16 (0 ABORT,
// 1 COMMIT), value version i16 (>= 0) | coordinator epoch i32. A later
// version is read as version 0, as Kafka's EndTransactionMarker does. Any
// other type, or a record that does not read, is ErrCorrupt.
func readMarker(b recordbatch.Batch) (marker, error) {
	var m marker
	found := false
	err := recordbatch.Records(context.Background(), b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
		found = true
		if len(r.Key) < controlKeySize || int16(binary.BigEndian.Uint16(r.Key)) < 0 {
			return fmt.Errorf("%w: a control record key of %d bytes, or of a negative version", recordbatch.ErrCorrupt, len(r.Key))
		}
		switch typ := int16(binary.BigEndian.Uint16(r.Key[2:])); typ {
		case controlAbort, controlCommit:
			m.commit = typ == controlCommit
		default:
			return fmt.Errorf("%w: control record type %d is not a transaction marker", recordbatch.ErrCorrupt, typ)
		}
		if len(r.Value) < markerValueSize || int16(binary.BigEndian.Uint16(r.Value)) < 0 {
			return fmt.Errorf("%w: a transaction marker value of %d bytes, or of a negative version", recordbatch.ErrCorrupt, len(r.Value))
		}
		m.coordinatorEpoch = int32(binary.BigEndian.Uint32(r.Value[2:]))
		return errFirstRecordRead
	})
	switch {
	case errors.Is(err, errFirstRecordRead):
		return m, nil
	case err != nil:
		return marker{}, fmt.Errorf("%w: reading a transaction marker: %w", recordbatch.ErrCorrupt, err)
	case !found:
		m.empty = true
	}
	return m, nil
}

// buildMarker builds the control batch of m, as Kafka's
// MemoryRecords.withEndTransactionMarker: transactional and control
// attributes, no sequence, one record whose key says the type and whose
// value the coordinator epoch.
func buildMarker(m Marker) (Batch, error) {
	key := make([]byte, controlKeySize)
	binary.BigEndian.PutUint16(key, controlKeyVersion)
	typ := uint16(controlAbort)
	if m.Commit {
		typ = controlCommit
	}
	binary.BigEndian.PutUint16(key[2:], typ)
	value := make([]byte, markerValueSize)
	binary.BigEndian.PutUint16(value, markerValueVersion)
	binary.BigEndian.PutUint32(value[2:], uint32(m.CoordinatorEpoch))
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{
		Transactional: true, Control: true,
		ProducerID: m.ProducerID, ProducerEpoch: m.ProducerEpoch, BaseSequence: recordbatch.NoSequence,
		BaseTimestamp: m.Timestamp,
	}, []recordbatch.Record{{Key: key, Value: value}})
	return Batch(b), err
}

// AppendMarker appends a transaction marker as leader (Kafka's
// appendAsLeader with origin COORDINATOR), through the same path as
// AppendAsLeader: offsets from the log end, leaderEpoch stamped and
// recorded. It is refused with ErrInvalidProducerEpoch when the producer
// has written with a newer epoch, and with ErrTransactionCoordinatorFenced
// when a marker from a coordinator of a newer epoch was written for it. A
// producer the log does not know is accepted. The marker closes the
// producer's open transaction, if any (moving the first unstable offset);
// an ABORT that closes one adds it to the aborted transactions.
func (l *Log) AppendMarker(m Marker, leaderEpoch int32) (AppendResult, error) {
	if m.ProducerID < 0 {
		return AppendResult{}, fmt.Errorf("%w: transaction marker without a producer id", recordbatch.ErrInvalidRecord)
	}
	b, err := buildMarker(m)
	if err != nil {
		return AppendResult{}, fmt.Errorf("localseg: building a transaction marker: %w", err)
	}
	return l.appendLeader(b, leaderEpoch)
}

// FirstUnstableOffset is the first offset of the oldest open transaction
// (Kafka's firstUnstableOffset), false when none is open. Read_committed
// consumers read below the last stable offset, the smaller of it and the
// high watermark. It is never below the log start, as Kafka's: a
// transaction left open past retention holds the last stable offset at the
// log start, not below it. It takes no lock.
func (l *Log) FirstUnstableOffset() (int64, bool) {
	first := l.unstable.Load()
	if first < 0 {
		return 0, false
	}
	return max(first, l.logStart.Load()), true
}

// AbortedTxns returns the aborted transactions that overlap [from, to):
// those whose ABORT marker is at or past from and whose first offset is
// below to, in the order of their markers, as Kafka's fetch collects them
// for a read_committed consumer (collectAbortedTransactions): the consumer
// drops the records of each from its first offset up to its marker. It
// starts at the segment holding from and stops at the first entry whose
// last stable offset reaches to. It takes no lock; an ABORT whose marker is
// being written may already be listed.
func (l *Log) AbortedTxns(from, to int64) []AbortedTxn {
	segs := l.segments()
	i := sort.Search(len(segs), func(i int) bool { return segs[i].base > from }) - 1
	var out []AbortedTxn
	for i = max(i, 0); i < len(segs); i++ {
		for _, e := range segs[i].abortedTxns() {
			if e.LastOffset >= from && e.FirstOffset < to {
				out = append(out, e)
			}
			if e.LastStableOffset >= to {
				return out
			}
		}
	}
	return out
}

// setProducersLocked installs st as the log's producer state and publishes
// its first unstable offset. Requires mu.
func (l *Log) setProducersLocked(st producerState) {
	st.unstable = &l.unstable
	l.mu.producers = st
	l.mu.producers.publish()
}

// updateProducersLocked updates the producer state with the batches of run,
// bound for segment s, and adds the aborted transactions their markers end
// to s's transaction index. A marker that does not read changes nothing
// and is logged (follower appends: the leader accepted it). Requires mu.
func (l *Log) updateProducersLocked(s *segment, run []byte) {
	for len(run) > 0 {
		b, rest, err := recordbatch.Next(run)
		if err != nil {
			return
		}
		l.updateProducerLocked(s, b)
		run = rest
	}
}

// updateProducerLocked updates the producer state with b, bound for s, and
// adds the aborted transaction its marker ends to s's transaction index.
//
// A marker's move of the first unstable offset is published only once
// the transaction's entry is listed: a read_committed fetch reads the last
// stable offset, then the aborted transactions below it, taking no lock,
// and a fetch between the two stores would return an aborted
// transaction's records with no entry to drop them by, which the consumer
// would take for committed ones. Requires mu.
func (l *Log) updateProducerLocked(s *segment, b recordbatch.Batch) {
	if !b.Control() {
		// A transactional batch can only lower the first unstable
		// offset (opening a transaction), to an offset not yet
		// readable.
		l.updateProducerEntryLocked(s, b)
		return
	}
	st := &l.mu.producers
	unstable := st.unstable
	st.unstable = nil // publish nothing until the entry is listed
	ok := l.updateProducerEntryLocked(s, b)
	st.unstable = unstable
	if ok {
		st.publish()
	}
	// Not ok, the log went offline writing the entry: the first
	// unstable offset stays held below the aborted transaction.
}

// updateProducerEntryLocked is updateProducerLocked's work: the producer
// state updated with b, and the entry of the aborted transaction its
// marker ends added to s's transaction index. It returns false when that
// entry could not be written (the log goes offline). Requires mu.
func (l *Log) updateProducerEntryLocked(s *segment, b recordbatch.Batch) bool {
	abort, ok, err := l.mu.producers.update(b)
	if err != nil {
		l.log.Warn("ignoring a transaction marker that does not read", "dir", l.dir, "offset", b.BaseOffset(), "err", err)
		return true
	}
	if ok {
		if err := l.addAbortedLocked(s, abort); err != nil {
			// The batch's write is failed by the log going offline
			// (a reserved one when it is published); a reopen
			// rebuilds the index from the batches that made it.
			l.goOffline(err)
			return false
		}
	}
	return true
}

// Transaction index file, "<20-digit base>.txnindex": Kafka's format.
//
//	entry  version i16 = 0 | producer id i64 | first offset i64 |
//	       last offset i64 | last stable offset i64        (34 bytes)
//
// Big endian, no header, no checksum (Kafka's readers read these files:
// tiered storage ships them). Entries ascend by last offset.
const (
	txnIndexExt       = ".txnindex"
	txnIndexEntrySize = 34
	txnIndexVersion   = 0
)

func appendTxnEntry(dst []byte, e AbortedTxn) []byte {
	dst = binary.BigEndian.AppendUint16(dst, txnIndexVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.ProducerID))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.FirstOffset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.LastOffset))
	return binary.BigEndian.AppendUint64(dst, uint64(e.LastStableOffset))
}

func encodeTxnIndex(es []AbortedTxn) []byte {
	b := make([]byte, 0, len(es)*txnIndexEntrySize)
	for _, e := range es {
		b = appendTxnEntry(b, e)
	}
	return b
}

// EncodeTxnIndex returns the bytes of a transaction index holding es (in
// marker order): Kafka's .txnindex, for tiered storage to ship with a
// segment (SealedSegment.AbortedTxns).
func EncodeTxnIndex(es []AbortedTxn) []byte { return encodeTxnIndex(es) }

// DecodeTxnIndex reads the bytes of a transaction index (EncodeTxnIndex's,
// or Kafka's), refusing any that are not whole entries of version 0 in
// marker order.
func DecodeTxnIndex(data []byte) ([]AbortedTxn, error) { return decodeTxnIndex(data) }

// decodeTxnIndex checks and decodes a transaction index: whole entries of
// version 0, each a transaction that cannot be wrong on its face (a
// producer id, offsets not negative, the first at or below the marker, the
// last stable offset at most past the marker), markers strictly ascending.
// It allocates no more than the input's size justifies.
func decodeTxnIndex(data []byte) ([]AbortedTxn, error) {
	if len(data)%txnIndexEntrySize != 0 {
		return nil, fmt.Errorf("%w: transaction index of %d bytes, not whole entries", errBadCheckpoint, len(data))
	}
	es := make([]AbortedTxn, 0, len(data)/txnIndexEntrySize)
	for d := data; len(d) > 0; d = d[txnIndexEntrySize:] {
		if v := int16(binary.BigEndian.Uint16(d)); v != txnIndexVersion {
			return nil, fmt.Errorf("%w: transaction index entry %d of version %d", errBadCheckpoint, len(es), v)
		}
		e := AbortedTxn{
			ProducerID:       int64(binary.BigEndian.Uint64(d[2:])),
			FirstOffset:      int64(binary.BigEndian.Uint64(d[10:])),
			LastOffset:       int64(binary.BigEndian.Uint64(d[18:])),
			LastStableOffset: int64(binary.BigEndian.Uint64(d[26:])),
		}
		if e.ProducerID < 0 || e.FirstOffset < 0 || e.FirstOffset > e.LastOffset || e.LastStableOffset < 0 ||
			e.LastOffset == 1<<63-1 || e.LastStableOffset > e.LastOffset+1 ||
			(len(es) > 0 && e.LastOffset <= es[len(es)-1].LastOffset) {
			return nil, fmt.Errorf("%w: transaction index entry %d %+v out of order or impossible", errBadCheckpoint, len(es), e)
		}
		es = append(es, e)
	}
	return es, nil
}

// maxTxnIndexSize bounds a segment's transaction index by the segment: at
// most one entry per batch.
func maxTxnIndexSize(segSize int64) int64 {
	return (segSize/recordbatch.HeaderSize + 1) * txnIndexEntrySize
}

// readTxnIndex reads s's transaction index (s's size and next offset
// known) and checks that its markers lie in s.
func (l *Log) readTxnIndex(s *segment) ([]AbortedTxn, error) {
	data, err := readFile(l.fs, s.path(txnIndexExt), maxTxnIndexSize(s.size.Load()))
	if err != nil {
		return nil, err
	}
	es, err := decodeTxnIndex(data)
	if err != nil {
		return nil, err
	}
	if n := len(es); n > 0 && (es[0].LastOffset < s.base || es[n-1].LastOffset >= s.next.Load()) {
		return nil, fmt.Errorf("%w: transaction index markers [%d, %d] outside the segment [%d, %d)", errBadCheckpoint,
			es[0].LastOffset, es[n-1].LastOffset, s.base, s.next.Load())
	}
	return es, nil
}

// abortedTxns returns the segment's aborted transactions, in marker order.
func (s *segment) abortedTxns() []AbortedTxn {
	if p := s.txns.Load(); p != nil {
		return p.entries()
	}
	return nil
}

// addAbortedLocked appends e to s's transaction index, on disk then in
// memory. It is written as the marker's batch is, into the page cache; the
// fsyncs of s (syncSegment: the group commit, the sealed segment's flush,
// Flush, Close) make it durable before the recovery point passes the
// marker. Requires mu.
func (l *Log) addAbortedLocked(s *segment, e AbortedTxn) error {
	cur := s.txns.Load()
	n := cur.len()
	flag := os.O_CREATE | os.O_WRONLY
	if n == 0 {
		// The file is created, or stale bytes a crash left are cut.
		flag |= os.O_TRUNC
		l.dirGen.Add(1)
	}
	f, err := l.fs.OpenFile(s.path(txnIndexExt), flag, 0o644)
	if err != nil {
		return fmt.Errorf("localseg: writing %s: %w", s.path(txnIndexExt), err)
	}
	var buf [txnIndexEntrySize]byte
	err = writeFull(f, appendTxnEntry(buf[:0], e), n*txnIndexEntrySize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localseg: writing %s: %w", s.path(txnIndexExt), err)
	}
	s.txnDirty.Store(true)
	s.txns.Store(cur.add(e))
	return nil
}

// setTxnsLocked replaces s's aborted transactions with es (a rebuild or a
// truncation), on disk first and durably; nothing is written when es is
// what s holds. A segment without entries has no file. Requires mu (or the
// log not yet published).
func (l *Log) setTxnsLocked(s *segment, es []AbortedTxn) error {
	if slices.Equal(es, s.abortedTxns()) {
		return nil
	}
	path := s.path(txnIndexExt)
	if len(es) == 0 {
		if err := l.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("localseg: removing %s: %w", path, err)
		}
		l.dirGen.Add(1) // durable with the next fsync of the directory
	} else if err := writeFileAtomic(l.fs, path, encodeTxnIndex(es)); err != nil {
		return fmt.Errorf("localseg: writing %s: %w", path, err)
	}
	s.txns.Store(newLiveEntries(slices.Clip(es)))
	return nil
}

// syncTxnIndex fsyncs s's transaction index when entries were appended
// since its last fsync. Requires s.syncMu, so that a second sync of s
// returns only once the first one's fsync is done.
func (l *Log) syncTxnIndex(s *segment) error {
	if !s.txnDirty.Swap(false) {
		return nil
	}
	if err := syncPath(l.fs, s.path(txnIndexExt)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.txnDirty.Store(true)
		return fmt.Errorf("its transaction index: %w", err)
	}
	return nil
}
