package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker/sasl"
)

// Client commands (topic, group, cluster, tier, quota, user, acl, produce,
// consume, bench) share one way to reach the cluster: addClientFlags on
// the command (or its parent) registers --brokers, --timeout and the SASL
// and TLS flags, newClient builds a franz-go client from them, and cliError turns
// what the client returns into one line.

// addClientFlags registers the connection flags on cmd, for it and its
// subcommands: --brokers or -b, as kcat has it (SHALE_BROKERS),
// --timeout (SHALE_TIMEOUT), and --sasl-mechanism and --sasl-user
// (SHALE_SASL_MECHANISM, SHALE_SASL_USER), whose password is read from
// SHALE_SASL_PASSWORD only: a flag would show in ps, and --tls, --tls-ca,
// --tls-cert and --tls-key (SHALE_TLS, SHALE_TLS_CA, ...). They are
// persistent flags of the client commands only: shale broker and shale
// dev have a --tls-cert, --tls-key and --tls-ca of their own.
func addClientFlags(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringSliceP("brokers", "b", []string{"127.0.0.1:9092"}, "Kafka bootstrap brokers, host:port, comma-separated (env SHALE_BROKERS)")
	fs.Duration("timeout", 10*time.Second, "how long a command waits for the cluster to answer (env SHALE_TIMEOUT)")
	fs.String("sasl-mechanism", "", "authenticate with this SASL mechanism: "+saslMechanismNames+" (env SHALE_SASL_MECHANISM; default: none), as --sasl-user with the password in "+saslPasswordEnv)
	fs.String("sasl-user", "", "the user to authenticate as with --sasl-mechanism (env SHALE_SASL_USER)")
	fs.Bool("tls", false, "connect over TLS, verifying the brokers' certificates with the system's CAs unless --tls-ca is given (env SHALE_TLS)")
	fs.String("tls-ca", "", "PEM CA certificates that verify the brokers' certificates; implies --tls (env SHALE_TLS_CA)")
	fs.String("tls-cert", "", "PEM client certificate, for brokers that ask for one (--tls-client-auth), with --tls-key; implies --tls (env SHALE_TLS_CERT)")
	fs.String("tls-key", "", "PEM private key of --tls-cert (env SHALE_TLS_KEY)")
}

// saslPasswordEnv holds the password of --sasl-user; there is no flag
// for it.
const saslPasswordEnv = "SHALE_SASL_PASSWORD"

// saslMechanismNames are the SASL mechanisms Shale serves, for messages.
const saslMechanismNames = sasl.Plain + ", " + sasl.ScramSHA256 + " or " + sasl.ScramSHA512

// saslMechanism is v, trimmed and in upper case, when it names a SASL
// mechanism Shale serves; the error names flag.
func saslMechanism(flag, v string) (string, error) {
	mech := strings.ToUpper(strings.TrimSpace(v))
	if mech != sasl.Plain && !sasl.ScramMechanism(mech) {
		return "", fmt.Errorf("%s %q: want %s", flag, v, saslMechanismNames)
	}
	return mech, nil
}

// clientConfig is what the connection flags say, the environment filled in
// for flags not given.
type clientConfig struct {
	brokers []string
	timeout time.Duration
	// auth authenticates the client as saslUser by saslMechanism; nil:
	// it does not.
	auth                    kgo.Opt
	saslMechanism, saslUser string
	// tls is the config to dial the brokers with; nil: plain TCP.
	tls *tls.Config
}

func readClientConfig(cmd *cobra.Command) (clientConfig, error) {
	var c clientConfig
	fs := cmd.Flags()
	for _, name := range []string{"brokers", "timeout", "sasl-mechanism", "sasl-user", "tls", "tls-ca", "tls-cert", "tls-key"} {
		f := fs.Lookup(name)
		if f == nil {
			return c, fmt.Errorf("%s: no --%s flag (addClientFlags missing)", cmd.CommandPath(), name)
		}
		if v, ok := os.LookupEnv(envName(name)); ok && !f.Changed {
			// A slice flag appends after its first Set; start afresh.
			if err := fs.Set(name, v); err != nil {
				return c, fmt.Errorf("%s=%q: %w", envName(name), v, err)
			}
		}
	}
	c.brokers, _ = fs.GetStringSlice("brokers")
	c.timeout, _ = fs.GetDuration("timeout")
	for _, b := range c.brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return c, fmt.Errorf("--brokers %q: want host:port", b)
		}
	}
	if len(c.brokers) == 0 {
		return c, errors.New("--brokers: no broker given")
	}
	if c.timeout <= 0 {
		return c, errors.New("--timeout must be positive")
	}
	var err error
	if c.auth, c.saslMechanism, c.saslUser, err = readClientAuth(fs); err != nil {
		return c, err
	}
	tlsOn, _ := fs.GetBool("tls")
	ca, _ := fs.GetString("tls-ca")
	cert, _ := fs.GetString("tls-cert")
	key, _ := fs.GetString("tls-key")
	c.tls, err = readClientTLS(tlsOn, ca, cert, key)
	return c, err
}

