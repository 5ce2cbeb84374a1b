package recordbatch

import (
	"testing"

	"github.com/klauspost/compress/snappy"
)

func snappyEncode(b []byte) []byte { return snappy.Encode(nil, b) }

func seedBatches(f *testing.F) {
	for _, codec := range []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		b, err := Build(nil, BuildOptions{Codec: codec, ProducerID: 3, BaseSequence: 0}, testRecords(3))
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(b))
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
}

// FuzzValidate feeds arbitrary bytes to the produce-path validator and the
// record walker: they must return an error or accept, never panic, and
// accepted batches must walk cleanly.
func FuzzValidate(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for buf := data; ; {
			b, rest, err := Next(buf)
			if err != nil || b == nil {
				break
			}
			buf = rest
			if ValidateProduce(b, ValidateOptions{MaxDecompressed: 1 << 20}) == nil {
				if err := Records(b, 1<<20, func(Record) error { return nil }); err != nil {
					t.Fatalf("validated batch fails to walk: %v", err)
				}
			}
			_ = ValidateProduce(b, ValidateOptions{})
		}
	})
}

// FuzzDecompress checks every codec against hostile input under a cap.
func FuzzDecompress(f *testing.F) {
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		c, _ := Compress(codec, make([]byte, 5000))
		f.Add(byte(codec), c)
	}
	f.Fuzz(func(t *testing.T, codec byte, data []byte) {
		out, err := Decompress(Codec(codec%5), data, 1<<16)
		if err == nil && len(out) > 1<<16 && codec%5 != 0 {
			t.Fatalf("decompressed %d bytes past the cap", len(out))
		}
	})
}
