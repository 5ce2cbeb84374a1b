package txn

import (
	"reflect"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Bytes read back from __transaction_state are outside input (a Kafka
// tool may have written the topic, a disk may have rotted): decoding and
// replaying them must never panic. The seeds below run with go test.

func seedMetas() []txnMeta {
	return []txnMeta{
		{producerID: 1000, producerEpoch: 3, timeoutMs: 60000, state: statePrepareCommit, partitions: []TopicPartition{{"a", 0}, {"b", 2}}, startMs: 10, updateMs: 20},
		{producerID: 7, timeoutMs: 1, state: stateEmpty, startMs: -1, updateMs: 5},
		{producerID: 7, producerEpoch: 32766, timeoutMs: 1, state: stateCompleteAbort, partitions: []TopicPartition{}, startMs: 4, updateMs: 5},
		{producerID: 9, producerEpoch: 1, timeoutMs: 900000, state: stateOngoing, partitions: []TopicPartition{{"__consumer_offsets", 49}}, startMs: 4, updateMs: 5},
	}
}

func FuzzRecords(f *testing.F) {
	for _, m := range seedMetas() {
		f.Add(appendKey(nil, "tx"), appendValue(nil, &m))
	}
	f.Add(appendKey(nil, "tx"), []byte(nil))
	f.Add([]byte(be(nil).i16(1).str("x")), []byte{0, 1})
	f.Add(appendKey(nil, "tx"), []byte(be(nil).i16(1).i64(42).i16(2).i32(900).i8(1).
		uv(2).cstr("t").uv(3).i32(4).i32(3).uv(1).uv(7).uv(1).i8(0).
		i64(99).i64(98).uv(2).uv(0).uv(8).i64(41).uv(30).uv(2).i16(5)))
	f.Add(appendKey(nil, "tx"), []byte(be(nil).i16(0).i64(7).i16(0).i32(1).i8(1).i32(1<<30).i64(5).i64(1)))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		d, err := decodeRecord(key, value)
		if err != nil || d.skip || d.tombstone {
			return
		}
		// What decodes re-encodes (as v0) to the same metadata.
		m := d.meta
		if m.state == stateEmpty {
			m.partitions = nil // Empty stores no partitions
		}
		d2, err := decodeRecord(appendKey(nil, d.id), appendValue(nil, &m))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if d2.id != d.id || !reflect.DeepEqual(d2.meta, m) {
			t.Fatalf("round trip %+v, want %+v", d2.meta, m)
		}
	})
}

// FuzzReplayBatch loads an arbitrary batch as if it were the partition's
// log: no panic, and the shard's accounting stays sane.
func FuzzReplayBatch(f *testing.F) {
	var recs []recordbatch.Record
	for _, m := range seedMetas() {
		recs = append(recs, recordbatch.Record{Key: appendKey(nil, "tx"), Value: appendValue(nil, &m)})
	}
	recs = append(recs,
		recordbatch.Record{Key: appendKey(nil, "tx")},
		recordbatch.Record{Key: appendKey(nil, "t2"), Value: []byte{0, 3, 0, 0}},
	)
	for _, codec := range []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecGzip, recordbatch.CodecZstd} {
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Codec: codec, ProducerID: -1}, recs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	c, err := New(testConfig(), Options{Clock: newFakeClock(), Logger: quietLogger(), ProducerIDs: newFakePIDs(), Markers: newFakeMarkers()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newShard(c, 0, 0, nil)
		for len(data) > 0 {
			b, rest, err := recordbatch.Next(data)
			if err != nil {
				break
			}
			s.replayBatch(b)
			data = rest
		}
		var live int64
		for id, e := range s.txns {
			if e.id != id || !e.stored || e.meta.producerID < 0 {
				t.Fatalf("bad entry %q: %+v", id, e)
			}
			live += e.size
		}
		if live != s.liveBytes || s.liveBytes < 0 {
			t.Fatalf("live bytes %d, entries hold %d", s.liveBytes, live)
		}
	})
}
