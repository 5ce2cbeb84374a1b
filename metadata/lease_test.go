package metadata

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// renewalSpy sees every lease renewal a client sends and can hold one
// back, standing in for one slow round trip to etcd.
type renewalSpy struct {
	mu    sync.Mutex
	sends []time.Time
	// holdNth > 0 holds the holdNth renewal's send for hold.
	holdNth int
	hold    time.Duration
}

type spiedStream struct {
	grpc.ClientStream
	spy *renewalSpy
}

func (s spiedStream) SendMsg(m any) error {
	s.spy.mu.Lock()
	s.spy.sends = append(s.spy.sends, time.Now())
	held := s.spy.holdNth > 0 && len(s.spy.sends) == s.spy.holdNth
	s.spy.mu.Unlock()
	if held {
		time.Sleep(s.spy.hold)
	}
	return s.ClientStream.SendMsg(m)
}

// mostWithin is the most renewals sent within any span of d.
func (s *renewalSpy) mostWithin(d time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most := 0
	for i, from := range s.sends {
		n := 0
		for _, at := range s.sends[i:] {
			if at.Sub(from) >= d {
				break
			}
			n++
		}
		most = max(most, n)
	}
	return most
}

func (s *renewalSpy) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sends)
}

// spiedClient is a client of a fresh etcd whose lease renewals spy sees.
func spiedClient(t *testing.T, spy *renewalSpy) *Store {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, err := StartEmbedded(ctxT(t), EmbeddedConfig{Dir: t.TempDir(), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	intercept := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
			return cs, err
		}
		return spiedStream{cs, spy}, nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 5 * time.Second,
		DialOptions: append(DialOptions(), grpc.WithChainStreamInterceptor(intercept))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return NewStore(cli, "")
}

// A registration's lease is renewed several times per TTL: etcd's own
// keep-alive renewed a 1 s lease every 500 ms to 1 s (two renewals at most
// within any TTL), so one late renewal let it expire. Ours renews it
// renewEvery (6) times per TTL: the test waits for a TTL that holds at
// least five renewals. It waits for one, within seconds, rather than
// bounding the median gap: on a loaded machine (the race detector, other
// packages' tests on two cores) the process is not run for a while now
// and then, and the gaps spread out past any bound meant for the
// schedule.
func TestRegistrationRenewsSeveralTimesPerTTL(t *testing.T) {
	spy := &renewalSpy{}
	s := spiedClient(t, spy)
	const ttl, want = time.Second, 5
	reg, err := s.RegisterBroker(ctxT(t), Broker{ID: 1, Host: "h", Port: 1}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n := spy.mostWithin(ttl)
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("at most %d renewals within one %s TTL (of %d sent), want %d", n, ttl, spy.count(), want)
		}
	}
}

// One renewal held back for most of the TTL (a slow round trip) neither
// loses the registration nor lets etcd expire it: the renewals after it
// do not wait for it.
func TestRegistrationSurvivesOneSlowRenewal(t *testing.T) {
	const ttl = time.Second
	spy := &renewalSpy{holdNth: 3, hold: ttl * 8 / 10}
	s := spiedClient(t, spy)
	ctx := ctxT(t)
	reg, err := s.RegisterBroker(ctx, Broker{ID: 1, Host: "h", Port: 1}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	select {
	case <-reg.Done():
		t.Fatalf("the registration was lost after one renewal was held for %s", spy.hold)
	case <-time.After(3 * ttl):
	}
	bs, err := s.Brokers(ctx)
	if err != nil || len(bs) != 1 {
		t.Fatalf("registered brokers %v (%v): the lease expired", bs, err)
	}
}

// The controller's lease is renewed like a registration's: one renewal
// held back for most of the TTL neither ends the controller's role nor
// lets etcd expire its candidacy. etcd's session keep-alive renewed a 1 s
// lease a third of the TTL after the last answer, one request at a time,
// and ended the session when no answer came within the TTL.
func TestControllerSurvivesOneSlowRenewal(t *testing.T) {
	const ttl = time.Second
	spy := &renewalSpy{holdNth: 3, hold: ttl * 8 / 10}
	s := spiedClient(t, spy)
	ctx := ctxT(t)
	lead, err := s.Campaign(ctx, 7, ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer lead.Resign(ctx)
	select {
	case <-lead.Done():
		t.Fatalf("the controller role was lost after one renewal was held for %s", spy.hold)
	case <-time.After(3 * ttl):
	}
	if id, err := s.Controller(ctx); err != nil || id != 7 {
		t.Fatalf("controller %d (%v) after one slow renewal, want 7: the lease expired", id, err)
	}
	resp, err := lead.Txn(ctx).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("a write guarded by the candidacy failed (%v): its key is gone", err)
	}
	// Renewed like a registration's: a TTL that holds five renewals
	// shows up (see TestRegistrationRenewsSeveralTimesPerTTL).
	for deadline := time.Now().Add(30 * time.Second); spy.mostWithin(ttl) < 5; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("at most %d renewals within one %s TTL (of %d sent), want several per TTL", spy.mostWithin(ttl), ttl, spy.count())
		}
	}
}
