package broker

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shale-log/shale/broker/clientquota"
)

// Connection creation rates (Kafka's KIP-612, as its ConnectionQuotas
// applies them), measured as the other client quotas are
// (clientquota.Rate over quota.window.num samples of
// quota.window.size.seconds):
//
//   - max.connection.creation.rate (Config.MaxConnectionCreationRate),
//     broker-wide: every connection accepted is recorded, and past the
//     rate the acceptor waits out the throttle before it takes the
//     connection on (and accepts no other meanwhile: new connections wait
//     in the listen backlog). Brokers' own connections count too: they
//     cannot be told from clients' before SASL, as in Kafka.
//   - connection_creation_rate, the client quota of ip entities
//     (kafka-configs --entity-type ips, AlterClientQuotas; an address's
//     own quota, or else the default ip entity's): a connection that would
//     take its address past the quota is taken back from its rate and the
//     broker-wide one ("not recorded"), held unserved for the throttle,
//     then closed; so a client reconnecting in a loop is slowed down, not
//     sped up. The acceptor goes on meanwhile.
//
// A throttle is at most one window, Kafka's bound for connection quotas.
// An address's quota is applied to the connections that max.connections
// and max.connections.per.ip admit (Kafka records it before the count
// per address), and a held connection counts toward those limits while
// it is held, since it holds a descriptor (Kafka does not count it); it
// stops counting when it is closed.

// Kinds of connection throttles, as the metrics label them.
const (
	connThrottleBroker = "broker" // max.connection.creation.rate: accepted late
	connThrottleIP     = "ip"     // connection_creation_rate: closed unserved
)

// connectionCreationRate is max.connection.creation.rate as Kafka shows
// it: its default, Int.MaxValue, for no bound.
func (c *Config) connectionCreationRate() int {
	if c.MaxConnectionCreationRate <= 0 {
		return math.MaxInt32
	}
	return c.MaxConnectionCreationRate
}

// connRateLimiter measures connections against the connection creation
// rates.
type connRateLimiter struct {
	samples int
	window  time.Duration
	// brokerBound is max.connection.creation.rate (0: no bound).
	brokerBound float64
	// quotas are the latest metadata's connection_creation_rate quotas
	// (nil: none, and no address is measured).
	quotas atomic.Pointer[ipConnQuotas]

	mu struct {
		sync.Mutex
		// broker is the broker-wide rate (nil without brokerBound).
		broker *clientquota.Rate
		// ips are the rates of addresses with a quota, swept of idle
		// ones at most once a window.
		ips   map[netip.Addr]*ipConnRate
		swept time.Time
	}

	throttled    *prometheus.CounterVec
	throttleSecs *prometheus.CounterVec
}

// ipConnQuotas are the connection_creation_rate quotas by address (in
// canonIP form), and the default ip entity's (0: none).
type ipConnQuotas struct {
	byIP map[netip.Addr]float64
	def  float64
}

type ipConnRate struct {
	rate *clientquota.Rate
	used time.Time
}

func newConnRateLimiter(samples int, window time.Duration, brokerBound int, reg prometheus.Registerer) *connRateLimiter {
	l := &connRateLimiter{
		samples: samples, window: window,
		brokerBound: float64(max(brokerBound, 0)),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_connection_rate_throttled_total",
			Help: "Connections throttled for their creation rate (KIP-612), by kind: ip (connection_creation_rate of the client address: held unserved for the throttle, then closed), broker (max.connection.creation.rate: accepted after the throttle)."}, []string{"kind"}),
		throttleSecs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_connection_rate_throttle_seconds_total",
			Help: "The throttle time of those connections, summed."}, []string{"kind"}),
	}
	l.mu.ips = map[netip.Addr]*ipConnRate{}
	if l.brokerBound > 0 {
		l.mu.broker = clientquota.NewRate(samples, window)
	}
	for _, kind := range []string{connThrottleBroker, connThrottleIP} {
		l.throttled.WithLabelValues(kind)
		l.throttleSecs.WithLabelValues(kind)
	}
	if reg != nil {
		reg.MustRegister(l.throttled, l.throttleSecs)
	}
	return l
}

