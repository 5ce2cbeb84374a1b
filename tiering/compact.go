package tiering

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

// Compaction of the remote log: a compacted topic's (cleanup.policy with
// compact) leader compacts the segments its bucket holds, as the log
// cleaner compacts local ones (localseg.Log.Compact): a pass maps the keys
// of the dirty segments (those above the cleaner note's first dirty
// offset) to their last offsets, then rewrites the segments from the log
// start up to the last one mapped, in groups of at most segment.bytes read,
// each into one new segment and companion uploaded under new names. One
// manifest commit, fenced by the leader epoch as every commit, replaces
// the groups' entries with the new ones; the objects replaced are deleted
// after a delay (DeleteReplaced), so that reads under way on the manifest
// before finish. A group whose bytes do not change is left as it is.

// cleanerName is the partition's cleaner note (JSON), beside the sweep
// note.
const cleanerName = "cleaner.json"

// CleanerNoteKey names a partition's cleaner note.
func (l Layout) CleanerNoteKey(p Partition) string { return l.PartitionPrefix(p) + cleanerName }

// CleanerNote is where the last compaction of a partition's remote log
// left off: the first offset it did not clean, and the earliest time a
// tombstone or marker it kept may go (-1: none). Not part of the
// archive's data (a reader may ignore it): without it, the next pass
// cleans everything again.
type CleanerNote struct {
	LeaderEpoch int32     `json:"leader_epoch"`
	FirstDirty  int64     `json:"first_dirty"`
	Horizon     int64     `json:"horizon"`
	CleanedAt   time.Time `json:"cleaned_at"`
}

// ReadCleanerNote reads a partition's cleaner note (nil when there is
// none, or it does not decode: a pass then cleans everything).
func ReadCleanerNote(ctx context.Context, b objectstore.Bucket, l Layout, p Partition) (*CleanerNote, error) {
	return readPartitionNote(ctx, b, l.CleanerNoteKey(p), DecodeCleanerNote)
}

// DecodeCleanerNote decodes and checks a cleaner note.
func DecodeCleanerNote(data []byte) (*CleanerNote, error) {
	var n CleanerNote
	if err := decodeJSON(data, &n); err != nil {
		return nil, err
	}
	if n.LeaderEpoch < 0 || n.FirstDirty < 0 || n.Horizon < -1 {
		return nil, fmt.Errorf("%w: cleaner note: epoch %d, first dirty %d, horizon %d", ErrCorrupt, n.LeaderEpoch, n.FirstDirty, n.Horizon)
	}
	return &n, nil
}

// CompactConfig is one partition's remote compaction.
type CompactConfig struct {
	Bucket    objectstore.Bucket
	Layout    Layout
	Partition Partition
	Store     *ManifestStore
	// Reader reads the spilled parts and the companions.
	Reader *Reader
	// Epoch is the leader epoch the pass commits under.
	Epoch int32
	// Options: Now, DeleteRetentionMs, MinCompactionLagMs, MaxKeys and
	// Validate as for a local pass; HighWatermark bounds the segments
	// cleaned (the caller's high watermark and last stable offset).
	Options localseg.CompactOptions
	// SegmentBytes bounds the bytes a group reads (segment.bytes);
	// IndexInterval is index.interval.bytes.
	SegmentBytes, IndexInterval int64
	// LocalAbortedTxns returns the local log's aborted transactions that
	// overlap [from, to) (localseg.Log.AbortedTxns): the markers of
	// transactions the remote log holds records of may lie past its end.
	LocalAbortedTxns func(from, to int64) []localseg.AbortedTxn
	// LastBatches maps each producer the partition tracks to its last
	// batch's last offset (localseg.Log.LastBatches).
	LastBatches map[int64]int64
	// ScratchDir holds the new segments on their way up ("": the
	// system's temporary directory).
	ScratchDir string
	// CallTimeout bounds each call to the store, plus a second per MiB
	// of a segment read or written (default 30s).
	CallTimeout time.Duration
	Metrics     *Metrics
	// Uploading, when set, is told of each new object before the pass
	// writes it (pending true) and once the pass is done with it (false):
	// committed, deleted, or left to orphan sweeps. Until then the
	// leader's sweeps must spare it (ArchiverConfig.Spare), however long
	// the pass takes.
	Uploading func(key string, pending bool)
	// Note, when NoteKnown, is the partition's cleaner note as the
	// caller knows it (nil: none), which saves reading it: a leader
	// reads it once a term, then keeps what its passes write
	// (CompactResult.Note).
	Note      *CleanerNote
	NoteKnown bool
	// Fault, when set, is called at a pass's fault points (tests kill
	// the process there): "compact-uploaded", the new segments in the
	// bucket and the manifest not committed; "compact-committed", the
	// manifest committed and the cleaner note not written.
	Fault func(point string)
}

