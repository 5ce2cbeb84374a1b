package replication

import "testing"

func TestPreferredReadReplica(t *testing.T) {
	leader := ReadReplica{ID: 1, Rack: "a", LogStartOffset: 0, LogEndOffset: 100}
	rr := func(id int32, rack string, lso, leo, caught int64) ReadReplica {
		return ReadReplica{ID: id, Rack: rack, LogStartOffset: lso, LogEndOffset: leo, LastCaughtUpMs: caught}
	}
	for _, tc := range []struct {
		name        string
		clientRack  string
		leader      ReadReplica
		isr         []int32
		followers   []ReadReplica
		fetchOffset int64
		want        int32
	}{
		{"no client rack: the leader", "", leader, []int32{1, 2}, []ReadReplica{rr(2, "b", 0, 100, 0)}, 50, -1},
		{"leader in the client's rack", "a", leader, []int32{1, 2}, []ReadReplica{rr(2, "a", 0, 100, 0)}, 50, -1},
		{"in-sync follower in the client's rack", "b", leader, []int32{1, 2, 3}, []ReadReplica{rr(2, "b", 0, 100, 0), rr(3, "c", 0, 100, 0)}, 50, 2},
		{"no replica in the client's rack", "z", leader, []int32{1, 2, 3}, []ReadReplica{rr(2, "b", 0, 100, 0), rr(3, "c", 0, 100, 0)}, 50, -1},
		{"follower out of the ISR is never chosen", "b", leader, []int32{1}, []ReadReplica{rr(2, "b", 0, 100, 0)}, 50, -1},
		{"follower short of the fetch offset", "b", leader, []int32{1, 2}, []ReadReplica{rr(2, "b", 0, 40, 0)}, 50, -1},
		{"follower at exactly the fetch offset", "b", leader, []int32{1, 2}, []ReadReplica{rr(2, "b", 0, 50, 0)}, 50, 2},
		{"follower whose log starts past the fetch offset", "b", leader, []int32{1, 2}, []ReadReplica{rr(2, "b", 60, 100, 0)}, 50, -1},
		{"follower never heard from", "b", leader, []int32{1, 2}, []ReadReplica{rr(2, "b", -1, -1, 0)}, 0, -1},
		{"largest log end wins", "b", leader, []int32{1, 2, 3}, []ReadReplica{rr(2, "b", 0, 90, 9), rr(3, "b", 0, 95, 1)}, 50, 3},
		{"then the most recently caught up", "b", leader, []int32{1, 2, 3}, []ReadReplica{rr(2, "b", 0, 90, 1), rr(3, "b", 0, 90, 9)}, 50, 3},
		{"then the lowest id", "b", leader, []int32{1, 2, 3}, []ReadReplica{rr(3, "b", 0, 90, 5), rr(2, "b", 0, 90, 5)}, 50, 2},
		{"brokers without a rack never match a rack", "b", ReadReplica{ID: 1, LogEndOffset: 100}, []int32{1, 2}, []ReadReplica{rr(2, "", 0, 100, 0)}, 50, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PreferredReadReplica(tc.clientRack, tc.leader, tc.isr, tc.followers, tc.fetchOffset); got != tc.want {
				t.Fatalf("PreferredReadReplica = %d, want %d", got, tc.want)
			}
		})
	}
}
