package broker

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
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

// divergenceCase is a tiered leader (broker 1, leader epoch 3) whose
// remote log holds epoch 0 from 0, epoch 1 from 300 and epoch 2 from 600,
// and whose local log was restored where the bucket ends (700) with the
// last segment's epoch entry, clipped to 640 by the uploader's local
// retention. A follower (broker 2) that last fetched in epoch 1 at 620
// holds epoch-1 records 600 to 619 the leader's log does not.
func divergenceCase(t *testing.T, bucket objectstore.Bucket, spill bool) (*partition, *partitionTier) {
	t.Helper()
	ctx := context.Background()
	r, err := tiering.NewReader(tiering.ReaderConfig{Bucket: bucket, CacheBytes: 1 << 20, ChunkBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	svc := &tierService{b: &Broker{ctx: ctx}, cfg: TieringConfig{FetchTimeout: 5 * time.Second, RemoteFetchMaxWait: 500 * time.Millisecond}, bucket: bucket, reader: r}
	tier := svc.newPartitionTier("diverge", [16]byte{1}, 0)
	seg := func(base, next int64, id byte, epochs ...localseg.EpochEntry) tiering.Segment {
		return tiering.Segment{BaseOffset: base, NextOffset: next, Size: 1, MaxTimestamp: -1, ID: [16]byte{id}, Epochs: epochs}
	}
	// Committed by the broker that uploaded them, through its own store.
	uploader := svc.newPartitionTier("diverge", [16]byte{1}, 0)
	if _, err := uploader.store.Commit(ctx, 2, func(m *tiering.Manifest) error {
		m.Segments = []tiering.Segment{
			seg(0, 300, 1, localseg.EpochEntry{Epoch: 0, StartOffset: 0}),
			seg(300, 600, 2, localseg.EpochEntry{Epoch: 1, StartOffset: 300}),
			seg(600, 640, 3, localseg.EpochEntry{Epoch: 2, StartOffset: 600}),
			// Uploaded after local retention moved the uploader's
			// epoch-2 entry to its local log start.
			seg(640, 700, 4, localseg.EpochEntry{Epoch: 2, StartOffset: 640}),
		}
		if spill {
			// The first two entries moved to a spilled part, which
			// the store cannot read.
			m.Spills = []tiering.Spill{{BaseOffset: 0, NextOffset: 600, Count: 2, Bytes: 2, MaxTimestamp: -1, ID: [16]byte{9}}}
			m.Segments = m.Segments[2:]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	// Restored where the bucket ends, with the last segment's epochs.
	if err := log.TruncateFullyAndRestore(700, []localseg.EpochEntry{{Epoch: 2, StartOffset: 640}}, nil); err != nil {
		t.Fatal(err)
	}
	p := newPartition("diverge", [16]byte{1}, 0, 1, log, &topicConfig{})
	p.tier = tier
	p.setLeadership(leadership{leader: 1, leaderEpoch: 3, replicas: []int32{1, 2}, isr: []int32{1}, partitionEpoch: 0})
	return p, tier
}

// TestLeaderFindsAFollowersDivergenceInRemoteEpochs: a leader whose local
// leader epochs start past an epoch a follower last fetched in (its log was
// restored from the bucket, or local retention dropped the entry) decides
// the follower's divergence from the whole log's epochs, as it answers
// OffsetForLeaderEpoch. Epoch 1 ended at 600; the local cache alone would
// say 640 and keep the follower's epoch-1 records 600 to 619.
func TestLeaderFindsAFollowersDivergenceInRemoteEpochs(t *testing.T) {
	p, tier := divergenceCase(t, objectstore.NewMem(), false)
	if _, err := tier.store.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	tier.ready.Store(true)

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
	if e, end, ok, err := p.endOffsetForEpoch(context.Background(), 1); err != nil || !ok || e != 1 || end != 600 {
		t.Fatalf("end of epoch 1: %d, %d, %v, %v; want 1, 600", e, end, ok, err)
	}
}

// TestLeaderWithoutItsRemoteEpochsDecidesNoDivergence: a new leader that
// has not read its manifest yet (a broker restarted with its local epochs
// clipped by local retention, leading before its first manifest read: its
// copy is empty or a follower's old one), or whose remote epochs cannot be
// read (a spilled part the store does not return), neither answers
// OffsetForLeaderEpoch nor accepts a follower's fetch for an epoch older
// than its local ones: with the local epochs alone it said epoch 1 ended
// at 640 and accepted the follower at 620, whose records 600 to 619 then
// stayed, under the leader's, for good. It answers a retriable error, and
// once the manifest is read, the divergence.
func TestLeaderWithoutItsRemoteEpochsDecidesNoDivergence(t *testing.T) {
	t.Run("manifest not read yet", func(t *testing.T) {
		p, tier := divergenceCase(t, objectstore.NewMem(), false)
		if _, _, _, err := p.endOffsetForEpoch(context.Background(), 1); !errors.Is(err, errNotLeader) {
			t.Fatalf("end of epoch 1 before the manifest is read: %v; want a retriable NOT_LEADER", err)
		}
		if ans, err := p.followerFetch(2, 3, 620, 0, 1, time.Now()); !errors.Is(err, errNotLeader) {
			t.Fatalf("follower at 620 in epoch 1 before the manifest is read: %+v, %v; want a retriable NOT_LEADER", ans, err)
		}
		// Epochs the local log holds need no manifest.
		if e, end, ok, err := p.endOffsetForEpoch(context.Background(), 3); err != nil || !ok || e != 3 || end != 700 {
			t.Fatalf("end of epoch 3: %d, %d, %v, %v; want 3, 700", e, end, ok, err)
		}
		if _, err := tier.store.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		tier.ready.Store(true)
		if ans, err := p.followerFetch(2, 3, 620, 0, 1, time.Now()); err != nil || !ans.Diverging || ans.DivergingEndOffset != 600 {
			t.Fatalf("follower at 620 in epoch 1: %+v, %v; want diverging at 600", ans, err)
		}
	})
	t.Run("remote epochs unreadable", func(t *testing.T) {
		p, tier := divergenceCase(t, objectstore.NewMem(), true)
		if _, err := tier.store.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		tier.ready.Store(true)
		if _, _, _, err := p.endOffsetForEpoch(context.Background(), 1); kafkaError(err) != kerr.KafkaStorageError.Code {
			t.Fatalf("end of epoch 1 with its spilled part unreadable: %v; want KAFKA_STORAGE_ERROR", err)
		}
		if ans, err := p.followerFetch(2, 3, 620, 0, 1, time.Now()); kafkaError(err) != kerr.KafkaStorageError.Code {
			t.Fatalf("follower at 620 in epoch 1 with the spilled part unreadable: %+v, %v; want KAFKA_STORAGE_ERROR", ans, err)
		}
	})
}

// TestAFollowerFetchWaitsForRemoteEpochsNoLongerThanTheRemoteFetchWait: a
// follower's fetch that needs the leader's remote epochs, while the store
// hangs on the manifest's spilled part, fails with a retriable error after
// RemoteFetchMaxWait, not after the remote read's timeout: the follower's
// fetch of every other partition from this leader waits with it. The read
// goes on, and a fetch meanwhile waits no longer.
func TestAFollowerFetchWaitsForRemoteEpochsNoLongerThanTheRemoteFetchWait(t *testing.T) {
	fb := faulty.New(objectstore.NewMem())
	p, tier := divergenceCase(t, fb, true)
	if _, err := tier.store.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	tier.ready.Store(true)
	stall := fb.Add(faulty.Rule{Op: faulty.Get, Stall: true})
	for i := range 2 {
		start := time.Now()
		_, err := p.followerFetch(2, 3, 620, 0, 1, time.Now())
		took := time.Since(start)
		if kafkaError(err) != kerr.KafkaStorageError.Code {
			t.Fatalf("fetch %d with the store hung: %v; want KAFKA_STORAGE_ERROR", i, err)
		}
		if took >= 2*time.Second {
			t.Fatalf("fetch %d took %v: the remote read's timeout (5s), not the remote fetch wait (500ms)", i, took)
		}
	}
	if stall.Fired() != 1 {
		t.Fatalf("the store was asked %d times; want one read, the second fetch waiting on the first's", stall.Fired())
	}
}

// TestARemoteReadPastAStaleManifestCopyIsNotOutOfRange: a follower whose
// copy of the manifest ends below an offset under its local log (serving
// consumers, KIP-392, with a copy that predates the leader's last
// uploads) answers a retriable NOT_LEADER_OR_FOLLOWER for it, which sends
// the consumer to the leader; it read the local log, found the offset
// below it and answered OFFSET_OUT_OF_RANGE, which sent the consumer to
// its reset offset, the start of the log for a replay.
func TestARemoteReadPastAStaleManifestCopyIsNotOutOfRange(t *testing.T) {
	ctx := context.Background()
	bucket := objectstore.NewMem()
	r, err := tiering.NewReader(tiering.ReaderConfig{Bucket: bucket, CacheBytes: 1 << 20, ChunkBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	svc := &tierService{b: &Broker{ctx: ctx, log: slog.New(slog.DiscardHandler)}, cfg: TieringConfig{FetchTimeout: 5 * time.Second}, bucket: bucket, reader: r}
	uploader := svc.newPartitionTier("stale", [16]byte{1}, 0)
	upload := func(base, next int64) {
		t.Helper()
		if _, err := uploader.store.Commit(ctx, 1, func(m *tiering.Manifest) error {
			m.Segments = append(m.Segments, tiering.Segment{BaseOffset: base, NextOffset: next, Size: 1, MaxTimestamp: -1, ID: [16]byte{byte(base)}})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	upload(0, 200)
	tier := svc.newPartitionTier("stale", [16]byte{1}, 0)
	if _, err := tier.store.Load(ctx); err != nil {
		t.Fatal(err)
	}
	upload(200, 300)
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	// Restarted where the leader's local log starts, past the copy.
	if err := log.TruncateFullyAndStartAt(300); err != nil {
		t.Fatal(err)
	}
	p := newPartition("stale", [16]byte{1}, 0, 1, log, &topicConfig{})
	p.tier = tier
	p.setLeadership(leadership{leader: 2, leaderEpoch: 1, replicas: []int32{1, 2}, isr: []int32{1, 2}})
	_, err = tier.remoteRead(p, 250, 1<<20, 300, true, time.Now().Add(time.Second))
	if kafkaError(err) != kerr.NotLeaderForPartition.Code {
		t.Fatalf("read at 250, past the copy's end 200: %v, want NOT_LEADER_OR_FOLLOWER", err)
	}
	// Once the copy is read again, the bucket serves it (here: the
	// store has no segment objects, so a storage error, not a range one).
	if _, err := tier.store.Load(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = tier.remoteRead(p, 250, 1<<20, 300, true, time.Now().Add(time.Second))
	if errors.Is(err, errManifestBehind) || kafkaError(err) == kerr.OffsetOutOfRange.Code {
		t.Fatalf("read at 250 with a copy ending at 300: %v", err)
	}
}
