package broker

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/localseg"
)

func init() {
	handler(kmsg.WriteTxnMarkers, 0, 1, handleWriteTxnMarkers)
}

// writeTxnMarkersTimeout bounds the appends of one WriteTxnMarkers: they
// wait for the in-sync replicas (acks=all), and the coordinator retries
// what timed out.
const writeTxnMarkersTimeout = 30 * time.Second

// handleWriteTxnMarkers appends transaction markers for a transaction
// coordinator on another broker: each partition, which this broker must
// lead, gets its COMMIT or ABORT marker, appended acks=all. It needs
// CLUSTER_ACTION on the cluster (only brokers send it; a peer connection
// has every right). The answer comes once every marker is committed or
// has failed; the appends run in parallel.
func handleWriteTxnMarkers(b *Broker, r *request, req *kmsg.WriteTxnMarkersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
	allowed := r.authorizedCluster(acl.ClusterAction)
	type job struct {
		code  *int16
		topic string
		index int32
		m     localseg.Marker
	}
	var jobs []job
	for _, rm := range req.Markers {
		sm := kmsg.NewWriteTxnMarkersResponseMarker()
		sm.ProducerID = rm.ProducerID
		for _, rt := range rm.Topics {
			st := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
			st.Topic = rt.Topic
			for _, index := range rt.Partitions {
				sp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
				sp.Partition = index
				st.Partitions = append(st.Partitions, sp)
			}
			sm.Topics = append(sm.Topics, st)
		}
		resp.Markers = append(resp.Markers, sm)
	}
	for i, rm := range req.Markers {
		m := localseg.Marker{ProducerID: rm.ProducerID, ProducerEpoch: rm.ProducerEpoch, Commit: rm.Committed, CoordinatorEpoch: rm.CoordinatorEpoch}
		for j, rt := range rm.Topics {
			for k := range rt.Partitions {
				sp := &resp.Markers[i].Topics[j].Partitions[k]
				if !allowed {
					sp.ErrorCode = kafkaError(errClusterAuthorization)
					continue
				}
				jobs = append(jobs, job{code: &sp.ErrorCode, topic: rt.Topic, index: sp.Partition, m: m})
			}
		}
	}
	if len(jobs) == 0 {
		return resp
	}
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx(), writeTxnMarkersTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j.m.Timestamp = time.Now().UnixMilli()
				*j.code = kafkaError(b.writeMarker(ctx, j.topic, j.index, j.m))
			}()
		}
		wg.Wait()
		r.respond(resp)
	}()
	return nil
}
