package broker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// shortQuotaWindows measures rates over 3 samples of 500 ms: at 2
// connections a second, 2 at once are within the rate, and a third is
// held about half a second.
func shortQuotaWindows(c *broker.Config) {
	c.QuotaWindowNum = 3
	c.QuotaWindowSize = 500 * time.Millisecond
}

// setConnectionRates sets connection_creation_rate on ip entities, by
// address ("" for the default ip entity), in one AlterClientQuotas (its
// client's connections are open before the quotas apply).
func setConnectionRates(t *testing.T, b *brokertest.Broker, rates map[string]float64) {
	t.Helper()
	var entries []kadm.AlterClientQuotaEntry
	for ip, rate := range rates {
		var name *string
		if ip != "" {
			name = &ip
		}
		entries = append(entries, kadm.AlterClientQuotaEntry{
			Entity: []kadm.ClientQuotaEntityComponent{{Type: "ip", Name: name}},
			Ops:    []kadm.AlterClientQuotaOp{{Key: "connection_creation_rate", Value: rate}},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resps, err := b.Admin().AlterClientQuotas(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("AlterClientQuotas %v: %v %s", r.Entity, r.Err, r.ErrMessage)
		}
	}
}

// connOutcome is what became of a connection asked for ApiVersions: served,
// or closed unserved, and when (since the start given).
type connOutcome struct {
	served bool
	at     time.Duration
	err    error // neither: the read timed out
}

func (o connOutcome) String() string {
	switch {
	case o.err != nil:
		return "timed out"
	case o.served:
		return "served at " + o.at.Round(time.Millisecond).String()
	}
	return "closed at " + o.at.Round(time.Millisecond).String()
}

// dialFrom opens n connections to addr from the local address local (nil:
// any) at once, and returns them.
func dialFrom(t *testing.T, addr string, local net.IP, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(15 * time.Second))
		conns = append(conns, c)
	}
	return conns
}

// askApiVersions sends each connection an ApiVersions request and waits,
// for all at once, for the answer or the close.
func askApiVersions(conns []net.Conn, start time.Time) []connOutcome {
	out := make([]connOutcome, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("rate"))
			req := kmsg.NewPtrApiVersionsRequest()
			req.Version = 0
			c.Write(f.AppendRequest(nil, req, 1)) // a held connection takes it unread
			var size [4]byte
			_, err := io.ReadFull(c, size[:])
			out[i].at = time.Since(start)
			var ne net.Error
			switch {
			case err == nil:
				out[i].served = true
			case errors.As(err, &ne) && ne.Timeout():
				out[i].err = err
			}
		}()
	}
	wg.Wait()
	return out
}

// tally counts the served and the closed, failing on a timeout.
func tally(t *testing.T, outs []connOutcome) (served, closed int) {
	t.Helper()
	for i, o := range outs {
		switch {
		case o.err != nil:
			t.Fatalf("connection %d neither served nor closed: %v", i, o.err)
		case o.served:
			served++
		default:
			closed++
		}
	}
	return served, closed
}

// TestConnectionRateQuotaHoldsThenClosesConnectionsPastIt: with
// connection_creation_rate=2 on the default ip entity, of 10 connections
// opened at once the first are served and the rest are held unserved,
// then closed after the throttle (not at once, so a client reconnecting
// in a loop is slowed down) and counted; once the window has passed,
// connections are served again.
func TestConnectionRateQuotaHoldsThenClosesConnectionsPastIt(t *testing.T) {
	b := brokertest.Start(t, shortQuotaWindows)
	setConnectionRates(t, b, map[string]float64{"": 2})

	start := time.Now()
	outs := askApiVersions(dialFrom(t, b.Addr, nil, 10), start)
	served, closed := tally(t, outs)
	t.Logf("%d served, %d closed: %v", served, closed, outs)
	if served < 1 || closed < 5 {
		t.Fatalf("%d served, %d closed: want the first few served, the rest closed", served, closed)
	}
	for i, o := range outs {
		// The first connection recorded came after start; those past
		// the rate are held until it is half a second old or more.
		if !o.served && o.at < 400*time.Millisecond {
			t.Errorf("connection %d closed %v after the first was opened: want it held for the throttle first", i, o.at)
		}
	}
	if v, _ := gather(t, b.Registry).get("shale_connection_rate_throttled_total", "kind=ip"); v != float64(closed) {
		t.Errorf("shale_connection_rate_throttled_total{kind=ip} = %v, want %d", v, closed)
	}
	if v, _ := gather(t, b.Registry).get("shale_connections_refused_total", ""); v != 0 {
		t.Errorf("shale_connections_refused_total = %v, want 0 (max.connections refused none)", v)
	}

	// The connections closed were not recorded: once the window has
	// passed, the address is within its rate again.
	time.Sleep(1600 * time.Millisecond)
	outs = askApiVersions(dialFrom(t, b.Addr, nil, 2), time.Now())
	if served, _ := tally(t, outs); served != 2 {
		t.Fatalf("after the window, %d of 2 connections served", served)
	}
}

