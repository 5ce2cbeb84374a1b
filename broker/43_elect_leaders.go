package broker

import (
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.ElectLeaders, 0, 2, handleElectLeaders)
}

// Kafka's ElectionType values (ElectLeaders v1+; v0 is preferred only).
const (
	electionPreferred int8 = 0
	electionUnclean   int8 = 1
)

// handleElectLeaders runs the elections an operator asks for (kadm
// ElectLeaders, kafka-leader-election.sh): preferred moves a partition's
// leadership to its first replica when that one is in sync; unclean gives a
// leaderless partition a leader, from outside the ISR if it must. No topics
// (null) means every partition, as in Kafka. Each partition answers on its
// own: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
// ELIGIBLE_LEADERS_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION; or, for a
// client that may not alter the cluster, CLUSTER_AUTHORIZATION_FAILED, as
// the whole answer does (v1+).
func handleElectLeaders(b *Broker, r *request, req *kmsg.ElectLeadersRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), req.TimeoutMillis)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
		// ALTER on the cluster.
		if !r.authorizedCluster(acl.Alter) {
			resp.ErrorCode = kafkaError(errClusterAuthorization)
			for _, t := range req.Topics {
				st := kmsg.NewElectLeadersResponseTopic()
				st.Topic = t.Topic
				for _, index := range t.Partitions {
					sp := kmsg.NewElectLeadersResponseTopicPartition()
					sp.Partition = index
					sp.ErrorCode, sp.ErrorMessage = kafkaError(errClusterAuthorization), errorMessage(errClusterAuthorization)
					st.Partitions = append(st.Partitions, sp)
				}
				resp.Topics = append(resp.Topics, st)
			}
			r.respond(resp)
			return
		}
		unclean := req.Version >= 1 && req.ElectionType == electionUnclean
		if req.Version >= 1 && req.ElectionType != electionPreferred && !unclean {
			resp.ErrorCode = kafkaError(fmt.Errorf("%w: election type %d", errInvalidRequest, req.ElectionType))
			r.respond(resp)
			return
		}
		topics := req.Topics
		if topics == nil {
			view := b.meta.snapshot()
			for _, tv := range view.topicList() {
				t := kmsg.NewElectLeadersRequestTopic()
				t.Topic = tv.name
				for _, pv := range tv.partitions {
					t.Partitions = append(t.Partitions, pv.index)
				}
				topics = append(topics, t)
			}
			sort.Slice(topics, func(i, j int) bool { return topics[i].Topic < topics[j].Topic })
		}
		for _, t := range topics {
			st := kmsg.NewElectLeadersResponseTopic()
			st.Topic = t.Topic
			for _, index := range t.Partitions {
				sp := kmsg.NewElectLeadersResponseTopicPartition()
				sp.Partition = index
				if err := b.meta.electLeader(ctx, t.Topic, index, unclean); err != nil {
					sp.ErrorCode = kafkaError(err)
					sp.ErrorMessage = errorMessage(err)
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		r.respond(resp)
	}()
	return nil
}
