package tiering

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/objectstore"
)

var (
	// ErrFenced: the stored manifest was committed by a leader with a
	// higher epoch; this leader must stop writing.
	ErrFenced = errors.New("tiering: fenced by a newer leader epoch")
	// ErrConflict: the manifest changed between read and write under
	// the same or an older epoch (the caller re-reads and retries).
	ErrConflict = errors.New("tiering: manifest changed concurrently")
	// ErrManifestMissing: the store answers that a manifest that must
	// exist (RequireExisting) does not.
	ErrManifestMissing = errors.New("tiering: the remote manifest is missing")
)

// ManifestStore reads and commits one partition's manifest. It keeps the
// last version it read or wrote and its ETag. Safe for concurrent use;
// commits are serialized.
type ManifestStore struct {
	bucket objectstore.Bucket
	key    string
	now    func() time.Time

	// turn is held by one commit or Load at a time (a channel of one,
	// so that waiting for it ends with the caller's context: a
	// DeleteRecords bounded by the remote timeout waited out an upload's
	// commit to a hung store, 30 s).
	turn chan struct{}
	mu   sync.Mutex
	cur  *Manifest // never modified once stored
	etag string    // "" when the manifest does not exist
	// unsettled: a commit failed with its outcome unknown and could not
	// read the manifest back, so cur may miss it (Settle reads it).
	unsettled bool
	// pending: a write of this store's whose outcome is unknown may
	// still land (a request the store has not acted on yet): it can
	// while the stored manifest is the version it was conditional on,
	// pendingTag ("" for the first), and Settle fences it with a write
	// of its own, as leader of pendingEpoch, before anything relies on
	// the stored manifest being final.
	pending      bool
	pendingTag   string
	pendingEpoch int32
	// mustExist: a missing manifest is an error, not an empty one
	// (RequireExisting).
	mustExist atomic.Bool
}

// NewManifestStore returns a store for the manifest at key; Load reads it.
func NewManifestStore(b objectstore.Bucket, key string, now func() time.Time) *ManifestStore {
	if now == nil {
		now = time.Now
	}
	return &ManifestStore{bucket: b, key: key, now: now, cur: &Manifest{}, turn: make(chan struct{}, 1)}
}

// take waits for the store's turn, until ctx ends.
func (s *ManifestStore) take(ctx context.Context) error {
	select {
	case s.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tiering: waiting for another commit of %s: %w", s.key, ctx.Err())
	}
}

func (s *ManifestStore) release() { <-s.turn }

// Current is the last manifest read or committed (empty before Load). The
// caller must not modify it.
func (s *ManifestStore) Current() *Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// RequireExisting makes a manifest the store answers is missing an error
// (ErrManifestMissing) from then on, rather than an empty manifest: once a
// partition's records may have reached the bucket (its metadata says it
// archives), its manifest exists, since a leader fences it before the
// first upload can commit. Taken for empty, a manifest that a store
// answers missing for a moment (starting up, or an eventually consistent
// one) would let a leader whose log is shorter than the bucket (its disk
// lost) take produce at offsets the bucket holds; a bucket emptied or
// swapped under the cluster stops the uploads, with an error, instead of
// starting a new history over the old one.
func (s *ManifestStore) RequireExisting() { s.mustExist.Store(true) }

func (s *ManifestStore) set(m *Manifest, etag string) {
	s.mu.Lock()
	s.cur, s.etag, s.unsettled = m, etag, false
	s.mu.Unlock()
}

// Settle reads the manifest back when a commit failed with its outcome
// unknown and the copy in memory may miss it (a no-op otherwise), so that
// what is picked next starts where the stored manifest ends. When that
// write has not landed and still can (the stored manifest is the version
// it was conditional on), Settle fences it: it commits the manifest
// unchanged, so that the write fails its condition whenever it arrives.
// Without that, a write held on its way could land after an orphan sweep
// deleted the objects it names.
func (s *ManifestStore) Settle(ctx context.Context) error {
	s.mu.Lock()
	busy := s.unsettled || s.pending
	s.mu.Unlock()
	if !busy {
		return nil
	}
	if err := s.take(ctx); err != nil {
		return err
	}
	defer s.release()
	return s.settleLocked(ctx)
}

// settleLocked is Settle. Requires the store's turn.
func (s *ManifestStore) settleLocked(ctx context.Context) error {
	s.mu.Lock()
	unsettled, pending, tag, epoch := s.unsettled, s.pending, s.pendingTag, s.pendingEpoch
	s.mu.Unlock()
	if !unsettled && !pending {
		return nil
	}
	m, etag, err := s.read(ctx)
	if err != nil {
		return err
	}
	s.set(m, etag)
	if !pending || etag != tag {
		// Landed, or replaced by another write: either way the
		// version it was conditional on is gone for good.
		s.clearPending()
		return nil
	}
	if _, err := s.commitLocked(ctx, epoch, func(*Manifest) error { return nil }); err != nil {
		return fmt.Errorf("tiering: fencing a write of unknown outcome to %s: %w", s.key, err)
	}
	return nil
}

