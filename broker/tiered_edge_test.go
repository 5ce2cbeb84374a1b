package broker_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// edgeBatch is how many records each produced batch of the edge tests
// holds: offsets inside a batch are "mid-batch".
const edgeBatch = 10

// edgeTs is the timestamp of record i of the edge tests: 10 ms apart, so
// a timestamp between two records exists.
func edgeTs(base int64, i int) int64 { return base + 10*int64(i) }

// produceEdge produces records from to to-1 of partition p of topic, in
// batches of edgeBatch, with edgeTs timestamps.
func produceEdge(t *testing.T, cl *kgo.Client, p int32, base int64, from, to int) {
	t.Helper()
	for i := from; i < to; i += edgeBatch {
		var recs []*kgo.Record
		for j := i; j < min(i+edgeBatch, to); j++ {
			recs = append(recs, &kgo.Record{Partition: p, Key: []byte(strconv.Itoa(j)), Value: tieredValue(j), Timestamp: time.UnixMilli(edgeTs(base, j))})
		}
		produceSync(t, cl, recs...)
	}
}

// listOffsetP asks for one timestamp of one partition; it returns the
// offset, timestamp, epoch and error code.
func listOffsetP(t *testing.T, cl *kgo.Client, topic string, p int32, ts int64, isolation int8) (int64, int64, int32, int16) {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = 9
	req.IsolationLevel = isolation
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition = p
	rp.Timestamp = ts
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Topics[0].Partitions[0]
	return sp.Offset, sp.Timestamp, sp.LeaderEpoch, sp.ErrorCode
}

type edgeFetchPart struct {
	p      int32
	offset int64
	max    int32
}

type edgeFetchResult struct {
	code      int16
	hw, start int64
	batches   []recordbatch.Batch
	bytes     int
}

// rawFetch sends one Fetch (up to v12, no session, MinBytes 0) and parses the
// batches of each partition.
func rawFetch(t *testing.T, cl *kgo.Client, topic string, maxBytes int32, isolation int8, parts ...edgeFetchPart) map[int32]edgeFetchResult {
	t.Helper()
	return rawFetchV(t, cl, 12, topic, maxBytes, isolation, parts...)
}

func rawFetchV(t *testing.T, cl *kgo.Client, version int16, topic string, maxBytes int32, isolation int8, parts ...edgeFetchPart) map[int32]edgeFetchResult {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.Version = version
	req.ReplicaID = -1
	req.MaxWaitMillis = 0
	req.MinBytes = 0
	req.MaxBytes = maxBytes
	req.IsolationLevel = isolation
	req.SessionEpoch = -1
	tds, err := kadm.NewClient(cl).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rt.TopicID = tds[topic].ID
	for _, fp := range parts {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = fp.p
		rp.FetchOffset = fp.offset
		rp.PartitionMaxBytes = fp.max
		rp.CurrentLeaderEpoch = -1
		rp.LastFetchedEpoch = -1
		rp.LogStartOffset = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("fetch: top-level error %d", resp.ErrorCode)
	}
	out := map[int32]edgeFetchResult{}
	for _, st := range resp.Topics {
		for _, sp := range st.Partitions {
			r := edgeFetchResult{code: sp.ErrorCode, hw: sp.HighWatermark, start: sp.LogStartOffset, bytes: len(sp.RecordBatches)}
			for rest := sp.RecordBatches; len(rest) > 0; {
				b, next, err := recordbatch.Next(rest)
				if err != nil {
					break // a partial last batch, as Kafka may send
				}
				if err := recordbatch.Check(b); err != nil {
					t.Fatalf("fetch %d: batch at %d: %v", sp.Partition, b.BaseOffset(), err)
				}
				r.batches = append(r.batches, b)
				rest = next
			}
			out[sp.Partition] = r
		}
	}
	return out
}

