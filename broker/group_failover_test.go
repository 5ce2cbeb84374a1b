package broker_test

import (
	"fmt"
	"math"
	"path/filepath"
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
// record consumed. The replicas' logs of the consumed topic agree, the
// crashed broker's below the high watermark it had reached when it crashed.
func TestGroupCoordinatorCrashLosesNoCommittedOffset(t *testing.T) {
	c := startNetCluster(t, 3)
	killed := int32(-1)
	hws := make([]int64, brokertest.GroupFailoverPartitions)
	brokertest.RunGroupFailover(t, c.addrs(), func(id int32) {
		// Every offset below the highest high watermark any broker
		// knows before the crash is on every in-sync replica; past it,
		// a crashed leader may hold a tail no other replica has, which
		// the survivors' logs then hold different batches at (the
		// producer's retries, stamped with the new leader's epoch).
		// Read after the crash, the survivors' high watermark would be
		// far past that tail.
		for p := range hws {
			for _, nd := range c.nodes {
				if _, hw, ok := nd.b.ReplicaOffsets(brokertest.GroupFailoverTopic, int32(p)); ok {
					hws[p] = max(hws[p], hw)
				}
			}
		}
		killed = id
		c.kill(id)
	})
	var all, survivors []brokertest.ReplicaDir
	for _, nd := range c.nodes {
		nd.ln.Close()
		<-nd.served
		nd.b.Close()
		d := brokertest.ReplicaDir{Broker: int(nd.id), Dir: filepath.Join(c.dir, fmt.Sprintf("broker-%d", nd.id))}
		all = append(all, d)
		if nd.id != killed {
			survivors = append(survivors, d)
		}
	}
	for p, hw := range hws {
		partition := fmt.Sprintf("%s-%d", brokertest.GroupFailoverTopic, p)
		brokertest.CheckLogsAgree(t, partition, math.MaxInt64, survivors...)
		brokertest.CheckLogsAgree(t, partition, hw, all...)
	}
}
