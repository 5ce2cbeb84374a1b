package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/metadata"
)

// metaStore is what the broker needs from cluster metadata (etcd through
// package metadata; see metaadapter.go). Writes return the store revision
// they were made at; waitRevision blocks until snapshot() reflects it.
type metaStore interface {
	snapshot() *metaView
	waitRevision(ctx context.Context, rev int64) error
	createTopic(ctx context.Context, t topicView) (int64, error)
	deleteTopic(ctx context.Context, name string) (int64, error)
	createPartitions(ctx context.Context, name string, seen int, add []partitionView) (int64, error)
	updateTopicConfigs(ctx context.Context, name string, mutate func(map[string]string) (map[string]string, error)) (int64, error)
	// updateBrokerConfigs replaces the dynamic configs of broker id
	// (defaultBrokerConfigs: the cluster-wide default) with mutate's
	// result.
	updateBrokerConfigs(ctx context.Context, id int32, mutate func(map[string]string) (map[string]string, error)) (int64, error)
	// updateClientQuotas replaces a client quota entity's quotas with
	// mutate's result.
	updateClientQuotas(ctx context.Context, e metadata.QuotaEntity, mutate func(map[string]float64) (map[string]float64, error)) (int64, error)
	// updateACLs replaces the entries of an ACL resource pattern with
	// mutate's result, in one write.
	updateACLs(ctx context.Context, r metadata.ACLResource, mutate func([]metadata.ACLEntry) ([]metadata.ACLEntry, error)) (int64, error)
	// updateScramCredentials replaces a user's SCRAM credentials (by
	// mechanism) with mutate's result.
	updateScramCredentials(ctx context.Context, user string, mutate func(map[string]metadata.ScramCredential) (map[string]metadata.ScramCredential, error)) (int64, error)
	allocateProducerIDs(ctx context.Context, n int64) (int64, error)
	// alterISR replaces a partition's ISR as its leader: only while the
	// stored partition still names leader at leaderEpoch and is at
	// partitionEpoch (errMetaConflict otherwise). Members that leave an
	// ISR smaller than minISR become its eligible leader replicas
	// (metadata.Partition.SetISR).
	alterISR(ctx context.Context, topic string, index, leader, leaderEpoch, partitionEpoch int32, isr []int32, minISR int32) error
	// leaveISR takes broker self out of a partition's ISR, its log lost
	// (replicaManager.applyLostLocked): when self is named leader, the
	// partition is left without one, at a new leader epoch, for the
	// controller to elect another in-sync replica. A partition that does
	// not count on self (metadata.Partition.Counted), or counts on it
	// alone, is left as it is. Self as an eligible leader replica stops
	// being one. Self as the ISR's only member leaves it to the eligible
	// leader replicas, which hold every acknowledged record. It leaves only to
	// a member that the stored partition does not name as recovering
	// from a machine crash (metadata.Partition.Recovering), one of
	// keepers (the members the caller found up) unless that is nil
	// (an empty log, which any member is longer than or as long). When
	// there is none, self may hold the longest log left: it stays in the
	// ISR as recovering, as markRecovering(-1) records. It says which
	// it did.
	// Eligible leader replicas recorded beside an ISR of minISR
	// (min.insync.replicas) members or more are left over, not counted
	// (metadata.Partition.DropLeftOverEligible).
	leaveISR(ctx context.Context, topic string, index, self int32, keepers []int32, minISR int32) (isrExit, error)
	// markRecovering records broker self as an ISR member back from a
	// machine crash whose log ends at logEnd (-1: not yet opened), for
	// the controller to compare (metadata.Partition.Recovering). The
	// ISR's only member takes the eligible leader replicas back into the
	// ISR to be compared with; an eligible leader replica stops being
	// one. Left-over eligible leader replicas are not counted, as in
	// leaveISR.
	markRecovering(ctx context.Context, topic string, index, self int32, logEnd int64, minISR int32) error
	// markArchiving clears a partition's unarchived mark (see
	// partitionView.unarchived) as its leader: only while the stored
	// partition still names leader at leaderEpoch (errMetaConflict
	// otherwise). Clearing a mark already cleared is no error.
	markArchiving(ctx context.Context, topic string, index, leader, leaderEpoch int32) error
	// markUnarchived sets the mark again, on the same terms, once the
	// leader has deleted the partition's remote log (its topic's remote
	// storage turned off: partitionTier.drain).
	markUnarchived(ctx context.Context, topic string, index, leader, leaderEpoch int32) error
	// raiseLeaderEpoch sets the leader epoch of a partition that leader
	// leads at leaderEpoch above above (a conflict when it does not).
	raiseLeaderEpoch(ctx context.Context, topic string, index, leader, leaderEpoch, above int32) error
	// settlePartitionEpoch settles a write of unknown outcome sent
	// against a partition's epoch: it returns the partition's current
	// epoch from the store (not the snapshot, which may lag), and when
	// that is still epoch, the write can no longer apply (it is fenced).
	settlePartitionEpoch(ctx context.Context, topic string, index, epoch int32) (int32, error)
	// reassign starts moving a partition to the target replicas, or
	// cancels its reassignment when target is nil (KIP-455); the
	// controller completes it.
	reassign(ctx context.Context, topic string, index int32, target []int32) (int64, error)
	// electLeader runs a preferred (or, with unclean, a leaderless
	// partition's unclean) leader election an operator asked for.
	electLeader(ctx context.Context, topic string, index int32, unclean bool) error
	// subscribe returns a channel that receives a value after every
	// snapshot change (coalesced), until ctx ends.
	subscribe(ctx context.Context) <-chan struct{}
}

