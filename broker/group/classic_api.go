package group

import (
	"bytes"
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// JoinGroup handles a JoinGroup request (v0-v9). It blocks until the join
// round completes, or ctx ends.
func (c *Coordinator) JoinGroup(ctx context.Context, client ClientInfo, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.JoinGroupResponse)) { s.joinGroup(client, req, reply) })
	if code != 0 {
		return joinError(req.Version, req.MemberID, code)
	}
	return resp
}

// SyncGroup handles a SyncGroup request (v0-v5). A follower blocks until
// the leader's assignment is stored.
func (c *Coordinator) SyncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.SyncGroupResponse)) { s.syncGroup(req, reply) })
	if code != 0 {
		return syncError(req.Version, code)
	}
	return resp
}

// Heartbeat handles a Heartbeat request (v0-v4).
func (c *Coordinator) Heartbeat(ctx context.Context, req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	errResp := func(code int16) *kmsg.HeartbeatResponse {
		r := req.ResponseKind().(*kmsg.HeartbeatResponse)
		r.ErrorCode = code
		return r
	}
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(int16)) { reply(s.heartbeat(req)) })
	if code != 0 {
		return errResp(code)
	}
	return errResp(resp)
}

// LeaveGroup handles a LeaveGroup request (v0-v5, batched from v3).
func (c *Coordinator) LeaveGroup(ctx context.Context, req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	errResp := func(code int16) *kmsg.LeaveGroupResponse {
		r := req.ResponseKind().(*kmsg.LeaveGroupResponse)
		r.ErrorCode = code
		return r
	}
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.LeaveGroupResponse)) { reply(s.leaveGroup(req)) })
	if code != 0 {
		return errResp(code)
	}
	return resp
}

// --- on the shard's goroutine ---

func (s *shard) joinGroup(client ClientInfo, req *kmsg.JoinGroupRequest, reply func(*kmsg.JoinGroupResponse)) {
	cfg := s.c.cfg
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	if session < cfg.MinSessionTimeout || session > cfg.MaxSessionTimeout {
		reply(joinError(req.Version, req.MemberID, codeInvalidSessionTimeout))
		return
	}
	rebalance := time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	if req.Version == 0 || rebalance <= 0 {
		rebalance = session
	}
	protocols := make([]protocol, 0, len(req.Protocols))
	for _, p := range req.Protocols {
		protocols = append(protocols, protocol{name: p.Name, metadata: bytes.Clone(p.Metadata)})
	}
	e := s.groups[req.Group]
	if e != nil && e.dead {
		reply(joinError(req.Version, req.MemberID, codeCoordinatorNotAvailable))
		return
	}
	if e != nil && e.consumer != nil {
		if len(e.consumer.members) > 0 {
			// Kafka 4 can move members between protocols online;
			// Shale converts a group only while it is empty.
			reply(joinError(req.Version, req.MemberID, codeInconsistentGroupProtocol))
			return
		}
		s.convertToClassic(e)
	}
	if e == nil {
		if req.MemberID != "" {
			reply(joinError(req.Version, req.MemberID, codeUnknownMemberID))
			return
		}
		if req.ProtocolType == "" || len(protocols) == 0 {
			reply(joinError(req.Version, req.MemberID, codeInconsistentGroupProtocol))
			return
		}
		if s.groupsFull() {
			reply(joinError(req.Version, req.MemberID, codePolicyViolation))
			return
		}
		e = s.loadEntry(req.Group)
	}
	g := e.classic
	if !g.supportsProtocols(req.ProtocolType, protocols) {
		reply(joinError(req.Version, req.MemberID, codeInconsistentGroupProtocol))
		return
	}
	if g.protocolBytes(req.MemberID)+protocolsBytes(protocols) > cfg.MaxMetadataBytes {
		// The group's members would hold more than
		// group.max.metadata.bytes: the group is full by bytes.
		reply(joinError(req.Version, req.MemberID, codeGroupMaxSizeReached))
		return
	}
	j := joinArgs{
		version:      req.Version,
		memberID:     req.MemberID,
		instanceID:   deref(req.InstanceID),
		protocolType: req.ProtocolType,
		protocols:    protocols,
		session:      session,
		rebalance:    rebalance,
		client:       client,
		reply:        reply,
	}
	if j.memberID == "" {
		g.joinNewMember(j)
	} else {
		g.joinKnownMember(j)
	}
}