// edgeSetup starts MinIO and a tiered broker, creates topic with two
// partitions (64 KiB segments, one byte kept locally), produces n records
// to partition 0 and 20 to partition 1, and waits until partition 0's
// local log starts past half of it.
func edgeSetup(t *testing.T, topic string, n int, extra map[string]string) (*brokertest.Broker, *objectstore.S3, *kgo.Client, int64) {
	t.Helper()
	srv := miniotest.Start(t)
	s3 := srv.NewS3(t, nil)
	b := startTiered(t, s3)
	str := func(s string) *string { return &s }
	cfg := map[string]*string{
		"segment.bytes":         str("65536"),
		"local.retention.bytes": str("1"),
		"retention.ms":          str("-1"),
		"file.delete.delay.ms":  str("1"),
	}
	for k, v := range extra {
		cfg[k] = str(v)
	}
	createTopic(t, b.Admin(), topic, 2, cfg)
	base := time.Now().Add(-time.Hour).UnixMilli()
	pc := tieredProducer(b, topic, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer pc.Close()
	produceEdge(t, pc, 0, base, 0, n)
	produceEdge(t, pc, 1, base, 0, 20)
	cl := b.Client()
	// Every sealed segment uploaded and gone, the active one alone left:
	// the local log start moves no more (with a sealed one still on its
	// way, its upload, which waits for its fsync, could move it under a
	// test that read it).
	waitFor(t, "uploads and local retention", 60*time.Second, func() bool {
		return localSegments(t, b, topic) == 1 && listOffset(t, cl, topic, -4) > int64(n/2)
	})
	return b, s3, cl, base
}

// TestTieredEdgeListOffsetsAndFetch probes, on a real MinIO, the Kafka
// semantics of ListOffsets and Fetch around the boundary between the
// remote and the local log.
func TestTieredEdgeListOffsetsAndFetch(t *testing.T) {
	const topic, n = "edge", 1200
	b, _, cl, base := edgeSetup(t, topic, n, nil)
	localStart := listOffset(t, cl, topic, -4)
	t.Logf("local log starts at %d of %d", localStart, n)

	t.Run("ListOffsets", func(t *testing.T) {
		type want struct {
			ts      int64
			off, rt int64
		}
		cases := []want{
			{-2, 0, -1},
			{-1, n, -1},
			{-4, localStart, -1},
			{-3, n - 1, edgeTs(base, n-1)},
			{base - 100000, 0, base},                  // before everything
			{base, 0, base},                           // the first record
			{edgeTs(base, 5), 5, edgeTs(base, 5)},     // mid-batch, remote
			{edgeTs(base, 5) - 3, 5, edgeTs(base, 5)}, // between records, remote
			{edgeTs(base, int(localStart)-1), localStart - 1, edgeTs(base, int(localStart)-1)}, // last remote
			{edgeTs(base, int(localStart)-1) + 1, localStart, edgeTs(base, int(localStart))},   // between the last remote and the first local
			{edgeTs(base, int(localStart)), localStart, edgeTs(base, int(localStart))},         // first local
			{edgeTs(base, int(localStart)+3), localStart + 3, edgeTs(base, int(localStart)+3)}, // mid-batch, local
			{edgeTs(base, n-1), n - 1, edgeTs(base, n-1)},                                      // last
			{edgeTs(base, n-1) + 1, -1, -1},                                                    // after everything
		}
		for _, c := range cases {
			for _, iso := range []int8{0, 1} {
				off, ts, epoch, code := listOffsetP(t, cl, topic, 0, c.ts, iso)
				if code != 0 || off != c.off || (c.rt != -1 && ts != c.rt) {
					t.Errorf("isolation %d, timestamp %d: offset %d, timestamp %d, error %d; want offset %d, timestamp %d", iso, c.ts, off, ts, code, c.off, c.rt)
				}
				if off >= 0 && epoch < 0 {
					t.Errorf("isolation %d, timestamp %d: offset %d without a leader epoch", iso, c.ts, off)
				}
			}
		}
		// Partition 1 holds only local records.
		for _, c := range []struct{ ts, off int64 }{{-2, 0}, {-4, 0}, {-1, 20}, {-3, 19}, {base, 0}, {edgeTs(base, 19) + 1, -1}} {
			if off, _, _, code := listOffsetP(t, cl, topic, 1, c.ts, 0); code != 0 || off != c.off {
				t.Errorf("partition 1, timestamp %d: offset %d, error %d; want %d", c.ts, off, code, c.off)
			}
		}
	})

	t.Run("Fetch", func(t *testing.T) {
		// checkFirst fails unless the first batch holds offset.
		checkFirst := func(what string, r edgeFetchResult, offset int64) {
			t.Helper()
			if r.code != 0 {
				t.Errorf("%s: error %d", what, r.code)
				return
			}
			if len(r.batches) == 0 {
				t.Errorf("%s: no whole batch (%d bytes)", what, r.bytes)
				return
			}
			if f := r.batches[0]; f.BaseOffset() > offset || f.LastOffset() < offset {
				t.Errorf("%s: first batch %d-%d does not hold %d", what, f.BaseOffset(), f.LastOffset(), offset)
			}
			if r.hw != n || r.start != 0 {
				t.Errorf("%s: high watermark %d, log start %d", what, r.hw, r.start)
			}
			for i := 1; i < len(r.batches); i++ {
				if r.batches[i].BaseOffset() != r.batches[i-1].NextOffset() {
					t.Errorf("%s: batch %d starts at %d after one ending at %d", what, i, r.batches[i].BaseOffset(), r.batches[i-1].LastOffset())
				}
			}
		}
		for _, off := range []int64{0, 5, 9, 10, localStart / 2, localStart/2 + 7, localStart - 1, localStart - 5, localStart, localStart + 1, n - 1} {
			for _, max := range []int32{1, 100, 5000, 1 << 20} {
				for _, iso := range []int8{0, 1} {
					r := rawFetch(t, cl, topic, max, iso, edgeFetchPart{0, off, max})[0]
					checkFirst("offset "+strconv.FormatInt(off, 10)+" max "+strconv.Itoa(int(max))+" iso "+strconv.Itoa(int(iso)), r, off)
				}
			}
		}
		// Every Fetch version: remote, at the boundary, local.
		for _, v := range []int16{4, 5, 7, 10, 11, 12, 13, 16, 17, 18} {
			vers := kversion.Stable()
			vers.SetMaxKeyVersion(kmsg.Fetch.Int16(), v)
			vc := b.Client(kgo.MaxVersions(vers))
			for _, off := range []int64{5, localStart - 1, localStart} {
				r := rawFetchV(t, vc, v, topic, 1<<20, 0, edgeFetchPart{0, off, 3000})[0]
				if v < 5 {
					if r.start != -1 {
						t.Errorf("version %d answered a log start: the version was not used", v)
					}
					r.start = 0 // not in the response
				}
				checkFirst("version "+strconv.Itoa(int(v))+" offset "+strconv.FormatInt(off, 10), r, off)
			}
		}
		// At the high watermark: nothing, no error. Past it: out of range.
		if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, n, 1 << 20})[0]; r.code != 0 || r.bytes != 0 {
			t.Errorf("fetch at the high watermark: error %d, %d bytes", r.code, r.bytes)
		}
		if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, n + 1, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
			t.Errorf("fetch past the high watermark: error %d", r.code)
		}
		if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, -1, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
			t.Errorf("fetch at -1: error %d", r.code)
		}

		// Several partitions in one fetch: remote, local, remote again.
		rs := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, 3, 20000}, edgeFetchPart{1, 4, 20000})
		checkFirst("p0 remote with p1", rs[0], 3)
		if r := rs[1]; r.code != 0 || len(r.batches) == 0 || r.batches[0].BaseOffset() > 4 || r.hw != 20 {
			t.Errorf("p1 local with p0 remote: %+v", r)
		}
		rs = rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{1, 0, 20000}, edgeFetchPart{0, localStart - 1, 20000})
		checkFirst("p0 remote after p1", rs[0], localStart-1)
		// A response budget smaller than the first batch: the first
		// partition still gets it whole, the second nothing or whole.
		for _, first := range []int32{0, 1} {
			other := 1 - first
			offs := map[int32]int64{0: 17, 1: 2}
			rs = rawFetch(t, cl, topic, 1, 0, edgeFetchPart{first, offs[first], 1}, edgeFetchPart{other, offs[other], 1})
			if r := rs[first]; r.code != 0 || len(r.batches) != 1 {
				t.Errorf("budget 1, first partition %d: error %d, %d batches, %d bytes", first, r.code, len(r.batches), r.bytes)
			}
			if r := rs[other]; r.code != 0 || r.bytes != 0 {
				t.Errorf("budget 1, second partition %d: error %d, %d bytes", other, r.code, r.bytes)
			}
		}
	})

	t.Run("franz-go", func(t *testing.T) {
		// A consumer starting mid-batch in the remote log and one at
		// the local log start get exactly the records from there.
		for _, from := range []int64{7, localStart - 3, localStart} {
			c := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(from)}}), kgo.FetchMaxPartitionBytes(1))
			ctx := testCtx(t)
			next := from
			for next < n {
				fs := c.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("from %d: consumed up to %d", from, next)
				}
				fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("from %d: %v", from, err) })
				for _, r := range fs.Records() {
					if r.Offset != next || !bytes.Equal(r.Value, tieredValue(int(next))) || r.Timestamp.UnixMilli() != edgeTs(base, int(next)) {
						t.Fatalf("from %d: record %d at offset %d", from, next, r.Offset)
					}
					next++
				}
			}
			c.Close()
		}
	})

	t.Run("kcat", func(t *testing.T) {
		brokertest.KcatPath(t)
		out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o|%k|%T|%s\n")
		var want strings.Builder
		for i := range n {
			want.WriteString(strconv.Itoa(i) + "|" + strconv.Itoa(i) + "|" + strconv.FormatInt(edgeTs(base, i), 10) + "|" + string(tieredValue(i)) + "\n")
		}
		if out != want.String() {
			got := strings.Split(out, "\n")
			w := strings.Split(want.String(), "\n")
			for i := range min(len(got), len(w)) {
				if got[i] != w[i] {
					t.Fatalf("kcat line %d: %.60q, want %.60q (%d lines)", i, got[i], w[i], len(got))
				}
			}
			t.Fatalf("kcat: %d lines, want %d", len(got), len(w))
		}
		// librdkafka's offset-for-timestamp start (-o s@ts) and
		// an offset relative to the end, landing in the remote log.
		for _, c := range []struct{ from, want string }{
			{"s@" + strconv.FormatInt(edgeTs(base, 5)-3, 10), "5\n6\n7\n"},
			{"s@" + strconv.FormatInt(edgeTs(base, int(localStart)-1)+1, 10), strconv.FormatInt(localStart, 10) + "\n" + strconv.FormatInt(localStart+1, 10) + "\n" + strconv.FormatInt(localStart+2, 10) + "\n"},
			{strconv.Itoa(-(n - 11)), "11\n12\n13\n"},
		} {
			if out := brokertest.Kcat(t, "", "-b", b.Addr, "-C", "-t", topic, "-p", "0", "-o", c.from, "-c", "3", "-e", "-q", "-f", "%o\n"); out != c.want {
				t.Errorf("kcat -o %s: %q, want %q", c.from, out, c.want)
			}
		}
	})

	t.Run("OffsetForLeaderEpoch", func(t *testing.T) {
		_, _, epoch, _ := listOffsetP(t, cl, topic, 0, -1, 0)
		for _, e := range []int32{epoch, epoch - 1} {
			if e < 0 {
				continue
			}
			req := kmsg.NewPtrOffsetForLeaderEpochRequest()
			req.ReplicaID = -1
			rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
			rt.Topic = topic
			rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
			rp.Partition = 0
			rp.CurrentLeaderEpoch = epoch
			rp.LeaderEpoch = e
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(testCtx(t), cl)
			if err != nil {
				t.Fatal(err)
			}
			sp := resp.Topics[0].Partitions[0]
			t.Logf("epoch %d: error %d, leader epoch %d, end %d", e, sp.ErrorCode, sp.LeaderEpoch, sp.EndOffset)
			if e == epoch && (sp.ErrorCode != 0 || sp.EndOffset != n || sp.LeaderEpoch != epoch) {
				t.Errorf("epoch %d (current): error %d, epoch %d, end %d", e, sp.ErrorCode, sp.LeaderEpoch, sp.EndOffset)
			}
		}
	})
}

