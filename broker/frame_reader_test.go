package broker_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestPipelinedFramesOfEverySizeAreAnsweredInOrder sends, in one write and
// then byte by byte, frames that take each of the reader's paths: produce
// requests small enough for the connection's own buffer, ones read in
// place in a shared chunk, one larger than a chunk (whose beginning was
// read with the frames before it), and other requests copied out of the
// chunk because their handlers keep them, and a fetch answered at once with
// record data. Every request is answered, in order, and every batch is
// stored where its answer says.
func TestPipelinedFramesOfEverySizeAreAnsweredInOrder(t *testing.T) {
	// Sent byte by byte, the 600 KB frame takes a write per byte: on a
	// loaded machine under the race detector, longer than the default
	// 30 s the broker gives a request to arrive, after which it closes
	// the connection (as it must for a stalled client).
	b := brokertest.Start(t, func(c *broker.Config) { c.RequestReadTimeout = 5 * time.Minute })
	createTopic(t, b.Admin(), "pipelined", 1, nil)
	produce := func(values, valueBytes int) kmsg.Request {
		recs := make([]recordbatch.Record, values)
		for i := range recs {
			recs[i].Value = make([]byte, valueBytes)
			recs[i].Value[0] = byte(i)
		}
		batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()}, recs)
		if err != nil {
			t.Fatal(err)
		}
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 9, 1, 10000
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: "pipelined", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}}}
		return req
	}
	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 9
	versions := kmsg.NewPtrApiVersionsRequest()
	versions.Version = 3
	versions.ClientSoftwareName, versions.ClientSoftwareVersion = "test", "1"
	// A fetch answered at once with record data (a sendfile response,
	// written by the reader between held answers).
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version, fetch.ReplicaID, fetch.MaxBytes = 12, -1, 1<<20
	fetch.Topics = []kmsg.FetchRequestTopic{{Topic: "pipelined", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, FetchOffset: 0, PartitionMaxBytes: 1 << 20, CurrentLeaderEpoch: -1, LastFetchedEpoch: -1, LogStartOffset: -1}}}}
	reqs := []kmsg.Request{
		produce(3, 10),      // the connection's own buffer
		fetch,               // a raw answer
		produce(300, 100),   // a chunk
		meta,                // copied out of the chunk
		produce(300, 100),   //
		produce(60, 10_000), // larger than a chunk
		versions,            //
		produce(1, 1),       //
		produce(300, 100),   //
	}
	var records int64
	for _, r := range reqs {
		if p, ok := r.(*kmsg.ProduceRequest); ok {
			records += int64(recordbatch.Batch(p.Topics[0].Partitions[0].Records).RecordCount())
		}
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("pipeline"))
	var all []byte
	for i, r := range reqs {
		all = append(all, f.AppendRequest(nil, r, int32(i))...) // it sizes from dst[0]
	}
	for _, split := range []string{"one write", "byte by byte"} {
		t.Run(split, func(t *testing.T) {
			c := dial(t, b.Addr)
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			go func() {
				if split == "one write" {
					c.Write(all)
					return
				}
				for i := range all {
					if _, err := c.Write(all[i : i+1]); err != nil {
						return
					}
				}
			}()
			var next int64 = -1
			for i, r := range reqs {
				body := readFrame(t, c)
				if id := int32(binary.BigEndian.Uint32(body)); id != int32(i) {
					t.Fatalf("answer %d has correlation id %d", i, id)
				}
				if _, ok := r.(*kmsg.FetchRequest); ok {
					resp := kmsg.NewPtrFetchResponse()
					resp.Version = 12
					if err := resp.ReadFrom(body[5:]); err != nil {
						t.Fatalf("answer %d: %v", i, err)
					}
					if sp := resp.Topics[0].Partitions[0]; sp.ErrorCode != 0 || len(sp.RecordBatches) == 0 {
						t.Fatalf("answer %d: fetch error %d, %d bytes of records", i, sp.ErrorCode, len(sp.RecordBatches))
					}
					continue
				}
				p, ok := r.(*kmsg.ProduceRequest)
				if !ok {
					continue
				}
				resp := kmsg.NewPtrProduceResponse()
				resp.Version = p.Version
				if err := resp.ReadFrom(body[5:]); err != nil { // v9: flexible header
					t.Fatalf("answer %d: %v", i, err)
				}
				sp := resp.Topics[0].Partitions[0]
				if sp.ErrorCode != 0 {
					t.Fatalf("answer %d: error %d", i, sp.ErrorCode)
				}
				if next >= 0 && sp.BaseOffset != next {
					t.Fatalf("answer %d: base offset %d, want %d", i, sp.BaseOffset, next)
				}
				next = sp.BaseOffset + int64(recordbatch.Batch(p.Topics[0].Partitions[0].Records).RecordCount())
			}
		})
	}
	ends, err := b.Admin().ListEndOffsets(testCtx(t), "pipelined")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("pipelined", 0); o.Offset != 2*records {
		t.Fatalf("end offset %d, want %d", o.Offset, 2*records)
	}
	// What was stored reads back whole: no frame was overwritten while
	// its batch was appended.
	cl := b.Client(kgo.ConsumeTopics("pipelined"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got int64
	for got < 2*records {
		fs := cl.PollFetches(testCtx(t))
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != got {
				t.Fatalf("record at offset %d, want %d", r.Offset, got)
			}
			got++
		})
	}
}
