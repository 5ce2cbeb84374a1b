package broker_test

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// Produce requests pipelined in one write are read together and appended
// as a group (each partition's batches with one write). Each keeps the
// answer it gets alone, in order: offsets in request order per partition,
// an idempotent producer's duplicate and out-of-order retries, a refused
// batch, acks=0 (no answer) and acks=all (answered once durable, after the
// group) among them.
func TestPipelinedProducesAreGroupedAndAnsweredInOrder(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "grouped", 2, nil)
	createTopic(t, b.Admin(), "grouped-too", 1, nil)
	cl := b.Client()
	initReq := kmsg.NewPtrInitProducerIDRequest()
	initReq.TransactionTimeoutMillis = -1
	initResp, err := initReq.RequestWith(testCtx(t), cl)
	if err != nil || initResp.ErrorCode != 0 {
		t.Fatalf("init producer id: %v %v", err, initResp)
	}
	pid, epoch := initResp.ProducerID, initResp.ProducerEpoch

	build := func(pid int64, seq int32, n int) []byte {
		recs := make([]recordbatch.Record, n)
		for i := range recs {
			recs[i].Value = make([]byte, 200)
			recs[i].Value[0] = byte(i)
		}
		opts := recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()}
		if pid >= 0 {
			opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence = pid, epoch, seq
		}
		batch, err := recordbatch.Build(nil, opts, recs)
		if err != nil {
			t.Fatal(err)
		}
		return batch
	}
	type part struct {
		topic     string
		partition int32
		batch     []byte
		wantErr   int16
		wantBase  int64 // -1: any; -2: the base of the batch whose retry it is (checked by value)
	}
	type call struct {
		acks  int16
		parts []part
	}
	corrupt := build(-1, 0, 2)
	corrupt[len(corrupt)-1] ^= 0xff // CRC mismatch
	calls := []call{
		{1, []part{{"grouped", 0, build(-1, 0, 3), 0, 0}, {"grouped", 1, build(-1, 0, 2), 0, 0}}},
		{1, []part{{"grouped", 0, build(pid, 0, 4), 0, 3}}},
		{1, []part{{"grouped", 0, build(pid, 4, 2), 0, 7}, {"grouped-too", 0, build(-1, 0, 5), 0, 0}}},
		{1, []part{{"grouped", 0, build(pid, 4, 2), 0, 7}}},                                   // a retry: its first offsets
		{1, []part{{"grouped", 0, build(pid, 9, 1), kerr.OutOfOrderSequenceNumber.Code, -1}}}, // a gap
		{0, []part{{"grouped", 1, build(-1, 0, 1), 0, -1}}},                                   // no answer
		{1, []part{{"grouped", 1, corrupt, kerr.CorruptMessage.Code, -1}, {"grouped", 0, build(pid, 6, 1), 0, 9}}},
		{-1, []part{{"grouped", 0, build(-1, 0, 2), 0, 10}, {"grouped", 1, build(-1, 0, 1), 0, 3}}}, // durable first
		{1, []part{{"grouped", 0, build(-1, 0, 1), 0, 12}}},                                         // behind it
		{-1, []part{{"grouped-too", 0, build(-1, 0, 1), 0, 5}}},
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("grouped"))
	var all []byte
	for i, c := range calls {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 9, c.acks, 10000
		for _, p := range c.parts {
			req.Topics = append(req.Topics, kmsg.ProduceRequestTopic{Topic: p.topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: p.partition, Records: p.batch}}})
		}
		all = append(all, f.AppendRequest(nil, req, int32(i))...)
	}
	c := dial(t, b.Addr)
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	for i, cl := range calls {
		if cl.acks == 0 {
			continue
		}
		resp := readProduceAnswer(t, c, i)
		for j, p := range cl.parts {
			sp := resp.Topics[j].Partitions[0]
			if sp.ErrorCode != p.wantErr || (p.wantBase >= 0 && sp.BaseOffset != p.wantBase) {
				t.Fatalf("answer %d, %s/%d: error %d at %d, want error %d at %d", i, p.topic, p.partition, sp.ErrorCode, sp.BaseOffset, p.wantErr, p.wantBase)
			}
		}
	}
	ends, err := b.Admin().ListEndOffsets(testCtx(t), "grouped", "grouped-too")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		topic     string
		partition int32
		end       int64
	}{{"grouped", 0, 13}, {"grouped", 1, 4}, {"grouped-too", 0, 6}} {
		if o, _ := ends.Lookup(want.topic, want.partition); o.Offset != want.end {
			t.Fatalf("%s/%d ends at %d, want %d", want.topic, want.partition, o.Offset, want.end)
		}
	}
	// What was stored reads back whole, in order.
	recs := consumeN(t, b, "grouped", 17)
	next := map[int32]int64{}
	for _, r := range recs {
		if r.Offset != next[r.Partition] {
			t.Fatalf("record of partition %d at %d, want %d", r.Partition, r.Offset, next[r.Partition])
		}
		next[r.Partition]++
	}
}

// readProduceAnswer reads the next frame from c, a version 9 Produce
// answer that must carry correlation id corr.
func readProduceAnswer(t *testing.T, c net.Conn, corr int) *kmsg.ProduceResponse {
	t.Helper()
	body := readFrame(t, c)
	if id := int32(binary.BigEndian.Uint32(body)); id != int32(corr) {
		t.Fatalf("answer %d has correlation id %d", corr, id)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = 9
	if err := resp.ReadFrom(body[5:]); err != nil {
		t.Fatalf("answer %d: %v", corr, err)
	}
	return resp
}
