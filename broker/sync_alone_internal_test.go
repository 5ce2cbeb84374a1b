package broker

import (
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// A leader left as the partition's only in-sync replica (its followers'
// machines down, taken out of the ISR) fsyncs what its log holds: records
// acknowledged earlier by replication were on this broker's page cache
// alone, and a crash of its machine would lose them even where a follower,
// out of the ISR and not elected, kept them.
func TestALeaderLeftAloneInSyncSyncsWhatItHolds(t *testing.T) {
	p, _ := leaderOfThree(t, time.Now().Add(time.Hour))
	for range 3 {
		raw, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("acknowledged by replication")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.appendProduce(recordbatch.Batch(raw), recordbatch.Summary{Records: 1, MinTimestamp: recordbatch.NoTimestamp, MaxTimestamp: recordbatch.NoTimestamp}, 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	end := p.log.LogEndOffset()
	time.Sleep(50 * time.Millisecond)
	if rp := p.log.RecoveryPoint(); rp >= end {
		t.Fatalf("with three in sync, the log was synced to %d of %d: the test shows nothing", rp, end)
	}
	p.setLeadership(leadership{leader: 1, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1}, partitionEpoch: 1})
	deadline := time.Now().Add(10 * time.Second)
	for p.log.RecoveryPoint() < end {
		if time.Now().After(deadline) {
			t.Fatalf("left alone in sync, the log is durable to %d of %d after 10s", p.log.RecoveryPoint(), end)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