// TestTieredEdgeDeleteRecords moves the log start into the remote log
// (mid-batch), then into the local log, and checks what Fetch,
// ListOffsets and the bucket show.
func TestTieredEdgeDeleteRecords(t *testing.T) {
	const topic, n = "edgedel", 1200
	b, s3, cl, base := edgeSetup(t, topic, n, nil)
	adm := kadm.NewClient(cl)
	localStart := listOffset(t, cl, topic, -4)
	deleteTo := func(at int64) {
		t.Helper()
		dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: at}}})
		if err != nil || dr.Error() != nil {
			t.Fatalf("delete records to %d: %v %v", at, err, dr.Error())
		}
		if lw := dr[topic][0].LowWatermark; lw != at {
			t.Fatalf("delete records to %d: low watermark %d", at, lw)
		}
	}
	check := func(start int64) {
		t.Helper()
		if off, _, _, code := listOffsetP(t, cl, topic, 0, -2, 0); code != 0 || off != start {
			t.Errorf("log start %d: earliest %d, error %d", start, off, code)
		}
		if off, _, _, code := listOffsetP(t, cl, topic, 0, -4, 0); code != 0 || off < start {
			t.Errorf("log start %d: earliest local %d, error %d", start, off, code)
		}
		for _, ts := range []int64{base - 1000, base, edgeTs(base, int(start)-1)} {
			if off, rts, _, code := listOffsetP(t, cl, topic, 0, ts, 0); code != 0 || off != start || rts != edgeTs(base, int(start)) {
				t.Errorf("log start %d: offset for timestamp %d: %d (timestamp %d), error %d", start, ts, off, rts, code)
			}
		}
		if off, _, _, code := listOffsetP(t, cl, topic, 0, -3, 0); code != 0 || off != n-1 {
			t.Errorf("log start %d: max timestamp offset %d, error %d", start, off, code)
		}
		if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, start - 1, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
			t.Errorf("log start %d: fetch below it: error %d, %d bytes", start, r.code, r.bytes)
		}
		r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, start, 100})[0]
		if r.code != 0 || len(r.batches) == 0 || r.batches[0].BaseOffset() > start || r.batches[0].LastOffset() < start || r.start != start {
			t.Errorf("log start %d: fetch at it: %+v", start, r)
		}
		if first := firstRecord(t, b, topic); first == nil || first.Offset != start {
			t.Errorf("log start %d: a consumer from the start reads %+v first", start, first)
		}
	}
	remoteStart := localStart/2 + 3 // mid-batch, remote
	deleteTo(remoteStart)
	check(remoteStart)
	// Below the log start: nothing moves, the answer is the start.
	dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: 5}}})
	if err != nil || dr.Error() != nil || dr[topic][0].LowWatermark != remoteStart {
		t.Errorf("delete records below the log start: %v %v, low watermark %d", err, dr.Error(), dr[topic][0].LowWatermark)
	}
	// Past the high watermark: OFFSET_OUT_OF_RANGE.
	dr, err = adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: n + 5}}})
	if err != nil || !errors.Is(dr[topic][0].Err, kerr.OffsetOutOfRange) {
		t.Errorf("delete records past the high watermark: %v %v", err, dr[topic][0].Err)
	}
	check(remoteStart)
	localTo := localStart + 13 // mid-batch, local
	deleteTo(localTo)
	check(localTo)
	waitFor(t, "remote retention below the log start", 30*time.Second, func() bool {
		m := remoteManifest(t, s3, adm, topic)
		for _, s := range m.Segments {
			if s.NextOffset <= localTo {
				return false
			}
		}
		return true
	})
	waitFor(t, "segment objects below the log start to go", 30*time.Second, func() bool {
		objs, named, _ := segmentObjects(t, s3, adm, topic)
		for _, o := range objs {
			if !named[o] {
				return false
			}
		}
		return true
	})
	check(localTo)
}

