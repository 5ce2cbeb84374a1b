package broker

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.AlterPartitionAssignments, 0, 1, handleAlterPartitionReassignments)
}

// handleAlterPartitionReassignments starts, re-targets or (null replicas)
// cancels partition reassignments (KIP-455). Each is a compare-and-swap on
// the partition's state in etcd: the new replicas join as followers, and
// once they are all in the ISR the controller drops the removed ones (and
// moves leadership off a removed leader); the removed brokers then delete
// their copies. The answer comes once this broker has applied the start.
func handleAlterPartitionReassignments(b *Broker, r *request, req *kmsg.AlterPartitionAssignmentsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), req.TimeoutMillis)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
		allowRFChange := req.Version < 1 || req.AllowReplicationFactorChange
		resp.AllowReplicationFactorChange = allowRFChange
		var refused error
		// ALTER on the cluster; refused, every partition answers so.
		if !r.authorizedCluster(acl.Alter) {
			refused = errClusterAuthorization
			resp.ErrorCode, resp.ErrorMessage = kafkaError(refused), errorMessage(refused)
		}
		var last int64
		for _, t := range req.Topics {
			rt := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
				rp.Partition = p.Partition
				var rev int64
				err := refused
				if err == nil {
					rev, err = reassignOne(ctx, b, t.Topic, p.Partition, p.Replicas, allowRFChange)
				}
				if err != nil {
					rp.ErrorCode, rp.ErrorMessage = kafkaError(err), errorMessage(err)
				}
				last = max(last, rev)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		if last > 0 {
			if err := b.waitApplied(ctx, last); err != nil {
				resp.ErrorCode, resp.ErrorMessage = kafkaError(err), errorMessage(err)
			}
		}
		r.respond(resp)
	}()
	return nil
}

// reassignOne checks one partition's request against the metadata and
// writes it.
func reassignOne(ctx context.Context, b *Broker, topic string, index int32, target []int32, allowRFChange bool) (int64, error) {
	tv := b.meta.snapshot().topics[topic]
	if tv == nil || index < 0 || int(index) >= len(tv.partitions) {
		return 0, fmt.Errorf("%w: %s/%d", errUnknownTopic, topic, index)
	}
	pv := tv.partitions[index]
	if target != nil && !allowRFChange {
		orig := len(pv.replicas) - len(pv.adding)
		if len(target) != orig {
			return 0, fmt.Errorf("%w: %d replicas asked for a partition of %d, and the request does not allow changing it", errInvalidReplicationFactor, len(target), orig)
		}
	}
	return b.meta.reassign(ctx, topic, index, target)
}
