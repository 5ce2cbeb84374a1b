package broker_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// saslOpts is a broker requiring SASL by every mechanism, its bootstrap
// user admin.
func saslOpts(c *broker.Config) {
	c.SASLMechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"}
	c.SASLBootstrapUser, c.SASLBootstrapPassword = "admin", "admin-secret"
}

// clientAs is a client of addrs authenticating by mech alone.
func clientAs(t *testing.T, mech sasl.Mechanism, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.SASL(mech), kgo.RetryTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestSASLUsersAuthenticate: users created with AlterUserScramCredentials
// authenticate by the SCRAM mechanism they have a credential for and by
// PLAIN with the same password, and produce and consume; a wrong password,
// a mechanism without a credential and a deleted user fail with
// SASL_AUTHENTICATION_FAILED, and a client that does not authenticate is
// disconnected.
func TestSASLUsersAuthenticate(t *testing.T) {
	b := brokertest.Start(t, saslOpts)
	ctx := testCtx(t)
	adm := b.Admin() // the bootstrap user, by SCRAM-SHA-256
	createTopic(t, adm, "auth", 1, nil)
	altered, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: "alice", Mechanism: kadm.ScramSha512, Iterations: 8192, Password: "alice-pw"},
		{User: "bob,=x", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "bob-pw"},
	})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	described, err := adm.DescribeUserSCRAMs(ctx)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]kadm.CredInfo{}
	for u, d := range described {
		got[u] = d.CredInfos
	}
	want := map[string][]kadm.CredInfo{
		"admin":  {{Mechanism: kadm.ScramSha256, Iterations: 4096}, {Mechanism: kadm.ScramSha512, Iterations: 4096}},
		"alice":  {{Mechanism: kadm.ScramSha512, Iterations: 8192}},
		"bob,=x": {{Mechanism: kadm.ScramSha256, Iterations: 4096}},
	}
	for u, w := range want {
		slices.SortFunc(got[u], func(a, b kadm.CredInfo) int { return int(a.Mechanism) - int(b.Mechanism) })
		if !slices.Equal(got[u], w) {
			t.Fatalf("user %q: credentials %v, want %v", u, got[u], w)
		}
	}
	addrs := []string{b.Addr}
	good := map[string]sasl.Mechanism{
		"alice SCRAM-SHA-512": scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha512Mechanism(),
		"alice PLAIN":         plain.Auth{User: "alice", Pass: "alice-pw"}.AsMechanism(),
		"bob SCRAM-SHA-256":   scram.Auth{User: "bob,=x", Pass: "bob-pw"}.AsSha256Mechanism(),
		"bob PLAIN":           plain.Auth{User: "bob,=x", Pass: "bob-pw"}.AsMechanism(),
	}
	for name, mech := range good {
		produceSync(t, clientAs(t, mech, addrs, kgo.DefaultProduceTopic("auth")), &kgo.Record{Value: []byte(name)})
	}
	cons := clientAs(t, good["alice SCRAM-SHA-512"], addrs, kgo.ConsumeTopics("auth"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var read []string
	for len(read) < len(good) {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v", read)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { read = append(read, string(r.Value)) })
	}
	refused := func(what string, mech sasl.Mechanism) {
		t.Helper()
		cl := clientAs(t, mech, addrs)
		if _, err := kadm.NewClient(cl).ListTopics(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Fatalf("%s: %v, want SASL_AUTHENTICATION_FAILED", what, err)
		}
	}
	refused("a wrong SCRAM password", scram.Auth{User: "alice", Pass: "nope"}.AsSha512Mechanism())
	refused("a wrong PLAIN password", plain.Auth{User: "alice", Pass: "nope"}.AsMechanism())
	refused("a mechanism without a credential", scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism())
	refused("an unknown user", scram.Auth{User: "carol", Pass: "x"}.AsSha256Mechanism())
	refused("an unknown PLAIN user", plain.Auth{User: "carol", Pass: "x"}.AsMechanism())
	if altered, err := adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: "alice", Mechanism: kadm.ScramSha512}}, nil); err != nil || altered.Error() != nil {
		t.Fatalf("deleting alice: %v %v", err, altered.Error())
	}
	refused("a deleted user", good["alice SCRAM-SHA-512"])
	refused("a deleted user by PLAIN", good["alice PLAIN"])

	// Without authenticating, ApiVersions is answered and anything else
	// closes the connection.
	f := kmsg.NewRequestFormatter()
	c := dial(t, b.Addr)
	c.Write(f.AppendRequest(nil, kmsg.NewPtrApiVersionsRequest(), 1))
	readFrame(t, c)
	c.Write(f.AppendRequest(nil, kmsg.NewPtrMetadataRequest(), 2))
	expectClosed(t, c)
}

