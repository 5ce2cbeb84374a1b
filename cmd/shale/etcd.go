package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/metadata"
)

// etcdFlags are the flags by which a command reaches the external etcd
// that holds a cluster's metadata, as etcdctl's do: the endpoints
// (--etcd), TLS (--etcd-tls-ca, --etcd-tls-cert, --etcd-tls-key) and an
// etcd user (--etcd-user, its password from SHALE_ETCD_PASSWORD).
// register adds them to a command, check reads and verifies them before
// anything is dialed, and dial connects with them.
type etcdFlags struct {
	endpoints              string
	tlsCA, tlsCert, tlsKey string
	user                   string
	// password is user's, from SHALE_ETCD_PASSWORD: never a flag, which
	// would show in ps.
	password string
	// eps and tls are what check builds: the endpoints, and the TLS
	// config (nil: plain TCP).
	eps []string
	tls *tls.Config
}

// etcdPasswordEnv holds the password of --etcd-user.
const etcdPasswordEnv = "SHALE_ETCD_PASSWORD"

// etcdDialTimeout bounds one attempt to connect to etcd (and, with
// --etcd-user, to authenticate).
const etcdDialTimeout = 5 * time.Second

func (f *etcdFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoints, "etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated: host:port, or https://host:port for TLS (host:port is TLS too with --etcd-tls-*)")
	fs.StringVar(&f.tlsCA, "etcd-tls-ca", "", "PEM CA certificates that verify etcd's server certificate (etcdctl's --cacert); given alone it turns TLS on (default: the system's CAs, with https:// endpoints or --etcd-tls-cert)")
	fs.StringVar(&f.tlsCert, "etcd-tls-cert", "", "PEM client certificate presented to etcd, with --etcd-tls-key (etcdctl's --cert), for an etcd run with --client-cert-auth; turns TLS on. With etcd's auth enabled and no --etcd-user, etcd takes its common name as the user")
	fs.StringVar(&f.tlsKey, "etcd-tls-key", "", "PEM private key of --etcd-tls-cert (etcdctl's --key)")
	fs.StringVar(&f.user, "etcd-user", "", "etcd user to authenticate as, for an etcd with auth enabled (etcdctl's --user), its password read from "+etcdPasswordEnv+" (never a flag); its roles need readwrite on the cluster's key prefix /NAME/")
}

// check refuses etcd flags the command cannot connect with, naming the
// flag, and builds the endpoints and the TLS config.
func (f *etcdFlags) check() error {
	eps, scheme, err := parseEtcdEndpoints(f.endpoints)
	if err != nil {
		return err
	}
	f.eps = eps
	cert, haveCert, err := loadKeyPairFlags("--etcd-tls-cert", f.tlsCert, "--etcd-tls-key", f.tlsKey)
	if err != nil {
		return err
	}
	tlsFlags := f.tlsCA != "" || haveCert
	switch {
	case scheme == "http" && tlsFlags:
		return fmt.Errorf("--etcd %q: http:// is plain TCP, but --etcd-tls-* ask for TLS: give https://HOST:PORT or HOST:PORT", f.endpoints)
	case scheme == "https" || tlsFlags:
		f.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if f.tlsCA != "" {
			if f.tls.RootCAs, err = loadCAPool("--etcd-tls-ca", f.tlsCA); err != nil {
				return err
			}
		}
		if haveCert {
			leaf := cert.Leaf
			if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
				return fmt.Errorf("--etcd-tls-cert %q: valid from %s to %s, not now", f.tlsCert, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
			}
			if !forUsage(leaf, x509.ExtKeyUsageClientAuth) {
				return fmt.Errorf("--etcd-tls-cert %q: not for client authentication (its extended key usage lacks clientAuth), so etcd would refuse it", f.tlsCert)
			}
			f.tls.Certificates = []tls.Certificate{cert}
		}
	}
	f.password = os.Getenv(etcdPasswordEnv)
	switch {
	case f.user != "" && f.password == "":
		return fmt.Errorf("--etcd-user %q: set its password in %s (there is no flag for it)", f.user, etcdPasswordEnv)
	case f.user == "" && f.password != "":
		return fmt.Errorf("%s is set but --etcd-user is not: give the etcd user it is the password of", etcdPasswordEnv)
	}
	return nil
}

