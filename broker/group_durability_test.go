package broker_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// An acknowledged OffsetCommit survives a machine crash when the
// coordinator's __consumer_offsets partition has no other in-sync replica:
// the commit is answered once it is on stable storage, not merely below
// the high watermark.
func TestCommittedOffsetSurvivesCrash(t *testing.T) {
	root := t.TempDir()
	cfs := newCrashFS(t, brokertest.LogDir(root))
	b := brokertest.StartOn(t, root, cfs, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 4
	})
	admCl := b.Client()
	adm := kadm.NewClient(admCl)
	createTopic(t, adm, "events", 1, nil)
	ctx := testCtx(t)
	for _, at := range []int64{1, 7} {
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: "events", Partition: 0, At: at, LeaderEpoch: -1})
		if resp, err := adm.CommitOffsets(ctx, "durable", offs); err != nil || resp.Error() != nil {
			t.Fatalf("commit %d: %v %v", at, err, resp.Error())
		}
	}
	admCl.Close()
	if err := cfs.Crash(nil); err != nil {
		t.Fatal(err)
	}
	b.RestartOn(nil)
	fetched, err := b.Admin().FetchOffsets(testCtx(t), "durable")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("events", 0); !ok || o.At != 7 {
		t.Fatalf("committed offset after the crash: %+v (found %v), want 7", o, ok)
	}
}
