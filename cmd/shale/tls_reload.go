package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// The listener's certificate, its key and the CA certificates are read
// again when their files change (cert-manager, Vault or an operator
// replacing them before the certificate expires), without a restart: a
// handshake, client's or with another broker, looks at the files' times
// and sizes at most every tlsReloadEvery and reads them again when they
// changed. New files are taken only if they pass the checks the broker
// starts with (the pair matches, valid now, naming the advertised host,
// signed by a CA of the new --tls-ca, for client authentication too when
// --tls-client-auth asks for client certificates); otherwise the ones in
// use stay, with a warning, until the files change again. Connections
// open keep the certificate they began with.

// tlsReloadEvery is how often a handshake looks at the files
// (SHALE_TEST_TLS_RELOAD_EVERY in the process tests).
const tlsReloadEvery = 10 * time.Second

// certReloader serves the listener's certificate and CA certificates as
// their files last read well.
type certReloader struct {
	certFile, keyFile, caFile string
	clientAuth                tls.ClientAuthType
	every                     time.Duration

	mu sync.Mutex
	// host is the advertised host new certificates must name ("" until
	// the broker knows it); log gets the reloads (nil until then).
	host string
	log  *slog.Logger
	// next is when the files are looked at again; seen their stamps when
	// last read (or refused).
	next  time.Time
	seen  string
	cert  *tls.Certificate
	roots *x509.CertPool // nil: the system's
	// server is the listener's config with cert and roots.
	server *tls.Config
	base   *tls.Config
}

// newCertReloader starts with the certificate and CA certificates read
// at start; base is the listener's config without them.
func newCertReloader(certFile, keyFile, caFile string, auth tls.ClientAuthType, cert tls.Certificate, roots *x509.CertPool, base *tls.Config) *certReloader {
	every := tlsReloadEvery
	if v, err := time.ParseDuration(os.Getenv("SHALE_TEST_TLS_RELOAD_EVERY")); err == nil && v > 0 {
		every = v
	}
	r := &certReloader{certFile: certFile, keyFile: keyFile, caFile: caFile, clientAuth: auth, every: every, base: base}
	r.seen = r.stamps()
	r.next = time.Now().Add(every)
	r.use(&cert, roots)
	return r
}

// watch sets the host new certificates must name and the logger of the
// reloads.
func (r *certReloader) watch(host string, log *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.host, r.log = host, log
}

func (r *certReloader) use(cert *tls.Certificate, roots *x509.CertPool) {
	r.cert, r.roots = cert, roots
	s := r.base.Clone()
	s.Certificates, s.ClientCAs = []tls.Certificate{*cert}, roots
	r.server = s
}

// stamps are the files' modification times and sizes (a file that cannot
// be read is stamped with the error).
func (r *certReloader) stamps() string {
	var out string
	for _, name := range []string{r.certFile, r.keyFile, r.caFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			out += err.Error() + ";"
			continue
		}
		out += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return out
}

// current returns the certificate, CA certificates and listener config in
// use, reading the files again first when they are due and changed.
func (r *certReloader) current() (*tls.Certificate, *x509.CertPool, *tls.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Before(r.next) {
		return r.cert, r.roots, r.server
	}
	r.next = now.Add(r.every)
	stamp := r.stamps()
	if stamp == r.seen {
		return r.cert, r.roots, r.server
	}
	r.seen = stamp
	cert, roots, err := r.load()
	if err != nil {
		if r.log != nil {
			r.log.Warn("the listener's TLS files changed and cannot be used: the certificate in use stays until they change again", "err", err)
		}
		return r.cert, r.roots, r.server
	}
	r.use(cert, roots)
	if r.log != nil {
		r.log.Info("the listener's TLS files changed: new connections use them", "subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
	}
	return r.cert, r.roots, r.server
}

// load reads and checks the files.
func (r *certReloader) load() (*tls.Certificate, *x509.CertPool, error) {
	cert, _, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, nil, err
	}
	var roots *x509.CertPool
	if r.caFile != "" {
		if roots, err = loadCAPool("--tls-ca", r.caFile); err != nil {
			return nil, nil, err
		}
	}
	if r.clientAuth != tls.NoClientCert && !forUsage(cert.Leaf, x509.ExtKeyUsageClientAuth) {
		return nil, nil, fmt.Errorf("--tls-cert %q: not for client authentication (its extended key usage lacks clientAuth), which the other brokers ask of it", r.certFile)
	}
	if r.host != "" {
		if err := checkListenerCert(cert, roots, r.host, r.certFile, r.caFile); err != nil {
			return nil, nil, err
		}
	}
	return &cert, roots, nil
}

// serverConfig is the listener's tls.Config: its GetConfigForClient
// serves each handshake the certificate and CA certificates in use.
func (r *certReloader) serverConfig() *tls.Config {
	c := r.server.Clone()
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		_, _, s := r.current()
		return s, nil
	}
	return c
}

// peerConfig is how the broker dials the others, at each dial
// (broker.Config.PeerTLSNow): with the certificate in use, verifying
// theirs against the CA certificates in use.
func (r *certReloader) peerConfig() *tls.Config {
	cert, roots, _ := r.current()
	return &tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}
}
