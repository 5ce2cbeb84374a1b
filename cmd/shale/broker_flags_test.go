package main

import (
	"context"
	"crypto/x509/pkix"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// The connection limits, the replica selector and the remote fetch wait
// reach the broker from flags or SHALE_* variables, as DescribeConfigs of
// the broker shows.
func TestConnectionLimitAndReplicaSelectorFlags(t *testing.T) {
	p := startDev(t, "", "SHALE_MAX_CONNECTIONS=50", "SHALE_MAX_CONNECTIONS_PER_IP=20", "SHALE_MAX_CONNECTION_CREATION_RATE=100", "SHALE_REPLICA_SELECTOR=leader", "SHALE_REMOTE_FETCH_MAX_WAIT=250ms",
		"SHALE_TRANSACTION_MAX_TIMEOUT=2h")
	adm := kadm.NewClient(p.client())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rcs, err := adm.DescribeBrokerConfigs(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("0", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe broker 0: %v %v", err, rc.Err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	for k, want := range map[string]string{"max.connections": "50", "max.connections.per.ip": "20", "max.connection.creation.rate": "100", "replica.selector.class": "",
		"remote.log.storage.system.enable": "true", "remote.fetch.max.wait.ms": "250"} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %q (present %v), want %q", k, v, ok, want)
		}
	}
	// A transaction of an hour (Flink's default), past Kafka's default
	// transaction.max.timeout.ms of 15 minutes.
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "long-txn"); err != nil {
		t.Fatal(err)
	}
	txn := p.client(kgo.TransactionalID("long"), kgo.TransactionTimeout(time.Hour))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Topic: "long-txn", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("a transaction of an hour with --transaction-max-timeout 2h: %v", err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

func TestBrokerFlagsRefuseBadValues(t *testing.T) {
	// Unset, as an empty value: the bootstrap user and the etcd user
	// have no password.
	t.Setenv(saslBootstrapPasswordEnv, "")
	t.Setenv(etcdPasswordEnv, "")
	ca := brokertest.NewCA(t)
	good := writeTLSFiles(t, ca, pkix.Name{CommonName: "broker"}, "127.0.0.1")
	other := writeTLSFiles(t, ca, pkix.Name{CommonName: "broker"}, "127.0.0.1")
	elsewhere := writeTLSFiles(t, ca, pkix.Name{CommonName: "broker"}, "kafka.example.com")
	otherCA := writeTLSFiles(t, brokertest.NewCA(t), pkix.Name{CommonName: "broker"}, "127.0.0.1")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tlsArgs := func(f tlsFiles, more ...string) []string {
		return append([]string{"--tls-cert", f.cert, "--tls-key", f.key}, more...)
	}
	for _, tc := range []struct {
		args []string
		want string
		subs []string // default: dev and broker
	}{
		{[]string{"--replica-selector", "nearest"}, "--replica-selector \"nearest\"", nil},
		{[]string{"--max-connections", "0"}, "--max-connections 0", nil},
		{[]string{"--max-connections-per-ip", "-1"}, "--max-connections-per-ip -1", nil},
		{[]string{"--max-connection-creation-rate", "-1"}, "--max-connection-creation-rate -1", nil},
		{[]string{"--remote-fetch-max-wait", "0s"}, "--remote-fetch-max-wait 0s", nil},
		{[]string{"--transaction-max-timeout", "0s"}, "--transaction-max-timeout 0s: from 1ms to", nil},
		{[]string{"--transactional-id-expiration", "1000h"}, "--transactional-id-expiration 1000h0m0s: from 1ms to", nil},
		{[]string{"--unclean-recovery-wait", "-1s"}, "--unclean-recovery-wait -1s", []string{"broker"}},
		{[]string{"--sasl-mechanisms", "SCRAM-SHA-256,GSSAPI"}, `--sasl-mechanisms "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`, nil},
		{[]string{"--connections-max-reauth", "-1s"}, `--connections-max-reauth -1s: 0 or more`, nil},
		{[]string{"--sasl-mechanisms", "SCRAM-SHA-256", "--sasl-bootstrap-user", "admin"}, `--sasl-bootstrap-user "admin": set its password in SHALE_SASL_BOOTSTRAP_PASSWORD`, nil},
		{[]string{"--tls-cert", good.cert}, `--tls-cert "` + good.cert + `": give --tls-key`, nil},
		{[]string{"--tls-key", good.key}, `--tls-key "` + good.key + `": give --tls-cert`, nil},
		{[]string{"--tls-cert", good.cert, "--tls-key", missing}, "--tls-key: open " + missing + ": no such file", nil},
		{[]string{"--tls-cert", missing, "--tls-key", good.key}, "--tls-cert: open " + missing + ": no such file", nil},
		{[]string{"--tls-cert", good.cert, "--tls-key", other.key}, "private key does not match public key", nil},
		{tlsArgs(good, "--tls-ca", missing), "--tls-ca: open " + missing, nil},
		{tlsArgs(good, "--tls-ca", good.key), `--tls-ca "` + good.key + `": no PEM certificate in it`, nil},
		{tlsArgs(good, "--tls-client-auth", "required"), "--tls-client-auth required: give --tls-ca", nil},
		{tlsArgs(good, "--tls-client-auth", "requested"), "--tls-client-auth requested: give --tls-ca", nil},
		{[]string{"--tls-client-auth", "maybe"}, `--tls-client-auth "maybe": want none, requested or required`, nil},
		{[]string{"--tls-ca", good.ca}, `--tls-ca "` + good.ca + `": only with --tls-cert and --tls-key`, nil},
		{[]string{"--tls-client-auth", "required"}, "--tls-client-auth required: only with --tls-cert and --tls-key", nil},
		{tlsArgs(elsewhere), `--tls-cert "` + elsewhere.cert + `": clients and other brokers verify it against the advertised host "127.0.0.1"`, nil},
		{tlsArgs(good, "--tls-ca", otherCA.ca), `--tls-cert "` + good.cert + `": not signed by a CA of --tls-ca`, nil},
		{[]string{"--acls", "--super-users", "User:admin;admin"}, `--super-users "User:admin;admin": could not parse principal "admin": it is Type:Name, as User:alice`, nil},
		{[]string{"--super-users", "User:admin"}, `--super-users "User:admin": only with --acls`, nil},
		{[]string{"--allow-everyone-if-no-acl-found"}, "--allow-everyone-if-no-acl-found: only with --acls", nil},
		{[]string{"--acls=maybe"}, `invalid argument "maybe" for "--acls" flag`, nil},
		// The etcd connection's flags (shale broker only: shale dev
		// embeds its etcd), refused before anything is dialed.
		{[]string{"--etcd-tls-cert", good.cert}, `--etcd-tls-cert "` + good.cert + `": give --etcd-tls-key`, []string{"broker"}},
		{[]string{"--etcd-tls-key", good.key}, `--etcd-tls-key "` + good.key + `": give --etcd-tls-cert`, []string{"broker"}},
		{[]string{"--etcd-tls-cert", missing, "--etcd-tls-key", good.key}, "--etcd-tls-cert: open " + missing + ": no such file", []string{"broker"}},
		{[]string{"--etcd-tls-cert", good.cert, "--etcd-tls-key", missing}, "--etcd-tls-key: open " + missing + ": no such file", []string{"broker"}},
		{[]string{"--etcd-tls-cert", good.cert, "--etcd-tls-key", other.key}, `--etcd-tls-cert "` + good.cert + `", --etcd-tls-key "` + other.key + `": tls: private key does not match public key`, []string{"broker"}},
		{[]string{"--etcd-tls-ca", missing}, "--etcd-tls-ca: open " + missing + ": no such file", []string{"broker"}},
		{[]string{"--etcd-tls-ca", good.key}, `--etcd-tls-ca "` + good.key + `": no PEM certificate in it`, []string{"broker"}},
		{[]string{"--etcd-user", "shale"}, `--etcd-user "shale": set its password in SHALE_ETCD_PASSWORD (there is no flag for it)`, []string{"broker"}},
		{[]string{"--etcd", "http://127.0.0.1:2379", "--etcd-tls-ca", good.ca}, `--etcd "http://127.0.0.1:2379": http:// is plain TCP, but --etcd-tls-* ask for TLS`, []string{"broker"}},
		{[]string{"--etcd", "https://10.0.0.1:2379,http://10.0.0.2:2379"}, "mixes http:// and https:// endpoints", []string{"broker"}},
		{[]string{"--etcd", "unix:///run/etcd.sock"}, `"unix:///run/etcd.sock" is not host:port, http://host:port or https://host:port`, []string{"broker"}},
		{[]string{"--etcd", "10.0.0.1"}, `"10.0.0.1" is not host:port`, []string{"broker"}},
		{[]string{"--etcd", "10.0.0.1:2379,"}, `"" is not host:port`, []string{"broker"}},
	} {
		subs := tc.subs
		if subs == nil {
			subs = []string{"dev", "broker"}
		}
		for _, sub := range subs {
			args := append([]string{sub, "--data-dir", t.TempDir(), "--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t)}, tc.args...)
			if sub == "broker" {
				args = append(args, "--id", "0")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, shaleBin, args...).CombinedOutput()
			cancel()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("shale %s: err %v, output %q, want it to say %s", strings.Join(args, " "), err, out, tc.want)
			}
		}
	}
}

// TestBrokerSASLFlags: --sasl-mechanisms makes shale dev (here from
// SHALE_SASL_MECHANISMS) and shale broker require SASL by the mechanisms
// named, and --sasl-bootstrap-user creates a user with the password in
// SHALE_SASL_BOOTSTRAP_PASSWORD, by which clients then log in.
func TestBrokerSASLFlags(t *testing.T) {
	check := func(t *testing.T, addr string, enabled, disabled []string) {
		t.Helper()
		_, err := runCLI(t, "cluster", "info", "--brokers", addr, "--timeout", "20s")
		wantErr(t, err, "SASL", "--sasl-mechanism")
		for _, mech := range enabled {
			mustAdmin(t, saslCLI(t, addr, mech, "root", "root-pw"), "cluster", "info")
			_, err := saslCLI(t, addr, mech, "root", "wrong")("cluster", "info")
			wantErr(t, err, "SASL_AUTHENTICATION_FAILED")
		}
		for _, mech := range disabled {
			_, err := saslCLI(t, addr, mech, "root", "root-pw")("cluster", "info")
			wantErr(t, err, "UNSUPPORTED_SASL_MECHANISM")
		}
		var users []describedUser
		adminJSON(t, saslCLI(t, addr, enabled[0], "root", "root-pw"), &users, "user", "describe")
		if len(users) != 1 || users[0].User != "root" || len(users[0].Credentials) != 2 {
			t.Fatalf("users: %+v, want root with a credential for each SCRAM mechanism", users)
		}
	}
	t.Run("dev", func(t *testing.T) {
		p := startDev(t, "", "SHALE_SASL_MECHANISMS=SCRAM-SHA-512,PLAIN", "SHALE_SASL_BOOTSTRAP_USER=root", saslBootstrapPasswordEnv+"=root-pw", "SHALE_CONNECTIONS_MAX_REAUTH=1m")
		check(t, p.kafkaAddr, []string{"SCRAM-SHA-512", "PLAIN"}, []string{"SCRAM-SHA-256"})
	})
	t.Run("broker", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: startTestEtcd(t, ctx),
			extra: []string{"--sasl-mechanisms", "SCRAM-SHA-256", "--sasl-bootstrap-user", "root"},
			env:   []string{saslBootstrapPasswordEnv + "=root-pw"}}
		p.startNew(t)
		t.Cleanup(func() { p.kill(syscall.SIGKILL) })
		check(t, p.kafkaAddr, []string{"SCRAM-SHA-256"}, []string{"SCRAM-SHA-512"})
	})
}