// protocolsBytes is what a member's protocols hold.
func protocolsBytes(ps []protocol) int {
	n := 0
	for _, p := range ps {
		n += len(p.name) + len(p.metadata)
	}
	return n
}

// protocolBytes is what the group's members' protocols hold, but for
// member except (the one joining again, whose protocols it replaces).
func (g *classicGroup) protocolBytes(except string) int {
	n := 0
	for id, m := range g.members {
		if id != except {
			n += protocolsBytes(m.protocols)
		}
	}
	return n
}

type joinArgs struct {
	version      int16
	memberID     string
	instanceID   string
	protocolType string
	protocols    []protocol
	session      time.Duration
	rebalance    time.Duration
	client       ClientInfo
	reply        func(*kmsg.JoinGroupResponse)
}

func (j *joinArgs) newMember(id string) *member {
	return &member{
		id:               id,
		instanceID:       j.instanceID,
		clientID:         j.client.ClientID,
		clientHost:       j.client.ClientHost,
		protocols:        j.protocols,
		sessionTimeout:   j.session,
		rebalanceTimeout: j.rebalance,
	}
}

func (g *classicGroup) joinNewMember(j joinArgs) {
	if j.instanceID != "" {
		if old, ok := g.static[j.instanceID]; ok {
			g.replaceStaticMember(g.members[old], j)
			return
		}
	}
	// Members-to-be (KIP-394) count: each holds a timer for a session
	// timeout, and a client could make them without end.
	if len(g.members)+len(g.pendingMembers) >= g.s.c.cfg.MaxSize {
		j.reply(joinError(j.version, j.memberID, codeGroupMaxSizeReached))
		return
	}
	prefix := j.client.ClientID
	if j.instanceID != "" {
		prefix = j.instanceID
	}
	id := newMemberID(prefix)
	if j.instanceID == "" && j.version >= 4 {
		// KIP-394: hand out the id first; the member joins with it.
		g.pendingMembers[id] = g.s.after(j.session, func() {
			if _, ok := g.pendingMembers[id]; ok {
				delete(g.pendingMembers, id)
				g.maybeCompleteJoin()
			}
		})
		j.reply(joinError(j.version, id, codeMemberIDRequired))
		return
	}
	g.addMemberAndRebalance(j.newMember(id), j)
}

func (g *classicGroup) joinKnownMember(j joinArgs) {
	if t, ok := g.pendingMembers[j.memberID]; ok {
		g.s.cancelTimer(t)
		delete(g.pendingMembers, j.memberID)
		if len(g.members) >= g.s.c.cfg.MaxSize {
			j.reply(joinError(j.version, j.memberID, codeGroupMaxSizeReached))
			g.maybeCompleteJoin()
			return
		}
		g.addMemberAndRebalance(j.newMember(j.memberID), j)
		return
	}
	if code := g.validateMember(j.memberID, j.instanceID); code != 0 {
		j.reply(joinError(j.version, j.memberID, code))
		return
	}
	m := g.members[j.memberID]
	switch g.state {
	case statePreparingRebalance:
		g.updateMember(m, j)
		g.maybeCompleteJoin()
	case stateCompletingRebalance:
		if sameProtocols(m.protocols, j.protocols) {
			// The member missed the join response: send it again.
			g.scheduleHeartbeat(m)
			j.reply(g.joinResponse(m, j.version))
			return
		}
		g.updateMember(m, j)
		g.prepareRebalance("member " + m.id + " changed its protocols")
	case stateStable:
		if m.id != g.leader && sameProtocols(m.protocols, j.protocols) {
			g.scheduleHeartbeat(m)
			j.reply(g.joinResponse(m, j.version))
			return
		}
		g.updateMember(m, j)
		g.prepareRebalance("member " + m.id + " rejoined")
	default:
		j.reply(joinError(j.version, j.memberID, codeUnknownMemberID))
	}
}

// updateMember takes a known member's new join request into the round.
func (g *classicGroup) updateMember(m *member, j joinArgs) {
	if m.joinReply != nil {
		// A newer JoinGroup supersedes one still waiting.
		m.joinReply(joinError(m.joinVersion, m.id, codeRebalanceInProgress))
	}
	m.protocols = j.protocols
	m.sessionTimeout, m.rebalanceTimeout = j.session, j.rebalance
	m.clientID, m.clientHost = j.client.ClientID, j.client.ClientHost
	m.joinReply, m.joinVersion = j.reply, j.version
}

