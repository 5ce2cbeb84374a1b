package localseg

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
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
	f.Add(encodeCleanerState(cleanerState{firstDirty: 100, horizon: 1_700_000_000_000}))
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeOffsetCheckpoint("log-start-offset", data)
		if st, err := decodeCleanerState(data); err == nil && (st.firstDirty < 0 || st.horizon < -1) {
			t.Fatalf("decoded %+v", st)
		}
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

// FuzzRecoveryScan runs recovery's scan of a segment (validateSegment,
// then onlyZeros on what follows the valid batches) over any bytes: it
// never reads past the file or keeps a batch that does not check out, and
// takes only zeros for a preallocated tail.
func FuzzRecoveryScan(f *testing.F) {
	good := append(append([]byte(nil), batch(2, 10, 0)...), batch(1, 20, 5)...)
	recordbatch.Batch(good[len(batch(2, 10, 0)):]).SetBaseOffset(2)
	f.Add(good)
	f.Add(append(append([]byte(nil), good...), make([]byte, 200)...))
	f.Add(append(append(append([]byte(nil), good...), make([]byte, 100)...), 7))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), segmentName(0, ".log"))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := OSFS{}.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		size := int64(len(data))
		valid, next, err := validateSegment(file, 0, size)
		if err != nil {
			t.Fatal(err)
		}
		if valid < 0 || valid > size || next < 0 {
			t.Fatalf("valid prefix %d of %d bytes, next offset %d", valid, size, next)
		}
		for buf := data[:valid]; len(buf) > 0; {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				t.Fatalf("the valid prefix does not split into batches: %v", err)
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("the valid prefix holds a bad batch: %v", err)
			}
			buf = rest
		}
		zero, err := onlyZeros(file, valid, size)
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.Count(data[valid:], []byte{0}) == len(data[valid:]); zero != want {
			t.Fatalf("onlyZeros %v over %x", zero, data[valid:])
		}
	})
}
