package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// TieringConfig configures tiered storage.
type TieringConfig struct {
	// Bucket, when set, turns tiered storage on: sealed segments of
	// topics with remote.storage.enable go to it. The broker does not
	// close it.
	Bucket objectstore.Bucket
	// Prefix is the key prefix of this cluster's archive in the bucket.
	Prefix string
	// CacheBytes bounds the remote read cache (default 1 GiB).
	CacheBytes int64
	// ChunkBytes is the size of one ranged GET and cache entry (default
	// 4 MiB).
	ChunkBytes int64
	// UploadInterval is how often a leader looks for segments to upload
	// besides the seal notices (default 30s); remote retention runs at
	// log.retention.check.interval.ms.
	UploadInterval time.Duration
	// OrphanGrace is how old an object the manifest does not name must
	// be before cleanup deletes it (default 1h: longer than any upload).
	// A leader sweeps at the start of its term and then about once per
	// grace (jittered), listing only the newest objects, where uploads
	// (its own, and from where its predecessors' sweep note says, theirs)
	// can have left orphans, and those below the manifest's first
	// segment, where remote retention can: a LIST page or two, however
	// long the history.
	OrphanGrace time.Duration
	// FullSweepEvery is about how often a leader's sweep lists all of
	// the partition's objects (default 24h; jittered): for the writes of
	// an older leader that landed late. A partition with a year of
	// history at 10 MB/s in 1 GiB segments holds some 600,000 objects,
	// 600 LIST requests a listing.
	FullSweepEvery time.Duration
	// DeletedTopicWatch is how long a deleted topic's directory must
	// have held its deletion marker alone before the broker that deleted
	// it stops looking (one LIST about once per OrphanGrace) for writes
	// that land there late (default 3 OrphanGrace). Later ones go at the
	// broker's next start.
	DeletedTopicWatch time.Duration
	// FetchTimeout bounds one remote read serving fetches (default 10s);
	// past it the next fetch at its offset gets a retriable
	// KAFKA_STORAGE_ERROR.
	FetchTimeout time.Duration
	// RemoteFetchMaxWait is how long a fetch waits for a remote read
	// before it is answered without that partition's records (default
	// 500ms, Kafka's remote.fetch.max.wait.ms); the read goes on, and the
	// next fetch at its offset takes its result (remoteFetch).
	RemoteFetchMaxWait time.Duration
	// GroupOffsetsInterval is how often each broker writes the committed
	// offsets of the groups it coordinates to the bucket, one object per
	// offsets-topic partition that changed (default 1 minute: at most 50
	// PUTs a minute a cluster, with Kafka's 50 partitions), so that a
	// cluster rebuilt from the bucket gives its groups back their offsets
	// (`shale topic restore`).
	GroupOffsetsInterval time.Duration
	// ReplacedDeleteDelay is how long after a compaction of a remote log
	// the objects it replaced are deleted (default 5 minutes), so that
	// reads begun on the manifest before it finish.
	ReplacedDeleteDelay time.Duration
	// Fault is a test hook called at the fault points of every upload
	// (tiering.ArchiverConfig.Fault) and remote compaction
	// (tiering.CompactConfig.Fault); nil outside crash tests.
	Fault func(point string)
}

func (c *TieringConfig) ensureDefaults() {
	if c.UploadInterval <= 0 {
		c.UploadInterval = 30 * time.Second
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = time.Hour
	}
	if c.FullSweepEvery <= 0 {
		c.FullSweepEvery = 24 * time.Hour
	}
	if c.DeletedTopicWatch <= 0 {
		c.DeletedTopicWatch = 3 * c.OrphanGrace
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 10 * time.Second
	}
	if c.RemoteFetchMaxWait <= 0 {
		c.RemoteFetchMaxWait = 500 * time.Millisecond
	}
	if c.GroupOffsetsInterval <= 0 {
		c.GroupOffsetsInterval = time.Minute
	}
	if c.ReplacedDeleteDelay <= 0 {
		c.ReplacedDeleteDelay = 5 * time.Minute
	}
}

// errTierLoading: a tiered partition's leader has not read its manifest
// yet; until it has, it answers for no offset below its local log, and it
// appends only if its log is sure to reach the remote end already
// (appendsBeforeManifest): otherwise the log end may have to move past it.
var errTierLoading = fmt.Errorf("%w: loading the partition's remote manifest", errNotLeader)

// tierService is the broker's tiered storage: the shared remote reader,
// and one archive loop per partition it leads.
type tierService struct {
	b       *Broker
	cfg     TieringConfig
	bucket  objectstore.Bucket
	layout  tiering.Layout
	reader  *tiering.Reader
	metrics *tiering.Metrics
	// storeMetrics count the calls to the object store (nil: not
	// registered).
	storeMetrics *objectstore.Metrics
	wg           sync.WaitGroup
	// spared holds the keys of objects no manifest names that the
	// orphan sweeps must keep: those a remote compaction is writing and
	// has not committed, and those it replaced whose deletion waits
	// (deleteReplacedLater).
	spared sync.Map
	// scrubs: what the remote scrubs found (tiered_scrub.go).
	scrubs remoteScrubs

	// archived: the archive descriptor is known to be in the bucket.
	archived atomic.Bool
	deleting sync.Map // topic dir -> true while a deletion runs
}

func newTierService(b *Broker, cfg TieringConfig, reg prometheus.Registerer) (*tierService, error) {
	bucket := cfg.Bucket
	layout := tiering.Layout{Prefix: cfg.Prefix}
	var om *objectstore.Metrics
	if reg != nil {
		// Every call the broker makes to the object store is counted
		// (shale_objectstore_*), and the requests it is billed for by
		// the topic whose objects they touch.
		om = objectstore.NewMetrics(reg)
		om.AttributeToTopics(layout.TopicOfKey)
		bucket = om.Wrap(bucket)
	}
	cfg.ensureDefaults()
	m := tiering.NewMetrics(reg)
	r, err := tiering.NewReader(tiering.ReaderConfig{Bucket: bucket, Layout: layout, CacheBytes: cfg.CacheBytes, ChunkBytes: cfg.ChunkBytes, Metrics: m})
	if err != nil {
		return nil, err
	}
	return &tierService{b: b, cfg: cfg, bucket: bucket, layout: layout, reader: r, metrics: m, storeMetrics: om}, nil
}

// start resumes topic deletions a crash interrupted, and the watch of
// those recent enough that writes on their way may still land, and clears
// the scratch files of remote compactions a stop cut short.
func (s *tierService) start() {
	// What remote compactions were writing when the broker stopped.
	os.RemoveAll(filepath.Join(s.b.cfg.DataDir, remoteCompactionDir))
	s.wg.Add(1)
	go s.writeGroupOffsets()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.b.ctx, time.Minute)
		defer cancel()
		pending, err := tiering.RecentDeletions(ctx, s.bucket, s.layout, time.Now().Add(-s.cfg.DeletedTopicWatch))
		if err != nil {
			s.b.log.Warn("listing unfinished topic deletions in the object store", "err", err)
			return
		}
		for _, d := range pending {
			td := tiering.TopicDescriptor{Name: d.Name, ID: d.ID}
			if id, err := td.TopicID(); err == nil {
				s.deleteTopic(d.Name, id)
			}
		}
	}()
}

// writeGroupOffsets writes, every GroupOffsetsInterval until the broker
// stops, the committed offsets of each offsets-topic partition this broker
// leads to the bucket, under the cluster's id, when they changed since its
// last write of that partition (tiering.GroupShard). Offsets of internal
// topics are left out.
func (s *tierService) writeGroupOffsets() {
	defer s.wg.Done()
	written := map[int32]string{} // partition -> the offsets last written, printed
	tick := time.NewTicker(s.cfg.GroupOffsetsInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.b.ctx.Done():
			return
		case <-tick.C:
		}
		if s.b.groups == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(s.b.ctx, 30*time.Second)
		failed, err := s.writeGroupShards(ctx, written)
		cancel()
		if err != nil {
			s.b.log.Warn("writing consumer groups' committed offsets to the object store; retrying", "partitions", failed, "in", s.cfg.GroupOffsetsInterval, "err", err)
		}
	}
}

