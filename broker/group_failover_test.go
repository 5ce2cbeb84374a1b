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
// crashed broker's below the high watermark.
func TestGroupCoordinatorCrashLosesNoCommittedOffset(t *testing.T) {
	c := startNetCluster(t, 3)
	killed := int32(-1)
	brokertest.RunGroupFailover(t, c.addrs(), func(id int32) {
		killed = id
		c.kill(id)
	})
	// The crashed coordinator never came back: below the survivors' high
	// watermark its logs agree with theirs (past it, it may hold a tail
	// that no in-sync replica has), and theirs agree throughout.
	hws := make([]int64, brokertest.GroupFailoverPartitions)
	for p := range hws {
		hws[p] = math.MaxInt64
		for _, nd := range c.nodes {
			if nd.id != killed {
				_, hw, ok := nd.b.ReplicaOffsets(brokertest.GroupFailoverTopic, int32(p))
				if !ok {
					t.Fatalf("broker %d holds no replica of %s-%d", nd.id, brokertest.GroupFailoverTopic, p)
				}
				hws[p] = min(hws[p], hw)
			}
		}
	}
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