// readClientAuth is the SASL option the flags and the environment ask
// for, with its mechanism and user: nil without --sasl-mechanism, an
// error when the mechanism is unknown or its user or password missing.
func readClientAuth(fs *pflag.FlagSet) (opt kgo.Opt, mech, user string, err error) {
	mechFlag, _ := fs.GetString("sasl-mechanism")
	user, _ = fs.GetString("sasl-user")
	if mechFlag == "" {
		if user != "" {
			return nil, "", "", fmt.Errorf("--sasl-user %q: give --sasl-mechanism (%s) too", user, saslMechanismNames)
		}
		return nil, "", "", nil
	}
	if mech, err = saslMechanism("--sasl-mechanism", mechFlag); err != nil {
		return nil, "", "", err
	}
	if user == "" {
		return nil, "", "", fmt.Errorf("--sasl-mechanism %s: give --sasl-user (or SHALE_SASL_USER)", mech)
	}
	pass := os.Getenv(saslPasswordEnv)
	if pass == "" {
		return nil, "", "", fmt.Errorf("--sasl-user %q: set the password in %s (there is no flag for it)", user, saslPasswordEnv)
	}
	switch mech {
	case sasl.ScramSHA256:
		opt = kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
	case sasl.ScramSHA512:
		opt = kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())
	default:
		opt = kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())
	}
	return opt, mech, user, nil
}

// cliClient is a franz-go client for one CLI command, with the last error
// met while connecting (kgo retries dials until the context ends; the
// dial error says more than the deadline).
type cliClient struct {
	*kgo.Client
	cfg clientConfig

	mu      sync.Mutex
	dialErr error
	// closedUnread: a broker closed a connection before answering its
	// first request after ApiVersions, as a broker requiring SASL does to
	// a client that does not authenticate.
	closedUnread bool
	// closedAtVersions: a broker closed a connection unanswered at its
	// first request, ApiVersions, as a TLS listener does to a plain TCP
	// client.
	closedAtVersions bool
}

func (c *cliClient) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.dialErr = fmt.Errorf("%s: %w", net.JoinHostPort(meta.Host, fmt.Sprint(meta.Port)), err)
	}
}

func (c *cliClient) OnBrokerRead(_ kgo.BrokerMetadata, key int16, bytesRead int, _, _ time.Duration, err error) {
	if bytesRead == 0 && errors.Is(err, io.EOF) {
		c.mu.Lock()
		if key == int16(kmsg.ApiVersions) {
			c.closedAtVersions = true
		} else {
			c.closedUnread = true
		}
		c.mu.Unlock()
	}
}

// newClient connects to the cluster named by cmd's connection flags. The
// caller closes it.
func newClient(cmd *cobra.Command, opts ...kgo.Opt) (*cliClient, error) {
	cfg, err := readClientConfig(cmd)
	if err != nil {
		return nil, err
	}
	c := &cliClient{cfg: cfg}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ClientID("shale-cli"),
		kgo.DialTimeout(min(cfg.timeout, 10*time.Second)),
		kgo.RetryTimeout(cfg.timeout),
		kgo.WithHooks(c),
	}
	if cfg.auth != nil {
		base = append(base, cfg.auth)
	}
	if cfg.tls != nil {
		// No client command sets kgo.Dialer, which excludes this.
		base = append(base, kgo.DialTLSConfig(cfg.tls))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	c.Client = cl
	return c, nil
}

// admin returns a kadm client over c.
func (c *cliClient) admin() *kadm.Client { return kadm.NewClient(c.Client) }

// context bounds one command's requests by --timeout.
func (c *cliClient) context(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(orBackground(parent), c.cfg.timeout)
}