// writeGroupShards is one round of writeGroupOffsets: it returns how many
// writes failed, and the last error.
func (s *tierService) writeGroupShards(ctx context.Context, written map[int32]string) (failed int, err error) {
	view := s.b.meta.snapshot()
	if view.clusterID == "" {
		return 0, nil
	}
	for shard, offs := range s.b.groups.c.ShardOffsets(ctx) {
		byGroup := map[string][]tiering.GroupOffset{}
		for _, o := range offs {
			tv := view.topics[o.Topic]
			if tv == nil || tv.internal {
				continue
			}
			byGroup[o.Group] = append(byGroup[o.Group], tiering.GroupOffset{Topic: o.Topic, TopicID: topicIDString(tv.id), Partition: o.Partition, Offset: o.Offset})
		}
		gs := tiering.GroupShard{Cluster: view.clusterID, Partition: shard, Partitions: s.b.groups.c.Config().OffsetsTopicNumPartitions, Groups: []tiering.GroupOffsets{}}
		for _, g := range slices.Sorted(maps.Keys(byGroup)) {
			offs := byGroup[g]
			slices.SortFunc(offs, func(a, b tiering.GroupOffset) int {
				return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
			})
			gs.Groups = append(gs.Groups, tiering.GroupOffsets{Group: g, Offsets: offs})
		}
		printed := fmt.Sprint(gs.Groups)
		prev, ok := written[shard]
		if ok && prev == printed {
			continue // unchanged
		}
		if !ok && len(gs.Groups) == 0 {
			// A partition this broker has not written holds no group: an
			// object of an earlier leader names groups gone since.
			switch _, herr := s.bucket.Head(ctx, s.layout.GroupShardKey(gs.Cluster, shard)); {
			case errors.Is(herr, objectstore.ErrNotFound):
				written[shard] = printed
				continue
			case herr != nil:
				failed, err = failed+1, herr
				continue
			}
		}
		gs.UpdatedAt = time.Now().UTC()
		if werr := tiering.PutGroupShard(ctx, s.bucket, s.layout, gs); werr != nil {
			failed, err = failed+1, werr
			continue
		}
		written[shard] = printed
	}
	return failed, err
}

// close waits for the archive loops and deletions (they end with the
// broker's context) and stops the reader.
func (s *tierService) close() {
	s.wg.Wait()
	s.reader.Close()
}

// partitionTier is one tiered partition's remote state on this broker.
type partitionTier struct {
	svc   *tierService
	part  tiering.Partition
	store *tiering.ManifestStore
	wake  chan struct{} // a segment was sealed; one pending signal
	ready atomic.Bool   // this leader term has read the manifest
	// early: this leader term appends before it has read the manifest
	// (appendsBeforeManifest).
	early atomic.Bool
	// dropped: this leader term dropped what it had appended, its log
	// moved to the remote end (adoptRemoteEnd). It appends no more, and
	// its leader epoch is raised (endDroppedTerm).
	dropped atomic.Bool
	// termStart is the log end as this leader term began (setLeader):
	// where its appends start when it appends before the manifest is
	// read.
	termStart atomic.Int64
	// gate is closed when ready may have changed: when the term that
	// installed it became ready, or when it ended (a new gate is in
	// place first). Produce requests that arrive while the manifest is
	// read wait on it (tierGate) rather than fail.
	gate atomic.Pointer[readyGate]
	// readWarned is when a failed remote read was last logged (unix
	// nanoseconds): at most one a remoteReadWarnEvery.
	readWarned atomic.Int64
	// cleanerNote is the partition's remote cleaner note as this leader
	// term knows it (cleanerNoteKnown: read, or written by its passes).
	cleanerNote      atomic.Pointer[tiering.CleanerNote]
	cleanerNoteKnown atomic.Bool
	// scrubNote is the partition's remote scrub note as this broker's
	// leader term last read or wrote it (tiered_scrub.go).
	scrubNote atomic.Pointer[scrubNoteCache]
	// lastUpload is when this broker last committed an upload (unix ms,
	// 0: not since it started).
	lastUpload atomic.Int64
	// hwWait, when above 0, is the end of a sealed segment the high
	// watermark had not passed when it was sealed: the high watermark
	// reaching it wakes the archive loop (hwPassed).
	hwWait atomic.Int64
	// durableWait is the end of the sealed segment the archive loop last
	// asked the log to tell it is on stable storage (uploadLimit); only
	// the archive loop uses it.
	durableWait atomic.Int64

	// sealed holds when the segments not yet uploaded were sealed (the
	// wait before an upload starts is measured from it).
	sealed struct {
		sync.Mutex
		at map[int64]time.Time // base offset -> seal time
	}

	// epochs is the remote log's leader epochs of one manifest, and the
	// read of them in flight (remoteEpochs); history keeps the epochs of
	// the spilled parts read, for the next manifest's.
	epochs struct {
		sync.Mutex
		of      *tiering.Manifest
		list    []localseg.EpochEntry
		load    *epochsLoad
		history tiering.EpochHistory
	}

	// described is what this term last wrote to the topic's descriptor
	// (partition 0's leader only; the archive loop alone uses it).
	described describedTopic

	// reads holds the remote reads started for fetches, by offset,
	// until a fetch takes their result or remoteFetchKeep passes
	// (remoteFetch).
	reads struct {
		sync.Mutex
		at map[int64]*remoteFetch
	}

	mu struct {
		sync.Mutex
		cancel context.CancelFunc
		done   chan struct{}
	}
}

func (s *tierService) newPartitionTier(topic string, id [16]byte, index int32) *partitionTier {
	part := tiering.Partition{Topic: topic, TopicID: id, Index: index}
	t := &partitionTier{svc: s, part: part, store: tiering.NewManifestStore(s.bucket, s.layout.ManifestKey(part), nil), wake: make(chan struct{}, 1)}
	t.gate.Store(newReadyGate())
	t.reads.at = map[int64]*remoteFetch{}
	return t
}

// readyGate is one leader term's readiness signal (partitionTier.gate).
type readyGate struct {
	ch   chan struct{}
	once sync.Once
}

func newReadyGate() *readyGate { return &readyGate{ch: make(chan struct{})} }

func (g *readyGate) open() { g.once.Do(func() { close(g.ch) }) }

// onSeal is localseg's seal hook: it notes the time, and wakes the archive
// loop now, or when the high watermark passes the segment (hwPassed).
func (t *partitionTier) onSeal(s localseg.SegmentInfo) {
	now := time.Now()
	end := t.manifest().End()
	t.sealed.Lock()
	if t.sealed.at == nil {
		t.sealed.at = make(map[int64]time.Time)
	}
	for base := range t.sealed.at {
		if base < end {
			delete(t.sealed.at, base) // uploaded, or gone
		}
	}
	t.sealed.at[s.BaseOffset] = now
	t.sealed.Unlock()
	for {
		w := t.hwWait.Load()
		if w >= s.NextOffset || t.hwWait.CompareAndSwap(w, s.NextOffset) {
			break
		}
	}
	t.poke()
}

// hwPassed is called when a leader's high watermark moves to hw: it wakes
// the archive loop when hw passes a segment sealed before it.
func (t *partitionTier) hwPassed(hw int64) {
	if w := t.hwWait.Load(); w > 0 && hw >= w && t.hwWait.CompareAndSwap(w, 0) {
		t.poke()
	}
}

// poke wakes the archive loop (one pending signal).
func (t *partitionTier) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// sealedAt is when the segment at base was sealed (zero: not seen).
func (t *partitionTier) sealedAt(base int64) time.Time {
	t.sealed.Lock()
	defer t.sealed.Unlock()
	return t.sealed.at[base]
}

// manifest is the last manifest this broker read or committed.
func (t *partitionTier) manifest() *tiering.Manifest { return t.store.Current() }

