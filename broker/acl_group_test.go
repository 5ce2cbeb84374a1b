package broker_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestACLGroupConsumer: a user allowed READ on a topic and on its groups
// consumes the topic in a classic and in a KIP-848 group and commits, on a
// broker that enforces ACLs as on one without an authorizer (where the
// user has no ACL at all). READ does not allow deleting the groups; the
// broker without an authorizer lets the user do that too.
func TestACLGroupConsumer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   brokertest.Option
		grant  bool
		delete error // DeleteGroups' answer to the user
	}{
		{"acls", aclOpts, true, kerr.GroupAuthorizationFailed},
		{"no authorizer", saslOpts, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := groupBroker(t, nil, tc.opts)
			adm := b.Admin()
			createTopic(t, adm, "t", 1, nil)
			produceValues(t, b.Client(), "t", 0, 10)
			addUser(t, adm, "alice", "alice-pw")
			if tc.grant {
				grant(t, adm, kadm.NewACLs().Allow("User:alice").AllowHosts().Topics("t").
					Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral))
				grant(t, adm, kadm.NewACLs().Allow("User:alice").AllowHosts().Groups("alice-").
					Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternPrefixed))
			}
			alice := kadm.NewClient(userClient(t, b, "alice", "alice-pw"))
			ctx := testCtx(t)
			groups := map[string][]kgo.Opt{
				"alice-classic": nil,
				"alice-848":     {kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer()},
			}
			for group, opts := range groups {
				consumeInGroup(t, b, "alice", "alice-pw", group, "t", 10, opts...)
				offsets, err := alice.FetchOffsets(ctx, group)
				if err == nil {
					err = offsets.Error()
				}
				if err != nil {
					t.Fatalf("%s: fetching offsets: %v", group, err)
				}
				if o, _ := offsets.Lookup("t", 0); o.At != 10 {
					t.Fatalf("%s: committed offset %d, want 10", group, o.At)
				}
			}
			deleted, err := alice.DeleteGroups(ctx, "alice-classic", "alice-848")
			if err != nil {
				t.Fatal(err)
			}
			for group := range groups {
				if err := deleted[group].Err; !errors.Is(err, tc.delete) {
					t.Errorf("deleting %s: %v, want %v", group, err, tc.delete)
				}
			}
		})
	}
}

// consumeInGroup reads n records of topic as user, a member of group, and
// commits them; the member then leaves the group.
func consumeInGroup(t *testing.T, b *brokertest.Broker, user, pw, group, topic string, n int, opts ...kgo.Opt) {
	t.Helper()
	cl := userClient(t, b, user, pw, append([]kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}, opts...)...)
	defer cl.Close()
	ctx := testCtx(t)
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: consumed %d of %d records before the deadline", group, got, n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("%s: fetch %s/%d: %v", group, topic, p, err) })
		got += fs.NumRecords()
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("%s: commit: %v", group, err)
	}
}

