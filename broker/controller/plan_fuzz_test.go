package controller

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/shale-log/shale/broker/replication"
	"github.com/shale-log/shale/metadata"
)

// FuzzPlanOnAPartitionRecord: a partition record read from etcd, whatever
// it holds (recovering members outside the ISR or the replicas, repeated
// ids, negative or huge log ends, leaders that are no replica), is planned
// for without a panic, and no change hands leadership to a member still
// recovering: a change that keeps recovering members leaves the partition
// leaderless. Eligible leader replicas of a record that kept them apart
// from its ISR and among its replicas stay so. A change that is no
// unclean election elects a member of the ISR, or an eligible one when
// the ISR is below min.insync.replicas, and makes none eligible that the
// record did not count on. A recovered log is elected only with no other
// replica counted on (its broker, its log marked lost, refuses to lead
// otherwise), and cleanly below min.insync.replicas only once every
// eligible replica is back.
func FuzzPlanOnAPartitionRecord(f *testing.F) {
	for _, s := range []string{
		`{"replicas":[1,2,3],"leader":1,"leaderEpoch":3,"isr":[1,2,3],"partitionEpoch":7,"recovering":[{"id":3,"logEnd":10}]}`,
		`{"replicas":[1,2,3],"leader":-1,"leaderEpoch":4,"isr":[1,2,3],"recovering":[{"id":1,"logEnd":50},{"id":2,"logEnd":70},{"id":3,"logEnd":-1}]}`,
		`{"replicas":[1,2,3],"leader":2,"isr":[1,2],"recovering":[{"id":2,"logEnd":5},{"id":2,"logEnd":9},{"id":7,"logEnd":1}]}`,
		`{"replicas":[],"leader":9,"isr":[9],"recovering":[{"id":9,"logEnd":-5}]}`,
		`{"replicas":[1,2,3],"leader":1,"isr":[1,2,3],"addingReplicas":[3],"recovering":[{"id":1,"logEnd":1}]}`,
		`{"replicas":[1,2,3],"leader":1,"leaderEpoch":3,"isr":[1,2],"partitionEpoch":7}`,
		`{"replicas":[1,2,3],"leader":-1,"leaderEpoch":3,"isr":[2],"eligible":[1,3]}`,
		`{"replicas":[1,2,3],"leader":2,"isr":[2],"eligible":[1],"recovering":[{"id":2,"logEnd":4}]}`,
		`{"replicas":[1,2,4],"leader":1,"isr":[1],"eligible":[2],"addingReplicas":[4],"removingReplicas":[2]}`,
	} {
		f.Add([]byte(s), uint8(0), false)
		f.Add([]byte(s), uint8(5), true)
	}
	// The ISR's recovered member, an eligible replica down (absent).
	recovered := `{"replicas":[1,2,3],"leader":-1,"leaderEpoch":4,"isr":[1],"eligible":[2],"recovering":[{"id":1,"logEnd":50}]}`
	f.Add([]byte(recovered), uint8(3<<2), false)
	f.Add([]byte(recovered), uint8(3<<2), true)
	f.Fuzz(func(t *testing.T, record []byte, down uint8, unclean bool) {
		var p metadata.Partition
		if json.Unmarshal(record, &p) != nil {
			return
		}
		var live []metadata.Broker
		restarted, liveIDs := map[int32]bool{}, map[int32]bool{}
		for id := int32(1); id <= 3; id++ {
			switch down >> (2 * (id - 1)) & 3 {
			case 0:
				live = append(live, metadata.Broker{ID: id})
				liveIDs[id] = true
			case 1:
				live = append(live, metadata.Broker{ID: id})
				restarted[id] = true
			case 2:
				live = append(live, metadata.Broker{ID: id, ShuttingDown: true})
				liveIDs[id] = true
			}
		}
		configs := map[string]string{MinInsyncReplicasConfig: "2"}
		if unclean {
			configs[UncleanElectionConfig] = "true"
		}
		snap := snapshot(live, configs, p)
		// Log ends for the unclean elections, from the record's bytes:
		// none asked, asked and waited for, asked and waiting.
		ends := map[int32]replication.LogEnd{}
		for i, id := range p.Replicas {
			if liveIDs[id] && i < len(record) {
				ends[id] = replication.LogEnd{Epoch: int32(record[i] % 3), Offset: int64(record[len(record)-1-i])}
			}
		}
		ref := Ref(snap.Topics["t"].Partitions[0])
		for _, recovery := range []*UncleanRecovery{nil, {Logs: ReplicaLogs{ref: ends}, Waited: map[PartitionRef]bool{ref: true}}, {Logs: ReplicaLogs{ref: ends}}} {
			checkPlan(t, record, p, snap, restarted, liveIDs, recovery)
		}
	})
}