// setLeader starts or stops the partition's archive loop. Called by the
// replica manager (under its lock) on leadership changes.
func (t *partitionTier) setLeader(p *partition, leader bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.cancel != nil {
		t.mu.cancel()
		<-t.mu.done
		t.mu.cancel, t.mu.done = nil, nil
	}
	// A partition none of whose records is in the bucket has an empty
	// manifest, or none: the term needs nothing from it to serve.
	empty := leader && p.state.Load().unarchived
	t.termStart.Store(p.log.LogEndOffset())
	t.dropped.Store(false)
	t.ready.Store(empty)
	t.early.Store(leader && appendsBeforeManifest(p))
	if leader {
		syncOnLead(p)
	}
	// Whoever waits on the old term's gate looks again, at the new one.
	gate := newReadyGate()
	if empty {
		gate.open()
	}
	t.gate.Swap(gate).open()
	if !leader {
		return
	}
	ctx, cancel := context.WithCancel(t.svc.b.ctx)
	done := make(chan struct{})
	t.mu.cancel, t.mu.done = cancel, done
	t.svc.wg.Add(1)
	go func() {
		defer t.svc.wg.Done()
		defer close(done)
		t.run(ctx, p, gate)
	}()
}

// appendsBeforeManifest reports whether a new leader term of p may append
// before it has read the manifest, so that a broker restarted while the
// object store is down, a replica taking over then, or a topic created
// then, takes produce: it may when its log is sure to hold every offset
// the bucket holds, so that nothing it appends lands at an offset the
// bucket has already. That is so when none of the partition's records has
// reached the bucket (the partition's metadata says it is unarchived: a
// leader records that it archives before its first upload may commit), or
// when the term began with a clean election (a leader from outside the ISR
// may hold less than was uploaded) and the log has lost nothing of what it
// was given: a replica elected from the ISR holds everything below the
// high watermark, and only that is uploaded. The log has lost nothing when
//   - this process created it while the partition was unarchived
//     (sinceCreation): everything it got since, from offset 0 or from a
//     restore at the bucket's end, is still there (no crash since), or
//   - it has held records (a new or lost log directory has none, nor
//     has a log whose segments were lost, LostSegmentsAtOpen: it waits,
//     to continue where the bucket ends), and it is as this
//     broker's previous run closed it (OpenedClean), or this process
//     created it (createdHere: a new replica, or one whose disk was lost,
//     given everything it holds by its fetches and a restore at the
//     bucket's end, with no crash since), or this process saw the ISR
//     take it in (joinedISR: after a crash of this machine, which took
//     it out, or a restore at the bucket's end; the leader takes in only
//     a follower that holds everything below the high watermark, and no
//     crash since has cut that), or
//   - it has held records, and this broker is the partition's only
//     replica, so that it made every upload itself, each only once the
//     segment was on its stable storage (uploadLimit): a crash of the
//     machine kept all of it.
//
// What it cannot see: a log directory restored from an old copy, and a
// single-replica partition moved here by a reassignment whose copy a crash
// of this machine cut below what the old replica had uploaded, in the
// moment before the fsync this broker asks for as it takes over
// (syncOnLead). Should the manifest, once read, end past where the term
// began all the same, the log is moved to the remote end
// (adoptRemoteEnd), and what was appended early is lost; it is logged as
// an error.
func appendsBeforeManifest(p *partition) bool {
	s := p.state.Load()
	switch {
	case s.leader != p.nodeID:
		return false
	case s.unarchived:
		return true
	case s.uncleanEpoch > 0 && s.uncleanEpoch == s.leaderEpoch:
		return false
	case p.sinceCreation:
		return true
	case p.log.LogEndOffset() == 0, p.log.LostSegmentsAtOpen():
		return false
	case p.log.OpenedClean(), p.createdHere, p.joinedISR.Load():
		return true
	}
	return len(s.replicas) == 1 && s.replicas[0] == p.nodeID
}

// syncOnLead asks for everything p's log holds to reach stable storage, as
// a term begins. A replica that took over a single-replica partition (a
// reassignment) holds the records its predecessor uploaded, copied as a
// follower, which does not fsync: once they are synced, a crash of this
// machine cannot leave its log short of the bucket, which a single
// replica that appends before reading its manifest relies on
// (appendsBeforeManifest). After a clean start the log is synced already.
func syncOnLead(p *partition) {
	p.log.WhenDurable(p.log.LogEndOffset(), func(error) {})
}

