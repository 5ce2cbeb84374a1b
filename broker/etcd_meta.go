package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/controller"
	"github.com/shale-log/shale/metadata"
)

// etcdMeta is the broker's metaStore over package metadata: a Store for
// writes and a Cache for reads, with metadata snapshots converted to the
// broker's views once per change.
type etcdMeta struct {
	store *metadata.Store
	cache *metadata.Cache
	// space refuses admin writes when the embedded etcd's filesystem is
	// below its reserve (nil: no guard). Set once, before serving.
	space *spaceGuard
	// askLogs asks a replica where its logs end, for the unclean
	// elections an operator asks for (nil: none is asked, and the first
	// live replica leads). Set once, before serving.
	askLogs controller.AskReplicaLogs
	// uncleanElected counts the unclean elections an operator asked for
	// (nil: not counted). Set once, before serving.
	uncleanElected prometheus.Counter

	mu           sync.Mutex
	registration *metadata.Registration
	last         *metadata.Snapshot
	view         *metaView
}

var _ metaStore = (*etcdMeta)(nil)

func newEtcdMeta(ctx context.Context, cli *clientv3.Client, prefix string, log *slog.Logger) (*etcdMeta, error) {
	store := metadata.NewStore(cli, prefix)
	if _, err := store.EnsureClusterID(ctx); err != nil {
		return nil, err
	}
	cache, err := metadata.NewCache(ctx, store, log)
	if err != nil {
		return nil, err
	}
	return &etcdMeta{store: store, cache: cache}, nil
}

func (m *etcdMeta) close() {
	m.mu.Lock()
	reg := m.registration
	m.registration = nil
	m.mu.Unlock()
	if reg != nil {
		reg.Close()
	}
	m.cache.Close()
}

func (m *etcdMeta) setRegistration(r *metadata.Registration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.registration = r
}

func (m *etcdMeta) currentRegistration() *metadata.Registration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.registration
}

// provenUntil is the earliest the current registration may expire, as
// far as this broker knows: zero without one, or once etcd has said it
// is gone.
func (m *etcdMeta) provenUntil() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.registration == nil {
		return time.Time{}
	}
	select {
	case <-m.registration.Done():
		return time.Time{}
	default:
	}
	return m.registration.ProvenUntil()
}

// registrationDeleted reports whether the metadata, at or past the
// revision that wrote reg's key, no longer holds broker id's key: its
// lease has expired (or was revoked) in etcd.
func (m *etcdMeta) registrationDeleted(reg *metadata.Registration, id int32) bool {
	if reg == nil || reg.Revision() == 0 {
		return false
	}
	s := m.cache.Snapshot()
	if s.Revision < reg.Revision() {
		return false
	}
	for _, b := range s.Brokers {
		if b.ID == id {
			return false
		}
	}
	return true
}

// registrationDone is closed when the current registration is lost.
func (m *etcdMeta) registrationDone() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.registration == nil {
		return nil
	}
	return m.registration.Done()
}

func (m *etcdMeta) snapshot() *metaView {
	s := m.cache.Snapshot()
	m.mu.Lock()
	defer m.mu.Unlock()
	if s != m.last {
		m.last, m.view = s, convertSnapshot(s, m.view)
	}
	return m.view
}

