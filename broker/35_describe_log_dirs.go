package broker

import (
	"path/filepath"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	// Kafka 4 dropped DescribeLogDirs v0.
	handler(kmsg.DescribeLogDirs, 1, 4, handleDescribeLogDirs)
}

// handleDescribeLogDirs answers for the broker's one log directory: the
// size of each hosted partition's local log (tiered segments already
// deleted locally are not counted), how far a follower's log end is behind
// the high watermark (OffsetLag, as Kafka reports it), and from v4 the
// directory's filesystem size and the space left to this process
// (KIP-827). Null topics ask for every hosted partition; partitions this
// broker does not host are left out, as Kafka does. A client that may not
// describe the cluster gets no directory: CLUSTER_AUTHORIZATION_FAILED from
// v3 on, an empty answer before.
func handleDescribeLogDirs(b *Broker, r *request, req *kmsg.DescribeLogDirsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	// DESCRIBE on the cluster.
	if !r.authorizedCluster(acl.Describe) {
		resp.ErrorCode = kafkaError(errClusterAuthorization) // v3+; older versions have no field for it
		return resp
	}
	dir := kmsg.NewDescribeLogDirsResponseDir()
	dir.Dir = b.cfg.DataDir
	if abs, err := filepath.Abs(dir.Dir); err == nil {
		dir.Dir = abs
	}
	dir.TotalBytes, dir.UsableBytes = -1, -1
	if total, usable, err := logDirSpace(dir.Dir); err == nil {
		dir.TotalBytes, dir.UsableBytes = total, usable
	}

	byTopic := map[string][]*partition{}
	if req.Topics == nil {
		for _, p := range b.replicas.all() {
			byTopic[p.topic] = append(byTopic[p.topic], p)
		}
	} else {
		for _, rt := range req.Topics {
			for _, idx := range rt.Partitions {
				if p, ok := b.replicas.lookupByName(rt.Topic, idx); ok && !slices.Contains(byTopic[rt.Topic], p) {
					byTopic[rt.Topic] = append(byTopic[rt.Topic], p)
				}
			}
		}
	}
	for topic, parts := range byTopic {
		slices.SortFunc(parts, func(a, b *partition) int { return int(a.index - b.index) })
		dt := kmsg.NewDescribeLogDirsResponseDirTopic()
		dt.Topic = topic
		for _, p := range parts {
			dp := kmsg.NewDescribeLogDirsResponseDirTopicPartition()
			dp.Partition = p.index
			dp.Size = p.log.Size()
			dp.OffsetLag = max(p.highWatermark()-p.log.LogEndOffset(), 0)
			dt.Partitions = append(dt.Partitions, dp)
		}
		dir.Topics = append(dir.Topics, dt)
	}
	slices.SortFunc(dir.Topics, func(a, b kmsg.DescribeLogDirsResponseDirTopic) int { return strings.Compare(a.Topic, b.Topic) })
	resp.Dirs = append(resp.Dirs, dir)
	return resp
}
