package txn

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// be is a tiny big-endian builder for expected bytes.
type be []byte

func (b be) i8(v int8) be    { return append(b, byte(v)) }
func (b be) i16(v int16) be  { return binary.BigEndian.AppendUint16(b, uint16(v)) }
func (b be) i32(v int32) be  { return binary.BigEndian.AppendUint32(b, uint32(v)) }
func (b be) i64(v int64) be  { return binary.BigEndian.AppendUint64(b, uint64(v)) }
func (b be) str(s string) be { return append(b.i16(int16(len(s))), s...) }
func (b be) uv(v uint64) be  { return binary.AppendUvarint(b, v) }
func (b be) cstr(s string) be {
	return append(b.uv(uint64(len(s))+1), s...)
}

// TestRecordFormatIsKafkas pins the bytes: TransactionLogKey v0 and
// TransactionLogValue v0 exactly as Kafka lays them out.
func TestRecordFormatIsKafkas(t *testing.T) {
	if got, want := appendKey(nil, "tx"), be(nil).i16(0).str("tx"); !bytes.Equal(got, want) {
		t.Fatalf("key %x, want %x", got, want)
	}
	m := txnMeta{producerID: 1000, producerEpoch: 3, timeoutMs: 60000, state: statePrepareCommit,
		partitions: []TopicPartition{{"a", 0}, {"a", 1}, {"b", 2}}, startMs: 10, updateMs: 20}
	want := be(nil).i16(0).i64(1000).i16(3).i32(60000).i8(2).
		i32(2).str("a").i32(2).i32(0).i32(1).str("b").i32(1).i32(2).
		i64(20).i64(10)
	if got := appendValue(nil, &m); !bytes.Equal(got, want) {
		t.Fatalf("value\n got %x\nwant %x", got, []byte(want))
	}
	// Empty: null partitions. Complete*: an empty array.
	empty := txnMeta{producerID: 7, producerEpoch: 0, timeoutMs: 1, state: stateEmpty, startMs: -1, updateMs: 5}
	want = be(nil).i16(0).i64(7).i16(0).i32(1).i8(0).i32(-1).i64(5).i64(-1)
	if got := appendValue(nil, &empty); !bytes.Equal(got, want) {
		t.Fatalf("empty value\n got %x\nwant %x", got, []byte(want))
	}
	done := txnMeta{producerID: 7, producerEpoch: 0, timeoutMs: 1, state: stateCompleteAbort, partitions: []TopicPartition{}, startMs: 4, updateMs: 5}
	want = be(nil).i16(0).i64(7).i16(0).i32(1).i8(5).i32(0).i64(5).i64(4)
	if got := appendValue(nil, &done); !bytes.Equal(got, want) {
		t.Fatalf("complete value\n got %x\nwant %x", got, []byte(want))
	}
	for _, x := range []txnMeta{m, empty, done} {
		d, err := decodeRecord(appendKey(nil, "tx"), appendValue(nil, &x))
		if err != nil || d.id != "tx" || d.skip || d.tombstone {
			t.Fatalf("decode: %+v %v", d, err)
		}
		if len(x.partitions) == 0 {
			x.partitions = nil
		}
		if !reflect.DeepEqual(d.meta, x) {
			t.Fatalf("round trip %+v, want %+v", d.meta, x)
		}
	}
}

