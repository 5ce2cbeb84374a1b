package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Snapshot is one consistent view of a cluster's metadata, at an etcd
// revision. It is immutable: readers may keep it.
type Snapshot struct {
	Revision   int64
	ClusterID  string
	Controller int32    // -1 when none is elected
	Brokers    []Broker // live brokers by id
	// Candidacies are the controller candidacies' keys with their
	// create revisions (see Leadership.Gone). Readers must not modify it.
	Candidacies map[string]int64
	Topics      map[string]*TopicState
	TopicsByID  map[UUID]*TopicState
	// DeletedTopics are the tombstones of deleted topics, by id.
	DeletedTopics map[UUID]DeletedTopic
	// Unreadable are the topic and partition records that could not be
	// decoded, by key.
	Unreadable []UnreadableRecord
	// BrokerConfigs are the dynamic broker configs by broker id, the
	// cluster-wide default under DefaultBrokerConfigs. Readers must not
	// modify the maps.
	BrokerConfigs map[int32]map[string]string
	// ClientQuotas are the client quotas by entity (Kafka's quota names
	// to their values). Readers must not modify the maps.
	ClientQuotas map[QuotaEntity]map[string]float64
	// ScramCredentials are the users' SCRAM credentials, by user and
	// mechanism. Readers must not modify the maps.
	ScramCredentials map[string]map[string]ScramCredential
	// ACLs are the ACL entries by resource pattern. Readers must not
	// modify the slices.
	ACLs map[ACLResource][]ACLEntry
}

// Cache keeps a Snapshot current by watching the store's keys. Snapshot is
// a cheap atomic load; Subscribe tells listeners when it changes.
type Cache struct {
	store *Store
	log   *slog.Logger
	snap  atomic.Pointer[Snapshot]
	ctx   context.Context
	stop  context.CancelFunc
	done  chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new snapshot
	subs    map[chan struct{}]struct{}
}

// NewCache loads the metadata and starts following it. Close stops it.
func NewCache(ctx context.Context, store *Store, log *slog.Logger) (*Cache, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{store: store, log: log, done: make(chan struct{}), changed: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.publish(st.snapshot())
	c.ctx, c.stop = context.WithCancel(context.Background())
	go c.run(st)
	return c, nil
}

// Snapshot returns the current view.
func (c *Cache) Snapshot() *Snapshot { return c.snap.Load() }

// Close stops following changes and waits for the watcher to exit.
func (c *Cache) Close() {
	c.stop()
	<-c.done
}

// Subscribe returns a channel that receives a value after each change
// (coalesced: a slow reader sees one value for several changes) until ctx
// ends, when it is closed.
func (c *Cache) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	})
	return ch
}

// WaitForRevision blocks until the snapshot is at revision rev or later.
func (c *Cache) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if c.Snapshot().Revision >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return errors.New("metadata: cache closed")
		}
	}
}

func (c *Cache) publish(s *Snapshot) {
	c.snap.Store(s)
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
}

// state is the watcher's mutable view, turned into Snapshots.
type state struct {
	prefix     string
	revision   int64
	clusterID  string
	brokers    map[int32]Broker
	topics     map[string]Topic
	partitions map[string]map[int32]Partition
	deleted    map[UUID]DeletedTopic
	unreadable map[string]UnreadableRecord // by key
	// controller candidates by key, with create revisions
	candidates map[string]candidate
	// shuttingDown are the brokers in a controlled shutdown.
	shuttingDown map[int32]bool
	// brokerConfigs are the dynamic broker configs by id
	// (DefaultBrokerConfigs: the cluster-wide default).
	brokerConfigs map[int32]map[string]string
	// clientQuotas are the client quotas by entity.
	clientQuotas map[QuotaEntity]map[string]float64
	// scramCredentials are the SCRAM credentials by user and mechanism.
	scramCredentials map[string]map[string]ScramCredential
	// acls are the ACL entries by resource pattern.
	acls map[ACLResource][]ACLEntry
}

type candidate struct {
	id        int32
	createRev int64
}

func (c *Cache) load(ctx context.Context) (*state, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := c.store.cli.Get(ctx, c.store.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("metadata: loading: %w", err)
	}
	st := &state{
		prefix:     c.store.prefix,
		revision:   resp.Header.Revision,
		brokers:    map[int32]Broker{},
		topics:     map[string]Topic{},
		partitions: map[string]map[int32]Partition{},
		deleted:    map[UUID]DeletedTopic{},
		unreadable: map[string]UnreadableRecord{},
		candidates: map[string]candidate{},

		shuttingDown:  map[int32]bool{},
		brokerConfigs: map[int32]map[string]string{},
		clientQuotas:  map[QuotaEntity]map[string]float64{},

		scramCredentials: map[string]map[string]ScramCredential{},
		acls:             map[ACLResource][]ACLEntry{},
	}
	for _, kv := range resp.Kvs {
		st.put(c.log, string(kv.Key), kv.Value, kv.CreateRevision, kv.ModRevision)
	}
	return st, nil
}

