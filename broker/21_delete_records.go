package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
)

func init() {
	handler(kmsg.DeleteRecords, 0, 2, handleDeleteRecords)
}

// handleDeleteRecords moves each partition's log start offset forward
// (-1 means up to the high watermark). Segments wholly below it are
// removed by the next retention pass; reads below it fail at once.
func handleDeleteRecords(b *Broker, r *request, req *kmsg.DeleteRecordsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LowWatermark = -1
			p, err := b.partitionByName(rt.Topic, rp.Partition)
			if err == nil && p.internal {
				err = fmt.Errorf("%w: cannot delete records of the internal topic %s", errInvalidTopic, p.topic)
			}
			if err == nil {
				err = p.checkLeader(-1)
			}
			if err == nil {
				err = deleteRecords(p, rp.Offset)
			}
			if err != nil {
				sp.ErrorCode = kafkaError(err)
			} else {
				sp.LowWatermark = p.logStartOffset()
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func deleteRecords(p *partition, offset int64) error {
	hw := p.highWatermark()
	if offset == -1 {
		offset = hw
	}
	if offset < 0 || offset > hw {
		return localseg.ErrOffsetOutOfRange
	}
	if offset <= p.logStartOffset() {
		return nil
	}
	if p.tier != nil {
		// The records may be in the bucket: the manifest records the
		// new start first.
		if err := p.checkTierReady(); err != nil {
			return err
		}
		if p.tier.manifest().Start() >= 0 {
			_, epoch := p.leaderState()
			if err := p.tier.setLogStart(epoch, offset); err != nil {
				return err
			}
		}
	}
	if offset <= p.log.LogStartOffset() {
		return nil
	}
	return p.log.SetLogStartOffset(offset)
}
