package group

import (
	"bytes"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// groupState is a classic group's state, named as Kafka names it.
type groupState int8

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
	stateDead
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"}[s]
}

type protocol struct {
	name     string
	metadata []byte
}

// member is a classic group member.
type member struct {
	id, instanceID       string
	clientID, clientHost string
	protocols            []protocol
	sessionTimeout       time.Duration
	rebalanceTimeout     time.Duration
	assignment           []byte
	// joinReply is set while the member waits in a join round; syncReply
	// while it waits for the leader's assignment.
	joinReply   func(*kmsg.JoinGroupResponse)
	joinVersion int16
	syncReply   func(*kmsg.SyncGroupResponse)
	syncVersion int16
	heartbeat   *timer
}

func (m *member) metadataFor(name string) []byte {
	for _, p := range m.protocols {
		if p.name == name {
			return p.metadata
		}
	}
	return nil
}

func (m *member) supports(name string) bool {
	for _, p := range m.protocols {
		if p.name == name {
			return true
		}
	}
	return false
}

func sameProtocols(a, b []protocol) bool {
	return slices.EqualFunc(a, b, func(x, y protocol) bool { return x.name == y.name && bytes.Equal(x.metadata, y.metadata) })
}

// classicGroup is Kafka's classic group state machine (JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup). It lives on its shard's goroutine.
type classicGroup struct {
	s            *shard
	id           string
	state        groupState
	stateTime    time.Time // when the current state began (Kafka's currentStateTimestamp)
	protocolType string    // "" for a group that only stores offsets ("simple")
	protocol     string    // the selected protocol of the current generation
	generation   int32
	leader       string
	members      map[string]*member
	order        []string          // member ids in join order
	static       map[string]string // group.instance.id -> member id
	// pendingMembers got a member id with MEMBER_ID_REQUIRED and have not
	// joined with it yet (KIP-394); each expires after its session timeout.
	pendingMembers map[string]*timer
	// pendingSync are the members that have not sent SyncGroup since the
	// last join round; syncTimer removes them after the rebalance timeout.
	pendingSync    map[string]bool
	joinTimer      *timer
	syncTimer      *timer
	inInitialDelay bool
	newMemberAdded bool
	delayRemaining time.Duration
	// subscribed is the union of the members' topics (consumer protocol),
	// nil when unknown; offsets of other topics may expire.
	subscribed map[string]bool

	// stored is the GroupMetadataValue last written to the log.
	stored      []byte
	storedValue *groupValue
	storedSize  int64
}

func newClassicGroup(s *shard, id string) *classicGroup {
	return &classicGroup{
		s:              s,
		id:             id,
		state:          stateEmpty,
		stateTime:      s.now(),
		members:        map[string]*member{},
		static:         map[string]string{},
		pendingMembers: map[string]*timer{},
	}
}

func (g *classicGroup) setState(st groupState) {
	g.state = st
	g.stateTime = g.s.now()
}

// restore rebuilds the group from its stored metadata after a load:
// members come back as a Stable group with fresh session timers, so a
// coordinator move costs no rebalance.
func (g *classicGroup) restore() {
	v := g.storedValue
	if v == nil {
		return
	}
	g.protocolType = v.ProtocolType
	g.generation = v.Generation
	g.protocol = deref(v.Protocol)
	g.leader = deref(v.Leader)
	if v.CurrentStateTimestamp > 0 {
		g.stateTime = time.UnixMilli(v.CurrentStateTimestamp)
	}
	if len(v.Members) == 0 {
		g.state = stateEmpty
		g.protocol, g.leader = "", ""
		return
	}
	g.state = stateStable
	for _, vm := range v.Members {
		m := &member{
			id:               vm.MemberID,
			instanceID:       deref(vm.InstanceID),
			clientID:         vm.ClientID,
			clientHost:       vm.ClientHost,
			sessionTimeout:   time.Duration(vm.SessionTimeoutMillis) * time.Millisecond,
			rebalanceTimeout: time.Duration(vm.RebalanceTimeoutMillis) * time.Millisecond,
			protocols:        []protocol{{name: g.protocol, metadata: bytes.Clone(vm.Subscription)}},
			assignment:       bytes.Clone(vm.Assignment),
		}
		m.sessionTimeout = min(max(m.sessionTimeout, g.s.c.cfg.MinSessionTimeout), g.s.c.cfg.MaxSessionTimeout)
		if m.rebalanceTimeout <= 0 {
			m.rebalanceTimeout = m.sessionTimeout
		}
		g.addMember(m)
		g.scheduleHeartbeat(m)
	}
	if g.members[g.leader] == nil {
		g.leader = g.order[0]
	}
	g.updateSubscribed()
}

