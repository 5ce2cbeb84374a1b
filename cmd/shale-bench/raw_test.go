package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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

	// One partition per Fetch, then both in each (a consumer of the
	// whole topic), with the request's limit below the partitions' sum.
	for _, shape := range []struct{ partitions, maxBytes int }{{1, 0}, {0, 0}, {0, 5 * len(batch)}} {
		fcfg := cfg
		fcfg.batchBytes = 3 * len(batch)
		fcfg.fetchPartitions, fcfg.fetchMaxBytes = shape.partitions, shape.maxBytes
		res, err = rawFetch(b.Addr, topic, ends, 3*int64(perBatch), fcfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.requests == 0 || res.bytes%int64(len(batch)) != 0 || res.records != res.bytes/int64(len(batch))*int64(perBatch) {
			t.Fatalf("fetch %+v: %d requests, %d bytes, %d records of %d-byte batches", shape, res.requests, res.bytes, res.records, len(batch))
		}
		perRequest := float64(res.bytes) / float64(res.requests) / float64(len(batch))
		want := map[int]float64{1: 3, 0: 6}[shape.partitions]
		if shape.maxBytes > 0 {
			want = 5
		}
		if perRequest > want {
			t.Fatalf("fetch %+v: %.1f batches per response, at most %.0f asked", shape, perRequest, want)
		}
	}
}

// TestRawConnectionKeepsItsWindowInFlight checks that a connection of the
// raw generator has at most its window of requests unanswered: a server
// that answers nothing for a while sees exactly that many, then, answering
// each as it comes, never more. The window was one larger: the reader took
// a request's place in the window before its answer came, not after.
func TestRawConnectionKeepsItsWindowInFlight(t *testing.T) {
	for _, inflight := range []int{1, 3} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		seen := make(chan int, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			var unanswered []int32
			most := 0
			answer := func() bool {
				resp := kmsg.NewPtrProduceResponse()
				resp.Version = rawProduceVersion
				for _, corr := range unanswered {
					frame := appendFlexibleResponse(corr, resp)
					if _, err := c.Write(frame); err != nil {
						return false
					}
				}
				unanswered = unanswered[:0]
				return true
			}
			r := bufio.NewReader(c)
			for start := time.Now(); ; {
				// Nothing is answered for the first 300 ms.
				if time.Since(start) > 300*time.Millisecond && !answer() {
					break
				}
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				var size [4]byte
				if _, err := io.ReadFull(r, size[:]); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						continue
					}
					break
				}
				frame := make([]byte, binary.BigEndian.Uint32(size[:]))
				c.SetReadDeadline(time.Time{})
				if _, err := io.ReadFull(r, frame); err != nil {
					break
				}
				unanswered = append(unanswered, int32(binary.BigEndian.Uint32(frame[4:])))
				most = max(most, len(unanswered))
			}
			seen <- most
		}()
		batch, records := encodeBatch(50, 1<<10, time.Now())
		pc := produceConn{frame: produceFrame("t", 0, 1, batch), acks: 1, bytes: int64(len(batch)), records: int64(records)}
		now := time.Now()
		if _, err := pc.run(ln.Addr().String(), &meter{warmAt: now}, inflight, now, now.Add(500*time.Millisecond)); err != nil {
			t.Fatalf("inflight %d: %v", inflight, err)
		}
		if most := <-seen; most != inflight {
			t.Errorf("inflight %d: the server saw %d requests unanswered at once", inflight, most)
		}
	}
}

// appendFlexibleResponse frames resp as a broker answers request corr
// (response header v1).
func appendFlexibleResponse(corr int32, resp kmsg.Response) []byte {
	frame := binary.BigEndian.AppendUint32(make([]byte, 4), uint32(corr))
	frame = append(frame, 0) // no tagged fields
	frame = resp.AppendTo(frame)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	return frame
}

// TestSendfileReferenceAnswersTheRawFetch checks that the sendfile
// reference answers the raw fetch's requests as a broker does: whole
// batches of the generator's own, each partition up to its limit and the
// request up to its own, at least one batch.
func TestSendfileReferenceAnswersTheRawFetch(t *testing.T) {
	cfg := rawConfig{conns: 2, inflight: 1, partitions: 3, recordBytes: 50, batchBytes: 4 << 10, duration: 150 * time.Millisecond}
	ref, err := newSendfileRef(t.TempDir(), cfg.recordBytes, cfg.batchBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go ref.accept(ln)
	batch, perBatch := encodeBatch(cfg.recordBytes, cfg.batchBytes, time.Now())
	ends := []int64{1000 * int64(perBatch), 10 * int64(perBatch), 1 << 40}
	for _, shape := range []struct{ partMax, maxBytes, want int }{
		{3 * len(batch), 0, 9}, {3 * len(batch), 5 * len(batch), 5}, {len(batch) / 2, 0, 1},
	} {
		fcfg := cfg
		fcfg.batchBytes, fcfg.fetchMaxBytes = shape.partMax, shape.maxBytes
		res, err := rawFetch(ln.Addr().String(), "t", ends, 3*int64(perBatch), fcfg)
		if err != nil {
			t.Fatalf("%+v: %v", shape, err)
		}
		if res.requests == 0 || res.bytes != res.requests*int64(shape.want*len(batch)) || res.records != res.bytes/int64(len(batch))*int64(perBatch) {
			t.Fatalf("%+v: %d requests, %d bytes, %d records of %d-byte batches, want %d batches each", shape, res.requests, res.bytes, res.records, len(batch), shape.want)
		}
	}
}

// A workload with a reference measured beside it is a fraction of that
// one, not of the suite's.
func TestRawWorkloadPrefersItsOwnReference(t *testing.T) {
	refs := map[string]float64{"window": 500e6}
	if got := (rawWorkload{refFor: "window"}).ref(refs); got != 500e6 {
		t.Fatalf("without its own: %v, want the suite's 500e6", got)
	}
	if got := (rawWorkload{refFor: "window", ownRef: 700e6}).ref(refs); got != 700e6 {
		t.Fatalf("with its own: %v, want 700e6", got)
	}
}