// Errors a metaStore returns, matched with errors.Is.
var (
	errTopicExists  = errors.New("broker: topic already exists")
	errMetaConflict = errors.New("broker: metadata changed concurrently")
	// errMetaIndeterminate: a metadata write failed after it may have
	// been sent, and re-reading could not tell whether it applied.
	errMetaIndeterminate = errors.New("broker: the metadata write's outcome is unknown")
	errNotEnoughBrokers  = errors.New("broker: not enough live brokers")
)

// metaView is one consistent snapshot of the cluster metadata.
type metaView struct {
	revision     int64
	clusterID    string
	controllerID int32
	brokers      []brokerView // live brokers, by id
	// lastSeen are the brokers this process has seen registered, by
	// id, as last registered, those whose registration is gone among
	// them (nil: none kept). See brokerAddr.
	lastSeen   map[int32]brokerView
	topics     map[string]*topicView
	topicsByID map[[16]byte]*topicView
	// deleted are the ids of deleted topics (their tombstones): the only
	// reason a broker removes a log directory.
	deleted map[[16]byte]bool
	// unreadable are topics and partitions whose records cannot be
	// decoded: topic name, then partition index (-1: the topic record),
	// then the reason. They are offline, their data kept.
	unreadable map[string]map[int32]string
	// brokerConfigs are the dynamic broker configs by broker id, the
	// cluster-wide default under defaultBrokerConfigs. Read-only.
	brokerConfigs map[int32]map[string]string
	// clientQuotas are the client quotas by entity. Read-only.
	clientQuotas map[metadata.QuotaEntity]map[string]float64
	// scramCredentials are the users' SCRAM credentials by user and
	// mechanism. Read-only.
	scramCredentials map[string]map[string]metadata.ScramCredential
	// aclEntries are the ACL entries by resource pattern, and acls
	// their index. Read-only.
	aclEntries map[metadata.ACLResource][]metadata.ACLEntry
	acls       *acl.Set
}

// unreadableReason says why a topic's partition cannot be served because
// of its metadata record ("" when it can).
func (v *metaView) unreadableReason(topic string, index int32) string {
	m := v.unreadable[topic]
	if m == nil {
		return ""
	}
	if r, ok := m[-1]; ok {
		return r
	}
	return m[index]
}

type brokerView struct {
	id   int32
	host string
	port int32
	rack *string
	// shuttingDown: in a controlled shutdown, so leaders do not add it
	// to their ISRs.
	shuttingDown bool
	// incarnation is the etcd revision of the broker's registration
	// (metadata.Broker.Incarnation; 0 when unknown).
	incarnation int64
}

func (v *metaView) broker(id int32) (brokerView, bool) {
	i := sort.Search(len(v.brokers), func(i int) bool { return v.brokers[i].id >= id })
	if i < len(v.brokers) && v.brokers[i].id == id {
		return v.brokers[i], true
	}
	return brokerView{}, false
}