// defaultCompactCallTimeout is CompactConfig.CallTimeout's default.
const defaultCompactCallTimeout = 30 * time.Second

// CompactResult is what a remote pass did.
type CompactResult struct {
	localseg.CompactStats
	// Uploaded is how many new segments were committed.
	Uploaded int
	// Replaced are the keys of the objects the commit replaced, to
	// delete once reads begun before it are done (DeleteReplaced).
	Replaced []string
	// Note is the cleaner note the pass wrote (nil: none).
	Note *CleanerNote
}

// ErrCompactionRaced is returned when the manifest changed under a pass
// (remote retention dropped a segment it cleaned, say): its uploads are
// deleted and the next pass starts again.
var ErrCompactionRaced = errors.New("tiering: the remote log changed under its compaction")

// remotePlan is the part of the remote log a pass works on.
type remotePlan struct {
	segs       []Segment // from the one holding the log start, up to the bound
	dirty      int       // index in segs of the first dirty segment
	firstDirty int64
	horizonDue bool
}

// planRemote picks the segments a pass may clean.
func planRemote(ctx context.Context, cfg *CompactConfig, m *Manifest, note *CleanerNote) (remotePlan, error) {
	opts := cfg.Options
	start := m.Start()
	checkpoint := int64(0)
	p := remotePlan{dirty: -1}
	if note != nil && note.LeaderEpoch <= m.LeaderEpoch && note.FirstDirty <= m.End() {
		checkpoint = note.FirstDirty
		p.horizonDue = note.Horizon >= 0 && note.Horizon <= opts.Now.UnixMilli()
	}
	p.firstDirty = max(checkpoint, start)
	if start < 0 {
		return p, nil
	}
	lagCut := opts.Now.UnixMilli() - opts.MinCompactionLagMs
	err := WalkSegments(ctx, cfg.Reader, cfg.Partition, m, m.LogStartOffset, nil, func(s Segment) bool {
		if s.NextOffset > opts.HighWatermark {
			return false
		}
		if s.NextOffset > checkpoint {
			if opts.MinCompactionLagMs > 0 && s.MaxTimestamp > lagCut {
				return false
			}
			if p.dirty < 0 {
				p.dirty = len(p.segs)
				p.firstDirty = max(s.BaseOffset, start)
			}
		}
		p.segs = append(p.segs, s)
		return true
	})
	if p.dirty < 0 {
		p.dirty = len(p.segs)
		if n := len(p.segs); n > 0 {
			p.firstDirty = p.segs[n-1].NextOffset
		}
	}
	return p, err
}

// RemoteCleanable reports what a remote pass with cfg would clean, as
// localseg.Log.Cleanable does for the local log.
func RemoteCleanable(ctx context.Context, cfg CompactConfig) (localseg.Cleanable, error) {
	if err := cfg.Store.Settle(ctx); err != nil {
		return localseg.Cleanable{}, err
	}
	note, err := cfg.note(ctx)
	if err != nil {
		return localseg.Cleanable{}, err
	}
	p, err := planRemote(ctx, &cfg, cfg.Store.Current(), note)
	if err != nil {
		return localseg.Cleanable{}, err
	}
	c := localseg.Cleanable{FirstDirty: p.firstDirty, End: p.firstDirty, DirtyTimestamp: -1, HorizonDue: p.horizonDue && len(p.segs) > 0}
	for i, s := range p.segs {
		if i < p.dirty {
			c.CleanBytes += s.Size
			continue
		}
		if i == p.dirty {
			c.DirtyTimestamp = s.MaxTimestamp
		}
		c.DirtyBytes += s.Size
		c.End = s.NextOffset
	}
	return c, nil
}

