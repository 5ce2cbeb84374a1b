package broker_test

import (
	"crypto/rand"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// operationBits is an authorized-operations field allowing ops.
func operationBits(ops ...kadm.ACLOperation) int32 {
	var bits int32
	for _, op := range ops {
		bits |= 1 << op
	}
	return bits
}

// The operations Kafka lists for a topic and for the cluster.
var (
	allTopicOperations = operationBits(kadm.OpRead, kadm.OpWrite, kadm.OpCreate, kadm.OpDescribe, kadm.OpDelete,
		kadm.OpAlter, kadm.OpDescribeConfigs, kadm.OpAlterConfigs)
	allClusterOperations = operationBits(kadm.OpCreate, kadm.OpClusterAction, kadm.OpDescribeConfigs, kadm.OpAlterConfigs,
		kadm.OpIdempotentWrite, kadm.OpAlter, kadm.OpDescribe)
)

// allowTopics starts an ALLOW of user's on topics, literally named.
func allowTopics(user string, topics ...string) *kadm.ACLBuilder {
	return kadm.NewACLs().Topics(topics...).ResourcePatternType(kadm.ACLPatternLiteral).Allow("User:" + user).AllowHosts()
}

// allowCluster starts an ALLOW of user's on the cluster.
func allowCluster(user string) *kadm.ACLBuilder {
	return kadm.NewACLs().Clusters().Allow("User:" + user).AllowHosts()
}

// aclMetadataSummary is a Metadata answer's topics, by name (or by id, for a
// topic answered without its name): error, id, partitions and authorized
// operations.
func aclMetadataSummary(t *testing.T, cl *kgo.Client, req *kmsg.MetadataRequest) (map[string]string, int32) {
	t.Helper()
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, mt := range resp.Topics {
		key := fmt.Sprintf("%x", mt.TopicID) // answered by id: no name (null, or "" before v12)
		if mt.Topic != nil && *mt.Topic != "" {
			key = *mt.Topic
		}
		out[key] = fmt.Sprintf("%s id=%v partitions=%d ops=%d", aclCodeName(mt.ErrorCode), mt.TopicID != [16]byte{}, len(mt.Partitions), mt.AuthorizedOperations)
	}
	return out, resp.AuthorizedOperations
}

func aclMetadataRequest(autoCreate bool, topics ...string) *kmsg.MetadataRequest {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = autoCreate
	req.IncludeTopicAuthorizedOperations = true
	req.IncludeClusterAuthorizedOperations = true
	for _, name := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// TestACLMetadataShowsWhatTheClientMayDescribe: Metadata and
// DescribeTopicPartitions list only the topics the client may DESCRIBE;
// a topic it names but may not describe, existing or not, by name or by
// id, answers TOPIC_AUTHORIZATION_FAILED with no partitions (and no id
// for a name); a missing topic is auto-created only with CREATE on it.
// The authorized operations of topics (Metadata v8+ when asked,
// DescribeTopicPartitions always) and of the cluster (Metadata v8-v10 and
// DescribeCluster when asked: none without DESCRIBE on it) are those the
// ACLs allow.
func TestACLMetadataShowsWhatTheClientMayDescribe(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	adm := b.Admin()
	ctx := testCtx(t)
	addUser(t, adm, "alice", "alice-pw")
	addUser(t, adm, "bob", "bob-pw")
	ids := dataTopics(t, adm, "seen", "hidden", "pre-a")
	grant(t, adm, allowTopics("alice", "seen", "not-made").Operations(kadm.OpDescribe))
	grant(t, adm, allowTopics("alice", "made").Operations(kadm.OpDescribe, kadm.OpCreate))
	grant(t, adm, kadm.NewACLs().Topics("pre-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Allow("User:alice").AllowHosts().Operations(kadm.OpRead))
	grant(t, adm, allowCluster("bob").Operations(kadm.OpDescribe, kadm.OpAlterConfigs))

	// Metadata v10: the last version with the cluster's operations.
	v10 := kversion.Stable()
	v10.SetMaxKeyVersion(kmsg.Metadata.Int16(), 10)
	alice := userClient(t, b, "alice", "alice-pw", kgo.MaxVersions(v10))
	bob := userClient(t, b, "bob", "bob-pw", kgo.MaxVersions(v10))
	admin := userClient(t, b, "admin", "admin-secret", kgo.MaxVersions(v10))

	ok := func(ops int32) string { return fmt.Sprintf("none id=true partitions=1 ops=%d", ops) }
	refused := "TOPIC_AUTHORIZATION_FAILED id=false partitions=0 ops=-2147483648"
	hiddenID := fmt.Sprintf("%x", ids["hidden"])
	byID := kmsg.NewMetadataRequestTopic()
	byID.TopicID = ids["hidden"]
	namedAndByID := aclMetadataRequest(false, "seen", "hidden", "no-acl")
	namedAndByID.Topics = append(namedAndByID.Topics, byID)
	for _, c := range []struct {
		what        string
		cl          *kgo.Client
		req         *kmsg.MetadataRequest
		want        map[string]string
		clusterOps  int32
		wantCreated []string
	}{
		{"alice lists all topics", alice, aclMetadataRequest(false), map[string]string{
			"seen":  ok(operationBits(kadm.OpDescribe)),
			"pre-a": ok(operationBits(kadm.OpRead, kadm.OpDescribe)),
		}, 0, nil},
		{"bob lists all topics", bob, aclMetadataRequest(false), map[string]string{},
			operationBits(kadm.OpDescribe, kadm.OpAlterConfigs, kadm.OpDescribeConfigs), nil},
		{"the super user lists all topics", admin, aclMetadataRequest(false), map[string]string{
			"seen": ok(allTopicOperations), "hidden": ok(allTopicOperations), "pre-a": ok(allTopicOperations),
		}, allClusterOperations, nil},
		{"alice names topics, one by id", alice, namedAndByID, map[string]string{
			"seen":   ok(operationBits(kadm.OpDescribe)),
			"hidden": refused,
			"no-acl": refused,
			hiddenID: "TOPIC_AUTHORIZATION_FAILED id=true partitions=0 ops=-2147483648",
		}, 0, nil},
		{"alice auto-creates", alice, aclMetadataRequest(true, "made", "not-made", "no-acl"), map[string]string{
			"made":     ok(operationBits(kadm.OpDescribe, kadm.OpCreate)),
			"not-made": refused,
			"no-acl":   refused,
		}, 0, []string{"made"}},
	} {
		got, clusterOps := aclMetadataSummary(t, c.cl, c.req)
		if fmt.Sprint(got) != fmt.Sprint(c.want) || clusterOps != c.clusterOps {
			t.Errorf("%s:\n got  %v, cluster operations %d\n want %v, cluster operations %d", c.what, got, clusterOps, c.want, c.clusterOps)
		}
		existing, _ := aclMetadataSummary(t, admin, aclMetadataRequest(false))
		for _, name := range []string{"made", "not-made", "no-acl"} {
			if _, ok := existing[name]; ok != slices.Contains(c.wantCreated, name) {
				t.Errorf("%s: topic %s exists: %v", c.what, name, ok)
			}
		}
	}

	// DescribeTopicPartitions: alice's listing, and topics she names.
	describeSummary := func(topics ...string) []string {
		t.Helper()
		resp := describeTopicPartitions(t, alice, 0, "", 0, topics...)
		var out []string
		for _, rt := range resp.Topics {
			out = append(out, fmt.Sprintf("%s %s id=%v partitions=%d ops=%d", *rt.Topic, aclCodeName(rt.ErrorCode), rt.TopicID != [16]byte{}, len(rt.Partitions), rt.AuthorizedOperations))
		}
		return out
	}
	describe := operationBits(kadm.OpDescribe)
	for _, c := range []struct {
		topics []string
		want   []string
	}{
		{nil, []string{
			fmt.Sprintf("made none id=true partitions=1 ops=%d", operationBits(kadm.OpDescribe, kadm.OpCreate)),
			fmt.Sprintf("pre-a none id=true partitions=1 ops=%d", operationBits(kadm.OpRead, kadm.OpDescribe)),
			fmt.Sprintf("seen none id=true partitions=1 ops=%d", describe),
		}},
		{[]string{"hidden", "seen", "no-acl"}, []string{
			fmt.Sprintf("seen none id=true partitions=1 ops=%d", describe),
			"hidden TOPIC_AUTHORIZATION_FAILED id=false partitions=0 ops=-2147483648",
			"no-acl TOPIC_AUTHORIZATION_FAILED id=false partitions=0 ops=-2147483648",
		}},
	} {
		if got := describeSummary(c.topics...); !slices.Equal(got, c.want) {
			t.Errorf("DescribeTopicPartitions of %v:\n got  %q\n want %q", c.topics, got, c.want)
		}
	}

	// DescribeCluster: the cluster's operations when asked, whatever
	// the client may do.
	for _, c := range []struct {
		who  string
		cl   *kgo.Client
		ask  bool
		want int32
	}{
		{"alice", alice, true, 0},
		{"bob", bob, true, operationBits(kadm.OpDescribe, kadm.OpAlterConfigs, kadm.OpDescribeConfigs)},
		{"bob", bob, false, math.MinInt32},
		{"admin", admin, true, allClusterOperations},
	} {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.IncludeClusterAuthorizedOperations = c.ask
		resp, err := req.RequestWith(ctx, c.cl)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ErrorCode != 0 || len(resp.Brokers) != 1 || resp.ClusterAuthorizedOperations != c.want {
			t.Errorf("%s's DescribeCluster (asking for operations: %v): %v, %d brokers, operations %d, want %d",
				c.who, c.ask, kerr.ErrorForCode(resp.ErrorCode), len(resp.Brokers), resp.ClusterAuthorizedOperations, c.want)
		}
	}
}

// TestACLCreateTopicsNeedsCreate: CreateTopics needs CREATE on the
// cluster or on the topic (a PREFIXED pattern will do), else the topic is
// TOPIC_AUTHORIZATION_FAILED and not created; the configs the answer
// carries need DESCRIBE_CONFIGS on the topic, else its config error is
// TOPIC_AUTHORIZATION_FAILED and it carries none.
func TestACLCreateTopicsNeedsCreate(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	adm := b.Admin()
	ctx := testCtx(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		addUser(t, adm, u, u+"-pw")
	}
	grant(t, adm, allowCluster("alice").Operations(kadm.OpCreate))
	grant(t, adm, kadm.NewACLs().Topics("bob-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Allow("User:bob").AllowHosts().Operations(kadm.OpCreate, kadm.OpDescribeConfigs))
	for _, c := range []struct {
		user, topic string
		code        int16
		configs     bool // the answer carries them
	}{
		{"alice", "alice-1", 0, false},                              // CREATE on the cluster
		{"bob", "bob-1", 0, true},                                   // CREATE and DESCRIBE_CONFIGS on bob-*
		{"bob", "other", kerr.TopicAuthorizationFailed.Code, false}, // not bob-*
		{"carol", "carol-1", kerr.TopicAuthorizationFailed.Code, false},
	} {
		resp, err := createTopicsRequest(false, topicReq(c.topic, 2)).RequestWith(ctx, userClient(t, b, c.user, c.user+"-pw"))
		if err != nil {
			t.Fatal(err)
		}
		st := resp.Topics[0]
		wantCode(t, c.user+" creating "+c.topic, st.ErrorCode, c.code)
		if c.code != 0 {
			continue
		}
		wantConfigCode, wantPartitions := kerr.TopicAuthorizationFailed.Code, int32(-1)
		if c.configs {
			wantConfigCode, wantPartitions = 0, 2
		}
		if st.ConfigErrorCode != wantConfigCode || st.NumPartitions != wantPartitions || (len(st.Configs) > 0) != c.configs {
			t.Errorf("%s creating %s: config error %v, %d partitions, %d configs; want %v, %d partitions, configs %v",
				c.user, c.topic, kerr.ErrorForCode(st.ConfigErrorCode), st.NumPartitions, len(st.Configs), kerr.ErrorForCode(wantConfigCode), wantPartitions, c.configs)
		}
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := topics.Names(); !slices.Equal(got, []string{"alice-1", "bob-1"}) {
		t.Errorf("topics created: %v, want alice-1 and bob-1", got)
	}
}

// adminAPI sends one admin request and returns its error codes: the
// top-level one where the version has it, then each item's.
type adminAPI struct {
	name string
	// acl is what the API needs (on topic when it names one).
	acl     func(user string) *kadm.ACLBuilder
	topic   string
	call    func(t *testing.T, cl *kgo.Client, topic string, id [16]byte) []int16
	refused []int16
	allowed []int16
}

func adminResponse(t *testing.T, cl *kgo.Client, req kmsg.Request) kmsg.Response {
	t.Helper()
	// One broker: one shard, answered as the broker answered (kgo's
	// merge of DescribeLogDirs shards drops the top-level error).
	shards := cl.RequestSharded(testCtx(t), req)
	if len(shards) != 1 || shards[0].Err != nil {
		t.Fatalf("%s: %d shards, %v", kmsg.NameForKey(req.Key()), len(shards), shards[0].Err)
	}
	return shards[0].Resp
}

var (
	topicAuthFailed   = kerr.TopicAuthorizationFailed.Code
	clusterAuthFailed = kerr.ClusterAuthorizationFailed.Code
)

var adminAPIs = []adminAPI{
	{"DeleteTopics by name", func(u string) *kadm.ACLBuilder { return allowTopics(u, "doomed").Operations(kadm.OpDelete) }, "doomed",
		func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
			req := kmsg.NewPtrDeleteTopicsRequest()
			req.TimeoutMillis = 10000
			rt := kmsg.NewDeleteTopicsRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			return []int16{adminResponse(t, cl, req).(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode}
		}, []int16{topicAuthFailed}, []int16{0}},
	{"DeleteTopics by id", func(u string) *kadm.ACLBuilder { return allowTopics(u, "doomed-id").Operations(kadm.OpDelete) }, "doomed-id",
		func(t *testing.T, cl *kgo.Client, _ string, id [16]byte) []int16 {
			req := kmsg.NewPtrDeleteTopicsRequest()
			req.TimeoutMillis = 10000
			rt := kmsg.NewDeleteTopicsRequestTopic()
			rt.TopicID = id
			req.Topics = append(req.Topics, rt)
			st := adminResponse(t, cl, req).(*kmsg.DeleteTopicsResponse).Topics[0]
			if st.ErrorCode != 0 && st.Topic != nil {
				t.Errorf("DeleteTopics by id refused: the answer names the topic %s", *st.Topic)
			}
			return []int16{st.ErrorCode}
		}, []int16{topicAuthFailed}, []int16{0}},
	{"CreatePartitions", func(u string) *kadm.ACLBuilder { return allowTopics(u, "grow").Operations(kadm.OpAlter) }, "grow",
		func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
			req := kmsg.NewPtrCreatePartitionsRequest()
			req.TimeoutMillis = 10000
			rt := kmsg.NewCreatePartitionsRequestTopic()
			rt.Topic, rt.Count = topic, 2
			req.Topics = append(req.Topics, rt)
			return []int16{adminResponse(t, cl, req).(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode}
		}, []int16{topicAuthFailed}, []int16{0}},
	{"DescribeConfigs of a topic", func(u string) *kadm.ACLBuilder { return allowTopics(u, "conf").Operations(kadm.OpDescribeConfigs) }, "conf",
		describeConfigsCall(kmsg.ConfigResourceTypeTopic), []int16{topicAuthFailed}, []int16{0}},
	{"IncrementalAlterConfigs of a topic", func(u string) *kadm.ACLBuilder { return allowTopics(u, "conf").Operations(kadm.OpAlterConfigs) }, "conf",
		incrementalAlterCall(kmsg.ConfigResourceTypeTopic, "retention.ms", "100000"), []int16{topicAuthFailed}, []int16{0}},
	{"AlterConfigs of a topic", func(u string) *kadm.ACLBuilder { return allowTopics(u, "conf").Operations(kadm.OpAlterConfigs) }, "conf",
		func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
			req := kmsg.NewPtrAlterConfigsRequest()
			req.ValidateOnly = true
			res := kmsg.NewAlterConfigsRequestResource()
			res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, topic
			req.Resources = append(req.Resources, res)
			return []int16{adminResponse(t, cl, req).(*kmsg.AlterConfigsResponse).Resources[0].ErrorCode}
		}, []int16{topicAuthFailed}, []int16{0}},
	{"DescribeConfigs of the brokers", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpDescribeConfigs) }, "",
		describeConfigsCall(kmsg.ConfigResourceTypeBroker), []int16{clusterAuthFailed}, []int16{0}},
	{"IncrementalAlterConfigs of the brokers", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpAlterConfigs) }, "",
		incrementalAlterCall(kmsg.ConfigResourceTypeBroker, "leader.replication.throttled.rate", "1048576"), []int16{clusterAuthFailed}, []int16{0}},
	{"ElectLeaders", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpAlter) }, "elect",
		func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
			req := kmsg.NewPtrElectLeadersRequest()
			req.TimeoutMillis = 10000
			rt := kmsg.NewElectLeadersRequestTopic()
			rt.Topic, rt.Partitions = topic, []int32{0}
			req.Topics = append(req.Topics, rt)
			resp := adminResponse(t, cl, req).(*kmsg.ElectLeadersResponse)
			return []int16{resp.ErrorCode, resp.Topics[0].Partitions[0].ErrorCode}
		}, []int16{clusterAuthFailed, clusterAuthFailed}, []int16{0, kerr.ElectionNotNeeded.Code}},
	{"AlterPartitionReassignments", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpAlter) }, "elect",
		func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
			req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
			req.TimeoutMillis = 10000
			rt := kmsg.NewAlterPartitionAssignmentsRequestTopic()
			rt.Topic = topic
			rp := kmsg.NewAlterPartitionAssignmentsRequestTopicPartition()
			rp.Partition = 0 // Replicas nil: cancels, and none is in progress
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp := adminResponse(t, cl, req).(*kmsg.AlterPartitionAssignmentsResponse)
			return []int16{resp.ErrorCode, resp.Topics[0].Partitions[0].ErrorCode}
		}, []int16{clusterAuthFailed, clusterAuthFailed}, []int16{0, kerr.NoReassignmentInProgress.Code}},
	{"ListPartitionReassignments", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpDescribe) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			return []int16{adminResponse(t, cl, kmsg.NewPtrListPartitionReassignmentsRequest()).(*kmsg.ListPartitionReassignmentsResponse).ErrorCode}
		}, []int16{clusterAuthFailed}, []int16{0}},
	{"DescribeLogDirs", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpDescribe) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			resp := adminResponse(t, cl, kmsg.NewPtrDescribeLogDirsRequest()).(*kmsg.DescribeLogDirsResponse)
			if resp.ErrorCode == 0 && len(resp.Dirs) != 1 || resp.ErrorCode != 0 && len(resp.Dirs) != 0 {
				t.Errorf("DescribeLogDirs: %v with %d dirs", kerr.ErrorForCode(resp.ErrorCode), len(resp.Dirs))
			}
			return []int16{resp.ErrorCode}
		}, []int16{clusterAuthFailed}, []int16{0}},
	{"DescribeClientQuotas", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpDescribeConfigs) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			return []int16{adminResponse(t, cl, kmsg.NewPtrDescribeClientQuotasRequest()).(*kmsg.DescribeClientQuotasResponse).ErrorCode}
		}, []int16{clusterAuthFailed}, []int16{0}},
	{"AlterClientQuotas", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpAlterConfigs) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			req := kmsg.NewPtrAlterClientQuotasRequest()
			req.ValidateOnly = true
			e := kmsg.NewAlterClientQuotasRequestEntry()
			ee := kmsg.NewAlterClientQuotasRequestEntryEntity()
			ee.Type, ee.Name = "user", kmsg.StringPtr("someone")
			op := kmsg.NewAlterClientQuotasRequestEntryOp()
			op.Key, op.Value = "producer_byte_rate", 1024
			e.Entity, e.Ops = append(e.Entity, ee), append(e.Ops, op)
			req.Entries = append(req.Entries, e)
			return []int16{adminResponse(t, cl, req).(*kmsg.AlterClientQuotasResponse).Entries[0].ErrorCode}
		}, []int16{clusterAuthFailed}, []int16{0}},
	{"DescribeUserScramCredentials", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpDescribe) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			req := kmsg.NewPtrDescribeUserSCRAMCredentialsRequest()
			u := kmsg.NewDescribeUserSCRAMCredentialsRequestUser()
			u.Name = "admin"
			req.Users = append(req.Users, u)
			resp := adminResponse(t, cl, req).(*kmsg.DescribeUserSCRAMCredentialsResponse)
			return []int16{resp.ErrorCode, resp.Results[0].ErrorCode}
		}, []int16{clusterAuthFailed, clusterAuthFailed}, []int16{0, 0}},
	{"AlterUserScramCredentials", func(u string) *kadm.ACLBuilder { return allowCluster(u).Operations(kadm.OpAlter) }, "",
		func(t *testing.T, cl *kgo.Client, _ string, _ [16]byte) []int16 {
			req := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
			up := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
			up.Name, up.Mechanism, up.Iterations = "dave", 1, 4096
			up.Salt, up.SaltedPassword = make([]byte, 16), make([]byte, 32)
			rand.Read(up.Salt)
			rand.Read(up.SaltedPassword)
			req.Upsertions = append(req.Upsertions, up)
			return []int16{adminResponse(t, cl, req).(*kmsg.AlterUserSCRAMCredentialsResponse).Results[0].ErrorCode}
		}, []int16{clusterAuthFailed}, []int16{0}},
}

