package tiering

import (
	"context"
	"errors"
	"testing"

	"github.com/shale-log/shale/objectstore"
)

func appendSeg(base, next int64) func(m *Manifest) error {
	return func(m *Manifest) error {
		m.Segments = append(m.Segments, Segment{BaseOffset: base, NextOffset: next, Size: 1, ID: [16]byte{byte(base)}})
		return nil
	}
}

func TestCommitFencesAStaleLeader(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	old := NewManifestStore(b, "m", nil)
	if _, err := old.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Commit(ctx, 1, appendSeg(0, 10)); err != nil {
		t.Fatal(err)
	}
	// A new leader (epoch 2) loads and commits.
	nw := NewManifestStore(b, "m", nil)
	if _, err := nw.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Commit(ctx, 2, appendSeg(10, 20)); err != nil {
		t.Fatal(err)
	}
	// The old leader, still believing its version current, is fenced
	// and writes nothing.
	if _, err := old.Commit(ctx, 1, appendSeg(10, 15)); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale leader: %v", err)
	}
	m, err := NewManifestStore(b, "m", nil).Load(ctx)
	if err != nil || len(m.Segments) != 2 || m.LeaderEpoch != 2 || m.End() != 20 {
		t.Fatalf("stored %+v, %v", m, err)
	}
	// And stays fenced without writing.
	if _, err := old.Commit(ctx, 1, appendSeg(20, 25)); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale leader again: %v", err)
	}
}

func TestCommitSettlesALostResponseByReReading(t *testing.T) {
	ctx := context.Background()
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	s := NewManifestStore(fb, "m", nil)
	s.Load(ctx)
	// The PUT lands but its response is lost.
	f := fb.add(&fault{op: "put", match: "m", after: true, n: 1})
	calls := 0
	m, err := s.Commit(ctx, 1, func(m *Manifest) error { calls++; return appendSeg(0, 10)(m) })
	if err != nil || f.fired != 1 || calls != 1 {
		t.Fatalf("commit: %v, fired %d, mutate called %d times", err, f.fired, calls)
	}
	if len(m.Segments) != 1 {
		t.Fatalf("manifest %+v", m)
	}
	// A PUT that fails before landing reports the error; nothing changed.
	fb.add(&fault{op: "put", match: "m", n: 1})
	if _, err := s.Commit(ctx, 1, appendSeg(10, 20)); !errors.Is(err, errInjected) {
		t.Fatalf("failed put: %v", err)
	}
	if got, _ := NewManifestStore(fb, "m", nil).Load(ctx); len(got.Segments) != 1 {
		t.Fatalf("stored %+v", got)
	}
	// The retry commits once.
	if m, err := s.Commit(ctx, 1, appendSeg(10, 20)); err != nil || len(m.Segments) != 2 {
		t.Fatalf("retry: %+v %v", m, err)
	}
}

func TestCommitRetriesAConflictUnderTheSameEpoch(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	a := NewManifestStore(b, "m", nil)
	a.Load(ctx)
	other := NewManifestStore(b, "m", nil)
	other.Load(ctx)
	if _, err := other.Commit(ctx, 1, appendSeg(0, 10)); err != nil {
		t.Fatal(err)
	}
	// a's view is stale (If-None-Match fails); it re-reads and re-applies.
	m, err := a.Commit(ctx, 1, func(m *Manifest) error {
		if m.End() >= 10 {
			return nil
		}
		return appendSeg(0, 10)(m)
	})
	if err != nil || len(m.Segments) != 1 {
		t.Fatalf("%+v %v", m, err)
	}
}
