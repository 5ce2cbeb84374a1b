package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shale-log/shale/broker/brokertest"
)

// dataAPI sends one request of a data-path API about partition 0 of a
// topic (by name, and by id where the version carries one) and returns
// that partition's error code.
type dataAPI struct {
	name string
	// byID: the API names topics by id from a version the latest client
	// sends (Produce v13, Fetch v13): a topic that does not exist is
	// then UNKNOWN_TOPIC_ID.
	byID bool
	call func(t *testing.T, cl *kgo.Client, topic string, id [16]byte) int16
}

var dataAPIs = []dataAPI{
	{"Produce", true, func(t *testing.T, cl *kgo.Client, topic string, id [16]byte) int16 {
		resp := ask(t, cl, produceRequest(topic, id, 1, 5*time.Second, "v")).(*kmsg.ProduceResponse)
		return resp.Topics[0].Partitions[0].ErrorCode
	}},
	{"Fetch", true, func(t *testing.T, cl *kgo.Client, topic string, id [16]byte) int16 {
		return fetchCodes(t, cl, 0, fetchFrom{topic, id, 0})[topic]
	}},
	{"ListOffsets", false, func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) int16 {
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Timestamp = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := ask(t, cl, req).(*kmsg.ListOffsetsResponse)
		return resp.Topics[0].Partitions[0].ErrorCode
	}},
	{"DeleteRecords", false, func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) int16 {
		// Up to offset 0: deletes nothing, so later fetches from 0 work.
		req := kmsg.NewPtrDeleteRecordsRequest()
		req.TimeoutMillis = 5000
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Offset = 0
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := ask(t, cl, req).(*kmsg.DeleteRecordsResponse)
		return resp.Topics[0].Partitions[0].ErrorCode
	}},
	{"OffsetForLeaderEpoch", false, func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) int16 {
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = -1
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.LeaderEpoch = 0
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := ask(t, cl, req).(*kmsg.OffsetForLeaderEpochResponse)
		return resp.Topics[0].Partitions[0].ErrorCode
	}},
	{"DescribeProducers", false, func(t *testing.T, cl *kgo.Client, topic string, _ [16]byte) int16 {
		req := kmsg.NewPtrDescribeProducersRequest()
		rt := kmsg.NewDescribeProducersRequestTopic()
		rt.Topic, rt.Partitions = topic, []int32{0}
		req.Topics = append(req.Topics, rt)
		resp := ask(t, cl, req).(*kmsg.DescribeProducersResponse)
		return resp.Topics[0].Partitions[0].ErrorCode
	}},
}

type fetchFrom struct {
	topic  string
	id     [16]byte
	offset int64
}