func (c *Cache) run(st *state) {
	defer close(c.done)
	defer func() {
		c.mu.Lock()
		for ch := range c.subs {
			close(ch)
			delete(c.subs, ch)
		}
		c.mu.Unlock()
	}()
	for c.ctx.Err() == nil {
		err := c.watch(st)
		if c.ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) || err != nil {
			// Missed history (compaction) or a broken watch: reload
			// everything and continue from the new revision.
			c.log.Debug("metadata watch restarting", "err", err)
			for c.ctx.Err() == nil {
				fresh, lerr := c.load(c.ctx)
				if lerr == nil {
					st = fresh
					c.publish(st.snapshot())
					break
				}
				select {
				case <-c.ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}
}

func (c *Cache) watch(st *state) error {
	ctx := clientv3.WithRequireLeader(c.ctx)
	wch := c.store.cli.Watch(ctx, c.store.prefix, clientv3.WithPrefix(), clientv3.WithRev(st.revision+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) == 0 {
			continue
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if ev.Type == mvccpb.DELETE {
				st.del(key)
			} else {
				st.put(c.log, key, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.ModRevision)
			}
		}
		st.revision = resp.Header.Revision
		c.publish(st.snapshot())
	}
	return errors.New("metadata: watch closed")
}

func (st *state) put(log *slog.Logger, key string, val []byte, createRev, modRev int64) {
	rest := strings.TrimPrefix(key, st.prefix)
	delete(st.unreadable, key)
	switch {
	case rest == "cluster/id":
		st.clusterID = string(val)
	case strings.HasPrefix(rest, "broker-configs/"):
		st.putBrokerConfigs(log, key, strings.TrimPrefix(rest, "broker-configs/"), val)
	case strings.HasPrefix(rest, "client-quotas/"):
		st.putClientQuotas(log, key, strings.TrimPrefix(rest, "client-quotas/"), val)
	case strings.HasPrefix(rest, "scram-credentials/"):
		st.putScramCredentials(log, key, strings.TrimPrefix(rest, "scram-credentials/"), val)
	case strings.HasPrefix(rest, "acls/"):
		st.putACLs(log, key, strings.TrimPrefix(rest, "acls/"), val)
	case strings.HasPrefix(rest, "brokers/"):
		var b Broker
		if err := json.Unmarshal(val, &b); err != nil {
			log.Error("bad broker record", "key", key, "err", err)
			return
		}
		b.Incarnation = modRev
		st.brokers[b.ID] = b
	case strings.HasPrefix(rest, "topics/"):
		var t Topic
		name := strings.TrimPrefix(rest, "topics/")
		if err := json.Unmarshal(val, &t); err != nil || t.Name != name {
			if err == nil {
				err = fmt.Errorf("the record names topic %q", t.Name)
			}
			// The topic leaves the snapshot, and brokers keep its
			// data offline until the record is right again.
			log.Error("unreadable topic record: the topic is offline, its data kept", "key", key, "err", err)
			delete(st.topics, name)
			st.unreadable[key] = UnreadableRecord{Key: key, Topic: name, Partition: -1, Err: err.Error()}
			return
		}
		st.topics[t.Name] = t
	case strings.HasPrefix(rest, "partitions/"):
		var p Partition
		topic, index, ok := parsePartitionKey(strings.TrimPrefix(rest, "partitions/"))
		if !ok {
			log.Error("bad partition key", "key", key)
			return
		}
		if err := json.Unmarshal(val, &p); err != nil || p.Topic != topic || p.Index != index {
			if err == nil {
				err = fmt.Errorf("the record names partition %s/%d", p.Topic, p.Index)
			}
			log.Error("unreadable partition record: the partition is offline, its data kept", "key", key, "err", err)
			st.delPartition(topic, index)
			st.unreadable[key] = UnreadableRecord{Key: key, Topic: topic, Partition: index, Err: err.Error()}
			return
		}
		m := st.partitions[p.Topic]
		if m == nil {
			m = map[int32]Partition{}
			st.partitions[p.Topic] = m
		}
		p.Created = createRev
		m[p.Index] = p
	case strings.HasPrefix(rest, "deleted-topics/"):
		var d DeletedTopic
		if err := json.Unmarshal(val, &d); err != nil {
			// An unreadable tombstone deletes nothing.
			log.Error("bad deleted-topic record", "key", key, "err", err)
			return
		}
		st.deleted[d.ID] = d
	case strings.HasPrefix(rest, "controller/"):
		id, err := strconv.Atoi(string(val))
		if err == nil {
			st.candidates[key] = candidate{id: int32(id), createRev: createRev}
		}
	case strings.HasPrefix(rest, "shutting-down/"):
		id, err := strconv.Atoi(strings.TrimPrefix(rest, "shutting-down/"))
		if err == nil {
			st.shuttingDown[int32(id)] = true
		}
	}
}

// parsePartitionKey splits "<topic>/<index>".
func parsePartitionKey(s string) (string, int32, bool) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return "", 0, false
	}
	idx, err := strconv.ParseInt(s[i+1:], 10, 32)
	if err != nil {
		return "", 0, false
	}
	return s[:i], int32(idx), true
}