// explain turns a deadline or a failed dial into one line that names the
// brokers and the last connection error.
func (c *cliClient) explain(err error) error {
	if err == nil {
		return nil
	}
	brokers := strings.Join(c.cfg.brokers, ",")
	c.mu.Lock()
	dialErr, closedUnread, closedAtVersions := c.dialErr, c.closedUnread, c.closedAtVersions
	c.mu.Unlock()
	var eof *kgo.ErrFirstReadEOF
	if errors.As(err, &eof) {
		switch {
		case c.cfg.tls != nil && errors.Is(dialErr, io.EOF):
			// A plain TCP listener reads the handshake as a
			// request it cannot parse.
			return fmt.Errorf("cluster at %s: %w", brokers, &messageErr{err: err,
				msg: "the broker closed the connection in the TLS handshake, as a plain TCP listener does (leave out --tls, --tls-ca, --tls-cert and --tls-key if it is one)"})
		case c.cfg.tls == nil && closedAtVersions:
			return fmt.Errorf("cluster at %s: %w", brokers, &messageErr{err: err,
				msg: "the broker closed the connection at the first request, as a TLS listener does to a plain TCP client (connect with --tls, and --tls-ca for the CA that signed the brokers' certificates)"})
		case c.cfg.auth == nil:
			// The cluster requires SASL, most likely (franz-go's
			// guess).
			return fmt.Errorf("cluster at %s: %w (authenticate with --sasl-mechanism, --sasl-user and %s)", brokers, err, saslPasswordEnv)
		}
	}
	if tlsErr := explainTLS(err, c.cfg.tls); tlsErr != nil {
		return fmt.Errorf("cluster at %s: %w", brokers, tlsErr)
	}
	if c.cfg.auth != nil && errors.Is(err, kerr.SaslAuthenticationFailed) {
		// Not what the command was doing: it was never let in.
		return fmt.Errorf("cluster at %s: authenticating as %q with %s: %w", brokers, c.cfg.saslUser, c.cfg.saslMechanism, refusal(err, kerr.SaslAuthenticationFailed))
	}
	unreachable := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed)
	var netErr net.Error
	if errors.As(err, &netErr) {
		unreachable = true
	}
	if !unreachable {
		return err
	}
	if dialErr != nil {
		if tlsErr := explainTLS(dialErr, c.cfg.tls); tlsErr != nil {
			dialErr = tlsErr
		}
		return fmt.Errorf("cannot reach the cluster at %s within %s: %w", brokers, c.cfg.timeout, dialErr)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		if closedAtVersions && c.cfg.tls == nil {
			return fmt.Errorf("no answer from the cluster at %s within %s: the brokers closed the connections at the first request, as a TLS listener does to a plain TCP client (connect with --tls, and --tls-ca for the CA that signed the brokers' certificates)", brokers, c.cfg.timeout)
		}
		if closedUnread && c.cfg.auth == nil {
			return fmt.Errorf("no answer from the cluster at %s within %s: the brokers closed the connections unanswered, as they do when SASL is required (authenticate with --sasl-mechanism, --sasl-user and %s)", brokers, c.cfg.timeout, saslPasswordEnv)
		}
		return fmt.Errorf("no answer from the cluster at %s within %s", brokers, c.cfg.timeout)
	}
	return fmt.Errorf("cluster at %s: %w", brokers, err)
}

// explainTLS is err with a hint on what to give when it is a TLS
// handshake's failure that the TLS flags can mend (cfg: theirs), else
// nil.
func explainTLS(err error, cfg *tls.Config) error {
	if err == nil || cfg == nil {
		return nil
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("%w (give --tls-ca, the CA certificates that signed the brokers')", err)
	}
	var host x509.HostnameError
	if errors.As(err, &host) {
		return fmt.Errorf("%w (the brokers' certificates must name the hosts of --brokers and the addresses they advertise)", err)
	}
	// The broker's alert, after the handshake in TLS 1.3.
	if len(cfg.Certificates) == 0 && strings.Contains(err.Error(), "tls: certificate required") {
		return fmt.Errorf("%w (the brokers require a client certificate: give --tls-cert and --tls-key)", err)
	}
	return nil
}

// refusal is the error in err's chain that ke starts, franz-go's with the
// broker's message after ke's (ke itself when there is none).
func refusal(err error, ke *kerr.Error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasPrefix(e.Error(), ke.Message) {
			return e
		}
	}
	return ke
}

// kafkaErr is err (a Kafka error such as TOPIC_ALREADY_EXISTS) for one
// named resource, with the broker's message in place of the error's
// generic description when it sent one:
// `topic "x": TOPIC_ALREADY_EXISTS: Topic with this name already exists.`
func kafkaErr(kind, name string, err error, brokerMsg string) error {
	if err == nil {
		return nil
	}
	var ke *kerr.Error
	if errors.As(err, &ke) && brokerMsg != "" {
		return fmt.Errorf("%s %q: %w", kind, name, &messageErr{err: ke, msg: ke.Message + ": " + brokerMsg})
	}
	return fmt.Errorf("%s %q: %w", kind, name, err)
}

// messageErr is an error with another text that still matches its cause.
type messageErr struct {
	err error
	msg string
}

func (e *messageErr) Error() string { return e.msg }
func (e *messageErr) Unwrap() error { return e.err }

// runAdmin runs fn with an admin client of cmd's cluster and a context
// bounded by --timeout, and explains connection failures.
func runAdmin(cmd *cobra.Command, fn func(ctx context.Context, adm *kadm.Client, cl *cliClient) error) error {
	cl, err := newClient(cmd)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := cl.context(cmd.Context())
	defer cancel()
	return cl.explain(fn(ctx, cl.admin(), cl))
}

// retryRetriable calls fn again while it fails with a retriable Kafka
// error (the coordinator of a new cluster's first group is still being
// made, say), until ctx ends.
func retryRetriable(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !kerr.IsRetriable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// listedOffsets runs an offset listing, again while a partition answers
// with a retriable error, until ctx ends: a new leader answers
// OFFSET_NOT_AVAILABLE until its high watermark reaches its epoch's
// start, a tiered partition's leader a retriable error until it has read
// its manifest, and neither is the command's to report.
func listedOffsets(ctx context.Context, list func() (kadm.ListedOffsets, error)) (listed kadm.ListedOffsets, err error) {
	err = retryRetriable(ctx, func() error {
		if listed, err = list(); err == nil {
			err = listed.Error()
		}
		return err
	})
	return listed, err
}