// CompactRemote runs one compaction pass over a partition's remote log,
// as leader of cfg.Epoch. It returns ErrFenced when a newer leader owns
// the manifest, ErrCompactionRaced when the manifest changed under it,
// an error wrapping localseg.ErrSegmentCorrupt or a recordbatch error when
// a segment's bytes do not check out. Once its commit took, the result's
// Replaced holds what it replaced, even with an error (the cleaner note
// not written).
func CompactRemote(ctx context.Context, cfg CompactConfig) (CompactResult, error) {
	var res CompactResult
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = defaultCompactCallTimeout
	}
	if err := cfg.Store.Settle(ctx); err != nil {
		return res, err
	}
	note, err := cfg.note(ctx)
	if err != nil {
		return res, err
	}
	m := cfg.Store.Current()
	plan, err := planRemote(ctx, &cfg, m, note)
	if err != nil || len(plan.segs) == 0 {
		return res, err
	}
	if plan.dirty == len(plan.segs) && !plan.horizonDue {
		return res, nil
	}
	pc := &remotePass{cfg: &cfg, res: &res}
	defer pc.cleanup()
	// The aborted transactions of the records cleaned: their markers lie
	// in the remote log or, past its end, in the local one.
	from, end := plan.segs[0].BaseOffset, plan.segs[len(plan.segs)-1].NextOffset
	aborted, err := cfg.Reader.AbortedTxns(ctx, cfg.Partition, m, from, end)
	if err != nil {
		return res, err
	}
	if cfg.LocalAbortedTxns != nil {
		aborted = append(aborted, cfg.LocalAbortedTxns(m.End(), end)...)
	}
	pc.sc = localseg.NewSegmentCompaction(localseg.SegmentCompactionOptions{CompactOptions: cfg.Options, AbortedTxns: aborted, LastBatches: cfg.LastBatches})
	// The keys of the dirty segments, whole segments at a time, until the
	// map is full (with nothing dirty, a horizon due: the clean ones are
	// rewritten with an empty map).
	mapped := len(plan.segs)
	covered := int64(-1)
	if plan.dirty > 0 {
		covered = plan.segs[plan.dirty-1].NextOffset
	}
	for i := plan.dirty; i < len(plan.segs); i++ {
		if i > plan.dirty && pc.sc.Full() {
			mapped = i
			break
		}
		s := plan.segs[i]
		if err := pc.stream(ctx, s, func(r io.Reader) error { return pc.sc.MapKeys(ctx, r, max(s.BaseOffset, covered), s.NextOffset) }); err != nil {
			return res, err
		}
		covered = s.NextOffset
	}
	res.Keys = pc.sc.Keys()
	segs := plan.segs[:mapped]
	// The groups, rewritten and uploaded.
	var reps []replacement
	covered = -1
	for len(segs) > 0 {
		n := groupRemote(segs, cfg.SegmentBytes)
		group := segs[:n]
		segs = segs[n:]
		ns, changed, err := pc.rewrite(ctx, group, covered)
		if err != nil {
			return res, err
		}
		covered = group[n-1].NextOffset
		if changed {
			reps = append(reps, replacement{old: group, new: ns})
		}
	}
	res.CleanedTo = plan.segs[mapped-1].NextOffset
	if len(reps) > 0 {
		cfg.fault("compact-uploaded")
		// One commit replaces every group: an entry is replaced only if
		// it is still the manifest's, where it was.
		var before []Spill
		committed, err := cfg.Store.Commit(ctx, cfg.Epoch, func(m *Manifest) error {
			before = append(before[:0], m.Spills...)
			return replaceRuns(ctx, cfg.Reader, cfg.Partition, m, reps, cfg.Epoch, cfg.Options.Now.UnixMilli())
		})
		if err != nil {
			if errors.Is(err, ErrFenced) || errors.Is(err, ErrCompactionRaced) || errors.Is(err, ErrConflict) {
				// The write can no longer land; but it may have, and a
				// newer commit built on it: what the stored manifest
				// names stays.
				pc.deleteUnnamed(ctx, cfg.Store.Current())
			}
			pc.uploads = nil // the write may still land: orphan sweeps decide
			return res, err
		}
		pc.uploads = nil
		l, p := cfg.Layout, cfg.Partition
		for _, r := range reps {
			for _, s := range r.old {
				res.Replaced = append(res.Replaced, l.SegmentKey(p, s.BaseOffset, s.ID), l.CompanionKey(p, s.BaseOffset, s.ID))
			}
			res.Uploaded++
		}
		kept := make(map[[16]byte]bool, len(committed.Spills))
		for _, s := range committed.Spills {
			kept[s.ID] = true
		}
		for _, s := range before {
			if !kept[s.ID] {
				res.Replaced = append(res.Replaced, l.SpillKey(p, s.BaseOffset, s.ID))
			}
		}
	}
	if len(reps) > 0 {
		cfg.fault("compact-committed")
	}
	// The note last: a pass whose commit failed is done again whole.
	n := CleanerNote{LeaderEpoch: cfg.Epoch, FirstDirty: res.CleanedTo, Horizon: pc.sc.Horizon(), CleanedAt: cfg.Options.Now.UTC()}
	if err := putJSON(ctx, cfg.Bucket, cfg.Layout.CleanerNoteKey(cfg.Partition), n, objectstore.PutOptions{}); err != nil {
		return res, fmt.Errorf("%w: writing the cleaner note (the next pass cleans again what this one did): %w", ErrUnavailable, err)
	}
	res.Note = &n
	return res, nil
}

