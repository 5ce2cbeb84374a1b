package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/metadata"
)

// topicView and partitionView are what the replica manager needs to know of
// the cluster metadata: the broker turns each metadata snapshot into them.
type topicView struct {
	name       string
	id         [16]byte
	configs    map[string]string
	internal   bool
	partitions []partitionView
	// restored: the topic is being created again from the object store
	// (RestoreTopicIDConfig), under its id there; its partitions are not
	// unarchived, so that their leaders start where the bucket ends.
	restored bool
}

type partitionView struct {
	index       int32
	replicas    []int32
	isr         []int32
	leader      int32
	leaderEpoch int32
	// partitionEpoch is bumped by every change of the partition's
	// state; ISR changes are compare-and-swap writes on it.
	partitionEpoch int32
	// uncleanEpoch is the leader epoch of the last unclean election (0:
	// none; metadata.Partition.UncleanEpoch).
	uncleanEpoch int32
	// unarchived: none of the partition's records has reached the
	// object store (metadata.Partition.Unarchived).
	unarchived bool
	// adding and removing describe a reassignment in progress; retired
	// are brokers a finished reassignment removed, which delete their
	// copy of the log.
	adding, removing, retired []int32
	// created is the metadata revision that created the partition's
	// record (0: unknown).
	created int64
	// recovering are the ISR members back from a machine crash that the
	// controller has yet to compare (metadata.Partition.Recovering).
	recovering metadata.Recovering
	// eligible are the partition's eligible leader replicas
	// (metadata.Partition.Eligible).
	eligible []int32
}

// countedMembers are pv's members whose logs hold every acknowledged
// record: the ISR and the eligible leader replicas (metadata.Partition.
// Counted).
func (pv partitionView) countedMembers() []int32 {
	return metadata.Partition{ISR: pv.isr, Eligible: pv.eligible}.Counted()
}

// replicaManager holds the partitions this broker has a replica of. It
// opens and closes their logs as metadata changes, and finds them for the
// request handlers. Lookups are lock-free reads of an immutable map that
// apply replaces.
type replicaManager struct {
	nodeID       int32
	dir          string
	files        *localseg.FileCache
	fs           localseg.FS       // nil: the operating system's
	brokerConfig map[string]string // broker-level topic defaults (log.retention.ms, ...)
	onLeader     func(p *partition, leader bool)
	// removal removes the directories of deleted topics and of replicas
	// reassigned away, in the background.
	removal *logRemoval
	b       *Broker

	mu    sync.Mutex // serializes apply and close
	table atomicTable
	// offline are the partitions whose logs failed to open or went
	// offline, retried with backoff.
	offline offlineSet
	// strays are partition directories this broker keeps but does not
	// serve, by path, with the topic id they hold: the metadata does not
	// assign them here and no deletion of their topic is recorded.
	// Guarded by mu.
	strays map[string][16]byte
	// opening are the logs being opened in the background (openLog), by
	// directory, until an apply installs or disposes of them. While a
	// directory is here, nothing queues it for removal. Guarded by mu.
	opening map[string]*pendingOpen
	// openingByKey is opening by partition, for lock-free lookups
	// (openingLog), published at the end of each apply.
	openingByKey atomic.Pointer[map[partitionKey]*pendingOpen]
	// settled is closed (and replaced) when an apply installed or
	// disposed of opened logs. Guarded by mu.
	settled chan struct{}
	// openQueue feeds the open workers; opened is kicked when an open is
	// done, for the broker to apply the metadata again.
	openQueue openQueue
	opened    chan struct{}
	opens     sync.WaitGroup // the open workers
}

// openQueue holds the opens waiting for one of at most openWorkers
// workers, by topic, served round-robin: a topic created after a wide one
// waits for one open of it, not for all of them.
type openQueue struct {
	mu      sync.Mutex
	byTopic map[string][]*pendingOpen
	order   []string // topics with opens waiting, next first
	workers int      // running
}

// push queues po and reports whether a worker should be started for it.
func (q *openQueue) push(po *pendingOpen) (startWorker bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.byTopic == nil {
		q.byTopic = map[string][]*pendingOpen{}
	}
	if len(q.byTopic[po.topic]) == 0 {
		q.order = append(q.order, po.topic)
	}
	q.byTopic[po.topic] = append(q.byTopic[po.topic], po)
	if q.workers < openWorkers {
		q.workers++
		return true
	}
	return false
}

// pop takes the next open, the first of the next topic in turn; with none
// left the calling worker is counted out and pop returns nil.
func (q *openQueue) pop() *pendingOpen {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		q.workers--
		return nil
	}
	topic := q.order[0]
	q.order = q.order[1:]
	ps := q.byTopic[topic]
	po := ps[0]
	if len(ps) == 1 {
		delete(q.byTopic, topic)
	} else {
		q.byTopic[topic] = ps[1:]
		q.order = append(q.order, topic)
	}
	return po
}

// openWorkers is how many partition logs a broker opens at once: enough
// to overlap the fsyncs and reads of a wide topic's creation or of a
// start-up's recovery, few enough to leave the disk to the others.
const openWorkers = 8

