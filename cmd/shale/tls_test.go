package main

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// tlsFiles are a test CA's certificate and a certificate and key it
// issued: PEM files in a directory of their own.
type tlsFiles struct{ ca, cert, key string }

// writeTLSFiles writes ca's certificate and a new certificate for
// subject, valid for hosts, with its key, under a new temp dir.
func writeTLSFiles(t *testing.T, ca *brokertest.CA, subject pkix.Name, hosts ...string) tlsFiles {
	t.Helper()
	var f tlsFiles
	f.ca, f.cert, f.key = ca.WriteFiles(t.TempDir(), subject, hosts...)
	return f
}

// TestClientTLSFlags: the client commands reach a TLS listener requiring
// SASL (SASL_SSL) with --tls-ca (or SHALE_TLS_CA) and the SASL flags, and
// one requiring client certificates with --tls-cert and --tls-key (or
// SHALE_TLS_CERT and SHALE_TLS_KEY). Without TLS, without the CA,
// without a certificate, with half of one, or with TLS to a plain
// listener they fail in one line that says what to give.
func TestClientTLSFlags(t *testing.T) {
	ca := brokertest.NewCA(t)
	files := writeTLSFiles(t, ca, pkix.Name{CommonName: "alice", Organization: []string{"example"}})

	t.Run("SASL_SSL", func(t *testing.T) {
		listener, peer := ca.ListenerTLS(tls.NoClientCert)
		b := brokertest.Start(t, saslBrokerOpts, func(c *broker.Config) { c.TLS, c.PeerTLS = listener, peer })
		admin := saslCLI(t, b.Addr, "SCRAM-SHA-256", "admin", "admin-secret")
		mustAdmin(t, admin, "topic", "create", "tls-sasl", "--tls-ca", files.ca)
		t.Setenv("SHALE_TLS_CA", files.ca)
		if out := mustAdmin(t, admin, "topic", "list"); !strings.Contains(out, "tls-sasl") {
			t.Fatalf("topic list with SHALE_TLS_CA:\n%s", out)
		}
		t.Setenv("SHALE_TLS_CA", "")

		_, err := admin("topic", "list", "--timeout", "5s")
		wantErr(t, err, "as a TLS listener does to a plain TCP client", "--tls")
		_, err = admin("topic", "list", "--tls")
		wantErr(t, err, "certificate signed by unknown authority", "give --tls-ca")
		_, err = runCLI(t, "topic", "list", "--brokers", b.Addr, "--timeout", "5s", "--tls-ca", files.ca)
		wantErr(t, err, "SASL", "--sasl-mechanism")
		_, err = saslCLI(t, b.Addr, "SCRAM-SHA-256", "admin", "wrong")("topic", "list", "--tls-ca", files.ca)
		wantErr(t, err, "SASL_AUTHENTICATION_FAILED")
		_, err = admin("topic", "list", "--tls-cert", files.cert, "--tls-ca", files.ca)
		wantErr(t, err, `--tls-cert "`+files.cert+`": give --tls-key`)
		missing := filepath.Join(t.TempDir(), "none.pem")
		_, err = admin("topic", "list", "--tls-ca", missing)
		wantErr(t, err, "--tls-ca: open "+missing)
		_, err = admin("topic", "list", "--tls-ca", files.key)
		wantErr(t, err, `--tls-ca "`+files.key+`": no PEM certificate in it`)
		t.Setenv("SHALE_TLS", "maybe")
		_, err = admin("topic", "list")
		wantErr(t, err, `SHALE_TLS="maybe"`)
	})

	t.Run("client certificates", func(t *testing.T) {
		listener, peer := ca.ListenerTLS(tls.RequireAndVerifyClientCert)
		b := brokertest.Start(t, func(c *broker.Config) { c.TLS, c.PeerTLS = listener, peer })
		cli := func(args ...string) (string, error) {
			return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "5s")...)
		}
		mustAdmin(t, cli, "topic", "create", "mtls", "--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key)
		t.Setenv("SHALE_TLS", "true")
		t.Setenv("SHALE_TLS_CA", files.ca)
		t.Setenv("SHALE_TLS_CERT", files.cert)
		t.Setenv("SHALE_TLS_KEY", files.key)
		if out := mustAdmin(t, cli, "topic", "list"); !strings.Contains(out, "mtls") {
			t.Fatalf("topic list with SHALE_TLS_*:\n%s", out)
		}
		for _, name := range []string{"SHALE_TLS_CERT", "SHALE_TLS_KEY"} {
			t.Setenv(name, "")
		}
		_, err := cli("topic", "list")
		wantErr(t, err, "tls: certificate required", "give --tls-cert and --tls-key")
		os.Unsetenv("SHALE_TLS") // t.Setenv restores it
		t.Setenv("SHALE_TLS_CA", "")
		_, err = cli("topic", "list")
		wantErr(t, err, "as a TLS listener does to a plain TCP client")
	})

	t.Run("plain listener", func(t *testing.T) {
		b := brokertest.Start(t)
		_, err := runCLI(t, "topic", "list", "--brokers", b.Addr, "--timeout", "5s", "--tls-ca", files.ca)
		wantErr(t, err, "closed the connection in the TLS handshake, as a plain TCP listener does", "leave out --tls")
	})
}

// waitISR waits until topic describe (cli) shows every partition of
// topic with the replicas want in sync.
func waitISR(t *testing.T, cli func(...string) (string, error), topic string, want []int32) {
	t.Helper()
	brokertest.WaitFor(t, 30*time.Second, "every replica in sync", func() (bool, string) {
		out, err := cli("topic", "describe", topic, "-o", "json")
		var d describedTopic
		if err == nil {
			err = jsonUnmarshal(out, &d)
		}
		if err != nil {
			return false, err.Error()
		}
		for _, p := range d.Partitions {
			isr := slices.Clone(p.ISR)
			slices.Sort(isr)
			if !slices.Equal(isr, want) {
				return false, "partitions " + out
			}
		}
		return len(d.Partitions) > 0, out
	})
}