func describeConfigsCall(typ kmsg.ConfigResourceType) func(*testing.T, *kgo.Client, string, [16]byte) []int16 {
	return func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
		req := kmsg.NewPtrDescribeConfigsRequest()
		res := kmsg.NewDescribeConfigsRequestResource()
		res.ResourceType, res.ResourceName = typ, topic // "" for the brokers: the cluster-wide default
		req.Resources = append(req.Resources, res)
		return []int16{adminResponse(t, cl, req).(*kmsg.DescribeConfigsResponse).Resources[0].ErrorCode}
	}
}

func incrementalAlterCall(typ kmsg.ConfigResourceType, name, value string) func(*testing.T, *kgo.Client, string, [16]byte) []int16 {
	return func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) []int16 {
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		req.ValidateOnly = typ == kmsg.ConfigResourceTypeBroker
		res := kmsg.NewIncrementalAlterConfigsRequestResource()
		res.ResourceType, res.ResourceName = typ, topic
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Value = name, kmsg.StringPtr(value)
		res.Configs = append(res.Configs, c)
		req.Resources = append(req.Resources, res)
		return []int16{adminResponse(t, cl, req).(*kmsg.IncrementalAlterConfigsResponse).Resources[0].ErrorCode}
	}
}

// TestACLAdminAPIsNeedTheirACL: each admin API, as a user with no ACL, is
// refused (TOPIC_AUTHORIZATION_FAILED for an API on a topic,
// CLUSTER_AUTHORIZATION_FAILED on the cluster, at the top level where the
// version has one and for each item), and, once the user is granted the
// one operation the API needs, allowed. The broker's DescribeConfigs
// shows its ACL settings, read-only.
func TestACLAdminAPIsNeedTheirACL(t *testing.T) {
	b := brokertest.Start(t, aclOpts, func(c *broker.Config) { c.SuperUsers = []string{"User:ops", "User:root"} })
	adm := b.Admin()
	ids := dataTopics(t, adm, "doomed", "doomed-id", "grow", "conf", "elect")
	for i, api := range adminAPIs {
		user := fmt.Sprintf("user%d", i)
		addUser(t, adm, user, "pw")
		cl := userClient(t, b, user, "pw")
		if got := api.call(t, cl, api.topic, ids[api.topic]); !slices.Equal(got, api.refused) {
			t.Errorf("%s without an ACL: %v, want %v", api.name, aclCodeNames(got), aclCodeNames(api.refused))
		}
		grant(t, adm, api.acl(user))
		if got := api.call(t, cl, api.topic, ids[api.topic]); !slices.Equal(got, api.allowed) {
			t.Errorf("%s with its ACL: %v, want %v", api.name, aclCodeNames(got), aclCodeNames(api.allowed))
		}
	}

	// The broker's ACL settings: read-only, as its other static configs.
	meta, err := adm.BrokerMetadata(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeBroker, fmt.Sprint(meta.Brokers[0].NodeID)
	res.ConfigNames = []string{"authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found"}
	req.Resources = append(req.Resources, res)
	described := adminResponse(t, userClient(t, b, "admin", "admin-secret"), req).(*kmsg.DescribeConfigsResponse).Resources[0]
	got := map[string]string{}
	for _, c := range described.Configs {
		got[c.Name] = fmt.Sprintf("%s read-only=%v", *c.Value, c.ReadOnly)
	}
	want := map[string]string{
		"authorizer.class.name":          "org.apache.kafka.metadata.authorizer.StandardAuthorizer read-only=true",
		"super.users":                    "User:ops;User:root read-only=true",
		"allow.everyone.if.no.acl.found": "false read-only=true",
	}
	if described.ErrorCode != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("broker configs: %s %v, want %v", aclCodeName(described.ErrorCode), got, want)
	}
}

// aclCodeName is an error code's name ("none" for 0).
func aclCodeName(code int16) string {
	if code == 0 {
		return "none"
	}
	return kerr.ErrorForCode(code).(*kerr.Error).Message
}

func aclCodeNames(codes []int16) []string {
	out := make([]string, 0, len(codes))
	for _, c := range codes {
		out = append(out, aclCodeName(c))
	}
	return out
}