// fetchCodes sends a sessionless consumer fetch of partition 0 of each
// topic from its offset, waiting up to maxWait, and returns each topic's
// error code.
func fetchCodes(t *testing.T, cl *kgo.Client, maxWait time.Duration, from ...fetchFrom) map[string]int16 {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = int32(maxWait / time.Millisecond)
	req.MinBytes = 1
	for _, f := range from {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = f.topic, f.id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = f.offset, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	resp := ask(t, cl, req).(*kmsg.FetchResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("fetch: error %d", resp.ErrorCode)
	}
	return fetchResponseCodes(resp, from...)
}

// ask sends req to the broker (the test's only one) as it is: franz-go
// would otherwise shard some requests by partition leader, and answer
// itself, from its metadata, for a topic the client may not describe.
func ask(t *testing.T, cl *kgo.Client, req kmsg.Request) kmsg.Response {
	t.Helper()
	resp, err := cl.SeedBrokers()[0].Request(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// fetchResponseCodes are the error codes of the topics a fetch response
// carries, named by name or by id.
func fetchResponseCodes(resp *kmsg.FetchResponse, from ...fetchFrom) map[string]int16 {
	codes := map[string]int16{}
	for _, rt := range resp.Topics {
		name := rt.Topic
		for _, f := range from {
			if rt.Topic == "" && rt.TopicID == f.id {
				name = f.topic
			}
		}
		for _, rp := range rt.Partitions {
			codes[name] = rp.ErrorCode
		}
	}
	return codes
}

// dataVersions sets a client's highest Produce and Fetch versions: up to
// v12 they name topics, from v13 they give their ids.
func dataVersions(produce, fetch int16) kgo.Opt {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(kmsg.Produce.Int16(), produce)
	vs.SetMaxKeyVersion(kmsg.Fetch.Int16(), fetch)
	return kgo.MaxVersions(vs)
}

// dataTopics are the topics of the data-path tests, made by the super
// user, with their ids; "missing" is not made.
func dataTopics(t *testing.T, adm *kadm.Client, names ...string) map[string][16]byte {
	t.Helper()
	ids := map[string][16]byte{}
	for _, n := range names {
		ids[n] = createTopic(t, adm, n, 1, nil).ID
	}
	return ids
}

// checkDataAPIs sends every data-path request about each topic, by name
// and (latest versions) by id, and compares the codes with want's, where
// allowed says what the client may do: refused, a request is
// TOPIC_AUTHORIZATION_FAILED, whether the topic exists or not (but an id
// that names no topic is UNKNOWN_TOPIC_ID); allowed, it succeeds, or
// answers that the topic does not exist.
func checkDataAPIs(t *testing.T, b *brokertest.Broker, user, pw string, ids map[string][16]byte, topics []string, allowed func(api, topic string) bool) {
	t.Helper()
	clients := map[string]*kgo.Client{
		"latest":     userClient(t, b, user, pw, dataVersions(13, 18)),
		"names only": userClient(t, b, user, pw, dataVersions(12, 12)),
	}
	for cname, cl := range clients {
		for _, api := range dataAPIs {
			for _, topic := range topics {
				id, exists := ids[topic]
				byID := api.byID && cname == "latest"
				var want int16
				switch {
				case byID && !exists:
					want = kerr.UnknownTopicID.Code
				case !allowed(api.name, topic):
					want = kerr.TopicAuthorizationFailed.Code
				case !exists:
					want = kerr.UnknownTopicOrPartition.Code
				}
				if got := api.call(t, cl, topic, id); got != want {
					t.Errorf("%s, %s client: %s of %s: %v, want %v", user, cname, api.name, topic, kerr.ErrorForCode(got), kerr.ErrorForCode(want))
				}
			}
		}
	}
}

// TestACLDataPathChecksEachTopic: Produce needs WRITE on the topic, Fetch
// and DescribeProducers READ, ListOffsets and OffsetForLeaderEpoch
// DESCRIBE (which READ, WRITE and DELETE imply), DeleteRecords DELETE;
// a literal or prefixed ALLOW grants it, a DENY wins over an ALLOW, and a
// refusal is TOPIC_AUTHORIZATION_FAILED for topics that exist or not.
// The super user may do everything.
func TestACLDataPathChecksEachTopic(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	adm := b.Admin()
	addUser(t, adm, "alice", "alice-pw")
	ids := dataTopics(t, adm, "all", "describe", "pre-read", "pre-denied", "none")
	topics := []string{"all", "describe", "pre-read", "pre-denied", "none", "missing"}
	lit := func(topic string) *kadm.ACLBuilder {
		return kadm.NewACLs().Topics(topic).ResourcePatternType(kadm.ACLPatternLiteral)
	}
	grant(t, adm, lit("all").Allow("User:alice").AllowHosts().Operations(kadm.OpRead, kadm.OpWrite, kadm.OpDelete))
	grant(t, adm, lit("describe").Allow("User:alice").AllowHosts().Operations(kadm.OpDescribe))
	grant(t, adm, kadm.NewACLs().Topics("pre-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Allow("User:alice").AllowHosts().Operations(kadm.OpRead))
	grant(t, adm, lit("pre-denied").Deny("User:alice").DenyHosts().Operations(kadm.OpRead))

	// What alice may do: the operation each API needs, on each topic.
	needs := map[string]string{
		"Produce": "write", "Fetch": "read", "DescribeProducers": "read", "DeleteRecords": "delete",
		"ListOffsets": "describe", "OffsetForLeaderEpoch": "describe",
	}
	may := map[string]map[string]bool{
		"all":        {"read": true, "write": true, "delete": true, "describe": true},
		"describe":   {"describe": true},
		"pre-read":   {"read": true, "describe": true},
		"pre-denied": {"describe": true}, // READ denied; the ALLOW's DESCRIBE is not
	}
	checkDataAPIs(t, b, "alice", "alice-pw", ids, topics, func(api, topic string) bool { return may[topic][needs[api]] })
	checkDataAPIs(t, b, "admin", "admin-secret", ids, topics, func(string, string) bool { return true })

	// A consumer fetch's long poll is not ended by a partition it may
	// not read, which is answered with the others; a fetch of nothing
	// it may read is answered at once.
	alice := userClient(t, b, "alice", "alice-pw")
	ends, err := adm.ListEndOffsets(testCtx(t), "all")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("all", 0)
	start := time.Now()
	codes := fetchCodes(t, alice, 500*time.Millisecond, fetchFrom{"all", ids["all"], end.Offset}, fetchFrom{"none", ids["none"], 0})
	if waited := time.Since(start); waited < 400*time.Millisecond || codes["none"] != kerr.TopicAuthorizationFailed.Code || codes["all"] != 0 {
		t.Errorf("fetch at the end of all, and of none: %v after %v, want none refused after the 500ms poll", codes, waited)
	}
	start = time.Now()
	codes = fetchCodes(t, alice, 20*time.Second, fetchFrom{"none", ids["none"], 0})
	if waited := time.Since(start); waited > 10*time.Second || codes["none"] != kerr.TopicAuthorizationFailed.Code {
		t.Errorf("fetch of none alone: %v after %v, want refused at once", codes, waited)
	}
}

// TestACLFetchSessionRechecksItsPartitions: a partition an incremental
// fetch session carries is checked on every fetch: once the client may no
// longer read it, the session's next fetch, which does not name it,
// answers it TOPIC_AUTHORIZATION_FAILED.
func TestACLFetchSessionRechecksItsPartitions(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	adm := b.Admin()
	addUser(t, adm, "alice", "alice-pw")
	ids := dataTopics(t, adm, "kept", "revoked")
	readOn := func(topic string) *kadm.ACLBuilder {
		return kadm.NewACLs().Topics(topic).ResourcePatternType(kadm.ACLPatternLiteral).
			Allow("User:alice").AllowHosts().Operations(kadm.OpRead)
	}
	grant(t, adm, readOn("kept"))
	grant(t, adm, readOn("revoked"))
	from := []fetchFrom{{"kept", ids["kept"], 0}, {"revoked", ids["revoked"], 0}}
	for _, version := range []int16{12, 16} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			alice := userClient(t, b, "alice", "alice-pw", dataVersions(13, version))
			if version == 16 {
				// This version's turn: granted again.
				grant(t, adm, readOn("revoked"))
			}
			fetch := func(sessionID, epoch int32, from ...fetchFrom) *kmsg.FetchResponse {
				t.Helper()
				req := kmsg.NewPtrFetchRequest()
				req.SessionID, req.SessionEpoch = sessionID, epoch
				for _, f := range from {
					rt := kmsg.NewFetchRequestTopic()
					rt.Topic, rt.TopicID = f.topic, f.id
					rp := kmsg.NewFetchRequestTopicPartition()
					rp.FetchOffset, rp.PartitionMaxBytes = f.offset, 1<<20
					rt.Partitions = append(rt.Partitions, rp)
					req.Topics = append(req.Topics, rt)
				}
				resp := ask(t, alice, req).(*kmsg.FetchResponse)
				if resp.ErrorCode != 0 {
					t.Fatalf("fetch: error %d", resp.ErrorCode)
				}
				return resp
			}
			first := fetch(0, 0, from...)
			if codes := fetchResponseCodes(first, from...); codes["kept"] != 0 || codes["revoked"] != 0 || first.SessionID == 0 {
				t.Fatalf("session's first fetch: %v, session %d", codes, first.SessionID)
			}
			res, err := adm.DeleteACLs(testCtx(t), readOn("revoked"))
			if err == nil {
				for _, r := range res {
					err = errors.Join(err, r.Err)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			next := fetch(first.SessionID, 1)
			codes := fetchResponseCodes(next, from...)
			if code, ok := codes["revoked"]; !ok || code != kerr.TopicAuthorizationFailed.Code {
				t.Errorf("incremental fetch after the ACL's removal: %v, want revoked refused", codes)
			}
			if code, ok := codes["kept"]; ok && code != 0 {
				t.Errorf("incremental fetch: kept answered %v", kerr.ErrorForCode(code))
			}
		})
	}
}

// TestACLProducersAndConsumers: franz-go's producer and consumer, as a
// user who may describe two topics but write and read only one: records
// go to and come from that one, and the other's produce and fetch are
// refused with TOPIC_AUTHORIZATION_FAILED. The idempotent producer's
// InitProducerId needs WRITE on some topic (KIP-679) or IDEMPOTENT_WRITE
// on the cluster: without either it is CLUSTER_AUTHORIZATION_FAILED.
func TestACLProducersAndConsumers(t *testing.T) {
	b := brokertest.Start(t, aclOpts)
	adm := b.Admin()
	ctx := testCtx(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		addUser(t, adm, u, u+"-pw")
	}
	dataTopics(t, adm, "mine", "theirs")
	lit := func(topics ...string) *kadm.ACLBuilder {
		return kadm.NewACLs().Topics(topics...).ResourcePatternType(kadm.ACLPatternLiteral)
	}
	grant(t, adm, lit("mine").Allow("User:alice").AllowHosts().Operations(kadm.OpWrite, kadm.OpRead))
	grant(t, adm, lit("theirs").Allow("User:alice", "User:bob").AllowHosts().Operations(kadm.OpDescribe))
	grant(t, adm, kadm.NewACLs().Clusters().Allow("User:carol").AllowHosts().Operations(kadm.OpIdempotentWrite))

	// Produce: to mine, and refused on theirs.
	prod := userClient(t, b, "alice", "alice-pw")
	produceSync(t, prod, &kgo.Record{Topic: "mine", Value: []byte("ok")})
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "theirs", Value: []byte("no")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("producing to theirs: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	produceSync(t, b.Client(), &kgo.Record{Topic: "theirs", Value: []byte("admin's")})

	// Consume: from mine, and the fetch of theirs is refused.
	cons := userClient(t, b, "alice", "alice-pw", kgo.ConsumeTopics("mine", "theirs"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	var theirs error
	pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(got) == 0 || theirs == nil {
		fs := cons.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			t.Fatalf("consumed %v, theirs' error %v", got, theirs)
		}
		fs.EachError(func(topic string, _ int32, err error) {
			if topic != "theirs" {
				t.Fatalf("fetching %s: %v", topic, err)
			}
			theirs = err
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r.Topic+"/"+string(r.Value)) })
	}
	if len(got) != 1 || got[0] != "mine/ok" || !errors.Is(theirs, kerr.TopicAuthorizationFailed) {
		t.Errorf("consumed %v, theirs' error %v; want mine/ok and TOPIC_AUTHORIZATION_FAILED", got, theirs)
	}

	// InitProducerId: bob may write nothing; carol may write idempotently.
	initCode := func(user string) int16 {
		t.Helper()
		resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, userClient(t, b, user, user+"-pw"))
		if err != nil {
			t.Fatal(err)
		}
		return resp.ErrorCode
	}
	for user, want := range map[string]int16{"alice": 0, "bob": kerr.ClusterAuthorizationFailed.Code, "carol": 0} {
		if got := initCode(user); got != want {
			t.Errorf("%s's InitProducerId: %v, want %v", user, kerr.ErrorForCode(got), kerr.ErrorForCode(want))
		}
	}
	bob := userClient(t, b, "bob", "bob-pw")
	if err := bob.ProduceSync(ctx, &kgo.Record{Topic: "theirs", Value: []byte("no")}).FirstErr(); !errors.Is(err, kerr.ClusterAuthorizationFailed) {
		t.Errorf("bob's idempotent producer without WRITE: %v, want CLUSTER_AUTHORIZATION_FAILED", err)
	}
	grant(t, adm, lit("theirs").Allow("User:bob").AllowHosts().Operations(kadm.OpWrite))
	produceSync(t, userClient(t, b, "bob", "bob-pw"), &kgo.Record{Topic: "theirs", Value: []byte("bob's")})
}

// TestACLDataPathOpenWithoutACLs: a broker that enforces no ACLs lets any
// authenticated user do everything on the data path.
func TestACLDataPathOpenWithoutACLs(t *testing.T) {
	b := brokertest.Start(t, saslOpts)
	adm := b.Admin()
	addUser(t, adm, "alice", "alice-pw")
	ids := dataTopics(t, adm, "open")
	checkDataAPIs(t, b, "alice", "alice-pw", ids, []string{"open", "missing"}, func(string, string) bool { return true })
	if resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(testCtx(t), userClient(t, b, "alice", "alice-pw")); err != nil || resp.ErrorCode != 0 {
		t.Errorf("InitProducerId: %v %v", err, resp)
	}
}
