package broker

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/localseg"
)

// topicView and partitionView are what the replica manager needs to know of
// the cluster metadata: the broker turns each metadata snapshot into them.
type topicView struct {
	name       string
	id         [16]byte
	configs    map[string]string
	internal   bool
	partitions []partitionView
}

type partitionView struct {
	index       int32
	replicas    []int32
	isr         []int32
	leader      int32
	leaderEpoch int32
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
	b            *Broker

	mu    sync.Mutex // serializes apply and close
	table atomicTable
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
// logs of new replicas, updates leadership and configs, and closes and
// deletes the logs of partitions that are gone (topic deleted, or this
// broker no longer a replica). Errors opening one log are logged and that
// partition stays offline; the others proceed.
func (m *replicaManager) apply(topics []topicView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.table.load()
	next := &replicaTable{byName: map[string]*localTopic{}, byID: map[[16]byte]*localTopic{}}
	keep := map[*partition]bool{}
	for _, tv := range topics {
		cfg := parseTopicConfig(tv.configs, m.brokerConfig)
		var lt *localTopic
		for _, pv := range tv.partitions {
			if !slices.Contains(pv.replicas, m.nodeID) {
				continue
			}
			var p *partition
			if ot, ok := old.byID[tv.id]; ok {
				p = ot.parts[pv.index]
			}
			wasLeader := p != nil && p.isLeader()
			if p == nil {
				var err error
				if p, err = m.open(tv, pv.index, &cfg); err != nil {
					m.b.log.Error("cannot open partition log", "topic", tv.name, "partition", pv.index, "err", err)
					continue
				}
			} else {
				c := cfg
				p.cfg.Store(&c)
				p.log.SetConfig(cfg.log)
			}
			p.setLeadership(leadership{leader: pv.leader, leaderEpoch: pv.leaderEpoch, replicas: pv.replicas, isr: pv.isr})
			if lt == nil {
				lt = &localTopic{name: tv.name, id: tv.id, parts: map[int32]*partition{}}
				next.byName[tv.name] = lt
				next.byID[tv.id] = lt
			}
			lt.parts[pv.index] = p
			keep[p] = true
			if isLeader := p.isLeader(); isLeader != wasLeader && m.onLeader != nil {
				m.onLeader(p, isLeader)
			}
		}
	}
	m.table.store(next)
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
		if err := p.log.Delete(); err != nil {
			m.b.log.Error("cannot delete partition log", "topic", p.topic, "partition", p.index, "err", err)
		}
	}
	n := 0
	for _, lt := range next.byName {
		n += len(lt.parts)
	}
	m.b.metrics.partitions.Set(float64(n))
}

// open opens (or creates) a partition's log. A directory left by an older
// topic of the same name (another topic id) is deleted first.
func (m *replicaManager) open(tv topicView, index int32, cfg *topicConfig) (*partition, error) {
	dir := partitionDir(m.dir, tv.name, index)
	id, err := readPartitionMetadata(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case id != tv.id:
		m.b.log.Warn("removing the log of a deleted topic with the same name", "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writePartitionMetadata(dir, tv.id); err != nil {
		return nil, err
	}
	log, err := localseg.Open(dir, cfg.log, localseg.Options{Files: m.files, FS: m.fs, Logger: m.b.log.With("topic", tv.name, "partition", index), ScanBudget: m.b.scanBudget})
	if err != nil {
		return nil, err
	}
	c := *cfg
	p := newPartition(tv.name, tv.id, index, m.nodeID, log, &c)
	p.internal = tv.internal || isInternalTopic(tv.name)
	return p, nil
}

// removeStrays deletes partition directories whose topic no longer exists
// in the metadata (deleted while this broker was down). Only directories
// with a partition.metadata naming a topic id absent from ids are removed;
// anything unrecognised is left alone.
func (m *replicaManager) removeStrays(ids map[[16]byte]bool) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.Contains(e.Name(), "-") {
			continue
		}
		dir := filepath.Join(m.dir, e.Name())
		id, err := readPartitionMetadata(dir)
		if err != nil || ids[id] {
			continue
		}
		m.b.log.Info("removing the log of a deleted topic", "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			m.b.log.Error("cannot remove stray partition directory", "dir", dir, "err", err)
		}
	}
}

// closeAll closes every log cleanly (writing their clean-shutdown markers).
func (m *replicaManager) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.all() {
		p.close()
		if err := p.log.Close(); err != nil {
			m.b.log.Error("closing partition log", "topic", p.topic, "partition", p.index, "err", err)
		}
	}
	m.table.store(&replicaTable{byName: map[string]*localTopic{}, byID: map[[16]byte]*localTopic{}})
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
