package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// runTLS measures what TLS and SCRAM cost: franz-go producing and
// consuming against a second `shale dev` whose listener is SASL_SSL
// (SCRAM-SHA-256), beside the plaintext shale dev of the same run, its
// ceiling. A TLS connection's fetches lose sendfile: the records are
// read and encrypted in user space.
func runTLS(o options, plain *target) error {
	dir, err := os.MkdirTemp("", "shale-bench-tls-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, pool, err := selfSignedCert(dir)
	if err != nil {
		return err
	}
	const user, pass = "bench", "bench-secret"
	to := o
	to.shaleArgs += fmt.Sprintf(" --tls-cert %s --tls-key %s --sasl-mechanisms SCRAM-SHA-256 --sasl-bootstrap-user %s", certFile, keyFile, user)
	if to.shaleEnv != "" {
		to.shaleEnv += ","
	}
	to.shaleEnv += "SHALE_SASL_BOOTSTRAP_PASSWORD=" + pass
	sec, err := startShale(to)
	if err != nil {
		return err
	}
	defer sec.close()
	to.clientOpts = []kgo.Opt{
		kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()),
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(sec.addr)}, to.clientOpts...)...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).CreateTopic(ctx, int32(o.partitions), 1, nil, topic)
	cl.Close()
	if err != nil {
		return fmt.Errorf("creating the topic over TLS: %w", err)
	}
	var rows [][]string
	var pTotal, sTotal int64
	for _, clients := range []int{1, 2} {
		o, to := o, to
		o.producers, to.producers = clients, clients
		pp := produceThroughput(plain.addr, o)
		sp := produceThroughput(sec.addr, to)
		pTotal += pp.records
		sTotal += sp.records
		rows = append(rows, tlsRow(fmt.Sprintf("produce, %d client(s)", clients), sp, pp, o))
	}
	pc := consumeThroughput(plain.addr, o, pTotal)
	sc := consumeThroughput(sec.addr, to, sTotal)
	rows = append(rows, tlsRow("consume", sc, pc, o))
	printTable([]string{"SASL_SSL (SCRAM-SHA-256)", "tls MB/s", "plaintext MB/s", "ratio"}, rows)
	return nil
}

func tlsRow(name string, s, p throughput, o options) []string {
	mb := func(t throughput) float64 { return t.perSec() * float64(o.recordSize) / 1e6 }
	return []string{name, fmt.Sprintf("%.1f", mb(s)), fmt.Sprintf("%.1f", mb(p)), fmt.Sprintf("%.2fx", s.perSec()/p.perSec())}
}

// selfSignedCert writes a self-signed certificate for 127.0.0.1 and its
// key under dir, and returns their paths and a pool trusting it.
func selfSignedCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shale-bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}