// convertSnapshot converts s; the brokers prev saw (nil: none) are kept
// as last seen.
func convertSnapshot(s *metadata.Snapshot, prev *metaView) *metaView {
	v := &metaView{
		revision:     s.Revision,
		clusterID:    s.ClusterID,
		controllerID: s.Controller,
		topics:       make(map[string]*topicView, len(s.Topics)),
		topicsByID:   make(map[[16]byte]*topicView, len(s.Topics)),
		deleted:      make(map[[16]byte]bool, len(s.DeletedTopics)),
		unreadable:   map[string]map[int32]string{},

		brokerConfigs: s.BrokerConfigs,
		clientQuotas:  s.ClientQuotas,

		scramCredentials: s.ScramCredentials,
		aclEntries:       s.ACLs,
	}
	v.acls = aclSet(s.ACLs, prev)
	for id := range s.DeletedTopics {
		v.deleted[id] = true
	}
	for _, u := range s.Unreadable {
		m := v.unreadable[u.Topic]
		if m == nil {
			m = map[int32]string{}
			v.unreadable[u.Topic] = m
		}
		m[u.Partition] = fmt.Sprintf("metadata record %s cannot be decoded: %s", u.Key, u.Err)
	}
	for _, b := range s.Brokers {
		bv := brokerView{id: b.ID, host: b.Host, port: b.Port, shuttingDown: b.ShuttingDown, incarnation: b.Incarnation}
		if b.Rack != "" {
			rack := b.Rack
			bv.rack = &rack
		}
		v.brokers = append(v.brokers, bv)
	}
	v.lastSeen = make(map[int32]brokerView, len(v.brokers))
	if prev != nil {
		maps.Copy(v.lastSeen, prev.lastSeen)
	}
	for _, bv := range v.brokers {
		v.lastSeen[bv.id] = bv
	}
	if v.controllerID < 0 && len(v.brokers) > 0 {
		// No elected controller yet: any broker serves admin requests
		// (they are etcd writes), so point clients at the lowest id.
		v.controllerID = v.brokers[0].id
	}
	for name, ts := range s.Topics {
		tv := &topicView{name: name, id: ts.ID, configs: ts.Configs, internal: ts.Internal}
		if tv.configs == nil {
			tv.configs = map[string]string{}
		}
		for _, p := range ts.Partitions {
			tv.partitions = append(tv.partitions, partitionView{
				index: p.Index, replicas: p.Replicas, isr: p.ISR, leader: p.Leader, leaderEpoch: p.LeaderEpoch, partitionEpoch: p.PartitionEpoch,
				uncleanEpoch: p.UncleanEpoch, unarchived: p.Unarchived, adding: p.AddingReplicas, removing: p.RemovingReplicas, retired: p.RetiredReplicas,
				created: p.Created, recovering: p.Recovering, eligible: p.Eligible,
			})
		}
		v.topics[name] = tv
		v.topicsByID[ts.ID] = tv
	}
	return v
}

func (m *etcdMeta) waitRevision(ctx context.Context, rev int64) error {
	return m.cache.WaitForRevision(ctx, rev)
}

func (m *etcdMeta) subscribe(ctx context.Context) <-chan struct{} { return m.cache.Subscribe(ctx) }

func (m *etcdMeta) createTopic(ctx context.Context, t topicView) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	var parts []metadata.Partition
	for _, p := range t.partitions {
		parts = append(parts, metadata.Partition{Index: p.index, Replicas: p.replicas, Leader: p.leader, LeaderEpoch: p.leaderEpoch, ISR: p.isr, Unarchived: !t.restored || p.unarchived})
	}
	rev, err := m.store.CreateTopic(ctx, metadata.Topic{Name: t.name, ID: t.id, Configs: t.configs, Internal: t.internal}, parts)
	return rev, metaError(err)
}

func (m *etcdMeta) deleteTopic(ctx context.Context, name string) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.DeleteTopic(ctx, name)
	return rev, metaError(err)
}

func (m *etcdMeta) createPartitions(ctx context.Context, name string, seen int, add []partitionView) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	var parts []metadata.Partition
	for _, p := range add {
		parts = append(parts, metadata.Partition{Index: p.index, Replicas: p.replicas, Leader: p.leader, LeaderEpoch: p.leaderEpoch, ISR: p.isr, Unarchived: true})
	}
	rev, err := m.store.CreatePartitions(ctx, name, seen, parts)
	return rev, metaError(err)
}

func (m *etcdMeta) updateTopicConfigs(ctx context.Context, name string, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.UpdateTopicConfigs(ctx, name, mutate)
	return rev, metaError(err)
}

