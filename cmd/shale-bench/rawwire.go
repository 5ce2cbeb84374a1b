package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The raw load generator speaks the Kafka protocol itself: each request is
// encoded once with kmsg, and only its correlation id (and, for Fetch, its
// offset) is patched in place before it is sent again, so the client costs
// little more than the write and read system calls.

const (
	rawProduceVersion = 9  // flexible, topics by name
	rawFetchVersion   = 12 // flexible, topics by name, no session needed
	// corrIDAt is where the correlation id sits in a size-prefixed
	// request frame: size (4), api key (2), api version (2).
	corrIDAt = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeBatch builds an uncompressed v2 record batch of as many records of
// recordBytes (random) bytes as fit in batchBytes, at least one. The batch
// has no producer id, so the same bytes can be produced again and again.
func encodeBatch(recordBytes, batchBytes int, now time.Time) (batch []byte, records int) {
	value := recordValue(recordBytes)
	var recs []byte
	for n := 0; n == 0 || 61+len(recs)+recordBytes+16 <= batchBytes; n++ {
		r := kmsg.Record{OffsetDelta: int32(n), Value: value}
		body := r.AppendTo(nil) // with a 1-byte Length of 0
		r.Length = int32(len(body) - 1)
		recs = r.AppendTo(recs)
		records = n + 1
	}
	ts := now.UnixMilli()
	b := kmsg.RecordBatch{
		FirstOffset:     0,
		Length:          int32(49 + len(recs)), // everything after the length field
		Magic:           2,
		LastOffsetDelta: int32(records - 1),
		FirstTimestamp:  ts,
		MaxTimestamp:    ts,
		ProducerID:      -1,
		ProducerEpoch:   -1,
		FirstSequence:   -1,
		NumRecords:      int32(records),
		Records:         recs,
	}
	batch = b.AppendTo(nil)
	// The CRC covers everything from the attributes to the end.
	binary.BigEndian.PutUint32(batch[17:], crc32.Checksum(batch[21:], castagnoli))
	return batch, records
}

// recordValue is the value of every record the raw generator produces:
// letters from a fixed seed.
func recordValue(n int) []byte {
	value := make([]byte, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range value {
		value[i] = byte('a' + rng.IntN(26))
	}
	return value
}

var rawFormatter = kmsg.NewRequestFormatter(kmsg.FormatterClientID("shale-bench-raw"))

// produceFrame encodes a size-prefixed Produce request carrying batch for
// one partition.
func produceFrame(topic string, partition int32, acks int16, batch []byte) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.Version = rawProduceVersion
	req.Acks = acks
	req.TimeoutMillis = 30000
	p := kmsg.NewProduceRequestTopicPartition()
	p.Partition = partition
	p.Records = batch
	t := kmsg.NewProduceRequestTopic()
	t.Topic = topic
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	return rawFormatter.AppendRequest(nil, req, 0)
}

// fetchFrame is a pre-encoded Fetch request for some partitions of a topic
// whose correlation id and fetch offsets are patched before each send.
type fetchFrame struct {
	frame    []byte
	offsetAt []int // where each partition's fetch offset sits in frame
}

// newFetchFrame encodes a Fetch of partitions, each up to partitionMax
// bytes, up to maxBytes in all (a Kafka consumer's max.partition.fetch.bytes
// and fetch.max.bytes).
func newFetchFrame(topic string, partitions []int32, partitionMax, maxBytes int32) (*fetchFrame, error) {
	enc := func(moved int) []byte {
		req := kmsg.NewPtrFetchRequest()
		req.Version = rawFetchVersion
		req.ReplicaID = -1
		req.MaxWaitMillis = 500
		req.MinBytes = 1
		req.MaxBytes = maxBytes
		req.SessionEpoch = -1
		t := kmsg.NewFetchRequestTopic()
		t.Topic = topic
		for i, partition := range partitions {
			p := kmsg.NewFetchRequestTopicPartition()
			p.Partition = partition
			if i == moved {
				p.FetchOffset = -1
			}
			p.PartitionMaxBytes = partitionMax
			t.Partitions = append(t.Partitions, p)
		}
		req.Topics = append(req.Topics, t)
		return rawFormatter.AppendRequest(nil, req, 0)
	}
	// A partition's offset is where the encoding with its offset moved
	// differs from the one with every offset 0.
	a := enc(-1)
	f := &fetchFrame{frame: a}
	for k := range partitions {
		b := enc(k)
		at := -1
		for i := range a {
			if a[i] != b[i] {
				at = i
				break
			}
		}
		if at < 0 || at+8 > len(a) {
			return nil, errors.New("fetch offset not found in the encoded request")
		}
		f.offsetAt = append(f.offsetAt, at)
	}
	return f, nil
}

// setOffset sets the fetch offset of the k-th partition of the request.
func (f *fetchFrame) setOffset(k int, off int64) {
	binary.BigEndian.PutUint64(f.frame[f.offsetAt[k]:], uint64(off))
}

func setCorrelationID(frame []byte, id int32) {
	binary.BigEndian.PutUint32(frame[corrIDAt:], uint32(id))
}

// readResponse reads one size-prefixed response into buf (grown as
// needed), checks its correlation id and skips its header (v1: with
// tagged fields, as every flexible response's). It returns the body.
func readResponse(r *bufio.Reader, buf []byte, wantCorr int32) (body, grown []byte, err error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, buf, err
	}
	n := int(binary.BigEndian.Uint32(size[:]))
	if n < 5 || n > 1<<30 {
		return nil, buf, fmt.Errorf("response of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, buf, err
	}
	if got := int32(binary.BigEndian.Uint32(buf)); got != wantCorr {
		return nil, buf, fmt.Errorf("correlation id %d, want %d", got, wantCorr)
	}
	rest, err := skipTaggedFields(buf[4:])
	return rest, buf, err
}

func skipTaggedFields(b []byte) ([]byte, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, errors.New("bad tagged field count")
	}
	b = b[n:]
	for ; count > 0; count-- {
		if _, n = binary.Uvarint(b); n <= 0 {
			return nil, errors.New("bad tag")
		}
		b = b[n:]
		size, n := binary.Uvarint(b)
		if n <= 0 || size > uint64(len(b)-n) {
			return nil, errors.New("bad tagged field size")
		}
		b = b[n+int(size):]
	}
	return b, nil
}