// note is the partition's cleaner note: the caller's, or read.
func (cfg *CompactConfig) note(ctx context.Context) (*CleanerNote, error) {
	if cfg.NoteKnown {
		return cfg.Note, nil
	}
	return ReadCleanerNote(ctx, cfg.Bucket, cfg.Layout, cfg.Partition)
}

func (cfg *CompactConfig) fault(point string) {
	if cfg.Fault != nil {
		cfg.Fault(point)
	}
}

// DeleteReplaced deletes the objects a pass replaced (CompactResult.Replaced).
func DeleteReplaced(ctx context.Context, b objectstore.Bucket, keys []string, metrics *Metrics) error {
	_, err := deleteEach(ctx, b, keys, metrics)
	return err
}

// groupRemote returns how many of segs (at least one) go in one group:
// at most maxBytes read, and offsets that stay within 32-bit relative
// offsets and positions.
func groupRemote(segs []Segment, maxBytes int64) int {
	if maxBytes <= 0 {
		maxBytes = math.MaxInt32
	}
	maxBytes = min(maxBytes, math.MaxInt32)
	size := segs[0].Size
	n := 1
	for ; n < len(segs); n++ {
		size += segs[n].Size
		if size > maxBytes || segs[n].NextOffset-segs[0].BaseOffset >= math.MaxInt32 {
			break
		}
	}
	return n
}

// remotePass is one pass's state: the key map and the uploads not yet
// committed.
type remotePass struct {
	cfg     *CompactConfig
	res     *CompactResult
	sc      *localseg.SegmentCompaction
	uploads []Segment // new segments uploaded and not committed
	// announced are the keys told to Uploading as pending.
	announced []string
}

// stream calls fn with the body of segment s's object.
func (pc *remotePass) stream(ctx context.Context, s Segment, fn func(r io.Reader) error) error {
	key := pc.cfg.Layout.SegmentKey(pc.cfg.Partition, s.BaseOffset, s.ID)
	ctx, cancel := context.WithTimeout(ctx, pc.cfg.CallTimeout+time.Duration(s.Size>>20)*time.Second)
	defer cancel()
	body, err := pc.cfg.Bucket.Get(ctx, key, 0, -1)
	pc.cfg.Metrics.get(err)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, key, err)
	}
	defer body.Close()
	wr := &watchedReader{r: body}
	if err := fn(bufio.NewReaderSize(wr, 1<<20)); err != nil {
		if wr.err != nil {
			// The store failed, not the bytes.
			return fmt.Errorf("%w: reading %s: %w", ErrUnavailable, key, wr.err)
		}
		return fmt.Errorf("tiering: compacting %s: %w", key, err)
	}
	return nil
}

// watchedReader keeps the first error other than io.EOF its reader
// returned.
type watchedReader struct {
	r   io.Reader
	err error
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}