func (m *etcdMeta) updateBrokerConfigs(ctx context.Context, id int32, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.UpdateBrokerConfigs(ctx, id, mutate)
	return rev, metaError(err)
}

func (m *etcdMeta) updateClientQuotas(ctx context.Context, e metadata.QuotaEntity, mutate func(map[string]float64) (map[string]float64, error)) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.UpdateClientQuotas(ctx, e, mutate)
	return rev, metaError(err)
}

func (m *etcdMeta) updateScramCredentials(ctx context.Context, user string, mutate func(map[string]metadata.ScramCredential) (map[string]metadata.ScramCredential, error)) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.UpdateScramCredentials(ctx, user, mutate)
	return rev, metaError(err)
}

func (m *etcdMeta) updateACLs(ctx context.Context, r metadata.ACLResource, mutate func([]metadata.ACLEntry) ([]metadata.ACLEntry, error)) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	rev, err := m.store.UpdateACLs(ctx, r, mutate)
	return rev, metaError(err)
}

func (m *etcdMeta) allocateProducerIDs(ctx context.Context, n int64) (int64, error) {
	if err := m.space.check(0); err != nil {
		return 0, err
	}
	return m.store.AllocateProducerIDs(ctx, n)
}

func (m *etcdMeta) alterISR(ctx context.Context, topic string, index, leader, leaderEpoch, partitionEpoch int32, isr []int32, minISR int32) error {
	cur, err := m.store.Partition(ctx, topic, index)
	if err != nil {
		return metaError(err)
	}
	if cur.Leader != leader || cur.LeaderEpoch != leaderEpoch || cur.PartitionEpoch != partitionEpoch {
		return fmt.Errorf("%w: %s/%d is at leader %d epoch %d partition epoch %d", errMetaConflict, topic, index, cur.Leader, cur.LeaderEpoch, cur.PartitionEpoch)
	}
	cur.SetISR(isr, minISR)
	_, _, err = m.store.UpdatePartition(ctx, cur, partitionEpoch)
	return metaError(err)
}

func (m *etcdMeta) leaveISR(ctx context.Context, topic string, index, self int32, keepers []int32, minISR int32) (isrExit, error) {
	for attempt := 0; ; attempt++ {
		cur, err := m.store.Partition(ctx, topic, index)
		if err != nil {
			return isrUnchanged, metaError(err)
		}
		cur.DropLeftOverEligible(minISR)
		counted := cur.Counted()
		if !slices.Contains(counted, self) || len(counted) == 1 {
			return isrUnchanged, nil
		}
		without := func(ids []int32) []int32 {
			return slices.DeleteFunc(slices.Clone(ids), func(id int32) bool { return id == self })
		}
		// members are those it leaves to.
		next, members := cur, counted
		shared := slices.Contains(cur.ISR, self) && len(cur.ISR) > 1
		switch {
		case shared:
			// One of several ISR members: to the others.
			members = cur.ISR
			next.ISR = without(cur.ISR)
		case slices.Contains(cur.ISR, self):
			// The ISR's only member: the eligible leader replicas,
			// which hold every record below the high watermark too,
			// take its place.
			next.ISR, next.Eligible = without(counted), nil
		default:
			// An eligible leader replica stops being one.
			next.Eligible = without(cur.Eligible)
		}
		if cur.Leader == self {
			next.Leader, next.LeaderEpoch = -1, cur.LeaderEpoch+1
		}
		kept := slices.ContainsFunc(members, func(id int32) bool {
			_, r := cur.Recovering.End(id)
			return id != self && !r && (keepers == nil || slices.Contains(keepers, id))
		})
		if !kept {
			// The members it would leave to are back from a machine
			// crash too (the caller's view was older), or not up: this
			// log may be the longest left, so it stays, recovering, for
			// the controller to compare (with the eligible leader
			// replicas, now in the ISR). Its end is reported once its
			// log is open.
			if _, already := cur.Recovering.End(self); already {
				return isrRecovering, nil
			}
			next.ISR, next.Eligible = counted, nil
			if shared {
				next.ISR, next.Eligible = cur.ISR, cur.Eligible
			}
			next.Recovering = append(slices.Clone(cur.Recovering), metadata.RecoveringReplica{ID: self, LogEnd: -1})
		}
		_, _, err = m.store.UpdatePartition(ctx, next, cur.PartitionEpoch)
		if err == nil || !errors.Is(err, metadata.ErrConflict) || attempt == 4 {
			exit := isrLeft
			if !kept {
				exit = isrRecovering
			}
			return exit, metaError(err)
		}
	}
}