// TestBrokerTLSFlags: --tls-cert and --tls-key make the listener of shale
// dev (here from SHALE_TLS_*, two brokers in one process sharing the
// certificate) and of shale broker TLS, for clients and for the brokers'
// replication alike; with --tls-client-auth required and --tls-ca, the
// brokers present their certificate to each other, and admit clients with
// one of the CA only. Plain TCP clients are refused.
func TestBrokerTLSFlags(t *testing.T) {
	ca := brokertest.NewCA(t)
	server := writeTLSFiles(t, ca, pkix.Name{CommonName: "broker"}, "127.0.0.1")
	client := writeTLSFiles(t, ca, pkix.Name{CommonName: "alice"})
	t.Run("dev", func(t *testing.T) {
		p := startDev(t, "", "SHALE_TLS_CERT="+server.cert, "SHALE_TLS_KEY="+server.key, "SHALE_TLS_CA="+server.ca, "SHALE_DEV_BROKERS=2")
		cli := func(args ...string) (string, error) {
			return runCLI(t, append(args, "--brokers", p.kafkaAddr, "--timeout", "20s", "--tls-ca", server.ca)...)
		}
		mustAdmin(t, cli, "topic", "create", "tls-dev", "--partitions", "2", "--replication-factor", "2")
		mustCLIIO(t, "a\nb\nc\n", "produce", "tls-dev", "--brokers", p.kafkaAddr, "--tls-ca", server.ca, "--acks", "all")
		waitISR(t, cli, "tls-dev", []int32{0, 1})
		out, _ := mustCLIIO(t, "", "consume", "tls-dev", "--brokers", p.kafkaAddr, "--tls-ca", server.ca, "-e", "-f", "%v\n")
		if got := strings.Fields(out); len(got) != 3 {
			t.Fatalf("consumed %q, want a, b and c", out)
		}
		_, err := runCLI(t, "cluster", "info", "--brokers", p.kafkaAddr, "--timeout", "5s")
		wantErr(t, err, "TLS listener")
	})
	t.Run("broker", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		etcd := startTestEtcd(t, ctx)
		var seeds []string
		for id := range 2 {
			p := &brokerProc{t: t, id: id, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcd,
				extra: []string{"--tls-cert", server.cert, "--tls-key", server.key, "--tls-ca", server.ca, "--tls-client-auth", "required"}}
			p.startNew(t)
			t.Cleanup(func() { p.kill(syscall.SIGKILL) })
			seeds = append(seeds, p.kafkaAddr)
		}
		brokers := strings.Join(seeds, ",")
		cli := func(args ...string) (string, error) {
			return runCLI(t, append(args, "--brokers", brokers, "--timeout", "20s",
				"--tls-ca", client.ca, "--tls-cert", client.cert, "--tls-key", client.key)...)
		}
		mustAdmin(t, cli, "topic", "create", "tls-broker", "--partitions", "2", "--replication-factor", "2")
		mustCLIIO(t, "a\nb\nc\n", "produce", "tls-broker", "--brokers", brokers, "--acks", "all",
			"--tls-ca", client.ca, "--tls-cert", client.cert, "--tls-key", client.key)
		waitISR(t, cli, "tls-broker", []int32{0, 1})
		_, err := runCLI(t, "cluster", "info", "--brokers", brokers, "--timeout", "5s", "--tls-ca", client.ca)
		wantErr(t, err, "certificate required", "--tls-cert")
	})
}