// TestTieredEdgeRetentionUnderAReader: remote retention deletes segments
// while consumers read them; a raw fetch below the new start is out of
// range, and a franz-go consumer resetting to the earliest offset moves
// on, reading only correct records.
func TestTieredEdgeRetentionUnderAReader(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"retention.bytes", strconv.Itoa(3 * 65536)},
		{"retention.ms", "1800000"}, // the records are an hour old
	} {
		t.Run(c.name, func(t *testing.T) { edgeRetentionUnderAReader(t, c.name, c.value) })
	}
}

func edgeRetentionUnderAReader(t *testing.T, name, value string) {
	const topic, n = "edgeret", 1500
	b, _, cl, _ := edgeSetup(t, topic, n, nil)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		read, jumps int
		err         string
	}
	done := make(chan result, 1)
	// The test's cleanup closes the consumer, once: franz-go's Close must
	// not run twice at once (a Close of its own after the result was
	// sent raced with it).
	c := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(4000))
	read := func() result {
		var res result
		next := int64(-1)
		for next < n {
			fs := c.PollFetches(ctx)
			if ctx.Err() != nil {
				res.err = "deadline at offset " + strconv.FormatInt(next, 10)
				break
			}
			for _, r := range fs.Records() {
				if next >= 0 && r.Offset != next {
					if r.Offset < next {
						res.err = "went back from " + strconv.FormatInt(next, 10) + " to " + strconv.FormatInt(r.Offset, 10)
						return res
					}
					res.jumps++
				}
				if !bytes.Equal(r.Value, tieredValue(int(r.Offset))) {
					res.err = "wrong value at " + strconv.FormatInt(r.Offset, 10)
					return res
				}
				res.read++
				next = r.Offset + 1
			}
			time.Sleep(20 * time.Millisecond) // a slow reader
		}
		return res
	}
	go func() { done <- read() }()
	time.Sleep(300 * time.Millisecond)
	rs, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: name, Value: &value}}, topic)
	if err == nil {
		err = rs[0].Err
	}
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "remote retention", 60*time.Second, func() bool { return listOffset(t, cl, topic, -2) > 0 })
	start := listOffset(t, cl, topic, -2)
	t.Logf("log start moved to %d", start)
	if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, start - 1, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
		t.Errorf("fetch below the retained log: error %d, %d bytes", r.code, r.bytes)
	}
	if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, 0, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
		t.Errorf("fetch at 0: error %d, %d bytes", r.code, r.bytes)
	}
	res := <-done
	t.Logf("consumer read %d records, %d jumps", res.read, res.jumps)
	if res.err != "" {
		t.Fatal(res.err)
	}
}

