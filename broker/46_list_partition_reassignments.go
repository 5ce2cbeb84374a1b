package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.ListPartitionReassignments, 0, 0, handleListPartitionReassignments)
}

// handleListPartitionReassignments lists the reassignments in progress:
// of every topic when the request names none, else of the partitions it
// names (unknown ones, and those not being reassigned, are left out, as
// Kafka does). Replicas are the target followed by the replicas being
// removed.
func handleListPartitionReassignments(b *Broker, r *request, req *kmsg.ListPartitionReassignmentsRequest) kmsg.Response {
	view := b.meta.snapshot()
	resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	// DESCRIBE on the cluster.
	if !r.authorizedCluster(acl.Describe) {
		resp.ErrorCode, resp.ErrorMessage = kafkaError(errClusterAuthorization), errorMessage(errClusterAuthorization)
		return resp
	}
	add := func(tv *topicView, want func(int32) bool) {
		rt := kmsg.NewListPartitionReassignmentsResponseTopic()
		rt.Topic = tv.name
		for _, p := range tv.partitions {
			if len(p.adding) == 0 && len(p.removing) == 0 || !want(p.index) {
				continue
			}
			rp := kmsg.NewListPartitionReassignmentsResponseTopicPartition()
			rp.Partition = p.index
			rp.Replicas = slices.Clone(p.replicas)
			rp.AddingReplicas = append([]int32{}, p.adding...)
			rp.RemovingReplicas = append([]int32{}, p.removing...)
			rt.Partitions = append(rt.Partitions, rp)
		}
		if len(rt.Partitions) > 0 {
			resp.Topics = append(resp.Topics, rt)
		}
	}
	if req.Topics == nil {
		for _, name := range view.sortedTopicNames() {
			add(view.topics[name], func(int32) bool { return true })
		}
		return resp
	}
	for _, t := range req.Topics {
		if tv := view.topics[t.Topic]; tv != nil {
			add(tv, func(i int32) bool { return slices.Contains(t.Partitions, i) })
		}
	}
	return resp
}