// run is one leader term of the archive loop: read the manifest, then
// upload sealed segments below the last stable offset as they come, and
// apply remote retention.
// gate is the term's readiness gate, opened once the manifest is read.
func (t *partitionTier) run(ctx context.Context, p *partition, gate *readyGate) {
	log := t.svc.b.log.With("topic", t.part.Topic, "partition", t.part.Index)
	backoff := time.Duration(0)
	retry := func(what string, err error) bool {
		backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
		log.Warn(what+"; retrying", "in", backoff, "err", err)
		return sleepCtx(ctx, backoff)
	}
	_, epoch := p.leaderState()
	// until runs step, a deadline per try, until it succeeds: false when
	// the term ends or a newer leader owns the manifest.
	until := func(what string, step func(context.Context) error) bool {
		for {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := step(sctx)
			cancel()
			switch {
			case err == nil:
				return true
			case errors.Is(err, tiering.ErrFenced):
				t.fenced(ctx, p, epoch, log)
				return false
			case ctx.Err() != nil || !retry(what, err):
				return false
			}
		}
	}
	// endDroppedTerm ends this term, which dropped what it had appended
	// (adoptRemoteEnd), by raising the partition's leader epoch: the
	// followers that copied the dropped records hold them under epoch,
	// and only a new epoch makes them ask where their logs part from the
	// leader's (OffsetForLeaderEpoch). The leader's log, the bucket's
	// below the remote end, knows no epoch after the bucket's last, so the
	// answer cuts a follower's copy back to where epoch began in it, and
	// below the leader's local log the follower restarts where the remote
	// log ends. The term appends nothing meanwhile (checkTierAppend): an
	// append under epoch at the remote end would make it look continued.
	// A raise refused because a newer leader took over is retried until
	// the term's end, which that leadership change brings.
	endDroppedTerm := func() {
		if until("raising the leader epoch of a term that dropped its appends", func(sctx context.Context) error {
			return t.svc.b.meta.raiseLeaderEpoch(sctx, p.topic, p.index, p.nodeID, epoch, epoch)
		}) {
			log.Warn("the leader term that dropped its appends ends: its leader epoch is raised", "epoch", epoch)
		}
	}
	// The manifest is fenced under this term's epoch before the orphan
	// sweep: a commit of an older leader still on its way can no longer
	// land and name objects the sweep deletes. A log that adopts the
	// remote end is fenced first, so that it adopts the final manifest;
	// any other takes produce once the manifest is read, and fences
	// after (a write, which a produce to a new leader need not wait for).
	//
	// from is where this term's appends begin: where the term began, when
	// it appends before reading the manifest (appendsBeforeManifest), else
	// where the log ends once the manifest is read. A manifest ending past
	// it means the bucket holds other records at offsets the term appends
	// at (adoptRemoteEnd).
	from := int64(math.MaxInt64)
	if t.appends() {
		from = t.termStart.Load()
	}
	var m *tiering.Manifest
	fenced, missing := false, false
	if !until("reading the remote manifest", func(sctx context.Context) (err error) {
		if m, err = t.store.Load(sctx); err != nil {
			if errors.Is(err, tiering.ErrManifestMissing) && !p.cfg.Load().remoteStorage {
				// Remote storage turned off, and no manifest: a
				// partition whose metadata predates the unarchived
				// mark and never uploaded, or one whose manifest went
				// some other way. Nothing is left to delete.
				missing = true
				return nil
			}
			return err
		}
		if min(from, p.log.LogEndOffset()) < m.End() {
			if m, err = t.store.Fence(sctx, epoch); err != nil {
				return err
			}
			fenced = true
		}
		return p.adoptRemoteEnd(sctx, m, from)
	}) {
		return
	}
	if missing {
		if until("recording that the partition's records are out of the object store", func(sctx context.Context) error {
			return t.svc.b.meta.markUnarchived(sctx, t.part.Topic, t.part.Index, p.nodeID, epoch)
		}) {
			log.Info("remote storage was turned off and the partition has no remote manifest: its log reopens without tiered storage")
		}
		return
	}
	if t.dropped.Load() {
		endDroppedTerm()
		return
	}
	if !t.appends() {
		from = p.log.LogEndOffset() // nothing appended before this term is ready
	}
	p.log.SetUploadedEnd(uploadedEnd(m))
	t.ready.Store(true)
	gate.open()
	if !fenced {
		if !until("fencing the remote manifest", func(sctx context.Context) (err error) {
			m, err = t.store.Fence(sctx, epoch)
			return err
		}) {
			return
		}
		// The fence's read may find a manifest the load did not see (a
		// store that served an older version, or an older leader's
		// commit that landed late), ending past where this term's
		// appends began.
		if from < m.End() && !until("moving the local log to the remote end", func(sctx context.Context) error {
			return p.adoptRemoteEnd(sctx, m, from)
		}) {
			return
		}
		if t.dropped.Load() {
			endDroppedTerm()
			return
		}
	}
	p.log.SetUploadedEnd(uploadedEnd(m)) // the fence's read may have found more
	if !p.cfg.Load().remoteStorage {
		// Remote storage was turned off on the topic: the remote log
		// goes (unless it went already, and the log is about to reopen
		// without its tier), and the term archives only if it is
		// turned on again meanwhile.
		if p.state.Load().unarchived {
			return
		}
		t.svc.metadataObjects(ctx, p)
		if !t.drain(ctx, p, epoch, log, until) {
			return
		}
	} else if p.state.Load().unarchived && !until("recording that the partition's records go to the object store", func(sctx context.Context) error {
		return t.svc.b.meta.markArchiving(sctx, t.part.Topic, t.part.Index, p.nodeID, epoch)
	}) {
		return
	}
	t.svc.metadataObjects(ctx, p)
	arch := tiering.NewArchiver(tiering.ArchiverConfig{
		Bucket: t.svc.bucket, Layout: t.svc.layout, Partition: t.part, Manifest: t.store, Source: p.log,
		Logger: log, Metrics: t.svc.metrics, Fault: t.svc.cfg.Fault, SealedAt: t.sealedAt,
		// Objects a failed upload or remote retention could not delete
		// go within about a grace period, not at the next leader change.
		// The term's first sweep, beside its first uploads, lists what
		// earlier leaders left: from where their sweep note says.
		SweepEvery: t.svc.cfg.OrphanGrace, FullSweepEvery: t.svc.cfg.FullSweepEvery, SweepAtStart: true,
		OrphanGrace: t.svc.cfg.OrphanGrace, Spills: t.svc.reader, Spare: t.svc.spare,
		OnCommit: func(m *tiering.Manifest) {
			p.log.SetUploadedEnd(uploadedEnd(m))
			t.lastUpload.Store(time.Now().UnixMilli())
			backoff = 0 // Run calls it on this goroutine
		},
	})
	// Remote retention runs beside the uploads, one pass at a time: a
	// pass that expires a year of history deletes for minutes.
	var (
		lastRetention time.Time
		retaining     atomic.Bool
		retention     sync.WaitGroup
		// The remote compaction passes run beside, as retention.
		lastCompaction time.Time
		compacting     atomic.Bool
	)
	rctx, endRetention := context.WithCancel(ctx)
	defer func() {
		endRetention()
		retention.Wait()
	}()
	backoff = 0
	t.durableWait.Store(0)
	t.cleanerNoteKnown.Store(false) // read again: an older leader may have written it since
	hooks := tiering.RunHooks{
		Limit: func() int64 {
			if p.cfg.Load().uploadsStopped() {
				return -1 // remote.log.copy.disable: nothing more goes
			}
			return t.uploadLimit(p)
		},
		Wake: t.wake,
		Idle: t.idle(p),
		Tick: func() bool {
			if leader, e := p.leaderState(); leader != p.nodeID || e != epoch || !p.cfg.Load().remoteStorage {
				return false
			}
			if now := time.Now(); now.Sub(lastRetention) >= t.svc.b.cfg.LogRetentionCheckInterval && retaining.CompareAndSwap(false, true) {
				lastRetention = now
				retention.Add(1)
				go func() {
					defer retention.Done()
					defer retaining.Store(false)
					// Objects it dropped from the manifest and
					// failed to delete lie below the manifest's
					// first segment, where every orphan sweep looks.
					t.applyRetention(rctx, p, epoch, now)
				}()
			}
			if backoff := t.svc.b.cfg.LogCleanerBackoff; p.cfg.Load().compact && backoff >= 0 && time.Since(lastCompaction) >= backoff &&
				compacting.CompareAndSwap(false, true) {
				now := time.Now()
				lastCompaction = now
				retention.Add(1)
				go func() {
					defer retention.Done()
					defer compacting.Store(false)
					t.compactRemote(rctx, p, epoch, now)
				}()
			}
			if t.describedStale(p) {
				t.svc.metadataObjects(ctx, p)
			}
			return true
		},
	}
	for ctx.Err() == nil {
		if !hooks.Tick() {
			if leader, e := p.leaderState(); leader != p.nodeID || e != epoch || p.cfg.Load().remoteStorage || ctx.Err() != nil {
				return // the term ended
			}
			// Remote storage was turned off: the uploads in flight
			// have ended (Run waits for the commit in flight), and so
			// does the retention pass under way; the remote log goes,
			// and the term archives again only if it is turned on again
			// meanwhile.
			retention.Wait()
			if !t.drain(ctx, p, epoch, log, until) {
				return
			}
			continue
		}
		err := arch.Run(ctx, epoch, hooks)
		switch {
		case err == nil:
			continue // Tick ended it: the term, or remote storage, ended
		case errors.Is(err, tiering.ErrFenced):
			t.fenced(ctx, p, epoch, log)
			return
		case ctx.Err() != nil || !retry("segment upload failed", err):
			return
		}
	}
}

