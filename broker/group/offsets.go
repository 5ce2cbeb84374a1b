package group

import (
	"context"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// OffsetCommit handles an OffsetCommit request (v2-v10). It returns once
// the offsets are committed to the log (or failed).
func (c *Coordinator) OffsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	return c.StartOffsetCommit(ctx, req)()
}

// StartOffsetCommit queues the commit with the group's shard and returns a
// function that waits for its response. Commits started one after another
// are applied in that order, as Kafka applies a connection's requests: a
// client pipelining commits of one partition ends with its last offset.
func (c *Coordinator) StartOffsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) func() *kmsg.OffsetCommitResponse {
	wait := submitToGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.OffsetCommitResponse)) { s.offsetCommit(req, reply) })
	return func() *kmsg.OffsetCommitResponse {
		resp, code := wait()
		if code != 0 {
			return commitResponse(req, code)
		}
		return resp
	}
}

// commitResponse answers every partition of the request with code.
func commitResponse(req *kmsg.OffsetCommitRequest, code int16) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	resp.Topics = make([]kmsg.OffsetCommitResponseTopic, len(req.Topics))
	for i, t := range req.Topics {
		rt := &resp.Topics[i]
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.OffsetCommitResponseTopicPartition, len(t.Partitions))
		for j, p := range t.Partitions {
			rt.Partitions[j] = kmsg.OffsetCommitResponseTopicPartition{Partition: p.Partition, ErrorCode: code}
		}
	}
	return resp
}

// topicName resolves a topic named in a request (by name, or by id from
// v10 on). It returns the error code for a topic that does not exist.
func (c *Coordinator) topicName(name string, id [16]byte, byID bool, partition int32) (string, int16) {
	if byID {
		if c.topics == nil {
			return "", codeUnknownTopicID
		}
		n, parts, ok := c.topics.TopicByID(id)
		if !ok {
			return "", codeUnknownTopicID
		}
		if partition < 0 || partition >= parts {
			return n, codeUnknownTopicOrPartition
		}
		return n, 0
	}
	if c.topics == nil {
		return name, 0
	}
	_, parts, ok := c.topics.TopicByName(name)
	if !ok || partition < 0 || partition >= parts {
		return name, codeUnknownTopicOrPartition
	}
	return name, 0
}

func (s *shard) offsetCommit(req *kmsg.OffsetCommitRequest, reply func(*kmsg.OffsetCommitResponse)) {
	resp := commitResponse(req, 0)
	e, code := s.validateCommit(req)
	if code != 0 {
		reply(commitResponse(req, code))
		return
	}
	cfg := s.c.cfg
	nowMs := s.now().UnixMilli()
	type pendingCommit struct {
		tp   topicPartition
		o    *offsetEntry
		code *int16
	}
	var commits []pendingCommit
	var records []recordbatch.Record
	// Partitions this request adds to the group's committed offsets
	// count against group.max.committed.offsets.
	added := map[topicPartition]bool{}
	for ti, t := range req.Topics {
		for pi, p := range t.Partitions {
			out := &resp.Topics[ti].Partitions[pi].ErrorCode
			name, code := s.c.topicName(t.Topic, t.TopicID, req.Version >= 10, p.Partition)
			if code != 0 {
				*out = code
				continue
			}
			if p.Metadata != nil && len(*p.Metadata) > cfg.OffsetMetadataMaxBytes {
				*out = codeOffsetMetadataTooLarge
				continue
			}
			o := &offsetEntry{offset: p.Offset, leaderEpoch: -1, metadata: deref(p.Metadata), commitTs: nowMs, expireTs: -1}
			if req.Version >= 6 {
				o.leaderEpoch = p.LeaderEpoch
			}
			if req.Version <= 4 && req.RetentionTimeMillis > 0 {
				o.expireTs = nowMs + req.RetentionTimeMillis
			}
			tp := topicPartition{name, p.Partition}
			if _, ok := e.offsets[tp]; !ok && e.pendingCommits[tp] == 0 && !added[tp] {
				if len(e.offsets)+len(e.pendingCommits)+len(added) >= cfg.MaxOffsetsPerGroup {
					*out = codePolicyViolation
					continue
				}
				added[tp] = true
			}
			r := recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp), Value: appendOffsetValue(nil, o)}
			o.size = recordBytes(r)
			records = append(records, r)
			commits = append(commits, pendingCommit{tp, o, out})
		}
	}
	if len(records) == 0 {
		reply(resp)
		return
	}
	if e.pendingCommits == nil {
		e.pendingCommits = map[topicPartition]int{}
	}
	for _, pc := range commits {
		e.pendingCommits[pc.tp]++
	}
	s.appendWrite(records, nil, func(at logAt, err error) {
		for _, pc := range commits {
			if e.pendingCommits[pc.tp]--; e.pendingCommits[pc.tp] <= 0 {
				delete(e.pendingCommits, pc.tp)
			}
		}
		if err != nil {
			code := appendErrorCode(err)
			for _, pc := range commits {
				*pc.code = code
			}
			reply(resp)
			return
		}
		if s.groups[e.id] == e {
			for _, pc := range commits {
				pc.o.at = at
				s.setOffset(e, pc.tp, pc.o)
			}
		}
		reply(resp)
	})
}

