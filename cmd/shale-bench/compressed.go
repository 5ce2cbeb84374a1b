package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A compressed produce run shows what looking inside compressed batches
// costs the broker: Shale decompresses every batch (as a stream) to check
// its records; kfake stores the bytes as they come. Both receive the same
// pre-encoded batches, compressed by franz-go's compressor, so the client
// costs the same against both.

// compressedRawWorkload runs acks=1 produce of codec-compressed batches
// on both targets. Its MB/s are of record bytes before compression, so
// they compare with the uncompressed runs.
func compressedRawWorkload(codec string, targets [2]*target, cfg rawConfig,
	rounds func(string, rawConfig, func(*target, rawConfig) (rawResult, error)) ([2]rawMeasure, error),
) (rawWorkload, error) {
	batch, records, raw, err := encodeCompressedBatch(codec, cfg.recordBytes, cfg.batchBytes, time.Now())
	if err != nil {
		return rawWorkload{}, err
	}
	topic, err := createRawTopic(targets, "raw-"+codec, cfg.partitions)
	if err != nil {
		return rawWorkload{}, err
	}
	defer deleteRawTopic(targets, topic)
	workload := fmt.Sprintf("produce acks=1 %s (%.1fx)", codec, float64(raw)/float64(len(batch)))
	ms, err := rounds(workload, cfg, func(t *target, cfg rawConfig) (rawResult, error) {
		res, err := rawProduceBatch(t.addr, topic, 1, cfg, batch, records)
		// Count record bytes, not the compressed bytes on the wire.
		res.bytes = res.bytes / int64(len(batch)) * int64(raw)
		return res, err
	})
	if err != nil {
		return rawWorkload{}, err
	}
	return rawWorkload{name: workload, refFor: "disk", ms: ms}, nil
}

// encodeCompressedBatch builds a v2 batch of records of recordBytes each
// (half random letters, half a repeated pattern: text-like, about 2x
// compressible), as many as fit in batchBytes before compression,
// compressed with codec. raw is the uncompressed size of the batch.
func encodeCompressedBatch(codec string, recordBytes, batchBytes int, now time.Time) (batch []byte, records, raw int, err error) {
	var c kgo.CompressionCodec
	var attr int16
	switch codec {
	case "gzip":
		c, attr = kgo.GzipCompression(), 1
	case "snappy":
		c, attr = kgo.SnappyCompression(), 2
	case "lz4":
		c, attr = kgo.Lz4Compression(), 3
	case "zstd":
		c, attr = kgo.ZstdCompression(), 4
	default:
		return nil, 0, 0, fmt.Errorf("unknown codec %q", codec)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []byte
	for n := 0; n == 0 || 61+len(recs)+recordBytes+16 <= batchBytes; n++ {
		value := make([]byte, recordBytes)
		for i := range value {
			if i < recordBytes/2 {
				value[i] = byte('a' + rng.IntN(26))
			} else {
				value[i] = byte('a' + i%7)
			}
		}
		r := kmsg.Record{OffsetDelta: int32(n), Value: value}
		body := r.AppendTo(nil) // with a 1-byte Length of 0
		r.Length = int32(len(body) - 1)
		recs = r.AppendTo(recs)
		records = n + 1
	}
	compressor, err := kgo.DefaultCompressor(c)
	if err != nil {
		return nil, 0, 0, err
	}
	out, _ := compressor.Compress(new(bytes.Buffer), recs)
	ts := now.UnixMilli()
	b := kmsg.RecordBatch{
		Length:          int32(49 + len(out)),
		Magic:           2,
		Attributes:      attr,
		LastOffsetDelta: int32(records - 1),
		FirstTimestamp:  ts,
		MaxTimestamp:    ts,
		ProducerID:      -1,
		ProducerEpoch:   -1,
		FirstSequence:   -1,
		NumRecords:      int32(records),
		Records:         out,
	}
	batch = b.AppendTo(nil)
	binary.BigEndian.PutUint32(batch[17:], crc32.Checksum(batch[21:], castagnoli))
	return batch, records, 61 + len(recs), nil
}