// tsRecord is what a consumer read of one record: its offset and
// timestamp.
type tsRecord struct{ off, ts int64 }

// readTimestamps reads partition 0 of topic from start to end with
// franz-go, the oracle of the timestamp checks.
func readTimestamps(t *testing.T, b *brokertest.Broker, topic string, start, end int64) []tsRecord {
	t.Helper()
	c := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(start)}}))
	defer c.Close()
	ctx := testCtx(t)
	var out []tsRecord
	for int64(len(out)) < end-start {
		fs := c.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), end-start)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading %s: %v", topic, err) })
		for _, r := range fs.Records() {
			if r.Offset != start+int64(len(out)) {
				t.Fatalf("record at %d, want %d", r.Offset, start+int64(len(out)))
			}
			out = append(out, tsRecord{r.Offset, r.Timestamp.UnixMilli()})
		}
	}
	return out
}

// checkTimestampLookups compares ListOffsets by timestamp (and -3) for
// every record's timestamp, and one below and above it, with the first
// record of recs (the readable log) at or after it, as Kafka answers.
func checkTimestampLookups(t *testing.T, cl *kgo.Client, topic string, recs []tsRecord) {
	t.Helper()
	want := func(ts int64) (int64, int64) {
		for _, r := range recs {
			if r.ts >= ts {
				return r.off, r.ts
			}
		}
		return -1, -1
	}
	seen := map[int64]bool{}
	bad := 0
	for _, r := range recs {
		for _, ts := range []int64{r.ts - 1, r.ts, r.ts + 1} {
			if seen[ts] {
				continue
			}
			seen[ts] = true
			woff, wts := want(ts)
			off, gts, _, code := listOffsetP(t, cl, topic, 0, ts, 0)
			if code != 0 || off != woff || gts != wts {
				if bad++; bad <= 10 {
					t.Errorf("timestamp %d: offset %d (timestamp %d), error %d; want offset %d (timestamp %d)", ts, off, gts, code, woff, wts)
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d wrong answers in all", bad)
	}
	maxRec := recs[0]
	for _, r := range recs {
		if r.ts > maxRec.ts {
			maxRec = r
		}
	}
	if off, ts, _, code := listOffsetP(t, cl, topic, 0, -3, 0); code != 0 || off != maxRec.off || ts != maxRec.ts {
		t.Errorf("max timestamp: offset %d (timestamp %d), error %d; want offset %d (timestamp %d)", off, ts, code, maxRec.off, maxRec.ts)
	}
}

// TestTieredEdgeTimestamps: ListOffsets by timestamp and by the largest
// timestamp agree with what a consumer reads, for out-of-order create
// times, compressed batches and log-append times, across the remote and
// the local log, before and after DeleteRecords into each.
func TestTieredEdgeTimestamps(t *testing.T) {
	srv := miniotest.Start(t)
	s3 := srv.NewS3(t, nil)
	b := startTiered(t, s3)
	cl := b.Client()
	base := time.Now().Add(-time.Hour).UnixMilli()
	const n = 1200
	// Out of order by up to 1.5 s either way, with the largest
	// timestamp at offset 5 and the next largest at 300.
	jitter := func(i int) int64 {
		switch i {
		case 5:
			return base + 3_000_000
		case 300:
			return base + 2_999_999
		}
		return base + 10*int64(i) + (int64(i*7919)%100-50)*30
	}
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		opts []kgo.Opt
	}{
		{"unordered", nil, nil},
		{"zstd", map[string]string{"segment.bytes": "4096"}, []kgo.Opt{kgo.ProducerBatchCompression(kgo.ZstdCompression())}},
		{"appendtime", map[string]string{"message.timestamp.type": "LogAppendTime"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "ts" + tc.name
			str := func(s string) *string { return &s }
			cfg := map[string]*string{
				"segment.bytes":         str("65536"),
				"local.retention.bytes": str("1"),
				"retention.ms":          str("-1"),
				"file.delete.delay.ms":  str("1"),
			}
			for k, v := range tc.cfg {
				cfg[k] = str(v)
			}
			createTopic(t, b.Admin(), topic, 1, cfg)
			pc := tieredProducer(b, topic, tc.opts...)
			for i := 0; i < n; i += edgeBatch {
				var recs []*kgo.Record
				for j := i; j < i+edgeBatch; j++ {
					recs = append(recs, &kgo.Record{Value: tieredValue(j), Timestamp: time.UnixMilli(jitter(j))})
				}
				produceSync(t, pc, recs...)
				if tc.name == "appendtime" && i%100 == 0 {
					time.Sleep(3 * time.Millisecond) // distinct append times
				}
			}
			pc.Close()
			waitFor(t, "uploads and local retention", 60*time.Second, func() bool {
				return localSegments(t, b, topic) == 1 && listOffset(t, cl, topic, -4) > n/2
			})
			localStart := listOffset(t, cl, topic, -4)
			t.Logf("local log starts at %d", localStart)
			recs := readTimestamps(t, b, topic, 0, n)
			checkTimestampLookups(t, cl, topic, recs)

			adm := kadm.NewClient(cl)
			for _, at := range []int64{6, localStart + 3} {
				dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: at}}})
				if err != nil || dr.Error() != nil {
					t.Fatalf("delete records to %d: %v %v", at, err, dr.Error())
				}
				t.Run("from"+strconv.FormatInt(at, 10), func(t *testing.T) {
					checkTimestampLookups(t, cl, topic, recs[at:])
				})
			}
		})
	}
}