func TestDecodeRecordVersionsAndErrors(t *testing.T) {
	key := appendKey(nil, "tx")
	// Value v1 (flexible, KIP-915): compact strings and arrays, tagged
	// fields in each struct and at the end (KIP-890's, and unknown ones).
	v1 := be(nil).i16(1).i64(42).i16(2).i32(900).i8(1).
		uv(2).cstr("t").uv(3).i32(4).i32(3).uv(1).uv(7).uv(1).i8(0). // one topic with a tag
		i64(99).i64(98).
		uv(2).uv(0).uv(8).i64(41).uv(30).uv(2).i16(5) // PreviousProducerId and tag 30
	d, err := decodeRecord(key, v1)
	want := txnMeta{producerID: 42, producerEpoch: 2, timeoutMs: 900, state: stateOngoing, partitions: []TopicPartition{{"t", 3}, {"t", 4}}, startMs: 98, updateMs: 99}
	if err != nil || !reflect.DeepEqual(d.meta, want) {
		t.Fatalf("v1: %+v %v", d.meta, err)
	}
	// A tombstone, a stored Dead state.
	if d, err := decodeRecord(key, nil); err != nil || !d.tombstone || d.id != "tx" {
		t.Fatalf("tombstone %+v %v", d, err)
	}
	dead := be(nil).i16(0).i64(7).i16(0).i32(1).i8(6).i32(-1).i64(5).i64(-1)
	if d, err := decodeRecord(key, dead); err != nil || !d.tombstone {
		t.Fatalf("dead %+v %v", d, err)
	}
	// PrepareEpochFence (never written by Kafka) reads as Ongoing.
	fence := be(nil).i16(0).i64(7).i16(1).i32(1).i8(7).i32(0).i64(5).i64(3)
	if d, err := decodeRecord(key, fence); err != nil || d.meta.state != stateOngoing {
		t.Fatalf("fence %+v %v", d, err)
	}
	// Trailing bytes are ignored, as Kafka's generated readers ignore them.
	if _, err := decodeRecord(key, append(be(nil).i16(0).i64(7).i16(0).i32(1).i8(0).i32(-1).i64(5).i64(-1), 0)); err != nil {
		t.Fatalf("trailing byte: %v", err)
	}
	// Unknown key versions are skipped, not errors.
	if d, err := decodeRecord(be(nil).i16(1).str("x"), []byte{1, 2}); err != nil || !d.skip {
		t.Fatalf("key v1: %+v %v", d, err)
	}
	for name, kv := range map[string][2][]byte{
		"short key":          {{0}, nil},
		"truncated key":      {be(nil).i16(0).i16(5).str("ab")[:6], nil},
		"short value":        {key, {0}},
		"value version 2":    {key, be(nil).i16(2).i64(1)},
		"negative version":   {key, be(nil).i16(-1).i64(1)},
		"truncated value":    {key, be(nil).i16(0).i64(7).i16(0)},
		"unknown state":      {key, be(nil).i16(0).i64(7).i16(0).i32(1).i8(9).i32(-1).i64(5).i64(-1)},
		"negative pid":       {key, be(nil).i16(0).i64(-1).i16(0).i32(1).i8(0).i32(-1).i64(5).i64(-1)},
		"negative partition": {key, be(nil).i16(0).i64(7).i16(0).i32(1).i8(1).i32(1).str("a").i32(1).i32(-3).i64(5).i64(1)},
		// Counts far beyond the bytes left fail before any allocation.
		"huge topic count":     {key, be(nil).i16(0).i64(7).i16(0).i32(1).i8(1).i32(1 << 30).i64(5).i64(1)},
		"huge partition count": {key, be(nil).i16(0).i64(7).i16(0).i32(1).i8(1).i32(1).str("a").i32(1 << 30).i64(5).i64(1)},
	} {
		if _, err := decodeRecord(kv[0], kv[1]); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestDecodeBoundsAllocation(t *testing.T) {
	key := appendKey(nil, "tx")
	value := be(nil).i16(1).i64(7).i16(0).i32(1).i8(1).uv(1 << 31).i64(5).i64(1)
	allocs := testing.AllocsPerRun(10, func() { _, _ = decodeRecord(key, value) })
	if allocs > 10 {
		t.Fatalf("%v allocations for a huge count", allocs)
	}
}

// TestLoadSkipsControlTransactionalAndUnknownRecords: only plain batches
// of transaction records count; the rest is skipped without harm.
func TestLoadSkipsControlTransactionalAndUnknownRecords(t *testing.T) {
	e := newEnv(t)
	good := txnMeta{producerID: 5, producerEpoch: 1, timeoutMs: 1000, state: stateEmpty, startMs: -1, updateMs: 1}
	other := txnMeta{producerID: 6, producerEpoch: 1, timeoutMs: 1000, state: stateEmpty, startMs: -1, updateMs: 1}
	e.seed("good", good)
	for _, opts := range []recordbatch.BuildOptions{
		{Transactional: true, ProducerID: 9, ProducerEpoch: 0, BaseSequence: 0},
		{Control: true, Transactional: true, ProducerID: 9, ProducerEpoch: 0, BaseSequence: -1},
	} {
		b, err := recordbatch.Build(nil, opts, []recordbatch.Record{{Key: appendKey(nil, "other"), Value: appendValue(nil, &other)}})
		if err != nil {
			t.Fatal(err)
		}
		e.log.addBatch(b)
	}
	if _, err := e.log.Append(ctx, []recordbatch.Record{
		{Key: be(nil).i16(3).str("future"), Value: []byte{9, 9}},
		{Key: appendKey(nil, "bad"), Value: []byte{0, 0, 1}},
	}); err != nil {
		t.Fatal(err)
	}
	e.start()
	if d := e.describe("good"); d.ErrorCode != 0 || d.ProducerID != 5 {
		t.Fatalf("good: %+v", d)
	}
	for _, id := range []string{"other", "future", "bad"} {
		if d := e.describe(id); d.ErrorCode != codeTransactionalIDNotFound {
			t.Fatalf("%s: %+v", id, d)
		}
	}
	if st := e.stats(); st.corruptRecords != 1 {
		t.Fatalf("corrupt records %d, want 1", st.corruptRecords)
	}
}