// validateCommit is Kafka's offset-commit validation. A commit with a
// negative generation to a group that does not exist creates a "simple"
// group (one that only stores offsets: kcat -C, assign()-based consumers).
func (s *shard) validateCommit(req *kmsg.OffsetCommitRequest) (*groupEntry, int16) {
	e := s.groups[req.Group]
	if e == nil {
		if req.Generation >= 0 {
			if req.Version >= 9 {
				return nil, codeGroupIDNotFound
			}
			return nil, codeIllegalGeneration
		}
		if s.groupsFull() {
			return nil, codePolicyViolation
		}
		return s.loadEntry(req.Group), 0
	}
	if e.dead {
		return nil, codeCoordinatorNotAvailable
	}
	if e.consumer != nil {
		return e, e.consumer.validateCommit(req)
	}
	g := e.classic
	instanceID := deref(req.InstanceID)
	if req.Generation < 0 && g.state == stateEmpty {
		return e, 0
	}
	if g.state == stateCompletingRebalance {
		return nil, codeRebalanceInProgress
	}
	if req.Generation >= 0 || req.MemberID != "" || instanceID != "" {
		if code := g.validateMember(req.MemberID, instanceID); code != 0 {
			return nil, code
		}
		if req.Generation != g.generation {
			return nil, codeIllegalGeneration
		}
		if g.state == stateStable {
			g.scheduleHeartbeat(g.members[req.MemberID])
		}
		return e, 0
	}
	if g.state != stateEmpty {
		return nil, codeUnknownMemberID
	}
	return e, 0
}

