package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	// Kafka 4 dropped ListOffsets v0 (old-style offsets lists).
	handler(kmsg.ListOffsets, 1, 11, handleListOffsets)
}

// The special timestamps of a ListOffsets request.
const (
	listLatest        = -1
	listEarliest      = -2
	listMaxTimestamp  = -3 // KIP-734, v7+
	listEarliestLocal = -4 // KIP-405, v8+
	listLatestTiered  = -5 // KIP-1005, v9+
	// listEarliestPendingUpload is the first offset not yet in the
	// object store (KIP-1023, v11+).
	listEarliestPendingUpload = -6
	readCommittedLevel        = 1
)

// debuggingReplicaID is Kafka's replica id for a ListOffsets that any
// replica answers, leader or not, from its whole log: the controller asks
// it of each live replica before an unclean election (replicaLogEnds).
const debuggingReplicaID = -2

func handleListOffsets(b *Broker, r *request, req *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	remote, cancel := b.remoteLookups(r.ctx())
	defer cancel()
	for _, rt := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		// DESCRIBE on the topic.
		describable := r.authorizedTopic(acl.Describe, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.Timestamp, sp.Offset, sp.LeaderEpoch = -1, -1, -1
			if !describable {
				sp.ErrorCode = kafkaError(errTopicAuthorization)
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			p, err := b.partitionByName(rt.Topic, rp.Partition)
			if err == nil && req.ReplicaID == debuggingReplicaID {
				if err = p.checkReplica(rp.CurrentLeaderEpoch); err == nil {
					replicaLogEnd(remote, p, &rp, &sp)
				} else {
					sp.ErrorCode = kafkaError(err)
				}
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if err == nil {
				err = p.checkLeader(rp.CurrentLeaderEpoch)
			}
			if err == nil && req.ReplicaID < 0 && p.leadershipLapsed() {
				err = errLeadershipUnproven
			}
			if err == nil {
				err = p.checkTierReady()
				if err != nil && p.tier.early.Load() && (rp.Timestamp == listLatest || rp.Timestamp == listEarliestLocal) {
					// A leader that appends before it has read its
					// manifest answers what its log alone decides.
					err = nil
				}
			}
			if err != nil {
				sp.ErrorCode = kafkaError(err)
			} else {
				listOffset(r.ctx(), remote, p, req, &rp, &sp)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// replicaLogEnd answers one partition of a ListOffsets from the debugging
// replica id, as this replica's log holds it, leader or not: the log end
// (latest) with the leader epoch of its last record, or its start
// (earliest); other timestamps are refused.
func replicaLogEnd(remote context.Context, p *partition, rp *kmsg.ListOffsetsRequestTopicPartition, sp *kmsg.ListOffsetsResponseTopicPartition) {
	switch rp.Timestamp {
	case listLatest:
		end := p.log.LogEndOffset()
		sp.Offset, sp.LeaderEpoch = end, p.lastEpoch(remote, end)
	case listEarliest:
		sp.Offset = p.logStartOffset()
	default:
		sp.ErrorCode = kerr.InvalidRequest.Code
	}
}

// listOffset answers one partition of a ListOffsets: ctx bounds its
// local lookups, remote those in the object store.
func listOffset(ctx, remote context.Context, p *partition, req *kmsg.ListOffsetsRequest, rp *kmsg.ListOffsetsRequestTopicPartition, sp *kmsg.ListOffsetsResponseTopicPartition) {
	log := p.log
	// Clients see up to the high watermark (or the last stable offset for
	// read_committed); followers (replica id >= 0) see the whole log.
	upper := p.highWatermark()
	if req.ReplicaID >= 0 {
		upper = log.LogEndOffset()
	} else if req.IsolationLevel == readCommittedLevel {
		upper = p.lastStableOffset()
	}
	// A new leader's high watermark may lag what the last leader
	// answered, until its followers have fetched up to the start of its
	// epoch: "latest" then, or a timestamp found at or above the mark,
	// would move backwards and forwards again. Kafka answers
	// OFFSET_NOT_AVAILABLE (retriable) meanwhile (KIP-207).
	lagging := req.ReplicaID < 0 && p.highWatermarkBehindEpochStart()
	switch rp.Timestamp {
	case listLatest:
		if lagging {
			sp.ErrorCode = kerr.OffsetNotAvailable.Code
			return
		}
		sp.Offset = upper
		sp.LeaderEpoch = epochAt(remote, p, upper-1)
	case listEarliest:
		sp.Offset = p.logStartOffset()
		sp.LeaderEpoch = epochAt(remote, p, sp.Offset)
	case listEarliestLocal:
		sp.Offset = log.LocalLogStartOffset()
		sp.LeaderEpoch = epochAt(remote, p, sp.Offset)
	case listLatestTiered:
		// The last offset in the object store; -1 without an epoch
		// when nothing is, as Kafka answers.
		if p.tier != nil {
			if m := p.tier.manifest(); m.SegmentCount() > 0 {
				sp.Offset = m.End() - 1
				sp.LeaderEpoch = epochAt(remote, p, sp.Offset)
			}
		}
	case listEarliestPendingUpload:
		// Where uploads go on from: the remote log's end, or the log
		// start when that is past it; -1 without an epoch for a topic
		// that does not tier, as Kafka answers.
		if p.tier != nil && p.cfg.Load().remoteStorage {
			sp.Offset = max(p.tier.manifest().End(), p.logStartOffset())
			sp.LeaderEpoch = epochAt(remote, p, sp.Offset)
		}
	case listMaxTimestamp:
		off, ts, epoch, ok, err := log.MaxTimestamp(ctx)
		if p.tier != nil && err == nil {
			// The remote log holds the record when its largest
			// timestamp is at least the local one (the first wins).
			// The manifest's bound skips the remote log when it cannot;
			// the remote log's own answer counts only the records at
			// or above its start.
			if rts := p.tier.manifest().MaxTimestamp(); rts >= 0 && (!ok || rts >= ts) {
				if roff, rts, repoch, rok, rerr := p.tier.maxTimestamp(remote); rerr != nil || (rok && (!ok || rts >= ts)) {
					off, ts, epoch, ok, err = roff, rts, repoch, rok, rerr
				}
			}
		}
		switch {
		case err != nil:
			sp.ErrorCode = kafkaError(err)
		case ok && off < upper:
			sp.Offset, sp.Timestamp, sp.LeaderEpoch = off, ts, epoch
		case lagging:
			sp.ErrorCode = kerr.OffsetNotAvailable.Code
		}
	default:
		if rp.Timestamp < 0 {
			sp.ErrorCode = kerr.InvalidRequest.Code
			return
		}
		var off, ts int64
		var epoch int32
		var ok bool
		var err error
		if p.tier != nil {
			// Remote offsets come first: look there before the disk.
			off, ts, epoch, ok, err = p.tier.offsetForTimestamp(remote, rp.Timestamp)
		}
		if !ok && err == nil {
			off, ts, epoch, ok, err = log.OffsetForTimestamp(ctx, rp.Timestamp)
		}
		switch {
		case err != nil:
			sp.ErrorCode = kafkaError(err)
		case ok && off < upper:
			sp.Offset, sp.Timestamp, sp.LeaderEpoch = off, ts, epoch
		case lagging:
			sp.ErrorCode = kerr.OffsetNotAvailable.Code
		}
	}
}

// epochAt is the leader epoch that wrote offset, from the leader-epoch
// checkpoint (-1 when unknown).
func epochAt(ctx context.Context, p *partition, offset int64) int32 {
	if epoch := p.lastEpoch(ctx, offset+1); epoch >= 0 || offset < 0 {
		return epoch
	}
	// Offsets at the log end belong to the current epoch.
	_, epoch := p.leaderState()
	return epoch
}

// lastEpoch is the leader epoch of the record before end, as this
// replica's log (and, below its local log, the object store) records it;
// -1 when none is.
func (p *partition) lastEpoch(ctx context.Context, end int64) int32 {
	offset := end - 1
	if p.tier != nil && offset < p.log.LocalLogStartOffset() {
		if e, ok := p.tier.epochAt(ctx, offset); ok {
			return e
		}
	}
	epoch := int32(-1)
	for _, e := range p.log.Epochs() {
		if e.StartOffset > offset {
			break
		}
		epoch = e.Epoch
	}
	return epoch
}