// TestConnectionRateQuotaOfAnAddressOverridesTheDefault: an address's own
// connection_creation_rate applies rather than the default ip entity's,
// which applies to the other addresses.
func TestConnectionRateQuotaOfAnAddressOverridesTheDefault(t *testing.T) {
	b := brokertest.Start(t, shortQuotaWindows)
	setConnectionRates(t, b, map[string]float64{"": 2, "127.0.0.1": 1000})

	outs := askApiVersions(dialFrom(t, b.Addr, nil, 10), time.Now())
	if served, closed := tally(t, outs); served != 10 {
		t.Fatalf("from 127.0.0.1 (its own quota 1000/s): %d served, %d closed, want all served", served, closed)
	}

	// Another loopback address (Linux routes 127.0.0.0/8) gets the
	// default; where there is none, 127.0.0.1 loses its own quota.
	other := net.IPv4(127, 0, 0, 2)
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: other}, Timeout: 5 * time.Second}).Dial("tcp", b.Addr); err != nil {
		t.Logf("no connection from %v (%v): checking the default from 127.0.0.1 without its own quota", other, err)
		adm := b.Admin()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		name := "127.0.0.1"
		if _, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{
			Entity: []kadm.ClientQuotaEntityComponent{{Type: "ip", Name: &name}},
			Ops:    []kadm.AlterClientQuotaOp{{Key: "connection_creation_rate", Remove: true}},
		}}); err != nil {
			t.Fatal(err)
		}
		other = nil
	} else {
		c.Close()
	}
	// The connections recorded so far age out.
	time.Sleep(1600 * time.Millisecond)
	outs = askApiVersions(dialFrom(t, b.Addr, other, 10), time.Now())
	served, closed := tally(t, outs)
	t.Logf("from %v: %d served, %d closed", other, served, closed)
	if served < 1 || closed < 5 {
		t.Fatalf("from %v (the default, 2/s): %d served, %d closed, want the first few served, the rest closed", other, served, closed)
	}
}

// TestConnectionRateQuotaHeldConnectionsEndWithClose: connections held for
// their throttle are closed when the broker closes, which waits for their
// goroutines (none left behind).
func TestConnectionRateQuotaHeldConnectionsEndWithClose(t *testing.T) {
	// At 1 a second over 2 samples of 1 s, the connections past the
	// first are held about a second.
	b := brokertest.Start(t, func(c *broker.Config) {
		c.QuotaWindowNum = 2
		c.QuotaWindowSize = time.Second
	})
	setConnectionRates(t, b, map[string]float64{"": 1})

	conns := dialFrom(t, b.Addr, nil, 6)
	// The first is served once it is accepted (the others with it).
	if outs := askApiVersions(conns[:1], time.Now()); !outs[0].served {
		t.Fatalf("the first connection was not served: %v", outs[0])
	}
	b.Stop()
	if n := goroutinesIn("broker.(*Broker).throttleConnIP"); n != 0 {
		t.Errorf("%d goroutines holding throttled connections left after Close", n)
	}
	outs := askApiVersions(conns[1:], time.Now())
	t.Logf("after Close: %v", outs)
	_, closed := tally(t, outs)
	if closed != len(conns)-1 {
		t.Errorf("%d of %d held connections closed", closed, len(conns)-1)
	}
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// TestMaxConnectionCreationRateDelaysAccepts: max.connection.creation.rate
// has the broker accept new connections late, not close them: 6
// connections at 2 a second are all served, over more than 1.5 s; and
// DescribeConfigs shows it.
func TestMaxConnectionCreationRateDelaysAccepts(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MaxConnectionCreationRate = 2
		c.QuotaWindowNum = 2
		c.QuotaWindowSize = 500 * time.Millisecond
	})
	start := time.Now()
	outs := askApiVersions(dialFrom(t, b.Addr, nil, 6), start)
	if served, closed := tally(t, outs); served != 6 {
		t.Fatalf("%d served, %d closed: want all served", served, closed)
	}
	var last time.Duration
	for _, o := range outs {
		last = max(last, o.at)
	}
	t.Logf("answered: %v", outs)
	if last < 1500*time.Millisecond {
		t.Errorf("6 connections at 2 a second all answered within %v", last)
	}
	if v, _ := gather(t, b.Registry).get("shale_connection_rate_throttled_total", "kind=broker"); v < 3 {
		t.Errorf("shale_connection_rate_throttled_total{kind=broker} = %v, want 3 or more", v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rcs, err := b.Admin().DescribeBrokerConfigs(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "max.connection.creation.rate" {
				found = true
				if v := c.MaybeValue(); v != "2" {
					t.Errorf("max.connection.creation.rate = %q, want 2", v)
				}
			}
		}
	}
	if !found {
		t.Error("DescribeConfigs does not show max.connection.creation.rate")
	}
}
