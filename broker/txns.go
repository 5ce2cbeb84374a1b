package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/broker/txn"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// txnTopic is Kafka's internal topic of transaction states. Its partition
// leaders are the transaction coordinators.
const txnTopic = "__transaction_state"

// txnTopicConfigs are the internal topic's configs: as the offsets topic's
// (the coordinator keeps each partition bounded itself), with Kafka's
// transaction.state.log.segment.bytes.
var txnTopicConfigs = map[string]string{
	"cleanup.policy":  "delete",
	"retention.ms":    "-1",
	"retention.bytes": "-1",
	"segment.bytes":   "104857600",
}

// txnCoordinator wires package txn into the broker: it loads and unloads
// the coordinator's shards as this broker gains and loses the leadership
// of __transaction_state partitions, creates the topic on the first
// FindCoordinator, and delivers the coordinator's markers to the
// partitions' leaders, this broker's own by a local append, the others'
// by WriteTxnMarkers.
type txnCoordinator struct {
	b     *Broker
	c     *txn.Coordinator
	topic *internalTopic

	// peers are idle connections to other brokers for WriteTxnMarkers,
	// by broker id: a completing transaction takes one (or dials) and
	// puts it back once answered.
	peersMu sync.Mutex
	peers   map[int32][]*peerClient
}

// maxIdleMarkerConns bounds the idle connections kept per broker.
const maxIdleMarkerConns = 4

