package localseg

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"
	"sync/atomic"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// producerBatchesKept is how many recent batches per producer are kept for
// duplicate detection: Kafka producers have at most 5 requests in flight.
const producerBatchesKept = 5

// maxProducersPerLog bounds the producer ids a log remembers, so that
// clients inventing producer ids cannot grow its memory and snapshots
// without bound. Past it, the producers idle longest are dropped (a tenth
// at a time, so that the cost is amortized), as producer.id.expiration.ms
// would drop them later; a dropped producer's next batch is accepted as a
// new producer's.
const maxProducersPerLog = 10000

// batchMeta is what the log remembers of one idempotent batch.
type batchMeta struct {
	firstSeq, lastSeq       int32
	firstOffset, lastOffset int64
	timestamp               int64
}

// producerEntry is one producer id's state, as Kafka's
// ProducerStateEntry.
type producerEntry struct {
	epoch         int16
	batches       []batchMeta // oldest first, at most producerBatchesKept
	lastTimestamp int64       // for producer.id.expiration.ms
	// coordinatorEpoch is the epoch of the transaction coordinator that
	// wrote the producer's last marker, -1 before any: a marker from an
	// older coordinator is fenced (Kafka's checkCoordinatorEpoch).
	coordinatorEpoch int32
	// currentTxnFirstOffset is the first offset of the producer's open
	// transaction, -1 when none is open.
	currentTxnFirstOffset int64
}

func newProducerEntry(epoch int16) *producerEntry {
	return &producerEntry{epoch: epoch, coordinatorEpoch: -1, currentTxnFirstOffset: -1}
}

func (e *producerEntry) lastSeq() int32 {
	if len(e.batches) == 0 {
		return recordbatch.NoSequence
	}
	return e.batches[len(e.batches)-1].lastSeq
}

// findDuplicate returns the remembered batch with exactly this sequence
// range (a producer's retry), or nil.
func (e *producerEntry) findDuplicate(first, last int32) *batchMeta {
	for i := range e.batches {
		if e.batches[i].firstSeq == first && e.batches[i].lastSeq == last {
			return &e.batches[i]
		}
	}
	return nil
}

// producerState maps producer ids to their state, and keeps the first
// offsets of the open transactions in order (Kafka's ongoingTxns), so that
// the first unstable offset, read by every fetch, costs no scan of the
// producers. Guarded by the log's mu.
type producerState struct {
	producers map[int64]*producerEntry
	// open holds the currentTxnFirstOffset of every producer with an
	// open transaction, ascending. Transactions open at the log end, so
	// an insertion is an append; a marker removes one with a binary
	// search and a copy of the (few) later ones.
	open []int64
	// unstable, when set, is where the log publishes open[0] (-1 when
	// open is empty) for readers that take no lock (FirstUnstableOffset).
	// A state being rebuilt (recovery, truncation) publishes nothing
	// until the log installs it.
	unstable *atomic.Int64
}

func newProducerState() producerState {
	return producerState{producers: map[int64]*producerEntry{}}
}

// firstUnstable is the first offset of the oldest open transaction.
func (s *producerState) firstUnstable() (int64, bool) {
	if len(s.open) == 0 {
		return 0, false
	}
	return s.open[0], true
}

// publish stores the first unstable offset where the log's readers find
// it (-1 for none).
func (s *producerState) publish() {
	if s.unstable == nil {
		return
	}
	first, ok := s.firstUnstable()
	if !ok {
		first = -1
	}
	s.unstable.Store(first)
}

// openTxn records that a transaction opened at first.
func (s *producerState) openTxn(first int64) {
	i := sort.Search(len(s.open), func(i int) bool { return s.open[i] > first })
	s.open = append(s.open, 0)
	copy(s.open[i+1:], s.open[i:])
	s.open[i] = first
	if i == 0 {
		s.publish()
	}
}

// closeTxn records that the transaction opened at first is over.
func (s *producerState) closeTxn(first int64) {
	i := sort.Search(len(s.open), func(i int) bool { return s.open[i] >= first })
	if i == len(s.open) || s.open[i] != first {
		return
	}
	s.open = append(s.open[:i], s.open[i+1:]...)
	if i == 0 {
		s.publish()
	}
}

