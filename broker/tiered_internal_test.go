package broker

import (
	"context"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// TestEndOffsetForEpochSpansRemoteAndLocalEpochs: OffsetForLeaderEpoch for
// an epoch that wrote only what the bucket holds ends where the next epoch
// (remote or local) starts, not at the local log start.
func TestEndOffsetForEpochSpansRemoteAndLocalEpochs(t *testing.T) {
	all := []localseg.EpochEntry{{Epoch: 0, StartOffset: 0}, {Epoch: 2, StartOffset: 1000}, {Epoch: 5, StartOffset: 3000}}
	for _, tc := range []struct {
		epoch     int32
		wantEpoch int32
		wantEnd   int64
		ok        bool
	}{
		{0, 0, 1000, true},
		{1, 0, 1000, true}, // never led: the epoch before it
		{2, 2, 3000, true},
		{4, 2, 3000, true},
		{5, 5, 4000, true}, // the latest: the log end
		{6, -1, -1, false},
		{-1, -1, -1, false},
	} {
		e, end, ok := replicationEndOffset(all, tc.epoch, 4000)
		if e != tc.wantEpoch || end != tc.wantEnd || ok != tc.ok {
			t.Errorf("epoch %d: got %d, %d, %v; want %d, %d, %v", tc.epoch, e, end, ok, tc.wantEpoch, tc.wantEnd, tc.ok)
		}
	}
}

// TestLeaderFindsAFollowersDivergenceInRemoteEpochs: a leader whose local
// leader epochs start past an epoch a follower last fetched in (its log was
// restored from the bucket, or local retention dropped the entry) decides
// the follower's divergence from the whole log's epochs, as it answers
// OffsetForLeaderEpoch. Epoch 1 ended at 600; the local cache, restored
// from the last segment's entry clipped to 640, alone would say 640 and
// keep a follower's epoch-1 records 600 to 619 that the leader's log does
// not hold.
func TestLeaderFindsAFollowersDivergenceInRemoteEpochs(t *testing.T) {
	ctx := context.Background()
	r, err := tiering.NewReader(tiering.ReaderConfig{Bucket: objectstore.NewMem(), CacheBytes: 1 << 20, ChunkBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	svc := &tierService{b: &Broker{ctx: ctx}, cfg: TieringConfig{FetchTimeout: 5 * time.Second}, bucket: objectstore.NewMem(), reader: r}
	tier := svc.newPartitionTier("diverge", [16]byte{1}, 0)
	seg := func(base, next int64, id byte, epochs ...localseg.EpochEntry) tiering.Segment {
		return tiering.Segment{BaseOffset: base, NextOffset: next, Size: 1, MaxTimestamp: -1, ID: [16]byte{id}, Epochs: epochs}
	}
	if _, err := tier.store.Commit(ctx, 2, func(m *tiering.Manifest) error {
		m.Segments = []tiering.Segment{
			seg(0, 300, 1, localseg.EpochEntry{Epoch: 0, StartOffset: 0}),
			seg(300, 600, 2, localseg.EpochEntry{Epoch: 1, StartOffset: 300}),
			seg(600, 640, 3, localseg.EpochEntry{Epoch: 2, StartOffset: 600}),
			// Uploaded after local retention moved the uploader's
			// epoch-2 entry to its local log start.
			seg(640, 700, 4, localseg.EpochEntry{Epoch: 2, StartOffset: 640}),
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	// Restored where the bucket ends, with the last segment's epochs.
	if err := log.TruncateFullyAndRestore(700, []localseg.EpochEntry{{Epoch: 2, StartOffset: 640}}, nil); err != nil {
		t.Fatal(err)
	}
	p := newPartition("diverge", [16]byte{1}, 0, 1, log, &topicConfig{})
	p.tier = tier
	p.setLeadership(leadership{leader: 1, leaderEpoch: 3, replicas: []int32{1, 2}, isr: []int32{1}, partitionEpoch: 0})

	ans, err := p.followerFetch(2, 3, 620, 0, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !ans.Diverging || ans.DivergingEpoch != 1 || ans.DivergingEndOffset != 600 {
		t.Fatalf("follower at 620 in epoch 1: %+v; want diverging at epoch 1, offset 600", ans)
	}
	// A follower that agrees is accepted.
	if ans, err := p.followerFetch(2, 3, 600, 0, 1, time.Now()); err != nil || ans.Diverging {
		t.Fatalf("follower at 600 in epoch 1: %+v, %v; want accepted", ans, err)
	}
}
