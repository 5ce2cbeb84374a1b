package tiering

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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

// heldBucket holds the second HEAD of key, the one that ends the first
// read of it, until release is closed, answering what it found before.
type heldBucket struct {
	objectstore.Bucket
	key     string
	held    chan struct{} // closed when that HEAD is held
	release chan struct{}
	mu      sync.Mutex
	heads   int
}

func (h *heldBucket) Head(ctx context.Context, key string) (objectstore.Attrs, error) {
	a, err := h.Bucket.Head(ctx, key)
	if key != h.key {
		return a, err
	}
	h.mu.Lock()
	h.heads++
	hold := h.heads == 2
	h.mu.Unlock()
	if hold {
		close(h.held)
		<-h.release
	}
	return a, err
}

func TestOverlappingLoadsKeepTheNewerManifest(t *testing.T) {
	ctx := context.Background()
	mem := objectstore.NewMem()
	leader := NewManifestStore(mem, "m", nil)
	if _, err := leader.Commit(ctx, 1, appendSeg(0, 10)); err != nil {
		t.Fatal(err)
	}
	hb := &heldBucket{Bucket: mem, key: "m", held: make(chan struct{}), release: make(chan struct{})}
	follower := NewManifestStore(hb, "m", nil)
	// A slow Load has read the manifest ending at 10 and is held before
	// it keeps it; the leader commits more meanwhile, and a second Load
	// starts (a follower restoring from the bucket reads the newer end).
	slow := make(chan error, 1)
	go func() {
		_, err := follower.Load(ctx)
		slow <- err
	}()
	<-hb.held
	if _, err := leader.Commit(ctx, 1, appendSeg(10, 20)); err != nil {
		t.Fatal(err)
	}
	fast := make(chan *Manifest, 1)
	go func() {
		m, err := follower.Load(ctx)
		if err != nil {
			t.Error(err)
		}
		fast <- m
	}()
	time.Sleep(50 * time.Millisecond) // the second Load reaches the store
	close(hb.release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if m := <-fast; m == nil || m.End() != 20 {
		t.Fatalf("second Load read %+v, want the manifest ending at 20", m)
	}
	if end := follower.Current().End(); end != 20 {
		t.Fatalf("the follower's copy ends at %d after both Loads, want 20: the older read was kept last", end)
	}
}

// A store that must find its manifest (RequireExisting) takes a missing
// one for an error, and writes nothing; before, a missing manifest reads
// as empty.
func TestARequiredManifestMissingIsAnError(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	s := NewManifestStore(b, "m", nil)
	if m, err := s.Load(ctx); err != nil || m.End() != 0 || len(m.Segments) != 0 {
		t.Fatalf("a missing manifest before RequireExisting: %+v, %v", m, err)
	}
	s.RequireExisting()
	if _, err := s.Load(ctx); !errors.Is(err, ErrManifestMissing) {
		t.Fatalf("a missing required manifest: %v", err)
	}
	if _, err := s.Commit(ctx, 1, appendSeg(0, 10)); !errors.Is(err, ErrManifestMissing) {
		t.Fatalf("a commit over a missing required manifest: %v", err)
	}
	// Once it exists, it reads as usual.
	if _, err := NewManifestStore(b, "m", nil).Commit(ctx, 1, appendSeg(0, 10)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Load(ctx); err != nil || m.End() != 10 {
		t.Fatalf("the required manifest once written: %+v, %v", m, err)
	}
}

// TestACommitWaitsForAnotherNoLongerThanItsContext: a commit (or Load)
// that finds another one under way, held by a store that hangs, gives up
// when its own context ends, not when the other's does.
func TestACommitWaitsForAnotherNoLongerThanItsContext(t *testing.T) {
	ms, _ := loadedStore(t, objectstore.NewMem())
	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := ms.Commit(context.Background(), 1, func(*Manifest) error {
			close(held)
			<-release // the store hangs under this commit
			return nil
		})
		done <- err
	}()
	<-held
	for _, call := range []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"commit", func(ctx context.Context) error {
			_, err := ms.Commit(ctx, 1, func(*Manifest) error { return nil })
			return err
		}},
		{"load", func(ctx context.Context) error { _, err := ms.Load(ctx); return err }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := call.run(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a %s behind a hung commit: %v, want its own deadline", call.name, err)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Commit(context.Background(), 1, func(*Manifest) error { return nil }); err != nil {
		t.Fatalf("a commit after the hung one ended: %v", err)
	}
}
