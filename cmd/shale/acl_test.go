package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
)

// aclRow is a line of `shale acl list` (and, with its result, of add and
// remove) for an ACL on a literal topic, allowing, from any host.
func aclRow(topic, principal, op string) string {
	return "TOPIC          " + topic + "  LITERAL  " + principal + "  *     " + op
}

// TestACLCommands: on shale dev enforcing ACLs (--acls, from SHALE_ACLS)
// and requiring SASL, the bootstrap user admin, a super user, grants
// alice READ on a topic with shale acl add, acl list shows it, alice then
// reads the topic but may neither write to it nor manage ACLs, the
// --producer shortcut lets her write until it is removed, and acl remove
// takes READ away again. A principal of --super-users may do anything.
// Errors are one line and a non-zero exit.
func TestACLCommands(t *testing.T) {
	p := startDev(t, "", "SHALE_SASL_MECHANISMS=SCRAM-SHA-256,PLAIN", "SHALE_SASL_BOOTSTRAP_USER=admin", saslBootstrapPasswordEnv+"=admin-secret",
		"SHALE_ACLS=true", "SHALE_SUPER_USERS=User:ops")
	addr := p.kafkaAddr
	admin := saslCLI(t, addr, "SCRAM-SHA-256", "admin", "admin-secret")
	alice := saslCLI(t, addr, "SCRAM-SHA-256", "alice", "alice-pw")
	produceAs := func(user, pass, topic string) error {
		t.Helper()
		t.Setenv(saslPasswordEnv, pass)
		_, _, err := runCLIIO(t, "one\ntwo\n", "produce", topic, "--brokers", addr, "--timeout", "10s", "--sasl-mechanism", "PLAIN", "--sasl-user", user)
		return err
	}
	const topic = "acl-orders"

	mustAdmin(t, admin, "topic", "create", topic, "-p", "1")
	if err := produceAs("admin", "admin-secret", topic); err != nil {
		t.Fatalf("admin produce: %v", err)
	}
	t.Setenv(userPasswordEnv, "alice-pw")
	mustAdmin(t, admin, "user", "set", "alice")
	t.Setenv(userPasswordEnv, "ops-pw")
	mustAdmin(t, admin, "user", "set", "ops")

	// No ACL names alice: she may not read the topic.
	_, err := alice("consume", topic, "-e")
	wantErr(t, err, "TOPIC_AUTHORIZATION_FAILED")

	out := mustAdmin(t, admin, "acl", "add", "--allow-principal", "User:alice", "--operation", "read", "--topic", topic)
	if want := "RESOURCE-TYPE  NAME        PATTERN  PRINCIPAL   HOST  OPERATION  PERMISSION  RESULT\n" +
		aclRow(topic, "User:alice", "READ       ALLOW       created") + "\n"; out != want {
		t.Fatalf("acl add printed:\n%s\nwant:\n%s", out, want)
	}
	// Added again: the cluster keeps one.
	mustAdmin(t, admin, "acl", "add", "--allow-principal", "User:alice", "--operation", "READ", "--topic", topic)
	if out := mustAdmin(t, admin, "acl", "list"); out != "RESOURCE-TYPE  NAME        PATTERN  PRINCIPAL   HOST  OPERATION  PERMISSION\n"+
		aclRow(topic, "User:alice", "READ       ALLOW")+"\n" {
		t.Fatalf("acl list printed:\n%s", out)
	}
	var listed []aclEntry
	adminJSON(t, admin, &listed, "acl", "list", "--principal", "User:alice", "--topic", topic)
	want := aclEntry{ResourceType: "TOPIC", Name: topic, PatternType: "LITERAL", Principal: "User:alice", Host: "*", Operation: "READ", Permission: "ALLOW"}
	if len(listed) != 1 || listed[0] != want {
		t.Fatalf("acl list --principal User:alice --topic %s -o json: %+v, want %+v", topic, listed, want)
	}
	for _, filter := range [][]string{{"--topic", "other"}, {"--principal", "User:bob"}, {"--topic", "acl-", "--resource-pattern-type", "prefixed"}, {"--group", topic}} {
		adminJSON(t, admin, &listed, append([]string{"acl", "list"}, filter...)...)
		if len(listed) != 0 {
			t.Errorf("acl list %q: %+v, want none", filter, listed)
		}
	}
	adminJSON(t, admin, &listed, "acl", "list", "--topic", topic, "--resource-pattern-type", "match")
	if len(listed) != 1 {
		t.Errorf("acl list --topic %s --resource-pattern-type match: %+v, want alice's READ", topic, listed)
	}

	// alice reads; she may not write, nor manage ACLs.
	if out := mustAdmin(t, alice, "consume", topic, "-e"); out != "one\ntwo\n" {
		t.Fatalf("alice consumed %q", out)
	}
	wantErr(t, produceAs("alice", "alice-pw", topic), `topic "`+topic+`"`, "AUTHORIZATION_FAILED")
	_, err = alice("acl", "list")
	wantErr(t, err, "listing ACLs: CLUSTER_AUTHORIZATION_FAILED", "ask a super user")
	_, err = alice("acl", "add", "--allow-principal", "User:alice", "--operation", "all", "--cluster")
	wantErr(t, err, "ACL (principal=User:alice, host=*, operation=ALL, permissionType=ALLOW) on CLUSTER:LITERAL:kafka-cluster: CLUSTER_AUTHORIZATION_FAILED")
	// The binary exits non-zero, the error on stderr.
	var stderr strings.Builder
	list := exec.Command(shaleBin, "acl", "list", "--brokers", addr, "--sasl-mechanism", "PLAIN", "--sasl-user", "alice")
	list.Env = append(os.Environ(), saslPasswordEnv+"=alice-pw")
	list.Stderr = &stderr
	if err := list.Run(); err == nil || !strings.HasPrefix(stderr.String(), "shale: listing ACLs: CLUSTER_AUTHORIZATION_FAILED") {
		t.Fatalf("shale acl list as alice: %v, stderr %q", err, stderr.String())
	}

	// ops, a super user (--super-users), may do anything.
	if err := produceAs("ops", "ops-pw", topic); err != nil {
		t.Fatalf("ops produce: %v", err)
	}
	mustAdmin(t, saslCLI(t, addr, "PLAIN", "ops", "ops-pw"), "acl", "list")

	// --producer: WRITE, DESCRIBE and CREATE on the topic, so alice
	// writes, until they are removed with the same flags.
	out = mustAdmin(t, admin, "acl", "add", "--allow-principal", "User:alice", "--producer", "--topic", topic)
	for _, op := range []string{"WRITE", "DESCRIBE", "CREATE"} {
		if !strings.Contains(out, aclRow(topic, "User:alice", op)) {
			t.Fatalf("acl add --producer printed:\n%s", out)
		}
	}
	if err := produceAs("alice", "alice-pw", topic); err != nil {
		t.Fatalf("alice produce with --producer ACLs: %v", err)
	}
	out = mustAdmin(t, admin, "acl", "remove", "--allow-principal", "User:alice", "--producer", "--topic", topic)
	if strings.Count(out, " removed\n") != 3 || strings.Contains(out, "READ") {
		t.Fatalf("acl remove --producer printed:\n%s", out)
	}
	wantErr(t, produceAs("alice", "alice-pw", topic), "AUTHORIZATION_FAILED")

	// remove, with the flags of add: alice may no longer read.
	out = mustAdmin(t, admin, "acl", "remove", "--allow-principal", "User:alice", "--operation", "read", "--topic", topic)
	if want := "RESOURCE-TYPE  NAME        PATTERN  PRINCIPAL   HOST  OPERATION  PERMISSION  RESULT\n" +
		aclRow(topic, "User:alice", "READ       ALLOW       removed") + "\n"; out != want {
		t.Fatalf("acl remove printed:\n%s\nwant:\n%s", out, want)
	}
	adminJSON(t, admin, &listed, "acl", "list")
	if len(listed) != 0 {
		t.Fatalf("acl list after remove: %+v", listed)
	}
	_, err = alice("consume", topic, "-e")
	wantErr(t, err, "TOPIC_AUTHORIZATION_FAILED")
	// Nothing left to remove: said on stderr, not an error.
	t.Setenv(saslPasswordEnv, "admin-secret")
	_, errOut, err := runCLIIO(t, "", "acl", "remove", "--principal", "User:alice", "--topic", topic,
		"--brokers", addr, "--sasl-mechanism", "PLAIN", "--sasl-user", "admin")
	if err != nil || !strings.Contains(errOut, "no ACL matched") {
		t.Fatalf("acl remove of nothing: %v, stderr %q", err, errOut)
	}

	// A DENY wins over an ALLOW; prefixed patterns and --consumer.
	mustAdmin(t, admin, "acl", "add", "--allow-principal", "User:alice", "--consumer", "--topic", "acl-", "--group", "acl-",
		"--resource-pattern-type", "prefixed")
	mustAdmin(t, admin, "acl", "add", "--deny-principal", "User:alice", "--deny-host", "127.0.0.1", "--operation", "read", "--topic", topic)
	_, err = alice("consume", topic, "-e")
	wantErr(t, err, "TOPIC_AUTHORIZATION_FAILED")
	adminJSON(t, admin, &listed, "acl", "list", "--topic", topic, "--resource-pattern-type", "match")
	if len(listed) != 3 {
		t.Fatalf("acl list --topic %s --resource-pattern-type match: %+v, want the prefixed READ and DESCRIBE and the DENY", topic, listed)
	}
	mustAdmin(t, admin, "acl", "remove", "--deny-principal", "User:alice", "--topic", topic)
	if out := mustAdmin(t, alice, "consume", topic, "-e", "-n", "1"); out != "one\n" {
		t.Fatalf("alice consumed %q with the prefixed ACLs", out)
	}

	// Argument errors, caught before the cluster is asked.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "--operation", "read", "--topic", "t"}, "give --allow-principal or --deny-principal"},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "read"}, "give --topic, --group, --transactional-id or --cluster"},
		{[]string{"add", "--allow-principal", "User:a", "--topic", "t"}, "give --operation (all for every operation), --producer or --consumer"},
		{[]string{"add", "--allow-principal", "alice", "--operation", "read", "--topic", "t"}, `--allow-principal "alice": want Type:Name, as User:alice`},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "peek", "--topic", "t"}, `--operation "peek": unknown operation "peek"`},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "any", "--topic", "t"}, `--operation "any": only to list or remove ACLs`},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "read", "--topic", "t", "--resource-pattern-type", "match"}, `--resource-pattern-type "match": ACLs are literal or prefixed`},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "read", "--topic", "t", "--resource-pattern-type", "glob"}, `--resource-pattern-type "glob": unknown pattern type`},
		{[]string{"add", "--allow-principal", "User:a", "--deny-host", "10.0.0.1", "--operation", "read", "--topic", "t"}, "--deny-host 10.0.0.1: give --deny-principal"},
		{[]string{"add", "--allow-principal", "User:a", "--consumer", "--topic", "t"}, "--consumer: give --group"},
		{[]string{"add", "--allow-principal", "User:a", "--producer", "--operation", "read", "--topic", "t"}, "--operation: not with --producer or --consumer"},
		{[]string{"add", "--allow-principal", "User:a", "--operation", "read", "--topic", ""}, "--topic: a name"},
		{[]string{"list", "--principal", "User"}, `--principal "User": want Type:Name`},
		{[]string{"remove", "--principal", "User:a"}, "give --topic, --group, --transactional-id or --cluster"},
		{[]string{"add", "x"}, `unexpected argument "x"`},
	} {
		_, err := admin(append([]string{"acl"}, tc.args...)...)
		wantErr(t, err, tc.want)
	}

	// kcat (librdkafka), as alice, may read but is refused producing
	// (KcatPath fails without kcat in CI; elsewhere this part is left
	// out, not the test skipped).
	if _, err := exec.LookPath("kcat"); err == nil || os.Getenv("CI") == "true" {
		kcat := brokertest.KcatPath(t)
		auth := []string{"-b", addr, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username=alice", "-X", "sasl.password=alice-pw"}
		if out := brokertest.Kcat(t, "", append(auth, "-C", "-t", topic, "-o", "beginning", "-c", "1")...); out != "one\n" {
			t.Errorf("kcat consumed %q as alice", out)
		}
		if e := kcatFails(t, kcat, "x\n", append(auth, "-P", "-t", topic)...); !strings.Contains(e, "Topic authorization failed") {
			t.Errorf("kcat produced as alice, refused without saying why:\n%s", e)
		}
	}
}