// produceResponseErr returns the first partition error of a Produce
// response body.
func produceResponseErr(body []byte) error {
	resp := kmsg.ProduceResponse{Version: rawProduceVersion}
	if err := resp.ReadFrom(body); err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("produce %s/%d: error code %d", t.Topic, p.Partition, p.ErrorCode)
			}
		}
	}
	return nil
}

// fetched is what one Fetch response carried: whole batches only (a
// partial batch at the end, as Kafka may send, is not counted).
type fetched struct {
	bytes, records int64
	highWatermark  int64
	next           int64 // the offset after the last whole batch (0: none)
}

func parseFetchResponse(body []byte) (fetched, error) {
	var f fetched
	resp := kmsg.FetchResponse{Version: rawFetchVersion}
	if err := resp.ReadFrom(body); err != nil {
		return f, err
	}
	if resp.ErrorCode != 0 {
		return f, fmt.Errorf("fetch: error code %d", resp.ErrorCode)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return f, fmt.Errorf("fetch %s/%d: error code %d", t.Topic, p.Partition, p.ErrorCode)
			}
			f.highWatermark = p.HighWatermark
			for recs := p.RecordBatches; len(recs) >= 61; {
				size := 12 + int(int32(binary.BigEndian.Uint32(recs[8:])))
				if size < 61 || size > len(recs) {
					break
				}
				f.bytes += int64(size)
				f.records += int64(int32(binary.BigEndian.Uint32(recs[57:])))
				f.next = int64(binary.BigEndian.Uint64(recs)) + int64(int32(binary.BigEndian.Uint32(recs[23:]))) + 1
				recs = recs[size:]
			}
		}
	}
	return f, nil
}
