package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests' TLS listeners and clients.
type CA struct {
	t    testing.TB
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Pool holds the CA's certificate: clients' RootCAs, listeners'
	// ClientCAs.
	Pool *x509.CertPool
	// PEM is the CA's certificate, PEM-encoded (for kcat's
	// ssl.ca.location).
	PEM []byte
}

// NewCA makes a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shale test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{t: t, cert: cert, key: key, Pool: pool, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue makes a certificate for subject, valid for the hosts (IP
// addresses or DNS names; none for a client's).
func (ca *CA) Issue(subject pkix.Name, hosts ...string) tls.Certificate {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ListenerTLS is a broker's TLS config on 127.0.0.1 (Config.TLS), asking
// clients for a certificate of the CA with clientAuth, and its config for
// dialing the other brokers (Config.PeerTLS), presenting the same
// certificate.
func (ca *CA) ListenerTLS(clientAuth tls.ClientAuthType) (listener, peer *tls.Config) {
	ca.t.Helper()
	cert := ca.Issue(pkix.Name{CommonName: "broker"}, "127.0.0.1", "localhost")
	listener = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.Pool, ClientAuth: clientAuth, MinVersion: tls.VersionTLS12}
	peer = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	return listener, peer
}

// ClientTLS is a client's TLS config trusting the CA, with a certificate
// for subject unless it is empty.
func (ca *CA) ClientTLS(subject pkix.Name) *tls.Config {
	ca.t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	if subject.String() != "" {
		cfg.Certificates = []tls.Certificate{ca.Issue(subject)}
	}
	return cfg
}

// WriteFiles writes the CA's certificate and a certificate and key for
// subject, PEM-encoded, under dir (for kcat: ssl.ca.location,
// ssl.certificate.location, ssl.key.location), and returns their paths.
func (ca *CA) WriteFiles(dir string, subject pkix.Name, hosts ...string) (caFile, certFile, keyFile string) {
	ca.t.Helper()
	cert := ca.Issue(subject, hosts...)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		ca.t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, data := range map[string][]byte{
		caFile:   ca.PEM,
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			ca.t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}