// TestTieredEdgeMaxTimestampBelowLocalLogStart: the record with the
// largest timestamp of the local log is below a DeleteRecords log start;
// ListOffsets -3 answers the largest timestamp of the records left.
func TestTieredEdgeMaxTimestampBelowLocalLogStart(t *testing.T) {
	srv := miniotest.Start(t)
	b := startTiered(t, srv.NewS3(t, nil))
	cl := b.Client()
	const topic = "localmax"
	createTopic(t, b.Admin(), topic, 1, nil)
	base := time.Now().Add(-time.Hour).UnixMilli()
	pc := tieredProducer(b, topic)
	var recs []*kgo.Record
	for i := range 30 {
		ts := base + int64(i)
		switch i {
		case 1:
			ts = base + 3_000_000
		case 20:
			ts = base + 2_999_999
		}
		recs = append(recs, &kgo.Record{Value: tieredValue(i), Timestamp: time.UnixMilli(ts)})
	}
	produceSync(t, pc, recs[:10]...)
	produceSync(t, pc, recs[10:]...)
	if off, _, _, code := listOffsetP(t, cl, topic, 0, -3, 0); code != 0 || off != 1 {
		t.Fatalf("max timestamp: offset %d, error %d; want 1", off, code)
	}
	dr, err := b.Admin().DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: 2}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	if off, ts, _, code := listOffsetP(t, cl, topic, 0, -3, 0); code != 0 || off != 20 || ts != base+2_999_999 {
		t.Fatalf("max timestamp after deleting offset 1: offset %d (timestamp %d), error %d; want 20", off, ts, code)
	}
}

// offsetForEpoch asks partition 0's end offset of epoch.
func offsetForEpoch(t *testing.T, cl *kgo.Client, topic string, current, epoch int32) (int16, int32, int64) {
	t.Helper()
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.ReplicaID = -1
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.CurrentLeaderEpoch = current
	rp.LeaderEpoch = epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Topics[0].Partitions[0]
	return sp.ErrorCode, sp.LeaderEpoch, sp.EndOffset
}

