package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestCertReloaderServesTheFilesAsLastRead: the listener's config and the
// one the broker dials its peers with follow the PEM files: a broker that
// presents the certificate of a new CA, and requires one of it from its
// peers, is dialed by one whose files were replaced the same way, each
// verifying the other with the new CA; files that fail the checks leave
// the ones in use, with a warning.
func TestCertReloaderServesTheFilesAsLastRead(t *testing.T) {
	t.Setenv("SHALE_TEST_TLS_RELOAD_EVERY", "1ms")
	oldCA, newCA := brokertest.NewCA(t), brokertest.NewCA(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := oldCA.WriteFiles(dir, pkix.Name{CommonName: "broker"}, "127.0.0.1")
	f := &brokerFlags{tlsCert: certFile, tlsKey: keyFile, tlsCA: caFile, tlsClientAuth: "required"}
	server, _, err := f.listenerTLS()
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	if err := f.checkTLS("127.0.0.1", slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	// handshake dials the listener as a peer does and returns the serial
	// of the certificate it got.
	handshake := func() (*big.Int, error) {
		time.Sleep(5 * time.Millisecond) // past the reload interval
		cfg := f.certs.peerConfig()
		cfg.ServerName = "127.0.0.1"
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client's certificate
		// arrives with its first read.
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "EOF") {
			return nil, err
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	serial := func(file string) *big.Int { return parsePEMCert(t, readFile(t, file)).SerialNumber }
	if got, err := handshake(); err != nil || got.Cmp(serial(certFile)) != 0 {
		t.Fatalf("handshake with the first files: %v, %v", got, err)
	}

	_, newCert, newKey := newCA.WriteFiles(t.TempDir(), pkix.Name{CommonName: "broker"}, "127.0.0.1")
	replaceFile(t, caFile, newCA.PEM)
	replaceFile(t, keyFile, readFile(t, newKey))
	replaceFile(t, certFile, readFile(t, newCert))
	want := serial(newCert)
	if got, err := handshake(); err != nil || got.Cmp(want) != 0 {
		t.Fatalf("handshake with the new CA's files on both sides: %v, %v (want %v)", got, err, want)
	}
	if !strings.Contains(logged.String(), "new connections use them") {
		t.Fatalf("the reload was not logged:\n%s", logged.String())
	}

	for _, bad := range []struct{ name, cert, want string }{
		{"garbage", "not a certificate\n", "failed to find any PEM data"},
		{"a certificate that is not the key's", string(oldCA.PEM), "private key does not match"},
	} {
		replaceFile(t, certFile, []byte(bad.cert))
		if got, err := handshake(); err != nil || got.Cmp(want) != 0 {
			t.Fatalf("%s: handshake: %v, %v (want the certificate in use, %v)", bad.name, got, err, want)
		}
		if !strings.Contains(logged.String(), bad.want) {
			t.Fatalf("%s: no warning saying %q:\n%s", bad.name, bad.want, logged.String())
		}
	}
}
