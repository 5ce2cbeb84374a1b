package recordbatch

import (
	"bytes"
	"testing"
)

// FuzzInMemoryWalkMatchesStreaming holds the in-memory record walk (an
// uncompressed batch at produce, and any record a streaming walk finds
// whole in its window) to the stepwise one it shortcuts: over any bytes,
// the same records with the same deltas, refused at the same record, and
// the same verdict on what follows the last one.
func FuzzInMemoryWalkMatchesStreaming(f *testing.F) {
	var body []byte
	for i, r := range []Record{
		{Key: []byte("k"), Value: []byte("value")},
		{OffsetDelta: 1, TimestampDelta: -5, Value: bytes.Repeat([]byte("v"), 300), Headers: []Header{{Key: "h", Value: nil}}},
		{OffsetDelta: 200, TimestampDelta: 1 << 40, Key: nil, Value: nil, Headers: []Header{{Key: "", Value: []byte("x")}, {Key: "yy", Value: bytes.Repeat([]byte("z"), 70)}}},
	} {
		body = AppendRecord(body, r)
		f.Add(append([]byte(nil), body...))
		f.Add(append([]byte(nil), body[:len(body)-1-i]...)) // cut inside a record
	}
	f.Add([]byte{0x02, 0x00})                                           // length 1: attributes only
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x00})                   // length beyond int32
	f.Add([]byte{0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x02, 0x00}) // null key header
	f.Fuzz(func(t *testing.T, body []byte) {
		mem := newWalker(body)
		stream := newStreamWalker(bytes.NewReader(body), int64(len(body))+1)
		defer stream.release()
		for i := 0; ; i++ {
			mo, mt, mok := mem.record()
			so, st, sok := stream.recordStepwise()
			if mok != sok || (mok && (mo != so || mt != st)) {
				t.Fatalf("record %d: in memory (%d, %d, %v), streaming (%d, %d, %v)", i, mo, mt, mok, so, st, sok)
			}
			if !mok {
				return
			}
			mend, _ := mem.atEnd()
			send, _ := stream.atEnd()
			if mend != send {
				t.Fatalf("after record %d: at end in memory %v, streaming %v", i, mend, send)
			}
			if mend {
				return
			}
		}
	})
}

// FuzzRecordAtMatchesChecked holds recordAt's path for records whose
// varints take one or two bytes to the walk that checks every field, on any
// bytes from any position: the same deltas, the same next position and the
// same verdict.
func FuzzRecordAtMatchesChecked(f *testing.F) {
	var body []byte
	for _, r := range []Record{
		{Key: []byte("k"), Value: []byte("value")},
		{OffsetDelta: 1, TimestampDelta: -5, Value: bytes.Repeat([]byte("v"), 300), Headers: []Header{{Key: "h", Value: nil}}},
		{OffsetDelta: 70, TimestampDelta: 9000, Headers: []Header{{Key: "", Value: []byte("x")}, {Key: "yy", Value: bytes.Repeat([]byte("z"), 70)}}},
		{OffsetDelta: 8191, TimestampDelta: 1 << 40, Value: bytes.Repeat([]byte("w"), 9000)},
	} {
		body = AppendRecord(body, r)
		f.Add(append([]byte(nil), body...), uint16(0))
	}
	f.Add([]byte{0x02, 0x00}, uint16(0))
	f.Add([]byte{0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x02, 0x00}, uint16(0))
	f.Add([]byte{0x80, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00}, uint16(0)) // a two-byte varint of 0
	f.Fuzz(func(t *testing.T, body []byte, at uint16) {
		p := int(at) % (len(body) + 1)
		od, td, next, ok := recordAt(body, p)
		cod, ctd, cnext, cok := recordAtChecked(body, p)
		if od != cod || td != ctd || next != cnext || ok != cok {
			t.Fatalf("at %d: recordAt (%d, %d, %d, %v), checked (%d, %d, %d, %v)", p, od, td, next, ok, cod, ctd, cnext, cok)
		}
	})
}
