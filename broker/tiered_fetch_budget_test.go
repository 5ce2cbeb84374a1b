package broker_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

// TestARemoteBatchBeyondTheFetchBudgetIsNotSkipped: a fetch of two tiered
// partitions whose first takes most of the response's bytes leaves the
// second too few for its next batch, which is in the bucket. The second
// partition is answered with part of that batch, or nothing, and never
// with records of the local log, which start past the bucket's (a
// consumer would skip every record in between), nor OFFSET_OUT_OF_RANGE.
// A consumer of both partitions with such a budget reads every record of
// each, in order.
func TestARemoteBatchBeyondTheFetchBudgetIsNotSkipped(t *testing.T) {
	b := startTiered(t, objectstore.NewMem())
	const topic = "budget"
	str := func(s string) *string { return &s }
	created := createTopic(t, b.Admin(), topic, 2, map[string]*string{
		"segment.bytes":         str("65536"),
		"local.retention.bytes": str("1"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	})
	cl := b.Client(kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	value := func(p int32, i int, size int) []byte {
		v := fmt.Sprintf("p%d-%06d-", p, i)
		return []byte(v + strings.Repeat("v", size-len(v)))
	}
	// Ten batches of about 40 KiB a partition, which go to the bucket and
	// leave the disk, then 100 batches of one 1 KiB record.
	const big, small = 400, 100
	for i := 0; i < big; i += 40 {
		var recs []*kgo.Record
		for p := int32(0); p < 2; p++ {
			for j := i; j < i+40; j++ {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: value(p, j, 1000)})
			}
		}
		produceSync(t, cl, recs...)
	}
	for i := big; i < big+small; i++ {
		produceSync(t, cl, &kgo.Record{Topic: topic, Partition: 0, Value: value(0, i, 1000)}, &kgo.Record{Topic: topic, Partition: 1, Value: value(1, i, 1000)})
	}
	brokertest.WaitFor(t, 30*time.Second, "the big batches off both partitions' disks", func() (bool, string) {
		var starts []int64
		for p := 0; p < 2; p++ {
			starts = append(starts, firstLocalBase(b, topic, p))
		}
		return starts[0] >= big && starts[1] >= big, fmt.Sprintf("local logs start at %v", starts)
	})

	// Partition 0 takes one 40 KiB batch of the 60,000 bytes; partition
	// 1's first batch, also 40 KiB, does not fit in what is left.
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12
	req.ReplicaID, req.ReplicaState.ID = -1, -1
	req.MaxWaitMillis = 10
	req.MaxBytes = 60000
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, created.ID
	for p := int32(0); p < 2; p++ {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.CurrentLeaderEpoch, rp.PartitionMaxBytes = p, 0, -1, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	brokertest.WaitFor(t, 30*time.Second, "a fetch that reads partition 0's first remote batch", func() (bool, string) {
		resp, err := req.RequestWith(testCtx(t), b.Client())
		if err != nil {
			t.Fatal(err)
		}
		parts := resp.Topics[0].Partitions
		p0, p1 := parts[0], parts[1]
		if p0.Partition != 0 {
			p0, p1 = p1, p0
		}
		if p1.ErrorCode != 0 {
			t.Fatalf("partition 1 answered error %d: it is not out of range", p1.ErrorCode)
		}
		if base, ok := firstBatchBase(p1.RecordBatches); ok && base != 0 {
			t.Fatalf("partition 1 answered from offset %d for a fetch at 0: the records between would be skipped", base)
		}
		base, ok := firstBatchBase(p0.RecordBatches)
		return ok && base == 0, fmt.Sprintf("partition 0: error %d, %d bytes", p0.ErrorCode, len(p0.RecordBatches))
	})

	cons := b.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(60000))
	defer cons.Close()
	next := map[int32]int64{}
	ctx := testCtx(t)
	for next[0] < big+small || next[1] < big+small {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %v of %d records a partition: %v", next, big+small, err)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("partition %d: %v", p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != next[r.Partition] || !bytes.Equal(r.Value, value(r.Partition, int(r.Offset), 1000)) {
				t.Fatalf("partition %d: offset %d (%.12s) where %d was next", r.Partition, r.Offset, r.Value, next[r.Partition])
			}
			next[r.Partition]++
		})
	}
}

// firstLocalBase is the base offset of the first segment of a partition on
// b's disk (-1 when none).
func firstLocalBase(b *brokertest.Broker, topic string, partition int) int64 {
	first := int64(-1)
	files, _ := filepath.Glob(filepath.Join(brokertest.LogDir(b.Dir), topic+"-"+strconv.Itoa(partition), "*.log"))
	for _, f := range files {
		n, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64)
		if _, serr := os.Stat(f); err == nil && serr == nil && (first < 0 || n < first) {
			first = n
		}
	}
	return first
}

// firstBatchBase is the base offset of the first batch header in a fetch
// answer's record bytes (ok false when they hold none).
func firstBatchBase(data []byte) (int64, bool) {
	if len(data) < recordbatch.HeaderSize {
		return 0, false
	}
	return recordbatch.Batch(data).BaseOffset(), true
}