// markRecovering records this broker as an ISR member of the partition back from
// a machine crash (metadata.Partition.Recovering) whose log ends at logEnd
// (-1: not yet opened), leaving the partition leaderless at a new epoch
// when it was named leader: it leads nothing until the controller has
// compared it with the others. An eligible leader replica, or the ISR's
// only member, takes the eligible leader replicas into the ISR first, to
// be compared with. Nothing is written when the partition does not count
// on it, or the record already says so.
func (m *etcdMeta) markRecovering(ctx context.Context, topic string, index, self int32, logEnd int64, minISR int32) error {
	for attempt := 0; ; attempt++ {
		cur, err := m.store.Partition(ctx, topic, index)
		if err != nil {
			return metaError(err)
		}
		cur.DropLeftOverEligible(minISR)
		had, recovering := cur.Recovering.End(self)
		counted := cur.Counted()
		if !slices.Contains(counted, self) || recovering && (had == logEnd || logEnd < 0) {
			return nil
		}
		next := cur
		if !slices.Contains(cur.ISR, self) || len(cur.ISR) == 1 {
			next.ISR, next.Eligible = counted, nil
		}
		next.Recovering = slices.DeleteFunc(slices.Clone(cur.Recovering), func(r metadata.RecoveringReplica) bool { return r.ID == self })
		next.Recovering = append(next.Recovering, metadata.RecoveringReplica{ID: self, LogEnd: logEnd})
		if cur.Leader == self {
			next.Leader, next.LeaderEpoch = -1, cur.LeaderEpoch+1
		}
		_, _, err = m.store.UpdatePartition(ctx, next, cur.PartitionEpoch)
		if err == nil || !errors.Is(err, metadata.ErrConflict) || attempt == 4 {
			return metaError(err)
		}
	}
}

func (m *etcdMeta) markArchiving(ctx context.Context, topic string, index, leader, leaderEpoch int32) error {
	return m.setUnarchived(ctx, topic, index, leader, leaderEpoch, false)
}

func (m *etcdMeta) markUnarchived(ctx context.Context, topic string, index, leader, leaderEpoch int32) error {
	return m.setUnarchived(ctx, topic, index, leader, leaderEpoch, true)
}

// setUnarchived sets a partition's unarchived mark as its leader at
// leaderEpoch (markArchiving, markUnarchived).
func (m *etcdMeta) setUnarchived(ctx context.Context, topic string, index, leader, leaderEpoch int32, unarchived bool) error {
	// A concurrent change of the partition (an ISR change) makes it
	// read again; a new leader ends it.
	for attempt := 0; ; attempt++ {
		cur, err := m.store.Partition(ctx, topic, index)
		if err != nil {
			return metaError(err)
		}
		if cur.Unarchived == unarchived {
			return nil
		}
		if cur.Leader != leader || cur.LeaderEpoch != leaderEpoch {
			return fmt.Errorf("%w: %s/%d is at leader %d epoch %d", errMetaConflict, topic, index, cur.Leader, cur.LeaderEpoch)
		}
		cur.Unarchived = unarchived
		_, _, err = m.store.UpdatePartition(ctx, cur, cur.PartitionEpoch)
		if err == nil || !errors.Is(err, metadata.ErrConflict) || attempt == 4 {
			return metaError(err)
		}
	}
}

