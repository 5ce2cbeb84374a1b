package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestListenerTLSFilesAreReadAgain: shale dev with three brokers on a TLS
// listener that requires client certificates reads its certificate, key
// and CA file again when they change, without a restart. Rotated to a new
// CA (the CA file holding both, then the new one alone), new connections
// get the new certificate, a client with a certificate of the new CA is
// admitted and, once the old CA is gone from the file, one of the old is
// refused; acks=all production to three replicas goes on throughout.
// Files that fail the broker's checks (garbage, a certificate not naming
// the advertised host) leave the certificate in use, with a warning.
func TestListenerTLSFilesAreReadAgain(t *testing.T) {
	oldCA, newCA := brokertest.NewCA(t), brokertest.NewCA(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := oldCA.WriteFiles(dir, pkix.Name{CommonName: "shale dev"}, "127.0.0.1")
	p := startDev(t, "", "SHALE_DEV_BROKERS=3", "SHALE_TLS_CERT="+certFile, "SHALE_TLS_KEY="+keyFile, "SHALE_TLS_CA="+caFile,
		"SHALE_TLS_CLIENT_AUTH=required", "SHALE_TEST_TLS_RELOAD_EVERY=100ms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	both := x509.NewCertPool()
	both.AddCert(parsePEMCert(t, oldCA.PEM))
	both.AddCert(parsePEMCert(t, newCA.PEM))
	// served is the serial of the certificate a new connection gets.
	served := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", p.kafkaAddr, &tls.Config{RootCAs: both, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{newCA.Issue(pkix.Name{CommonName: "probe"})}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	// produce writes a record with acks=all through a client of ca,
	// trusting both CAs.
	produce := func(ca *brokertest.CA, value string) error {
		cfg := ca.ClientTLS(pkix.Name{CommonName: "app"})
		cfg.RootCAs = both
		cl := p.client(kgo.DialTLSConfig(cfg), kgo.DefaultProduceTopic("rotated"), kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.RecordRetries(2), kgo.RequestTimeoutOverhead(5*time.Second))
		defer cl.Close()
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return cl.ProduceSync(pctx, &kgo.Record{Value: []byte(value)}).FirstErr()
	}
	oldClient := oldCA.ClientTLS(pkix.Name{CommonName: "admin"})
	oldClient.RootCAs = both
	adm := kadm.NewClient(p.client(kgo.DialTLSConfig(oldClient)))
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "rotated"); err != nil {
		t.Fatal(err)
	}
	if err := produce(oldCA, "before"); err != nil {
		t.Fatalf("acks=all produce with the first certificates: %v", err)
	}
	if got, want := served(), parsePEMCert(t, readFile(t, certFile)).SerialNumber; got.Cmp(want) != 0 {
		t.Fatalf("a new connection gets certificate %v, want the one of --tls-cert, %v", got, want)
	}

	// The rotation's first step: the new CA's certificate, both CAs
	// trusted.
	tmp := t.TempDir()
	_, newCert, newKey := newCA.WriteFiles(tmp, pkix.Name{CommonName: "shale dev"}, "127.0.0.1")
	replaceFile(t, caFile, append(append([]byte{}, oldCA.PEM...), newCA.PEM...))
	replaceFile(t, keyFile, readFile(t, newKey))
	replaceFile(t, certFile, readFile(t, newCert))
	want := parsePEMCert(t, readFile(t, newCert)).SerialNumber
	waitUntil(t, "new connections to get the new certificate", func() bool { return served().Cmp(want) == 0 })
	for _, ca := range []*brokertest.CA{oldCA, newCA} {
		if err := produce(ca, "during"); err != nil {
			t.Fatalf("acks=all produce with a client certificate of either CA while both are trusted: %v", err)
		}
	}

	// The second: the old CA no longer trusted.
	replaceFile(t, caFile, newCA.PEM)
	waitUntil(t, "a client certificate of the old CA to be refused", func() bool { return produce(oldCA, "refused") != nil })
	if err := produce(newCA, "after"); err != nil {
		t.Fatalf("acks=all produce with the new CA alone: %v", err)
	}
	admin := writeTLSFiles(t, newCA, pkix.Name{CommonName: "admin"})
	waitISR(t, func(args ...string) (string, error) {
		return runCLI(t, append(args, "--brokers", p.kafkaAddr, "--timeout", "10s", "--tls-ca", admin.ca, "--tls-cert", admin.cert, "--tls-key", admin.key)...)
	}, "rotated", []int32{0, 1, 2})

	// Files that would not do: the certificate in use stays.
	for _, bad := range []struct {
		name      string
		cert, key []byte
		logAnyOf  []string
	}{
		{"garbage", []byte("not a certificate\n"), nil, []string{"failed to find any PEM data"}},
		{"another host", nil, nil, []string{"advertised host"}},
	} {
		cert, key := bad.cert, bad.key
		if cert == nil {
			other := t.TempDir()
			_, c, k := newCA.WriteFiles(other, pkix.Name{CommonName: "elsewhere"}, "elsewhere.example")
			cert, key = readFile(t, c), readFile(t, k)
		}
		if key != nil {
			replaceFile(t, keyFile, key)
		}
		replaceFile(t, certFile, cert)
		waitUntil(t, bad.name+": a warning that the files cannot be used", func() bool {
			served() // a handshake looks at the files
			for _, s := range bad.logAnyOf {
				if strings.Contains(p.stderr.String(), s) {
					return true
				}
			}
			return false
		})
		if got := served(); got.Cmp(want) != 0 {
			t.Fatalf("%s: new connections get certificate %v, want the one in use, %v", bad.name, got, want)
		}
		if err := produce(newCA, "still"); err != nil {
			t.Fatalf("%s: acks=all produce: %v", bad.name, err)
		}
	}
	if !strings.Contains(p.stderr.String(), "the listener's TLS files changed: new connections use them") {
		t.Fatalf("no line logged a reload:\n%s", tail(p.stderr.String(), 3000))
	}
}

// replaceFile puts data at path as a certificate manager does: a new file
// renamed over the old, so that no reader sees half of it.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parsePEMCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