// TestTieredEdgeEpochsOnlyInTheBucket: three leader epochs, the first two
// only in the bucket: OffsetForLeaderEpoch, the epochs ListOffsets and
// Fetch carry, and a consumer from offset 0 agree with Kafka's leader
// epoch cache; after a DeleteRecords into the second epoch too.
func TestTieredEdgeEpochsOnlyInTheBucket(t *testing.T) {
	srv := miniotest.Start(t)
	s3 := srv.NewS3(t, nil)
	b := startTiered(t, s3)
	const topic = "edgeepochs"
	createTieredTopic(t, b, topic)
	cl := b.Client()
	adm := b.Admin()
	bump := func() int32 { return bumpLeaderEpoch(t, b, s3, topic) }
	pc := tieredProducer(b, topic)
	produceTieredValues(t, pc, 0, 400, 10)
	_, _, e0, _ := listOffsetP(t, cl, topic, 0, -1, 0)
	e1 := bump()
	pc.Close()
	pc = tieredProducer(b, topic)
	produceTieredValues(t, pc, 400, 800, 10)
	e2 := bump()
	pc.Close()
	pc = tieredProducer(b, topic)
	produceTieredValues(t, pc, 800, 1200, 10)
	pc.Close()
	waitFor(t, "uploads and local retention past the second epoch", 60*time.Second, func() bool {
		return listOffset(t, cl, topic, -4) > 900
	})
	t.Logf("epochs %d %d %d; local log starts at %d", e0, e1, e2, listOffset(t, cl, topic, -4))

	// cur is the partition's leader epoch: e2, and after the restart one
	// more (the controller elects a restarted leader again, at a new
	// epoch).
	check := func(what string, start int64, cur int32) {
		t.Helper()
		if off, _, _, code := listOffsetP(t, cl, topic, 0, -2, 0); code != 0 || off != start {
			t.Errorf("%s: earliest offset %d, error %d; want %d", what, off, code, start)
		}
		type want struct {
			epoch, wantEpoch int32
			end              int64
		}
		cases := []want{{e0, e0, 400}, {e0 + 1, e0, 400}, {e1, e1, 800}, {e1 + 1, e1, 800}, {e2, e2, 1200}, {cur, cur, 1200}, {cur + 1, -1, -1}}
		for _, c := range cases {
			code, epoch, end := offsetForEpoch(t, cl, topic, cur, c.epoch)
			if c.epoch < e1 && start > 400 {
				// Ended below the log start: at the log start, as
				// Kafka's cache, whose first entry starts there,
				// answers (an epoch before the first known answers
				// itself).
				if code != 0 || (epoch != e0 && epoch != c.epoch) || end != start {
					t.Errorf("%s: epoch %d: error %d, epoch %d, end %d; want epoch %d, end %d (the log start)", what, c.epoch, code, epoch, end, e0, start)
				}
				continue
			}
			if code != 0 || epoch != c.wantEpoch || end != c.end {
				t.Errorf("%s: epoch %d: error %d, epoch %d, end %d; want epoch %d, end %d", what, c.epoch, code, epoch, end, c.wantEpoch, c.end)
			}
		}
		for _, c := range []struct {
			ts    int64
			epoch int32
		}{{-2, map[bool]int32{true: e0, false: e1}[start < 400]}, {-1, e2}, {-4, e2}} {
			if _, _, epoch, code := listOffsetP(t, cl, topic, 0, c.ts, 0); code != 0 || epoch != c.epoch {
				t.Errorf("%s: list offsets %d: epoch %d, error %d; want %d", what, c.ts, epoch, code, c.epoch)
			}
		}
		for _, off := range []int64{start, 399, 400, 799, 800} {
			if off < start {
				continue
			}
			r := rawFetch(t, cl, topic, 1, 0, edgeFetchPart{0, off, 1})[0]
			want := e0
			if off >= 800 {
				want = e2
			} else if off >= 400 {
				want = e1
			}
			if r.code != 0 || len(r.batches) != 1 || r.batches[0].PartitionLeaderEpoch() != want {
				t.Errorf("%s: fetch %d: error %d, %d batches", what, off, r.code, len(r.batches))
			} else if got := r.batches[0].PartitionLeaderEpoch(); got != want {
				t.Errorf("%s: fetch %d: batch epoch %d, want %d", what, off, got, want)
			}
		}
	}
	check("whole log", 0, e2)
	requireTieredRecords(testCtx(t), t, b, topic, 0, 1200)
	dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: 450}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	check("from 450", 450, e2)
	waitFor(t, "remote retention below 450", 30*time.Second, func() bool {
		m := remoteManifest(t, s3, adm, topic)
		return m.Start() == 450 && len(m.Segments) > 0 && m.Segments[0].BaseOffset > 300
	})
	check("from 450 after remote retention", 450, e2)
	b.Restart()
	cl = b.Client()
	waitFor(t, "the restarted broker ready", 30*time.Second, func() bool {
		_, _, _, code := listOffsetP(t, cl, topic, 0, -2, 0)
		if code != 0 {
			t.Logf("after the restart: list offsets: error %d", code)
		}
		return code == 0
	})
	waitFor(t, "the restarted leader at a new epoch", 30*time.Second, func() bool {
		p, err := metadata.NewStore(b.Etcd(), "").Partition(testCtx(t), topic, 0)
		return err == nil && p.LeaderEpoch == e2+1
	})
	waitFor(t, "the restarted leader serving its new epoch", 30*time.Second, func() bool {
		code, _, _ := offsetForEpoch(t, cl, topic, e2+1, e2)
		return code == 0
	})
	check("from 450 after a restart", 450, e2+1)
}

// TestTieredEdgeDeleteEverything: DeleteRecords to the high watermark
// (-1) of a topic whose history is in the bucket leaves an empty log
// starting there; Fetch and ListOffsets answer as Kafka does, and new
// records are read from there.
func TestTieredEdgeDeleteEverything(t *testing.T) {
	const topic, n = "edgeall", 1200
	b, s3, cl, base := edgeSetup(t, topic, n, nil)
	adm := kadm.NewClient(cl)
	dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: -1}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	if lw := dr[topic][0].LowWatermark; lw != n {
		t.Fatalf("low watermark %d, want %d", lw, n)
	}
	for _, c := range []struct{ ts, off int64 }{{-2, n}, {-1, n}, {-3, -1}, {base, -1}, {edgeTs(base, n-1), -1}} {
		if off, _, _, code := listOffsetP(t, cl, topic, 0, c.ts, 0); code != 0 || off != c.off {
			t.Errorf("list offsets %d: offset %d, error %d; want %d", c.ts, off, code, c.off)
		}
	}
	if off, _, _, code := listOffsetP(t, cl, topic, 0, -4, 0); code != 0 || off != n {
		t.Errorf("earliest local: offset %d, error %d; want %d", off, code, n)
	}
	for _, off := range []int64{0, n / 2, n - 1} {
		if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, off, 1 << 20})[0]; r.code != kerr.OffsetOutOfRange.Code {
			t.Errorf("fetch %d: error %d, %d bytes", off, r.code, r.bytes)
		}
	}
	if r := rawFetch(t, cl, topic, 1<<20, 0, edgeFetchPart{0, n, 1 << 20})[0]; r.code != 0 || r.bytes != 0 || r.start != n || r.hw != n {
		t.Errorf("fetch at the end: %+v", r)
	}
	waitFor(t, "remote retention of everything", 30*time.Second, func() bool {
		return len(remoteManifest(t, s3, adm, topic).Segments) == 0
	})
	pc := tieredProducer(b, topic, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceTieredValues(t, pc, n, n+10, 10)
	if first := firstRecord(t, b, topic); first == nil || first.Offset != n || !bytes.Equal(first.Value, tieredValue(n)) {
		t.Errorf("first record after the delete: %+v", first)
	}
	if off, _, _, code := listOffsetP(t, cl, topic, 0, -2, 0); code != 0 || off != n {
		t.Errorf("earliest after new records: offset %d, error %d", off, code)
	}
}