// canonIP is the form addresses are keyed by: IPv4-mapped IPv6 addresses
// as IPv4, without a zone.
func canonIP(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// apply takes the connection_creation_rate quotas of a new metadata view.
func (l *connRateLimiter) apply(view *metaView) {
	var q *ipConnQuotas
	for e, vals := range view.clientQuotas {
		v, ok := vals[clientquota.ConnectionCreationRate]
		if !ok || !e.IP.Set || v <= 0 {
			continue
		}
		if q == nil {
			q = &ipConnQuotas{byIP: map[netip.Addr]float64{}}
		}
		if e.IP.Default {
			q.def = v
			continue
		}
		addr, err := netip.ParseAddr(e.IP.Name)
		if err != nil {
			continue // clientquota.Entity refuses these
		}
		q.byIP[canonIP(addr)] = v
	}
	l.quotas.Store(q)
}

// acceptDelay records a connection accepted at now in the broker-wide
// rate, and returns how long the acceptor waits before taking it on (0:
// within max.connection.creation.rate, or no bound).
func (l *connRateLimiter) acceptDelay(now time.Time) time.Duration {
	if l.brokerBound <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.broker.Record(now, 1)
	return min(l.mu.broker.Throttle(now, l.brokerBound), l.window)
}

// admitIP records a connection from addr at now in the rate of its
// connection_creation_rate quota. Within the quota, or with none, it
// returns 0. Past it, the connection is taken back from that rate and the
// broker-wide one, and it returns how long to hold the connection before
// closing it, and the quota.
func (l *connRateLimiter) admitIP(addr netip.Addr, now time.Time) (time.Duration, float64) {
	q := l.quotas.Load()
	if q == nil {
		return 0, 0
	}
	addr = canonIP(addr)
	bound, ok := q.byIP[addr]
	if !ok {
		bound = q.def
	}
	if bound <= 0 {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.mu.ips[addr]
	if r == nil {
		l.sweepLocked(now)
		r = &ipConnRate{rate: clientquota.NewRate(l.samples, l.window)}
		l.mu.ips[addr] = r
	}
	r.used = now
	r.rate.Record(now, 1)
	d := min(r.rate.Throttle(now, bound), l.window)
	if d > 0 {
		r.rate.Record(now, -1)
		if l.mu.broker != nil {
			l.mu.broker.Record(now, -1)
		}
	}
	return d, bound
}

// sweepLocked forgets, at most once per window, the rates of addresses
// idle for longer than the samples span: their next connections start
// afresh, as they would have anyway. Requires mu.
func (l *connRateLimiter) sweepLocked(now time.Time) {
	if now.Sub(l.mu.swept) < l.window {
		return
	}
	l.mu.swept = now
	idle := time.Duration(l.samples) * l.window
	for a, r := range l.mu.ips {
		if now.Sub(r.used) > idle {
			delete(l.mu.ips, a)
		}
	}
}

// counted records a throttle in the metrics.
func (l *connRateLimiter) counted(kind string, d time.Duration) {
	l.throttled.WithLabelValues(kind).Inc()
	l.throttleSecs.WithLabelValues(kind).Add(d.Seconds())
}

// waitAcceptRate waits out the max.connection.creation.rate throttle of a
// connection just accepted. It reports false when the broker closes
// meanwhile.
func (b *Broker) waitAcceptRate() bool {
	d := b.connRates.acceptDelay(time.Now())
	if d <= 0 {
		return true
	}
	b.connRates.counted(connThrottleBroker, d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// throttleConnIP applies the connection_creation_rate quota of ip (the
// address admitConn counted nc under) to nc. Past it, it holds nc
// unserved for the throttle, without holding up the acceptor, then closes
// it and uncounts it (at once if the broker closes), and reports true.
func (b *Broker) throttleConnIP(nc net.Conn, ip string) bool {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	d, quota := b.connRates.admitIP(addr, time.Now())
	if d <= 0 {
		return false
	}
	// Counted before the close, so that a client that sees its
	// connection closed finds it counted.
	b.connRates.counted(connThrottleIP, d)
	b.limitLog.log(b.log, fmt.Sprintf("throttled a connection: connection_creation_rate (%v/s) reached for %s; closing it unserved after the throttle", quota, ip),
		"remote", nc.RemoteAddr().String(), "throttle", d)
	if !b.goBackground(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-b.ctx.Done():
		}
		nc.Close()
		b.releaseConn(ip)
	}) {
		nc.Close()
		b.releaseConn(ip)
	}
	return true
}