// TestACLGroupRequests sends every group API, raw, as users allowed one
// operation or another on groups g, h and doomed and topic t (none on
// topic secret), and checks what each is refused and what it is shown:
// the error codes and, where the response has them, the groups, topics
// and authorized operations. The cases run in order: ListGroups sees the
// groups that DeleteGroups deletes later.
func TestACLGroupRequests(t *testing.T) {
	b := groupBroker(t, nil, aclOpts)
	adm := b.Admin()
	ctx := testCtx(t)
	ids := map[string][16]byte{}
	names := map[[16]byte]string{}
	for _, n := range []string{"t", "secret"} {
		ids[n] = createTopic(t, adm, n, 1, nil).ID
		names[ids[n]] = n
	}
	for group, topics := range map[string][]string{"g": {"t", "secret"}, "h": {"t", "secret"}, "doomed": {"t"}} {
		var os kadm.Offsets
		for _, topic := range topics {
			os.AddOffset(topic, 0, 5, -1)
		}
		res, err := adm.CommitOffsets(ctx, group, os)
		if err == nil {
			err = res.Error()
		}
		if err != nil {
			t.Fatalf("committing offsets of %s: %v", group, err)
		}
	}
	allow := func(user string, op kadm.ACLOperation, acls *kadm.ACLBuilder) {
		grant(t, adm, acls.Allow("User:"+user).AllowHosts().Operations(op).ResourcePatternType(kadm.ACLPatternLiteral))
	}
	allow("viewer", kadm.OpDescribe, kadm.NewACLs().Groups("g").Topics("t"))
	allow("reader", kadm.OpRead, kadm.NewACLs().Groups("g").Topics("t"))
	allow("janitor", kadm.OpDelete, kadm.NewACLs().Groups("h", "doomed"))
	allow("janitor", kadm.OpRead, kadm.NewACLs().Topics("t"))
	allow("lister", kadm.OpDescribe, kadm.NewACLs().Clusters())
	// The old clients speak FindCoordinator before v4 (one key), OffsetFetch
	// before v8 (one group) and OffsetCommit before v10 (topic names).
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(kmsg.FindCoordinator.Int16(), 3)
	vs.SetMaxKeyVersion(kmsg.OffsetFetch.Int16(), 7)
	vs.SetMaxKeyVersion(kmsg.OffsetCommit.Int16(), 9)
	clients, old := map[string]*kgo.Client{"admin": b.Client()}, map[string]*kgo.Client{}
	for _, u := range []string{"viewer", "reader", "janitor", "lister", "nobody"} {
		addUser(t, adm, u, u+"-pw")
		clients[u] = userClient(t, b, u, u+"-pw")
		old[u] = userClient(t, b, u, u+"-pw", kgo.MaxVersions(vs))
	}

	var (
		gaf   = int32(kerr.GroupAuthorizationFailed.Code)
		taf   = int32(kerr.TopicAuthorizationFailed.Code)
		tidaf = int32(kerr.TransactionalIDAuthorizationFailed.Code)
	)
	const unasked = int32(-2147483648) // authorized operations not asked for
	// Operations' bits in authorized operations.
	const (
		read     = 1 << 3
		del      = 1 << 6
		describe = 1 << 8
	)
	for _, tc := range []struct {
		name string
		cl   *kgo.Client
		req  kmsg.Request
		want map[string]int32
	}{
		{"find group coordinators", clients["viewer"], findCoordinator(0, "g", "h"), map[string]int32{"g": 0, "h": gaf}},
		{"find a group coordinator v3", old["viewer"], findCoordinator(0, "h"), map[string]int32{"": gaf}},
		{"find a transaction coordinator", clients["nobody"], findCoordinator(1, "tx"), map[string]int32{"tx": tidaf}},
		{"join without READ", clients["viewer"], joinGroup("g"), map[string]int32{"": gaf}},
		{"sync without READ", clients["viewer"], syncGroup("g"), map[string]int32{"": gaf}},
		{"heartbeat without READ", clients["viewer"], heartbeat("g"), map[string]int32{"": gaf}},
		{"leave without READ", clients["viewer"], leaveGroup("g"), map[string]int32{"": gaf}},
		{"consumer heartbeat without READ", clients["viewer"], consumerHeartbeat("g", "t"), map[string]int32{"": gaf}},
		{"consumer heartbeat subscribing to a secret", clients["reader"], consumerHeartbeat("g", "t", "secret"), map[string]int32{"": taf}},
		{"commit without READ on the group", clients["viewer"], offsetCommit("g", ids, "t"), map[string]int32{"t/0": gaf}},
		{"commit to a secret", clients["reader"], offsetCommit("g", ids, "t", "secret"), map[string]int32{"t/0": 0, "secret/0": taf}},
		{"commit only to a secret", clients["reader"], offsetCommit("g", ids, "secret"), map[string]int32{"secret/0": taf}},
		{"commit to a secret v9", old["reader"], offsetCommit("g", ids, "t", "secret"), map[string]int32{"t/0": 0, "secret/0": taf}},
		{"fetch all offsets", clients["viewer"], offsetFetch(ids, map[string][]string{"g": nil, "h": nil}), map[string]int32{"g": 0, "g/t/0": 0, "h": gaf}},
		{"fetch all offsets as admin", clients["admin"], offsetFetch(ids, map[string][]string{"g": nil}), map[string]int32{"g": 0, "g/t/0": 0, "g/secret/0": 0}},
		{"fetch a secret's offsets", clients["viewer"], offsetFetch(ids, map[string][]string{"g": {"t", "secret"}}), map[string]int32{"g": 0, "g/t/0": 0, "g/secret/0": taf}},
		{"fetch all offsets v7", old["viewer"], offsetFetch(ids, map[string][]string{"g": nil}), map[string]int32{"": 0, "t/0": 0}},
		{"fetch a secret's offsets v7", old["viewer"], offsetFetch(ids, map[string][]string{"g": {"t", "secret"}}), map[string]int32{"": 0, "t/0": 0, "secret/0": taf}},
		{"fetch offsets v7 without DESCRIBE", old["viewer"], offsetFetch(ids, map[string][]string{"h": {"t"}}), map[string]int32{"": gaf}},
		{"describe groups", clients["viewer"], describeGroups(true, "g", "h"), map[string]int32{"g": 0, "g/ops": describe, "h": gaf, "h/ops": unasked}},
		{"describe groups unasked", clients["viewer"], describeGroups(false, "g"), map[string]int32{"g": 0, "g/ops": unasked}},
		{"describe groups with READ", clients["reader"], describeGroups(true, "g"), map[string]int32{"g": 0, "g/ops": read | describe}},
		{"describe groups with DELETE", clients["janitor"], describeGroups(true, "h"), map[string]int32{"h": 0, "h/ops": del | describe}},
		{"describe groups as admin", clients["admin"], describeGroups(true, "g"), map[string]int32{"g": 0, "g/ops": read | del | describe}},
		{"describe consumer groups", clients["viewer"], consumerGroupDescribe("g", "h"), map[string]int32{"g": int32(kerr.GroupIDNotFound.Code), "h": gaf}},
		{"list groups", clients["viewer"], kmsg.NewPtrListGroupsRequest(), map[string]int32{"": 0, "g": 0}},
		{"list groups with DELETE", clients["janitor"], kmsg.NewPtrListGroupsRequest(), map[string]int32{"": 0, "h": 0, "doomed": 0}},
		{"list groups with DESCRIBE on the cluster", clients["lister"], kmsg.NewPtrListGroupsRequest(), map[string]int32{"": 0, "g": 0, "h": 0, "doomed": 0}},
		{"list no groups", clients["nobody"], kmsg.NewPtrListGroupsRequest(), map[string]int32{"": 0}},
		{"delete offsets without DELETE", clients["reader"], offsetDelete("g", "t"), map[string]int32{"": gaf}},
		{"delete a secret's offsets", clients["janitor"], offsetDelete("h", "t", "secret"), map[string]int32{"": 0, "t/0": 0, "secret/0": taf}},
		{"delete groups", clients["janitor"], deleteGroups("doomed", "g"), map[string]int32{"doomed": 0, "g": gaf}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.cl.SeedBrokers()[0].Request(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := groupCodes(resp, names); !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// groupCodes flattens a group API's response: its error codes, keyed ""
// (the response's own), by group or coordinator key, "topic/partition" and
// "group/topic/partition"; the groups ListGroups lists (0); and
// DescribeGroups' authorized operations ("group/ops"). names names the
// topics of responses that carry only ids.
func groupCodes(resp kmsg.Response, names map[[16]byte]string) map[string]int32 {
	m := map[string]int32{}
	topic := func(name string, id [16]byte) string {
		if name == "" {
			return names[id]
		}
		return name
	}
	part := func(prefix, topic string, p int32, code int16) {
		m[fmt.Sprintf("%s%s/%d", prefix, topic, p)] = int32(code)
	}
	switch r := resp.(type) {
	case *kmsg.FindCoordinatorResponse:
		if r.Version < 4 {
			m[""] = int32(r.ErrorCode)
		}
		for _, c := range r.Coordinators {
			m[c.Key] = int32(c.ErrorCode)
		}
	case *kmsg.JoinGroupResponse:
		m[""] = int32(r.ErrorCode)
	case *kmsg.SyncGroupResponse:
		m[""] = int32(r.ErrorCode)
	case *kmsg.HeartbeatResponse:
		m[""] = int32(r.ErrorCode)
	case *kmsg.LeaveGroupResponse:
		m[""] = int32(r.ErrorCode)
	case *kmsg.ConsumerGroupHeartbeatResponse:
		m[""] = int32(r.ErrorCode)
	case *kmsg.OffsetCommitResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				part("", topic(t.Topic, t.TopicID), p.Partition, p.ErrorCode)
			}
		}
	case *kmsg.OffsetFetchResponse:
		if r.Version < 8 {
			m[""] = int32(r.ErrorCode)
		}
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				part("", t.Topic, p.Partition, p.ErrorCode)
			}
		}
		for _, g := range r.Groups {
			m[g.Group] = int32(g.ErrorCode)
			for _, t := range g.Topics {
				for _, p := range t.Partitions {
					part(g.Group+"/", topic(t.Topic, t.TopicID), p.Partition, p.ErrorCode)
				}
			}
		}
	case *kmsg.OffsetDeleteResponse:
		m[""] = int32(r.ErrorCode)
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				part("", t.Topic, p.Partition, p.ErrorCode)
			}
		}
	case *kmsg.DescribeGroupsResponse:
		for _, g := range r.Groups {
			m[g.Group], m[g.Group+"/ops"] = int32(g.ErrorCode), g.AuthorizedOperations
		}
	case *kmsg.ConsumerGroupDescribeResponse:
		for _, g := range r.Groups {
			m[g.Group] = int32(g.ErrorCode)
		}
	case *kmsg.ListGroupsResponse:
		m[""] = int32(r.ErrorCode)
		for _, g := range r.Groups {
			m[g.Group] = 0
		}
	case *kmsg.DeleteGroupsResponse:
		for _, g := range r.Groups {
			m[g.Group] = int32(g.ErrorCode)
		}
	}
	return m
}

