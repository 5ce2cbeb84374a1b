package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// storedCodecs fetches a partition's batches from offset 0 as a consumer
// would and returns the codec of each, in order: what the log holds.
func storedCodecs(t *testing.T, cl *kgo.Client, topic string, end int64) []recordbatch.Codec {
	t.Helper()
	td, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var codecs []recordbatch.Codec
	for off := int64(0); off < end; {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 1, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, td[topic].ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = off, 1<<20, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(testCtx(t), cl)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 {
			t.Fatalf("fetch %s at %d: %v", topic, off, kerr.ErrorForCode(p.ErrorCode))
		}
		for buf := p.RecordBatches; len(buf) > 0; {
			b, rest, err := recordbatch.Next(buf)
			if err != nil || b == nil {
				break // a partial last batch
			}
			if err := recordbatch.Check(b); err != nil {
				t.Fatalf("stored batch at %d: %v", b.BaseOffset(), err)
			}
			codecs = append(codecs, b.Codec())
			off = b.NextOffset()
			buf = rest
		}
	}
	return codecs
}

// TestCompressionTypeRewritesBatches: a topic whose compression.type names
// a codec stores every batch with it, whatever codec its producers used
// (Kafka's LogValidator recompresses the same way); consumers, franz-go and
// librdkafka's kcat, read back exactly what was produced, keys, values,
// headers and timestamps; an idempotent producer's sequences still hold;
// and the bytes rewritten are counted.
func TestCompressionTypeRewritesBatches(t *testing.T) {
	b := brokertest.Start(t)
	producers := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	for _, ct := range []struct {
		typ   string
		codec recordbatch.Codec
		level map[string]*string
	}{
		{"uncompressed", recordbatch.CodecNone, nil},
		{"gzip", recordbatch.CodecGzip, map[string]*string{"compression.gzip.level": kadm.StringPtr("9")}},
		{"snappy", recordbatch.CodecSnappy, nil},
		{"lz4", recordbatch.CodecLZ4, map[string]*string{"compression.lz4.level": kadm.StringPtr("1")}},
		{"zstd", recordbatch.CodecZstd, map[string]*string{"compression.zstd.level": kadm.StringPtr("19")}},
	} {
		t.Run(ct.typ, func(t *testing.T) {
			topic := "stored-" + ct.typ
			configs := map[string]*string{"compression.type": kadm.StringPtr(ct.typ)}
			for k, v := range ct.level {
				configs[k] = v
			}
			createTopic(t, b.Admin(), topic, 1, configs)
			var want []*kgo.Record
			ts := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			// One producer per codec, each an idempotent one (franz-go's
			// default), each writing batches of many records.
			for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
				cl := b.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(producers[name]), kgo.ProducerLinger(5*time.Millisecond))
				var recs []*kgo.Record
				for i := range 200 {
					r := &kgo.Record{
						Key:       []byte(fmt.Sprintf("%s-%d", name, i%13)),
						Value:     []byte(fmt.Sprintf(`{"from":%q,"n":%d,"pad":%q}`, name, i, strings.Repeat("event ", i%40))),
						Headers:   []kgo.RecordHeader{{Key: "codec", Value: []byte(name)}},
						Timestamp: ts.Add(time.Duration(len(want)+i) * time.Millisecond),
					}
					if i%50 == 7 {
						r.Value = nil // a tombstone survives the rewrite as one
					}
					recs = append(recs, r)
				}
				produceSync(t, cl, recs...)
				cl.Close()
				want = append(want, recs...)
			}
			cl := b.Client()
			for i, c := range storedCodecs(t, cl, topic, int64(len(want))) {
				if c != ct.codec {
					t.Fatalf("batch %d is stored with %s, want %s", i, c, ct.codec)
				}
			}
			got := consumeN(t, b, topic, len(want))
			if len(got) != len(want) {
				t.Fatalf("%d records back, want %d", len(got), len(want))
			}
			for i, g := range got {
				w := want[i]
				if g.Offset != int64(i) || !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || (g.Value == nil) != (w.Value == nil) ||
					!g.Timestamp.Equal(w.Timestamp) || len(g.Headers) != 1 || string(g.Headers[0].Value) != string(w.Headers[0].Value) {
					t.Fatalf("record %d: got offset %d key %q value %q ts %v headers %v, want key %q value %q ts %v headers %v",
						i, g.Offset, g.Key, g.Value, g.Timestamp, g.Headers, w.Key, w.Value, w.Timestamp, w.Headers)
				}
			}
			out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o|%k|%s\n")
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(want) {
				t.Fatalf("kcat read %d records, want %d", len(lines), len(want))
			}
			for i, line := range lines {
				if exp := strconv.Itoa(i) + "|" + string(want[i].Key) + "|" + string(want[i].Value); line != exp {
					t.Fatalf("kcat record %d: %q, want %q", i, line, exp)
				}
			}
		})
	}
	s := gather(t, b.Registry)
	received, _ := s.get("shale_produce_recompressed_bytes_total", "side=received")
	stored, _ := s.get("shale_produce_recompressed_bytes_total", "side=stored")
	if received == 0 || stored == 0 {
		t.Fatalf("recompressed bytes: received %v, stored %v", received, stored)
	}
}