// indexOpenTxns rebuilds open from the producers (a decoded snapshot).
func (s *producerState) indexOpenTxns() {
	s.open = s.open[:0]
	for _, e := range s.producers {
		if e.currentTxnFirstOffset >= 0 {
			s.open = append(s.open, e.currentTxnFirstOffset)
		}
	}
	sort.Slice(s.open, func(i, j int) bool { return s.open[i] < s.open[j] })
}

// check validates an idempotent (or transactional) producer batch the way
// Kafka's leader does (ProducerAppendInfo), without changing any state. It
// returns the original batch when b is a retry of one of the last five, or
// an error:
//
//   - no state for the producer (new, expired, or removed with its
//     segments): any sequence is accepted;
//   - an epoch older than the producer's: ErrInvalidProducerEpoch;
//   - a newer epoch: the batch must start at sequence 0;
//   - the same epoch: the batch must start right after the last one
//     (wrapping past MaxInt32 to 0), else ErrOutOfOrderSequence. If the
//     epoch has written no sequenced batch yet (only transaction markers),
//     it must start at 0;
//   - a batch outside a transaction while the producer has one open:
//     ErrInvalidTxnState.
//
// A transaction marker (a control batch) is checked by checkMarker.
func (s *producerState) check(b recordbatch.Batch) (*batchMeta, error) {
	if b.Control() {
		return nil, s.checkMarker(b)
	}
	pid, epoch := b.ProducerID(), b.ProducerEpoch()
	first, last := b.BaseSequence(), b.LastSequence()
	e := s.producers[pid]
	if e == nil {
		return nil, nil
	}
	if epoch < e.epoch {
		return nil, fmt.Errorf("%w: producer %d epoch %d is older than %d", ErrInvalidProducerEpoch, pid, epoch, e.epoch)
	}
	if first == recordbatch.NoSequence {
		// The group coordinator's transactional offset commits carry
		// the producer's id and epoch but no sequence: as Kafka's
		// coordinator-origin appends, they skip the sequence checks.
		return nil, e.checkTxnState(pid, b)
	}
	if epoch > e.epoch {
		if first != 0 && e.epoch != recordbatch.NoProducerEpoch {
			return nil, fmt.Errorf("%w: producer %d: new epoch %d must start at sequence 0, not %d", ErrOutOfOrderSequence, pid, epoch, first)
		}
		return nil, e.checkTxnState(pid, b)
	}
	if dup := e.findDuplicate(first, last); dup != nil {
		return dup, nil
	}
	want := int32(0)
	if len(e.batches) > 0 {
		want = recordbatch.IncrementSequence(e.lastSeq(), 1)
	}
	if first != want {
		return nil, fmt.Errorf("%w: producer %d epoch %d: expected sequence %d, got %d", ErrOutOfOrderSequence, pid, epoch, want, first)
	}
	return nil, e.checkTxnState(pid, b)
}

// checkTxnState refuses a batch outside a transaction from a producer
// whose transaction is open, as Kafka's appendDataBatch does: its records
// would be neither committed nor aborted by the marker to come.
func (e *producerEntry) checkTxnState(pid int64, b recordbatch.Batch) error {
	if !b.Transactional() && e.currentTxnFirstOffset >= 0 {
		return fmt.Errorf("%w: producer %d wrote outside the transaction it opened at %d", ErrInvalidTxnState, pid, e.currentTxnFirstOffset)
	}
	return nil
}

