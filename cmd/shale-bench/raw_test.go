package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestRawWireAgainstBroker checks the raw generator's hand-made requests
// against a real broker: every acknowledged batch is there, record for
// record, as franz-go reads it back, and the raw fetch reads whole batches.
func TestRawWireAgainstBroker(t *testing.T) {
	b := brokertest.Start(t)
	const topic = "raw-wire"
	if err := createTopicNamed(b.Addr, topic, 2); err != nil {
		t.Fatal(err)
	}
	cfg := rawConfig{conns: 2, inflight: 4, partitions: 2, recordBytes: 50, batchBytes: 4 << 10, duration: 150 * time.Millisecond}
	batch, perBatch := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
	if len(batch) > cfg.batchBytes || perBatch < 2 {
		t.Fatalf("batch of %d bytes with %d records for a %d-byte limit", len(batch), perBatch, cfg.batchBytes)
	}
	var total int64
	for _, acks := range []int16{1, 0, -1} {
		res, err := rawProduce(b.Addr, topic, acks, cfg)
		if err != nil {
			t.Fatalf("acks=%d: %v", acks, err)
		}
		if res.requests == 0 || res.records != res.requests*int64(perBatch) || res.bytes != res.requests*int64(len(batch)) {
			t.Fatalf("acks=%d: %d requests, %d records, %d bytes", acks, res.requests, res.records, res.bytes)
		}
		total += res.records
	}
	paced := cfg
	paced.rateMBps = 1 // a request every 8ms on each of the 2 connections
	res, err := rawProduce(b.Addr, topic, 1, paced)
	if err != nil {
		t.Fatal(err)
	}
	if max := 2 * (int64(paced.duration/(8*time.Millisecond)) + 2); res.requests == 0 || res.requests > max {
		t.Fatalf("paced at 1 MB/s: %d requests in %v, want 1 to %d", res.requests, paced.duration, max)
	}
	total += res.records

	ends, err := endOffsets(b.Addr, topic, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := ends[0] + ends[1]; got != total {
		t.Fatalf("partitions end at %v (%d records), the generator counted %d", ends, got, total)
	}
	value := recordValue(cfg.recordBytes)
	cl := b.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var read int64
	for read < total {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("after %d of %d records: %v", read, total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !bytes.Equal(r.Value, value) || r.Key != nil {
				t.Fatalf("record %d/%d: key %q value %q, want %q", r.Partition, r.Offset, r.Key, r.Value, value)
			}
			read++
		})
	}

	fcfg := cfg
	fcfg.batchBytes = 3 * len(batch)
	res, err = rawFetch(b.Addr, topic, ends, 3*int64(perBatch), fcfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.requests == 0 || res.bytes%int64(len(batch)) != 0 || res.records != res.bytes/int64(len(batch))*int64(perBatch) {
		t.Fatalf("fetch: %d requests, %d bytes, %d records of %d-byte batches", res.requests, res.bytes, res.records, len(batch))
	}
}
