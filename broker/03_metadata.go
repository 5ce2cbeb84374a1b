package broker

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/controller"
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
		go func() { r.respond(b.tellPeerOfLease(r, b.metadataResponse(r, req, true))) }()
		return nil
	}
	return b.tellPeerOfLease(r, b.metadataResponse(r, req, false))
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

// metadataResponse answers req as Kafka's KafkaApis does with ACLs: a
// topic the request names that the client may not describe answers
// TOPIC_AUTHORIZATION_FAILED, existing or not, and a listing of all topics
// leaves it out; a missing topic is auto-created only for a client that
// may create it.
func (b *Broker) metadataResponse(r *request, req *kmsg.MetadataRequest, autoCreate bool) *kmsg.MetadataResponse {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	// DESCRIBE on each topic named, asked once per topic.
	describable := newACLVerdicts(r, acl.Describe, acl.Topic)
	mayDescribe := describable.allowed
	created := map[string]error{}
	if autoCreate {
		ctx, cancel := context.WithTimeout(r.ctx(), 30*time.Second)
		defer cancel()
		// CREATE on the cluster (not logged: CREATE on the topic will do).
		createAny := r.conn.allowed(acl.Create, acl.Cluster, acl.ClusterName)
		for _, t := range req.Topics {
			if t.Topic == nil {
				continue
			}
			name := *t.Topic
			if _, done := created[name]; done || !mayDescribe(name) {
				continue
			}
			if _, ok := b.meta.snapshot().topics[name]; ok {
				continue
			}
			// CREATE on the cluster or on the topic.
			if !createAny && !r.authorizedTopic(acl.Create, name) {
				created[name] = errTopicAuthorization
				continue
			}
			created[name] = b.autoCreateTopic(ctx, name)
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
	if req.IncludeClusterAuthorizedOperations {
		resp.AuthorizedOperations = r.clusterAuthorizedOperations()
	}
	withOperations := func(mt kmsg.MetadataResponseTopic) kmsg.MetadataResponseTopic {
		if req.IncludeTopicAuthorizedOperations && mt.Topic != nil {
			mt.AuthorizedOperations = r.authorizedOperations(acl.Topic, *mt.Topic, topicOperations)
		}
		return mt
	}

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, name := range view.sortedTopicNames() {
			// DESCRIBE on the topic, else it is left out (not logged:
			// the client did not name it).
			if !r.conn.allowed(acl.Describe, acl.Topic, name) {
				continue
			}
			resp.Topics = append(resp.Topics, withOperations(b.describeTopic(view, view.topics[name], req)))
		}
		return resp
	}
	for _, rt := range req.Topics {
		var tv *topicView
		mt := kmsg.NewMetadataResponseTopic()
		mt.AuthorizedOperations = noAuthorizedOperations
		refused := false
		switch {
		case rt.Topic != nil:
			mt.Topic = rt.Topic
			if !mayDescribe(*rt.Topic) || errors.Is(created[*rt.Topic], errTopicAuthorization) {
				refused = true // whether it exists is not told
				break
			}
			tv = view.topics[*rt.Topic]
			if tv == nil {
				mt.ErrorCode = view.missingTopicError(*rt.Topic)
				if err, ok := created[*rt.Topic]; ok && err != nil && !errors.Is(err, errTopicExists) && mt.ErrorCode == kerr.UnknownTopicOrPartition.Code {
					mt.ErrorCode = kafkaError(err)
				}
			}
		case rt.TopicID != [16]byte{}:
			mt.TopicID = rt.TopicID
			tv = view.topicsByID[rt.TopicID]
			if tv == nil {
				mt.ErrorCode = kerr.UnknownTopicID.Code
			} else if !mayDescribe(tv.name) {
				refused, tv = true, nil // the id answers, not the name
			}
		default:
			mt.ErrorCode = kerr.InvalidRequest.Code
		}
		switch {
		case refused:
			mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
		case tv != nil:
			mt = withOperations(b.describeTopic(view, tv, req))
		default:
			mt = withOperations(mt)
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
	described, _ := b.describePartitions(view, tv, 0, math.MaxInt)
	mt.Partitions = make([]kmsg.MetadataResponseTopicPartition, 0, len(described))
	for _, dp := range described {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.ErrorCode = dp.errorCode
		mp.Partition = dp.index
		mp.Leader = dp.leader
		mp.LeaderEpoch = dp.leaderEpoch
		mp.Replicas = dp.replicas
		mp.ISR = dp.isr
		mp.OfflineReplicas = dp.offline
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}

// missingTopicError is the error for a topic name the metadata lacks:
// INVALID_TOPIC_EXCEPTION for a name Kafka refuses, LEADER_NOT_AVAILABLE
// for a topic whose record cannot be decoded (offline, not unknown, and
// not auto-created over), UNKNOWN_TOPIC_OR_PARTITION otherwise.
func (v *metaView) missingTopicError(name string) int16 {
	if err := validateTopicName(name); err != nil {
		return kerr.InvalidTopicException.Code
	}
	if v.unreadableReason(name, -1) != "" {
		return kerr.LeaderNotAvailable.Code
	}
	return kerr.UnknownTopicOrPartition.Code
}

// describedPartition is what this broker tells clients of one partition, in
// Metadata and DescribeTopicPartitions alike.
type describedPartition struct {
	index       int32
	errorCode   int16
	leader      int32 // -1: none that clients can reach
	leaderEpoch int32
	replicas    []int32
	isr         []int32
	eligible    []int32 // the eligible leader replicas (KIP-966)
	// offline are the replicas that cannot be served: on brokers that
	// are not registered, or this broker's own when its log failed.
	offline []int32
}

// describePartitions describes tv's partitions from index from on, in index
// order, at most limit of them; those whose records cannot be decoded are
// among them, offline. next is the index of the first one the limit left
// out (-1: none).
func (b *Broker) describePartitions(view *metaView, tv *topicView, from int32, limit int) (described []describedPartition, next int32) {
	var undecodable []int32
	for index := range view.unreadable[tv.name] {
		if index >= from && index >= 0 {
			undecodable = append(undecodable, index)
		}
	}
	slices.Sort(undecodable)
	// tv.partitions is in index order (metadata.TopicState).
	i, _ := slices.BinarySearchFunc(tv.partitions, from, func(pv partitionView, index int32) int { return cmp.Compare(pv.index, index) })
	parts := tv.partitions[i:]
	described = make([]describedPartition, 0, min(limit, len(parts)+len(undecodable)))
	for {
		switch {
		case len(parts) > 0 && (len(undecodable) == 0 || parts[0].index < undecodable[0]):
			if len(described) == limit {
				return described, parts[0].index
			}
			described = append(described, b.describePartition(view, tv, parts[0]))
			parts = parts[1:]
		case len(undecodable) > 0:
			if len(described) == limit {
				return described, undecodable[0]
			}
			described = append(described, describedPartition{index: undecodable[0], errorCode: kerr.LeaderNotAvailable.Code, leader: -1, leaderEpoch: -1, offline: []int32{}})
			undecodable = undecodable[1:]
		default:
			return described, -1
		}
	}
}

// describePartition describes pv, one of tv's partitions, as this broker
// sees it.
func (b *Broker) describePartition(view *metaView, tv *topicView, pv partitionView) describedPartition {
	dp := describedPartition{
		index:       pv.index,
		leader:      pv.leader,
		leaderEpoch: pv.leaderEpoch,
		replicas:    pv.replicas,
		isr:         pv.isr,
		eligible:    pv.eligible,
	}
	if len(pv.eligible) > 0 && int32(len(pv.isr)) >= controller.MinInsyncReplicas(tv.configs, b.replicas.brokerConfig) {
		// Left over from a larger min.insync.replicas, until the
		// controller's next round drops them: eligible no longer (as
		// Kafka clears them on the config change itself).
		dp.eligible = nil
	}
	if sup := b.supersededView(tv.name, pv.index, pv.leader, pv.leaderEpoch); sup != nil {
		// This broker's leadership is over (a follower's metadata
		// says so) though its own metadata, cut from etcd, lags.
		dp.leader, dp.leaderEpoch, dp.replicas, dp.isr = sup.leader, sup.leaderEpoch, sup.replicas, sup.isr
	} else if pv.leader == b.cfg.NodeID && b.leadershipLapsed(tv.name, pv.index) {
		// Nor can it prove its leadership (and refuses produce):
		// no leader, so that the client asks another broker.
		dp.leader, dp.errorCode = -1, kerr.LeaderNotAvailable.Code
	}
	dp.offline = []int32{}
	for _, id := range dp.replicas {
		if _, ok := view.broker(id); !ok {
			dp.offline = append(dp.offline, id)
		} else if id == b.cfg.NodeID && b.replicas.offline.errOf(partitionKey{tv.name, pv.index}) != nil {
			// This broker's replica cannot be served: its log
			// failed or cannot open (produce and fetch answer
			// KAFKA_STORAGE_ERROR).
			dp.offline = append(dp.offline, id)
		}
	}
	if _, ok := view.broker(pv.leader); !ok {
		dp.errorCode = kerr.LeaderNotAvailable.Code
		dp.leader = -1
	}
	return dp
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
