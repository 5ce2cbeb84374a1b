package main

import (
	"context"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/shale-log/shale/broker/brokertest"
)

// startTLSEtcd starts a single-member etcd in the test process that
// serves clients over TLS only, with the certificate and key of server,
// and (clientCertAuth) requires a client certificate of server.ca, as
// etcd --cert-file --key-file --trusted-ca-file --client-cert-auth
// does. It returns the client address (host:port); etcd stops when the
// test ends, after the brokers' processes are killed.
func startTLSEtcd(t *testing.T, server tlsFiles, clientCertAuth bool) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		cfg := embed.NewConfig()
		cfg.Name = "tls"
		cfg.Dir = filepath.Join(t.TempDir(), "etcd")
		cu := url.URL{Scheme: "https", Host: addr}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		// One member: no peer listener, so no peer TLS.
		pu := url.URL{Scheme: "http", Host: "127.0.0.1:1"}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{pu}
		cfg.InitialCluster = cfg.Name + "=" + pu.String()
		cfg.TickMs, cfg.ElectionMs = 10, 100
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: server.cert, KeyFile: server.key, TrustedCAFile: server.ca, ClientCertAuth: clientCertAuth}
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			if attempt < 5 && strings.Contains(err.Error(), "address already in use") {
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("etcd not ready after 30s")
		}
		return addr
	}
}

// brokerFailsToStart runs `shale broker` on etcd with args and env
// added, and returns what it printed once it has exited; the test fails
// unless it exits non-zero within limit.
func brokerFailsToStart(t *testing.T, etcd string, limit time.Duration, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args = append([]string{"broker", "--id", "0", "--data-dir", t.TempDir(), "--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t),
		"--etcd", etcd, "--cluster", "kill", "--object-store", "none"}, args...)
	cmd := exec.CommandContext(ctx, shaleBin, args...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("shale %s still running after %s:\n%s", strings.Join(args, " "), limit, out)
	}
	if err == nil {
		t.Fatalf("shale %s exited 0:\n%s", strings.Join(args, " "), out)
	}
	// The error is the last line; the etcd client's warnings come first.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("shale %s failed in %s: %s", strings.Join(args[1:], " "), time.Since(start).Round(time.Millisecond), lines[len(lines)-1])
	return string(out)
}

// wantOutput fails the test unless out says each of want.
func wantOutput(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not say %q:\n%s", w, out)
		}
	}
}

// stopRefusedNothing stops the brokers with SIGTERM (a controlled
// shutdown, which revokes their etcd leases) and fails the test if etcd
// refused any of their requests meanwhile.
func stopRefusedNothing(t *testing.T, procs []*brokerProc) {
	t.Helper()
	for _, p := range procs {
		p.kill(syscall.SIGTERM)
	}
	for _, p := range procs {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, "permission denied") || strings.Contains(line, "authentication failed") ||
				strings.Contains(line, "invalid auth token") || strings.Contains(line, "tls:") {
				t.Errorf("broker %d: %.400s", p.id, line)
			}
		}
	}
}

// roundTrip produces a record to a new topic through the brokers at
// seeds and consumes it back, with franz-go.
func roundTrip(t *testing.T, seeds []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("over etcd")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume: %v", err)
		}
		for _, e := range fs.Errors() {
			t.Logf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if string(recs[0].Value) != "over etcd" {
				t.Fatalf("consumed %q", recs[0].Value)
			}
			return
		}
	}
}

