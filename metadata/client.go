package metadata

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// ReconnectMaxDelay caps the wait between an etcd client's attempts to
// reconnect.
const ReconnectMaxDelay = time.Second

// DialOptions are the gRPC options of a broker's etcd client. gRPC's
// default reconnect backoff grows by 1.6 at each failed attempt up to two
// minutes, so a broker whose link to etcd was down for a while found etcd
// again only seconds to a minute after the link healed (about 6 s after a
// 20 s cut here), keeping it without a session, or letting its lease run
// out after an etcd restart had renewed it. Capped at ReconnectMaxDelay,
// it is back within about a second.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  100 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   ReconnectMaxDelay,
		},
		MinConnectTimeout: 5 * time.Second,
	})}
}

// WatchConnection logs the state changes of cli's connection to etcd
// until ctx ends: each change at debug level, the connection lost (no
// longer ready) as a warning, and ready again at info level with how
// long it was away and how many attempts to connect failed meanwhile. A
// client inside the etcd process has no connection: it returns at once.
func WatchConnection(ctx context.Context, cli *clientv3.Client, log *slog.Logger) {
	conn := cli.ActiveConnection()
	if conn == nil {
		return
	}
	state := conn.GetState()
	since := time.Now()
	var lost time.Time // when it was last ready; zero while ready or before it first is
	failed := 0
	for conn.WaitForStateChange(ctx, state) {
		next := conn.GetState()
		log.Debug("etcd connection", "state", next.String(), "was", state.String(), "for", time.Since(since).Round(time.Millisecond))
		switch {
		case state == connectivity.Ready:
			lost, failed = time.Now(), 0
			log.Warn("etcd connection lost", "state", next.String(), "target", conn.Target())
		case next == connectivity.Ready && !lost.IsZero():
			log.Info("etcd connection ready again", "after", time.Since(lost).Round(time.Millisecond), "failed_attempts", failed)
			lost = time.Time{}
		case next == connectivity.TransientFailure:
			failed++
		}
		state, since = next, time.Now()
	}
}

// reconnectNow makes cli's connection to etcd try to connect at once if
// it is waiting: out its reconnect backoff after a failed attempt
// (TRANSIENT_FAILURE), or idle. The backoff restarts from its base
// delay. A caller that found no connection for a request that cannot
// wait (a lease renewal) uses it: the backoff, grown while etcd was
// down, would otherwise keep the client away for up to ReconnectMaxDelay
// after etcd is back.
func reconnectNow(cli *clientv3.Client) {
	conn := cli.ActiveConnection()
	if conn == nil {
		return
	}
	switch conn.GetState() {
	case connectivity.TransientFailure:
		conn.ResetConnectBackoff()
	case connectivity.Idle:
		conn.Connect()
	}
}
