package broker

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func fetchReq(version int16, sessionID, epoch int32, parts map[string][]int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version = version
	req.SessionID, req.SessionEpoch = sessionID, epoch
	for topic, ps := range parts {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		for _, p := range ps {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition = p
			rp.FetchOffset = int64(p) * 10
			rp.PartitionMaxBytes = 1 << 20
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req
}

func TestFetchSessionLifecycle(t *testing.T) {
	c := newFetchSessionCache()

	// A sessionless full fetch creates nothing.
	plan, code := c.planFetch(fetchReq(12, 0, sessionEpochFinal, map[string][]int32{"a": {0, 1}}))
	if code != 0 || plan.sessionID() != 0 || len(plan.parts) != 2 || plan.incremental {
		t.Fatalf("final-epoch fetch: %+v %d", plan, code)
	}
	plan.done()

	// Epoch 0 creates a session holding the request's partitions.
	plan, code = c.planFetch(fetchReq(12, 0, sessionEpochInitial, map[string][]int32{"a": {0, 1}}))
	if code != 0 || plan.sessionID() == 0 || len(plan.parts) != 2 {
		t.Fatalf("initial fetch: %+v %d", plan, code)
	}
	id := plan.sessionID()
	for _, sp := range plan.parts {
		fp := &fetchPart{FetchResponseTopicPartition: kmsg.NewFetchResponseTopicPartition()}
		fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = 5, 5, 0
		if !plan.include(sp, fp) {
			t.Fatal("a full response carries every partition")
		}
	}
	plan.done()

	// An incremental fetch adds a partition, forgets one, and keeps the rest.
	req := fetchReq(12, id, 1, map[string][]int32{"b": {3}})
	req.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Topic: "a", Partitions: []int32{0}}}
	plan, code = c.planFetch(req)
	if code != 0 || !plan.incremental || len(plan.parts) != 2 {
		t.Fatalf("incremental: %+v %d", plan, code)
	}
	if plan.parts[0].key.topic != "a" || plan.parts[0].key.index != 1 || plan.parts[1].key.topic != "b" {
		t.Fatalf("parts: %+v %+v", plan.parts[0].key, plan.parts[1].key)
	}
	// Unchanged partition a/1 is left out of the incremental response;
	// the new b/3 is in.
	unchanged := &fetchPart{FetchResponseTopicPartition: kmsg.NewFetchResponseTopicPartition()}
	unchanged.HighWatermark, unchanged.LastStableOffset, unchanged.LogStartOffset = 5, 5, 0
	if plan.include(plan.parts[0], unchanged) {
		t.Fatal("an unchanged partition was included")
	}
	fresh := &fetchPart{FetchResponseTopicPartition: kmsg.NewFetchResponseTopicPartition()}
	fresh.HighWatermark = 7
	if !plan.include(plan.parts[1], fresh) {
		t.Fatal("a new partition was left out")
	}
	plan.done()

	// A stale epoch and an unknown session are refused.
	if _, code := c.planFetch(fetchReq(12, id, 1, nil)); code != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("stale epoch: %d", code)
	}
	if _, code := c.planFetch(fetchReq(12, id+100, 1, nil)); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("unknown session: %d", code)
	}
	// The final epoch closes the session.
	plan, _ = c.planFetch(fetchReq(12, id, sessionEpochFinal, nil))
	plan.done()
	if _, code := c.planFetch(fetchReq(12, id, 2, nil)); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("closed session still answers: %d", code)
	}
}

func TestFetchSessionCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newFetchSessionCache()
	first, _ := c.planFetch(fetchReq(12, 0, 0, nil))
	first.done()
	for i := 0; i < fetchSessionSlots; i++ {
		p, _ := c.planFetch(fetchReq(12, 0, 0, nil))
		p.done()
	}
	if _, code := c.planFetch(fetchReq(12, first.sessionID(), 1, nil)); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("the oldest session survived: %d", code)
	}
	if len(c.byID) != fetchSessionSlots {
		t.Fatalf("%d sessions kept", len(c.byID))
	}
}