func checkPlan(t *testing.T, record []byte, p metadata.Partition, snap *metadata.Snapshot, restarted, liveIDs map[int32]bool, recovery *UncleanRecovery) {
	plan := Plan(snap, restarted, nil, nil, recovery)
	if recovery != nil && len(p.Recovering) == 0 {
		// An unclean election from outside the ISR takes the longest
		// log reported, and only once every replica has said or the
		// wait is over.
		ref := Ref(snap.Topics["t"].Partitions[0])
		ends := recovery.ends(ref)
		silent := slices.ContainsFunc(p.Replicas, func(id int32) bool { _, ok := ends[id]; return !ok })
		for _, ch := range plan {
			l := ch.Next.Leader
			if ch.Next.UncleanEpoch == p.UncleanEpoch || l < 0 {
				continue
			}
			if silent && !recovery.Waited[ref] {
				t.Fatalf("record %s: an unclean election while a replica has not said where its log ends (%v), the wait not over: %+v", record, ends, ch.Next)
			}
			if mine, ok := ends[l]; ok {
				for id, end := range ends {
					if end.Compare(mine) > 0 && !restarted[id] {
						t.Fatalf("record %s: an unclean election takes %d (log end %+v), not %d (%+v): %+v", record, l, mine, id, end, ch.Next)
					}
				}
			} else if len(ends) > 0 {
				t.Fatalf("record %s: an unclean election takes %d, which did not say where its log ends, over those that did (%v): %+v", record, l, ends, ch.Next)
			}
		}
	}
	plan = append(plan, PlanReassignments(snap, restarted, plan)...)
	plan = append(plan, PlanPreferredLeaders(snap)...)
	apart := func(q metadata.Partition) bool {
		return !slices.ContainsFunc(q.Eligible, func(id int32) bool {
			return slices.Contains(q.ISR, id) || !slices.Contains(q.Replicas, id)
		})
	}
	for _, ch := range plan {
		if apart(p) && !apart(ch.Next) {
			t.Fatalf("record %s: the change's eligible leader replicas are in its ISR, or no replicas: %+v", record, ch.Next)
		}
		if ch.Next.UncleanEpoch == p.UncleanEpoch {
			// A clean change elects a member of the ISR, or an
			// eligible one of an ISR below min.insync.replicas,
			// and makes none eligible that was not counted on.
			counted := p.Counted()
			if l := ch.Next.Leader; l >= 0 && l != p.Leader && !slices.Contains(p.ISR, l) && !(len(p.ISR) < 2 && slices.Contains(p.Eligible, l)) {
				t.Fatalf("record %s: a clean change elects %d, neither in the ISR nor eligible: %+v", record, l, ch.Next)
			}
			if slices.ContainsFunc(ch.Next.Eligible, func(id int32) bool { return !slices.Contains(counted, id) }) {
				t.Fatalf("record %s: a clean change makes eligible a replica the record did not count on: %+v", record, ch.Next)
			}
		}
		if _, recovering := ch.Next.Recovering.End(ch.Next.Leader); recovering && ch.Next.Leader >= 0 {
			t.Fatalf("record %s: the change leads the partition by recovering member %d: %+v", record, ch.Next.Leader, ch.Next)
		}
		if _, was := p.Recovering.End(ch.Next.Leader); was && ch.Next.Leader >= 0 && ch.Next.Leader != p.Leader {
			// A recovered log elected: its broker's log is marked
			// lost, and it leads only once the record counts no
			// other replica (applyLostLocked).
			if got := ch.Next.Counted(); !slices.Equal(got, []int32{ch.Next.Leader}) {
				t.Fatalf("record %s: elects recovered member %d with others still counted on (%v), which its broker refuses: %+v", record, ch.Next.Leader, got, ch.Next)
			}
			// A clean one, while the ISR is below
			// min.insync.replicas, only once every eligible
			// replica (still a replica) is back.
			if ch.Next.UncleanEpoch == p.UncleanEpoch && len(p.ISR) < 2 && slices.ContainsFunc(p.Eligible, func(id int32) bool { return !liveIDs[id] && slices.Contains(p.Replicas, id) }) {
				t.Fatalf("record %s: compares recovered logs while an eligible replica is down: %+v", record, ch.Next)
			}
		}
	}
}
