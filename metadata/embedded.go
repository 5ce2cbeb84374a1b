package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// Limits of the embedded etcd's requests. A write beyond them fails with
// ErrTooLarge and changes nothing.
const (
	MaxTxnOps       = 16384
	MaxRequestBytes = 8 << 20
)

// EmbeddedConfig configures an etcd server run inside the process.
type EmbeddedConfig struct {
	// Dir holds etcd's data; starting again on it keeps the data.
	Dir string
	// Name is the member name (default "shale").
	Name string
	// ClientAddr is the host:port etcd serves clients on (without
	// authentication). Empty: no client listener at all; the process
	// talks to the server through an in-process client.
	ClientAddr string
	// PeerAddr is the host:port of a cluster member's peer listener
	// (empty picks a free loopback port). A single-member cluster has
	// no peer listener.
	PeerAddr string
	// InitialCluster, for members of a multi-member cluster:
	// name=http://peer,... (empty: a single-member cluster).
	InitialCluster string
	// Logger receives etcd's errors; nil discards them.
	Logger *zap.Logger
	// Slog, when Logger is nil, receives etcd's warnings and errors
	// (SlogZap): an etcd that exits says why, with the free space of Dir.
	Slog *slog.Logger
	// MaxTxnOps and MaxRequestBytes are etcd's --max-txn-ops and
	// --max-request-bytes (0: the package's MaxTxnOps and
	// MaxRequestBytes). Tests set etcd's defaults (128, 1.5 MiB) to run
	// as against a stock etcd.
	MaxTxnOps       uint
	MaxRequestBytes uint
	// BcryptCost is etcd's --bcrypt-cost, what a password of its auth
	// costs to check (0: etcd's default, 10). Tests of etcd users set
	// the least, 4: checked by a server built with the race detector,
	// each of the default's takes seconds.
	BcryptCost uint
}

// Embedded is a running in-process etcd server with a client connected to
// it.
type Embedded struct {
	etcd   *embed.Etcd
	client *clientv3.Client
	peer   string
}

// StartEmbedded starts an etcd server and waits until it serves clients.
// A single member elects itself within a few hundred milliseconds.
func StartEmbedded(ctx context.Context, c EmbeddedConfig) (*Embedded, error) {
	if c.Dir == "" {
		return nil, fmt.Errorf("metadata: embedded etcd needs a data directory")
	}
	if c.Name == "" {
		c.Name = "shale"
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if c.InitialCluster == "" {
		// One member: nothing to talk to but this process, so no
		// listener unless a client address was chosen.
		return startEmbedded(ctx, c, c.ClientAddr, "")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		client, peer := c.ClientAddr, c.PeerAddr
		if client == "" {
			client = freeLoopbackAddr()
		}
		if peer == "" {
			peer = freeLoopbackAddr()
		}
		e, err := startEmbedded(ctx, c, client, peer)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if c.ClientAddr != "" && c.PeerAddr != "" || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// singleMemberPeerURL is the peer URL a single member advertises. Nothing
// listens on it: a member alone never dials a peer.
var singleMemberPeerURL = url.URL{Scheme: "http", Host: "127.0.0.1:1"}

func startEmbedded(ctx context.Context, c EmbeddedConfig, clientAddr, peerAddr string) (*Embedded, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = nil, nil
	var cu url.URL
	if clientAddr != "" {
		cu = url.URL{Scheme: "http", Host: clientAddr}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	}
	pu := singleMemberPeerURL
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{pu}
	if peerAddr != "" {
		pu = url.URL{Scheme: "http", Host: peerAddr}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	}
	if c.InitialCluster != "" {
		cfg.InitialCluster = c.InitialCluster
		cfg.TickMs, cfg.ElectionMs = 50, 500
	} else {
		cfg.InitialCluster = c.Name + "=" + pu.String()
		// One member: elect quickly.
		cfg.TickMs, cfg.ElectionMs = 10, 100
	}
	cfg.SnapshotCount = 10000
	// Room beyond what the broker writes in one transaction (topics are
	// written in chunks within etcd's defaults, see create.go).
	cfg.MaxTxnOps = MaxTxnOps
	cfg.MaxRequestBytes = MaxRequestBytes
	if c.MaxTxnOps > 0 {
		cfg.MaxTxnOps = c.MaxTxnOps
	}
	if c.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = c.MaxRequestBytes
	}
	if c.BcryptCost > 0 {
		cfg.BcryptCost = c.BcryptCost
	}
	// Keep an hour of history for watchers, then compact.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	lg := c.Logger
	if lg == nil && c.Slog != nil {
		lg = SlogZap(c.Slog, c.Dir)
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.LogLevel = "warn"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata: starting embedded etcd: %w", err)
	}
	wait := 30 * time.Second
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("metadata: embedded etcd: %w", err)
	case <-time.After(wait):
		e.Close()
		return nil, fmt.Errorf("metadata: embedded etcd not ready after %s", wait)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	if clientAddr == "" {
		return &Embedded{etcd: e, client: v3client.New(e.Server), peer: pu.String()}, nil
	}
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{cu.String()},
		DialTimeout: 5 * time.Second,
		DialOptions: DialOptions(),
		Logger:      zap.NewNop(),
		// The client may send what the server accepts, plus framing.
		MaxCallSendMsgSize: MaxRequestBytes + 64<<10,
	})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("metadata: etcd client: %w", err)
	}
	return &Embedded{etcd: e, client: cl, peer: pu.String()}, nil
}

// Client is a client connected to this server. Close closes it.
func (e *Embedded) Client() *clientv3.Client { return e.client }

// Endpoints are the server's client URLs (none when it serves only this
// process).
func (e *Embedded) Endpoints() []string {
	var out []string
	for _, u := range e.etcd.Config().AdvertiseClientUrls {
		out = append(out, u.String())
	}
	return out
}

// PeerURL is the server's peer URL.
func (e *Embedded) PeerURL() string { return e.peer }

// Close stops the client and the server.
func (e *Embedded) Close() error {
	e.client.Close()
	e.etcd.Close()
	return nil
}

// StartEmbeddedCluster starts n members in the directories dirs (one each)
// and waits until all serve. Tests of the replicated cluster use it.
func StartEmbeddedCluster(ctx context.Context, dirs []string) ([]*Embedded, error) {
	peers := make([]string, len(dirs))
	clients := make([]string, len(dirs))
	var initial []string
	for i := range dirs {
		peers[i], clients[i] = freeLoopbackAddr(), freeLoopbackAddr()
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i, peers[i]))
	}
	type result struct {
		i   int
		e   *Embedded
		err error
	}
	ch := make(chan result, len(dirs))
	for i, dir := range dirs {
		go func() {
			e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: dir, Name: fmt.Sprintf("m%d", i), ClientAddr: clients[i], PeerAddr: peers[i], InitialCluster: strings.Join(initial, ",")})
			ch <- result{i, e, err}
		}()
	}
	out := make([]*Embedded, len(dirs))
	var firstErr error
	for range dirs {
		r := <-ch
		out[r.i] = r.e
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
	}
	if firstErr != nil {
		for _, e := range out {
			if e != nil {
				e.Close()
			}
		}
		return nil, firstErr
	}
	return out, nil
}

func freeLoopbackAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}