// TestSASLExchangeOutOfOrder: the SASL exchange goes handshake, then
// authenticate, once; a mechanism not offered is refused with the list
// of those that are, and anything out of order ends the connection.
func TestSASLExchangeOutOfOrder(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.SASLMechanisms = []string{"SCRAM-SHA-512"}
		c.SASLBootstrapUser, c.SASLBootstrapPassword = "admin", "admin-secret"
	})
	f := kmsg.NewRequestFormatter()
	ask := func(c interface{ Write([]byte) (int, error) }, req kmsg.Request, corr int32) {
		t.Helper()
		if _, err := c.Write(f.AppendRequest(nil, req, corr)); err != nil {
			t.Fatal(err)
		}
	}
	handshake := func(mech string) *kmsg.SASLHandshakeRequest {
		req := kmsg.NewPtrSASLHandshakeRequest()
		req.Version, req.Mechanism = 1, mech
		return req
	}
	authenticate := func(token string) *kmsg.SASLAuthenticateRequest {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version, req.SASLAuthBytes = 2, []byte(token)
		return req
	}
	answer := func(c net.Conn, resp kmsg.Response) {
		t.Helper()
		body := readFrame(t, c)
		header := 4 // the correlation id
		if resp.IsFlexible() {
			header++ // and an empty tag section
		}
		if err := resp.ReadFrom(body[header:]); err != nil {
			t.Fatal(err)
		}
	}

	// A mechanism not offered: refused, with those that are (PLAIN for
	// the brokers).
	c := dial(t, b.Addr)
	ask(c, handshake("SCRAM-SHA-256"), 1)
	hs := kmsg.NewPtrSASLHandshakeResponse()
	hs.Version = 1
	answer(c, hs)
	if hs.ErrorCode != kerr.UnsupportedSaslMechanism.Code || !slices.Equal(hs.SupportedMechanisms, []string{"SCRAM-SHA-512", "PLAIN"}) {
		t.Fatalf("handshake: error %d, mechanisms %v", hs.ErrorCode, hs.SupportedMechanisms)
	}
	// PLAIN is the brokers' here: a client's PLAIN token fails, and the
	// connection ends.
	ask(c, handshake("PLAIN"), 2)
	answer(c, hs)
	ask(c, authenticate("\x00admin\x00admin-secret"), 3)
	au := kmsg.NewPtrSASLAuthenticateResponse()
	au.Version = 2
	answer(c, au)
	if au.ErrorCode != kerr.SaslAuthenticationFailed.Code {
		t.Fatalf("PLAIN for a client where it is not enabled: error %d", au.ErrorCode)
	}
	ask(c, kmsg.NewPtrApiVersionsRequest(), 4)
	expectClosed(t, c)

	// Authenticate before the handshake.
	c = dial(t, b.Addr)
	ask(c, authenticate("n,,n=admin,r=abc"), 1)
	answer(c, au)
	if au.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("authenticate before the handshake: error %d", au.ErrorCode)
	}
	ask(c, kmsg.NewPtrApiVersionsRequest(), 2)
	expectClosed(t, c)

	// A second handshake.
	c = dial(t, b.Addr)
	ask(c, handshake("SCRAM-SHA-512"), 1)
	answer(c, hs)
	ask(c, handshake("SCRAM-SHA-512"), 2)
	answer(c, hs)
	if hs.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("second handshake: error %d", hs.ErrorCode)
	}
	ask(c, kmsg.NewPtrApiVersionsRequest(), 3)
	expectClosed(t, c)
}