// brokerAddr is broker id's Kafka address as registered or, when its
// registration is gone, as it was last registered (ok false for a broker
// this process never saw). For the paths between brokers that a missing
// registration must not cut: a registration can vanish while the broker
// lives and serves (its lease expired unrenewed after an etcd restart),
// and its followers' fetchers, or a leader asking its followers whether
// its leadership holds, must still reach it. Decisions about liveness
// (ISR membership, placement, leader election) use broker instead.
func (v *metaView) brokerAddr(id int32) (string, bool) {
	bv, ok := v.broker(id)
	if !ok {
		bv, ok = v.lastSeen[id]
	}
	if !ok {
		return "", false
	}
	return net.JoinHostPort(bv.host, strconv.Itoa(int(bv.port))), true
}

func (v *metaView) brokerIDs() []int32 {
	ids := make([]int32, len(v.brokers))
	for i, b := range v.brokers {
		ids[i] = b.id
	}
	return ids
}

// placementOrder lists the live brokers for replica placement: when
// brokers have racks, alternating between racks (the first broker of each
// rack in rack order, then the second of each, ...), as Kafka's
// rack-aware assignment does, so that consecutive brokers, and therefore
// a partition's replicas, sit in different racks. Brokers without a rack
// form a rack of their own.
func (v *metaView) placementOrder() []int32 {
	byRack := map[string][]int32{}
	var racks []string
	for _, b := range v.brokers {
		r := ""
		if b.rack != nil {
			r = *b.rack
		}
		if _, ok := byRack[r]; !ok {
			racks = append(racks, r)
		}
		byRack[r] = append(byRack[r], b.id)
	}
	if len(racks) <= 1 {
		return v.brokerIDs()
	}
	sort.Strings(racks)
	out := make([]int32, 0, len(v.brokers))
	for i := 0; len(out) < len(v.brokers); i++ {
		for _, r := range racks {
			if ids := byRack[r]; i < len(ids) {
				out = append(out, ids[i])
			}
		}
	}
	return out
}

// sortedTopicNames returns the topic names in order.
func (v *metaView) sortedTopicNames() []string {
	names := make([]string, 0, len(v.topics))
	for n := range v.topics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// topicList returns the topics as a slice for the replica manager.
func (v *metaView) topicList() []topicView {
	out := make([]topicView, 0, len(v.topics))
	for _, n := range v.sortedTopicNames() {
		out = append(out, *v.topics[n])
	}
	return out
}

// validateTopicName applies Kafka's rules: 1 to 249 characters of
// [a-zA-Z0-9._-], not "." or "..".
func validateTopicName(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("topic name %q is illegal", name)
	}
	if len(name) > 249 {
		return fmt.Errorf("topic name is longer than 249 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q contains a character other than ASCII alphanumerics, '.', '_' and '-'", name)
		}
	}
	return nil
}

// assignReplicas spreads count partitions of rf replicas over the live
// brokers round-robin, starting at start, as Kafka's default placement
// does (without racks). Partition i's leader is its first replica, and
// its followers come after it at the offsets followerOffset gives.
func assignReplicas(brokers []int32, first, count int32, rf int16, start, shift int) ([]partitionView, error) {
	if int(rf) > len(brokers) || rf < 1 {
		return nil, fmt.Errorf("%w: replication factor %d, %d live brokers", errNotEnoughBrokers, rf, len(brokers))
	}
	n := len(brokers)
	out := make([]partitionView, 0, count)
	for i := int32(0); i < count; i++ {
		idx := first + i
		pos := (start + int(idx)) % n
		replicas := make([]int32, rf)
		replicas[0] = brokers[pos]
		for j := 1; j < int(rf); j++ {
			replicas[j] = brokers[(pos+followerOffset(n, start+int(idx), shift, j-1))%n]
		}
		out = append(out, partitionView{index: idx, replicas: replicas, isr: append([]int32(nil), replicas...), leader: replicas[0]})
	}
	return out, nil
}

