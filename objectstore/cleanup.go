package objectstore

import (
	"context"
	"time"
)

// CleanupGrace is how long a cleanup call (CleanupContext) goes on once
// the context it was made for has ended.
const CleanupGrace = 2 * time.Second

// CleanupContext returns a context for a cleanup call: deleting objects
// that will never be committed, aborting a failed multipart upload. Such
// a call should run even though ctx ended (a shutdown or a lost
// leadership ends an upload, whose leftovers are then deleted), but must
// not hold up for long what ended it: a store that hangs would keep a
// shutdown waiting for timeout. The context ignores ctx's cancellation
// and ends timeout after the call, or CleanupGrace after ctx ends,
// whichever comes first. Best effort: what a cleanup leaves, orphan
// cleanup finds later.
func CleanupContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(CleanupGrace, cancel) })
	return c, func() {
		stop()
		cancel()
	}
}