// TestAlterUserSCRAMCredentialsChecks: each user's alterations are
// checked as Kafka checks them, one result per user, and a user with a
// bad alteration keeps the credentials it had.
func TestAlterUserSCRAMCredentialsChecks(t *testing.T) {
	b := brokertest.Start(t)
	ctx := testCtx(t)
	cl := b.Client()
	upsert := func(user string, mech int8, iterations int32) kmsg.AlterUserSCRAMCredentialsRequestUpsertion {
		u := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
		u.Name, u.Mechanism, u.Iterations = user, mech, iterations
		u.Salt = []byte("0123456789abcdef")
		u.SaltedPassword = make([]byte, 32*int(mech)) // SHA-256: 32 bytes, SHA-512: 64
		return u
	}
	del := func(user string, mech int8) kmsg.AlterUserSCRAMCredentialsRequestDeletion {
		d := kmsg.NewAlterUserSCRAMCredentialsRequestDeletion()
		d.Name, d.Mechanism = user, mech
		return d
	}
	req := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	req.Upsertions = []kmsg.AlterUserSCRAMCredentialsRequestUpsertion{
		upsert("ok", 1, 4096), upsert("ok", 2, 16384),
		upsert("few", 1, 4095), upsert("many", 2, 16385), upsert("", 1, 4096),
		upsert("mech", 3, 4096), upsert("twice", 1, 4096), upsert("twice", 1, 8192),
		upsert("short", 2, 4096),
	}
	req.Upsertions[len(req.Upsertions)-1].SaltedPassword = []byte("short")
	req.Deletions = []kmsg.AlterUserSCRAMCredentialsRequestDeletion{del("nobody", 1)}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int16{
		"ok": 0, "few": kerr.UnacceptableCredential.Code, "many": kerr.UnacceptableCredential.Code,
		"": kerr.UnacceptableCredential.Code, "mech": kerr.UnsupportedSaslMechanism.Code,
		"twice": kerr.DuplicateResource.Code, "short": kerr.UnacceptableCredential.Code,
		"nobody": kerr.ResourceNotFound.Code,
	}
	got := map[string]int16{}
	for _, r := range resp.Results {
		got[r.User] = r.ErrorCode
	}
	if !maps.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	// A user's alterations are all applied or none: deleting one it has
	// and one it lacks leaves both.
	req = kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	req.Deletions = []kmsg.AlterUserSCRAMCredentialsRequestDeletion{del("ok", 1)}
	req.Upsertions = nil
	resp, err = req.RequestWith(ctx, cl)
	if err != nil || resp.Results[0].ErrorCode != 0 {
		t.Fatalf("deleting ok's SCRAM-SHA-256: %v %+v", err, resp)
	}
	req.Deletions = []kmsg.AlterUserSCRAMCredentialsRequestDeletion{del("ok", 2), del("ok", 1)}
	resp, err = req.RequestWith(ctx, cl)
	if err != nil || resp.Results[0].ErrorCode != kerr.ResourceNotFound.Code {
		t.Fatalf("deleting one ok has and one it lacks: %v %+v", err, resp)
	}
	dreq := kmsg.NewPtrDescribeUserSCRAMCredentialsRequest()
	for _, u := range []string{"ok", "nobody", "ok2", "ok2"} {
		du := kmsg.NewDescribeUserSCRAMCredentialsRequestUser()
		du.Name = u
		dreq.Users = append(dreq.Users, du)
	}
	dresp, err := dreq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(dresp.Results) != 3 {
		t.Fatalf("describe: %+v", dresp.Results)
	}
	ok, nobody, twice := dresp.Results[0], dresp.Results[1], dresp.Results[2]
	if ok.ErrorCode != 0 || len(ok.CredentialInfos) != 1 || ok.CredentialInfos[0].Mechanism != 2 || ok.CredentialInfos[0].Iterations != 16384 {
		t.Fatalf("describe ok: %+v", ok)
	}
	if nobody.ErrorCode != kerr.ResourceNotFound.Code || twice.ErrorCode != kerr.DuplicateResource.Code {
		t.Fatalf("describe nobody %d, a user twice %d", nobody.ErrorCode, twice.ErrorCode)
	}
}

