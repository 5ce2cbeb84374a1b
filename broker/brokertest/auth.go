package brokertest

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
)

// ClientAuth is how the test clients authenticate to brokers configured
// by opts: as the bootstrap SASL user, by the first of the brokers'
// mechanisms, when the brokers require SASL (Config.SASLMechanisms) and
// name one (Config.SASLBootstrapUser); not at all otherwise.
func ClientAuth(opts ...Option) []kgo.Opt {
	var cfg broker.Config
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.SASLMechanisms) == 0 || cfg.SASLBootstrapUser == "" {
		return nil
	}
	user, pass := cfg.SASLBootstrapUser, cfg.SASLBootstrapPassword
	switch cfg.SASLMechanisms[0] {
	case "SCRAM-SHA-256":
		return []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())}
	case "SCRAM-SHA-512":
		return []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())}
	}
	return []kgo.Opt{kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())}
}

// withAuth is opts after auth, which they may override.
func withAuth(auth []kgo.Opt, opts ...kgo.Opt) []kgo.Opt {
	return append(slices.Clip(auth), opts...)
}
