package metadata

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
