package broker

import (
	"slices"
	"testing"

	"github.com/shale-log/shale/metadata"
)

// The eligible leader replicas a partition's record still names once
// min.insync.replicas has come down to the ISR's size (until the
// controller's next round drops them) are not described as eligible: the
// high watermark may have moved past them. Kafka clears them on the config
// change itself.
func TestLeftOverEligibleReplicasAreNotDescribed(t *testing.T) {
	b := &Broker{cfg: Config{NodeID: 9}, replicas: &replicaManager{brokerConfig: map[string]string{"min.insync.replicas": "2"}}}
	p := metadata.Partition{Topic: "t", Index: 0, Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}, Eligible: []int32{3}}
	for _, tc := range []struct {
		name    string
		configs map[string]string
		want    []int32
	}{
		{"the ISR below the topic's min.insync.replicas", map[string]string{"min.insync.replicas": "3"}, []int32{3}},
		{"the ISR at the topic's min.insync.replicas", map[string]string{"min.insync.replicas": "2"}, nil},
		{"the ISR at the brokers' default", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &metadata.Snapshot{
				Brokers: []metadata.Broker{{ID: 1}, {ID: 2}, {ID: 3}},
				Topics:  map[string]*metadata.TopicState{"t": {Topic: metadata.Topic{Name: "t", Configs: tc.configs}, Partitions: []metadata.Partition{p}}},
			}
			view := convertSnapshot(snap, nil)
			tv := view.topicList()[0]
			if got := b.describePartition(view, &tv, tv.partitions[0]); !slices.Equal(got.eligible, tc.want) {
				t.Fatalf("described eligible %v, want %v", got.eligible, tc.want)
			}
		})
	}
}
