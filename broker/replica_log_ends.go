package broker

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/controller"
	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// replicaLogEndsTimeout bounds asking one broker where its logs end: an
// unclean election waits that long at most for a replica that does not
// answer, and goes on without it.
const replicaLogEndsTimeout = 2 * time.Second

// replicaLogEnds asks broker bv where its logs of parts end, with a
// ListOffsets from the debugging replica id (latest: the log end, with the
// leader epoch of the last record) that it answers as any replica, leader
// or not (controller.AskReplicaLogs). Partitions it answers with an error
// for, and all of them when it cannot be asked, are left out.
func (b *Broker) replicaLogEnds(ctx context.Context, bv metadata.Broker, parts []controller.PartitionRef) map[controller.PartitionRef]replication.LogEnd {
	ctx, cancel := context.WithTimeout(ctx, replicaLogEndsTimeout)
	defer cancel()
	addr := net.JoinHostPort(bv.Host, strconv.Itoa(int(bv.Port)))
	keys := make([]partitionKey, len(parts))
	for i, ref := range parts {
		keys[i] = partitionKey{ref.Topic, ref.Index}
	}
	resp, err := b.askListOffsets(ctx, addr, debuggingReplicaID, keys)
	if err != nil {
		b.log.Warn("asking a replica where its logs end (unclean election)", "broker", bv.ID, "addr", addr, "err", err)
		return nil
	}
	out := map[controller.PartitionRef]replication.LogEnd{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 && rp.Offset >= 0 {
				out[controller.PartitionRef{Topic: rt.Topic, Index: rp.Partition}] = replication.LogEnd{Epoch: rp.LeaderEpoch, Offset: rp.Offset}
			}
		}
	}
	return out
}

// askListOffsets sends one ListOffsets (latest, no leader epoch) for parts
// from replicaID to the broker at addr, over a peer connection.
func (b *Broker) askListOffsets(ctx context.Context, addr string, replicaID int32, parts []partitionKey) (*kmsg.ListOffsetsResponse, error) {
	pc, err := dialPeer(ctx, b.cfg.DialPeer, b.peerTLS(), addr, b.cfg.NodeID, b.secret)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = peerListOffsetsVersion
	req.ReplicaID = replicaID
	byTopic := map[string]int{}
	for _, k := range parts {
		i, ok := byTopic[k.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[k.topic] = i
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = k.topic
			req.Topics = append(req.Topics, rt)
		}
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = k.index
		rp.CurrentLeaderEpoch = -1
		rp.Timestamp = listLatest
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	resp, err := pc.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.ListOffsetsResponse), nil
}