// TestACLCommandsWithoutACLs: a cluster that enforces no ACLs answers the
// ACL APIs SECURITY_DISABLED, which shale acl says in one line with what
// to do.
func TestACLCommandsWithoutACLs(t *testing.T) {
	b := brokertest.Start(t)
	cli := func(args ...string) (string, error) {
		return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "20s")...)
	}
	_, err := cli("acl", "list")
	wantErr(t, err, "listing ACLs: SECURITY_DISABLED", "run them with --acls")
	_, err = cli("acl", "add", "--allow-principal", "User:alice", "--operation", "read,write", "--topic", "t")
	wantErr(t, err, "2 ACLs: SECURITY_DISABLED", "run them with --acls")
	_, err = cli("acl", "remove", "--topic", "t")
	wantErr(t, err, "removing ACLs: SECURITY_DISABLED")
}

// TestBrokerACLFlags: --acls, --allow-everyone-if-no-acl-found (shale dev,
// from SHALE_*) and --super-users (shale broker) reach the broker. On a
// listener without authentication every client is User:ANONYMOUS, as the
// log warns: with --allow-everyone-if-no-acl-found it may do what no ACL
// names, and a topic an ACL names is closed to it; made a super user, it
// may do anything.
func TestBrokerACLFlags(t *testing.T) {
	t.Run("dev", func(t *testing.T) {
		p := startDev(t, "", "SHALE_ACLS=true", "SHALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND=true")
		cli := adminCLI(t, p)
		if log := p.stderr.String(); !strings.Contains(log, "every client that does not is User:ANONYMOUS") {
			t.Errorf("no warning that every client is User:ANONYMOUS:\n%s", log)
		}
		mustAdmin(t, cli, "topic", "create", "open", "-p", "1")
		mustAdmin(t, cli, "topic", "create", "closed", "-p", "1")
		mustCLIIO(t, "x\n", "produce", "closed", "--brokers", p.kafkaAddr)
		mustAdmin(t, cli, "acl", "add", "--allow-principal", "User:bob", "--operation", "read", "--topic", "closed")
		_, _, err := runCLIIO(t, "x\n", "produce", "closed", "--brokers", p.kafkaAddr, "--timeout", "5s")
		wantErr(t, err, "TOPIC_AUTHORIZATION_FAILED")
		mustCLIIO(t, "x\n", "produce", "open", "--brokers", p.kafkaAddr)
	})
	t.Run("broker", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: startTestEtcd(t, ctx),
			extra: []string{"--acls", "--super-users", "User:ops; User:ANONYMOUS"}}
		p.startNew(t)
		t.Cleanup(func() { p.kill(syscall.SIGKILL) })
		cli := func(args ...string) (string, error) {
			return runCLI(t, append(args, "--brokers", p.kafkaAddr, "--timeout", "20s")...)
		}
		mustAdmin(t, cli, "acl", "add", "--deny-principal", "User:mallory", "--operation", "all", "--cluster")
		if out := mustAdmin(t, cli, "acl", "list", "--cluster"); !strings.Contains(out, "CLUSTER        kafka-cluster  LITERAL  User:mallory  *     ALL        DENY") {
			t.Fatalf("acl list --cluster printed:\n%s", out)
		}
		mustAdmin(t, cli, "topic", "create", "by-a-super-user")
		if log := p.stderr.String(); strings.Contains(log, "no super user") {
			t.Errorf("a warning that there is no super user, with --super-users:\n%s", log)
		}
	})
}

