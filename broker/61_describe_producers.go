package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeProducers, 0, 0, handleDescribeProducers)
}

// handleDescribeProducers lists, for each partition asked about, the
// producers its leader's log remembers: the ids whose sequence numbers it
// checks (idempotent producers, until producer.id.expiration.ms passes
// without a batch from them), each with its epoch, last sequence and last
// timestamp, as Kafka's leader answers (KIP-664; kafka-transactions.sh
// describe-producers). Only the leader answers, as in Kafka: a replica
// that follows is NOT_LEADER_OR_FOLLOWER.
func handleDescribeProducers(b *Broker, r *request, req *kmsg.DescribeProducersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewDescribeProducersResponseTopic()
		st.Topic = rt.Topic
		// READ on the topic.
		readable := r.authorizedTopic(acl.Read, rt.Topic)
		for _, index := range rt.Partitions {
			sp := kmsg.NewDescribeProducersResponseTopicPartition()
			sp.Partition = index
			var p *partition
			err := errTopicAuthorization
			if readable {
				p, err = b.partitionByName(rt.Topic, index)
			}
			if err == nil {
				err = p.checkLeader(-1)
			}
			if err != nil {
				sp.ErrorCode = kafkaError(err)
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			for _, pr := range p.log.Producers() {
				ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				ap.ProducerID, ap.ProducerEpoch = pr.ID, int32(pr.Epoch)
				ap.LastSequence, ap.LastTimestamp = pr.LastSequence, pr.LastTimestamp
				ap.CoordinatorEpoch, ap.CurrentTxnStartOffset = pr.CoordinatorEpoch, pr.CurrentTxnStartOffset
				sp.ActiveProducers = append(sp.ActiveProducers, ap)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