func (g *classicGroup) addMember(m *member) {
	g.members[m.id] = m
	g.order = append(g.order, m.id)
	if m.instanceID != "" {
		g.static[m.instanceID] = m.id
	}
	if g.leader == "" {
		g.leader = m.id
	}
}

// removeMember drops a member, answering its waiting requests with
// UNKNOWN_MEMBER_ID. It does not start a rebalance; see
// removeMemberAndUpdate.
func (g *classicGroup) removeMember(m *member) {
	if g.members[m.id] != m {
		return
	}
	if m.joinReply != nil {
		m.joinReply(g.joinError(m.joinVersion, m.id, codeUnknownMemberID))
		m.joinReply = nil
	}
	if m.syncReply != nil {
		m.syncReply(syncError(m.syncVersion, codeUnknownMemberID))
		m.syncReply = nil
	}
	g.s.cancelTimer(m.heartbeat)
	m.heartbeat = nil
	delete(g.members, m.id)
	g.order = slices.DeleteFunc(g.order, func(id string) bool { return id == m.id })
	if m.instanceID != "" && g.static[m.instanceID] == m.id {
		delete(g.static, m.instanceID)
	}
	delete(g.pendingSync, m.id)
	if g.leader == m.id {
		g.leader = ""
		if len(g.order) > 0 {
			g.leader = g.order[0]
		}
	}
}

func (g *classicGroup) removeMemberAndUpdate(m *member, reason string) {
	g.removeMember(m)
	switch g.state {
	case stateStable, stateCompletingRebalance:
		g.prepareRebalance(reason)
	case statePreparingRebalance:
		g.maybeCompleteJoin()
	}
}

func (g *classicGroup) scheduleHeartbeat(m *member) {
	g.s.cancelTimer(m.heartbeat)
	m.heartbeat = g.s.after(m.sessionTimeout, func() { g.onSessionExpired(m) })
}

// onSessionExpired removes a member that missed its session timeout. A
// member waiting in a join or sync round is kept alive, as Kafka does;
// the round's own timeout bounds it.
func (g *classicGroup) onSessionExpired(m *member) {
	m.heartbeat = nil
	if g.members[m.id] != m {
		return
	}
	if m.joinReply != nil || m.syncReply != nil {
		g.scheduleHeartbeat(m)
		return
	}
	g.s.c.log.Debug("group: member session expired", "group", g.id, "member", m.id)
	g.removeMemberAndUpdate(m, "session timeout of "+m.id)
}

// validateMember is Kafka's ClassicGroup.validateMember.
func (g *classicGroup) validateMember(memberID, instanceID string) int16 {
	if instanceID != "" {
		existing, ok := g.static[instanceID]
		if !ok {
			return codeUnknownMemberID
		}
		if existing != memberID {
			return codeFencedInstanceID
		}
	}
	if g.members[memberID] == nil {
		return codeUnknownMemberID
	}
	return 0
}

// rebalanceTimeout is the largest of the members' rebalance timeouts.
func (g *classicGroup) rebalanceTimeout() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalanceTimeout)
	}
	return d
}

