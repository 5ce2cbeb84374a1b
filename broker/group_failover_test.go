package broker_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/shale-log/shale/broker/brokertest"
)

// kill stops broker id as a crash would: its etcd link and every link to
// or from it are cut first, so its leases expire rather than being
// revoked, and it hands nothing over.
func (c *netCluster) kill(id int32) {
	c.t.Helper()
	nd := c.nodes[id]
	nd.etcdProxy.Cut()
	c.mu.Lock()
	for k, p := range c.links {
		if strings.HasPrefix(k, strconv.Itoa(int(id))+">") || strings.HasSuffix(k, ">"+nd.addr) {
			p.Cut()
		}
	}
	c.mu.Unlock()
	nd.b.Crash()
}

// TestGroupCoordinatorCrashLosesNoCommittedOffset: the broker coordinating
// a group of three members crashes while they consume and commit; the
// members find the new coordinator (the new leader of the group's
// __consumer_offsets partition, three replicas) and go on from their
// committed offsets: none lost or moved backwards, every acknowledged
// record consumed.
func TestGroupCoordinatorCrashLosesNoCommittedOffset(t *testing.T) {
	c := startNetCluster(t, 3)
	brokertest.RunGroupFailover(t, c.addrs(), c.kill)
}
