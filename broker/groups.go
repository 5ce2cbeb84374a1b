package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// offsetsTopic is Kafka's internal topic of committed offsets and group
// metadata. Its partition leaders are the group coordinators.
const offsetsTopic = "__consumer_offsets"

// isInternalTopic reports Kafka's internal topic names (Topic.isInternal):
// only the broker writes them, whatever the metadata's flag says.
func isInternalTopic(name string) bool {
	switch name {
	case offsetsTopic, "__transaction_state", "__share_group_state":
		return true
	}
	return false
}

// offsetsTopicConfigs are the internal topic's configs. Kafka compacts it;
// Shale's coordinator keeps each partition bounded itself instead
// (snapshots plus a moved log start, see package group), so nothing is
// deleted by time or size, and the policy is delete whatever the broker's
// default says. 100 MiB
// segments, as Kafka's offsets.topic.segment.bytes, let deleted prefixes
// go away soon.
var offsetsTopicConfigs = map[string]string{
	"cleanup.policy":  "delete",
	"retention.ms":    "-1",
	"retention.bytes": "-1",
	"segment.bytes":   "104857600",
}

// groupCoordinator wires package group into the broker: it loads and
// unloads the coordinator's shards as this broker gains and loses the
// leadership of __consumer_offsets partitions, adapts those partitions to
// group.Log, and creates the topic on the first FindCoordinator.
type groupCoordinator struct {
	b     *Broker
	c     *group.Coordinator
	topic *internalTopic
}

// groupConfig builds the coordinator's configuration from the broker's.
func groupConfig(cfg *Config) (group.Config, error) {
	gc := group.DefaultConfig()
	gc.InitialRebalanceDelay = cfg.GroupInitialRebalanceDelay
	if cfg.OffsetsRetention > 0 {
		gc.OffsetsRetention = cfg.OffsetsRetention
	}
	if cfg.OffsetsTopicPartitions > 0 {
		gc.OffsetsTopicNumPartitions = cfg.OffsetsTopicPartitions
	}
	for name, v := range cfg.GroupConfigs {
		if err := gc.Set(name, v); err != nil {
			return gc, fmt.Errorf("broker: %w", err)
		}
	}
	if err := gc.Validate(); err != nil {
		return gc, fmt.Errorf("broker: %w", err)
	}
	return gc, nil
}

// newGroupCoordinator creates the coordinator and hooks it to the replica
// manager's leadership changes.
func newGroupCoordinator(b *Broker) (*groupCoordinator, error) {
	gc, err := groupConfig(&b.cfg)
	if err != nil {
		return nil, err
	}
	c, err := group.New(gc, group.Options{Logger: b.log.With("component", "group-coordinator"), Topics: metaTopics{b}, ScanBudget: b.scanBudget})
	if err != nil {
		return nil, err
	}
	g := &groupCoordinator{b: b, c: c}
	g.topic = &internalTopic{b: b, name: offsetsTopic, configs: offsetsTopicConfigs, rf: b.cfg.OffsetsTopicReplicationFactor,
		partitions: func() int32 { return c.Config().OffsetsTopicNumPartitions }}
	b.replicas.onLeader = g.onLeader
	b.onClose = append(b.onClose, c.Close)
	return g, nil
}

// onLeader is called by the replica manager (under its lock) when this
// broker becomes or stops being a partition's leader.
func (g *groupCoordinator) onLeader(p *partition, leader bool) {
	if p.topic != offsetsTopic {
		return
	}
	if leader {
		g.c.Load(p.index, &offsetsLog{p: p})
	} else {
		g.c.Unload(p.index)
	}
}

// coordinatorFor finds the broker leading the group's offsets partition
// (internalTopic.leaderOf).
func (g *groupCoordinator) coordinatorFor(groupID string) (brokerView, int16) {
	return g.topic.leaderOf(g.c.PartitionFor(groupID))
}

// internalTopic is an internal topic whose partitions' leaders coordinate
// (__consumer_offsets for groups, __transaction_state for transactions),
// created at the first lookup.
type internalTopic struct {
	b       *Broker
	name    string
	configs map[string]string
	// partitions and rf are the topic's partition count and replication
	// factor (capped at the live brokers) when it is created.
	partitions func() int32
	rf         int16

	createMu sync.Mutex
	creating bool
}

