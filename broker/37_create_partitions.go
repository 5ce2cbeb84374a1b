package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.CreatePartitions, 0, 3, handleCreatePartitions)
}

func handleCreatePartitions(b *Broker, r *request, req *kmsg.CreatePartitionsRequest) kmsg.Response {
	go func() {
		ctx, cancel := adminContext(r.ctx(), req.TimeoutMillis)
		defer cancel()
		resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
		budget := newPartitionBudget()
		for _, t := range req.Topics {
			st := kmsg.NewCreatePartitionsResponseTopic()
			st.Topic = t.Topic
			if err := createPartitions(ctx, b, &t, req.ValidateOnly, budget); err != nil {
				st.ErrorCode = kafkaError(err)
				st.ErrorMessage = errorMessage(err)
			}
			resp.Topics = append(resp.Topics, st)
		}
		r.respond(resp)
	}()
	return nil
}

func createPartitions(ctx context.Context, b *Broker, t *kmsg.CreatePartitionsRequestTopic, validateOnly bool, budget *partitionBudget) error {
	view := b.meta.snapshot()
	tv := view.topics[t.Topic]
	if tv == nil {
		return fmt.Errorf("%w: %s", errUnknownTopic, t.Topic)
	}
	have := int32(len(tv.partitions))
	if t.Count <= have {
		return fmt.Errorf("%w: topic has %d partitions, asked for %d; partitions can only be added", errInvalidPartitions, have, t.Count)
	}
	add := t.Count - have
	rf := int16(len(tv.partitions[0].replicas))
	// Bounded before anything is sized by the count.
	if err := budget.take(int64(add)); err != nil {
		return err
	}
	if err := b.checkBrokerPartitions(view, int64(add), int64(rf)); err != nil {
		return err
	}
	var newParts []partitionView
	if t.Assignment != nil {
		if int32(len(t.Assignment)) != add {
			return fmt.Errorf("%w: %d assignments for %d new partitions", errInvalidReplicaAssignment, len(t.Assignment), add)
		}
		live := view.brokerIDs()
		for i, a := range t.Assignment {
			if len(a.Replicas) != int(rf) {
				return fmt.Errorf("%w: new partitions need %d replicas", errInvalidReplicaAssignment, rf)
			}
			for j, id := range a.Replicas {
				if slices.Contains(a.Replicas[:j], id) || !slices.Contains(live, id) {
					return fmt.Errorf("%w: broker %d is duplicated or not live", errInvalidReplicaAssignment, id)
				}
			}
			newParts = append(newParts, partitionView{index: have + int32(i), replicas: a.Replicas, isr: slices.Clone(a.Replicas), leader: a.Replicas[0]})
		}
	} else {
		var err error
		if newParts, err = placeReplicas(view, have, add, rf, randomStart(len(view.brokers))); err != nil {
			return fmt.Errorf("%w: %w", errInvalidReplicationFactor, err)
		}
	}
	if validateOnly {
		return nil
	}
	rev, err := b.meta.createPartitions(ctx, t.Topic, int(have), newParts)
	if err != nil {
		return err
	}
	return b.waitOpened(ctx, rev, t.Topic)
}
