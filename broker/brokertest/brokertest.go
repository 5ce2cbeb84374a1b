// Package brokertest starts real Shale brokers inside a test: an embedded
// etcd and a broker on a loopback port, with data under t.TempDir(). Tests
// talk to them with real Kafka clients.
package brokertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/metadata"
)

// Broker is a running single-node Shale.
type Broker struct {
	t      testing.TB
	Dir    string
	Addr   string // Kafka listener host:port
	B      *broker.Broker
	etcd   *metadata.Embedded
	ln     net.Listener
	served chan struct{}
	cfg    func(*broker.Config)
	fs     localseg.FS
	// client is how the clients Client makes reach the broker.
	client clientSetup
	// Registry holds the broker's metrics (a new one at each start).
	Registry *prometheus.Registry
	log      *slog.Logger // nil: logger()
}

// The test brokers' embedded etcd has the limits of an etcd run without
// flags (--max-txn-ops 128, --max-request-bytes 1.5 MiB), so that every
// metadata write is checked to fit an operator's stock etcd.
const (
	StockEtcdMaxTxnOps       = 128
	StockEtcdMaxRequestBytes = 1536 << 10
)

// Option adjusts the broker's config.
type Option func(*broker.Config)

// Start starts a single-node Shale (embedded etcd plus one broker) for the
// test and stops it at cleanup.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	return StartOn(t, t.TempDir(), nil, opts...)
}

// StartOn is Start with the data under dir and the partition logs on fs
// (nil: the operating system's), such as a fault-injecting or
// crash-simulating FS over LogDir(dir).
func StartOn(t testing.TB, dir string, fs localseg.FS, opts ...Option) *Broker {
	t.Helper()
	b := &Broker{t: t, Dir: dir, fs: fs, client: setupFor(opts...), cfg: func(c *broker.Config) {
		for _, o := range opts {
			o(c)
		}
	}}
	b.start(t, "127.0.0.1:0")
	t.Cleanup(b.Stop)
	return b
}

// StartWithLog is Start with the broker's log records going to h.
func StartWithLog(t testing.TB, h slog.Handler, opts ...Option) *Broker {
	t.Helper()
	b := &Broker{t: t, Dir: t.TempDir(), log: slog.New(h), cfg: func(c *broker.Config) {
		for _, o := range opts {
			o(c)
		}
	}}
	b.start(t, "127.0.0.1:0")
	t.Cleanup(b.Stop)
	return b
}

// LogDir is where a broker started on the data dir dir keeps its
// partition logs.
func LogDir(dir string) string { return filepath.Join(dir, "log") }

func logger() *slog.Logger {
	if os.Getenv("SHALE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (b *Broker) start(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(b.Dir, "etcd"), MaxTxnOps: StockEtcdMaxTxnOps, MaxRequestBytes: StockEtcdMaxRequestBytes})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	host, port := splitHostPort(t, ln.Addr().String())
	cfg := broker.Config{
		DataDir:          LogDir(b.Dir),
		AdvertisedHost:   host,
		AdvertisedPort:   port,
		AutoCreateTopics: true,
	}
	b.cfg(&cfg)
	log := b.log
	if log == nil {
		log = logger()
	}
	reg := prometheus.NewRegistry()
	br, err := broker.Start(ctx, broker.Options{Config: cfg, Etcd: e.Client(), Logger: log, FS: b.fs, Registry: reg})
	if err != nil {
		ln.Close()
		e.Close()
		t.Fatal(err)
	}
	b.etcd, b.ln, b.B, b.Addr, b.Registry = e, ln, br, ln.Addr().String(), reg
	b.served = make(chan struct{})
	go func() {
		defer close(b.served)
		br.Serve(ln)
	}()
}

// Stop shuts the broker and its etcd down cleanly. Safe to call twice.
func (b *Broker) Stop() {
	if b.B == nil {
		return
	}
	b.ln.Close()
	<-b.served
	closeBounded(b.t.Name(), func() { b.B.Close() })
	b.etcd.Close()
	b.B = nil
}

// Restart stops the broker cleanly and starts it again on the same data
// directory and port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.RestartOn(b.fs)
}

// RestartOn stops the broker (as cleanly as its filesystem lets it) and
// starts it again on the same directories and port, with its logs on fs.
func (b *Broker) RestartOn(fs localseg.FS) {
	b.t.Helper()
	addr := b.Addr
	b.Stop()
	b.fs = fs
	b.start(b.t, addr)
}

// Client returns a franz-go client seeded with the broker, closed at
// cleanup.
func (b *Broker) Client(opts ...kgo.Opt) *kgo.Client {
	b.t.Helper()
	cl, err := kgo.NewClient(b.client.opts(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, opts...)...)...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(cl.Close)
	return cl
}

// Etcd is a client of the broker's embedded etcd (tests write metadata
// with it directly). It is valid until the broker stops or restarts.
func (b *Broker) Etcd() *clientv3.Client { return b.etcd.Client() }

// Admin returns a kadm client over a new client.
func (b *Broker) Admin() *kadm.Client {
	return kadm.NewClient(b.Client())
}

func splitHostPort(t testing.TB, addr string) (string, int32) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil {
		t.Fatal(err)
	}
	return host, int32(port)
}
