package group

import (
	"context"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// KIP-848 consumer groups: members heartbeat with ConsumerGroupHeartbeat,
// the coordinator computes a target assignment with a server-side assignor
// whenever the group epoch moves (membership, subscriptions or the
// subscribed topics' partition counts changed), and reconciles each member
// towards it: partitions another member must give up first are revoked
// from it, and handed out once released.
//
// Persistence: the group epoch is stored as Kafka's ConsumerGroupMetadata
// record (key version 3); members, target and current assignments are not
// (Kafka stores them as record types 4-8). After a coordinator move or a
// restart the group's members therefore get UNKNOWN_MEMBER_ID and rejoin
// with epoch 0, keeping their committed offsets; the epoch keeps growing.

const (
	memberEpochLeave       = -1
	memberEpochStaticLeave = -2
)

type consumerGroup struct {
	s               *shard
	id              string
	epoch           int32 // group epoch
	assignmentEpoch int32 // epoch of the target assignment
	members         map[string]*cmember
	static          map[string]string // group.instance.id -> member id
	target          map[string]partitionSet
	topics          map[string]topicInfo // subscribed topics as of the target
	stateTime       time.Time
	storedEpoch     int32 // epoch last written to the log; -1 none
	storedSize      int64
	storing         bool
}

type cmember struct {
	id, instanceID, rackID string
	clientID, clientHost   string
	epoch, prevEpoch       int32
	rebalanceTimeout       time.Duration
	topics                 []string // subscribed topic names, sorted
	regex                  string
	re                     *regexp.Regexp
	// mayDescribe is the member's client's (ClientInfo.MayDescribe, as
	// of its last heartbeat; nil: every topic).
	mayDescribe func(topic string) bool
	assignor    string
	assigned    partitionSet // partitions the member owns
	revoking    partitionSet // partitions it must give up
	session     *timer
	revokeTimer *timer
}

func newConsumerGroup(s *shard, id string) *consumerGroup {
	return &consumerGroup{
		s:           s,
		id:          id,
		members:     map[string]*cmember{},
		static:      map[string]string{},
		target:      map[string]partitionSet{},
		topics:      map[string]topicInfo{},
		stateTime:   s.now(),
		storedEpoch: -1,
	}
}

func (cg *consumerGroup) stateName() string {
	switch {
	case len(cg.members) == 0:
		return "Empty"
	case cg.epoch > cg.assignmentEpoch:
		return "Assigning"
	}
	for _, m := range cg.members {
		if m.epoch != cg.assignmentEpoch || len(m.revoking) > 0 || !m.assigned.equal(cg.target[m.id]) {
			return "Reconciling"
		}
	}
	return "Stable"
}

func (cg *consumerGroup) stopTimers() {
	for _, m := range cg.members {
		cg.s.cancelTimer(m.session)
		cg.s.cancelTimer(m.revokeTimer)
	}
}

// isSubscribed reports whether a member subscribes to the topic.
func (cg *consumerGroup) isSubscribed(topic string) bool {
	for _, m := range cg.members {
		if _, ok := slices.BinarySearch(m.topics, topic); ok {
			return true
		}
		if m.matches(topic) {
			return true
		}
	}
	return false
}

// matches reports whether the member's regular expression subscribes it
// to topic: it matches, and the member's client may see the topic.
func (m *cmember) matches(topic string) bool {
	return m.re != nil && m.re.MatchString(topic) && (m.mayDescribe == nil || m.mayDescribe(topic))
}

// ConsumerGroupHeartbeat handles a ConsumerGroupHeartbeat request (v0-v1).
func (c *Coordinator) ConsumerGroupHeartbeat(ctx context.Context, client ClientInfo, req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	if code, msg := validateConsumerHeartbeat(c.cfg, req); code != 0 {
		return cghError(req, code, msg)
	}
	s, code := c.shardFor(req.Group)
	if code != 0 {
		return cghError(req, code, "")
	}
	resp, code := await(ctx, s, func(reply func(*kmsg.ConsumerGroupHeartbeatResponse)) { reply(s.consumerHeartbeat(client, req)) })
	if code != 0 {
		return cghError(req, code, "")
	}
	return resp
}

func cghError(req *kmsg.ConsumerGroupHeartbeatRequest, code int16, msg string) *kmsg.ConsumerGroupHeartbeatResponse {
	r := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	r.ErrorCode = code
	if msg != "" {
		r.ErrorMessage = strPtr(msg)
	}
	return r
}

// validateConsumerHeartbeat checks the request's shape, as Kafka does
// before looking at the group.
func validateConsumerHeartbeat(cfg Config, req *kmsg.ConsumerGroupHeartbeatRequest) (int16, string) {
	switch {
	case req.Group == "":
		return codeInvalidGroupID, "GroupId can't be empty."
	case req.Version >= 1 && req.MemberID == "":
		return codeInvalidRequest, "MemberId can't be empty."
	case req.MemberEpoch != 0 && req.MemberID == "":
		return codeInvalidRequest, "MemberId can't be empty."
	case req.MemberEpoch < memberEpochStaticLeave:
		return codeInvalidRequest, "MemberEpoch is invalid."
	case req.MemberEpoch == memberEpochStaticLeave && req.InstanceID == nil:
		return codeInvalidRequest, "InstanceId can't be null when leaving temporarily."
	case req.InstanceID != nil && *req.InstanceID == "":
		return codeInvalidRequest, "InstanceId can't be empty."
	case req.RackID != nil && *req.RackID == "":
		return codeInvalidRequest, "RackId can't be empty."
	}
	if req.MemberEpoch == 0 {
		switch {
		case req.RebalanceTimeoutMillis < 0:
			return codeInvalidRequest, "RebalanceTimeoutMs must be provided in first request."
		case req.Topics == nil || len(req.Topics) > 0:
			return codeInvalidRequest, "TopicPartitions must be empty when (re-)joining."
		case req.SubscribedTopicNames == nil && req.SubscribedTopicRegex == nil:
			return codeInvalidRequest, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
		}
	}
	if req.ServerAssignor != nil && !slices.Contains(cfg.ConsumerAssignors, *req.ServerAssignor) {
		return codeUnsupportedAssignor, "ServerAssignor " + *req.ServerAssignor + " is not supported."
	}
	if req.SubscribedTopicRegex != nil && *req.SubscribedTopicRegex != "" {
		if _, err := regexp.Compile(*req.SubscribedTopicRegex); err != nil {
			return codeInvalidRegularExpression, err.Error()
		}
	}
	return 0, ""
}

func (s *shard) consumerHeartbeat(client ClientInfo, req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	e := s.groups[req.Group]
	if e != nil && e.dead {
		return cghError(req, codeCoordinatorNotAvailable, "")
	}
	if e == nil {
		if req.MemberEpoch != 0 {
			return cghError(req, codeUnknownMemberID, "Group "+req.Group+" not found.")
		}
		if s.groupsFull() {
			return cghError(req, codePolicyViolation, "The coordinator holds group.coordinator.max.groups groups.")
		}
		e = &groupEntry{id: req.Group, consumer: newConsumerGroup(s, req.Group), offsets: map[topicPartition]*offsetEntry{}}
		s.groups[req.Group] = e
		s.numGroups.Store(int64(len(s.groups)))
	}
	if e.classic != nil {
		if !e.isEmptyGroup() {
			return cghError(req, codeGroupIDNotFound, "Group "+req.Group+" is not a consumer group.")
		}
		if req.MemberEpoch != 0 {
			return cghError(req, codeUnknownMemberID, "")
		}
		s.convertToConsumer(e)
	}
	cg := e.consumer
	if req.MemberEpoch != memberEpochLeave && req.MemberEpoch != memberEpochStaticLeave && cg.subscriptionGrowsPast(req, s.c.cfg.MaxMetadataBytes) {
		// The members' subscriptions would hold more than
		// group.max.metadata.bytes: the group is full by bytes.
		return cghError(req, codeGroupMaxSizeReached, "The group's subscriptions would exceed group.max.metadata.bytes.")
	}
	switch req.MemberEpoch {
	case memberEpochLeave, memberEpochStaticLeave:
		return cg.leave(req)
	case 0:
		return cg.join(client, req)
	}
	m := cg.members[req.MemberID]
	if m == nil {
		return cghError(req, codeUnknownMemberID, "")
	}
	if req.MemberEpoch > m.epoch {
		return cghError(req, codeFencedMemberEpoch, "")
	}
	if req.MemberEpoch < m.epoch {
		// A lost response: the member may be one epoch behind if it
		// owns nothing it was not given.
		if req.MemberEpoch != m.prevEpoch || req.Topics == nil || !ownedSubset(req.Topics, m.assigned) {
			return cghError(req, codeFencedMemberEpoch, "")
		}
	}
	return cg.heartbeat(m, client, req, false, false)
}

// subscriptionGrowsPast reports whether req's subscription (topic names
// and regular expression; a field req leaves unset keeps the member's)
// grows the bytes the members' subscriptions hold past max. The group is
// summed only when the member's own subscription grows.
func (cg *consumerGroup) subscriptionGrowsPast(req *kmsg.ConsumerGroupHeartbeatRequest, max int) bool {
	m := cg.members[req.MemberID]
	old := 0
	if m != nil {
		old = memberSubscriptionBytes(m.topics, m.regex)
	}
	names, regex := req.SubscribedTopicNames, ""
	if names == nil && m != nil {
		names = m.topics
	}
	if req.SubscribedTopicRegex != nil {
		regex = *req.SubscribedTopicRegex
	} else if m != nil {
		regex = m.regex
	}
	n := memberSubscriptionBytes(names, regex)
	if n <= old {
		return false
	}
	for id, o := range cg.members {
		if id != req.MemberID {
			n += memberSubscriptionBytes(o.topics, o.regex)
		}
	}
	return n > max
}

func memberSubscriptionBytes(topics []string, regex string) int {
	n := len(regex)
	for _, t := range topics {
		n += len(t)
	}
	return n
}

func ownedSubset(owned []kmsg.ConsumerGroupHeartbeatRequestTopic, of partitionSet) bool {
	for _, t := range owned {
		for _, p := range t.Partitions {
			if _, ok := of[idPartition{t.TopicID, p}]; !ok {
				return false
			}
		}
	}
	return true
}

func (cg *consumerGroup) join(client ClientInfo, req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	id := req.MemberID
	if id == "" {
		id = newMemberID("")[1:]
	}
	instanceID := deref(req.InstanceID)
	if instanceID != "" {
		if old, ok := cg.static[instanceID]; ok && old != id {
			om := cg.members[old]
			if om.epoch != memberEpochStaticLeave {
				return cghError(req, codeUnreleasedInstanceID, "Static member "+instanceID+" is still in the group.")
			}
			// The restarted static member takes the old one's place,
			// epoch and partitions: no rebalance.
			cg.s.cancelTimer(om.session)
			cg.s.cancelTimer(om.revokeTimer)
			delete(cg.members, old)
			nm := *om
			nm.id, nm.session, nm.revokeTimer = id, nil, nil
			nm.epoch = om.prevEpoch
			cg.members[id] = &nm
			cg.static[instanceID] = id
			if t, ok := cg.target[old]; ok {
				delete(cg.target, old)
				cg.target[id] = t
			}
			return cg.heartbeat(&nm, client, req, true, false)
		}
	}
	m := cg.members[id]
	if m == nil {
		if len(cg.members) >= cg.s.c.cfg.ConsumerMaxSize {
			return cghError(req, codeGroupMaxSizeReached, "")
		}
		m = &cmember{id: id, instanceID: instanceID, assigned: partitionSet{}, revoking: partitionSet{}}
		cg.members[id] = m
		if instanceID != "" {
			cg.static[instanceID] = id
		}
		cg.s.c.log.Info("group: member joined", "group", cg.id, "member", id, "client_id", client.ClientID, "client_host", client.ClientHost)
		return cg.heartbeat(m, client, req, true, true)
	} else {
		// A member rejoining after it was fenced owns nothing now.
		m.assigned, m.revoking = partitionSet{}, partitionSet{}
		cg.s.cancelTimer(m.revokeTimer)
		m.epoch, m.prevEpoch = 0, 0
	}
	return cg.heartbeat(m, client, req, true, false)
}

// heartbeat applies a member's heartbeat: subscription changes, the
// target assignment, reconciliation; it answers with the member's epoch
// and, when it changed or was asked for, its assignment. All changes of one
// heartbeat (a new member, its subscription, topic metadata) move the
// group epoch once.
func (cg *consumerGroup) heartbeat(m *cmember, client ClientInfo, req *kmsg.ConsumerGroupHeartbeatRequest, joined, changed bool) *kmsg.ConsumerGroupHeartbeatResponse {
	cfg := cg.s.c.cfg
	m.clientID, m.clientHost, m.mayDescribe = client.ClientID, client.ClientHost, client.MayDescribe
	if req.RebalanceTimeoutMillis > 0 {
		m.rebalanceTimeout = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	if req.RackID != nil {
		m.rackID = *req.RackID
	}
	if req.SubscribedTopicNames != nil {
		names := slices.Clone(req.SubscribedTopicNames)
		sort.Strings(names)
		names = slices.Compact(names)
		if !slices.Equal(names, m.topics) {
			m.topics, changed = names, true
		}
	}
	if req.SubscribedTopicRegex != nil && *req.SubscribedTopicRegex != m.regex {
		m.regex, m.re, changed = *req.SubscribedTopicRegex, nil, true
		if m.regex != "" {
			m.re = regexp.MustCompile(m.regex) // validated before
		}
	}
	if req.ServerAssignor != nil && *req.ServerAssignor != m.assignor {
		m.assignor, changed = *req.ServerAssignor, true
	}
	if cg.refreshTopics() {
		changed = true
	}
	if changed {
		cg.bumpEpoch()
	}
	if cg.epoch > cg.assignmentEpoch {
		cg.computeTarget()
	}
	before := m.assigned.clone()
	cg.reconcile(m, req.Topics)
	cg.resetSession(m)

	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	resp.MemberID = strPtr(m.id)
	resp.MemberEpoch = m.epoch
	resp.HeartbeatIntervalMillis = int32(cfg.ConsumerHeartbeatInterval / time.Millisecond)
	full := req.RebalanceTimeoutMillis != -1 && (req.SubscribedTopicNames != nil || req.SubscribedTopicRegex != nil) && req.Topics != nil
	if joined || full || !before.equal(m.assigned) {
		a := kmsg.NewConsumerGroupHeartbeatResponseAssignment()
		a.Topics = []kmsg.ConsumerGroupHeartbeatResponseAssignmentTopic{}
		for _, ip := range m.assigned.sorted() {
			if n := len(a.Topics); n == 0 || a.Topics[n-1].TopicID != ip.topic {
				a.Topics = append(a.Topics, kmsg.ConsumerGroupHeartbeatResponseAssignmentTopic{TopicID: ip.topic})
			}
			t := &a.Topics[len(a.Topics)-1]
			t.Partitions = append(t.Partitions, ip.partition)
		}
		resp.Assignment = &a
	}
	return resp
}

func (cg *consumerGroup) resetSession(m *cmember) {
	cg.s.cancelTimer(m.session)
	m.session = cg.s.after(cg.s.c.cfg.ConsumerSessionTimeout, func() {
		m.session = nil
		if cg.members[m.id] == m {
			cg.s.c.log.Debug("group: consumer group member session expired", "group", cg.id, "member", m.id)
			cg.removeMember(m)
		}
	})
}

func (cg *consumerGroup) leave(req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	resp.MemberID = strPtr(req.MemberID)
	resp.MemberEpoch = req.MemberEpoch
	m := cg.members[req.MemberID]
	if m == nil {
		if id, ok := cg.static[deref(req.InstanceID)]; ok && req.InstanceID != nil {
			m = cg.members[id]
		}
	}
	if m == nil {
		return cghError(req, codeUnknownMemberID, "")
	}
	if req.MemberEpoch == memberEpochStaticLeave {
		// A static member leaving temporarily keeps its partitions
		// until its session times out or it comes back.
		if m.epoch != memberEpochStaticLeave {
			m.prevEpoch, m.epoch = m.epoch, memberEpochStaticLeave
		}
		cg.resetSession(m)
		return resp
	}
	cg.removeMember(m)
	return resp
}

// removeMember fences a member out: its partitions become free and the
// group epoch moves so the others are rebalanced.
func (cg *consumerGroup) removeMember(m *cmember) {
	cg.s.cancelTimer(m.session)
	cg.s.cancelTimer(m.revokeTimer)
	delete(cg.members, m.id)
	delete(cg.target, m.id)
	if m.instanceID != "" && cg.static[m.instanceID] == m.id {
		delete(cg.static, m.instanceID)
	}
	if len(cg.members) == 0 {
		cg.stateTime = cg.s.now()
	}
	cg.bumpEpoch()
}

// bumpEpoch moves the group epoch and stores it (the write is batched
// with others; members do not wait for it, see the package comment).
func (cg *consumerGroup) bumpEpoch() {
	cg.epoch++
	cg.s.c.log.Info("group: new group epoch", "group", cg.id, "epoch", cg.epoch, "members", len(cg.members))
	cg.store()
}

func (cg *consumerGroup) store() {
	if cg.storing || cg.storedEpoch == cg.epoch {
		return
	}
	cg.storing = true
	epoch := cg.epoch
	key := appendConsumerGroupKey(nil, cg.id)
	value := appendConsumerGroupValue(nil, epoch)
	cg.s.appendRecords([]recordbatch.Record{{Key: key, Value: value}}, func(err error) {
		cg.storing = false
		e := cg.s.groups[cg.id]
		if e == nil || e.consumer != cg {
			return
		}
		if err == nil {
			size := int64(len(key) + len(value) + recordOverhead)
			cg.s.liveBytes += size - cg.storedSize
			cg.storedEpoch, cg.storedSize = epoch, size
		}
		if cg.epoch != cg.storedEpoch && err == nil {
			cg.store()
		}
	})
}

// refreshTopics re-reads the subscribed topics' ids and partition counts;
// it reports a change.
func (cg *consumerGroup) refreshTopics() bool {
	want := map[string]bool{}
	var names []string
	for _, m := range cg.members {
		for _, t := range m.topics {
			want[t] = true
		}
		if m.re != nil {
			if names == nil && cg.s.c.topics != nil {
				names = cg.s.c.topics.TopicNames()
			}
			for _, t := range names {
				if m.matches(t) {
					want[t] = true
				}
			}
		}
	}
	next := map[string]topicInfo{}
	for t := range want {
		if cg.s.c.topics == nil {
			continue
		}
		if id, n, ok := cg.s.c.topics.TopicByName(t); ok && n > 0 {
			next[t] = topicInfo{id: id, partitions: n}
		}
	}
	if len(next) == len(cg.topics) {
		same := true
		for t, info := range next {
			if cg.topics[t] != info {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	cg.topics = next
	return true
}

// memberTopics is the topics a member subscribes to that exist, sorted.
func (cg *consumerGroup) memberTopics(m *cmember) []string {
	var out []string
	for t := range cg.topics {
		if _, ok := slices.BinarySearch(m.topics, t); ok || m.matches(t) {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// computeTarget runs the assignor for the current epoch. The assignor is
// the one most members ask for (the first configured when none asks).
func (cg *consumerGroup) computeTarget() {
	cfg := cg.s.c.cfg
	votes := map[string]int{}
	for _, m := range cg.members {
		if m.assignor != "" {
			votes[m.assignor]++
		}
	}
	name := cfg.ConsumerAssignors[0]
	for _, a := range cfg.ConsumerAssignors {
		if votes[a] > votes[name] {
			name = a
		}
	}
	ms := make([]assignMember, 0, len(cg.members))
	for _, m := range cg.members {
		ms = append(ms, assignMember{id: m.id, topics: cg.memberTopics(m), previous: cg.target[m.id]})
	}
	cg.target = assign(name, ms, cg.topics)
	cg.assignmentEpoch = cg.epoch
}

// reconcile moves a member towards its target: first it must give up what
// the target takes away (its epoch stays until it has); then it gets what
// the target adds as soon as no other member still owns it, and its epoch
// becomes the target's.
func (cg *consumerGroup) reconcile(m *cmember, owned []kmsg.ConsumerGroupHeartbeatRequestTopic) {
	if m.epoch == memberEpochStaticLeave {
		return
	}
	if len(m.revoking) > 0 && owned != nil {
		still := partitionSet{}
		for _, t := range owned {
			for _, p := range t.Partitions {
				ip := idPartition{t.TopicID, p}
				if _, ok := m.revoking[ip]; ok {
					still[ip] = struct{}{}
				}
			}
		}
		m.revoking = still
		if len(still) == 0 {
			cg.s.cancelTimer(m.revokeTimer)
			m.revokeTimer = nil
		}
	}
	if len(m.revoking) > 0 {
		return
	}
	target := cg.target[m.id]
	remove := partitionSet{}
	for ip := range m.assigned {
		if _, ok := target[ip]; !ok {
			remove[ip] = struct{}{}
		}
	}
	if len(remove) > 0 {
		for ip := range remove {
			delete(m.assigned, ip)
		}
		m.revoking = remove
		cg.s.cancelTimer(m.revokeTimer)
		timeout := m.rebalanceTimeout
		if timeout <= 0 {
			timeout = cg.s.c.cfg.ConsumerSessionTimeout
		}
		m.revokeTimer = cg.s.after(timeout, func() {
			m.revokeTimer = nil
			if cg.members[m.id] == m && len(m.revoking) > 0 {
				cg.s.c.log.Debug("group: consumer group member did not revoke in time", "group", cg.id, "member", m.id)
				cg.removeMember(m)
			}
		})
		return
	}
	owners := cg.owners(m)
	for ip := range target {
		if _, ok := m.assigned[ip]; ok {
			continue
		}
		if _, taken := owners[ip]; !taken {
			m.assigned[ip] = struct{}{}
		}
	}
	if m.epoch != cg.assignmentEpoch {
		m.prevEpoch, m.epoch = m.epoch, cg.assignmentEpoch
	}
}

// owners are the partitions other members own or are still revoking.
func (cg *consumerGroup) owners(except *cmember) partitionSet {
	out := partitionSet{}
	for _, o := range cg.members {
		if o == except {
			continue
		}
		for ip := range o.assigned {
			out[ip] = struct{}{}
		}
		for ip := range o.revoking {
			out[ip] = struct{}{}
		}
	}
	return out
}

// validateCommit is the member check for an offset commit to a consumer
// group. A commit one epoch or more behind is accepted for partitions the
// member still owns (Kafka 4.3's relaxed check), since a member commits
// while it revokes.
func (cg *consumerGroup) validateCommit(req *kmsg.OffsetCommitRequest) int16 {
	if req.Generation < 0 && req.MemberID == "" {
		if len(cg.members) == 0 {
			return 0
		}
		return codeUnknownMemberID
	}
	m := cg.members[req.MemberID]
	if m == nil {
		return codeUnknownMemberID
	}
	if req.Version < 9 {
		return codeUnsupportedVersion
	}
	switch {
	case req.Generation > m.epoch:
		return codeFencedMemberEpoch
	case req.Generation < m.epoch:
		for _, t := range req.Topics {
			name := t.Topic
			var id [16]byte
			if req.Version >= 10 {
				id = t.TopicID
			} else if info, ok := cg.topics[name]; ok {
				id = info.id
			} else {
				return codeStaleMemberEpoch
			}
			for _, p := range t.Partitions {
				ip := idPartition{id, p.Partition}
				_, a := m.assigned[ip]
				_, r := m.revoking[ip]
				if !a && !r {
					return codeStaleMemberEpoch
				}
			}
		}
	}
	return 0
}

// validateFetch is the member check of OffsetFetch v9+.
func (cg *consumerGroup) validateFetch(memberID string, epoch int32) int16 {
	if memberID == "" && epoch < 0 {
		return 0
	}
	m := cg.members[memberID]
	switch {
	case m == nil:
		return codeUnknownMemberID
	case epoch > m.epoch:
		return codeFencedMemberEpoch
	case epoch < m.epoch:
		return codeStaleMemberEpoch
	}
	return 0
}

// convertToClassic turns an empty consumer group into a classic one (a
// classic member joined); its offsets stay.
func (s *shard) convertToClassic(e *groupEntry) {
	cg := e.consumer
	cg.stopTimers()
	if cg.storedEpoch >= 0 {
		s.appendRecords([]recordbatch.Record{{Key: appendConsumerGroupKey(nil, e.id)}}, nil)
		s.liveBytes -= cg.storedSize
	}
	e.consumer = nil
	e.classic = newClassicGroup(s, e.id)
}

// convertToConsumer turns an empty classic group into a consumer group.
func (s *shard) convertToConsumer(e *groupEntry) {
	g := e.classic
	g.stopTimers()
	epoch := g.generation
	if g.stored != nil {
		s.appendRecords([]recordbatch.Record{{Key: appendGroupKey(nil, e.id)}}, nil)
		s.setStored(g, nil, nil)
	}
	e.classic = nil
	e.consumer = newConsumerGroup(s, e.id)
	e.consumer.epoch = epoch
	e.consumer.assignmentEpoch = epoch
}

// ConsumerGroupDescribe handles a ConsumerGroupDescribe request (v0-v1).
func (c *Coordinator) ConsumerGroupDescribe(ctx context.Context, req *kmsg.ConsumerGroupDescribeRequest) *kmsg.ConsumerGroupDescribeResponse {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewConsumerGroupDescribeResponseGroup()
		dg.Group = id
		dg.AuthorizedOperations = -2147483648
		if out, code := onGroupShard(ctx, c, id, func(s *shard, reply func(kmsg.ConsumerGroupDescribeResponseGroup)) {
			reply(s.describeConsumerGroup(req.Version, id))
		}); code != 0 {
			dg.ErrorCode = code
		} else {
			dg = out
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (s *shard) describeConsumerGroup(version int16, id string) kmsg.ConsumerGroupDescribeResponseGroup {
	dg := kmsg.NewConsumerGroupDescribeResponseGroup()
	dg.Group = id
	dg.AuthorizedOperations = -2147483648
	e := s.groups[id]
	switch {
	case e == nil || e.dead:
		dg.ErrorCode = codeGroupIDNotFound
		dg.ErrorMessage = strPtr("Group " + id + " not found.")
		return dg
	case e.consumer == nil:
		dg.ErrorCode = codeGroupIDNotFound
		dg.ErrorMessage = strPtr("Group " + id + " is not a consumer group.")
		return dg
	}
	cg := e.consumer
	dg.State = cg.stateName()
	dg.Epoch, dg.AssignmentEpoch = cg.epoch, cg.assignmentEpoch
	dg.AssignorName = s.c.cfg.ConsumerAssignors[0]
	ids := make([]string, 0, len(cg.members))
	for mid := range cg.members {
		ids = append(ids, mid)
	}
	sort.Strings(ids)
	for _, mid := range ids {
		m := cg.members[mid]
		dm := kmsg.NewConsumerGroupDescribeResponseGroupMember()
		dm.MemberID, dm.MemberEpoch, dm.ClientID, dm.ClientHost = m.id, m.epoch, m.clientID, m.clientHost
		if m.instanceID != "" {
			dm.InstanceID = strPtr(m.instanceID)
		}
		if m.rackID != "" {
			dm.RackID = strPtr(m.rackID)
		}
		dm.SubscribedTopics = slices.Clone(m.topics)
		if dm.SubscribedTopics == nil {
			dm.SubscribedTopics = []string{}
		}
		if m.regex != "" {
			dm.SubscribedTopicRegex = strPtr(m.regex)
		}
		dm.Assignment = s.describeAssignment(cg, m.assigned)
		dm.TargetAssignment = s.describeAssignment(cg, cg.target[m.id])
		dm.MemberType = 1 // consumer protocol
		dg.Members = append(dg.Members, dm)
	}
	return dg
}

func (s *shard) describeAssignment(cg *consumerGroup, set partitionSet) kmsg.Assignment {
	a := kmsg.NewAssignment()
	a.TopicPartitions = []kmsg.AssignmentTopicPartition{}
	names := map[[16]byte]string{}
	for n, info := range cg.topics {
		names[info.id] = n
	}
	for _, ip := range set.sorted() {
		if n := len(a.TopicPartitions); n == 0 || a.TopicPartitions[n-1].TopicID != ip.topic {
			a.TopicPartitions = append(a.TopicPartitions, kmsg.AssignmentTopicPartition{TopicID: ip.topic, Topic: names[ip.topic]})
		}
		t := &a.TopicPartitions[len(a.TopicPartitions)-1]
		t.Partitions = append(t.Partitions, ip.partition)
	}
	return a
}
