package broker_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// rawBatch wraps body (compressed with codec, or not) in a v2 header that
// claims count records, with a valid CRC: only a look at the records can
// tell it from a good batch.
func rawBatch(codec recordbatch.Codec, count int32, ts int64, body []byte) []byte {
	b := make([]byte, recordbatch.HeaderSize, recordbatch.HeaderSize+len(body))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:], uint16(codec))
	binary.BigEndian.PutUint32(b[23:], uint32(count-1))
	binary.BigEndian.PutUint64(b[27:], uint64(ts))
	binary.BigEndian.PutUint64(b[35:], uint64(ts))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0)) // no producer id
	binary.BigEndian.PutUint16(b[51:], 0xffff)
	binary.BigEndian.PutUint32(b[53:], 0xffffffff)
	binary.BigEndian.PutUint32(b[57:], uint32(count))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestProduceLooksInsideCompressedBatches(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "inside", 1, nil)
	cl := b.Client()
	now := time.Now().UnixMilli()
	garbage := bytes.Repeat([]byte{0xff, 0x13, 0x37, 0x00}, 512)
	oneRecord := recordbatch.AppendRecord(nil, recordbatch.Record{Value: []byte("one")})
	bombBody := recordbatch.AppendRecord(nil, recordbatch.Record{Value: make([]byte, 80<<20)})

	for _, codec := range []recordbatch.Codec{recordbatch.CodecGzip, recordbatch.CodecZstd} {
		compressed, _ := recordbatch.Compress(codec, oneRecord)
		bomb, _ := recordbatch.Compress(codec, bombBody)
		for _, c := range []struct {
			name  string
			batch []byte
			want  int16
		}{
			// Garbage under a valid CRC used to be appended, and its
			// claimed count moved the log end.
			{"garbage body", rawBatch(codec, 3, now, garbage), kerr.CorruptMessage.Code},
			{"claims a billion records", rawBatch(codec, 1_000_000_000, now, compressed), kerr.InvalidRecord.Code},
			// 80 MiB of zeros: more than the 64 MiB a batch of a
			// 1 MiB max.message.bytes topic may expand to.
			{"decompression bomb", rawBatch(codec, 1, now, bomb), kerr.MessageTooLarge.Code},
		} {
			if got := rawProduce(t, cl, "inside", c.batch); got.ErrorCode != c.want {
				t.Errorf("%s %s: error %d, want %d", codec, c.name, got.ErrorCode, c.want)
			}
		}
	}
	end, err := b.Admin().ListEndOffsets(testCtx(t), "inside")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := end.Lookup("inside", 0); o.Offset != 0 {
		t.Fatalf("refused batches moved the log end to %d", o.Offset)
	}

	// A good compressed batch still goes in, and its header's max
	// timestamp is made the records' (the producer claimed a later one).
	good := rawBatch(recordbatch.CodecZstd, 1, now, mustCompress(t, recordbatch.CodecZstd, oneRecord))
	binary.BigEndian.PutUint64(good[35:], uint64(now+60_000))
	binary.BigEndian.PutUint32(good[17:], crc32.Checksum(good[21:], crc32.MakeTable(crc32.Castagnoli)))
	if got := rawProduce(t, cl, "inside", good); got.ErrorCode != 0 || got.BaseOffset != 0 {
		t.Fatalf("good zstd batch: %+v", got)
	}
	recs := consumeN(t, b, "inside", 1)
	if string(recs[0].Value) != "one" || recs[0].Timestamp.UnixMilli() != now {
		t.Fatalf("record %q at %v, want %q at %d", recs[0].Value, recs[0].Timestamp.UnixMilli(), "one", now)
	}
	// MAX_TIMESTAMP comes from the time index: the records' time, not
	// the header's claim.
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "inside"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = -3
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.Offset != 0 || p.Timestamp != now {
		t.Fatalf("max timestamp %+v, want offset 0 at %d", p, now)
	}
}

func mustCompress(t *testing.T, codec recordbatch.Codec, body []byte) []byte {
	t.Helper()
	c, err := recordbatch.Compress(codec, body)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