// TestCompressionTypeChangesLiveAndBoundsTheRewrite: compression.type
// altered on a live topic applies to the batches produced after it; a batch
// that grows past max.message.bytes once rewritten (a compressed batch of
// a topic that stores batches uncompressed) is refused with
// MESSAGE_TOO_LARGE, as Kafka refuses it, and nothing of it is stored.
func TestCompressionTypeChangesLiveAndBoundsTheRewrite(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	createTopic(t, adm, "live", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("20000")})
	cl := b.Client(kgo.DefaultProduceTopic("live"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	produceSync(t, cl, &kgo.Record{Value: []byte("before")})
	alter := func(v string) {
		t.Helper()
		rs, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "compression.type", Value: kadm.StringPtr(v)}}, "live")
		if err == nil {
			_, err = rs.On("live", nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	alter("zstd")
	// The broker applies the change from its metadata watch: produce
	// until a batch comes back rewritten.
	brokertest.WaitFor(t, 10*time.Second, "zstd batches", func() (bool, string) {
		produceSync(t, cl, &kgo.Record{Value: []byte("after")})
		codecs := storedCodecs(t, b.Client(), "live", 2)
		last := codecs[len(codecs)-1]
		return last == recordbatch.CodecZstd, fmt.Sprintf("the last batch is stored with %s", last)
	})
	if c := storedCodecs(t, b.Client(), "live", 1)[0]; c != recordbatch.CodecNone {
		t.Fatalf("the batch produced before the change is stored with %s", c)
	}

	alter("uncompressed")
	// 64 KiB of zeros in one record: a few hundred bytes with gzip, more
	// than max.message.bytes stored uncompressed.
	body := recordbatch.AppendRecord(nil, recordbatch.Record{Value: make([]byte, 64<<10)})
	gz, err := recordbatch.Compress(recordbatch.CodecGzip, body)
	if err != nil {
		t.Fatal(err)
	}
	batch := rawBatch(recordbatch.CodecGzip, 1, time.Now().UnixMilli(), gz)
	brokertest.WaitFor(t, 10*time.Second, "the rewrite refused", func() (bool, string) {
		code := rawProduce(t, b.Client(), "live", batch).ErrorCode
		return code == kerr.MessageTooLarge.Code, fmt.Sprintf("error %v", kerr.ErrorForCode(code))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.ListEndOffsets(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := offs.Lookup("live", 0)
	for _, c := range storedCodecs(t, b.Client(), "live", end.Offset) {
		if c == recordbatch.CodecGzip {
			t.Fatal("a refused batch was stored")
		}
	}
}