func (st *state) delPartition(topic string, index int32) {
	if m := st.partitions[topic]; m != nil {
		delete(m, index)
		if len(m) == 0 {
			delete(st.partitions, topic)
		}
	}
}

func (st *state) del(key string) {
	rest := strings.TrimPrefix(key, st.prefix)
	delete(st.unreadable, key)
	switch {
	case strings.HasPrefix(rest, "broker-configs/"):
		st.delBrokerConfigs(rest)
	case strings.HasPrefix(rest, "client-quotas/"):
		st.delClientQuotas(strings.TrimPrefix(rest, "client-quotas/"))
	case strings.HasPrefix(rest, "scram-credentials/"):
		st.delScramCredentials(strings.TrimPrefix(rest, "scram-credentials/"))
	case strings.HasPrefix(rest, "acls/"):
		st.delACLs(strings.TrimPrefix(rest, "acls/"))
	case strings.HasPrefix(rest, "brokers/"):
		id, err := strconv.Atoi(strings.TrimPrefix(rest, "brokers/"))
		if err == nil {
			delete(st.brokers, int32(id))
		}
	case strings.HasPrefix(rest, "topics/"):
		delete(st.topics, strings.TrimPrefix(rest, "topics/"))
	case strings.HasPrefix(rest, "partitions/"):
		if topic, index, ok := parsePartitionKey(strings.TrimPrefix(rest, "partitions/")); ok {
			st.delPartition(topic, index)
		}
	case strings.HasPrefix(rest, "deleted-topics/"):
		var id UUID
		if id.UnmarshalText([]byte(strings.TrimPrefix(rest, "deleted-topics/"))) == nil {
			delete(st.deleted, id)
		}
	case strings.HasPrefix(rest, "controller/"):
		delete(st.candidates, key)
	case strings.HasPrefix(rest, "shutting-down/"):
		id, err := strconv.Atoi(strings.TrimPrefix(rest, "shutting-down/"))
		if err == nil {
			delete(st.shuttingDown, int32(id))
		}
	}
}

func (st *state) snapshot() *Snapshot {
	s := &Snapshot{
		Revision:   st.revision,
		ClusterID:  st.clusterID,
		Controller: -1,
		Topics:     make(map[string]*TopicState, len(st.topics)),
		TopicsByID: make(map[UUID]*TopicState, len(st.topics)),

		DeletedTopics: make(map[UUID]DeletedTopic, len(st.deleted)),
		BrokerConfigs: make(map[int32]map[string]string, len(st.brokerConfigs)),
		ClientQuotas:  make(map[QuotaEntity]map[string]float64, len(st.clientQuotas)),

		ScramCredentials: make(map[string]map[string]ScramCredential, len(st.scramCredentials)),
		ACLs:             make(map[ACLResource][]ACLEntry, len(st.acls)),
	}
	for id, m := range st.brokerConfigs {
		s.BrokerConfigs[id] = m // replaced, never changed, by put
	}
	for e, m := range st.clientQuotas {
		s.ClientQuotas[e] = m // replaced, never changed, by put
	}
	for u, m := range st.scramCredentials {
		s.ScramCredentials[u] = m // replaced, never changed, by put
	}
	for r, entries := range st.acls {
		s.ACLs[r] = entries // replaced, never changed, by put
	}
	for id, d := range st.deleted {
		s.DeletedTopics[id] = d
	}
	for _, u := range st.unreadable {
		s.Unreadable = append(s.Unreadable, u)
	}
	sort.Slice(s.Unreadable, func(i, j int) bool { return s.Unreadable[i].Key < s.Unreadable[j].Key })
	for _, b := range st.brokers {
		b.ShuttingDown = st.shuttingDown[b.ID]
		s.Brokers = append(s.Brokers, b)
	}
	sort.Slice(s.Brokers, func(i, j int) bool { return s.Brokers[i].ID < s.Brokers[j].ID })
	for name, t := range st.topics {
		ts := &TopicState{Topic: t}
		for _, p := range st.partitions[name] {
			// Records a creation or an addition wrote before it
			// stopped half-way (another topic id, or past the count)
			// are not the topic's.
			if (p.TopicID != t.ID && p.TopicID != (UUID{})) || (t.PartitionCount > 0 && p.Index >= t.PartitionCount) {
				continue
			}
			ts.Partitions = append(ts.Partitions, p)
		}
		sort.Slice(ts.Partitions, func(i, j int) bool { return ts.Partitions[i].Index < ts.Partitions[j].Index })
		s.Topics[name] = ts
		s.TopicsByID[t.ID] = ts
	}
	var best int64
	s.Candidacies = make(map[string]int64, len(st.candidates))
	for key, c := range st.candidates {
		s.Candidacies[key] = c.createRev
		if best == 0 || c.createRev < best {
			best, s.Controller = c.createRev, c.id
		}
	}
	return s
}
