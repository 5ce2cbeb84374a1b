package broker_test

import (
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
)

// A broker that stays a partition's leader while its leader epoch moves
// on (its view went from one of its terms straight to a later one: the
// terms between, another broker's, were never applied here) starts a new
// term as after a leader change. Its tier fences the remote manifest
// under the new epoch and goes on uploading. Before, the archive loop
// saw the epoch change, ended its term, and no new one started: sealed
// segments stayed on the local disk until the next leader change.
func TestALeaderEpochThatMovesOnUnderTheSameLeaderStartsANewTerm(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startTiered(t, bucket)
	const topic = "terms"
	createTieredTopic(t, b, topic)
	produceTiered(t, b, topic, 600)
	adm := b.Admin()
	waitFor(t, "the first uploads", 60*time.Second, func() bool { return remoteManifest(t, bucket, adm, topic).End() > 0 })

	bumpLeaderEpoch(t, b, bucket, topic)
	produceTieredValues(t, tieredProducer(b, topic), 600, 1200, 50)
	waitFor(t, "uploads in the new term", 60*time.Second, func() bool {
		return remoteManifest(t, bucket, adm, topic).End() >= 1000
	})
	requireTieredRecords(testCtx(t), t, b, topic, 0, 1200)
}

// bumpLeaderEpoch moves partition 0's leader epoch on by 2 in etcd under
// the same leader, and waits until the leader has fenced the manifest
// under it; it returns the new epoch.
func bumpLeaderEpoch(t *testing.T, b *brokertest.Broker, bucket objectstore.Bucket, topic string) int32 {
	t.Helper()
	ctx := testCtx(t)
	store := metadata.NewStore(b.Etcd(), "")
	cur, err := store.Partition(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := cur
	next.LeaderEpoch += 2
	if _, _, err := store.UpdatePartition(ctx, next, cur.PartitionEpoch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the manifest fenced under the new epoch", 60*time.Second, func() bool {
		return remoteManifest(t, bucket, b.Admin(), topic).LeaderEpoch == next.LeaderEpoch
	})
	return next.LeaderEpoch
}