// TestACLFlagWarnings: --acls where clients need not authenticate, or
// where nobody may add the first ACLs, starts with a warning saying so.
func TestACLFlagWarnings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		f     brokerFlags
		warns []string
	}{
		{"off", brokerFlags{}, nil},
		{"anonymous, nobody may grant", brokerFlags{acls: true}, []string{"every client that does not is User:ANONYMOUS", "there is no super user"}},
		{"anonymous, a super user", brokerFlags{acls: true, superUsersFlag: "User:ANONYMOUS"}, []string{"every client that does not is User:ANONYMOUS"}},
		{"SASL, bootstrap user", brokerFlags{acls: true, saslMechanisms: []string{"PLAIN"}, saslUser: "admin"}, nil},
		{"SASL, nobody may grant", brokerFlags{acls: true, saslMechanisms: []string{"PLAIN"}}, []string{"there is no super user"}},
		{"SASL, open by default", brokerFlags{acls: true, saslMechanisms: []string{"PLAIN"}, allowIfNoACL: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(saslBootstrapPasswordEnv, "pw")
			f := tc.f
			f.remoteFetchWait, f.maxConns, f.replicaSelector, f.tlsClientAuth = 1, 1, "leader", "none"
			f.txnMaxTimeout, f.txnIDExpiration = time.Minute, time.Hour
			if err := f.check(); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			f.warnACLs(slog.New(slog.NewTextHandler(&log, nil)))
			if got := strings.Count(log.String(), "level=WARN"); got != len(tc.warns) {
				t.Errorf("%d warnings, want %d:\n%s", got, len(tc.warns), log.String())
			}
			for _, w := range tc.warns {
				if !strings.Contains(log.String(), w) {
					t.Errorf("no warning saying %q:\n%s", w, log.String())
				}
			}
		})
	}
}