// The requests of TestACLGroupRequests, for the partition 0 of each topic
// they name.

func findCoordinator(typ int8, keys ...string) *kmsg.FindCoordinatorRequest {
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType = typ
	req.CoordinatorKey, req.CoordinatorKeys = keys[0], keys
	return req
}

func joinGroup(group string) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.ProtocolType = group, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 6000, 6000
	req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{}}}
	return req
}

func syncGroup(group string) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group, req.MemberID, req.Generation = group, "m", 1
	return req
}

func heartbeat(group string) *kmsg.HeartbeatRequest {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.Generation = group, "m", 1
	return req
}

func leaveGroup(group string) *kmsg.LeaveGroupRequest {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group, req.MemberID = group, "m"
	req.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "m"}}
	return req
}

func consumerHeartbeat(group string, topics ...string) *kmsg.ConsumerGroupHeartbeatRequest {
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	// From v1 a joining member makes its own id.
	req.Group, req.MemberID, req.MemberEpoch = group, "m0000000000000000000000", 0
	req.RebalanceTimeoutMillis = 10000
	req.SubscribedTopicNames = topics
	req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	return req
}

func offsetCommit(group string, ids map[string][16]byte, topics ...string) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	for _, t := range topics {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID = t, ids[t]
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Offset = 6
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// offsetFetch fetches the offsets of groups, of the topics named for each
// (nil: all the group's); before v8, of the one group.
func offsetFetch(ids map[string][16]byte, groups map[string][]string) *kmsg.OffsetFetchRequest {
	req := kmsg.NewPtrOffsetFetchRequest()
	for group, topics := range groups {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = group
		req.Group = group
		if topics != nil {
			rg.Topics = []kmsg.OffsetFetchRequestGroupTopic{}
			req.Topics = []kmsg.OffsetFetchRequestTopic{}
		}
		for _, t := range topics {
			rg.Topics = append(rg.Topics, kmsg.OffsetFetchRequestGroupTopic{Topic: t, TopicID: ids[t], Partitions: []int32{0}})
			req.Topics = append(req.Topics, kmsg.OffsetFetchRequestTopic{Topic: t, Partitions: []int32{0}})
		}
		req.Groups = append(req.Groups, rg)
	}
	return req
}

func describeGroups(operations bool, groups ...string) *kmsg.DescribeGroupsRequest {
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups, req.IncludeAuthorizedOperations = groups, operations
	return req
}

func consumerGroupDescribe(groups ...string) *kmsg.ConsumerGroupDescribeRequest {
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Groups = groups
	return req
}

func offsetDelete(group string, topics ...string) *kmsg.OffsetDeleteRequest {
	req := kmsg.NewPtrOffsetDeleteRequest()
	req.Group = group
	for _, t := range topics {
		req.Topics = append(req.Topics, kmsg.OffsetDeleteRequestTopic{Topic: t, Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}})
	}
	return req
}