// pendingOpen is a log being opened in the background. p and err are set
// before done is closed.
type pendingOpen struct {
	topic            string
	id               [16]byte
	index            int32
	cfg              topicConfig
	tiered, internal bool
	// fresh: the partition has no directory here yet, and none of its
	// records is in the object store (partition.sinceCreation).
	fresh bool
	// created: the partition has no directory here yet
	// (partition.createdHere); lost: its log was lost (lostAtOpen,
	// partition.logLost).
	created, lost bool

	done chan struct{}
	p    *partition
	err  error
	// settled is closed once an apply installed the opened log (its
	// partition is in the table) or disposed of the open.
	settled chan struct{}
}

// result returns the open's outcome once it is done.
func (po *pendingOpen) result() (p *partition, err error, done bool) {
	select {
	case <-po.done:
		return po.p, po.err, true
	default:
		return nil, nil, false
	}
}

// replicaTable is an immutable snapshot of the hosted partitions.
type replicaTable struct {
	byName map[string]*localTopic
	byID   map[[16]byte]*localTopic
}

type localTopic struct {
	name  string
	id    [16]byte
	parts map[int32]*partition
}

func (m *replicaManager) lookupByName(topic string, index int32) (*partition, bool) {
	t := m.table.load()
	if lt, ok := t.byName[topic]; ok {
		p, ok := lt.parts[index]
		return p, ok
	}
	return nil, false
}

func (m *replicaManager) lookupByID(id [16]byte, index int32) (*partition, bool) {
	t := m.table.load()
	if lt, ok := t.byID[id]; ok {
		p, ok := lt.parts[index]
		return p, ok
	}
	return nil, false
}

// all returns every hosted partition.
func (m *replicaManager) all() []*partition {
	t := m.table.load()
	var out []*partition
	for _, lt := range t.byName {
		for _, p := range lt.parts {
			out = append(out, p)
		}
	}
	return out
}

// partitionDir is Kafka's directory name for a partition.
func partitionDir(root, topic string, index int32) string {
	return filepath.Join(root, topic+"-"+strconv.Itoa(int(index)))
}

