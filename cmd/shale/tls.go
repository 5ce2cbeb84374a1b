package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// TLS from PEM files, for the broker's listener (--tls-cert, --tls-key,
// --tls-ca, --tls-client-auth of shale broker and shale dev), for the
// client commands (--tls, --tls-ca, --tls-cert, --tls-key) and for the
// broker's etcd client (--etcd-tls-*, etcd.go). Errors name the flag and
// the file.

// tlsClientAuths maps --tls-client-auth, Kafka's ssl.client.auth values,
// to Go's.
var tlsClientAuths = map[string]tls.ClientAuthType{
	"none":      tls.NoClientCert,
	"requested": tls.VerifyClientCertIfGiven,
	"required":  tls.RequireAndVerifyClientCert,
}

// loadKeyPair reads a PEM certificate (chain) and its key, from the files
// the flags --tls-cert and --tls-key named; both or neither must be set
// (neither: ok false).
func loadKeyPair(certFile, keyFile string) (cert tls.Certificate, ok bool, err error) {
	return loadKeyPairFlags("--tls-cert", certFile, "--tls-key", keyFile)
}

// loadKeyPairFlags is loadKeyPair for the flags certFlag and keyFlag.
func loadKeyPairFlags(certFlag, certFile, keyFlag, keyFile string) (cert tls.Certificate, ok bool, err error) {
	switch {
	case certFile == "" && keyFile == "":
		return cert, false, nil
	case keyFile == "":
		return cert, false, fmt.Errorf("%s %q: give %s, its private key, too", certFlag, certFile, keyFlag)
	case certFile == "":
		return cert, false, fmt.Errorf("%s %q: give %s, its certificate, too", keyFlag, keyFile, certFlag)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return cert, false, fmt.Errorf("%s: %w", certFlag, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return cert, false, fmt.Errorf("%s: %w", keyFlag, err)
	}
	if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return cert, false, fmt.Errorf("%s %q, %s %q: %w", certFlag, certFile, keyFlag, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, false, fmt.Errorf("%s %q: %w", certFlag, certFile, err)
		}
	}
	return cert, true, nil
}

// loadCAPool reads the PEM certificates of file, which flag named.
func loadCAPool(flag, file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s %q: no PEM certificate in it", flag, file)
	}
	return pool, nil
}

// listenerTLS builds the broker's TLS configs from its flags: listener
// (broker.Config.TLS) and peer (broker.Config.PeerTLS, the same
// certificate presented to other brokers, which ask for one when they
// require client certificates too); both nil without --tls-cert and
// --tls-key.
func (f *brokerFlags) listenerTLS() (listener, peer *tls.Config, err error) {
	name := strings.ToLower(strings.TrimSpace(f.tlsClientAuth))
	auth, ok := tlsClientAuths[name]
	if !ok {
		return nil, nil, fmt.Errorf("--tls-client-auth %q: want none, requested or required", f.tlsClientAuth)
	}
	f.tlsClientAuth = name
	cert, ok, err := loadKeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		// Either would say the listener is TLS when it is not.
		if f.tlsCA != "" {
			return nil, nil, fmt.Errorf("--tls-ca %q: only with --tls-cert and --tls-key (a TLS listener)", f.tlsCA)
		}
		if auth != tls.NoClientCert {
			return nil, nil, fmt.Errorf("--tls-client-auth %s: only with --tls-cert and --tls-key (a TLS listener)", f.tlsClientAuth)
		}
		return nil, nil, nil
	}
	var roots *x509.CertPool // nil: the system's
	if f.tlsCA != "" {
		if roots, err = loadCAPool("--tls-ca", f.tlsCA); err != nil {
			return nil, nil, err
		}
	}
	if auth != tls.NoClientCert {
		if roots == nil {
			return nil, nil, fmt.Errorf("--tls-client-auth %s: give --tls-ca, the CA certificates that clients' certificates are verified with", f.tlsClientAuth)
		}
		if !forUsage(cert.Leaf, x509.ExtKeyUsageClientAuth) {
			return nil, nil, fmt.Errorf("--tls-cert %q: with --tls-client-auth %s the other brokers ask this broker for a certificate too, and this one is not for client authentication (its extended key usage lacks clientAuth)", f.tlsCert, f.tlsClientAuth)
		}
	}
	f.certs = newCertReloader(f.tlsCert, f.tlsKey, f.tlsCA, auth, cert, roots, &tls.Config{ClientAuth: auth, MinVersion: tls.VersionTLS12})
	return f.certs.serverConfig(), f.certs.peerConfig(), nil
}

// forUsage says whether cert may be used for usage: its extended key
// usage names it or any, or is absent.
func forUsage(cert *x509.Certificate, usage x509.ExtKeyUsage) bool {
	return len(cert.ExtKeyUsage) == 0 || slices.Contains(cert.ExtKeyUsage, usage) || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// checkTLS refuses a listener certificate (of check) that clients and
// other brokers would refuse (checkListenerCert), and has the files read
// again when they change (certReloader), with the same checks, logging to
// log.
func (f *brokerFlags) checkTLS(host string, log *slog.Logger) error {
	if f.certs == nil {
		return nil
	}
	cert, roots, _ := f.certs.current()
	if err := checkListenerCert(*cert, roots, host, f.tlsCert, f.tlsCA); err != nil {
		return err
	}
	f.certs.watch(host, log)
	return nil
}

// checkListenerCert refuses a listener certificate that clients and other
// brokers would refuse: expired or not yet valid, not naming host (the
// broker's advertised host, which they verify it against), or, with CA
// certificates (roots, from --tls-ca), not signed by one of them (the
// other brokers verify it with theirs).
func checkListenerCert(cert tls.Certificate, roots *x509.CertPool, host, certFile, caFile string) error {
	leaf := cert.Leaf
	now := time.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("--tls-cert %q: valid from %s to %s, not now", certFile, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("--tls-cert %q: clients and other brokers verify it against the advertised host %q (--advertised-addr, else the listener's): %w", certFile, host, err)
	}
	if roots == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("--tls-cert %q: not signed by a CA of --tls-ca %q, with which the other brokers verify it: %w", certFile, caFile, err)
	}
	if err != nil {
		return fmt.Errorf("--tls-cert %q: %w", certFile, err)
	}
	return nil
}

// readClientTLS is the TLS config the client flags ask for: nil (plain
// TCP) unless --tls, --tls-ca, --tls-cert or --tls-key is set.
func readClientTLS(tlsOn bool, caFile, certFile, keyFile string) (*tls.Config, error) {
	if !tlsOn && caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCAPool("--tls-ca", caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	cert, ok, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if ok {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