// leaderOf finds the broker leading partition p. When the topic does not
// exist yet it starts creating it and answers COORDINATOR_NOT_AVAILABLE,
// as Kafka does; the client retries. Where this broker leads the
// partition in its own metadata, cut from etcd, it names the newer leader
// a peer told it of, or, unable to prove its own leadership
// (leadershipLapsed), answers COORDINATOR_NOT_AVAILABLE.
func (t *internalTopic) leaderOf(p int32) (brokerView, int16) {
	view := t.b.meta.snapshot()
	tv := view.topics[t.name]
	if tv == nil {
		t.create()
		return brokerView{}, kerr.CoordinatorNotAvailable.Code
	}
	if int(p) >= len(tv.partitions) {
		return brokerView{}, kerr.CoordinatorNotAvailable.Code
	}
	pv := tv.partitions[p]
	leader := pv.leader
	if sup := t.b.supersededView(t.name, p, pv.leader, pv.leaderEpoch); sup != nil {
		// This broker's leadership is over, though its metadata (cut
		// from etcd) lags: a peer named the new leader.
		leader = sup.leader
	} else if leader == t.b.cfg.NodeID && t.b.leadershipLapsed(t.name, p) {
		// It would answer the coordinator's requests NOT_COORDINATOR.
		return brokerView{}, kerr.CoordinatorNotAvailable.Code
	}
	bv, ok := view.broker(leader)
	if !ok {
		return brokerView{}, kerr.CoordinatorNotAvailable.Code
	}
	return bv, 0
}