// apply brings the hosted partitions in line with the metadata: opens the
// logs of new replicas, updates leadership and configs, and closes the logs
// of partitions it no longer hosts. Only a recorded topic deletion (a
// tombstone in view.deleted) removes a log's files; a partition that left
// the metadata any other way (its record unreadable, its topic missing, its
// replicas no longer naming this broker) is closed and kept, offline, and
// served again once the metadata names it. Errors opening one log are
// logged and that partition stays offline; the others proceed.
func (m *replicaManager) apply(view *metaView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	assigned := map[partitionKey]bool{}
	settled := false // opened logs were installed or disposed of
	// settledOpens are the opens installed or disposed of: their
	// waiters are told once the table holds the installed ones.
	var settledOpens []*pendingOpen
	// wanted are the logs being opened that the view still assigns here.
	wanted := map[*pendingOpen]bool{}
	defer func() {
		m.publishOpeningLocked()
		for _, po := range settledOpens {
			close(po.settled)
		}
		if settled && m.settled != nil {
			close(m.settled)
			m.settled = nil
		}
		m.offline.forgetExcept(assigned)
		m.b.metrics.offlinePartitions.Set(float64(m.offline.count()))
	}()
	old := m.table.load()
	next := &replicaTable{byName: map[string]*localTopic{}, byID: map[[16]byte]*localTopic{}}
	keep := map[*partition]bool{}
	lostLogs := 0 // partitions not settled after a lost disk or a machine crash
	var selfSince int64
	if bv, ok := view.broker(m.nodeID); ok {
		selfSince = bv.incarnation
	}
	for _, tv := range view.topicList() {
		cfg := parseTopicConfig(tv.configs, m.brokerConfig)
		var lt *localTopic
		for _, pv := range tv.partitions {
			if !slices.Contains(pv.replicas, m.nodeID) {
				continue
			}
			assigned[partitionKey{tv.name, pv.index}] = true
			var p *partition
			if ot, ok := old.byID[tv.id]; ok {
				p = ot.parts[pv.index]
			}
			key := partitionKey{tv.name, pv.index}
			if p != nil && p.log.Offline() != nil && m.offline.noteFailure(key, p.log.Offline(), now) {
				// A failed write or fsync took the log offline: reopen
				// it, which recovers from its last durable point.
				m.b.log.Warn("reopening an offline partition log", "topic", tv.name, "partition", pv.index, "err", p.log.Offline())
				wasLeader := p.isLeader()
				p.close()
				if wasLeader && m.onLeader != nil {
					m.onLeader(p, false)
				}
				if err := p.log.Close(); err != nil {
					m.b.log.Debug("closing an offline partition log", "topic", tv.name, "partition", pv.index, "err", err)
				}
				keep[p] = true // closed here, not removed: no stray
				p = nil
			}
			if p != nil && m.tiers(tv, pv, &cfg) != (p.tier != nil) {
				// remote.storage.enable changed (or, turned off, the
				// partition's remote log is deleted: drain): the log
				// reopens with (or without) its tier, as an offline
				// one does.
				m.b.log.Info("reopening a partition log: tiered storage turned on or off", "topic", tv.name, "partition", pv.index, "tiered", p.tier == nil)
				wasLeader := p.isLeader()
				p.close()
				if wasLeader && m.onLeader != nil {
					m.onLeader(p, false)
				}
				if err := p.log.Close(); err != nil {
					m.b.log.Debug("closing a partition log to reopen it", "topic", tv.name, "partition", pv.index, "err", err)
				}
				keep[p] = true // closed here, not removed: no stray
				p = nil
			}
			wasLeader := p != nil && p.isLeader()
			if p == nil {
				dir := partitionDir(m.dir, tv.name, pv.index)
				po := m.opening[dir]
				if po == nil {
					if po = m.startOpenLocked(tv, pv, &cfg, view.deleted, selfSince, now); po != nil {
						wanted[po] = true
					}
					continue
				}
				if po.id != tv.id {
					// Opened for a topic of this name since
					// deleted: disposed of below.
					continue
				}
				wanted[po] = true
				opened, err, done := po.result()
				if !done {
					continue
				}
				delete(m.opening, dir)
				settledOpens = append(settledOpens, po)
				settled = true
				if err != nil {
					m.offline.failed(key, err, now)
					m.b.log.Error("cannot open partition log; retrying", "topic", tv.name, "partition", pv.index, "err", err, "retry_in", m.offline.backoffOf(key))
					continue
				}
				p = opened
				m.installLocked(p)
				m.offline.opened(key, now)
			}
			// The configs (of a new log too: they may have changed
			// while it opened).
			c := cfg
			old := p.cfg.Swap(&c)
			p.log.SetConfig(cfg.logConfig(p.tier != nil))
			if p.tier != nil && (old == nil || old.uploadsStopped() != cfg.uploadsStopped()) {
				p.tier.poke() // uploads go on again, or the archive loop sees them stopped
			}
			oldLeader, oldEpoch := p.leaderState()
			l := leadership{leader: pv.leader, leaderEpoch: pv.leaderEpoch, replicas: pv.replicas, isr: pv.isr, partitionEpoch: pv.partitionEpoch, uncleanEpoch: pv.uncleanEpoch, unarchived: pv.unarchived}
			if _, recovering := pv.recovering.End(m.nodeID); p.logLost || recovering {
				l = m.applyLostLocked(p, l, pv)
				if p.logLost || recovering {
					lostLogs++
				}
			}
			p.setLeadership(l)
			if pv.leader != oldLeader || pv.leaderEpoch != oldEpoch {
				m.logLeadership(p, pv)
			}
			if lt == nil {
				lt = &localTopic{name: tv.name, id: tv.id, parts: map[int32]*partition{}}
				next.byName[tv.name] = lt
				next.byID[tv.id] = lt
			}
			lt.parts[pv.index] = p
			keep[p] = true
			switch isLeader := p.isLeader(); {
			case m.onLeader == nil:
			case isLeader != wasLeader:
				m.onLeader(p, isLeader)
			case isLeader && pv.leaderEpoch != oldEpoch:
				// Still the leader, of a later term: this broker's
				// view skipped the terms between (another broker
				// led, and may have fenced the remote manifest or
				// written the offsets topic). The old term ends and
				// the new one starts as after a leader change.
				m.onLeader(p, false)
				m.onLeader(p, true)
			}
		}
	}
	m.table.store(next)
	m.b.metrics.lostLogs.Set(float64(lostLogs))
	for _, topic := range m.b.metrics.forgetTopicsExcept(next.byName) {
		if t := m.b.tier; t != nil && t.storeMetrics != nil {
			t.storeMetrics.ForgetTopic(topic)
		}
	}
	var removed []*partition
	for _, lt := range old.byName {
		for _, p := range lt.parts {
			if !keep[p] {
				removed = append(removed, p)
			}
		}
	}
	for _, p := range removed {
		wasLeader := p.isLeader()
		p.close()
		if wasLeader && m.onLeader != nil {
			m.onLeader(p, false)
		}
		if p.tier != nil && view.deleted[p.topicID] {
			// The topic's deletion is recorded: its objects go too,
			// listed once this broker's archive loop for it has
			// stopped (onLeader waits for it), so that an upload or
			// manifest commit of its last term lands before the
			// listing, not after it as an object nothing deletes.
			m.b.tier.deleteTopic(p.topic, p.topicID)
		}
		if view.deleted[p.topicID] || view.retiredHere(p.topicID, p.index, m.nodeID) {
			// Discarded and removed in the background: the work
			// grows with the topic's width.
			m.removal.queue(p.log.Dir(), p.log)
			continue
		}
		if err := p.log.Close(); err != nil {
			m.b.log.Error("closing partition log", "topic", p.topic, "partition", p.index, "err", err)
		}
		m.addStrayLocked(p.log.Dir(), p.topicID, p.topic, p.index, removalReason(view, p))
	}
	// Logs opened for partitions the metadata no longer assigns here (or
	// for a topic of the same name since deleted) go as removed ones do.
	disposed := false
	for dir, po := range m.opening {
		opened, err, done := po.result()
		if !done || wanted[po] {
			// Opening; or done since the loop above passed it, to
			// be installed by the next apply (the open kicked it).
			continue
		}
		delete(m.opening, dir)
		settledOpens = append(settledOpens, po)
		settled = true
		if err != nil {
			continue
		}
		disposed = true
		if view.deleted[po.id] || view.retiredHere(po.id, po.index, m.nodeID) {
			m.removal.queue(dir, opened.log)
			m.removal.busy(dir) // a new topic of the same name opens once removed
			continue
		}
		if err := opened.log.Close(); err != nil {
			m.b.log.Error("closing partition log", "topic", po.topic, "partition", po.index, "err", err)
		}
		m.addStrayLocked(dir, po.id, po.topic, po.index, removalReason(view, opened))
	}
	if disposed {
		// A topic of the same name may wait for the directory: the next
		// apply opens it (or says why it cannot).
		select {
		case m.opened <- struct{}{}:
		default:
		}
	}
	// A kept directory whose topic's deletion is now recorded goes (once
	// no log opens in it).
	for dir, id := range m.strays {
		if view.deleted[id] && m.opening[dir] == nil {
			m.removeDeletedLocked(dir)
		}
	}
	n := 0
	for _, lt := range next.byName {
		n += len(lt.parts)
	}
	m.b.metrics.partitions.Set(float64(n))
}