// newTxnCoordinator creates the coordinator and hooks it to the replica
// manager's leadership changes, after the group coordinator's.
func newTxnCoordinator(b *Broker) (*txnCoordinator, error) {
	tc := txn.DefaultConfig()
	if b.cfg.TransactionTopicPartitions > 0 {
		tc.NumPartitions = b.cfg.TransactionTopicPartitions
	}
	tc.OffsetsTopicNumPartitions = b.groups.c.Config().OffsetsTopicNumPartitions
	for name, v := range b.cfg.TransactionConfigs {
		if err := tc.Set(name, v); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	if err := tc.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	t := &txnCoordinator{b: b, peers: map[int32][]*peerClient{}}
	c, err := txn.New(tc, txn.Options{
		Logger:      b.log.With("component", "transaction-coordinator"),
		ProducerIDs: txnProducerIDs{b},
		Topics:      txnTopics{b},
		Markers:     t,
	})
	if err != nil {
		return nil, err
	}
	t.c = c
	t.topic = &internalTopic{b: b, name: txnTopic, configs: txnTopicConfigs, rf: b.cfg.TransactionTopicReplicationFactor,
		partitions: func() int32 { return c.Config().NumPartitions }}
	groupsOnLeader := b.replicas.onLeader
	b.replicas.onLeader = func(p *partition, leader bool) {
		if groupsOnLeader != nil {
			groupsOnLeader(p, leader)
		}
		t.onLeader(p, leader)
	}
	b.onClose = append(b.onClose, c.Close, t.closePeers)
	return t, nil
}

// onLeader is called by the replica manager (under its lock) when this
// broker becomes or stops being a partition's leader. The partition's
// leader epoch is the coordinator epoch its markers carry, which fences
// the markers of a coordinator that lost the partition.
func (t *txnCoordinator) onLeader(p *partition, leader bool) {
	if p.topic != txnTopic {
		return
	}
	if leader {
		t.c.Load(p.index, p.state.Load().leaderEpoch, txnLog{offsetsLog{p: p}})
	} else {
		t.c.Unload(p.index)
	}
}

// coordinatorFor finds the broker leading the transactional id's
// partition (internalTopic.leaderOf).
func (t *txnCoordinator) coordinatorFor(id string) (brokerView, int16) {
	return t.topic.leaderOf(t.c.PartitionFor(id))
}

// WriteMarkers delivers one transaction's markers (txn.Markers): each
// partition this broker leads gets it by a local append, the others by a
// WriteTxnMarkers to their leaders, one request per broker, in parallel.
func (t *txnCoordinator) WriteMarkers(ctx context.Context, producerID int64, producerEpoch int16, coordinatorEpoch int32, commit bool, partitions []txn.TopicPartition) map[txn.TopicPartition]int16 {
	out := make(map[txn.TopicPartition]int16, len(partitions))
	view := t.b.meta.snapshot()
	byLeader := map[int32][]txn.TopicPartition{}
	for _, tp := range partitions {
		tv := view.topics[tp.Topic]
		if tv == nil || int(tp.Partition) >= len(tv.partitions) || tp.Partition < 0 {
			out[tp] = kerr.UnknownTopicOrPartition.Code
			continue
		}
		leader := tv.partitions[tp.Partition].leader
		if leader < 0 {
			out[tp] = kerr.NotLeaderForPartition.Code
			continue
		}
		byLeader[leader] = append(byLeader[leader], tp)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for leader, tps := range byLeader {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var codes map[txn.TopicPartition]int16
			if leader == t.b.cfg.NodeID {
				codes = t.writeLocal(ctx, producerID, producerEpoch, coordinatorEpoch, commit, tps)
			} else {
				codes = t.writeRemote(ctx, leader, producerID, producerEpoch, coordinatorEpoch, commit, tps)
			}
			mu.Lock()
			for tp, code := range codes {
				out[tp] = code
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// writeLocal appends the marker to each partition this broker leads, in
// parallel, and waits for each to be committed.
func (t *txnCoordinator) writeLocal(ctx context.Context, producerID int64, producerEpoch int16, coordinatorEpoch int32, commit bool, tps []txn.TopicPartition) map[txn.TopicPartition]int16 {
	out := make(map[txn.TopicPartition]int16, len(tps))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tp := range tps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := localseg.Marker{ProducerID: producerID, ProducerEpoch: producerEpoch, Commit: commit, CoordinatorEpoch: coordinatorEpoch, Timestamp: time.Now().UnixMilli()}
			code := kafkaError(t.b.writeMarker(ctx, tp.Topic, tp.Partition, m))
			mu.Lock()
			out[tp] = code
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// writeRemote sends the markers for the partitions broker id leads in one
// WriteTxnMarkers. A broker that cannot be reached, or does not answer for
// a partition, gets a retriable code for it: the coordinator retries
// (with the leader the metadata names then).
func (t *txnCoordinator) writeRemote(ctx context.Context, id int32, producerID int64, producerEpoch int16, coordinatorEpoch int32, commit bool, tps []txn.TopicPartition) map[txn.TopicPartition]int16 {
	out := make(map[txn.TopicPartition]int16, len(tps))
	fail := func(code int16) map[txn.TopicPartition]int16 {
		for _, tp := range tps {
			out[tp] = code
		}
		return out
	}
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	req.Version = peerWriteTxnMarkersVersion
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch = producerID, producerEpoch, commit, coordinatorEpoch
	byTopic := map[string]int{}
	for _, tp := range tps {
		i, ok := byTopic[tp.Topic]
		if !ok {
			i = len(m.Topics)
			byTopic[tp.Topic] = i
			mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
			mt.Topic = tp.Topic
			m.Topics = append(m.Topics, mt)
		}
		m.Topics[i].Partitions = append(m.Topics[i].Partitions, tp.Partition)
	}
	req.Markers = append(req.Markers, m)
	pc, err := t.peer(ctx, id)
	if err != nil {
		t.b.log.Debug("cannot reach a partition leader for transaction markers", "broker", id, "err", err)
		return fail(kerr.NotLeaderForPartition.Code)
	}
	ctx, cancel := context.WithTimeout(ctx, markerRequestTimeout)
	defer cancel()
	r, err := pc.Request(ctx, req)
	if err != nil {
		pc.Close()
		return fail(kerr.RequestTimedOut.Code)
	}
	t.putPeer(id, pc)
	resp := r.(*kmsg.WriteTxnMarkersResponse)
	fail(kerr.RequestTimedOut.Code)
	for _, rm := range resp.Markers {
		if rm.ProducerID != producerID {
			continue
		}
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				tp := txn.TopicPartition{Topic: rt.Topic, Partition: rp.Partition}
				if _, ok := out[tp]; ok {
					out[tp] = rp.ErrorCode
				}
			}
		}
	}
	return out
}

// markerRequestTimeout bounds one WriteTxnMarkers to another broker: the
// markers are appended acks=all there.
const markerRequestTimeout = 30 * time.Second

// peerWriteTxnMarkersVersion is the version brokers send (v1 is flexible).
const peerWriteTxnMarkersVersion = 1

// peer takes an idle connection to broker id, or dials one.
func (t *txnCoordinator) peer(ctx context.Context, id int32) (*peerClient, error) {
	t.peersMu.Lock()
	if idle := t.peers[id]; len(idle) > 0 {
		pc := idle[len(idle)-1]
		t.peers[id] = idle[:len(idle)-1]
		t.peersMu.Unlock()
		return pc, nil
	}
	t.peersMu.Unlock()
	bv, ok := t.b.meta.snapshot().broker(id)
	if !ok {
		return nil, fmt.Errorf("broker %d is not registered", id)
	}
	addr := net.JoinHostPort(bv.host, strconv.Itoa(int(bv.port)))
	return dialPeer(ctx, t.b.cfg.DialPeer, t.b.peerTLS(), addr, t.b.cfg.NodeID, t.b.secret)
}

// putPeer keeps a connection that answered for the next transaction.
func (t *txnCoordinator) putPeer(id int32, pc *peerClient) {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	if t.peers == nil || len(t.peers[id]) >= maxIdleMarkerConns {
		pc.Close()
		return
	}
	t.peers[id] = append(t.peers[id], pc)
}

func (t *txnCoordinator) closePeers() {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	for _, idle := range t.peers {
		for _, pc := range idle {
			pc.Close()
		}
	}
	t.peers = nil
}

// writeMarker appends a transaction marker to a partition this broker
// leads and waits until it is committed (acks=all, as Kafka appends
// markers). A marker on __consumer_offsets then completes the producer's
// transactional offset commits there.
func (b *Broker) writeMarker(ctx context.Context, topic string, index int32, m localseg.Marker) error {
	p, err := b.partitionByName(topic, index)
	if err != nil {
		return err
	}
	res, err := p.appendMarker(m)
	if err != nil {
		return err
	}
	l := offsetsLog{p: p}
	if err := l.waitCommitted(ctx, res.LastOffset+1); err != nil {
		return unwrapCoordinatorLog(err)
	}
	if topic == offsetsTopic && b.groups != nil {
		b.groups.c.CompleteTxn(index, m.ProducerID, m.Commit, res.LastOffset)
	}
	if p.tier != nil {
		// The last stable offset may have moved past sealed segments
		// the uploader waits for: uploads stop there.
		p.tier.poke()
	}
	return nil
}

// unwrapCoordinatorLog undoes offsetsLogError's wrapping for an error
// that goes to a client: its cause is the partition's.
func unwrapCoordinatorLog(err error) error {
	if errors.Is(err, group.ErrNotLeader) {
		return errNotLeader
	}
	return err
}

// txnLog adapts a __transaction_state partition this broker leads to
// txn.Log: the offsets topic's adapter, its errors named for package txn.
type txnLog struct{ l offsetsLog }

var _ txn.Log = txnLog{}

func (t txnLog) Append(ctx context.Context, records []recordbatch.Record) (int64, error) {
	off, err := t.l.Append(ctx, records)
	return off, txnLogError(err)
}

func (t txnLog) Scan(ctx context.Context, fn func(recordbatch.Batch) error) error {
	return txnLogError(t.l.Scan(ctx, fn))
}

func (t txnLog) DeleteBefore(offset int64) error { return t.l.DeleteBefore(offset) }

func (t txnLog) Leads() bool { return t.l.Leads() }

func txnLogError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, group.ErrNotLeader):
		return fmt.Errorf("%w: %w", txn.ErrNotLeader, err)
	case errors.Is(err, group.ErrRecordTooLarge):
		return fmt.Errorf("%w: %w", txn.ErrRecordTooLarge, err)
	}
	return err
}

// txnProducerIDs hands the coordinator producer ids from the broker's
// allocator.
type txnProducerIDs struct{ b *Broker }

func (p txnProducerIDs) NextProducerID(ctx context.Context) (int64, error) {
	return p.b.producerIDs.next(ctx)
}

// txnTopics answers the coordinator's partition counts from the metadata.
type txnTopics struct{ b *Broker }

func (t txnTopics) Partitions(topic string) (int32, bool) {
	tv := t.b.meta.snapshot().topics[topic]
	if tv == nil {
		return 0, false
	}
	return int32(len(tv.partitions)), true
}