// rewrite compacts one group into a new segment and uploads it (with its
// companion); changed is false when the group's bytes would not change
// (nothing uploaded). covered is the next offset of the segment before
// the group (-1: none).
func (pc *remotePass) rewrite(ctx context.Context, group []Segment, covered int64) (Segment, bool, error) {
	cfg := pc.cfg
	f, err := os.CreateTemp(cfg.ScratchDir, "remote-compaction-*.log")
	if err != nil {
		return Segment{}, false, err
	}
	// Each group's file goes once its upload is done (or failed): a
	// pass's scratch space is one group's, however many it rewrites.
	defer os.Remove(f.Name())
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	base := group[0].BaseOffset
	out := pc.sc.NewSegment(w, base, cfg.IndexInterval)
	ns := Segment{BaseOffset: base, NextOffset: group[len(group)-1].NextOffset, UploadEpoch: cfg.Epoch}
	var last *Companion
	for _, s := range group {
		comp, err := cfg.Reader.companion(ctx, cfg.Partition, s)
		if err != nil {
			return Segment{}, false, err
		}
		last = comp
		ns.Epochs = mergeEpochs(ns.Epochs, s.Epochs)
		from := max(s.BaseOffset, covered)
		if err := pc.stream(ctx, s, func(r io.Reader) error { return out.Add(ctx, r, from, s.NextOffset, comp.AbortedTxns) }); err != nil {
			return Segment{}, false, err
		}
		covered = s.NextOffset
	}
	info, err := out.Finish()
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return Segment{}, false, err
	}
	pc.res.Records += info.Records
	pc.res.RemovedRecords += info.Removed
	if !info.Changed && len(group) == 1 {
		return Segment{}, false, nil
	}
	ns.Size = info.Size
	ns.MaxTimestamp = info.MaxTimestamp
	if _, err := rand.Read(ns.ID[:]); err != nil {
		return Segment{}, false, err
	}
	comp := EncodeCompanion(&Companion{OffsetIndex: info.OffsetIndex, TimeIndex: info.TimeIndex, ProducerSnapshot: last.ProducerSnapshot,
		Epochs: ns.Epochs, AbortedTxns: info.AbortedTxns})
	ns.CompanionSize = int64(len(comp))
	l, p := cfg.Layout, cfg.Partition
	logKey, compKey := l.SegmentKey(p, ns.BaseOffset, ns.ID), l.CompanionKey(p, ns.BaseOffset, ns.ID)
	pc.uploads = append(pc.uploads, ns)
	pc.pending(logKey, compKey)
	if err := pc.put(ctx, compKey, bytes.NewReader(comp), ns.CompanionSize); err != nil {
		return Segment{}, false, err
	}
	if err := pc.put(ctx, logKey, io.NewSectionReader(f, 0, ns.Size), ns.Size); err != nil {
		return Segment{}, false, err
	}
	for _, s := range group {
		pc.res.ReadBytes += s.Size
	}
	pc.res.Segments += len(group)
	pc.res.Groups++
	pc.res.WrittenBytes += ns.Size
	return ns, true, nil
}

// put uploads one new object (putNew).
func (pc *remotePass) put(ctx context.Context, key string, r io.Reader, size int64) error {
	return putNew(ctx, pc.cfg.Bucket, key, r, size, pc.cfg.CallTimeout)
}

// deleteUploads removes the pass's uploads: none is named by a manifest.
func (pc *remotePass) deleteUploads(ctx context.Context) {
	pc.deleteUnnamed(ctx, nil)
}

// deleteUnnamed removes the pass's uploads that m does not name (nil: none
// is named), keeping those it cannot tell.
func (pc *remotePass) deleteUnnamed(ctx context.Context, m *Manifest) {
	cfg := pc.cfg
	var keys []string
	for _, s := range pc.uploads {
		if m != nil {
			named, ok, err := FindSegment(ctx, cfg.Reader, cfg.Partition, m, s.BaseOffset)
			if err != nil || (ok && named.ID == s.ID) {
				continue
			}
		}
		keys = append(keys, cfg.Layout.SegmentKey(cfg.Partition, s.BaseOffset, s.ID), cfg.Layout.CompanionKey(cfg.Partition, s.BaseOffset, s.ID))
	}
	pc.uploads = nil
	if len(keys) == 0 {
		return
	}
	ctx, cancel := objectstore.CleanupContext(ctx, max(cfg.CallTimeout, time.Second))
	defer cancel()
	deleteEach(ctx, cfg.Bucket, keys, cfg.Metrics)
}

// pending tells Uploading of new objects about to be written.
func (pc *remotePass) pending(keys ...string) {
	if pc.cfg.Uploading == nil {
		return
	}
	for _, k := range keys {
		pc.cfg.Uploading(k, true)
		pc.announced = append(pc.announced, k)
	}
}

