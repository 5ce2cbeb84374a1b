package broker_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker/brokertest"
)

// aclCreation is one CreateAcls creation.
func aclCreation(typ kmsg.ACLResourceType, pat kmsg.ACLResourcePatternType, name, principal string, op kmsg.ACLOperation, perm kmsg.ACLPermissionType) kmsg.CreateACLsRequestCreation {
	c := kmsg.NewCreateACLsRequestCreation()
	c.ResourceType, c.ResourcePatternType, c.ResourceName = typ, pat, name
	c.Principal, c.Host, c.Operation, c.PermissionType = principal, "*", op, perm
	return c
}

// createACLCodes sends CreateAcls and returns each creation's code.
func createACLCodes(t *testing.T, cl *kgo.Client, creations ...kmsg.CreateACLsRequestCreation) []int16 {
	t.Helper()
	req := kmsg.NewPtrCreateACLsRequest()
	req.Creations = creations
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int16
	for _, r := range resp.Results {
		codes = append(codes, r.ErrorCode)
	}
	return codes
}

// describeACLs sends DescribeAcls with the filter filter sets up (from
// match-everything) and returns its code and the ACLs as strings.
func describeACLs(t *testing.T, cl *kgo.Client, filter func(*kmsg.DescribeACLsRequest)) (int16, []string) {
	t.Helper()
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType, req.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
	req.Operation, req.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
	if filter != nil {
		filter(req)
	}
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	var acls []string
	for _, r := range resp.Resources {
		for _, a := range r.ACLs {
			acls = append(acls, r.ResourceType.String()+":"+r.ResourcePatternType.String()+":"+r.ResourceName+" "+a.Principal+" "+a.Operation.String()+" "+a.PermissionType.String())
		}
	}
	return resp.ErrorCode, acls
}

// TestACLAPIs: CreateAcls, DescribeAcls and DeleteAcls as Kafka's: the
// super user creates, lists by filter (literal, prefixed, match, by
// principal) and deletes ACLs; a creation that is not an ACL fails alone
// with INVALID_REQUEST and one already there is not added twice; a user
// without ALTER (DESCRIBE) on the cluster gets CLUSTER_AUTHORIZATION_FAILED
// until granted it; a broker that enforces no ACLs answers
// SECURITY_DISABLED.
func TestACLAPIs(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	admin := b.Client()
	addUser(t, b.Admin(), "alice", "alice-pw")
	alice := userClient(t, b, "alice", "alice-pw")
	const (
		topic   = kmsg.ACLResourceTypeTopic
		group   = kmsg.ACLResourceTypeGroup
		cluster = kmsg.ACLResourceTypeCluster
		literal = kmsg.ACLResourcePatternTypeLiteral
		prefix  = kmsg.ACLResourcePatternTypePrefixed
		allow   = kmsg.ACLPermissionTypeAllow
		deny    = kmsg.ACLPermissionTypeDeny
	)
	none, invalid := int16(0), kerr.InvalidRequest.Code
	codes := createACLCodes(t, admin,
		aclCreation(topic, literal, "orders", "User:alice", kmsg.ACLOperationRead, allow),
		aclCreation(topic, prefix, "p-", "User:bob", kmsg.ACLOperationWrite, allow),
		aclCreation(group, literal, "g", "User:alice", kmsg.ACLOperationAll, deny),
		aclCreation(cluster, literal, "prod", "User:alice", kmsg.ACLOperationAlter, allow), // the cluster is kafka-cluster
		aclCreation(topic, literal, "orders", "alice", kmsg.ACLOperationRead, allow),       // no principal type
		aclCreation(topic, kmsg.ACLResourcePatternTypeMatch, "orders", "User:alice", kmsg.ACLOperationRead, allow),
		aclCreation(topic, literal, "orders", "User:alice", kmsg.ACLOperationAny, allow),
		aclCreation(topic, literal, "orders", "User:alice", kmsg.ACLOperationRead, allow), // there already
	)
	if want := []int16{none, none, none, invalid, invalid, invalid, invalid, none}; !slices.Equal(codes, want) {
		t.Fatalf("CreateAcls codes %v, want %v", codes, want)
	}

	all := []string{
		"TOPIC:LITERAL:orders User:alice READ ALLOW",
		"TOPIC:PREFIXED:p- User:bob WRITE ALLOW",
		"GROUP:LITERAL:g User:alice ALL DENY",
	}
	str := func(s string) *string { return &s }
	for _, c := range []struct {
		name   string
		filter func(*kmsg.DescribeACLsRequest)
		want   []string
	}{
		{"all", nil, all},
		{"topics", func(r *kmsg.DescribeACLsRequest) { r.ResourceType = topic }, all[:2]},
		{"literal", func(r *kmsg.DescribeACLsRequest) { r.ResourcePatternType = literal }, []string{all[0], all[2]}},
		{"match", func(r *kmsg.DescribeACLsRequest) {
			r.ResourceType, r.ResourcePatternType, r.ResourceName = topic, kmsg.ACLResourcePatternTypeMatch, str("p-orders")
		}, all[1:2]},
		{"principal", func(r *kmsg.DescribeACLsRequest) { r.Principal = str("User:alice") }, []string{all[0], all[2]}},
		{"deny", func(r *kmsg.DescribeACLsRequest) { r.PermissionType = deny }, all[2:]},
	} {
		code, got := describeACLs(t, admin, c.filter)
		if code != 0 || !slices.Equal(got, c.want) {
			t.Errorf("%s: DescribeAcls %d %v, want %v", c.name, code, got, c.want)
		}
	}
	if code, _ := describeACLs(t, admin, func(r *kmsg.DescribeACLsRequest) { r.ResourcePatternType = 0 }); code != invalid {
		t.Errorf("DescribeAcls of pattern type UNKNOWN: %d, want INVALID_REQUEST", code)
	}

	// alice may not see or change ACLs until granted DESCRIBE and ALTER
	// on the cluster.
	if code, _ := describeACLs(t, alice, nil); code != kerr.ClusterAuthorizationFailed.Code {
		t.Errorf("alice's DescribeAcls: %d, want CLUSTER_AUTHORIZATION_FAILED", code)
	}
	if codes := createACLCodes(t, alice, aclCreation(topic, literal, "x", "User:alice", kmsg.ACLOperationAll, allow)); codes[0] != kerr.ClusterAuthorizationFailed.Code {
		t.Errorf("alice's CreateAcls: %v, want CLUSTER_AUTHORIZATION_FAILED", codes)
	}
	if codes := createACLCodes(t, admin, aclCreation(cluster, literal, "kafka-cluster", "User:alice", kmsg.ACLOperationAlter, allow)); codes[0] != 0 {
		t.Fatalf("granting alice ALTER on the cluster: %v", codes)
	}
	if code, got := describeACLs(t, alice, func(r *kmsg.DescribeACLsRequest) { r.ResourceType = cluster }); code != 0 || len(got) != 1 {
		t.Errorf("alice's DescribeAcls with ALTER (which allows DESCRIBE): %d %v", code, got)
	}

	// Delete: alice's ACLs, reported as deleted, and nothing else.
	del := kmsg.NewPtrDeleteACLsRequest()
	f := kmsg.NewDeleteACLsRequestFilter()
	f.ResourceType, f.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
	f.Operation, f.PermissionType, f.Principal = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny, str("User:alice")
	bad := f
	bad.Operation = 0
	del.Filters = []kmsg.DeleteACLsRequestFilter{f, bad}
	dresp, err := del.RequestWith(testCtx(t), admin)
	if err != nil {
		t.Fatal(err)
	}
	if r := dresp.Results[0]; r.ErrorCode != 0 || len(r.MatchingACLs) != 3 {
		t.Errorf("deleting alice's ACLs: %d, %d deleted, want 3", r.ErrorCode, len(r.MatchingACLs))
	}
	if r := dresp.Results[1]; r.ErrorCode != invalid {
		t.Errorf("a filter of operation UNKNOWN: %d, want INVALID_REQUEST", r.ErrorCode)
	}
	if code, got := describeACLs(t, admin, nil); code != 0 || !slices.Equal(got, all[1:2]) {
		t.Errorf("after the delete: %d %v, want %v", code, got, all[1:2])
	}

	// Without ACLs enforced, the ACL APIs are disabled.
	plain := brokertest.Start(t, saslOpts)
	pcl := plain.Client()
	if code, _ := describeACLs(t, pcl, nil); code != kerr.SecurityDisabled.Code {
		t.Errorf("DescribeAcls without ACLs: %d, want SECURITY_DISABLED", code)
	}
	if codes := createACLCodes(t, pcl, aclCreation(topic, literal, "x", "User:alice", kmsg.ACLOperationAll, allow)); codes[0] != kerr.SecurityDisabled.Code {
		t.Errorf("CreateAcls without ACLs: %v, want SECURITY_DISABLED", codes)
	}
}