func (g *classicGroup) addMemberAndRebalance(m *member, j joinArgs) {
	if len(g.members) == 0 {
		g.protocolType = j.protocolType
	}
	m.joinReply, m.joinVersion = j.reply, j.version
	g.addMember(m)
	g.s.c.log.Info("group: member joined", "group", g.id, "member", m.id, "client_id", m.clientID, "client_host", m.clientHost)
	if g.inInitialDelay {
		g.newMemberAdded = true
	}
	switch g.state {
	case statePreparingRebalance:
		g.maybeCompleteJoin()
	default:
		g.prepareRebalance("new member " + m.id)
	}
}

// replaceStaticMember gives a restarted static member (KIP-345) the old
// member's place under a new member id, fencing the old id. In a Stable
// group whose protocol still fits, no rebalance happens: the member gets
// the current generation and, at SyncGroup, its old assignment.
func (g *classicGroup) replaceStaticMember(old *member, j joinArgs) {
	nm := j.newMember(newMemberID(j.instanceID))
	nm.assignment = old.assignment
	if old.joinReply != nil {
		old.joinReply(joinError(old.joinVersion, old.id, codeFencedInstanceID))
		old.joinReply = nil
	}
	if old.syncReply != nil {
		old.syncReply(syncError(old.syncVersion, codeFencedInstanceID))
		old.syncReply = nil
	}
	g.s.cancelTimer(old.heartbeat)
	delete(g.members, old.id)
	g.members[nm.id] = nm
	for i, id := range g.order {
		if id == old.id {
			g.order[i] = nm.id
		}
	}
	g.static[nm.instanceID] = nm.id
	if g.leader == old.id {
		g.leader = nm.id
	}
	if g.pendingSync[old.id] {
		delete(g.pendingSync, old.id)
		g.pendingSync[nm.id] = true
	}
	g.scheduleHeartbeat(nm)
	switch g.state {
	case stateStable:
		if g.selectProtocol() != g.protocol {
			nm.joinReply, nm.joinVersion = j.reply, j.version
			g.prepareRebalance("static member " + nm.instanceID + " rejoined with other protocols")
			return
		}
		gen := g.generation
		g.store(g.value(nil), func(err error) {
			if err != nil {
				j.reply(joinError(j.version, j.memberID, storeErrorCode(err)))
				return
			}
			r := g.joinResponse(nm, j.version)
			r.Generation = gen
			r.SkipAssignment = nm.id == g.leader
			j.reply(r)
		})
	case stateCompletingRebalance:
		nm.joinReply, nm.joinVersion = j.reply, j.version
		g.prepareRebalance("static member " + nm.instanceID + " rejoined during the sync round")
	default: // PreparingRebalance: join the round in progress
		nm.joinReply, nm.joinVersion = j.reply, j.version
		g.maybeCompleteJoin()
	}
}

func (s *shard) syncGroup(req *kmsg.SyncGroupRequest, reply func(*kmsg.SyncGroupResponse)) {
	e := s.groups[req.Group]
	if e == nil || e.classic == nil {
		reply(syncError(req.Version, codeUnknownMemberID))
		return
	}
	if e.dead {
		reply(syncError(req.Version, codeCoordinatorNotAvailable))
		return
	}
	g := e.classic
	if code := g.validateMember(req.MemberID, deref(req.InstanceID)); code != 0 {
		reply(syncError(req.Version, code))
		return
	}
	if req.Generation != g.generation {
		reply(syncError(req.Version, codeIllegalGeneration))
		return
	}
	if (req.ProtocolType != nil && *req.ProtocolType != g.protocolType) || (req.Protocol != nil && *req.Protocol != g.protocol) {
		reply(syncError(req.Version, codeInconsistentGroupProtocol))
		return
	}
	m := g.members[req.MemberID]
	delete(g.pendingSync, m.id)
	switch g.state {
	case statePreparingRebalance:
		reply(syncError(req.Version, codeRebalanceInProgress))
	case stateCompletingRebalance:
		if m.syncReply != nil {
			m.syncReply(syncError(m.syncVersion, codeRebalanceInProgress))
		}
		m.syncReply, m.syncVersion = reply, req.Version
		g.scheduleHeartbeat(m)
		if m.id == g.leader {
			g.applyAssignment(req.GroupAssignment)
		}
	case stateStable:
		g.scheduleHeartbeat(m)
		reply(g.syncResponse(m, req.Version))
	default:
		reply(syncError(req.Version, codeUnknownMemberID))
	}
}