// checkMarker validates a transaction marker the way Kafka's
// appendEndTxnMarker does: a marker of an older producer epoch is refused
// (ErrInvalidProducerEpoch), and so is one from a coordinator of an older
// epoch than the producer's last marker (ErrTransactionCoordinatorFenced):
// a coordinator that lost its transaction log's leadership must not end a
// transaction its successor decides. A marker whose record does not read
// is corrupt. A producer the log does not know is accepted.
func (s *producerState) checkMarker(b recordbatch.Batch) error {
	m, err := readMarker(b)
	if err != nil {
		return err
	}
	if m.empty {
		return fmt.Errorf("%w: a transaction marker without its record", recordbatch.ErrCorrupt)
	}
	pid, epoch := b.ProducerID(), b.ProducerEpoch()
	e := s.producers[pid]
	if e == nil {
		return nil
	}
	if epoch < e.epoch {
		return fmt.Errorf("%w: marker of producer %d epoch %d, older than %d", ErrInvalidProducerEpoch, pid, epoch, e.epoch)
	}
	if m.coordinatorEpoch < e.coordinatorEpoch {
		return fmt.Errorf("%w: marker of producer %d from coordinator epoch %d, the last was %d", ErrTransactionCoordinatorFenced, pid, m.coordinatorEpoch, e.coordinatorEpoch)
	}
	return nil
}

// update records an appended batch (leader or follower, or replayed in
// recovery), as Kafka's ProducerStateManager does. Batches without a
// producer id are ignored. A transactional batch opens its producer's
// transaction if none is open; a marker closes it and sets the producer's
// coordinator epoch. When an ABORT marker closes a transaction, update
// returns its entry for the transaction index (ok), whose last stable
// offset is the first offset of the oldest transaction still open, or the
// offset after the marker when none is (Kafka's lastStableOffset of a
// CompletedTxn). A marker whose record does not read changes nothing: the
// error says why (the leader's check refuses such a marker; a follower or
// a replay logs it).
func (s *producerState) update(b recordbatch.Batch) (abort AbortedTxn, ok bool, err error) {
	pid := b.ProducerID()
	if pid < 0 {
		return AbortedTxn{}, false, nil
	}
	var m marker
	if b.Control() {
		if m, err = readMarker(b); err != nil {
			return AbortedTxn{}, false, err
		}
	}
	e := s.producers[pid]
	if e == nil {
		if len(s.producers) >= maxProducersPerLog {
			s.evictIdlest(len(s.producers) - maxProducersPerLog*9/10)
		}
		e = newProducerEntry(b.ProducerEpoch())
		s.producers[pid] = e
	}
	if b.ProducerEpoch() != e.epoch {
		e.epoch = b.ProducerEpoch()
		e.batches = e.batches[:0]
	}
	if ts := b.MaxTimestamp(); ts > e.lastTimestamp {
		e.lastTimestamp = ts
	}
	if b.Control() {
		if m.empty {
			// Every record of the marker was compacted away: Kafka
			// keeps only the epoch of such a batch.
			return AbortedTxn{}, false, nil
		}
		return s.endTxn(pid, e, b.BaseOffset(), m)
	}
	if b.Transactional() && e.currentTxnFirstOffset < 0 {
		e.currentTxnFirstOffset = b.BaseOffset()
		s.openTxn(e.currentTxnFirstOffset)
	}
	if b.BaseSequence() == recordbatch.NoSequence {
		return AbortedTxn{}, false, nil
	}
	if len(e.batches) == producerBatchesKept {
		copy(e.batches, e.batches[1:])
		e.batches = e.batches[:producerBatchesKept-1]
	}
	if e.batches == nil {
		e.batches = make([]batchMeta, 0, producerBatchesKept)
	}
	e.batches = append(e.batches, batchMeta{
		firstSeq: b.BaseSequence(), lastSeq: b.LastSequence(),
		firstOffset: b.BaseOffset(), lastOffset: b.LastOffset(),
		timestamp: b.MaxTimestamp(),
	})
	return AbortedTxn{}, false, nil
}