// create creates the topic in the background (once at a time).
func (t *internalTopic) create() {
	t.createMu.Lock()
	defer t.createMu.Unlock()
	if t.creating {
		return
	}
	t.creating = true
	b := t.b
	started := b.goBackground(func() {
		defer func() {
			t.createMu.Lock()
			t.creating = false
			t.createMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		rf := t.rf
		if n := int16(len(b.meta.snapshot().brokers)); rf > n {
			rf = n
		}
		if rf < 1 {
			return
		}
		_, err := b.createTopic(ctx, t.name, t.partitions(), rf, nil, maps.Clone(t.configs), true)
		if err != nil && !errors.Is(err, errTopicExists) && b.ctx.Err() == nil {
			b.log.Warn("cannot create an internal topic", "topic", t.name, "err", err)
		}
	})
	if !started {
		t.creating = false
	}
}

// clientInfo describes a request's client as Kafka's DescribeGroups shows
// it (the host with a leading slash, as Java's InetAddress prints it), and
// what topics it may see.
func clientInfo(r *request) group.ClientInfo {
	host := ""
	if addr, ok := r.conn.nc.RemoteAddr().(*net.TCPAddr); ok {
		host = "/" + addr.IP.String()
	}
	info := group.ClientInfo{ClientID: r.header.clientID, ClientHost: host}
	if c := r.conn; !c.unrestricted() {
		// DESCRIBE on each topic a regular expression matches, not
		// logged: the client did not name them.
		info.MayDescribe = func(topic string) bool { return c.allowed(acl.Describe, acl.Topic, topic) }
	}
	return info
}

// splitBy splits s into the elements ok keeps and those it drops, in
// order, asking ok once for each. When it keeps them all, kept is s
// itself; kept is nil only where s is (a nil list of topics asks for all
// of them, an empty one for none).
func splitBy[T any](s []T, ok func(T) bool) (kept, dropped []T) {
	for i, v := range s {
		switch {
		case !ok(v):
			if dropped == nil {
				kept = s[:i:i]
			}
			dropped = append(dropped, v)
		case dropped != nil:
			kept = append(kept, v)
		}
	}
	if dropped == nil {
		return s, nil
	}
	return kept, dropped
}

// offsetsLog adapts a __consumer_offsets partition this broker leads to
// group.Log (and, through txnLog, a __transaction_state partition to
// txn.Log).
type offsetsLog struct{ p *partition }

var _ group.Log = (*offsetsLog)(nil)

func (l *offsetsLog) Append(ctx context.Context, records []recordbatch.Record) (int64, error) {
	return l.append(ctx, recordbatch.BuildOptions{
		ProducerID:    recordbatch.NoProducerID,
		ProducerEpoch: recordbatch.NoProducerEpoch,
		BaseSequence:  recordbatch.NoSequence,
		BaseTimestamp: time.Now().UnixMilli(),
	}, records)
}

// AppendTransactional writes a transactional offset commit: the records
// as one transactional batch of the producer, with no sequence (as
// Kafka's coordinator writes them, outside the producer's sequences). The
// partition holds the producer's transaction open until its marker.
func (l *offsetsLog) AppendTransactional(ctx context.Context, producerID int64, producerEpoch int16, records []recordbatch.Record) (int64, error) {
	return l.append(ctx, recordbatch.BuildOptions{
		ProducerID:    producerID,
		ProducerEpoch: producerEpoch,
		BaseSequence:  recordbatch.NoSequence,
		Transactional: true,
		BaseTimestamp: time.Now().UnixMilli(),
	}, records)
}

func (l *offsetsLog) append(ctx context.Context, opts recordbatch.BuildOptions, records []recordbatch.Record) (int64, error) {
	buf, err := recordbatch.Build(nil, opts, records)
	if err != nil {
		return 0, err
	}
	if max := l.p.cfg.Load().maxMessageBytes; max > 0 && len(buf) > int(max) {
		return 0, fmt.Errorf("%w: %d bytes (max.message.bytes %d)", group.ErrRecordTooLarge, len(buf), max)
	}
	res, err := l.p.appendInternal(recordbatch.Batch(buf))
	if err != nil {
		return 0, offsetsLogError(err)
	}
	if err := l.waitCommitted(ctx, res.LastOffset+1); err != nil {
		return 0, err
	}
	return res.FirstOffset, nil
}

// waitCommitted waits until the records below offset are committed: the
// high watermark passed them and, when the leader is the only in-sync
// replica, they are on its stable storage (the high watermark is no
// promise then: a crash loses what it has not fsynced, as for a produce
// with acks=all).
func (l *offsetsLog) waitCommitted(ctx context.Context, offset int64) error {
	if err := l.waitHW(ctx, offset); err != nil {
		return offsetsLogError(err)
	}
	if l.p.inSyncAlone() {
		if err := l.waitDurable(ctx, offset); err != nil {
			return offsetsLogError(err)
		}
	}
	return nil
}

// waitHW waits until the high watermark reaches offset, the context ends
// or the partition loses leadership; it fails with
// errNotEnoughReplicasAfterAppend when the ISR shrank below
// min.insync.replicas first, as an acks=all produce does. The wait is a
// callback that whatever moves the mark (the follower fetch) runs, as an
// acks=all produce's is: nothing looks again at every append and fetch of
// the partition.
func (l *offsetsLog) waitHW(ctx context.Context, offset int64) error {
	done := make(chan error, 1)
	w, reached, err := l.p.whenHW(offset, l.p.cfg.Load().minInsyncReplicas, func(err error) { done <- err })
	if reached {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		l.p.cancelHW(w)
		return ctx.Err()
	}
}

// waitDurable waits for the records below offset to be on stable storage.
// The log's group commit fsyncs once for every append waiting on it; the
// caller is the shard's one append goroutine, which batches the writes of
// every request that arrived meanwhile.
func (l *offsetsLog) waitDurable(ctx context.Context, offset int64) error {
	done := make(chan error, 1)
	if l.p.log.WhenDurable(offset, func(err error) { done <- err }) {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func offsetsLogError(err error) error {
	switch {
	case errors.Is(err, errNotLeader) || errors.Is(err, errPartitionClosed) || errors.Is(err, localseg.ErrClosed):
		return fmt.Errorf("%w: %w", group.ErrNotLeader, err)
	case errors.Is(err, localseg.ErrInvalidProducerEpoch):
		return fmt.Errorf("%w: %w", group.ErrProducerFenced, err)
	}
	return err
}

// maxOffsetsBatch bounds a batch the coordinator's load reads from its
// partition, unless twice the topic's max.message.bytes is more: the
// coordinator writes batches of at most max.message.bytes.
const maxOffsetsBatch = 64 << 20

// Scan reads the partition from its log start to its log end, and returns
// once all of it is committed. The new leader's whole log is read: what it
// holds above the high watermark will be committed under its leadership,
// or cut if it loses the leadership first, to a member that lacks it. The
// coordinator answers nothing until Scan returns, so that none of it is
// served before it is committed: a commit the old coordinator wrote and
// did not acknowledge, read from the new one and then gone after another
// election, would be a committed offset moving backwards.
func (l *offsetsLog) Scan(ctx context.Context, fn func(recordbatch.Batch) error) error {
	log := l.p.log
	off := log.LogStartOffset()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := log.LogEndOffset()
		if off >= end {
			return l.waitCommitted(ctx, end)
		}
		rng, err := log.Read(off, 1<<20, end, true)
		if err != nil {
			return fmt.Errorf("broker: reading %s-%d at %d: %w", l.p.topic, l.p.index, off, err)
		}
		if limit := max(maxOffsetsBatch, 2*int64(l.p.cfg.Load().maxMessageBytes)); rng.Len() > limit {
			// Longer than 1 MiB only when its first batch is: the
			// size comes from the file, so bound it before allocating.
			rng.Release()
			return fmt.Errorf("broker: %s-%d at %d: a batch of %d bytes, more than any the coordinator writes (%d)", l.p.topic, l.p.index, off, rng.Len(), limit)
		}
		buf, err := rng.Bytes()
		rng.Release()
		if err != nil {
			return fmt.Errorf("broker: reading %s-%d at %d: %w", l.p.topic, l.p.index, off, err)
		}
		progressed := false
		for len(buf) > 0 {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				if progressed {
					break // a batch cut by the read size: read on from it
				}
				return fmt.Errorf("broker: %s-%d at %d: %w", l.p.topic, l.p.index, off, err)
			}
			buf = rest
			if b.NextOffset() <= off {
				continue
			}
			if err := fn(b); err != nil {
				return err
			}
			off = b.NextOffset()
			progressed = true
		}
		if !progressed {
			return fmt.Errorf("broker: %s-%d: no batch at offset %d below the log end %d", l.p.topic, l.p.index, off, end)
		}
	}
}

func (l *offsetsLog) Leads() bool { return l.p.leadsProvably() }

// ReadFence returns once this broker has proven its leadership of the
// partition for a read that arrived at since (partition.provenSince): at
// once while its lease is valid, else once its followers' words asked
// after since prove it (it asks every supersedeCheckInterval while the
// lease is out).
func (l *offsetsLog) ReadFence(ctx context.Context, since time.Time) error {
	deadline := time.Now().Add(readFenceWait)
	for {
		proven, maybe := l.p.provenSince(since)
		switch {
		case proven:
			return nil
		case !maybe || time.Now().After(deadline):
			return fmt.Errorf("%w: %w", group.ErrNotLeader, errLeadershipUnproven)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(readFencePoll):
		}
	}
}

func (l *offsetsLog) DeleteBefore(offset int64) error {
	return l.p.log.SetLogStartOffset(offset)
}

// metaTopics answers the coordinator's topic lookups from the metadata.
type metaTopics struct{ b *Broker }

func (m metaTopics) TopicByName(name string) ([16]byte, int32, bool) {
	tv := m.b.meta.snapshot().topics[name]
	if tv == nil {
		return [16]byte{}, 0, false
	}
	return tv.id, int32(len(tv.partitions)), true
}

func (m metaTopics) TopicByID(id [16]byte) (string, int32, bool) {
	tv := m.b.meta.snapshot().topicsByID[id]
	if tv == nil {
		return "", 0, false
	}
	return tv.name, int32(len(tv.partitions)), true
}

func (m metaTopics) TopicNames() []string {
	view := m.b.meta.snapshot()
	out := make([]string, 0, len(view.topics))
	for _, name := range view.sortedTopicNames() {
		if !view.topics[name].internal {
			out = append(out, name)
		}
	}
	return out
}