// applyAssignment stores the leader's assignment and, once it is
// committed, answers every member waiting in SyncGroup and makes the group
// Stable. A failed write sends the group back to a rebalance.
func (g *classicGroup) applyAssignment(in []kmsg.SyncGroupRequestGroupAssignment) {
	assignments := make(map[string][]byte, len(g.members))
	for _, a := range in {
		if g.members[a.MemberID] != nil {
			assignments[a.MemberID] = bytes.Clone(a.MemberAssignment)
		}
	}
	for id := range g.members {
		if assignments[id] == nil {
			assignments[id] = []byte{}
		}
	}
	gen := g.generation
	g.store(g.value(assignments), func(err error) {
		if !g.attached() || g.state != stateCompletingRebalance || g.generation != gen {
			return
		}
		if err != nil {
			g.s.c.log.Warn("group: storing the assignment failed", "group", g.id, "generation", gen, "err", err)
			g.resetAssignments(storeErrorCode(err))
			g.prepareRebalance("storing the assignment failed")
			return
		}
		for _, id := range g.order {
			m := g.members[id]
			m.assignment = assignments[id]
			if m.syncReply != nil {
				r := m.syncReply
				m.syncReply = nil
				g.scheduleHeartbeat(m)
				r(g.syncResponse(m, m.syncVersion))
			}
		}
		g.setState(stateStable)
	})
}

func (g *classicGroup) syncResponse(m *member, version int16) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = version
	r.ProtocolType = strPtr(g.protocolType)
	r.Protocol = strPtr(g.protocol)
	r.MemberAssignment = m.assignment
	if r.MemberAssignment == nil {
		r.MemberAssignment = []byte{}
	}
	return r
}

func (s *shard) heartbeat(req *kmsg.HeartbeatRequest) int16 {
	e := s.groups[req.Group]
	if e == nil || e.classic == nil {
		return codeUnknownMemberID
	}
	if e.dead {
		return codeCoordinatorNotAvailable
	}
	g := e.classic
	if code := g.validateMember(req.MemberID, deref(req.InstanceID)); code != 0 {
		return code
	}
	if req.Generation != g.generation {
		return codeIllegalGeneration
	}
	m := g.members[req.MemberID]
	switch g.state {
	case statePreparingRebalance:
		g.scheduleHeartbeat(m)
		return codeRebalanceInProgress
	case stateCompletingRebalance, stateStable:
		g.scheduleHeartbeat(m)
		return 0
	}
	return codeUnknownMemberID
}

func (s *shard) leaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	members := req.Members
	if req.Version < 3 {
		members = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	e := s.groups[req.Group]
	if e != nil && e.dead {
		resp.ErrorCode = codeCoordinatorNotAvailable
		return resp
	}
	for _, lm := range members {
		code := codeUnknownMemberID
		if e != nil && e.classic != nil {
			code = e.classic.leave(lm.MemberID, deref(lm.InstanceID))
		}
		if req.Version < 3 {
			resp.ErrorCode = code
			continue
		}
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID, rm.ErrorCode = lm.MemberID, lm.InstanceID, code
		resp.Members = append(resp.Members, rm)
	}
	return resp
}

func (g *classicGroup) leave(memberID, instanceID string) int16 {
	if instanceID != "" {
		existing, ok := g.static[instanceID]
		if !ok {
			return codeUnknownMemberID
		}
		if memberID != "" && memberID != existing {
			return codeFencedInstanceID
		}
		g.removeMemberAndUpdate(g.members[existing], "static member "+instanceID+" left")
		return 0
	}
	if t, ok := g.pendingMembers[memberID]; ok {
		g.s.cancelTimer(t)
		delete(g.pendingMembers, memberID)
		g.maybeCompleteJoin()
		return 0
	}
	m := g.members[memberID]
	if m == nil {
		return codeUnknownMemberID
	}
	g.removeMemberAndUpdate(m, "member "+memberID+" left")
	return 0
}