// endTxn applies the marker m at offset to producer pid's state. A marker
// that closes no transaction (a retried marker, a transaction with no
// batch in this partition) only sets the coordinator epoch, as Kafka's.
func (s *producerState) endTxn(pid int64, e *producerEntry, offset int64, m marker) (AbortedTxn, bool, error) {
	e.coordinatorEpoch = m.coordinatorEpoch
	first := e.currentTxnFirstOffset
	if first < 0 {
		return AbortedTxn{}, false, nil
	}
	e.currentTxnFirstOffset = -1
	s.closeTxn(first)
	if m.commit {
		return AbortedTxn{}, false, nil
	}
	lso, open := s.firstUnstable()
	if !open {
		lso = offset + 1
	}
	return AbortedTxn{ProducerID: pid, FirstOffset: first, LastOffset: offset, LastStableOffset: lso}, true, nil
}

// evictIdlest drops the n producers idle longest, never one with an open
// transaction.
func (s *producerState) evictIdlest(n int) {
	type idle struct {
		pid int64
		ts  int64
	}
	cands := make([]idle, 0, len(s.producers))
	for pid, e := range s.producers {
		if e.currentTxnFirstOffset < 0 {
			cands = append(cands, idle{pid, e.lastTimestamp})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ts < cands[j].ts })
	for i := 0; i < n && i < len(cands); i++ {
		delete(s.producers, cands[i].pid)
	}
}

// expire drops producers idle since before cutoff (a timestamp in ms), as
// Kafka does for producer.id.expiration.ms, except those with an open
// transaction. Producers are not dropped when the log start passes their
// batches (KIP-360): only time expires them.
func (s *producerState) expire(cutoff int64) {
	for pid, e := range s.producers {
		if e.currentTxnFirstOffset < 0 && e.lastTimestamp <= cutoff {
			delete(s.producers, pid)
		}
	}
}

// Producer snapshot file, "<20-digit offset>.snapshot": the state after
// every batch below that offset (see doc.go).
//
//	magic "SHPS" | version u16 = 1 | crc32c u32 of everything after it |
//	count u32 | count × entry
//	entry: producer id i64 | epoch i16 | last timestamp i64 |
//	       coordinator epoch i32 | current txn first offset i64 |
//	       batches u8 (<= 5) | batches × (first seq i32 | last seq i32 |
//	       first offset i64 | last offset i64 | max timestamp i64)
//
// Big endian, entries in ascending producer id. A snapshot that does not
// check out is ignored (the state is rebuilt from an older one or the log).
// The coordinator epoch and the open transaction's first offset make an
// open transaction outlive a restart: the last stable offset stays held
// at it until its marker.
const (
	snapshotMagic   = "SHPS"
	snapshotVersion = 1
	snapshotHeader  = 4 + 2 + 4
	snapshotEntry   = 8 + 2 + 8 + 4 + 8 + 1
	snapshotBatch   = 4 + 4 + 8 + 8 + 8
)

func (s *producerState) encode() []byte {
	pids := make([]int64, 0, len(s.producers))
	size := snapshotHeader + 4
	for pid, e := range s.producers {
		pids = append(pids, pid)
		size += snapshotEntry + len(e.batches)*snapshotBatch
	}
	sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
	b := make([]byte, 0, size)
	b = append(b, snapshotMagic...)
	b = binary.BigEndian.AppendUint16(b, snapshotVersion)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(pids)))
	for _, pid := range pids {
		e := s.producers[pid]
		b = binary.BigEndian.AppendUint64(b, uint64(pid))
		b = binary.BigEndian.AppendUint16(b, uint16(e.epoch))
		b = binary.BigEndian.AppendUint64(b, uint64(e.lastTimestamp))
		b = binary.BigEndian.AppendUint32(b, uint32(e.coordinatorEpoch))
		b = binary.BigEndian.AppendUint64(b, uint64(e.currentTxnFirstOffset))
		b = append(b, byte(len(e.batches)))
		for _, m := range e.batches {
			b = binary.BigEndian.AppendUint32(b, uint32(m.firstSeq))
			b = binary.BigEndian.AppendUint32(b, uint32(m.lastSeq))
			b = binary.BigEndian.AppendUint64(b, uint64(m.firstOffset))
			b = binary.BigEndian.AppendUint64(b, uint64(m.lastOffset))
			b = binary.BigEndian.AppendUint64(b, uint64(m.timestamp))
		}
	}
	binary.BigEndian.PutUint32(b[6:], crc32.Checksum(b[snapshotHeader:], castagnoli))
	return b
}