// candidates are the protocols every member supports, in the first
// member's order of preference.
func (g *classicGroup) candidates() []string {
	if len(g.order) == 0 {
		return nil
	}
	var out []string
	for _, p := range g.members[g.order[0]].protocols {
		all := true
		for _, m := range g.members {
			if !m.supports(p.name) {
				all = false
				break
			}
		}
		if all && !slices.Contains(out, p.name) {
			out = append(out, p.name)
		}
	}
	return out
}

// supportsProtocols is Kafka's check that a joining member fits the group.
func (g *classicGroup) supportsProtocols(protocolType string, protocols []protocol) bool {
	if len(g.members) == 0 {
		return protocolType != "" && len(protocols) > 0
	}
	if protocolType != g.protocolType {
		return false
	}
	cands := g.candidates()
	for _, p := range protocols {
		if slices.Contains(cands, p.name) {
			return true
		}
	}
	return false
}

// selectProtocol lets each member vote for its most preferred candidate;
// the most votes win, ties going to the earlier candidate.
func (g *classicGroup) selectProtocol() string {
	cands := g.candidates()
	votes := make([]int, len(cands))
	for _, id := range g.order {
		for _, p := range g.members[id].protocols {
			if i := slices.Index(cands, p.name); i >= 0 {
				votes[i]++
				break
			}
		}
	}
	best := 0
	for i := range cands {
		if votes[i] > votes[best] {
			best = i
		}
	}
	if len(cands) == 0 {
		return ""
	}
	return cands[best]
}

// updateSubscribed parses the members' consumer-protocol metadata for the
// topics they subscribe to.
func (g *classicGroup) updateSubscribed() {
	g.subscribed = nil
	if g.protocolType != "consumer" || len(g.members) == 0 {
		return
	}
	topics := map[string]bool{}
	for _, m := range g.members {
		ts, ok := parseSubscription(m.metadataFor(g.protocol))
		if !ok {
			return
		}
		for _, t := range ts {
			topics[t] = true
		}
	}
	g.subscribed = topics
}

// parseSubscription reads the topics of a consumer protocol subscription
// (ConsumerMemberMetadata, any version). Bytes from clients: errors are
// reported, never panics.
func parseSubscription(b []byte) ([]string, bool) {
	var md kmsg.ConsumerMemberMetadata
	if err := md.ReadFrom(b); err != nil {
		return nil, false
	}
	return md.Topics, true
}

// --- rebalances ---

// prepareRebalance moves the group to PreparingRebalance and starts the
// join round's timer: the initial delay for a group that was empty,
// otherwise the largest rebalance timeout.
func (g *classicGroup) prepareRebalance(reason string) {
	if g.state == stateCompletingRebalance {
		g.resetAssignments(codeRebalanceInProgress)
	}
	g.s.cancelTimer(g.syncTimer)
	g.syncTimer, g.pendingSync = nil, nil
	g.s.cancelTimer(g.joinTimer)
	wasEmpty := g.state == stateEmpty
	g.setState(statePreparingRebalance)
	g.s.c.log.Info("group: preparing rebalance", "group", g.id, "generation", g.generation, "members", len(g.members), "reason", reason)
	delay := g.s.c.cfg.InitialRebalanceDelay
	if wasEmpty && delay > 0 {
		g.inInitialDelay, g.newMemberAdded = true, false
		g.delayRemaining = max(g.rebalanceTimeout()-delay, 0)
		g.joinTimer = g.s.after(delay, g.onInitialDelay)
		return
	}
	g.joinTimer = g.s.after(g.rebalanceTimeout(), g.completeJoin)
	g.maybeCompleteJoin()
}