func (s *ManifestStore) clearPending() {
	s.mu.Lock()
	s.pending = false
	s.mu.Unlock()
}

// hasPending reports a write of unknown outcome that may still land (not
// settled yet): an orphan sweep must wait, since it may name objects
// no stored manifest names yet.
func (s *ManifestStore) hasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Fence commits the stored manifest unchanged as leader of epoch, so that
// no write conditional on an earlier version (an older leader's commit
// still on its way to the store) can land after it: a new leader fences
// before it sweeps orphans, whose grace would otherwise have to outlast
// every write in flight. ErrFenced: a newer leader has fenced already.
func (s *ManifestStore) Fence(ctx context.Context, epoch int32) (*Manifest, error) {
	return s.Commit(ctx, epoch, func(*Manifest) error { return nil })
}

// Load reads the stored manifest; a missing one reads as empty. Loads and
// commits take turns: two Loads that overlapped (a follower's periodic
// one and its restore from the bucket) could keep the older read, a copy
// ending below a local log trimmed by the newer one, whose records then
// read as out of range.
func (s *ManifestStore) Load(ctx context.Context) (*Manifest, error) {
	if err := s.take(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	m, etag, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	s.set(m, etag)
	return m, nil
}

func (s *ManifestStore) read(ctx context.Context) (*Manifest, string, error) {
	// Head then Get could see two versions: read the body and take the
	// ETag from a Head that agrees with it (retrying if it moved).
	for attempt := 0; ; attempt++ {
		a, err := s.bucket.Head(ctx, s.key)
		if errors.Is(err, objectstore.ErrNotFound) {
			if s.mustExist.Load() {
				return nil, "", fmt.Errorf("%w: %s", ErrManifestMissing, s.key)
			}
			return &Manifest{}, "", nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("tiering: reading %s: %w", s.key, err)
		}
		data, err := objectstore.ReadAll(ctx, s.bucket, s.key, maxManifestSize)
		if errors.Is(err, objectstore.ErrNotFound) && attempt < 5 {
			continue // deleted between the two: look again
		}
		if err != nil {
			return nil, "", fmt.Errorf("tiering: reading %s: %w", s.key, err)
		}
		b, err := s.bucket.Head(ctx, s.key)
		if err != nil && !errors.Is(err, objectstore.ErrNotFound) {
			return nil, "", fmt.Errorf("tiering: reading %s: %w", s.key, err)
		}
		if err != nil || b.ETag != a.ETag {
			if attempt < 5 {
				continue
			}
			return nil, "", fmt.Errorf("%w: %s keeps changing", ErrConflict, s.key)
		}
		m, err := DecodeManifest(data, false)
		if err != nil {
			return nil, "", fmt.Errorf("tiering: %s: %w", s.key, err)
		}
		return m, a.ETag, nil
	}
}

// Commit writes a new manifest made by mutate from a copy of the current
// one, as leader of the given epoch. The write is conditional on the
// version read (If-Match, or If-None-Match for the first), so a leader that
// lost the race never overwrites a newer manifest. A leader whose epoch is
// below the stored one gets ErrFenced and must stop. A conflict under the
// same epoch (a retry of its own write that did land) re-reads and applies
// mutate again. A write whose outcome is unknown is settled by reading the
// manifest back; when that read fails too, the error is returned and the
// store is unsettled (Settle, and the next Commit, read it first). mutate
// may be called more than once; it returns an error to abandon the commit
// (returned as is).
func (s *ManifestStore) Commit(ctx context.Context, epoch int32, mutate func(m *Manifest) error) (*Manifest, error) {
	if err := s.take(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	if err := s.settleLocked(ctx); err != nil {
		return nil, fmt.Errorf("tiering: committing %s: %w", s.key, err)
	}
	return s.commitLocked(ctx, epoch, mutate)
}

// commitLocked is Commit once settled. Requires the store's turn.
func (s *ManifestStore) commitLocked(ctx context.Context, epoch int32, mutate func(m *Manifest) error) (*Manifest, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		cur, etag := s.cur, s.etag
		s.mu.Unlock()
		if etag == "" && s.mustExist.Load() {
			// It would be written as the first version.
			return nil, fmt.Errorf("%w: %s", ErrManifestMissing, s.key)
		}
		if cur.LeaderEpoch > epoch {
			return nil, fmt.Errorf("%w: manifest at epoch %d, leader at %d", ErrFenced, cur.LeaderEpoch, epoch)
		}
		next := cur.Clone()
		if err := mutate(next); err != nil {
			return nil, err
		}
		next.LeaderEpoch = epoch
		next.CommittedAtMs = s.now().UnixMilli()
		if _, err := rand.Read(next.CommitID[:]); err != nil {
			return nil, err
		}
		if err := spillOverflow(next, epoch, next.CommittedAtMs); err != nil {
			return nil, err
		}
		if err := next.check(false); err != nil {
			return nil, fmt.Errorf("tiering: refusing to commit a bad manifest: %w", err)
		}
		// New spilled parts go first, under keys no one else writes: a
		// commit that fails below leaves them as orphans, never as a
		// manifest naming a missing part.
		written, err := s.writeSpills(ctx, next)
		if err != nil {
			s.deleteSpills(ctx, written)
			return nil, err
		}
		data := EncodeManifest(next, false)
		opts := objectstore.PutOptions{IfMatch: etag, IfNoneMatch: etag == ""}
		a, err := s.bucket.Put(ctx, s.key, bytes.NewReader(data), int64(len(data)), opts)
		if err == nil {
			s.set(next, a.ETag)
			s.clearPending()
			return next, nil
		}
		// Lost the condition, or the outcome is unknown: look.
		stored, storedTag, rerr := s.read(ctx)
		if rerr != nil {
			s.mu.Lock()
			s.unsettled = true
			if !errors.Is(err, objectstore.ErrPreconditionFailed) {
				s.pending, s.pendingTag, s.pendingEpoch = true, etag, epoch
			}
			s.mu.Unlock()
			return nil, fmt.Errorf("tiering: committing %s: %w (re-read: %v)", s.key, err, rerr)
		}
		s.set(stored, storedTag)
		if storedTag != etag {
			s.clearPending() // its condition can never hold again
		}
		if stored.CommitID == next.CommitID {
			return stored, nil // the write took
		}
		// It did not take, or it did and a newer commit replaced it: a
		// newer leader's, built on it, which names what it named. So
		// the spilled parts this attempt wrote go only when the stored
		// manifest does not name them and this write can no longer
		// land (it failed its condition, or the version it was
		// conditional on is gone). A write that may still be on its
		// way keeps them: orphan cleanup removes them if it never
		// lands.
		if errors.Is(err, objectstore.ErrPreconditionFailed) || storedTag != etag {
			s.deleteSpills(ctx, s.unnamedSpills(written, stored))
		}
		switch {
		case stored.LeaderEpoch > epoch:
			return nil, fmt.Errorf("%w: manifest at epoch %d, leader at %d", ErrFenced, stored.LeaderEpoch, epoch)
		case !errors.Is(err, objectstore.ErrPreconditionFailed) && storedTag == etag:
			// Not written yet, and it still may be: Settle fences it
			// before the next commit or sweep.
			s.mu.Lock()
			s.pending, s.pendingTag, s.pendingEpoch = true, etag, epoch
			s.mu.Unlock()
			return nil, fmt.Errorf("tiering: committing %s: %w", s.key, err)
		case attempt >= 3:
			return nil, fmt.Errorf("%w: %s", ErrConflict, s.key)
		}
	}
}

// unnamedSpills returns the keys of written that m names no spilled part
// under.
func (s *ManifestStore) unnamedSpills(written []string, m *Manifest) []string {
	named := make(map[string]bool, len(m.Spills))
	for _, sp := range m.Spills {
		named[spillKeyFor(s.key, sp.BaseOffset, sp.ID)] = true
	}
	var out []string
	for _, k := range written {
		if !named[k] {
			out = append(out, k)
		}
	}
	return out
}

// writeSpills writes the pending spilled parts of next (and forgets their
// content: they are read back through a SpillLoader). It returns the keys
// written (on failure, with the one that failed: it may have landed).
func (s *ManifestStore) writeSpills(ctx context.Context, next *Manifest) ([]string, error) {
	var written []string
	for i := range next.Spills {
		sp := &next.Spills[i]
		if sp.part == nil {
			continue
		}
		key := spillKeyFor(s.key, sp.BaseOffset, sp.ID)
		if err := sp.matches(sp.part); err != nil {
			return written, fmt.Errorf("tiering: refusing to write %s: %w", key, err)
		}
		if err := sp.part.check(true); err != nil {
			return written, fmt.Errorf("tiering: refusing to write %s: %w", key, err)
		}
		data := EncodeManifest(sp.part, true)
		if _, err := s.bucket.Put(ctx, key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{IfNoneMatch: true}); err != nil {
			// It may have landed (a lost response): no manifest
			// names it, so it goes with the others.
			return append(written, key), fmt.Errorf("tiering: writing the spilled manifest part %s: %w", key, err)
		}
		written = append(written, key)
		sp.part = nil
	}
	return written, nil
}

// deleteSpills removes spilled parts no manifest names (best effort:
// orphan cleanup removes what remains), for a moment after ctx ends
// (objectstore.CleanupContext).
func (s *ManifestStore) deleteSpills(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	ctx, cancel := objectstore.CleanupContext(ctx, 30*time.Second)
	defer cancel()
	for _, k := range keys {
		s.bucket.Delete(ctx, k)
	}
}
