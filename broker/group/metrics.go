package group

import "context"

// CommittedOffset is a group's committed offset for one partition.
type CommittedOffset struct {
	Group     string
	Topic     string
	Partition int32
	Offset    int64
}

// CommittedOffsets lists the committed offsets of every group of the
// loaded partitions (for metrics). Each shard copies its offsets on its own
// goroutine; a shard that does not answer before ctx ends is left out.
func (c *Coordinator) CommittedOffsets(ctx context.Context) []CommittedOffset {
	var all []CommittedOffset
	for _, offs := range c.ShardOffsets(ctx) {
		all = append(all, offs...)
	}
	return all
}

// ShardOffsets is CommittedOffsets by the offsets topic's partition that
// holds them: every loaded partition that answered before ctx ended, with
// its groups' offsets (an empty slice when it holds none).
func (c *Coordinator) ShardOffsets(ctx context.Context) map[int32][]CommittedOffset {
	shards, _ := c.allShards()
	waits := make([]func() ([]CommittedOffset, int16), 0, len(shards))
	for _, s := range shards {
		waits = append(waits, submit(ctx, s, func(reply func([]CommittedOffset)) {
			out := []CommittedOffset{}
			for id, e := range s.groups {
				if e.dead {
					continue
				}
				for tp, o := range e.offsets {
					out = append(out, CommittedOffset{Group: id, Topic: tp.topic, Partition: tp.partition, Offset: o.offset})
				}
			}
			reply(out)
		}))
	}
	all := make(map[int32][]CommittedOffset, len(shards))
	for i, wait := range waits {
		if offs, code := wait(); code == 0 {
			all[shards[i].partition] = offs
		}
	}
	return all
}