// OffsetFetch handles an OffsetFetch request (v1-v10, several groups from
// v8). With RequireStable (v7+, KIP-447) a partition whose group has a
// transactional offset pending answers UNSTABLE_OFFSET_COMMIT.
func (c *Coordinator) OffsetFetch(ctx context.Context, req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	// The wall-clock time the read arrived: a read fence passed for one
	// group serves the others of the same offsets partition.
	arrived := time.Now()
	f := fetchOpts{version: req.Version, requireStable: req.Version >= 7 && req.RequireStable, arrived: arrived}
	if req.Version >= 8 {
		for _, rg := range req.Groups {
			resp.Groups = append(resp.Groups, c.fetchGroup(ctx, f, rg))
		}
		return resp
	}
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group, rg.MemberEpoch = req.Group, -1
	if req.Topics != nil {
		rg.Topics = []kmsg.OffsetFetchRequestGroupTopic{}
		for _, t := range req.Topics {
			rg.Topics = append(rg.Topics, kmsg.OffsetFetchRequestGroupTopic{Topic: t.Topic, Partitions: t.Partitions})
		}
	}
	g := c.fetchGroup(ctx, f, rg)
	resp.ErrorCode = g.ErrorCode
	for _, t := range g.Topics {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = p.Partition, p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode
			if g.ErrorCode != 0 && req.Version < 2 {
				rp.ErrorCode = g.ErrorCode
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// fetchOpts are an OffsetFetch request's settings for each of its groups.
type fetchOpts struct {
	version       int16
	requireStable bool
	// arrived is the wall-clock time the read arrived.
	arrived time.Time
}

func (c *Coordinator) fetchGroup(ctx context.Context, f fetchOpts, rg kmsg.OffsetFetchRequestGroup) kmsg.OffsetFetchResponseGroup {
	errGroup := func(code int16) kmsg.OffsetFetchResponseGroup {
		out := kmsg.NewOffsetFetchResponseGroup()
		out.Group, out.ErrorCode = rg.Group, code
		for _, t := range rg.Topics {
			rt := kmsg.NewOffsetFetchResponseGroupTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = p, -1, -1, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			out.Topics = append(out.Topics, rt)
		}
		return out
	}
	if rg.Group == "" && f.version >= 8 {
		return errGroup(codeInvalidGroupID)
	}
	s, code := c.shardFor(rg.Group)
	if code != 0 {
		return errGroup(code)
	}
	if err := s.log.ReadFence(ctx, f.arrived); err != nil {
		return errGroup(codeNotCoordinator)
	}
	out, code := await(ctx, s, func(reply func(kmsg.OffsetFetchResponseGroup)) { reply(s.offsetFetch(f.version, f.requireStable, rg)) })
	if code != 0 {
		return errGroup(code)
	}
	return out
}

func (s *shard) offsetFetch(version int16, requireStable bool, rg kmsg.OffsetFetchRequestGroup) kmsg.OffsetFetchResponseGroup {
	out := kmsg.NewOffsetFetchResponseGroup()
	out.Group = rg.Group
	e := s.groups[rg.Group]
	if e != nil && e.consumer != nil && rg.MemberID != nil {
		if code := e.consumer.validateFetch(*rg.MemberID, rg.MemberEpoch); code != 0 {
			out.ErrorCode = code
			return out
		}
	}
	var offsets map[topicPartition]*offsetEntry
	live := e != nil && !e.dead
	if live {
		offsets = e.offsets
	}
	byID := version >= 10
	part := func(p int32, o *offsetEntry) kmsg.OffsetFetchResponseGroupTopicPartition {
		rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = p, -1, -1, strPtr("")
		if o != nil {
			rp.Offset, rp.LeaderEpoch, rp.Metadata = o.offset, o.leaderEpoch, strPtr(o.metadata)
		}
		return rp
	}
	// committed answers a partition with its committed offset, or
	// UNSTABLE_OFFSET_COMMIT while a transaction's is pending and the
	// client asked for stable offsets only.
	committed := func(tp topicPartition) kmsg.OffsetFetchResponseGroupTopicPartition {
		if requireStable && live && e.unstable(tp) {
			rp := part(tp.partition, nil)
			rp.ErrorCode = codeUnstableOffsetCommit
			return rp
		}
		return part(tp.partition, offsets[tp])
	}
	if rg.Topics == nil {
		// Every committed offset of the group, by topic.
		byTopic := map[string][]topicPartition{}
		for tp := range offsets {
			byTopic[tp.topic] = append(byTopic[tp.topic], tp)
		}
		names := make([]string, 0, len(byTopic))
		for n := range byTopic {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			rt := kmsg.NewOffsetFetchResponseGroupTopic()
			rt.Topic = n
			if byID {
				if s.c.topics == nil {
					continue
				}
				id, _, ok := s.c.topics.TopicByName(n)
				if !ok {
					continue // offsets of a deleted topic have no id to report
				}
				rt.TopicID = id
			}
			tps := byTopic[n]
			sort.Slice(tps, func(i, j int) bool { return tps[i].partition < tps[j].partition })
			for _, tp := range tps {
				rt.Partitions = append(rt.Partitions, committed(tp))
			}
			out.Topics = append(out.Topics, rt)
		}
		return out
	}
	for _, t := range rg.Topics {
		rt := kmsg.NewOffsetFetchResponseGroupTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		name, known := t.Topic, true
		if byID {
			known = false
			if s.c.topics != nil {
				name, _, known = s.c.topics.TopicByID(t.TopicID)
			}
		}
		for _, p := range t.Partitions {
			rp := committed(topicPartition{name, p})
			if !known {
				rp = part(p, nil)
				rp.ErrorCode = codeUnknownTopicID
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		out.Topics = append(out.Topics, rt)
	}
	return out
}

// OffsetDelete handles an OffsetDelete request (v0): offsets of an empty
// group, or of topics no member subscribes to, are removed.
func (c *Coordinator) OffsetDelete(ctx context.Context, req *kmsg.OffsetDeleteRequest) *kmsg.OffsetDeleteResponse {
	errResp := func(code int16) *kmsg.OffsetDeleteResponse {
		r := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		r.ErrorCode = code
		return r
	}
	resp, code := onGroupShard(ctx, c, req.Group, func(s *shard, reply func(*kmsg.OffsetDeleteResponse)) { s.offsetDelete(req, reply) })
	if code != 0 {
		return errResp(code)
	}
	return resp
}

func (s *shard) offsetDelete(req *kmsg.OffsetDeleteRequest, reply func(*kmsg.OffsetDeleteResponse)) {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	e := s.groups[req.Group]
	switch {
	case e == nil:
		resp.ErrorCode = codeGroupIDNotFound
		reply(resp)
		return
	case e.dead:
		resp.ErrorCode = codeCoordinatorNotAvailable
		reply(resp)
		return
	}
	// subscribed reports whether a member still consumes the topic; nil
	// means every topic may be deleted (the group is empty).
	var subscribed func(topic string) bool
	if g := e.classic; g != nil && g.state != stateEmpty {
		if g.protocolType != "consumer" || g.subscribed == nil {
			resp.ErrorCode = codeNonEmptyGroup
			reply(resp)
			return
		}
		subscribed = func(t string) bool { return g.subscribed[t] }
	}
	if cg := e.consumer; cg != nil && len(cg.members) > 0 {
		subscribed = cg.isSubscribed
	}
	var records []recordbatch.Record
	var deleted []topicPartition
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetDeleteResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetDeleteResponseTopicPartition()
			rp.Partition = p.Partition
			tp := topicPartition{t.Topic, p.Partition}
			switch {
			case subscribed != nil && subscribed(t.Topic):
				rp.ErrorCode = codeGroupSubscribedToTopic
			case e.offsets[tp] != nil:
				records = append(records, recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp)})
				deleted = append(deleted, tp)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	if len(records) == 0 {
		reply(resp)
		return
	}
	s.appendRecords(records, func(err error) {
		if err != nil {
			resp.ErrorCode = appendErrorCode(err)
			resp.Topics = nil
			reply(resp)
			return
		}
		if s.groups[e.id] == e {
			for _, tp := range deleted {
				s.deleteOffset(e, tp)
			}
		}
		reply(resp)
	})
}