func (m *etcdMeta) raiseLeaderEpoch(ctx context.Context, topic string, index, leader, leaderEpoch, above int32) error {
	if err := m.space.check(0); err != nil {
		return err
	}
	// Read from etcd, not the cache: a newer leader's term ends it.
	for attempt := 0; ; attempt++ {
		cur, err := m.store.Partition(ctx, topic, index)
		if err != nil {
			return metaError(err)
		}
		if cur.Leader != leader || cur.LeaderEpoch != leaderEpoch {
			return fmt.Errorf("%w: %s/%d is at leader %d epoch %d", errMetaConflict, topic, index, cur.Leader, cur.LeaderEpoch)
		}
		cur.LeaderEpoch = max(cur.LeaderEpoch, above+1)
		_, _, err = m.store.UpdatePartition(ctx, cur, cur.PartitionEpoch)
		if err == nil || !errors.Is(err, metadata.ErrConflict) || attempt == 4 {
			return metaError(err)
		}
	}
}

func (m *etcdMeta) settlePartitionEpoch(ctx context.Context, topic string, index, epoch int32) (int32, error) {
	got, err := m.store.FencePartition(ctx, topic, index, epoch)
	return got, metaError(err)
}

// electLeader runs an election an operator asked for (ElectLeaders) on a
// partition: preferred (the first replica, when in sync) or unclean (a
// leaderless partition; from outside the ISR, the live replica whose log
// holds the latest history leads, as in the controller's unclean
// elections). The write is a compare-and-swap on the partition epoch; the
// controller's next round sees the new leader as live and keeps it.
func (m *etcdMeta) electLeader(ctx context.Context, topic string, index int32, unclean bool) error {
	if err := m.space.check(0); err != nil {
		return err
	}
	var logs controller.ReplicaLogs
	elect := func(snap *metadata.Snapshot, p metadata.Partition) (metadata.Partition, error) {
		if !unclean {
			return controller.ElectPreferred(snap, p)
		}
		next, err := controller.ElectUnclean(snap, p, logs[controller.Ref(p)])
		if err == nil && logs == nil && m.askLogs != nil && next.UncleanEpoch == next.LeaderEpoch {
			// From outside the ISR: decided again with the
			// replicas' log ends.
			logs = controller.CollectReplicaLogs(ctx, snap, []metadata.Partition{p}, nil, m.askLogs)
			next, err = controller.ElectUnclean(snap, p, logs[controller.Ref(p)])
		}
		return next, err
	}
	// The partition is read from etcd, not the cache, which may not yet
	// show a change just made (an election a moment ago); a concurrent
	// change makes it decide again.
	for attempt := 0; ; attempt++ {
		p, err := m.store.Partition(ctx, topic, index)
		if err != nil {
			return metaError(err)
		}
		next, err := elect(m.cache.Snapshot(), p)
		if err != nil {
			return err
		}
		_, _, err = m.store.UpdatePartition(ctx, next, p.PartitionEpoch)
		if err == nil && next.UncleanEpoch != p.UncleanEpoch && m.uncleanElected != nil {
			m.uncleanElected.Inc()
		}
		if err == nil || !errors.Is(err, metadata.ErrConflict) || attempt == 4 {
			return metaError(err)
		}
	}
}

// metaError maps metadata's sentinels to the broker's.
func metaError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, metadata.ErrTopicExists):
		return fmt.Errorf("%w: %w", errTopicExists, err)
	case errors.Is(err, metadata.ErrUnknownTopic):
		return fmt.Errorf("%w: %w", errUnknownTopic, err)
	case errors.Is(err, metadata.ErrConflict):
		return fmt.Errorf("%w: %w", errMetaConflict, err)
	case errors.Is(err, metadata.ErrTooLarge):
		return fmt.Errorf("%w: %w", errPolicyViolation, err)
	case errors.Is(err, metadata.ErrIndeterminate):
		return fmt.Errorf("%w: %w", errMetaIndeterminate, err)
	}
	return err
}