// logLeadership leaves one line for a partition's new leader or leader
// epoch on this broker: Info for topics, Debug for the internal ones (one
// line per __consumer_offsets partition at every start says little).
func (m *replicaManager) logLeadership(p *partition, pv partitionView) {
	level := slog.LevelInfo
	if p.internal {
		level = slog.LevelDebug
	}
	attrs := []any{"topic", p.topic, "partition", p.index, "leader_epoch", pv.leaderEpoch}
	switch {
	case pv.leader == m.nodeID:
		m.b.log.Log(m.b.ctx, level, "became leader", append(attrs, "isr", pv.isr)...)
	case pv.leader >= 0:
		m.b.log.Log(m.b.ctx, level, "became follower", append(attrs, "leader", pv.leader)...)
	default:
		m.b.log.Warn("partition has no leader", attrs...)
	}
}

// removalReason says why the metadata no longer has this broker serve p.
func removalReason(view *metaView, p *partition) string {
	if r := view.unreadableReason(p.topic, p.index); r != "" {
		return r
	}
	if tv := view.topicsByID[p.topicID]; tv == nil {
		return "the topic is missing from the metadata and no deletion of it is recorded"
	}
	return "the partition's replicas do not include this broker"
}

// addStrayLocked records a kept, unserved partition directory. Requires mu.
func (m *replicaManager) addStrayLocked(dir string, id [16]byte, topic string, index int32, reason string) {
	if m.strays == nil {
		m.strays = map[string][16]byte{}
	}
	m.strays[dir] = id
	m.b.log.Error("partition offline on this broker, its log kept", "topic", topic, "partition", index, "dir", dir, "reason", reason)
	m.b.metrics.strayLogs.Set(float64(len(m.strays)))
}

// removeDeletedLocked queues the removal of the directory of a topic whose
// deletion is recorded. Requires mu.
func (m *replicaManager) removeDeletedLocked(dir string) {
	m.b.log.Info("removing the log of a deleted topic", "dir", dir)
	m.removal.queue(dir, nil)
	if _, ok := m.strays[dir]; ok {
		delete(m.strays, dir)
		m.b.metrics.strayLogs.Set(float64(len(m.strays)))
	}
}

// errLogOfAnotherTopic: a partition's directory holds another topic's log
// (same name, other id) whose deletion is not recorded.
var errLogOfAnotherTopic = errors.New("broker: the partition directory holds the log of another topic id")

// errOldLogNotRemoved: a partition's directory holds the log of a deleted
// topic of the same name (or of this replica, reassigned away before), and
// its removal failed: the partition is offline until a retry succeeds.
var errOldLogNotRemoved = errors.New("broker: the partition directory holds an old log that cannot be removed")

// noteRemovalWaitLocked: the partition key waits for the removal of dir.
// Once that removal has failed, the partition is offline (clients get
// KAFKA_STORAGE_ERROR, shale_offline_partitions and the health check count
// it) until the removal succeeds and the log opens. Requires mu.
func (m *replicaManager) noteRemovalWaitLocked(key partitionKey, dir string, now time.Time) {
	rerr := m.removal.failure(dir)
	if rerr == nil {
		return
	}
	if m.offline.blocked(key, fmt.Errorf("%w: %w", errOldLogNotRemoved, rerr), now) {
		m.b.log.Error("partition offline: the old log in its directory cannot be removed; it opens once the removal succeeds",
			"topic", key.topic, "partition", key.index, "dir", dir, "err", rerr)
	}
}

