package metadata

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// errWatchSilent ends a watch that answered nothing, not even the progress
// notification it was asked for, for watchSilentAfter.
var errWatchSilent = errors.New("metadata: the etcd watch went silent")

// How often a watch is asked to show it is alive, and how long it may stay
// silent after the question. Variables for tests.
var (
	watchCheckEvery  = 3 * time.Second
	watchSilentAfter = 10 * time.Second
)

// watch follows the keys under prefix from revision rev, calling fn with
// every response that holds events, until fn says done or fails, ctx
// ends, or the watch does.
//
// etcd's client can be left on a watch stream that delivers nothing more
// (seen after the server restarted: a broker's metadata missed a broker's
// new registration for good, and a watch that waits for a candidacy's
// deletion would wait forever). So every watchCheckEvery a watch that
// delivered nothing since the last look is asked for a progress
// notification (once etcd's revision has reached its start, the first
// that can be answered); if it answers nothing for watchSilentAfter, it
// ends with
// errWatchSilent, and its stream closes with it (its context is its own),
// so the caller's next watch opens a new one rather than join the silent
// one.
func (s *Store) watch(ctx context.Context, prefix string, rev int64, fn func(clientv3.WatchResponse) (done bool, err error)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	tick := time.NewTicker(watchCheckEvery)
	defer tick.Stop()
	heard := true       // something arrived since the last look
	var asked time.Time // when progress was asked for and not yet seen
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("metadata: watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			heard, asked = true, time.Time{}
			if len(wr.Events) == 0 {
				continue // a progress notification
			}
			if done, err := fn(wr); done || err != nil {
				return err
			}
		case now := <-tick.C:
			switch {
			case heard:
				heard = false
			case asked.IsZero():
				// etcd answers a progress request only once its
				// revision has reached the watch's start; before,
				// nothing can have been missed.
				rctx, rcancel := context.WithTimeout(wctx, watchCheckEvery)
				if r, err := s.cli.Get(rctx, prefix, clientv3.WithCountOnly()); err == nil && r.Header.Revision < rev {
					heard = true
				} else {
					asked = now
					// On the watch's own stream (the context's
					// metadata picks it); an error is a silent
					// watch too.
					s.cli.RequestProgress(rctx)
				}
				rcancel()
			case now.Sub(asked) >= watchSilentAfter:
				return errWatchSilent
			}
		}
	}
}
