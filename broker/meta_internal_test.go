package broker

import (
	"testing"

	"github.com/shale-log/shale/metadata"
)

// TestBrokerAddrKeepsTheLastRegisteredAddress: a broker whose
// registration vanished (its lease expired unrenewed after an etcd
// restart) is no longer live in the metadata, but its followers' fetchers
// and a leader asking its followers still reach it at the address it
// last registered, also after further changes; a new registration's
// address replaces the old one. Followers that looked a leader up among
// the live brokers found no address, and acks=all waited.
func TestBrokerAddrKeepsTheLastRegisteredAddress(t *testing.T) {
	snap := func(rev int64, brokers ...metadata.Broker) *metadata.Snapshot {
		return &metadata.Snapshot{Revision: rev, Controller: -1, Brokers: brokers}
	}
	b0 := metadata.Broker{ID: 0, Host: "127.0.0.1", Port: 9092}
	b1 := metadata.Broker{ID: 1, Host: "127.0.0.1", Port: 9093}
	moved := metadata.Broker{ID: 1, Host: "10.0.0.1", Port: 9093}
	steps := []struct {
		snap  *metadata.Snapshot
		live  bool
		addr1 string // "" when none is known
	}{
		{snap(1, b0), false, ""},
		{snap(2, b0, b1), true, "127.0.0.1:9093"},
		{snap(3, b0), false, "127.0.0.1:9093"},
		{snap(4, b0), false, "127.0.0.1:9093"},
		{snap(5, b0, moved), true, "10.0.0.1:9093"},
		{snap(6, b0), false, "10.0.0.1:9093"},
	}
	var v *metaView
	for _, st := range steps {
		v = convertSnapshot(st.snap, v)
		if _, live := v.broker(1); live != st.live {
			t.Fatalf("revision %d: broker 1 live %v, want %v", st.snap.Revision, live, st.live)
		}
		addr, ok := v.brokerAddr(1)
		if ok != (st.addr1 != "") || addr != st.addr1 {
			t.Fatalf("revision %d: broker 1 at %q (%v), want %q", st.snap.Revision, addr, ok, st.addr1)
		}
	}
	if _, ok := v.brokerAddr(7); ok {
		t.Fatal("an address for a broker never seen")
	}
}
