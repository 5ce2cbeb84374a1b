package metadata

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Renewals of a registration's lease. etcd's client renews a kept-alive
// lease a third of its TTL after the last answer, on a loop that looks
// every 500 ms, one request at a time on one stream that etcd answers in
// order: with a 1 s lease it renewed every 500 ms to 1 s, and one renewal
// answered a few hundred milliseconds late (a slow disk under etcd, a
// stalled connection, a paused process) let the lease expire while the
// broker was alive. A registration renews on its own clock instead:
// renewStreams streams, each renewing once per renewStreams/renewEvery of
// the TTL, in turn, so that the lease is renewed renewEvery times per TTL
// and one slow answer holds up only its own stream. The streams are kept
// open (an etcd shutting down serves open streams while it drains, but
// refuses new ones). A renewal that finds no connection makes the client
// connect at once (reconnectNow) rather than wait out gRPC's reconnect
// backoff, grown while etcd was away: etcd gives a lease its TTL again
// when it restarts, and a broker that sent nothing within that TTL lost
// its registration although it was alive and etcd was back.
const (
	renewEvery   = 6 // renewals per TTL
	renewStreams = 3
	minRenewGap  = 20 * time.Millisecond
)

// Registration is a broker's live registration, held by an etcd lease.
type Registration struct {
	cli   *clientv3.Client
	lease clientv3.LeaseID
	ttl   time.Duration // as granted by etcd
	rev   int64         // the revision that wrote the registered key (0: none)
	// provenUntil (unix nanoseconds) is when the lease may expire at the
	// latest as far as this process knows: the send time of the newest
	// renewal etcd answered, plus the TTL.
	provenUntil atomic.Int64

	ctx       context.Context // ends when the registration is closed
	cancel    context.CancelFunc
	done      chan struct{}
	lostOnce  sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// grantRegistration takes a lease of ttl (at least a second) within ctx
// and starts renewing it.
func (s *Store) grantRegistration(ctx context.Context, ttl time.Duration) (*Registration, error) {
	secs := int64(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	gctx, cancel := withDeadline(ctx)
	defer cancel()
	sent := time.Now()
	lease, err := s.cli.Grant(gctx, secs)
	if err != nil {
		return nil, err
	}
	r := &Registration{cli: s.cli, lease: lease.ID, ttl: time.Duration(lease.TTL) * time.Second, done: make(chan struct{})}
	r.provenUntil.Store(sent.Add(r.ttl).UnixNano())
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.keepAlive()
	return r, nil
}

// keepAlive renews the lease every TTL/renewEvery, each stream in turn,
// until the registration is closed or etcd says the lease is gone. While
// etcd cannot be reached it goes on trying: an etcd restarted within the
// TTL keeps the lease.
func (r *Registration) keepAlive() {
	defer r.wg.Done()
	if r.cli.ActiveConnection() == nil {
		// A client inside the etcd process (dev mode) has no
		// connection to open streams on, and no network to be slow.
		r.keepAliveInProcess()
		return
	}
	gap := r.ttl / renewEvery
	if gap < minRenewGap {
		gap = minRenewGap
	}
	for i := 0; i < renewStreams; i++ {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.renewOn(time.Duration(i)*gap, renewStreams*gap)
		}()
	}
}

// renewOn keeps one stream renewing the lease every period, starting
// after offset.
func (r *Registration) renewOn(offset, period time.Duration) {
	var stream pb.Lease_LeaseKeepAliveClient
	cancel := func() {}
	defer func() { cancel() }()
	t := time.NewTimer(offset)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.done:
			return
		case <-t.C:
		}
		t.Reset(period)
		if stream == nil {
			var ctx context.Context
			ctx, cancel = context.WithCancel(clientv3.WithRequireLeader(r.ctx))
			var err error
			if stream, err = r.openStream(ctx); err != nil {
				cancel()
				stream = nil
				reconnectNow(r.cli)
				continue
			}
		}
		sent := time.Now()
		// An answer later than the TTL is no use: drop the stream and
		// open another at the next turn.
		late := time.AfterFunc(r.ttl, cancel)
		ttl, err := renewOnce(stream, r.lease)
		late.Stop()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			r.lostOnce.Do(func() { close(r.done) })
			return
		case err != nil:
			cancel()
			stream = nil
			reconnectNow(r.cli)
		default:
			r.proven(sent.Add(time.Duration(ttl) * time.Second))
		}
	}
}

// keepAliveInProcess renews the lease with the client's own keep-alive.
func (r *Registration) keepAliveInProcess() {
	ch, err := r.cli.KeepAlive(r.ctx, r.lease)
	if err != nil {
		r.lostOnce.Do(func() { close(r.done) })
		return
	}
	for resp := range ch {
		r.proven(time.Now().Add(time.Duration(resp.TTL) * time.Second))
	}
	if r.ctx.Err() == nil {
		r.lostOnce.Do(func() { close(r.done) })
	}
}

func (r *Registration) openStream(ctx context.Context) (pb.Lease_LeaseKeepAliveClient, error) {
	conn := r.cli.ActiveConnection()
	if conn == nil {
		return nil, errors.New("metadata: no connection to etcd")
	}
	return pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
}

// renewOnce sends one keep-alive request on stream and returns the TTL
// etcd answers.
func renewOnce(stream pb.Lease_LeaseKeepAliveClient, lease clientv3.LeaseID) (int64, error) {
	if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); err != nil {
		return 0, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	if resp.TTL <= 0 {
		return 0, rpctypes.ErrLeaseNotFound
	}
	return resp.TTL, nil
}

// proven records that the lease lives until at least until.
func (r *Registration) proven(until time.Time) {
	n := until.UnixNano()
	for {
		cur := r.provenUntil.Load()
		if n <= cur || r.provenUntil.CompareAndSwap(cur, n) {
			return
		}
	}
}

// Lease is the registration's etcd lease.
func (r *Registration) Lease() clientv3.LeaseID { return r.lease }

// Revision is the etcd revision that wrote the key this registration
// holds (a broker's registration), 0 for one that holds none yet (a
// controller candidacy). A snapshot at or past it that lacks the key
// shows the registration gone: its lease expired, or it was revoked,
// while this process may not have heard of it (etcd was away when the
// lease ran out, and went away again before a renewal was answered).
func (r *Registration) Revision() int64 { return r.rev }

// TTL is the lease's time to live, as etcd granted it.
func (r *Registration) TTL() time.Duration { return r.ttl }

// ProvenUntil is the latest time the lease may expire at, as far as
// this process knows: the send time of the newest renewal etcd answered
// plus the TTL. Past it, etcd may have expired the lease and the
// controller may have moved this broker's leaderships to others.
func (r *Registration) ProvenUntil() time.Time { return time.Unix(0, r.provenUntil.Load()) }

// Done is closed when the registration is lost: etcd answered that the
// lease is gone (expired or revoked). An etcd that cannot be reached
// does not close it (ProvenUntil tells how long that has lasted).
func (r *Registration) Done() <-chan struct{} { return r.done }

// Close stops renewing and revokes the registration, waiting at most a
// TTL for etcd (the lease expires anyway).
func (r *Registration) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), r.ttl)
		defer cancel()
		_, err = r.cli.Revoke(ctx, r.lease)
		r.lostOnce.Do(func() { close(r.done) })
	})
	return err
}