// startOpenLocked starts opening (or creating) a partition's log in the
// background, unless its retry is not due or its directory may not be
// opened now. A directory left by an older topic of the same name
// (another topic id) is removed first, in the background, only when that
// topic's deletion is recorded; otherwise the partition stays offline and
// the directory is kept. The opened log is installed by a later apply
// (opened is kicked when it is done). It returns the open started, if
// any. Requires mu.
//
// selfSince is the metadata revision of this broker's registration (0:
// unknown).
func (m *replicaManager) startOpenLocked(tv topicView, pv partitionView, cfg *topicConfig, deleted map[[16]byte]bool, selfSince int64, now time.Time) *pendingOpen {
	index := pv.index
	key := partitionKey{tv.name, index}
	if !m.offline.due(key, now) {
		return nil
	}
	dir := partitionDir(m.dir, tv.name, index)
	if m.removal.busy(dir) {
		// The directory of a deleted topic of the same name (or of
		// this replica, reassigned away and back) is being removed:
		// the log opens once it is gone.
		m.noteRemovalWaitLocked(key, dir, now)
		return nil
	}
	id, err := readPartitionMetadata(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
	case id != tv.id && deleted[id]:
		m.removeDeletedLocked(dir)
		m.removal.busy(dir) // opens once removed
		return nil
	case id != tv.id:
		err = fmt.Errorf("%w: %s holds topic id %s, the metadata names %s; keeping it",
			errLogOfAnotherTopic, dir, base64.RawURLEncoding.EncodeToString(id[:]), base64.RawURLEncoding.EncodeToString(tv.id[:]))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.offline.failed(key, err, now)
		m.b.log.Error("cannot open partition log; retrying", "topic", tv.name, "partition", index, "err", err, "retry_in", m.offline.backoffOf(key))
		return nil
	}
	if m.opening == nil {
		m.opening = map[string]*pendingOpen{}
	}
	po := &pendingOpen{topic: tv.name, id: tv.id, index: index, cfg: *cfg, done: make(chan struct{}), settled: make(chan struct{}),
		fresh:   errors.Is(err, fs.ErrNotExist) && pv.unarchived,
		created: errors.Is(err, fs.ErrNotExist)}
	po.lost = lostAtOpen(dir, po.created, pv, m.nodeID, selfSince)
	po.tiered = m.tiers(tv, pv, &po.cfg)
	po.internal = tv.internal || isInternalTopic(tv.name)
	m.opening[dir] = po
	if m.openQueue.push(po) {
		m.opens.Add(1)
		go m.openWorker()
	}
	return po
}

// openWorker opens queued logs until none is left. Once the broker is
// closing, those left give up.
func (m *replicaManager) openWorker() {
	defer m.opens.Done()
	for po := m.openQueue.pop(); po != nil; po = m.openQueue.pop() {
		if err := m.b.ctx.Err(); err != nil {
			po.err = err
		} else {
			po.p, po.err = m.openLog(po)
		}
		close(po.done)
		select {
		case m.opened <- struct{}{}:
		default:
		}
	}
}

// openLog opens (or creates) the log of po's partition in dir, writing
// its partition.metadata first. It runs without mu, beside other opens;
// nothing else touches dir meanwhile (startOpenLocked checked it, and no
// removal is queued for a directory being opened).
func (m *replicaManager) openLog(po *pendingOpen) (*partition, error) {
	cfg := &po.cfg
	dir := partitionDir(m.dir, po.topic, po.index)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writePartitionMetadata(dir, po.id); err != nil {
		return nil, err
	}
	if err := markLost(dir, po.lost); err != nil {
		return nil, err
	}
	var self atomic.Pointer[partition] // for OnDamage, set once the partition exists
	opts := localseg.Options{Files: m.files, FS: m.fs, Logger: m.b.log.With("topic", po.topic, "partition", po.index), ScanBudget: m.b.scanBudget,
		OnDamage: func(localseg.Damage) {
			m.b.metrics.lostRanges.Inc()
			if p := self.Load(); p != nil && m.b.repairs != nil {
				m.b.repairs.damaged(p)
			}
		},
		OnSync: m.b.metrics.observeSync}
	var tier *partitionTier
	if po.tiered {
		tier = m.b.tier.newPartitionTier(po.topic, po.id, po.index)
		opts.OnSeal = tier.onSeal
	}
	log, err := localseg.Open(dir, cfg.logConfig(tier != nil), opts)
	if err != nil {
		return nil, err
	}
	if tier != nil {
		// Nothing is known to be uploaded until the manifest is read.
		log.SetUploadedEnd(0)
	}
	p := newPartition(po.topic, po.id, po.index, m.nodeID, log, cfg)
	p.internal = po.internal
	p.tier = tier
	p.sinceCreation = po.fresh
	p.createdHere = po.created
	p.logLost = po.lost
	p.host = m.b
	p.counters = m.b.metrics.forTopic(po.topic)
	self.Store(p)
	return p, nil
}

