package localseg

import (
	"testing"
)

// The decoders of the files the log writes itself must refuse any bytes
// they did not write, without panicking or allocating past the input.

func FuzzDecodeOffsetIndex(f *testing.F) {
	f.Add(encodeOffsetIndex([]indexEntry{{1, 100}, {5, 900}}), int64(1000))
	f.Add(encodeOffsetIndex(nil), int64(0))
	f.Add([]byte("SHIX"), int64(10))
	f.Fuzz(func(t *testing.T, data []byte, segSize int64) {
		es, err := decodeOffsetIndex(data, segSize)
		if err == nil {
			for i := 1; i < len(es); i++ {
				if es[i].rel <= es[i-1].rel || es[i].pos <= es[i-1].pos || int64(es[i].pos) >= segSize {
					t.Fatalf("accepted an unordered index: %+v", es)
				}
			}
			floorEntry(es, 3)
		}
	})
}

func FuzzDecodeTimeIndex(f *testing.F) {
	f.Add(encodeTimeIndex([]timeEntry{{10, 0}, {20, 4}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if es, err := decodeTimeIndex(data); err == nil {
			floorTime(es, 15)
		}
	})
}

func FuzzDecodeCheckpoints(f *testing.F) {
	f.Add(encodeOffsetCheckpoint("log-start-offset", 42))
	c := epochCache{entries: []EpochEntry{{0, 0}, {3, 100}}}
	f.Add(c.encode())
	f.Add([]byte("shale-checkpoint leader-epoch 1\n1\n0 0\ncrc32c 00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeOffsetCheckpoint("log-start-offset", data)
		if c, err := decodeEpochCache(data); err == nil {
			c.endOffsetFor(1, 1000)
			c.truncateFromEnd(50)
			c.truncateFromStart(10)
		}
	})
}

func FuzzDecodeProducerSnapshot(f *testing.F) {
	s := newProducerState()
	s.update(idemBatch(7, 1, 0, 3))
	s.update(idemBatch(8, 0, 10, 1))
	f.Add(s.encode())
	f.Add([]byte("SHPS"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeProducerState(data)
		if err == nil {
			if _, err := decodeProducerState(st.encode()); err != nil {
				t.Fatalf("re-encoded snapshot does not decode: %v", err)
			}
		}
	})
}
