package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestANewLeaderListsNoOffsetItsHighWatermarkHasNotReached: a new leader's
// high watermark starts where its old view of it was, below what the last
// leader answered, until its followers fetch up to its epoch's start. The
// latest offset it listed then went backwards, and forwards again; a
// timestamp found above the mark was answered "none". As Kafka's
// (KIP-207), both answer OFFSET_NOT_AVAILABLE meanwhile, which clients
// retry; followers, and the earliest offset, are answered as before.
func TestANewLeaderListsNoOffsetItsHighWatermarkHasNotReached(t *testing.T) {
	p := newReplicatedPartition(t, "lo")
	list := func(replica int32, timestamp int64) (int64, int16) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.Version, req.ReplicaID = 7, replica
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Timestamp, rp.CurrentLeaderEpoch = timestamp, -1
		sp := kmsg.NewListOffsetsResponseTopicPartition()
		sp.Offset = -1
		listOffset(context.Background(), context.Background(), p, req, &rp, &sp)
		return sp.Offset, sp.ErrorCode
	}

	leadWithAll(p, 1)
	start := time.Now().UnixMilli()
	for i := range int64(5) {
		raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: start + i},
			[]recordbatch.Record{{Value: []byte("v")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.appendProduce(recordbatch.Batch(raw), recordbatch.Summary{Records: 1, MinTimestamp: start + i, MaxTimestamp: start + i}, -1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	followersFetch(t, p, 1, 3)
	if hw := p.highWatermark(); hw != 3 {
		t.Fatalf("high watermark %d after the followers fetched up to 3", hw)
	}
	leadWithAll(p, 2) // the same broker elected again, at offset 5
	notAvailable := kerr.OffsetNotAvailable.Code
	if off, code := list(-1, listLatest); code != notAvailable {
		t.Fatalf("latest before the high watermark reached the epoch's start: %d (error %d), want OFFSET_NOT_AVAILABLE", off, code)
	}
	if off, code := list(-1, start+1); code != 0 || off != 1 {
		t.Fatalf("a timestamp found below the high watermark: %d (error %d), want 1", off, code)
	}
	if off, code := list(-1, start+4); code != notAvailable {
		t.Fatalf("a timestamp found above the high watermark: %d (error %d), want OFFSET_NOT_AVAILABLE", off, code)
	}
	if off, code := list(-1, listEarliest); code != 0 || off != 0 {
		t.Fatalf("earliest: %d (error %d), want 0", off, code)
	}
	if off, code := list(2, listLatest); code != 0 || off != 5 {
		t.Fatalf("latest for a follower: %d (error %d), want the log end 5", off, code)
	}
	followersFetch(t, p, 2, 5)
	if off, code := list(-1, listLatest); code != 0 || off != 5 {
		t.Fatalf("latest once the followers have the epoch's start: %d (error %d), want 5", off, code)
	}
	if off, code := list(-1, start+4); code != 0 || off != 4 {
		t.Fatalf("the last record's timestamp once the followers have it: %d (error %d), want 4", off, code)
	}
	if off, code := list(-1, start+5); code != 0 || off != -1 {
		t.Fatalf("a timestamp after every record: %d (error %d), want -1", off, code)
	}
}
