package brokertest

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
)

// clientSetup is how test clients reach brokers: the SASL they
// authenticate with and the TLS they dial with (none of either: plain).
type clientSetup struct {
	sasl []kgo.Opt
	tls  *tls.Config
}

// setupFor is the client setup for brokers configured by opts: as the
// bootstrap SASL user, by the first of the brokers' mechanisms, when they
// require SASL (Config.SASLMechanisms) and name one
// (Config.SASLBootstrapUser); over TLS as the brokers dial each other
// (Config.PeerTLS) when their listener is TLS.
func setupFor(opts ...Option) clientSetup {
	var cfg broker.Config
	for _, o := range opts {
		o(&cfg)
	}
	var s clientSetup
	if cfg.TLS != nil {
		s.tls = &tls.Config{}
		if cfg.PeerTLS != nil {
			s.tls = cfg.PeerTLS.Clone()
		}
	}
	if len(cfg.SASLMechanisms) == 0 || cfg.SASLBootstrapUser == "" {
		return s
	}
	user, pass := cfg.SASLBootstrapUser, cfg.SASLBootstrapPassword
	switch cfg.SASLMechanisms[0] {
	case "SCRAM-SHA-256":
		s.sasl = []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())}
	case "SCRAM-SHA-512":
		s.sasl = []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())}
	default:
		s.sasl = []kgo.Opt{kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())}
	}
	return s
}

// ClientAuth is the client options by which tests' clients reach brokers
// configured by opts (setupFor): Broker.Client and Cluster.Client use it.
func ClientAuth(opts ...Option) []kgo.Opt { return setupFor(opts...).opts() }

// opts are the setup's client options, followed by more, which may
// override them.
func (s clientSetup) opts(more ...kgo.Opt) []kgo.Opt {
	out := append([]kgo.Opt(nil), s.sasl...)
	if s.tls != nil {
		out = append(out, kgo.DialTLSConfig(s.tls.Clone()))
	}
	return append(out, more...)
}

// pinned are the setup's client options for a client whose every
// connection goes to addr.
func (s clientSetup) pinned(addr string, more ...kgo.Opt) []kgo.Opt {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		if s.tls != nil {
			d := tls.Dialer{Config: s.tls.Clone()}
			return d.DialContext(ctx, network, addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return append(append([]kgo.Opt{kgo.Dialer(dial)}, s.sasl...), more...)
}
