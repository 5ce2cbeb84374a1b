package recordbatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
)

// keyedRecords are n records with keys, values and headers, records of
// every size the walks step through differently: small ones (one- and
// two-byte varints), one whose varints take three bytes and more (a key
// past 8191 bytes, a long timestamp delta), and one larger than the
// streaming walk's window.
func keyedRecords() []Record {
	return []Record{
		{Key: []byte("a"), Value: []byte("one"), Headers: []Header{{Key: "h", Value: nil}}},
		{Key: bytes.Repeat([]byte("k"), 9000), Value: []byte("long key"), TimestampDelta: 1 << 40},
		{Key: []byte("c"), Value: bytes.Repeat([]byte("large "), 2*walkWindow/6)},
		{Key: []byte("d"), Value: nil},
		{Key: []byte("e"), Value: bytes.Repeat([]byte("v"), 200)},
	}
}

func TestRequireKeys(t *testing.T) {
	ctx := context.Background()
	require := ValidateOptions{RequireKeys: true}
	for _, codec := range allCodecs {
		for i := range keyedRecords() {
			for _, key := range [][]byte{nil, {}} {
				recs := keyedRecords()
				recs[i].Key = key
				b := filterBatch(t, codec, false, recs)
				name := fmt.Sprintf("%s: record %d with key %q (null %v)", codec, i, key, key == nil)
				_, err := ValidateProduce(ctx, b, require)
				if key == nil && (!errors.Is(err, ErrNoKey) || !errors.Is(err, ErrInvalidRecord)) {
					t.Errorf("%s: got %v, want ErrNoKey", name, err)
				}
				if key != nil && err != nil {
					t.Errorf("%s: an empty key refused: %v", name, err)
				}
				if _, err := ValidateProduce(ctx, b, ValidateOptions{}); err != nil {
					t.Errorf("%s, keys not required: %v", name, err)
				}
				// The readers of stored batches take what is stored.
				if err := WalkRecords(ctx, b, require, func(int64, int64) bool { return true }); err != nil {
					t.Errorf("%s: WalkRecords: %v", name, err)
				}
				if err := Records(ctx, b, require, func(Record) error { return nil }); err != nil {
					t.Errorf("%s: Records: %v", name, err)
				}
			}
		}
		if _, err := ValidateProduce(ctx, filterBatch(t, codec, false, keyedRecords()), require); err != nil {
			t.Errorf("%s: every record keyed: %v", codec, err)
		}
	}
}

// TestRequireKeysStreamedRecords: in a compressed batch a null key is
// found whether the walk meets its record whole in its window, cut by the
// window's end, or larger than the window.
func TestRequireKeysStreamedRecords(t *testing.T) {
	ctx := context.Background()
	for _, codec := range []Codec{CodecGzip, CodecSnappy, CodecLZ4, CodecZstd} {
		for _, size := range []int{10, 3000, streamFastMin, walkWindow - 100, walkWindow, 3 * walkWindow} {
			var recs []Record
			for len(recs)*size < 4*walkWindow {
				recs = append(recs, Record{Key: []byte("k"), Value: bytes.Repeat([]byte{byte(len(recs))}, size)})
			}
			for _, at := range []int{0, len(recs) / 2, len(recs) - 1} {
				withNull := append([]Record(nil), recs...)
				withNull[at].Key = nil
				b := filterBatch(t, codec, false, withNull)
				if _, err := ValidateProduce(ctx, b, ValidateOptions{RequireKeys: true}); !errors.Is(err, ErrNoKey) {
					t.Errorf("%s, records of %d bytes, null key at %d of %d: got %v", codec, size, at, len(recs), err)
				}
			}
			if _, err := ValidateProduce(ctx, filterBatch(t, codec, false, recs), ValidateOptions{RequireKeys: true}); err != nil {
				t.Errorf("%s, records of %d bytes: %v", codec, size, err)
			}
		}
	}
}

// TestNullKeyAt holds nullKeyAt to the record parser on records of every
// shape, alone and after another record.
func TestNullKeyAt(t *testing.T) {
	for _, r := range append(keyedRecords(), filterRecords()...) {
		for _, key := range [][]byte{nil, {}, r.Key} {
			r.Key = key
			for _, lead := range [][]byte{nil, AppendRecord(nil, Record{Value: []byte("before")})} {
				body := AppendRecord(append([]byte(nil), lead...), r)
				od, td, next, ok := recordAt(body, len(lead))
				if !ok || next != len(body) || od != r.OffsetDelta || td != r.TimestampDelta {
					t.Fatalf("recordAt: %d %d %d %v", od, td, next, ok)
				}
				if got := nullKeyAt(body, len(lead)); got != (key == nil) {
					t.Fatalf("nullKeyAt %v for key %q", got, key)
				}
			}
		}
	}
	for _, b := range [][]byte{nil, {0x02}, {0x80}, {0x02, 0x00, 0x00}} {
		if nullKeyAt(b, 0) {
			t.Fatalf("nullKeyAt(%x)", b)
		}
	}
}

// BenchmarkValidateProduceRequireKeys is BenchmarkValidateProduce's walk
// with keys required, beside it without, in the same run.
func BenchmarkValidateProduceRequireKeys(b *testing.B) {
	ctx := context.Background()
	budget := NewBudget(DefaultBudgetBytes)
	for _, codec := range allCodecs {
		batch, raw := benchBatch(b, codec)
		for _, require := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/requireKeys=%v", codec, require), func(b *testing.B) {
				opts := ValidateOptions{Budget: budget, RequireKeys: require}
				measure(b, raw, func() {
					if _, err := ValidateProduce(ctx, batch, opts); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}