// installLocked takes an opened partition into service. Requires mu.
func (m *replicaManager) installLocked(p *partition) {
	if _, ok := m.strays[p.log.Dir()]; ok {
		delete(m.strays, p.log.Dir())
		m.b.metrics.strayLogs.Set(float64(len(m.strays)))
	}
	if p.tier != nil {
		p.tier.startFollowerSync(p)
	}
}

// lostLog reports whether a partition with no log on this broker's disk
// should have had one: the ISR names this broker beside others, and the
// partition's record is older than this broker's registration (since, 0
// unknown), so the ISR counted on records of a log this broker held
// before it registered again. Its disk was lost, or replaced, while it
// was down. A partition created since (a new topic), or one whose ISR
// does not name this broker (a replica being added), has no log yet.
func lostLog(pv partitionView, self int32, since int64) bool {
	return pv.created > 0 && since > pv.created && countedOn(pv, self)
}

// lostAtOpen reports whether the log of pv in dir, about to be opened
// (created: its directory does not exist), was lost: it is created for a
// partition older than this broker's registration (since) whose ISR counts
// on it (lostLog), or it is marked lost (lostLogFile: found lost by a run
// that stopped before it saw itself out of the ISR, or after a machine
// crash), and the ISR still counts on it.
func lostAtOpen(dir string, created bool, pv partitionView, self int32, since int64) bool {
	if created {
		return lostLog(pv, self, since)
	}
	_, err := os.Stat(filepath.Join(dir, lostLogFile))
	return err == nil && countedOn(pv, self)
}

// countedOn reports whether the partition's ISR, or its eligible leader
// replicas, name self beside others, who count on its log as much as on
// theirs.
func countedOn(pv partitionView, self int32) bool {
	counted := pv.countedMembers()
	return len(counted) > 1 && slices.Contains(counted, self)
}

// lostLogFile, in a partition's directory, marks a log found lost
// (lostLog), or one that may have lost its unflushed tail in a machine
// crash (Broker.leaveLostISRs), whose broker has not yet seen itself out
// of the ISR: a restart meanwhile finds the directory, and the mark says
// it may hold less than the ISR counted on.
const lostLogFile = "lost-log"

