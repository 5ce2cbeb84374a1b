package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	// Kafka 4 dropped DeleteTopics v0.
	handler(kmsg.DeleteTopics, 1, 6, handleDeleteTopics)
}

// handleDeleteTopics removes topics from the metadata; every broker then
// closes and deletes its replicas' logs.
func handleDeleteTopics(b *Broker, r *request, req *kmsg.DeleteTopicsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), req.TimeoutMillis)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
		targets := req.Topics
		for _, name := range req.TopicNames { // v0-v5
			n := name
			targets = append(targets, kmsg.DeleteTopicsRequestTopic{Topic: &n})
		}
		// controller_mutation_rate: v5 and later may be refused.
		admit, throttle := r.mutationGate(req.Version >= 5)
		for _, t := range targets {
			st := kmsg.NewDeleteTopicsResponseTopic()
			st.Topic, st.TopicID = t.Topic, t.TopicID
			view := b.meta.snapshot()
			var tv *topicView
			var err error
			switch {
			// DELETE on the topic, asked before whether it exists.
			case t.Topic != nil && !r.authorizedTopic(acl.Delete, *t.Topic):
				err = errTopicAuthorization
			case t.Topic != nil:
				if tv = view.topics[*t.Topic]; tv == nil {
					err = fmt.Errorf("%w: %s", errUnknownTopic, *t.Topic)
				}
			case t.TopicID != [16]byte{}:
				if tv = view.topicsByID[t.TopicID]; tv == nil {
					err = errUnknownTopicID
				} else if !r.authorizedTopic(acl.Describe, tv.name) || !r.authorizedTopic(acl.Delete, tv.name) {
					// DESCRIBE and DELETE on the topic the id
					// names; refused, the answer does not name it.
					err = errTopicAuthorization
				}
			default:
				err = fmt.Errorf("%w: neither a topic name nor an id", errInvalidRequest)
			}
			if err == nil && tv.internal {
				err = fmt.Errorf("%w: %s is an internal topic", errInvalidRequest, tv.name)
			}
			if err == nil {
				name := tv.name
				st.Topic, st.TopicID = &name, tv.id
				err = admit(len(tv.partitions))
			}
			if err == nil {
				var rev int64
				if rev, err = b.meta.deleteTopic(ctx, tv.name); err == nil {
					b.log.Info("topic deleted", append([]any{"topic", tv.name, "topic_id", topicIDString(tv.id)}, r.clientAttrs()...)...)
					err = b.waitApplied(ctx, rev)
				}
			}
			if err != nil {
				st.ErrorCode = kafkaError(err)
				st.ErrorMessage = errorMessage(err)
			}
			resp.Topics = append(resp.Topics, st)
		}
		setThrottle(resp, throttle())
		r.respond(resp)
	}()
	return nil
}