// onInitialDelay extends the initial delay while new members keep
// arriving, up to the rebalance timeout (Kafka's InitialDelayedJoin).
func (g *classicGroup) onInitialDelay() {
	g.joinTimer = nil
	if g.newMemberAdded && g.delayRemaining > 0 {
		g.newMemberAdded = false
		d := min(g.s.c.cfg.InitialRebalanceDelay, g.delayRemaining)
		g.delayRemaining -= d
		g.joinTimer = g.s.after(d, g.onInitialDelay)
		return
	}
	g.completeJoin()
}

// maybeCompleteJoin ends the join round once every member has rejoined
// and no member id handed out with MEMBER_ID_REQUIRED is outstanding.
func (g *classicGroup) maybeCompleteJoin() {
	if g.state != statePreparingRebalance || g.inInitialDelay {
		return
	}
	for _, m := range g.members {
		if m.joinReply == nil {
			return
		}
	}
	if len(g.pendingMembers) > 0 {
		return
	}
	g.completeJoin()
}

// completeJoin ends a join round (everyone joined, or the timer fired):
// members that did not rejoin are removed, the generation moves on, and
// every joined member gets its answer (the leader with the members'
// metadata).
func (g *classicGroup) completeJoin() {
	if g.state != statePreparingRebalance {
		return
	}
	g.s.cancelTimer(g.joinTimer)
	g.joinTimer = nil
	g.inInitialDelay = false
	for _, id := range slices.Clone(g.order) {
		if m := g.members[id]; m.joinReply == nil {
			g.removeMember(m)
		}
	}
	g.generation++
	if len(g.members) == 0 {
		g.s.c.log.Info("group: new generation, empty", "group", g.id, "generation", g.generation)
		g.setState(stateEmpty)
		g.protocol, g.leader = "", ""
		g.subscribed = nil
		g.store(g.value(nil), func(error) {})
		return
	}
	g.protocol = g.selectProtocol()
	if g.members[g.leader] == nil {
		g.leader = g.order[0]
	}
	g.setState(stateCompletingRebalance)
	g.s.c.log.Info("group: new generation", "group", g.id, "generation", g.generation, "members", len(g.members),
		"protocol", g.protocol, "leader", g.leader)
	g.updateSubscribed()
	g.pendingSync = make(map[string]bool, len(g.members))
	for _, id := range g.order {
		m := g.members[id]
		g.pendingSync[id] = true
		reply := m.joinReply
		m.joinReply = nil
		g.scheduleHeartbeat(m)
		reply(g.joinResponse(m, m.joinVersion))
	}
	g.syncTimer = g.s.after(g.rebalanceTimeout(), g.onSyncExpired)
}

// onSyncExpired removes the members that did not send SyncGroup within the
// rebalance timeout after the join round, and rebalances without them.
func (g *classicGroup) onSyncExpired() {
	g.syncTimer = nil
	if g.state != stateCompletingRebalance && g.state != stateStable {
		return
	}
	var late []*member
	for _, id := range g.order {
		if g.pendingSync[id] {
			late = append(late, g.members[id])
		}
	}
	g.pendingSync = nil
	if len(late) == 0 {
		return
	}
	for _, m := range late {
		g.removeMember(m)
	}
	g.prepareRebalance("members did not sync in time")
}

// resetAssignments clears the assignments and answers waiting SyncGroups
// with code.
func (g *classicGroup) resetAssignments(code int16) {
	for _, id := range g.order {
		m := g.members[id]
		m.assignment = nil
		if m.syncReply != nil {
			m.syncReply(syncError(m.syncVersion, code))
			m.syncReply = nil
		}
	}
}

// --- responses ---

func (g *classicGroup) joinResponse(m *member, version int16) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = version
	r.Generation = g.generation
	r.ProtocolType = strPtr(g.protocolType)
	r.Protocol = strPtr(g.protocol)
	r.LeaderID = g.leader
	r.MemberID = m.id
	if m.id == g.leader {
		r.Members = g.memberMetadata()
	}
	return r
}