// decodeProducerState checks and decodes a snapshot. It allocates no more
// than the input's size justifies.
func decodeProducerState(data []byte) (producerState, error) {
	bad := func(why string) (producerState, error) {
		return producerState{}, fmt.Errorf("%w: producer snapshot: %s", errBadCheckpoint, why)
	}
	if len(data) < snapshotHeader+4 || string(data[:4]) != snapshotMagic {
		return bad("bad header")
	}
	if v := binary.BigEndian.Uint16(data[4:]); v != snapshotVersion {
		return bad(fmt.Sprintf("version %d", v))
	}
	if binary.BigEndian.Uint32(data[6:]) != crc32.Checksum(data[snapshotHeader:], castagnoli) {
		return bad("checksum mismatch")
	}
	d := data[snapshotHeader:]
	n := binary.BigEndian.Uint32(d)
	d = d[4:]
	if uint64(n) > uint64(len(d))/snapshotEntry {
		return bad("count larger than the file")
	}
	s := producerState{producers: make(map[int64]*producerEntry, n)}
	prev := int64(-1)
	for i := uint32(0); i < n; i++ {
		if len(d) < snapshotEntry {
			return bad("truncated entry")
		}
		pid := int64(binary.BigEndian.Uint64(d))
		if pid <= prev {
			return bad("producer ids out of order")
		}
		prev = pid
		e := &producerEntry{
			epoch:                 int16(binary.BigEndian.Uint16(d[8:])),
			lastTimestamp:         int64(binary.BigEndian.Uint64(d[10:])),
			coordinatorEpoch:      int32(binary.BigEndian.Uint32(d[18:])),
			currentTxnFirstOffset: int64(binary.BigEndian.Uint64(d[22:])),
		}
		if e.currentTxnFirstOffset < -1 {
			return bad("negative transaction offset")
		}
		nb := int(d[30])
		d = d[snapshotEntry:]
		if nb > producerBatchesKept || len(d) < nb*snapshotBatch {
			return bad("bad batch count")
		}
		if nb > 0 {
			e.batches = make([]batchMeta, 0, producerBatchesKept)
		}
		for j := 0; j < nb; j++ {
			e.batches = append(e.batches, batchMeta{
				firstSeq:    int32(binary.BigEndian.Uint32(d)),
				lastSeq:     int32(binary.BigEndian.Uint32(d[4:])),
				firstOffset: int64(binary.BigEndian.Uint64(d[8:])),
				lastOffset:  int64(binary.BigEndian.Uint64(d[16:])),
				timestamp:   int64(binary.BigEndian.Uint64(d[24:])),
			})
			d = d[snapshotBatch:]
		}
		s.producers[pid] = e
	}
	if len(d) != 0 {
		return bad("trailing bytes")
	}
	s.indexOpenTxns()
	return s, nil
}

// Producer is what a log remembers of one producer id: the state it checks
// that producer's sequences against and keeps in its snapshots.
type Producer struct {
	ID    int64
	Epoch int16
	// LastSequence is the last sequence of its epoch (-1 when the epoch
	// wrote no sequenced batch).
	LastSequence int32
	// LastTimestamp is the largest max timestamp of its batches.
	LastTimestamp int64
	// CoordinatorEpoch and CurrentTxnStartOffset are -1 without
	// transactions.
	CoordinatorEpoch      int32
	CurrentTxnStartOffset int64
}

// Producers returns the producers the log remembers, by id (Kafka's
// DescribeProducers answer).
func (l *Log) Producers() []Producer {
	l.mu.Lock()
	out := make([]Producer, 0, len(l.mu.producers.producers))
	for pid, e := range l.mu.producers.producers {
		out = append(out, Producer{ID: pid, Epoch: e.epoch, LastSequence: e.lastSeq(), LastTimestamp: e.lastTimestamp,
			CoordinatorEpoch: e.coordinatorEpoch, CurrentTxnStartOffset: e.currentTxnFirstOffset})
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
