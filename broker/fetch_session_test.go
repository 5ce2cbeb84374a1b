package broker

import (
	"fmt"
	"testing"
	"time"

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
	plan, code := c.planFetch(fetchReq(12, 0, sessionEpochFinal, map[string][]int32{"a": {0, 1}}), "c@h")
	if code != 0 || plan.sessionID() != 0 || len(plan.parts) != 2 || plan.incremental {
		t.Fatalf("final-epoch fetch: %+v %d", plan, code)
	}

	// Epoch 0 creates a session holding the request's partitions.
	plan, code = c.planFetch(fetchReq(12, 0, sessionEpochInitial, map[string][]int32{"a": {0, 1}}), "c@h")
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

	// An incremental fetch adds a partition, forgets one, and keeps the rest.
	req := fetchReq(12, id, 1, map[string][]int32{"b": {3}})
	req.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Topic: "a", Partitions: []int32{0}}}
	plan, code = c.planFetch(req, "c@h")
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

	// A stale epoch and an unknown session are refused.
	if _, code := c.planFetch(fetchReq(12, id, 1, nil), "c@h"); code != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("stale epoch: %d", code)
	}
	if _, code := c.planFetch(fetchReq(12, id+100, 1, nil), "c@h"); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("unknown session: %d", code)
	}
	// The final epoch closes the session.
	if _, code := c.planFetch(fetchReq(12, id, sessionEpochFinal, nil), "c@h"); code != 0 {
		t.Fatalf("final epoch: %d", code)
	}
	if _, code := c.planFetch(fetchReq(12, id, 2, nil), "c@h"); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("closed session still answers: %d", code)
	}
}

// Regression: session ids were sequential and any client could use or
// close any session, or push every session out of the cache by creating
// new ones. Ids are now random and bound to their client (client id and
// host), and a session used within the eviction age is not evicted.
func TestFetchSessionsAreBoundToTheirClientAndNotEvictedWhileInUse(t *testing.T) {
	c := newFetchSessionCache()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	mine, _ := c.planFetch(fetchReq(12, 0, 0, map[string][]int32{"a": {0}}), "me@h")
	id := mine.sessionID()
	if _, code := c.planFetch(fetchReq(12, id, 1, nil), "other@h"); code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("another client used the session: %d", code)
	}
	c.planFetch(fetchReq(12, id, sessionEpochFinal, nil), "other@h")
	if _, code := c.planFetch(fetchReq(12, id, 1, nil), "me@h"); code != 0 {
		t.Fatalf("another client closed the session: %d", code)
	}
	// Ids are not a sequence.
	seq := 0
	prev := id
	for i := 0; i < fetchSessionSlots-1; i++ {
		p, _ := c.planFetch(fetchReq(12, 0, 0, nil), fmt.Sprintf("c%d@h", i))
		if p.sessionID() == prev+1 {
			seq++
		}
		prev = p.sessionID()
	}
	if seq > 10 {
		t.Fatalf("%d of %d session ids followed the previous one", seq, fetchSessionSlots)
	}
	// Full of recently used sessions: a new client gets none, and no
	// session is evicted.
	now = now.Add(time.Second)
	if p, code := c.planFetch(fetchReq(12, 0, 0, nil), "flood@h"); code != 0 || p.sessionID() != 0 {
		t.Fatalf("a full cache gave a new session %d (%d)", p.sessionID(), code)
	}
	if _, code := c.planFetch(fetchReq(12, id, 2, nil), "me@h"); code != 0 {
		t.Fatalf("a session in use was evicted: %d", code)
	}
	// Past the eviction age, the least recently used gives way.
	now = now.Add(fetchSessionEvictionAge)
	if p, _ := c.planFetch(fetchReq(12, 0, 0, nil), "late@h"); p.sessionID() == 0 {
		t.Fatal("no session evicted past the eviction age")
	}
	if len(c.byID) != fetchSessionSlots {
		t.Fatalf("%d sessions kept", len(c.byID))
	}
}