// TestACLClusterReplicatesForAUser: in a cluster that enforces ACLs, ACLs
// granted through one broker reach the others, the brokers replicate to
// each other whatever the ACLs say (their connections are not bound by
// them), and a user allowed to write and read a topic of 3 replicas
// produces with acks=all and reads the records back after the leader
// stopped, while refused another topic.
func TestACLClusterReplicatesForAUser(t *testing.T) {
	c := brokertest.StartCluster(t, 3, aclOpts)
	ctx := testCtx(t)
	adm := c.Admin()
	const topic, other = "granted", "other"
	for _, name := range []string{topic, other} {
		if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, name); err != nil {
			t.Fatal(err)
		}
	}
	addUser(t, adm, "alice", "alice-pw")
	grant(t, adm, kadm.NewACLs().Allow("User:alice").AllowHosts().Topics(topic).
		Operations(kadm.OpWrite, kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral))
	alice := clientAs(t, scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism(), c.Addrs(),
		kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))

	// The grant was applied by the broker that took it before it
	// answered; the leader applies it soon after.
	brokertest.WaitFor(t, 15*time.Second, "the grant to reach the leader", func() (bool, string) {
		err := alice.ProduceSync(ctx, &kgo.Record{Value: []byte{0}}).FirstErr()
		return err == nil, fmt.Sprint(err)
	})
	for i := 1; i < 50; i++ {
		produceSync(t, alice, &kgo.Record{Value: []byte{byte(i)}})
	}
	if err := alice.ProduceSync(ctx, &kgo.Record{Topic: other, Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("alice producing to %s: %v, want TOPIC_AUTHORIZATION_FAILED", other, err)
	}
	var leader int32
	brokertest.WaitFor(t, 15*time.Second, "every replica in sync", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, topic)
		leader = l
		return len(isr) == 3, fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	c.Stop(leader)
	cons := clientAs(t, scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism(), c.Addrs(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	n := 0
	for n < 50 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("alice read %d of 50 records after the leader stopped", n)
		}
		n += len(fs.Records())
	}
}
