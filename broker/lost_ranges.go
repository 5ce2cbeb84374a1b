package broker

import (
	"slices"
	"strings"
	"time"

	"github.com/shale-log/shale/localseg"
)

// PartitionLostRanges is what one hosted partition records as lost: the
// stretches of offsets that damaged batches of its sealed segments held,
// which reads skip until the repairer puts them back (see repairer).
type PartitionLostRanges struct {
	Broker    int32
	Topic     string
	Partition int32
	Leader    bool
	Ranges    []localseg.LostRange
	// ReadError: the lost-ranges file could not be read (Ranges is then
	// unknown).
	ReadError string
	// LastRepair is the time of the last repair attempt that left a range
	// lost, and LastRepairError what each source answered then (zero and
	// empty: none failed since the broker started or since the last
	// success).
	LastRepair      time.Time
	LastRepairError string
}

// LostRanges reports every hosted partition (of topic only when topic is
// not empty) that records lost ranges, sorted by topic and partition.
func (b *Broker) LostRanges(topic string) []PartitionLostRanges {
	var out []PartitionLostRanges
	for _, p := range b.replicas.all() {
		if topic != "" && p.topic != topic {
			continue
		}
		lost, err := p.log.LostRanges()
		if err == nil && len(lost) == 0 {
			continue
		}
		st := PartitionLostRanges{Broker: b.cfg.NodeID, Topic: p.topic, Partition: p.index, Leader: p.isLeader(), Ranges: lost}
		if err != nil {
			st.ReadError = err.Error()
		}
		if b.repairs != nil {
			st.LastRepair, st.LastRepairError = b.repairs.lastFailure(p)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PartitionLostRanges) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out
}
