package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.OffsetForLeaderEpoch, 2, 4, handleOffsetForLeaderEpoch)
}

// handleOffsetForLeaderEpoch tells a follower or a consumer (KIP-320) where
// an epoch ended in the leader's log, so it can detect and cut a divergent
// tail.
func handleOffsetForLeaderEpoch(b *Broker, r *request, req *kmsg.OffsetForLeaderEpochRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	remote, cancel := b.remoteLookups(r.ctx())
	defer cancel()
	// CLUSTER_ACTION (a broker's, refusal not logged), else DESCRIBE on each topic (KIP-320).
	clusterAction := r.conn.allowed(acl.ClusterAction, acl.Cluster, acl.ClusterName)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		describable := clusterAction || r.authorizedTopic(acl.Describe, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LeaderEpoch, sp.EndOffset = -1, -1
			var p *partition
			err := errTopicAuthorization
			if describable {
				p, err = b.partitionByName(rt.Topic, rp.Partition)
			}
			if err == nil {
				err = p.checkLeader(rp.CurrentLeaderEpoch)
			}
			if err == nil && req.ReplicaID < 0 && p.leadershipLapsed() {
				err = errLeadershipUnproven
			}
			var (
				epoch int32
				end   int64
				ok    bool
			)
			if err == nil {
				epoch, end, ok, err = p.endOffsetForEpoch(remote, rp.LeaderEpoch)
			}
			switch {
			case err != nil:
				sp.ErrorCode = kafkaError(err)
			case ok:
				sp.LeaderEpoch, sp.EndOffset = epoch, end
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
