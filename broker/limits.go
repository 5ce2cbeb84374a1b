package broker

import (
	"errors"
	"fmt"
)

// maxPartitionsPerRequest bounds the partitions one admin request may
// create or add, over all its topics, as Kafka's controller bounds one
// operation to 10,000 records. It is checked before anything is sized by
// the count, and keeps every metadata write within etcd's transaction
// limits (see metadata.EmbeddedConfig).
const maxPartitionsPerRequest = 10000

// errPolicyViolation: a request asks for more than the broker's limits
// allow (POLICY_VIOLATION, as Kafka answers an oversized batch).
var errPolicyViolation = errors.New("broker: request exceeds a limit")

// partitionBudget is what is left of maxPartitionsPerRequest while one
// request's topics are planned.
type partitionBudget struct{ left int64 }

func newPartitionBudget() *partitionBudget { return &partitionBudget{left: maxPartitionsPerRequest} }

// take reserves n partitions, or refuses when the request would exceed the
// limit. A nil budget (auto-creation, internal topics) refuses only a
// single count above the limit.
func (pb *partitionBudget) take(n int64) error {
	if n < 0 {
		n = 0 // refused by the caller's own checks
	}
	left := int64(maxPartitionsPerRequest)
	if pb != nil {
		left = pb.left
	}
	if n > left {
		return fmt.Errorf("%w: excessively large number of partitions per request (%d asked, at most %d per request)", errPolicyViolation, n, maxPartitionsPerRequest)
	}
	if pb != nil {
		pb.left -= n
	}
	return nil
}

// checkBrokerPartitions refuses adding count partitions of rf replicas
// each when the live brokers would then host more replicas than
// MaxBrokerPartitions each on average (max.broker.partitions). It counts
// before any assignment is built.
func (b *Broker) checkBrokerPartitions(view *metaView, count int64, rf int64) error {
	limit := b.cfg.MaxBrokerPartitions
	if limit <= 0 || len(view.brokers) == 0 {
		return nil
	}
	var have int64
	for _, tv := range view.topics {
		for i := range tv.partitions {
			have += int64(len(tv.partitions[i].replicas))
		}
	}
	capacity := limit * int64(len(view.brokers))
	if have+count*rf > capacity {
		return fmt.Errorf("%w: %d more replicas would exceed max.broker.partitions=%d on %d brokers (%d hosted)", errPolicyViolation, count*rf, limit, len(view.brokers), have)
	}
	return nil
}