// markLost writes (lost) or removes the lost-log mark of the partition
// directory dir.
func markLost(dir string, lost bool) error {
	path := filepath.Join(dir, lostLogFile)
	if lost {
		return writeFileAtomic(path, nil)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// applyLostLocked is what a partition whose log was lost (partition.logLost)
// applies of the leadership l the metadata gives it (pv). While the ISR
// names this broker among others, it must not lead: the metadata may still
// name it leader, at the epoch it held before its restart, when no
// controller has yet seen the restart (the controller itself, back at
// once), and its followers would cut their logs to its empty, or short,
// one. The partition is then leaderless here, and this broker asks to
// leave the ISR (the controller elects another leader). Once the ISR no
// longer names it, or names it alone (its log is then all there is), the
// partition is like any other: it rejoins the ISR as a follower that
// caught up.
//
// A broker back from a machine crash when no other ISR member that kept
// its log was up stays in the ISR, recovering (pv.recovering): it leads
// nothing, and reports its recovered log end for the controller to
// compare with the others'. Requires m.mu.
func (m *replicaManager) applyLostLocked(p *partition, l leadership, pv partitionView) leadership {
	if end, recovering := pv.recovering.End(m.nodeID); recovering {
		if leo := p.log.LogEndOffset(); end != leo && p.leavingISR.CompareAndSwap(false, true) {
			m.b.log.Warn("this broker is back from a machine crash and no other in-sync replica that kept its log is up: it leads nothing and reports its recovered log end, for the controller to elect the longest log",
				"topic", p.topic, "partition", p.index, "log_end_offset", leo, "isr", l.isr)
			if !m.b.goBackground(func() { m.reportRecovered(p, leo) }) {
				p.leavingISR.Store(false)
			}
		}
		if l.leader == m.nodeID {
			l.leader = -1
		}
		return l
	}
	if !countedOn(pv, m.nodeID) {
		p.logLost = false
		m.b.log.Info("a partition whose log lost records is out of the ISR and the eligible leader replicas (or their only member); it is a replica like any other again",
			"topic", p.topic, "partition", p.index, "isr", l.isr)
		if err := markLost(partitionDir(m.dir, p.topic, p.index), false); err != nil {
			m.b.log.Warn("removing a partition's lost-log mark", "topic", p.topic, "partition", p.index, "err", err)
		}
		return l
	}
	if p.leavingISR.CompareAndSwap(false, true) {
		m.b.log.Warn("this broker's log of the partition may lack what the ISR counted on (its disk lost, or its unflushed tail in a machine crash); leaving the ISR, leading nothing until then",
			"topic", p.topic, "partition", p.index, "leader", l.leader, "leaderEpoch", l.leaderEpoch, "isr", l.isr)
		if !m.b.goBackground(func() { m.leaveISR(p) }) {
			p.leavingISR.Store(false)
		}
	}
	if l.leader == m.nodeID {
		l.leader = -1
	}
	return l
}

// reportRecovered records logEnd as the recovered end of p's log on this
// broker, recovering from a machine crash, retrying until it is done or
// the broker closes.
func (m *replicaManager) reportRecovered(p *partition, logEnd int64) {
	m.isrRequest(p, "reporting the recovered log end of a partition", func(ctx context.Context) error {
		return m.b.meta.markRecovering(ctx, p.topic, p.index, m.nodeID, logEnd, p.cfg.Load().minInsyncReplicas)
	})
}

// leaveISR takes this broker out of p's ISR (leaving the partition
// leaderless when it was named leader), retrying until it is done or the
// broker closes.
func (m *replicaManager) leaveISR(p *partition) {
	m.isrRequest(p, "leaving the ISR of a partition whose log lost records", func(ctx context.Context) error {
		// Only to a member that answers: one that does not may be
		// starting after a crash of its own, its marks not yet written
		// (see keepersUp). Never nil, which leaveISR takes for "any
		// member".
		keepers := []int32{}
		view := m.b.meta.snapshot()
		if pv, ok := view.partition(p.topic, p.index); ok {
			keepers = append(keepers, keepersUp(ctx, view, pv, m.nodeID, map[int32]bool{})...)
		}
		exit, err := m.b.meta.leaveISR(ctx, p.topic, p.index, m.nodeID, keepers, p.cfg.Load().minInsyncReplicas)
		if exit == isrRecovering {
			m.b.log.Warn("no other in-sync replica of the partition that kept its log answers: this broker stays in the ISR, recovering, and leads nothing until the controller has compared the logs",
				"topic", p.topic, "partition", p.index)
		}
		return err
	})
}

// isrRequest runs write, a request about this broker's place in p's ISR,
// until it succeeds or the broker closes, a second apart, then clears
// p.leavingISR.
func (m *replicaManager) isrRequest(p *partition, what string, write func(context.Context) error) {
	defer p.leavingISR.Store(false)
	for m.b.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(m.b.ctx, 10*time.Second)
		err := write(ctx)
		cancel()
		if err == nil {
			return
		}
		m.b.log.Warn(what+"; retrying", "topic", p.topic, "partition", p.index, "err", err)
		select {
		case <-m.b.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// waitOpening waits until no log is being opened (at start-up, so that
// the broker serves what it hosts once started).
func (m *replicaManager) waitOpening() {
	m.mu.Lock()
	var dones []chan struct{}
	for _, po := range m.opening {
		dones = append(dones, po.done)
	}
	m.mu.Unlock()
	for _, d := range dones {
		<-d
	}
}

// publishOpeningLocked publishes opening for openingLog. Requires mu.
func (m *replicaManager) publishOpeningLocked() {
	byKey := make(map[partitionKey]*pendingOpen, len(m.opening))
	for _, po := range m.opening {
		byKey[partitionKey{po.topic, po.index}] = po
	}
	m.openingByKey.Store(&byKey)
}

// openingLog returns the open of the log of topic id's partition index,
// while it is being opened or waits to be installed (nil: none). Its
// settled channel is closed when that is over. It takes no lock.
func (m *replicaManager) openingLog(topic string, id [16]byte, index int32) *pendingOpen {
	byKey := m.openingByKey.Load()
	if byKey == nil {
		return nil
	}
	if po := (*byKey)[partitionKey{topic, index}]; po != nil && po.id == id {
		return po
	}
	return nil
}

// openingTopic reports whether a log of topic is being opened or waits to
// be installed, with a channel closed when some apply installed or
// disposed of opened logs.
func (m *replicaManager) openingTopic(topic string) (bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settled == nil {
		m.settled = make(chan struct{})
	}
	for _, po := range m.opening {
		if po.topic == topic {
			return true, m.settled
		}
	}
	return false, m.settled
}

// tiers says whether a partition of tv with cfg is tiered on this broker.
//
// A partition of a topic whose remote storage was turned off with
// remote.log.delete.on.disable keeps its tier while its records may still
// be in the object store (it is not unarchived): its leader deletes its
// remote log (partitionTier.drain), then marks it unarchived, and the log
// reopens without the tier. (Only with that config: partition records
// older than the unarchived mark lack it, never-tiered ones included.)
func (m *replicaManager) tiers(tv topicView, pv partitionView, cfg *topicConfig) bool {
	draining := cfg.remoteDeleteOnDisable && !pv.unarchived
	return m.b.tier != nil && (cfg.remoteStorage || draining) && !tv.internal && !isInternalTopic(tv.name)
}

// scanStrays looks at the partition directories the broker does not host
// after applying view (at start-up): those of topics whose deletion is
// recorded are queued for removal (a removal a crash cut short resumes
// here); the others (topic missing or unreadable, replicas
// elsewhere) are kept, logged and counted in shale_stray_partition_logs.
// Anything without a readable partition.metadata is left alone.
func (m *replicaManager) scanStrays(view *metaView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	hosted := map[string]bool{}
	for _, p := range m.all() {
		hosted[p.log.Dir()] = true
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.Contains(e.Name(), "-") {
			continue
		}
		dir := filepath.Join(m.dir, e.Name())
		if hosted[dir] || m.opening[dir] != nil {
			continue
		}
		id, err := readPartitionMetadata(dir)
		if err != nil {
			continue
		}
		if view.deleted[id] {
			m.removeDeletedLocked(dir)
			continue
		}
		topic, index := e.Name(), int32(-1)
		if i := strings.LastIndexByte(topic, '-'); i > 0 {
			if n, err := strconv.ParseInt(topic[i+1:], 10, 32); err == nil {
				topic, index = topic[:i], int32(n)
			}
		}
		if index >= 0 && view.retiredHere(id, index, m.nodeID) {
			m.b.log.Info("removing the log of a replica reassigned away", "dir", dir)
			m.removal.queue(dir, nil)
			continue
		}
		reason := "the metadata does not assign this partition to this broker and no deletion of its topic is recorded"
		if r := view.unreadableReason(topic, index); r != "" {
			reason = r
		} else if view.topicsByID[id] == nil {
			reason = "the topic is missing from the metadata and no deletion of it is recorded"
		}
		m.addStrayLocked(dir, id, topic, index, reason)
	}
}

// closeAll closes every log cleanly (writing their clean-shutdown markers),
// openWorkers at once, those opened in the background but not installed
// too, once their opens are done (the broker's context is cancelled: those
// not started give up).
func (m *replicaManager) closeAll() {
	m.opens.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	var logs []*partition
	for dir, po := range m.opening {
		delete(m.opening, dir)
		close(po.settled)
		if p, _, _ := po.result(); p != nil {
			logs = append(logs, p)
		}
	}
	m.publishOpeningLocked()
	for _, p := range m.all() {
		p.close()
		logs = append(logs, p)
	}
	var wg sync.WaitGroup
	next := make(chan *partition)
	for range min(openWorkers, len(logs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if err := p.log.Close(); err != nil {
					m.b.log.Error("closing partition log", "topic", p.topic, "partition", p.index, "err", err)
				}
			}
		}()
	}
	for _, p := range logs {
		next <- p
	}
	close(next)
	wg.Wait()
	m.table.store(&replicaTable{byName: map[string]*localTopic{}, byID: map[[16]byte]*localTopic{}})
}

// hwCheckpointInterval is how often the high watermarks that moved are
// written to their checkpoints (Kafka's
// replica.high.watermark.checkpoint.interval.ms); Close writes them too.
const hwCheckpointInterval = 5 * time.Second

// checkpointHighWatermarks writes the high watermarks that moved.
func (m *replicaManager) checkpointHighWatermarks() {
	for _, p := range m.all() {
		if err := p.log.CheckpointHighWatermark(); err != nil && !errors.Is(err, localseg.ErrClosed) && !errors.Is(err, localseg.ErrOffline) {
			m.b.log.Warn("checkpointing the high watermark", "topic", p.topic, "partition", p.index, "err", err)
		}
	}
}

// applyRetention runs one retention pass over every hosted partition.
func (m *replicaManager) applyRetention(now time.Time) {
	for _, p := range m.all() {
		if _, err := p.log.ApplyRetention(now); err != nil && !errors.Is(err, localseg.ErrClosed) {
			m.b.log.Error("retention", "topic", p.topic, "partition", p.index, "err", err)
		}
	}
}

// The partition.metadata file, as Kafka writes it, ties a directory to its
// topic id:
//
//	version: 0
//	topic_id: <base64url topic id>
const partitionMetadataFile = "partition.metadata"

func readPartitionMetadata(dir string) ([16]byte, error) {
	var id [16]byte
	b, err := os.ReadFile(filepath.Join(dir, partitionMetadataFile))
	if err != nil {
		return id, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "topic_id: "); ok {
			raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(v))
			if err != nil || len(raw) != 16 {
				return id, fmt.Errorf("broker: bad topic id in %s", filepath.Join(dir, partitionMetadataFile))
			}
			copy(id[:], raw)
			return id, nil
		}
	}
	return id, fmt.Errorf("broker: no topic id in %s", filepath.Join(dir, partitionMetadataFile))
}

func writePartitionMetadata(dir string, id [16]byte) error {
	path := filepath.Join(dir, partitionMetadataFile)
	content := "version: 0\ntopic_id: " + base64.RawURLEncoding.EncodeToString(id[:]) + "\n"
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	return writeFileAtomic(path, []byte(content))
}

// atomicTable holds the current replica table; its zero value is empty.
type atomicTable struct{ p atomic.Pointer[replicaTable] }

var emptyTable = &replicaTable{byName: map[string]*localTopic{}, byID: map[[16]byte]*localTopic{}}

func (a *atomicTable) load() *replicaTable {
	if t := a.p.Load(); t != nil {
		return t
	}
	return emptyTable
}

func (a *atomicTable) store(t *replicaTable) { a.p.Store(t) }