// parseEtcdEndpoints splits --etcd: host:port, http://host:port or
// https://host:port each, not both http:// and https://; scheme is
// "https" or "http" when an endpoint has it, "" when none has one. The
// client dials host:port ones as the others, in TLS or not.
func parseEtcdEndpoints(list string) (eps []string, scheme string, err error) {
	for _, ep := range strings.Split(list, ",") {
		ep = strings.TrimSpace(ep)
		hostPort := ep
		if before, _, ok := strings.Cut(ep, "://"); ok {
			u, err := url.Parse(ep)
			if err != nil || (before != "http" && before != "https") || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
				return nil, "", fmt.Errorf("--etcd %q: %q is not host:port, http://host:port or https://host:port", list, ep)
			}
			if scheme != "" && scheme != before {
				return nil, "", fmt.Errorf("--etcd %q: mixes http:// and https:// endpoints (one connection is TLS or not for all)", list)
			}
			scheme, hostPort = before, u.Host
		}
		if host, port, err := net.SplitHostPort(hostPort); err != nil || host == "" || port == "" {
			return nil, "", fmt.Errorf("--etcd %q: %q is not host:port, http://host:port or https://host:port", list, ep)
		}
		eps = append(eps, ep)
	}
	return eps, scheme, nil
}

// clientConfig is the etcd client's configuration for the checked flags.
func (f *etcdFlags) clientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:   f.eps,
		DialTimeout: etcdDialTimeout,
		DialOptions: metadata.DialOptions(),
		TLS:         f.tls,
		Username:    f.user,
		Password:    f.password,
	}
}

// dial connects to etcd and reads how many keys prefix has, trying
// again until timeout while etcd does not answer (it may be starting with
// the brokers). clientv3.New does not connect (unless it authenticates a
// user), and the client waits out any connection failure, so without
// this a wrong CA, a refused certificate or a missing permission would
// show only as a broker that never starts: the error says what failed,
// naming the flag to look at, as soon as it is known.
func (f *etcdFlags) dial(ctx context.Context, prefix string, timeout time.Duration) (*clientv3.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cli *clientv3.Client
	fail := func(err error) (*clientv3.Client, error) {
		if cli != nil {
			cli.Close()
		}
		return nil, err
	}
	// Each read may take twice as long as the one before: an etcd slow
	// to answer (a loaded one checking a password: bcrypt) is still one
	// that answers.
	for attempt := etcdAttemptTimeout; ; attempt *= 2 {
		var err error
		if cli == nil {
			cli, err = clientv3.New(f.clientConfig())
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, attempt)
			_, err = cli.Get(actx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			cancel()
			if err == nil {
				return cli, nil
			}
		}
		if known := f.explain(prefix, err); known != nil {
			return fail(known)
		}
		refused, unreachable := f.probe(ctx)
		if refused != nil {
			return fail(refused)
		}
		if unreachable != nil {
			err = unreachable
		}
		select {
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fail(ctx.Err()) // stopped while starting
			}
			return fail(fmt.Errorf("etcd at %s: no answer within %s: %w", strings.Join(f.eps, ","), timeout, err))
		case <-time.After(etcdRetryWait):
		}
	}
}

// etcdAttemptTimeout bounds the first read of dial (each next one may
// take twice as long), etcdRetryWait is the pause between two.
const (
	etcdAttemptTimeout = 3 * time.Second
	etcdRetryWait      = 500 * time.Millisecond
)

