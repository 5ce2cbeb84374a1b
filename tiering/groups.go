package tiering

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// groupsDir holds the consumer groups' committed offsets: a directory per
// cluster (its id), an object per partition of the offsets topic. No topic
// directory has its name (a topic's ends in its id).
const groupsDir = "groups"

// maxGroupShardSize bounds what reading one partition's group offsets
// allocates: some 600 thousand committed offsets.
const maxGroupShardSize = 64 << 20

// GroupShard is the committed offsets of the groups one partition of the
// offsets topic (__consumer_offsets) of a cluster holds, as the
// partition's leader last wrote them to the bucket: what a cluster rebuilt
// from the bucket gives its groups back. Each write holds the whole
// partition, so a deleted group leaves at the next one. Each cluster
// writes under its own id: a new cluster on the bucket of a lost one does
// not overwrite what the lost one wrote before it is restored.
type GroupShard struct {
	Cluster   string `json:"cluster"`
	Partition int32  `json:"partition"`
	// Partitions is the partition count by which the cluster mapped
	// groups to partitions when it wrote the object (0: not recorded, as
	// in objects written before it was). With it, the object speaks for
	// every group that maps to Partition: one it does not name was
	// deleted, or expired, in that cluster.
	Partitions int32          `json:"partitions,omitempty"`
	Groups     []GroupOffsets `json:"groups"`
	UpdatedAt  time.Time      `json:"updated_at"`
}

// GroupOffsets is one group's committed offsets.
type GroupOffsets struct {
	Group   string        `json:"group"`
	Offsets []GroupOffset `json:"offsets"`
}

// GroupOffset is one partition's committed offset: the next record the
// group reads.
type GroupOffset struct {
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id"` // base64url, unpadded
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// GroupShardKey is the offsets object of partition shard of cluster's
// offsets topic.
func (l Layout) GroupShardKey(cluster string, shard int32) string {
	return l.join(groupsDir, cluster, strconv.Itoa(int(shard))+".json")
}

// DecodeGroupShard decodes and checks an offsets object.
func DecodeGroupShard(data []byte) (*GroupShard, error) {
	var s GroupShard
	if err := decodeJSON(data, &s); err != nil {
		return nil, err
	}
	if s.Cluster == "" || strings.Contains(s.Cluster, "/") || s.Partition < 0 || s.Partitions < 0 || (s.Partitions > 0 && s.Partition >= s.Partitions) {
		return nil, fmt.Errorf("%w: group offsets of cluster %q, partition %d", ErrCorrupt, s.Cluster, s.Partition)
	}
	for _, g := range s.Groups {
		if g.Group == "" {
			return nil, fmt.Errorf("%w: group offsets without a group", ErrCorrupt)
		}
		for _, o := range g.Offsets {
			if _, err := ParseTopicID(o.TopicID); err != nil || o.Topic == "" || o.Partition < 0 || o.Offset < 0 {
				return nil, fmt.Errorf("%w: group %q: offset %+v", ErrCorrupt, g.Group, o)
			}
		}
	}
	return &s, nil
}

// PutGroupShard writes (or replaces) a partition's group offsets.
func PutGroupShard(ctx context.Context, b objectstore.Bucket, l Layout, s GroupShard) error {
	return putJSON(ctx, b, l.GroupShardKey(s.Cluster, s.Partition), s, objectstore.PutOptions{})
}

// ListGroupShards reads the group offsets of every partition of every
// cluster in the bucket.
func ListGroupShards(ctx context.Context, b objectstore.Bucket, l Layout) ([]*GroupShard, error) {
	prefix := l.join(groupsDir) + "/"
	var keys []string
	err := b.List(ctx, prefix, func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, ".json") && strings.Count(a.Key[len(prefix):], "/") == 1 {
			keys = append(keys, a.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*GroupShard
	for _, k := range keys {
		data, err := objectstore.ReadAll(ctx, b, k, maxGroupShardSize)
		if err != nil {
			return nil, err
		}
		s, err := DecodeGroupShard(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, s)
	}
	return out, nil
}
