package localseg

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"

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
	// Transactions (a later issue) fill these; they are already in the
	// snapshot format so that adding them needs no new version.
	coordinatorEpoch      int32 // -1 until a transaction marker is written
	currentTxnFirstOffset int64 // -1 when no transaction is open
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

// producerState maps producer ids to their state. Guarded by the log's mu.
type producerState struct {
	producers map[int64]*producerEntry
}

func newProducerState() producerState {
	return producerState{producers: map[int64]*producerEntry{}}
}

// check validates an idempotent (or transactional) producer batch the way
// Kafka's leader does, without changing any state. It returns the original
// batch when b is a retry of one of the last five, or an error:
//
//   - no state for the producer (new, expired, or removed with its
//     segments): any sequence is accepted;
//   - an epoch older than the producer's: ErrInvalidProducerEpoch;
//   - a newer epoch: the batch must start at sequence 0;
//   - the same epoch: the batch must start right after the last one
//     (wrapping past MaxInt32 to 0), else ErrOutOfOrderSequence. If the
//     epoch has written no sequenced batch yet (only transaction markers),
//     it must start at 0.
func (s *producerState) check(b recordbatch.Batch) (*batchMeta, error) {
	pid, epoch := b.ProducerID(), b.ProducerEpoch()
	first, last := b.BaseSequence(), b.LastSequence()
	e := s.producers[pid]
	if e == nil {
		return nil, nil
	}
	if epoch < e.epoch {
		return nil, fmt.Errorf("%w: producer %d epoch %d is older than %d", ErrInvalidProducerEpoch, pid, epoch, e.epoch)
	}
	if epoch > e.epoch {
		if first != 0 && e.epoch != recordbatch.NoProducerEpoch {
			return nil, fmt.Errorf("%w: producer %d: new epoch %d must start at sequence 0, not %d", ErrOutOfOrderSequence, pid, epoch, first)
		}
		return nil, nil
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
	return nil, nil
}

// update records an appended batch (leader or follower, or replayed in
// recovery). Batches without a producer id are ignored.
func (s *producerState) update(b recordbatch.Batch) {
	pid := b.ProducerID()
	if pid < 0 {
		return
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
	if b.BaseSequence() == recordbatch.NoSequence {
		return // transaction markers carry no sequence
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