// followerOffset is how far after a partition's leader, in the placement
// order of n brokers, its follower j (0: the first) goes, the partition
// being the at-th of the placement's round-robin: 1 + (shift + round + j)
// mod (n-1), as Kafka's replica shift. The first follower is where the
// leadership goes when the leader fails (the first live in-sync replica
// in order). Always the next broker, as a plain round-robin does, a lost
// broker's partitions would all be led by one broker: of three, it would
// lead two thirds. The shift moves on with each round of the brokers, so
// a broker's partitions have their first followers on every other broker
// in turn; shift (placementShift) spreads the topics that fill no round.
func followerOffset(n, at, shift, j int) int {
	if n <= 1 {
		return 0
	}
	return 1 + (shift+at/n+j)%(n-1)
}

// placeReplicas assigns count partitions from index first over the live
// brokers of view: round-robin over the rack-alternated order from start,
// and each further replica the next broker, in the order followerOffset
// walks with shift, whose rack the partition does not use yet (any unused
// broker once every rack is used), so that no two replicas share a rack
// while there are racks to spare, even when racks hold unequal numbers of
// brokers.
func placeReplicas(view *metaView, first, count int32, rf int16, start, shift int) ([]partitionView, error) {
	order := view.placementOrder()
	parts, err := assignReplicas(order, first, count, rf, start, shift)
	if err != nil {
		return nil, err
	}
	rackOf := map[int32]string{}
	for _, b := range view.brokers {
		if b.rack != nil {
			rackOf[b.id] = *b.rack
		}
	}
	if len(rackOf) == 0 {
		return parts, nil
	}
	n := len(order)
	for pi := range parts {
		p := &parts[pi]
		pos := (start + int(p.index)) % n
		chosen := []int32{order[pos]}
		used := map[string]bool{rackOf[order[pos]]: true}
		for len(chosen) < int(rf) {
			pick := int32(-1)
			for _, anyRack := range []bool{false, true} {
				for j := 0; j < n-1 && pick < 0; j++ {
					id := order[(pos+followerOffset(n, start+int(p.index), shift, j))%n]
					if !slices.Contains(chosen, id) && (anyRack || !used[rackOf[id]]) {
						pick = id
					}
				}
				if pick >= 0 {
					break
				}
			}
			chosen = append(chosen, pick)
			used[rackOf[pick]] = true
		}
		p.replicas, p.isr, p.leader = chosen, slices.Clone(chosen), chosen[0]
	}
	return parts, nil
}

// placementShift is the follower shift (followerOffset) for placeReplicas
// to place count partitions from index first at start with: the one that
// adds the fewest partitions to the pairs of a leader and a first
// follower the cluster (and placed, partitions not in it yet) has most of, the first such at or after a random
// one. Then a broker's partitions go, when it fails, to every other
// broker alike: a hundred single-partition topics of a random shift, as
// Kafka's, would send some brokers twice the others' share.
func placementShift(view *metaView, placed []partitionView, first, count int32, rf int16, start int) int {
	n := len(view.placementOrder())
	if rf < 2 || n < 3 {
		return 0
	}
	pairs := map[[2]int32]int{}
	count1 := func(ps []partitionView) {
		for _, p := range ps {
			if len(p.replicas) > 1 {
				pairs[[2]int32{p.replicas[0], p.replicas[1]}]++
			}
		}
	}
	for _, tv := range view.topics {
		count1(tv.partitions)
	}
	count1(placed)
	from := randomStart(n - 1)
	best, least := from, -1
	for k := range n - 1 {
		shift := (from + k) % (n - 1)
		parts, err := placeReplicas(view, first, count, rf, start, shift)
		if err != nil {
			return from
		}
		added := map[[2]int32]int{}
		load := 0
		for _, p := range parts {
			pair := [2]int32{p.replicas[0], p.replicas[1]}
			load += pairs[pair] + added[pair]
			added[pair]++
		}
		if least < 0 || load < least {
			best, least = shift, load
		}
	}
	return best
}

// isrExit is what metaStore.leaveISR did.
type isrExit int

const (
	// isrUnchanged: the partition does not count on the broker, or on
	// it alone; nothing was written.
	isrUnchanged isrExit = iota
	// isrLeft: the broker left the ISR (or the eligible leader
	// replicas).
	isrLeft
	// isrRecovering: the broker stays in the ISR, recovering.
	isrRecovering
)