// TestUserQuotaBindsTheAuthenticatedUser: a producer_byte_rate set for a
// user throttles the clients that authenticated as that user, and not
// another user's.
func TestUserQuotaBindsTheAuthenticatedUser(t *testing.T) {
	b := brokertest.Start(t, saslOpts, func(c *broker.Config) { c.QuotaWindowSize = 100 * time.Millisecond })
	ctx := testCtx(t)
	const topic = "userquota"
	createTopic(t, b.Admin(), topic, 1, nil)
	if altered, err := b.Admin().AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: "alice", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "alice-pw"}}); err != nil || altered.Error() != nil {
		t.Fatalf("creating alice: %v %v", err, altered.Error())
	}
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"user", "alice"}, map[string]float64{"producer_byte_rate": 100_000})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	throttled := func() float64 { return gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=produce") }
	produce := func(mech sasl.Mechanism) {
		cl := clientAs(t, mech, []string{b.Addr}, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
		defer cl.Close()
		value := make([]byte, 10_000)
		for range 20 { // 200 kB, twice what a second of alice's quota allows
			produceSync(t, cl, &kgo.Record{Value: value})
		}
	}
	produce(scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha512Mechanism())
	if n := throttled(); n != 0 {
		t.Fatalf("admin, without a quota, was throttled %v times", n)
	}
	produce(scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism())
	if throttled() == 0 {
		t.Fatal("alice was not throttled")
	}
}

// TestSASLClusterReplicates: brokers requiring SASL replicate to each
// other (their fetchers authenticate with the cluster secret), and a
// topic's records outlive its leader.
func TestSASLClusterReplicates(t *testing.T) {
	checkReplicatesPastLeader(t, brokertest.StartCluster(t, 3, saslOpts))
}

// checkReplicatesPastLeader produces 50 records with acks=all to a topic
// of 3 replicas in c, waits for every replica to be in sync, stops the
// leader and reads the records back.
func checkReplicatesPastLeader(t *testing.T, c *brokertest.Cluster) {
	t.Helper()
	ctx := testCtx(t)
	const topic = "replicated"
	adm := c.Admin()
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, topic); err != nil {
		t.Fatal(err)
	}
	prod := c.Client(kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	for i := range 50 {
		produceSync(t, prod, &kgo.Record{Value: []byte{byte(i)}})
	}
	var leader int32
	brokertest.WaitFor(t, 15*time.Second, "every replica in sync", func() (bool, string) {
		l, reps, isr := partitionReplicas(t, adm, topic)
		leader = l
		return len(isr) == 3, fmt.Sprintf("leader %d replicas %v isr %v", l, reps, isr)
	})
	c.Stop(leader)
	cons := c.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	n := 0
	for n < 50 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of 50 records after the leader stopped", n)
		}
		n += len(fs.Records())
	}
}