// explain turns an error of etcd's that trying again cannot mend into
// one that says what to change; nil for the others.
func (f *etcdFlags) explain(prefix string, err error) error {
	at := fmt.Sprintf("etcd at %s", strings.Join(f.eps, ","))
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("%s refused --etcd-user %q with the password in %s: %w", at, f.user, etcdPasswordEnv, err)
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("%s requires authentication: give --etcd-user (its password in %s), or a client certificate (--etcd-tls-cert) whose common name is an etcd user: %w", at, etcdPasswordEnv, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		who := "this client"
		switch {
		case f.user != "":
			who = fmt.Sprintf("--etcd-user %q", f.user)
		case f.tls != nil && len(f.tls.Certificates) > 0:
			who = fmt.Sprintf("the etcd user %q (the common name of --etcd-tls-cert)", f.tls.Certificates[0].Leaf.Subject.CommonName)
		}
		return fmt.Errorf("%s: %s may not read the cluster's keys %s: grant one of its roles readwrite on them (etcdctl role grant-permission ROLE --prefix=true readwrite %s): %w", at, who, prefix, prefix, err)
	}
	return nil
}

// probe connects to each endpoint as the etcd client does and returns
// refused, what makes etcd refuse the client for good: a TLS handshake
// that fails (etcd's certificate not verified by --etcd-tls-ca, or not
// for its host), a client certificate etcd refuses or asks for, or TLS
// spoken by an etcd the flags say is plain. unreachable is the last
// endpoint that could not be reached (etcd may be starting).
func (f *etcdFlags) probe(ctx context.Context) (refused, unreachable error) {
	for _, ep := range f.eps {
		hostPort := ep
		if _, rest, ok := strings.Cut(ep, "://"); ok {
			hostPort = strings.TrimSuffix(rest, "/")
		}
		host, _, _ := net.SplitHostPort(hostPort)
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", hostPort)
		if err != nil {
			unreachable = err
			continue
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.tls != nil {
			cfg = f.tls.Clone()
		} else {
			// Only to learn whether etcd speaks TLS: the probe
			// sends nothing over it.
			cfg.InsecureSkipVerify = true
		}
		cfg.ServerName = host
		tc := tls.Client(conn, cfg)
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		err = tc.HandshakeContext(ctx)
		var readErr error
		if err == nil {
			// With TLS 1.3 the server checks the client's
			// certificate after the client's handshake is
			// done, and says so in an alert read next.
			tc.SetReadDeadline(time.Now().Add(time.Second))
			_, readErr = tc.Read(make([]byte, 1))
		}
		tc.Close()
		if f.tls == nil {
			if err == nil || isTLSAlert(err) {
				return fmt.Errorf("etcd at %s serves TLS, and the broker dialed it in plain TCP: give --etcd-tls-ca, the CA of etcd's certificate (and --etcd-tls-cert and --etcd-tls-key if etcd requires client certificates), or an https:// endpoint", ep), nil
			}
			continue
		}
		if err == nil && isTLSAlert(readErr) {
			err = readErr
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			unreachable = fmt.Errorf("TLS handshake with %s: %w", ep, err)
			continue
		}
		alert := isTLSAlert(err)
		var unknown x509.UnknownAuthorityError
		var name x509.HostnameError
		switch {
		case errors.As(err, &unknown):
			how := "the system's CAs (no --etcd-tls-ca)"
			if f.tlsCA != "" {
				how = fmt.Sprintf("--etcd-tls-ca %q", f.tlsCA)
			}
			return fmt.Errorf("etcd at %s: its certificate is not verified by %s: give --etcd-tls-ca the CA that signed it: %w", ep, how, err), nil
		case errors.As(err, &name):
			return fmt.Errorf("etcd at %s: its certificate does not name %s, the host of --etcd: %w", ep, host, err), nil
		case alert && len(cfg.Certificates) == 0:
			return fmt.Errorf("etcd at %s refused the TLS connection, as an etcd that requires client certificates (--client-cert-auth) does: give --etcd-tls-cert and --etcd-tls-key: %w", ep, err), nil
		case alert:
			return fmt.Errorf("etcd at %s refused the client certificate of --etcd-tls-cert %q: etcd verifies it with its --trusted-ca-file: %w", ep, f.tlsCert, err), nil
		}
		return fmt.Errorf("etcd at %s: TLS handshake: %w", ep, err), nil
	}
	return nil, unreachable
}

// isTLSAlert says whether err is an alert the TLS peer sent.
func isTLSAlert(err error) bool {
	var remote *net.OpError
	return errors.As(err, &remote) && remote.Op == "remote error"
}