func deleteGroups(groups ...string) *kmsg.DeleteGroupsRequest {
	req := kmsg.NewPtrDeleteGroupsRequest()
	req.Groups = groups
	return req
}

// TestACLGroupRegexSubscriptionSeesDescribableTopics: a KIP-848 member
// subscribing by regular expression is assigned the matching topics it
// may DESCRIBE and no other, as Kafka's coordinator filters them; the
// super user's member, the same expression, gets them all.
func TestACLGroupRegexSubscriptionSeesDescribableTopics(t *testing.T) {
	b := groupBroker(t, nil, aclOpts)
	adm := b.Admin()
	ids := map[[16]byte]string{}
	for _, name := range []string{"re-open", "re-secret", "other"} {
		ids[createTopic(t, adm, name, 1, nil).ID] = name
	}
	addUser(t, adm, "alice", "alice-pw")
	grant(t, adm, kadm.NewACLs().Allow("User:alice").AllowHosts().Topics("re-open", "other").
		Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral))
	grant(t, adm, kadm.NewACLs().Allow("User:alice").AllowHosts().Groups("alice-re").
		Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral))
	assigned := func(cl *kgo.Client, group string) []string {
		t.Helper()
		var got []string
		brokertest.WaitFor(t, 10*time.Second, "an assignment", func() (bool, string) {
			req := consumerHeartbeat(group)
			req.SubscribedTopicNames = nil
			req.SubscribedTopicRegex = kmsg.StringPtr("re-.*")
			resp, err := req.RequestWith(testCtx(t), cl)
			if err != nil || resp.ErrorCode != 0 || resp.Assignment == nil {
				return false, fmt.Sprintf("%v %v", err, resp)
			}
			got = nil
			for _, at := range resp.Assignment.Topics {
				got = append(got, ids[at.TopicID])
			}
			slices.Sort(got)
			return true, ""
		})
		return got
	}
	if got := assigned(userClient(t, b, "alice", "alice-pw"), "alice-re"); !slices.Equal(got, []string{"re-open"}) {
		t.Errorf("alice's member was assigned %v, want [re-open]", got)
	}
	if got := assigned(b.Client(), "admin-re"); !slices.Equal(got, []string{"re-open", "re-secret"}) {
		t.Errorf("the super user's member was assigned %v, want [re-open re-secret]", got)
	}
}
