package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
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
		// controller_mutation_rate: v3 and later may be refused.
		admit, throttle := r.mutationGate(req.Version >= 3)
		for _, t := range req.Topics {
			st := kmsg.NewCreatePartitionsResponseTopic()
			st.Topic = t.Topic
			var err error
			// ALTER on the topic, asked before whether it exists.
			if !r.authorizedTopic(acl.Alter, t.Topic) {
				err = errTopicAuthorization
			} else {
				err = createPartitions(ctx, b, &t, req.ValidateOnly, budget, admit)
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

func createPartitions(ctx context.Context, b *Broker, t *kmsg.CreatePartitionsRequestTopic, validateOnly bool, budget *partitionBudget, admit func(int) error) error {
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
		if newParts, err = placeAdded(view, tv, add, rf); err != nil {
			return fmt.Errorf("%w: %w", errInvalidReplicationFactor, err)
		}
	}
	if validateOnly {
		return nil
	}
	if err := admit(int(add)); err != nil {
		return err
	}
	rev, err := b.meta.createPartitions(ctx, t.Topic, int(have), newParts)
	if err != nil {
		return err
	}
	return b.waitOpened(ctx, rev, t.Topic)
}

// placeAdded places add new partitions of tv over the live brokers so
// that the topic's preferred leaders stay spread as it grows: each new
// partition is led by the live broker that is the preferred leader of
// the fewest of the topic's partitions so far (among equals, the first
// after the previous partition's leader in placement order, so that a
// balanced topic continues its round-robin), and its other replicas
// follow it in placement order, as placeReplicas places them. A random
// start for each request, as at topic creation, piles leaderships up
// over several additions: three of four partitions added one at a time
// to a balanced topic on three brokers could all land on one of them.
func placeAdded(view *metaView, tv *topicView, add int32, rf int16) ([]partitionView, error) {
	order := view.placementOrder()
	n := len(order)
	led := map[int32]int{}
	for _, p := range tv.partitions {
		if len(p.replicas) > 0 {
			led[p.replicas[0]]++
		}
	}
	prev := -1
	if last := tv.partitions[len(tv.partitions)-1]; len(last.replicas) > 0 {
		prev = slices.Index(order, last.replicas[0])
	}
	have := int32(len(tv.partitions))
	out := make([]partitionView, 0, add)
	for i := range add {
		pos := -1
		for k := 1; k <= n; k++ {
			at := (prev + k) % n
			if pos < 0 || led[order[at]] < led[order[pos]] {
				pos = at
			}
		}
		if pos < 0 {
			pos = 0
		}
		idx := have + i
		// placeReplicas puts partition idx's first replica at
		// position (start+idx) mod n.
		start := ((pos-int(idx))%max(n, 1) + max(n, 1)) % max(n, 1)
		p, err := placeReplicas(view, idx, 1, rf, start, placementShift(view, out, idx, 1, rf, start))
		if err != nil {
			return nil, err
		}
		out = append(out, p[0])
		led[p[0].replicas[0]]++
		prev = pos
	}
	return out, nil
}
