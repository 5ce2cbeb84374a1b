package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// TLS on the Kafka listener (Kafka's SSL and SASL_SSL listeners). With
// Config.TLS set, every connection is TLS, clients' and brokers' alike:
// the handshake comes first, on the connection's own goroutine and within
// tlsHandshakeTimeout, so a client that stalls it holds a connection slot
// (bounded by max.connections) and nothing else. Responses are then
// encrypted in user space: fetches lose sendfile (the writer copies file
// ranges through the TLS conn), which is the price Kafka pays too.
//
// A client certificate (Config.TLS.ClientAuth, Kafka's ssl.client.auth)
// that verifies makes the connection's user the certificate's subject,
// as Kafka's default principal builder does ("CN=alice,O=example"),
// unless the listener requires SASL: then the user is the one SASL
// authenticates, and the certificate only admits the connection.
// Brokers dial each other with Config.PeerTLS.

// tlsHandshakeTimeout bounds a TLS handshake, either side.
const tlsHandshakeTimeout = 10 * time.Second

// peerTLS is the TLS config for dialing other brokers: nil when the
// listener is plain TCP.
func (b *Broker) peerTLS() *tls.Config {
	if b.cfg.TLS == nil {
		return nil
	}
	if b.cfg.PeerTLSNow != nil {
		return b.cfg.PeerTLSNow()
	}
	if b.cfg.PeerTLS != nil {
		return b.cfg.PeerTLS
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// serverTLS makes nc a TLS connection, its handshake done: nil and an
// error when the client does not complete one in time.
func (b *Broker) serverTLS(nc net.Conn) (*tls.Conn, error) {
	tc := tls.Server(nc, b.cfg.TLS)
	ctx, cancel := context.WithTimeout(b.ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// clientTLS makes nc, dialed to addr, a TLS connection, its handshake
// done; the peer's certificate must name addr's host (unless cfg names a
// server of its own).
func clientTLS(ctx context.Context, nc net.Conn, cfg *tls.Config, addr string) (net.Conn, error) {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			nc.Close()
			return nil, err
		}
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

// certificateUser is the user a verified client certificate makes of a
// TLS connection ("" when there is none).
func certificateUser(nc net.Conn) string {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.String()
}

// checkTLSConfig checks the listener's TLS config.
func (c *Config) checkTLSConfig() error {
	if c.TLS == nil {
		return nil
	}
	if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
		return fmt.Errorf("broker: the TLS listener needs a certificate")
	}
	if c.TLS.ClientAuth >= tls.VerifyClientCertIfGiven && c.TLS.ClientCAs == nil {
		// Go would verify client certificates against the system's
		// roots: any public CA's customer would be a user.
		return fmt.Errorf("broker: verifying client certificates needs the CAs that issue them")
	}
	return nil
}