// TestSASLSessionsEnd: with connections.max.reauth.ms a client's session
// ends (SaslAuthenticate says when): franz-go authenticates again on its
// connections and goes on producing, a client that does not is closed at
// its next request, a session cannot change users, and a deleted user's
// connections end with their sessions.
func TestSASLSessionsEnd(t *testing.T) {
	const life = time.Second
	b := brokertest.Start(t, saslOpts, func(c *broker.Config) { c.ConnectionsMaxReauth = life })
	ctx := testCtx(t)
	const topic = "sessions"
	createTopic(t, b.Admin(), topic, 1, nil)
	if altered, err := b.Admin().AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: "alice", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "alice-pw"}}); err != nil || altered.Error() != nil {
		t.Fatalf("creating alice: %v %v", err, altered.Error())
	}
	handshakes := func() float64 {
		return gather(t, b.Registry).sum("shale_kafka_requests_total", "api=SASLHandshake")
	}
	alice := clientAs(t, scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism(), []string{b.Addr}, kgo.DefaultProduceTopic(topic))
	produceSync(t, alice, &kgo.Record{Value: []byte("first")})
	before := handshakes()
	for end := time.Now().Add(3 * life); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		produceSync(t, alice, &kgo.Record{Value: []byte("more")})
	}
	if after := handshakes(); after <= before {
		t.Fatalf("no client authenticated again in %v of sessions of %v (handshakes %v, then %v)", 3*life, life, before, after)
	}

	f := kmsg.NewRequestFormatter()
	plainAuth := func(c net.Conn, user, pass string, corr int32) *kmsg.SASLAuthenticateResponse {
		t.Helper()
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Version, hs.Mechanism = 1, "PLAIN"
		c.Write(f.AppendRequest(nil, hs, corr))
		readFrame(t, c)
		au := kmsg.NewPtrSASLAuthenticateRequest()
		au.Version, au.SASLAuthBytes = 2, []byte("\x00"+user+"\x00"+pass)
		c.Write(f.AppendRequest(nil, au, corr+1))
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		resp.Version = 2
		if err := resp.ReadFrom(readFrame(t, c)[5:]); err != nil { // correlation id, tags
			t.Fatal(err)
		}
		return resp
	}
	// A client that does not authenticate again.
	c := dial(t, b.Addr)
	if resp := plainAuth(c, "admin", "admin-secret", 1); resp.ErrorCode != 0 || resp.SessionLifetimeMillis != life.Milliseconds() {
		t.Fatalf("authenticating: error %d, session %d ms", resp.ErrorCode, resp.SessionLifetimeMillis)
	}
	c.Write(f.AppendRequest(nil, kmsg.NewPtrMetadataRequest(), 3))
	readFrame(t, c)
	time.Sleep(life + 100*time.Millisecond)
	c.Write(f.AppendRequest(nil, kmsg.NewPtrMetadataRequest(), 4))
	expectClosed(t, c)
	// A session authenticating again as another user.
	c = dial(t, b.Addr)
	if resp := plainAuth(c, "admin", "admin-secret", 1); resp.ErrorCode != 0 {
		t.Fatalf("authenticating: error %d", resp.ErrorCode)
	}
	if resp := plainAuth(c, "alice", "alice-pw", 3); resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
		t.Fatalf("authenticating again as another user: error %d", resp.ErrorCode)
	}
	// A deleted user: its client's next session is refused.
	if altered, err := b.Admin().AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: "alice", Mechanism: kadm.ScramSha256}}, nil); err != nil || altered.Error() != nil {
		t.Fatalf("deleting alice: %v %v", err, altered.Error())
	}
	time.Sleep(life + 100*time.Millisecond)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := alice.ProduceSync(pctx, &kgo.Record{Value: []byte("after")}).FirstErr(); err == nil {
		t.Fatal("a deleted user produced after its session ended")
	}
}

// TestSASLOptionalOnAPlaintextListener: a broker that requires no SASL
// still lets a client authenticate, by any of its mechanisms (the
// handshake offers them all), as a user ACLs and quotas then name; a
// wrong password fails as where SASL is required.
func TestSASLOptionalOnAPlaintextListener(t *testing.T) {
	b := brokertest.Start(t)
	const topic = "optional"
	createTopic(t, b.Admin(), topic, 1, nil)
	addUser(t, b.Admin(), "alice", "alice-pw")
	for _, mech := range []sasl.Mechanism{
		scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism(),
		plain.Auth{User: "alice", Pass: "alice-pw"}.AsMechanism(),
	} {
		produceSync(t, clientAs(t, mech, []string{b.Addr}, kgo.DefaultProduceTopic(topic)), &kgo.Record{Value: []byte(mech.Name())})
	}
	bad := clientAs(t, scram.Auth{User: "alice", Pass: "wrong"}.AsSha256Mechanism(), []string{b.Addr})
	if _, err := kadm.NewClient(bad).ListTopics(testCtx(t)); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("a wrong password: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
}