func (g *classicGroup) memberMetadata() []kmsg.JoinGroupResponseMember {
	out := make([]kmsg.JoinGroupResponseMember, 0, len(g.order))
	for _, id := range g.order {
		m := g.members[id]
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID = m.id
		if m.instanceID != "" {
			jm.InstanceID = strPtr(m.instanceID)
		}
		jm.ProtocolMetadata = m.metadataFor(g.protocol)
		out = append(out, jm)
	}
	return out
}

func (g *classicGroup) joinError(version int16, memberID string, code int16) *kmsg.JoinGroupResponse {
	return joinError(version, memberID, code)
}

func joinError(version int16, memberID string, code int16) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = version
	r.ErrorCode = code
	r.Generation = -1
	r.MemberID = memberID
	r.ProtocolType, r.Protocol = nil, nil
	if version < 7 {
		r.Protocol = strPtr("")
	}
	return r
}

func syncError(version int16, code int16) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = version
	r.ErrorCode = code
	r.MemberAssignment = []byte{}
	return r
}

// --- persistence ---

// value is the group's GroupMetadataValue, with the given assignments (or
// the members' current ones when nil).
func (g *classicGroup) value(assignments map[string][]byte) *groupValue {
	v := new(kmsg.GroupMetadataValue)
	v.Default()
	v.Version = 3
	v.ProtocolType = g.protocolType
	v.Generation = g.generation
	if g.protocol != "" {
		v.Protocol = strPtr(g.protocol)
	}
	if g.leader != "" && len(g.members) > 0 {
		v.Leader = strPtr(g.leader)
	}
	v.CurrentStateTimestamp = g.stateTime.UnixMilli()
	for _, id := range g.order {
		m := g.members[id]
		vm := kmsg.NewGroupMetadataValueMember()
		vm.MemberID = m.id
		if m.instanceID != "" {
			vm.InstanceID = strPtr(m.instanceID)
		}
		vm.ClientID, vm.ClientHost = m.clientID, m.clientHost
		vm.RebalanceTimeoutMillis = int32(m.rebalanceTimeout / time.Millisecond)
		vm.SessionTimeoutMillis = int32(m.sessionTimeout / time.Millisecond)
		vm.Subscription = m.metadataFor(g.protocol)
		if vm.Subscription == nil {
			vm.Subscription = []byte{}
		}
		a := m.assignment
		if assignments != nil {
			a = assignments[id]
		}
		if a == nil {
			a = []byte{}
		}
		vm.Assignment = a
		v.Members = append(v.Members, vm)
	}
	return v
}

// store appends the group's metadata; done runs on the loop when it is
// committed or failed. A record over the topic's limit fails at once.
func (g *classicGroup) store(v *groupValue, done func(error)) {
	raw := v.AppendTo(nil)
	key := appendGroupKey(nil, g.id)
	if len(raw)+len(key) > g.s.c.cfg.MaxRecordBytes {
		done(ErrRecordTooLarge)
		return
	}
	g.s.appendRecords([]recordbatch.Record{{Key: key, Value: raw}}, func(err error) {
		if err == nil && g.attached() {
			g.s.setStored(g, v, raw)
		}
		done(err)
	})
}

// attached reports whether the group is still its entry's live group.
func (g *classicGroup) attached() bool {
	e := g.s.groups[g.id]
	return e != nil && e.classic == g
}

// storeErrorCode maps a failed group write to Kafka's code for JoinGroup
// and SyncGroup.
func storeErrorCode(err error) int16 {
	code := appendErrorCode(err)
	if code == codeInvalidCommitOffsetSize {
		return codeUnknownServerError
	}
	return code
}

func (g *classicGroup) stopTimers() {
	for _, m := range g.members {
		g.s.cancelTimer(m.heartbeat)
	}
	for _, t := range g.pendingMembers {
		g.s.cancelTimer(t)
	}
	g.s.cancelTimer(g.joinTimer)
	g.s.cancelTimer(g.syncTimer)
}