// TestBrokerEtcdTLSFlags: against an etcd that serves TLS and requires
// client certificates, `shale broker` with --etcd-tls-ca, --etcd-tls-cert
// and --etcd-tls-key (one broker on a host:port endpoint with flags, the
// other on an https:// endpoint with SHALE_ETCD_TLS_*) serves: a record
// goes in and comes out. Plain, with the system's CAs, with another CA
// (with a user too, whom the client authenticates before anything else),
// without a client certificate or with another CA's, a broker fails at
// start within seconds, saying what failed and which flag to look at.
func TestBrokerEtcdTLSFlags(t *testing.T) {
	ca := brokertest.NewCA(t)
	server := writeTLSFiles(t, ca, pkix.Name{CommonName: "etcd"}, "127.0.0.1")
	client := writeTLSFiles(t, ca, pkix.Name{CommonName: "shale"})
	etcd := startTLSEtcd(t, server, true)

	procs, seeds := startBrokerProcs(t, etcd, 2, func(p *brokerProc) {
		if p.id == 0 {
			p.extra = []string{"--etcd-tls-ca", client.ca, "--etcd-tls-cert", client.cert, "--etcd-tls-key", client.key}
			return
		}
		p.etcd = "https://" + etcd
		p.env = []string{"SHALE_ETCD_TLS_CA=" + client.ca, "SHALE_ETCD_TLS_CERT=" + client.cert, "SHALE_ETCD_TLS_KEY=" + client.key}
	})
	roundTrip(t, seeds, "etcd-tls")
	for _, p := range procs {
		if s := p.stderr.String(); !strings.Contains(s, "etcd_tls=true") {
			t.Errorf("broker %d does not log etcd_tls=true:\n%s", p.id, tail(s, 2000))
		}
	}
	stopRefusedNothing(t, procs)

	other := writeTLSFiles(t, brokertest.NewCA(t), pkix.Name{CommonName: "shale"})
	// Well within etcdStartTimeout: what cannot mend is said at once.
	const limit = 20 * time.Second
	for _, tc := range []struct {
		name string
		etcd string
		args []string
		want []string
		env  []string
	}{
		{"plain", etcd, nil, []string{"etcd at " + etcd, "serves TLS", "--etcd-tls-ca"}, nil},
		{"system CAs", "https://" + etcd, nil, []string{"certificate signed by unknown authority", "--etcd-tls-ca"}, nil},
		{"another CA", etcd, []string{"--etcd-tls-ca", other.ca, "--etcd-tls-cert", other.cert, "--etcd-tls-key", other.key},
			[]string{"certificate signed by unknown authority", "--etcd-tls-ca"}, nil},
		// clientv3.New authenticates a user at once, and fails
		// first.
		{"another CA, with a user", etcd, []string{"--etcd-tls-ca", other.ca, "--etcd-user", "shale"},
			[]string{"certificate signed by unknown authority", "--etcd-tls-ca"}, []string{etcdPasswordEnv + "=pw"}},
		{"no client certificate", etcd, []string{"--etcd-tls-ca", client.ca}, []string{"certificate required", "--etcd-tls-cert"}, nil},
		{"another CA's client certificate", etcd, []string{"--etcd-tls-ca", client.ca, "--etcd-tls-cert", other.cert, "--etcd-tls-key", other.key},
			[]string{"refused the client certificate of --etcd-tls-cert", "unknown certificate authority"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := brokerFailsToStart(t, tc.etcd, limit, tc.env, tc.args...)
			wantOutput(t, out, tc.want...)
		})
	}
}

// TestBrokerEtcdAuthFlags: against an etcd with authentication enabled,
// `shale broker --etcd-user shale` (or SHALE_ETCD_USER; a user whose
// role may read and write the cluster's key prefix /kill/ and nothing
// else) with the password in SHALE_ETCD_PASSWORD serves: a record goes
// in and comes out, and etcd refuses none of the brokers' requests, their
// shutdown included. With a wrong password, without a user, with a
// password but no user, or as a user without permission on the prefix, a
// broker fails at start, saying so.
func TestBrokerEtcdAuthFlags(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The least bcrypt cost: this test's etcd is built with the race
	// detector, where each check of a password at etcd's default cost
	// takes seconds, and the brokers' first reads time out on them.
	te := startRestartableEtcd(t, ctx, func(te *testEtcd) { te.bcryptCost = 4 })
	cli := te.client()
	const prefix = "/kill/"
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "shale"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "shale", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "shale", "shale-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "shale", "shale"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "elsewhere"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "elsewhere", "/other/", clientv3.GetPrefixRangeEnd("/other/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "other", "other-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "other", "elsewhere"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	procs, seeds := startBrokerProcs(t, te.addr, 2, func(p *brokerProc) {
		p.env = []string{etcdPasswordEnv + "=shale-pw"}
		if p.id == 0 {
			p.extra = []string{"--etcd-user", "shale"}
		} else {
			p.env = append(p.env, "SHALE_ETCD_USER=shale")
		}
	})
	roundTrip(t, seeds, "etcd-auth")
	// Leases, the controller election, transactions and the lease's
	// revocation at shutdown all stay within the prefix.
	stopRefusedNothing(t, procs)

	const limit = 25 * time.Second
	out := brokerFailsToStart(t, te.addr, limit, []string{etcdPasswordEnv + "=wrong"}, "--etcd-user", "shale")
	wantOutput(t, out, `refused --etcd-user "shale" with the password in `+etcdPasswordEnv, "authentication failed")
	out = brokerFailsToStart(t, te.addr, limit, []string{etcdPasswordEnv + "="})
	wantOutput(t, out, "requires authentication", "--etcd-user")
	out = brokerFailsToStart(t, te.addr, limit, []string{etcdPasswordEnv + "=shale-pw"})
	wantOutput(t, out, etcdPasswordEnv+" is set but --etcd-user is not")
	out = brokerFailsToStart(t, te.addr, limit, []string{etcdPasswordEnv + "=other-pw"}, "--etcd-user", "other")
	wantOutput(t, out, `--etcd-user "other" may not read the cluster's keys /kill/`, "permission denied")
}
