package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.OffsetFetch, 1, 10, handleOffsetFetch)
}

// handleOffsetFetch is answered by the group coordinator off the
// connection's reader. A group the client may not DESCRIBE is answered
// GROUP_AUTHORIZATION_FAILED. Offsets of a topic it may not DESCRIBE are
// not shown: a topic the request names is answered
// TOPIC_AUTHORIZATION_FAILED, and where it asks for all of the group's
// topics such a topic is left out.
func handleOffsetFetch(b *Broker, r *request, req *kmsg.OffsetFetchRequest) kmsg.Response {
	if req.Version < 8 {
		return handleOffsetFetchOne(b, r, req)
	}
	describableGroups := newACLVerdicts(r, acl.Describe, acl.Group)
	describable := newACLVerdicts(r, acl.Describe, acl.Topic)
	fetch := *req
	fetch.Groups = nil
	var refused []kmsg.OffsetFetchResponseGroup
	var denied [][]kmsg.OffsetFetchRequestGroupTopic // by group fetched
	for _, g := range req.Groups {
		// DESCRIBE on each group.
		if !describableGroups.allowed(g.Group) {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, kerr.GroupAuthorizationFailed.Code
			refused = append(refused, rg)
			continue
		}
		var d []kmsg.OffsetFetchRequestGroupTopic
		g.Topics, d = splitBy(g.Topics, func(t kmsg.OffsetFetchRequestGroupTopic) bool {
			// DESCRIBE on each topic named.
			return describable.allowedTopic(b, t.Topic, t.TopicID, req.Version >= 10)
		})
		fetch.Groups = append(fetch.Groups, g)
		denied = append(denied, d)
	}
	if len(fetch.Groups) == 0 && len(refused) > 0 {
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.Groups = refused
		return resp
	}
	go func() {
		// The coordinator answers each group fetched, in order.
		resp := b.groups.c.OffsetFetch(r.ctx(), &fetch)
		for i := range resp.Groups {
			rg := &resp.Groups[i]
			switch {
			case rg.ErrorCode != 0:
			case fetch.Groups[i].Topics == nil:
				// DESCRIBE on each of the group's topics, unasked: left out.
				rg.Topics = slices.DeleteFunc(rg.Topics, func(t kmsg.OffsetFetchResponseGroupTopic) bool {
					return !r.conn.allowed(acl.Describe, acl.Topic, t.Topic)
				})
			default:
				rg.Topics = append(rg.Topics, groupFetchesRefused(denied[i], kerr.TopicAuthorizationFailed.Code)...)
			}
		}
		resp.Groups = append(resp.Groups, refused...)
		r.respond(resp)
	}()
	return nil
}

// handleOffsetFetchOne is handleOffsetFetch before v8: one group, its
// error at the top level (from v2; in each partition before).
func handleOffsetFetchOne(b *Broker, r *request, req *kmsg.OffsetFetchRequest) kmsg.Response {
	// DESCRIBE on the group.
	if !r.authorizedGroup(acl.Describe, req.Group) {
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		if req.Version < 2 {
			resp.Topics = fetchesRefused(req.Topics, resp.ErrorCode)
		}
		return resp
	}
	describable := newACLVerdicts(r, acl.Describe, acl.Topic)
	fetch := *req
	var denied []kmsg.OffsetFetchRequestTopic
	fetch.Topics, denied = splitBy(req.Topics, func(t kmsg.OffsetFetchRequestTopic) bool {
		// DESCRIBE on each topic named.
		return describable.allowed(t.Topic)
	})
	go func() {
		resp := b.groups.c.OffsetFetch(r.ctx(), &fetch)
		switch {
		case resp.ErrorCode != 0:
		case req.Topics == nil:
			// DESCRIBE on each of the group's topics, unasked: left out.
			resp.Topics = slices.DeleteFunc(resp.Topics, func(t kmsg.OffsetFetchResponseTopic) bool {
				return !r.conn.allowed(acl.Describe, acl.Topic, t.Topic)
			})
		default:
			resp.Topics = append(resp.Topics, fetchesRefused(denied, kerr.TopicAuthorizationFailed.Code)...)
		}
		r.respond(resp)
	}()
	return nil
}

// fetchesRefused answers every partition of topics with code (and no
// offset).
func fetchesRefused(topics []kmsg.OffsetFetchRequestTopic, code int16) []kmsg.OffsetFetchResponseTopic {
	if len(topics) == 0 {
		return nil
	}
	out := make([]kmsg.OffsetFetchResponseTopic, len(topics))
	for i, t := range topics {
		rt := &out[i]
		*rt = kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = t.Topic
		rt.Partitions = make([]kmsg.OffsetFetchResponseTopicPartition, len(t.Partitions))
		for j, p := range t.Partitions {
			rp := &rt.Partitions[j]
			*rp = kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = p, -1, -1, code
		}
	}
	return out
}

// groupFetchesRefused is fetchesRefused from v8.
func groupFetchesRefused(topics []kmsg.OffsetFetchRequestGroupTopic, code int16) []kmsg.OffsetFetchResponseGroupTopic {
	if len(topics) == 0 {
		return nil
	}
	out := make([]kmsg.OffsetFetchResponseGroupTopic, len(topics))
	for i, t := range topics {
		rt := &out[i]
		*rt = kmsg.NewOffsetFetchResponseGroupTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.OffsetFetchResponseGroupTopicPartition, len(t.Partitions))
		for j, p := range t.Partitions {
			rp := &rt.Partitions[j]
			*rp = kmsg.NewOffsetFetchResponseGroupTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = p, -1, -1, code
		}
	}
	return out
}
