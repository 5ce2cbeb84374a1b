package group

import (
	"context"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// DescribeGroups handles a DescribeGroups request (v0-v6).
func (c *Coordinator) DescribeGroups(ctx context.Context, req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = id
		dg.AuthorizedOperations = -2147483648
		if out, code := onGroupShard(ctx, c, id, func(s *shard, reply func(kmsg.DescribeGroupsResponseGroup)) { reply(s.describeGroup(req.Version, id)) }); code != 0 {
			dg.ErrorCode = code
		} else {
			dg = out
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (s *shard) describeGroup(version int16, id string) kmsg.DescribeGroupsResponseGroup {
	dg := kmsg.NewDescribeGroupsResponseGroup()
	dg.Group = id
	dg.AuthorizedOperations = -2147483648
	e := s.groups[id]
	if e == nil || e.dead || e.consumer != nil {
		// As Kafka: a group that is not a classic group is described as
		// Dead, with GROUP_ID_NOT_FOUND from v6 (KIP-1043).
		dg.State = stateDead.String()
		if version >= 6 {
			dg.ErrorCode = codeGroupIDNotFound
			if e != nil && e.consumer != nil {
				dg.ErrorMessage = strPtr("Group " + id + " is not a classic group.")
			}
		}
		return dg
	}
	g := e.classic
	dg.State = g.state.String()
	dg.ProtocolType = g.protocolType
	stable := g.state == stateStable
	if stable {
		dg.Protocol = g.protocol
	}
	for _, mid := range g.order {
		m := g.members[mid]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.ClientID, dm.ClientHost = m.id, m.clientID, m.clientHost
		if m.instanceID != "" {
			dm.InstanceID = strPtr(m.instanceID)
		}
		dm.ProtocolMetadata, dm.MemberAssignment = []byte{}, []byte{}
		if stable {
			dm.ProtocolMetadata = m.metadataFor(g.protocol)
			if m.assignment != nil {
				dm.MemberAssignment = m.assignment
			}
		}
		dg.Members = append(dg.Members, dm)
	}
	return dg
}

// ListGroups handles a ListGroups request (v0-v5, state filter from v4,
// type filter from v5).
func (c *Coordinator) ListGroups(ctx context.Context, req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	shards, loading := c.allShards()
	if loading {
		resp.ErrorCode = codeCoordinatorLoadInProgress
	}
	for _, s := range shards {
		out, code := await(ctx, s, func(reply func([]kmsg.ListGroupsResponseGroup)) { reply(s.listGroups(req)) })
		if code != 0 {
			resp.ErrorCode = code
			continue
		}
		resp.Groups = append(resp.Groups, out...)
	}
	sort.Slice(resp.Groups, func(i, j int) bool { return resp.Groups[i].Group < resp.Groups[j].Group })
	return resp
}

func (s *shard) listGroups(req *kmsg.ListGroupsRequest) []kmsg.ListGroupsResponseGroup {
	matches := func(filter []string, v string) bool {
		if len(filter) == 0 {
			return true
		}
		for _, f := range filter {
			if strings.EqualFold(f, v) {
				return true
			}
		}
		return false
	}
	var out []kmsg.ListGroupsResponseGroup
	for _, e := range s.groups {
		if e.dead {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = e.id
		if g := e.classic; g != nil {
			lg.ProtocolType, lg.GroupState, lg.GroupType = g.protocolType, g.state.String(), "classic"
		} else {
			lg.ProtocolType, lg.GroupState, lg.GroupType = "consumer", e.consumer.stateName(), "consumer"
		}
		if !matches(req.StatesFilter, lg.GroupState) || !matches(req.TypesFilter, lg.GroupType) {
			continue
		}
		out = append(out, lg)
	}
	return out
}

// DeleteGroups handles a DeleteGroups request (v0-v2): empty groups and
// their offsets are deleted.
func (c *Coordinator) DeleteGroups(ctx context.Context, req *kmsg.DeleteGroupsRequest) *kmsg.DeleteGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewDeleteGroupsResponseGroup()
		dg.Group = id
		if out, code := onGroupShard(ctx, c, id, func(s *shard, reply func(int16)) { s.deleteGroup(id, reply) }); code != 0 {
			dg.ErrorCode = code
		} else {
			dg.ErrorCode = out
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (s *shard) deleteGroup(id string, reply func(int16)) {
	e := s.groups[id]
	switch {
	case e == nil || e.dead:
		reply(codeGroupIDNotFound)
		return
	case e.classic != nil && (e.classic.state != stateEmpty || len(e.classic.pendingMembers) > 0):
		reply(codeNonEmptyGroup)
		return
	case e.consumer != nil && len(e.consumer.members) > 0:
		reply(codeNonEmptyGroup)
		return
	case e.hasTxn():
		// A transaction's offsets are pending: its marker would find
		// the group gone, and a reload would bring it back.
		reply(codeNonEmptyGroup)
		return
	}
	s.tombstoneGroup(e, reply)
}

// tombstoneGroup writes tombstones for everything the group has in the log
// and then drops it; requests for it meanwhile get
// COORDINATOR_NOT_AVAILABLE. reply gets the outcome.
func (s *shard) tombstoneGroup(e *groupEntry, reply func(int16)) {
	var records []recordbatch.Record
	for tp := range e.offsets {
		records = append(records, recordbatch.Record{Key: appendOffsetKey(nil, e.id, tp)})
	}
	if e.classic != nil && e.classic.stored != nil {
		records = append(records, recordbatch.Record{Key: appendGroupKey(nil, e.id)})
	}
	if e.consumer != nil && e.consumer.storedEpoch >= 0 {
		records = append(records, recordbatch.Record{Key: appendConsumerGroupKey(nil, e.id)})
	}
	if len(records) == 0 {
		s.removeEntry(e)
		reply(0)
		return
	}
	e.dead = true
	s.appendRecords(records, func(err error) {
		if err != nil {
			e.dead = false
			reply(appendErrorCode(err))
			return
		}
		s.removeEntry(e)
		reply(0)
	})
}
