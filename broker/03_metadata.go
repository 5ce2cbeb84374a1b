package broker

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.Metadata, 0, 13, handleMetadata)
}

// noAuthorizedOperations is Kafka's "not requested" value for the
// authorized-operations fields.
const noAuthorizedOperations = -2147483648

func handleMetadata(b *Broker, r *request, req *kmsg.MetadataRequest) kmsg.Response {
	// Auto-creation waits on etcd; do it off the connection's reader.
	if b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation) && b.hasUnknownNames(req) {
		go func() { r.respond(b.tellPeerOfLease(r, b.metadataResponse(r.ctx(), req, true))) }()
		return nil
	}
	return b.tellPeerOfLease(r, b.metadataResponse(r.ctx(), req, false))
}

// tellPeerOfLease marks an answer to another broker (a leader whose own
// lease is out, asking for its followers' word: superseded.go) with
// leaseProvenTag when this broker's lease is proven as it answers, and it
// has not asked to leave the ISRs (a controlled shutdown): the controller
// keeps it in them when it elects another leader.
func (b *Broker) tellPeerOfLease(r *request, resp *kmsg.MetadataResponse) *kmsg.MetadataResponse {
	if r.conn.peer.Load() != 0 && resp.IsFlexible() && !b.shutdownAsked.Load() && time.Now().Before(b.leaseProvenUntil()) {
		resp.UnknownTags.Set(leaseProvenTag, []byte{1})
	}
	return resp
}

func (b *Broker) hasUnknownNames(req *kmsg.MetadataRequest) bool {
	view := b.meta.snapshot()
	for _, t := range req.Topics {
		if t.Topic != nil {
			if _, ok := view.topics[*t.Topic]; !ok {
				return true
			}
		}
	}
	return false
}

func (b *Broker) metadataResponse(ctx context.Context, req *kmsg.MetadataRequest, autoCreate bool) *kmsg.MetadataResponse {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	created := map[string]error{}
	if autoCreate {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for _, t := range req.Topics {
			if t.Topic == nil {
				continue
			}
			if _, ok := b.meta.snapshot().topics[*t.Topic]; ok {
				continue
			}
			created[*t.Topic] = b.autoCreateTopic(ctx, *t.Topic)
		}
	}
	view := b.meta.snapshot()
	for _, br := range view.brokers {
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port, mb.Rack = br.id, br.host, br.port, br.rack
		resp.Brokers = append(resp.Brokers, mb)
	}
	resp.ClusterID = &view.clusterID
	resp.ControllerID = view.controllerID
	resp.AuthorizedOperations = noAuthorizedOperations

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, name := range view.sortedTopicNames() {
			resp.Topics = append(resp.Topics, b.describeTopic(view, view.topics[name], req))
		}
		return resp
	}
	for _, rt := range req.Topics {
		var tv *topicView
		mt := kmsg.NewMetadataResponseTopic()
		mt.AuthorizedOperations = noAuthorizedOperations
		switch {
		case rt.Topic != nil:
			mt.Topic = rt.Topic
			tv = view.topics[*rt.Topic]
			if tv == nil {
				mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
				if err := validateTopicName(*rt.Topic); err != nil {
					mt.ErrorCode = kerr.InvalidTopicException.Code
				} else if r := view.unreadableReason(*rt.Topic, -1); r != "" {
					// Its record cannot be decoded: offline, not unknown
					// (and not auto-created over).
					mt.ErrorCode = kerr.LeaderNotAvailable.Code
				} else if err, ok := created[*rt.Topic]; ok && err != nil && !errors.Is(err, errTopicExists) {
					mt.ErrorCode = kafkaError(err)
				}
			}
		case rt.TopicID != [16]byte{}:
			mt.TopicID = rt.TopicID
			tv = view.topicsByID[rt.TopicID]
			if tv == nil {
				mt.ErrorCode = kerr.UnknownTopicID.Code
			}
		default:
			mt.ErrorCode = kerr.InvalidRequest.Code
		}
		if tv != nil {
			mt = b.describeTopic(view, tv, req)
		}
		resp.Topics = append(resp.Topics, mt)
	}
	return resp
}

func (b *Broker) describeTopic(view *metaView, tv *topicView, req *kmsg.MetadataRequest) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	name := tv.name
	mt.Topic = &name
	mt.TopicID = tv.id
	mt.IsInternal = tv.internal
	mt.AuthorizedOperations = noAuthorizedOperations
	for _, pv := range tv.partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = pv.index
		mp.Leader = pv.leader
		mp.LeaderEpoch = pv.leaderEpoch
		mp.Replicas = pv.replicas
		mp.ISR = pv.isr
		if sup := b.supersededView(tv.name, pv.index, pv.leader, pv.leaderEpoch); sup != nil {
			// This broker's leadership is over (a follower's metadata
			// says so) though its own metadata, cut from etcd, lags.
			mp.Leader, mp.LeaderEpoch, mp.Replicas, mp.ISR = sup.leader, sup.leaderEpoch, sup.replicas, sup.isr
		} else if pv.leader == b.cfg.NodeID && b.leadershipLapsed(tv.name, pv.index) {
			// Nor can it prove its leadership (and refuses produce):
			// no leader, so that the client asks another broker.
			mp.Leader, mp.ErrorCode = -1, kerr.LeaderNotAvailable.Code
		}
		mp.OfflineReplicas = []int32{}
		for _, id := range mp.Replicas {
			if _, ok := view.broker(id); !ok {
				mp.OfflineReplicas = append(mp.OfflineReplicas, id)
			} else if id == b.cfg.NodeID && b.replicas.offline.errOf(partitionKey{tv.name, pv.index}) != nil {
				// This broker's replica cannot be served: its log
				// failed or cannot open (produce and fetch answer
				// KAFKA_STORAGE_ERROR).
				mp.OfflineReplicas = append(mp.OfflineReplicas, id)
			}
		}
		if _, ok := view.broker(pv.leader); !ok {
			mp.ErrorCode = kerr.LeaderNotAvailable.Code
			mp.Leader = -1
		}
		mt.Partitions = append(mt.Partitions, mp)
	}
	// Partitions whose records cannot be decoded are offline.
	for index := range view.unreadable[tv.name] {
		if index < 0 {
			continue
		}
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = index
		mp.Leader = -1
		mp.ErrorCode = kerr.LeaderNotAvailable.Code
		mp.OfflineReplicas = []int32{}
		mt.Partitions = append(mt.Partitions, mp)
	}
	slices.SortFunc(mt.Partitions, func(a, b kmsg.MetadataResponseTopicPartition) int { return int(a.Partition) - int(b.Partition) })
	return mt
}

// autoCreateTopic creates a topic with the broker's defaults, as
// auto.create.topics.enable does, and waits until this broker serves it.
func (b *Broker) autoCreateTopic(ctx context.Context, name string) error {
	if err := validateTopicName(name); err != nil {
		return err
	}
	view := b.meta.snapshot()
	rf := b.cfg.DefaultReplicationFactor
	if n := int16(len(view.brokers)); rf > n {
		rf = n
	}
	_, err := b.createTopic(ctx, name, b.cfg.NumPartitions, rf, nil, nil, false)
	return err
}