// cleanup removes the uploads of a pass that ended before its commit,
// and tells Uploading the pass is done with its objects.
func (pc *remotePass) cleanup() {
	pc.deleteUploads(context.Background())
	if pc.cfg.Uploading != nil {
		for _, k := range pc.announced {
			pc.cfg.Uploading(k, false)
		}
	}
}

// mergeEpochs appends to es the entries of next that start epochs after
// its last (a group's epochs: the one in force at its base, then each
// that started inside it).
func mergeEpochs(es, next []localseg.EpochEntry) []localseg.EpochEntry {
	for _, e := range next {
		if n := len(es); n == 0 || (e.Epoch > es[n-1].Epoch && e.StartOffset >= es[n-1].StartOffset) {
			es = append(es, e)
		}
	}
	return es
}

// replacement is one group of a pass: the entries old, consecutive in the
// manifest, replaced by new.
type replacement struct {
	old []Segment
	new Segment
}

// replaceRun replaces, in m, the consecutive entries old with ns (see
// replaceRuns).
func replaceRun(ctx context.Context, l SpillLoader, p Partition, m *Manifest, old []Segment, ns Segment, epoch int32, nowMs int64) ([]Spill, error) {
	before := m.Spills
	if err := replaceRuns(ctx, l, p, m, []replacement{{old: old, new: ns}}, epoch, nowMs); err != nil {
		return nil, err
	}
	kept := map[[16]byte]bool{}
	for _, s := range m.Spills {
		kept[s.ID] = true
	}
	var dropped []Spill
	for _, s := range before {
		if !kept[s.ID] {
			dropped = append(dropped, s)
		}
	}
	return dropped, nil
}

// replaceRuns replaces, in m, each run of consecutive entries reps[i].old
// (ascending, not overlapping) with reps[i].new. Entries in spilled parts
// are replaced by replacing their parts: the entries of the parts from
// the first that holds one of a run to the last are gathered, the runs
// replaced within them, and they form one new part (written by the
// commit) when a part follows them, or go back to the manifest's own
// entries otherwise (the commit spills them again if they are many).
// ErrCompactionRaced when a run is no longer in m as it was.
func replaceRuns(ctx context.Context, l SpillLoader, p Partition, m *Manifest, reps []replacement, epoch int32, nowMs int64) error {
	if len(reps) == 0 {
		return nil
	}
	first := reps[0].old[0]
	lastOld := reps[len(reps)-1].old
	lastNext := lastOld[len(lastOld)-1].NextOffset
	// The part holding the first run's first entry, or len(m.Spills):
	// the manifest's own entries.
	a := 0
	for a < len(m.Spills) && m.Spills[a].NextOffset < first.NextOffset {
		a++
	}
	var flat []Segment
	b := a // parts a..b-1 are gathered
	for ; b < len(m.Spills); b++ {
		if len(flat) > 0 && m.Spills[b].BaseOffset >= lastNext {
			break
		}
		part, err := l.LoadSpill(ctx, p, m.Spills[b])
		if err != nil {
			return err
		}
		flat = append(flat, part.Segments...)
	}
	own := b == len(m.Spills) // the runs may reach the manifest's own entries
	if own {
		flat = append(flat, m.Segments...)
	}
	next := make([]Segment, 0, len(flat))
	i := 0
	for _, r := range reps {
		for i < len(flat) && !(flat[i].ID == r.old[0].ID && flat[i].BaseOffset == r.old[0].BaseOffset) {
			next = append(next, flat[i])
			i++
		}
		if i+len(r.old) > len(flat) {
			return ErrCompactionRaced
		}
		for j, s := range r.old {
			if f := flat[i+j]; f.ID != s.ID || f.BaseOffset != s.BaseOffset || f.NextOffset != s.NextOffset {
				return ErrCompactionRaced
			}
		}
		next = append(next, r.new)
		i += len(r.old)
	}
	next = append(next, flat[i:]...)
	if own {
		m.Spills = append([]Spill(nil), m.Spills[:a]...)
		m.Segments = next
		return nil
	}
	part, err := newSpill(next, epoch, nowMs)
	if err != nil {
		return err
	}
	m.Spills = append(append(append([]Spill(nil), m.Spills[:a]...), part), m.Spills[b:]...)
	return nil
}