// TestTieredEdgeFetchesRaceTheLogStart: raw fetches at and around the log
// start while DeleteRecords moves it up through the remote log, and remote
// retention deletes the objects below it: each answer is records from the
// offset asked (checked byte for byte), OFFSET_OUT_OF_RANGE when that is
// below the start, or a retriable error; never other records, and never a
// hang.
func TestTieredEdgeFetchesRaceTheLogStart(t *testing.T) {
	const topic, n = "edgerace", 1500
	b, _, cl, _ := edgeSetup(t, topic, n, nil)
	adm := kadm.NewClient(cl)
	localStart := listOffset(t, cl, topic, -4)
	stop := make(chan struct{})
	errs := make(chan string, 100)
	var counts [4]atomic.Int64 // records, out of range, retriable, empty
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc := b.Client()
			defer fc.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := listOffset(t, fc, topic, -2)
				off := start + int64((i*7+w*13)%40) - 20
				if off < 0 {
					off = 0
				}
				r := rawFetch(t, fc, topic, 1<<20, 0, edgeFetchPart{0, off, int32(2000 + w*20000)})[0]
				switch {
				case r.code == kerr.OffsetOutOfRange.Code:
					counts[1].Add(1)
				case r.code != 0:
					if !kerr.IsRetriable(kerr.ErrorForCode(r.code)) {
						errs <- "fetch " + strconv.FormatInt(off, 10) + ": error " + strconv.Itoa(int(r.code))
						return
					}
					counts[2].Add(1)
				case len(r.batches) == 0:
					counts[3].Add(1)
					if off < r.hw && r.bytes == 0 {
						errs <- "fetch " + strconv.FormatInt(off, 10) + ": nothing below the high watermark, no error"
						return
					}
				default:
					counts[0].Add(1)
					if f := r.batches[0]; f.BaseOffset() > off || f.LastOffset() < off {
						errs <- "fetch " + strconv.FormatInt(off, 10) + ": first batch " + strconv.FormatInt(f.BaseOffset(), 10)
						return
					}
					if off < r.start {
						errs <- "fetch " + strconv.FormatInt(off, 10) + ": records below the log start " + strconv.FormatInt(r.start, 10)
						return
					}
					for i, bt := range r.batches {
						if i > 0 && bt.BaseOffset() != r.batches[i-1].NextOffset() {
							errs <- "fetch " + strconv.FormatInt(off, 10) + ": a gap before " + strconv.FormatInt(bt.BaseOffset(), 10)
							return
						}
						if e := checkEdgeValues(bt); e != "" {
							errs <- "fetch " + strconv.FormatInt(off, 10) + ": " + e
							return
						}
					}
				}
			}
		}()
	}
	for at := int64(3); at < localStart+50; at += 37 {
		dr, err := adm.DeleteRecords(testCtx(t), kadm.Offsets{topic: {0: {At: at}}})
		if err != nil || dr.Error() != nil {
			t.Fatalf("delete records to %d: %v %v", at, err, dr.Error())
		}
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(time.Minute):
		t.Fatal("fetchers hung")
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("fetches: %d with records, %d out of range, %d retriable, %d empty", counts[0].Load(), counts[1].Load(), counts[2].Load(), counts[3].Load())
	// The records themselves, byte for byte, from the final start.
	start := listOffset(t, cl, topic, -2)
	recs := readTimestamps(t, b, topic, start, n)
	if len(recs) != n-int(start) {
		t.Fatalf("read %d records from %d", len(recs), start)
	}
}

// checkEdgeValues checks that the records of an uncompressed batch hold
// tieredValue of their offsets.
func checkEdgeValues(bt recordbatch.Batch) string {
	body := []byte(bt[recordbatch.HeaderSize:])
	for i := range int(bt.RecordCount()) {
		l, n := binary.Varint(body)
		if n <= 0 || int(l) > len(body)-n {
			return "batch at " + strconv.FormatInt(bt.BaseOffset(), 10) + ": bad record " + strconv.Itoa(i)
		}
		var r kmsg.Record
		if err := r.ReadFrom(body[:n+int(l)]); err != nil {
			return "batch at " + strconv.FormatInt(bt.BaseOffset(), 10) + ": " + err.Error()
		}
		off := bt.BaseOffset() + int64(r.OffsetDelta)
		if !bytes.Equal(r.Value, tieredValue(int(off))) {
			return "record " + strconv.FormatInt(off, 10) + ": wrong value"
		}
		body = body[n+int(l):]
	}
	return ""
}

// firstRecord is the first record a consumer of partition 0 of topic
// starting at the log start reads (nil after a minute).
func firstRecord(t *testing.T, b *brokertest.Broker, topic string) *kgo.Record {
	t.Helper()
	c := b.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	defer c.Close()
	ctx := testCtx(t)
	for ctx.Err() == nil {
		fs := c.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) { t.Errorf("fetch: %v", err) })
		if rs := fs.Records(); len(rs) > 0 {
			return rs[0]
		}
	}
	return nil
}