// deleteNotes deletes the partition's sweep, cleaner and scrub notes,
// which speak of a remote log its drain deleted.
func (t *partitionTier) deleteNotes(ctx context.Context) error {
	t.cleanerNoteKnown.Store(false)
	t.scrubNote.Store(nil)
	for _, key := range []string{t.svc.layout.SweepNoteKey(t.part), t.svc.layout.CleanerNoteKey(t.part), t.svc.layout.ScrubNoteKey(t.part)} {
		if err := t.svc.bucket.Delete(ctx, key); err != nil && !errors.Is(err, objectstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// idle is how long the archive loop of p's leader term waits for a seal
// before it looks again: the upload interval, or the log cleaner's backoff
// when shorter on a compacted topic, whose remote compaction passes start
// from the loop.
func (t *partitionTier) idle(p *partition) time.Duration {
	d := t.svc.cfg.UploadInterval
	if backoff := t.svc.b.cfg.LogCleanerBackoff; backoff > 0 && p.cfg.Load().compact {
		d = min(d, backoff)
	}
	return d
}

// drain deletes the partition's remote log in a term that leads it after
// its topic's remote storage was turned off (remote.storage.enable=false
// with remote.log.delete.on.disable=true, KIP-950), then marks the
// partition unarchived, upon which its replicas reopen their logs
// without a tier. It returns true when remote storage was turned on
// again meanwhile: the term goes on to archive.
//
// The manifest goes first: committed with its log start at its end, so
// that from then on no offset is read from the bucket (the log starts at
// the local log's start, and the local log keeps what it holds); remote
// retention then drops its entries and deletes their objects, pass after
// pass, as it does expired ones. What
// no manifest names (objects of failed uploads, late writes of older
// leaders) goes by orphan sweeps: one at once, and one once the orphan
// grace has passed since the manifest was emptied, so that every upload
// begun before has ended (the sweeps delete what is older than the grace,
// as the leaders' sweeps do: a newer leader's uploads are younger). The
// manifest itself stays, empty, its log start back at 0, as if the
// partition had never been archived: it fences the late commits of older
// leaders (a commit is conditional on the version it read), and should
// remote storage be turned on again, uploads start from the local log.
// Every step is resumable: a new term begins the drain again, and steps
// already done are quick.
func (t *partitionTier) drain(ctx context.Context, p *partition, epoch int32, log *slog.Logger, until func(string, func(context.Context) error) bool) bool {
	resumed := func() bool { return p.cfg.Load().remoteStorage }
	// resume goes back to archiving, the manifest's entries gone: the
	// manifest starts over at the local log's start, so that uploads
	// begin there (the records the bucket had are on the local disk from
	// there on; what it had below, the drain deleted).
	resume := func() bool {
		// The cleaner note spoke of the remote log deleted: the new one
		// is compacted from its start. Best effort: a stale note only
		// leaves some records a pass longer (it counts them clean).
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t.cleanerNoteKnown.Store(false)
		if err := t.svc.bucket.Delete(dctx, t.svc.layout.CleanerNoteKey(t.part)); err != nil && !errors.Is(err, objectstore.ErrNotFound) {
			log.Warn("deleting the cleaner note of the deleted remote log", "err", err)
		}
		cancel()
		if !until("starting the remote manifest over at the local log's start", func(sctx context.Context) error {
			return t.startManifestOver(sctx, epoch, p.log.LocalLogStartOffset())
		}) || !until("recording that the partition's records go to the object store", func(sctx context.Context) error {
			return t.svc.b.meta.markArchiving(sctx, t.part.Topic, t.part.Index, p.nodeID, epoch)
		}) {
			return false
		}
		p.log.SetUploadedEnd(uploadedEnd(t.manifest()))
		log.Info("remote storage was turned on again: uploads go on from the local log's start", "offset", t.manifest().End())
		return true
	}
	began := time.Now()
	log.Info("remote storage was turned off: deleting the partition's remote log", "segments", t.manifest().SegmentCount(), "bytes", t.manifest().Bytes())
	if !until("moving the remote log start to its end", func(sctx context.Context) error {
		return t.setLogStart(sctx, epoch, math.MaxInt64)
	}) {
		return false
	}
	// Nothing counts as uploaded any more: should uploads go on again
	// (resume), local retention waits for them.
	p.log.SetUploadedEnd(uploadedEnd(t.manifest()))
	// Remote retention drops every entry, all of them below the log
	// start now, and deletes their objects, pass after pass. Not through
	// partitionTier.applyRetention, which would move the local log's
	// start along with the remote one: the local log keeps its records,
	// readable from its start, as Kafka's does.
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		// Turned on again meanwhile, the drain still empties the
		// manifest first (resume).
		if m := t.manifest(); m.SegmentCount() == 0 && len(m.Spills) == 0 {
			break
		}
		cfg := p.cfg.Load()
		pol := tiering.RetentionPolicy{RetentionMs: cfg.retentionMs, RetentionBytes: cfg.retentionBytes}
		rctx, cancel := context.WithTimeout(ctx, retentionPassTimeout)
		m, err := tiering.ApplyRetention(rctx, t.svc.bucket, t.svc.layout, t.part, t.store, t.svc.reader, epoch, pol, time.Now(), 0, t.svc.metrics)
		cancel()
		switch {
		case err != nil:
			log.Warn("deleting the remote log; retrying", "in", backoff, "err", err)
		case m != nil:
			backoff = time.Second / 2 // a pass done: the next at once
			continue
		}
		if m := t.manifest(); m.SegmentCount() == 0 && len(m.Spills) == 0 {
			break
		}
		if _, e := p.leaderState(); e != epoch || !sleepCtx(ctx, backoff) {
			return false // a new term goes on
		}
	}
	sweep := func(sctx context.Context) error {
		m, err := t.store.Load(sctx)
		if err != nil {
			return err
		}
		if m.LeaderEpoch > epoch {
			return fmt.Errorf("%w: a newer leader's manifest, of epoch %d", tiering.ErrFenced, m.LeaderEpoch)
		}
		n, err := tiering.CleanOrphans(sctx, t.svc.bucket, t.svc.layout, t.part, m, t.svc.reader, time.Now(), t.svc.cfg.OrphanGrace, t.svc.metrics)
		if n > 0 {
			log.Info("deleted objects of the remote log no manifest named", "count", n)
		}
		return err
	}
	if !until("deleting the remote log's unnamed objects", sweep) {
		return false
	}
	for wait := time.Until(began.Add(t.svc.cfg.OrphanGrace)); wait > 0; wait = time.Until(began.Add(t.svc.cfg.OrphanGrace)) {
		if resumed() {
			return resume()
		}
		if !sleepCtx(ctx, min(wait, time.Second)) {
			return false
		}
	}
	if !until("deleting the remote log's unnamed objects", sweep) || !until("deleting the sweep, cleaner and scrub notes", t.deleteNotes) {
		return false
	}
	// The manifest starts over, as if the partition had never been
	// archived: no entries, the log start at 0. A log that lost its
	// disk later then starts afresh under it rather than at the end the
	// deleted history had (adoptRemoteEnd), which would cost what a term
	// appended before reading it, the partition being unarchived.
	if !until("resetting the remote manifest", func(sctx context.Context) error {
		return t.startManifestOver(sctx, epoch, 0)
	}) {
		return false
	}
	if resumed() {
		return resume()
	}
	if !until("recording that the partition's records are out of the object store", func(sctx context.Context) error {
		return t.svc.b.meta.markUnarchived(sctx, t.part.Topic, t.part.Index, p.nodeID, epoch)
	}) {
		return false
	}
	if resumed() {
		// On again just now: the partition stays tiered (its log is
		// not reopened), and this term archives.
		return resume()
	}
	log.Info("deleted the partition's remote log; its log reopens without tiered storage", "took", time.Since(began).Round(time.Second))
	return false
}

// startManifestOver commits the drained manifest, which names no
// segment, with its log start at start: where uploads begin, should
// remote storage be on.
func (t *partitionTier) startManifestOver(ctx context.Context, epoch int32, start int64) error {
	_, err := t.store.Commit(ctx, epoch, func(m *tiering.Manifest) error {
		if m.SegmentCount() > 0 || len(m.Spills) > 0 {
			return fmt.Errorf("broker: the remote manifest names %d segments again", m.SegmentCount())
		}
		m.LogStartOffset = start
		return nil
	})
	return err
}

// fenced handles a manifest commit of the term of epoch refused for a
// higher leader epoch in the manifest. That is a newer leader's, unless
// the metadata still names this broker the leader at epoch: then the
// manifest's epoch came from metadata that is gone (etcd restored from an
// older copy, or a cluster rebuilt without restore's epochs), and no
// leader of this partition could ever upload again. The broker then raises
// the partition's leader epoch above the manifest's, a compare-and-swap
// that fails if a newer leader did take over; the new term uploads.
func (t *partitionTier) fenced(ctx context.Context, p *partition, epoch int32, log *slog.Logger) {
	m, err := t.store.Load(ctx)
	if err != nil || m.LeaderEpoch <= epoch {
		log.Warn("a newer leader owns the remote manifest; this broker stops uploading", "epoch", epoch)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := t.svc.b.meta.raiseLeaderEpoch(wctx, p.topic, p.index, p.nodeID, epoch, m.LeaderEpoch); err != nil {
		log.Warn("a newer leader owns the remote manifest; this broker stops uploading", "epoch", epoch, "manifest_epoch", m.LeaderEpoch, "err", err)
		return
	}
	log.Error("the remote manifest is fenced by a leader epoch the metadata never reached (restored from an older copy?): "+
		"this partition's leader epoch is raised above it", "epoch", epoch, "manifest_epoch", m.LeaderEpoch)
}

// uploadLimit is the offset uploads may reach: the last stable offset, and
// no further than the log's recovery point, so that the bucket never holds
// a record that a crash of this machine could take from the local log (a
// single-replica leader that appends before it has read its manifest
// relies on it: appendsBeforeManifest). A sealed segment's fsync starts
// when it is sealed; the archive loop is woken when it has ended.
func (t *partitionTier) uploadLimit(p *partition) int64 {
	limit := p.lastStableOffset()
	rp := p.log.RecoveryPoint()
	if rp >= limit {
		return limit
	}
	sealed := int64(-1) // the end of the last sealed segment to wait for
	for _, s := range p.log.Segments() {
		if !s.Active && s.NextOffset <= limit && s.NextOffset > rp {
			sealed = s.NextOffset
		}
	}
	if sealed > t.durableWait.Load() {
		t.durableWait.Store(sealed)
		if p.log.WhenDurable(sealed, func(error) { t.poke() }) {
			return min(limit, p.log.RecoveryPoint())
		}
	}
	return rp
}

// applyRetention applies the topic's total retention to the remote log,
// pass after pass until nothing more expired, and moves the local log
// start along as the remote one passes it. A pass that fails is logged;
// the next run goes on from there.
func (t *partitionTier) applyRetention(ctx context.Context, p *partition, epoch int32, now time.Time) {
	cfg := p.cfg.Load()
	pol := tiering.RetentionPolicy{RetentionMs: cfg.retentionMs, RetentionBytes: cfg.retentionBytes}
	if m := t.manifest(); cfg.uploadsStopped() && p.log.LogStartOffset() > m.End() && m.LogStartOffset < m.End() {
		// Local retention deleted segments the bucket never got (their
		// uploads are stopped): the remote log, older still, no longer
		// continues into the local one. The log starts past it, as
		// Kafka's does once it deletes local segments with copying
		// disabled, and it is deleted below.
		if err := t.setLogStart(ctx, epoch, p.log.LogStartOffset()); err != nil {
			t.svc.b.log.Warn("moving the remote log start past a remote log the local one no longer continues", "topic", t.part.Topic, "partition", t.part.Index, "err", err)
			return
		}
	}
	// A pass drops a bounded batch of segments; passes go on while one
	// dropped some, each under a deadline of its own.
	for ctx.Err() == nil {
		end := t.manifest().End()
		var localBytes int64
		for _, s := range p.log.Segments() {
			if s.NextOffset > end {
				localBytes += s.Size
			}
		}
		bctx, cancel := context.WithTimeout(ctx, retentionPassTimeout)
		m, err := tiering.ApplyRetention(bctx, t.svc.bucket, t.svc.layout, t.part, t.store, t.svc.reader, epoch, pol, now, localBytes, t.svc.metrics)
		cancel()
		if m != nil {
			if err := p.log.SetLogStartOffset(min(m.LogStartOffset, p.log.LogEndOffset())); err != nil {
				t.svc.b.log.Warn("moving the log start after remote retention", "topic", t.part.Topic, "partition", t.part.Index, "err", err)
			}
		}
		if err != nil {
			t.svc.b.log.Warn("remote retention", "topic", t.part.Topic, "partition", t.part.Index, "err", err)
			return
		}
		if m == nil {
			return
		}
	}
}

// retentionPassTimeout bounds one remote retention pass: a manifest
// commit and the deletes of a batch of segments' objects.
const retentionPassTimeout = time.Minute

// uploadedEnd is how far the bucket holds a partition's records, for
// local retention's guard (localseg.Log.SetUploadedEnd): the end of the
// manifest's entries, and 0 when none reaches past its log start (a
// remote log that retention emptied, or that is being deleted, drain:
// the records the local log still holds are then in no bucket to be read,
// and its records below the log start go anyway).
func uploadedEnd(m *tiering.Manifest) int64 {
	if start := m.Start(); start < 0 || start >= m.End() {
		return 0
	}
	return m.End()
}

// uploadLag is a tiered partition's upload lag at one instant.
type uploadLag struct {
	// bytes and segments: the sealed local segments the manifest does
	// not hold yet (Kafka's RemoteCopyLagBytes and RemoteCopyLagSegments).
	bytes, segments int64
	// eligible: those of them whose last offset is below the last stable
	// offset, the ones the archive loop may upload now (uploading, waiting
	// for a slot, or named by a commit in flight). What the tiering
	// target bounds: a segment sealed before the high watermark reached
	// its end waits for replication, not for the uploader.
	eligible int64
	// remoteBytes: the bytes the manifest holds.
	remoteBytes int64
}

// lag returns the partition's upload lag (metrics, at scrape time). As
// Kafka's RemoteCopyLagSegments and RemoteCopyLagBytes, the lag is every
// sealed segment past the remote log's end: an upload in flight is not
// copied until its commit, and one not yet below the high watermark is on
// the local disk alone all the same. Empty segments are never uploaded, so
// they are no lag.
func (t *partitionTier) lag(p *partition) uploadLag {
	m := t.manifest()
	end := m.End()
	limit := p.lastStableOffset()
	l := uploadLag{remoteBytes: m.Bytes()}
	if p.cfg.Load().uploadsStopped() {
		return l // not waiting: nothing more is uploaded
	}
	for _, s := range p.log.Segments() {
		if !s.Active && s.NextOffset > end && s.Size > 0 {
			l.bytes += s.Size
			l.segments++
			if s.NextOffset <= limit {
				l.eligible++
			}
		}
	}
	return l
}

// metadataObjects writes the archive descriptor (until it succeeds once
// on this broker) and,
// from partition 0's leader, the topic descriptor: with them the bucket
// describes itself. Best effort: a failure is logged and retried at the
// next leadership change.
func (s *tierService) metadataObjects(ctx context.Context, p *partition) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !s.archived.Load() {
		if err := tiering.EnsureArchive(ctx, s.bucket, s.layout, time.Now()); err != nil {
			s.b.log.Warn("writing the archive descriptor", "err", err)
		} else {
			s.archived.Store(true)
		}
	}
	if p.index != 0 {
		return
	}
	tv := s.b.meta.snapshot().topics[p.topic]
	if tv == nil || tv.id != p.topicID {
		return
	}
	d := tiering.TopicDescriptor{Name: p.topic, ID: tiering.TopicDir(p.topic, p.topicID)[len(p.topic)+1:],
		Partitions: int32(len(tv.partitions)), Configs: tv.configs, UpdatedAt: time.Now().UTC()}
	if err := tiering.PutTopic(ctx, s.bucket, s.layout, d); err != nil {
		s.b.log.Warn("writing the topic descriptor", "topic", p.topic, "err", err)
		return
	}
	p.tier.described = describedTopic{partitions: len(tv.partitions), configs: tv.configs}
}

// describedTopic is what partition 0's leader last wrote to the topic's
// descriptor in the bucket.
type describedTopic struct {
	partitions int
	configs    map[string]string
}

// describedStale reports whether the topic's partitions or configs
// changed since partition 0's leader (this term) last wrote its
// descriptor, or the write failed: the bucket must describe the topic as
// it is, for a reader or a restore from the bucket alone.
func (t *partitionTier) describedStale(p *partition) bool {
	if p.index != 0 {
		return false
	}
	tv := t.svc.b.meta.snapshot().topics[p.topic]
	return tv != nil && tv.id == p.topicID &&
		(len(tv.partitions) != t.described.partitions || !maps.Equal(tv.configs, t.described.configs))
}

// deleteTopic removes a deleted topic's objects in the background,
// retrying until it succeeds or the broker stops (a restart resumes it
// from the deletion marker). Then it keeps an eye on the topic's
// directory, for the writes that were on their way when it ran (an
// upload of a leader that stalled, a store that acts on a request late):
// about once per orphan grace, one LIST, deleting what landed, until the
// directory has held its deletion marker alone for DeletedTopicWatch.
func (s *tierService) deleteTopic(topic string, id [16]byte) {
	dir := tiering.TopicDir(topic, id)
	if _, running := s.deleting.LoadOrStore(dir, true); running {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.deleting.Delete(dir)
		backoff := time.Second
		for {
			// No deadline on the whole (each call has its own): a
			// topic with a year of history is millions of deletes.
			err := tiering.DeleteTopic(s.b.ctx, s.bucket, s.layout, topic, id, time.Now(), s.metrics)
			if err == nil {
				break
			}
			s.b.log.Warn("deleting a topic's objects; retrying", "topic", topic, "in", backoff, "err", err)
			if !sleepCtx(s.b.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, time.Minute)
		}
		s.b.log.Info("deleted the topic's objects", "topic", topic)
		quiet := time.Now() // since when the directory holds its marker alone
		for sleepCtx(s.b.ctx, s.cfg.OrphanGrace) {
			n, err := tiering.SweepDeletedTopic(s.b.ctx, s.bucket, s.layout, topic, id, s.metrics)
			switch {
			case err != nil:
				s.b.log.Warn("deleting what landed under a deleted topic; retrying", "topic", topic, "in", s.cfg.OrphanGrace, "err", err)
				quiet = time.Now()
			case n > 0:
				s.b.log.Info("deleted objects that landed under a deleted topic", "topic", topic, "count", n)
				quiet = time.Now()
			case time.Since(quiet) >= s.cfg.DeletedTopicWatch:
				// Its requests are over: its series go (a topic made
				// since under the same name starts its count again,
				// which rates take for a counter reset).
				if s.storeMetrics != nil {
					s.storeMetrics.ForgetTopic(topic)
				}
				return
			}
		}
	}()
}

// remoteLookups bounds the object store calls of one request that looks
// offsets or epochs up (ListOffsets, OffsetForLeaderEpoch) or moves log
// starts (DeleteRecords): FetchTimeout for all its partitions together,
// not for each, so that a store that hangs fails the request's cold
// partitions within one timeout, not one timeout a partition, which
// outlasted the clients' request timeouts (franz-go's 10 s, Java's 30 s).
func (b *Broker) remoteLookups(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.tier == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.tier.cfg.FetchTimeout)
}

// remoteReadWarnEvery bounds the warnings of a partition's failed remote
// reads: a store that is down fails every fetch of every consumer.
const remoteReadWarnEvery = 10 * time.Second

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// logStartOffset is the first offset consumers may read: the remote log's
// start when the partition is tiered and the remote log reaches below the
// local one, and continues into it (it does not once local retention
// deleted segments never uploaded, remote.log.copy.disable: the remote
// log is then deleted, partitionTier.applyRetention).
func (p *partition) logStartOffset() int64 {
	local := p.log.LogStartOffset()
	if p.tier != nil {
		// The bucket holds readable records below the local log.
		if m := p.tier.manifest(); m.Start() >= 0 && m.Start() < m.End() && m.Start() < local && m.End() >= local {
			return m.Start()
		}
	}
	return local
}

// checkTierReady fails while a tiered partition's leader has not read its
// manifest.
func (p *partition) checkTierReady() error {
	if p.tier != nil && !p.tier.ready.Load() {
		return errTierLoading
	}
	return nil
}

// appends reports whether this leader term may append: it has read its
// manifest, or its log is sure to reach the remote end already
// (appendsBeforeManifest).
func (t *partitionTier) appends() bool { return t.ready.Load() || t.early.Load() }

// checkTierAppend fails while a tiered partition's leader may not append:
// not yet (partitionTier.appends), or no more, in a term that dropped its
// appends, which refuses them as a deposed leader does until its raised
// epoch arrives (endDroppedTerm).
func (p *partition) checkTierAppend() error {
	switch {
	case p.tier == nil:
		return nil
	case p.tier.dropped.Load():
		return errNotLeader
	case !p.tier.appends():
		return errTierLoading
	}
	return nil
}

// tierGate reports whether the partition leads a term that may not append
// until it has read its manifest, with the gate that is opened when that
// may change (the term became ready, or ended).
func (p *partition) tierGate() (<-chan struct{}, bool) {
	if p.tier == nil {
		return nil, false
	}
	g := p.tier.gate.Load() // before ready: a later change opens it
	if p.tier.appends() || !p.isLeader() {
		return nil, false
	}
	return g.ch, true
}

// tierLoading reports whether the partition leads a term that may not
// append until it has read its manifest.
func (p *partition) tierLoading() bool {
	_, loading := p.tierGate()
	return loading
}

// adoptRemoteEnd moves an empty or shorter local log past the remote
// log's end: a broker that lost its log disk continues the offsets where
// the bucket ends instead of writing new records at offsets the bucket
// already holds, with the leader epochs and producer state the bucket
// recorded there (so idempotent producers keep their sequences).
//
// from is where the leader term's appends began: when the remote log ends
// past it and the term has appended, the bucket holds other records at
// offsets the term wrote, and the log moves to the remote end even though
// it reaches that far: the records the term appended are lost (logged as
// an error), and no reader is served two different records at one
// offset. That is a term that appended before it read its manifest while
// its log did not reach the remote end (appendsBeforeManifest was wrong),
// or one that read a manifest older than the one its fence found.
func (p *partition) adoptRemoteEnd(ctx context.Context, m *tiering.Manifest, from int64) error {
	end := m.End()
	behind := func() bool {
		leo := p.log.LogEndOffset()
		return leo < end || from < end && leo > from
	}
	if !behind() {
		return nil
	}
	rp, ok, err := p.tier.svc.reader.RestorePoint(ctx, p.tier.part, m)
	if err != nil {
		return err
	}
	p.appendMu.Lock() // no append meanwhile
	defer p.appendMu.Unlock()
	if !behind() {
		return nil
	}
	if leo := p.log.LogEndOffset(); leo > from {
		p.tier.dropped.Store(true) // under appendMu: no append follows
		p.tier.svc.b.log.Error("the remote log ends past where this leader term began to append: "+
			"the local log moves to the remote end, and the records the term appended are lost",
			"topic", p.topic, "partition", p.index, "appended_from", from, "log_end_offset", leo, "remote_end", end)
	}
	if ok && rp.Offset == end {
		err = p.log.TruncateFullyAndRestore(end, rp.Epochs, rp.ProducerSnapshot)
	} else {
		err = p.log.TruncateFullyAndStartAt(end)
	}
	if err != nil {
		return err
	}
	p.hw.Store(end)
	return nil
}

// errOffsetMovedToTiered: a follower fetched below the leader's local log;
// it restarts from the bucket (OFFSET_MOVED_TO_TIERED_STORAGE).
var errOffsetMovedToTiered = errors.New("broker: offset moved to tiered storage")

// followerRestoreFromBucket is KIP-405's follower path: a follower whose
// fetch offset is below the leader's local log start empties its log and
// restarts it where the remote log ends, with the leader epochs and
// producer state the bucket recorded there, instead of copying history the
// bucket already holds. It never moves the log back.
func (p *partition) followerRestoreFromBucket(ctx context.Context, leader, leaderEpoch int32, offset int64) error {
	t := p.tier
	if t == nil {
		return fmt.Errorf("%w: the leader's history is in an object store this broker does not use", tiering.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := t.store.Load(ctx)
	if err != nil {
		return err
	}
	rp, ok, err := t.svc.reader.RestorePoint(ctx, t.part, m)
	if err != nil {
		return err
	}
	if !ok || rp.Offset <= offset {
		return fmt.Errorf("%w: the remote log ends at %d, not past %d", tiering.ErrUnavailable, m.End(), offset)
	}
	err = p.asFollower(leader, leaderEpoch, func() error {
		if p.log.LogEndOffset() >= rp.Offset {
			return nil
		}
		if err := p.log.TruncateFullyAndRestore(rp.Offset, rp.Epochs, rp.ProducerSnapshot); err != nil {
			return err
		}
		p.setHW(rp.Offset)
		return nil
	})
	if err != nil {
		return err
	}
	p.log.SetUploadedEnd(uploadedEnd(m))
	t.svc.b.log.Info("follower restarted its log where the remote log ends", "topic", t.part.Topic, "partition", t.part.Index, "offset", rp.Offset, "was", offset)
	return nil
}

// endOffsetForEpoch answers OffsetForLeaderEpoch: from the local leader
// epochs, or, for an epoch older than the local log's, from the remote
// log's history in the manifest. That history must be read: the local
// epochs start at the local log start (clipped by local retention, or
// the entry a restore from the bucket brought), so alone they would put an
// older epoch's end at their first entry, past where it ended, and a
// follower would keep a divergent tail. So an error, not the local answer,
// while the leader has not read its manifest (it may be empty or a
// follower's old copy) or when the remote history cannot be read.
//
// ctx bounds the reads of the object store.
func (p *partition) endOffsetForEpoch(ctx context.Context, epoch int32) (int32, int64, bool, error) {
	if p.tier != nil && epoch >= 0 {
		if local := p.log.Epochs(); len(local) == 0 || epoch < local[0].Epoch {
			if err := p.checkTierReady(); err != nil {
				return -1, -1, false, err
			}
			e, end, ok, err := p.tier.endOffsetForEpoch(ctx, epoch, local, p.log.LogEndOffset())
			if err != nil {
				return -1, -1, false, err
			}
			if ok {
				// As Kafka's leader epoch cache, whose first entry
				// starts at the log start: the remote history keeps
				// the epochs of the segments the log start passed
				// into, and an epoch that ended below it ends there.
				return e, max(end, p.logStartOffset()), true, nil
			}
		}
	}
	e, end, ok := p.log.EndOffsetForEpoch(epoch)
	return e, end, ok, nil
}

// endOffsetForEpoch finds where epoch (or the latest one before it) ended,
// from the remote epochs followed by the local ones; not ok when the
// remote log records no epoch.
func (t *partitionTier) endOffsetForEpoch(ctx context.Context, epoch int32, local []localseg.EpochEntry, logEnd int64) (int32, int64, bool, error) {
	remote, err := t.remoteEpochs(ctx)
	if err != nil {
		if !errors.Is(err, tiering.ErrUnavailable) && !errors.Is(err, tiering.ErrCorrupt) {
			err = fmt.Errorf("%w: %w", tiering.ErrUnavailable, err)
		}
		return -1, -1, false, fmt.Errorf("reading the remote leader epochs: %w", err)
	}
	if len(remote) == 0 {
		return -1, -1, false, nil
	}
	all := remote[:len(remote):len(remote)] // shared: appends copy
	for _, e := range local {
		if e.Epoch > all[len(all)-1].Epoch {
			all = append(all, e)
		}
	}
	e, end, ok := replicationEndOffset(all, epoch, logEnd)
	return e, end, ok, nil
}

// epochsLoad is a read of the remote leader epochs of manifest m.
type epochsLoad struct {
	m    *tiering.Manifest
	done chan struct{}
	list []localseg.EpochEntry
	err  error
}

// remoteEpochs returns the leader epochs of the remote log as the current
// manifest holds them, read once per manifest: of its spilled parts, those
// no earlier manifest named are read from the store. The read goes on in
// the background within FetchTimeout; the caller waits for it until ctx
// ends, and a later call takes its result. A follower's fetch that needs
// them so waits no longer than RemoteFetchMaxWait for a store that hangs,
// and the fetch of its other partitions with it.
func (t *partitionTier) remoteEpochs(ctx context.Context) ([]localseg.EpochEntry, error) {
	m := t.manifest()
	t.epochs.Lock()
	if t.epochs.of == m && m != nil {
		list := t.epochs.list
		t.epochs.Unlock()
		return list, nil
	}
	ld := t.epochs.load
	if ld == nil || ld.m != m {
		ld = &epochsLoad{m: m, done: make(chan struct{})}
		t.epochs.load = ld
		// As remoteFetchAt: requests run only while the connections
		// are open, and close waits on the group after they end.
		t.svc.wg.Add(1)
		go func() {
			defer t.svc.wg.Done()
			lctx, cancel := context.WithTimeout(t.svc.b.ctx, t.svc.cfg.FetchTimeout)
			ld.list, ld.err = t.epochs.history.Of(lctx, t.svc.reader, t.part, m)
			cancel()
			t.epochs.Lock()
			if t.epochs.load == ld {
				t.epochs.load = nil
				if ld.err == nil {
					t.epochs.of, t.epochs.list = m, ld.list
				}
			}
			t.epochs.Unlock()
			close(ld.done)
		}()
	}
	t.epochs.Unlock()
	select {
	case <-ld.done:
		return ld.list, ld.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the remote leader epochs: %w", tiering.ErrUnavailable, ctx.Err())
	}
}

// replicationEndOffset is Kafka's LeaderEpochFileCache.endOffsetFor over
// entries (ascending epochs with their start offsets).
func replicationEndOffset(entries []localseg.EpochEntry, epoch int32, logEnd int64) (int32, int64, bool) {
	if len(entries) == 0 || epoch < 0 {
		return -1, -1, false
	}
	if last := entries[len(entries)-1]; epoch >= last.Epoch {
		if epoch == last.Epoch {
			return last.Epoch, logEnd, true
		}
		return -1, -1, false
	}
	i := 0
	for i < len(entries) && entries[i].Epoch <= epoch {
		i++
	}
	if i == 0 {
		return epoch, entries[0].StartOffset, true
	}
	return entries[i-1].Epoch, entries[i].StartOffset, true
}

// epochAt is the leader epoch that wrote a remote offset, from the
// manifest entry holding it.
func (t *partitionTier) epochAt(ctx context.Context, offset int64) (int32, bool) {
	seg, ok, err := tiering.FindSegment(ctx, t.svc.reader, t.part, t.manifest(), offset)
	if err != nil || !ok || offset < seg.BaseOffset {
		return -1, false
	}
	epoch, found := int32(-1), false
	for _, e := range seg.Epochs {
		if e.StartOffset > offset {
			break
		}
		epoch, found = e.Epoch, true
	}
	return epoch, found
}

// offsetForTimestamp answers ListOffsets by timestamp from the remote log:
// the first remote record at or after ts (ok false when none is).
func (t *partitionTier) offsetForTimestamp(ctx context.Context, ts int64) (int64, int64, int32, bool, error) {
	m := t.manifest()
	if m.MaxTimestamp() < ts {
		return 0, 0, 0, false, nil
	}
	return t.svc.reader.OffsetForTimestamp(ctx, t.part, m, ts)
}

// maxTimestamp answers ListOffsets MAX_TIMESTAMP from the remote log: the
// first remote record at or above the log start with the largest
// timestamp (ok false when none is).
func (t *partitionTier) maxTimestamp(ctx context.Context) (int64, int64, int32, bool, error) {
	return t.svc.reader.MaxTimestampRecord(ctx, t.part, t.manifest())
}

// setLogStart records a DeleteRecords in the manifest: the remote log
// start moves to offset (never back). Remote retention then deletes the
// objects wholly below it.
func (t *partitionTier) setLogStart(ctx context.Context, epoch int32, offset int64) error {
	_, err := t.store.Commit(ctx, epoch, func(m *tiering.Manifest) error {
		m.LogStartOffset = max(m.LogStartOffset, min(offset, m.End()))
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", tiering.ErrUnavailable, err)
	}
	t.poke()
	return nil
}

// startFollowerSync keeps a follower's retention guard current: while this
// broker is not the partition's leader, it reads the manifest the leader
// commits and lets local retention delete what the bucket holds. It ends
// when the partition is closed or the broker stops.
func (t *partitionTier) startFollowerSync(p *partition) {
	every := min(t.svc.cfg.UploadInterval, t.svc.b.cfg.LogRetentionCheckInterval)
	t.svc.wg.Add(1)
	go func() {
		defer t.svc.wg.Done()
		ctx := t.svc.b.ctx
		for sleepCtx(ctx, every) {
			s := p.state.Load()
			switch {
			case s.closed:
				return
			case s.leader == p.nodeID:
				continue // the archive loop keeps the guard
			}
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := t.store.Load(lctx)
			cancel()
			if err != nil {
				t.svc.b.log.Debug("follower reading the remote manifest", "topic", t.part.Topic, "partition", t.part.Index, "err", err)
				continue
			}
			p.log.SetUploadedEnd(uploadedEnd(m))
		}
	}()
}
