package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestTieredWritesWithLostResponsesOnMinIO: against a real MinIO, every
// kind of write tiering makes (segment and companion PUTs, manifest
// commits, DeleteRecords' commit, remote retention's deletes, the topic's
// deletion) has responses lost after the write took effect. Each costs a
// retry at most: DeleteRecords answers success, the bucket holds exactly
// the objects the manifest names (no gap, no duplicate, no orphan, none
// missing), every record from the log start reads back byte for byte, and
// deleting the topic leaves nothing of it.
func TestTieredWritesWithLostResponsesOnMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	fb := faulty.New(srv.NewS3(t, nil))
	b := startTiered(t, fb)
	const topic = "lost"
	createTieredTopic(t, b, topic)
	adm := b.Admin()
	ctx := testCtx(t)
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	l := tiering.Layout{}
	objects := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.PartitionPrefix(part) + "0", Times: 3, LoseResponse: true})
	commits := fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.ManifestKey(part), Times: 4, LoseResponse: true})
	deletes := fb.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: l.PartitionPrefix(part), Times: 3, LoseResponse: true})

	const n = 1200
	produceTiered(t, b, topic, n)
	cl := b.Client()
	waitFor(t, "uploads and local retention", 60*time.Second, func() bool {
		return localSegments(t, b, topic) <= 2 && listOffset(t, cl, topic, -4) > 0
	})
	if objects.Fired() == 0 || commits.Fired() == 0 {
		t.Fatalf("lost responses: %d object puts, %d commits", objects.Fired(), commits.Fired())
	}

	// DeleteRecords' commit loses its response too; it is settled.
	const start = 300
	commits.Remove()
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.ManifestKey(part), Times: 1, LoseResponse: true})
	dr, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: start}}})
	if err != nil || dr.Error() != nil {
		t.Fatalf("delete records: %v %v", err, dr.Error())
	}
	brokertest.WaitFor(t, 30*time.Second, "remote retention to drop the segments below the log start", func() (bool, string) {
		objs, named, m := segmentObjects(t, fb.Inner(), adm, topic)
		var orphans, missing []string
		for _, k := range objs {
			if !named[k] {
				orphans = append(orphans, k)
			}
		}
		for k := range named {
			if !strings.Contains(strings.Join(objs, " "), k) {
				missing = append(missing, k)
			}
		}
		first := int64(-1)
		if len(m.Segments) > 0 || len(m.Spills) > 0 {
			first = m.Start()
		}
		return m.LogStartOffset == start && first > start-100 && len(orphans) == 0 && len(missing) == 0 && deletes.Fired() > 0,
			fmt.Sprintf("log start %d, first segment at %d, %d objects, not named %v, missing %v, lost deletes %d",
				m.LogStartOffset, first, len(objs), orphans, missing, deletes.Fired())
	})
	if got := listOffset(t, cl, topic, -2); got != start {
		t.Fatalf("log start %d, want %d", got, start)
	}
	recs := consumeN(t, b, topic, n-start, kgo.FetchMaxPartitionBytes(20000))
	for i, r := range recs[:n-start] {
		if r.Offset != int64(start+i) || string(r.Value) != string(tieredValue(start+i)) {
			t.Fatalf("record %d after the log start: offset %d", i, r.Offset)
		}
	}

	// The topic's deletion loses the responses of its marker and of a
	// delete; it finishes all the same.
	fb.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: l.DeletedKey(topic, part.TopicID), Times: 1, LoseResponse: true})
	fb.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: l.TopicPrefix(topic, part.TopicID), Times: 2, LoseResponse: true})
	if _, err := adm.DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 60*time.Second, "the topic's objects to go, but the deletion marker", func() (bool, string) {
		var left []string
		for _, k := range listBucket(t, fb.Inner(), "") {
			if strings.HasPrefix(k, l.TopicPrefix(topic, part.TopicID)) && k != l.DeletedKey(topic, part.TopicID) {
				left = append(left, k)
			}
		}
		return len(left) == 0, fmt.Sprintf("left %v", left)
	})
}
