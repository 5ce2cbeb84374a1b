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
