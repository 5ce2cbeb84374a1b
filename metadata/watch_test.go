package metadata

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// silentWatcher is an etcd client's watcher whose watches deliver nothing
// while it is silent, progress notifications included: a watch stream
// that stopped delivering, as etcd's client was seen to keep after the
// server restarted.
type silentWatcher struct {
	clientv3.Watcher
	mu      sync.Mutex
	silent  bool
	watches int
}

func (w *silentWatcher) setSilent(s bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.silent = s
}

func (w *silentWatcher) isSilent() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.silent
}

func (w *silentWatcher) started() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watches
}

func (w *silentWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := w.Watcher.Watch(ctx, key, opts...)
	w.mu.Lock()
	w.watches++
	w.mu.Unlock()
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for wr := range in {
			if w.isSilent() {
				continue
			}
			select {
			case out <- wr:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (w *silentWatcher) RequestProgress(ctx context.Context) error {
	if w.isSilent() {
		return nil
	}
	return w.Watcher.RequestProgress(ctx)
}

// A cache whose watch goes silent notices (no answer to a progress
// request), ends it and reloads: a change made meanwhile reaches its
// snapshot, and changes after the stream speaks again arrive through the
// new watch. A live watch that has nothing to deliver is not restarted.
func TestCacheRestartsAWatchThatWentSilent(t *testing.T) {
	every, after := watchCheckEvery, watchSilentAfter
	watchCheckEvery, watchSilentAfter = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { watchCheckEvery, watchSilentAfter = every, after })
	ctx := ctxT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir(), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli := e.Client()
	sw := &silentWatcher{Watcher: cli.Watcher}
	cli.Watcher = sw
	s := NewStore(cli, "/silent/")
	c := newTestCache(t, ctx, s)

	// Alive and idle: the progress notifications keep the watch.
	time.Sleep(20 * watchCheckEvery)
	if n := sw.started(); n != 1 {
		t.Fatalf("%d watches started on a live, idle cache, want 1", n)
	}
	waitID := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.Snapshot().ClusterID != want {
			if time.Now().After(deadline) {
				t.Fatalf("cluster id %q in the snapshot, want %q (%d watches started)", c.Snapshot().ClusterID, want, sw.started())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	sw.setSilent(true)
	if _, err := cli.Put(ctx, s.clusterIDKey(), "while-silent"); err != nil {
		t.Fatal(err)
	}
	waitID("while-silent") // through the reload
	for deadline := time.Now().Add(10 * time.Second); sw.started() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d watches started, want the silent one followed by a new one", sw.started())
		}
	}
	sw.setSilent(false)
	if _, err := cli.Put(ctx, s.clusterIDKey(), "spoken"); err != nil {
		t.Fatal(err)
	}
	waitID("spoken")
}
