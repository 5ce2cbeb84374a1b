package metadata

import (
	"context"
	"net"
	"strings"
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
	muted   int // the watches numbered up to it deliver nothing
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

// muteCurrent makes the watches started so far deliver nothing more; later
// ones are not affected.
func (w *silentWatcher) muteCurrent() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.muted = w.watches
}

func (w *silentWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := w.Watcher.Watch(ctx, key, opts...)
	w.mu.Lock()
	w.watches++
	n := w.watches
	w.mu.Unlock()
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		defer func() {
			// A muted watch does not even end with its stream: it
			// stays open and silent until its caller gives up.
			w.mu.Lock()
			muted := n <= w.muted
			w.mu.Unlock()
			if muted {
				<-ctx.Done()
			}
		}()
		for wr := range in {
			w.mu.Lock()
			muted := n <= w.muted
			w.mu.Unlock()
			if muted || w.isSilent() {
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
// startNetEtcd starts an etcd serving clients on a loopback port, with
// its data in dir (addr "": a free port).
func startNetEtcd(t *testing.T, dir, addr string) *Embedded {
	t.Helper()
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	e, err := StartEmbedded(ctxT(t), EmbeddedConfig{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A cache whose connection to etcd is ready again after it was lost reads
// the metadata again and watches anew: a watch resumed across the
// reconnection was seen to miss a change made as etcd came back. Here the
// watch in place before the outage delivers nothing after it, and the
// silence check is off: only the reconnection brings the change.
func TestCacheReadsAgainWhenItsEtcdConnectionIsBack(t *testing.T) {
	every := watchCheckEvery
	watchCheckEvery = time.Hour
	t.Cleanup(func() { watchCheckEvery = every })
	ctx := ctxT(t)
	dir := t.TempDir()
	e := startNetEtcd(t, dir, "")
	addr := strings.TrimPrefix(e.Endpoints()[0], "http://")
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, DialOptions: DialOptions()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sw := &silentWatcher{Watcher: cli.Watcher}
	cli.Watcher = sw
	s := NewStore(cli, "/reconnect/")
	c := newTestCache(t, ctx, s)
	for sw.started() == 0 {
		time.Sleep(time.Millisecond)
	}

	sw.muteCurrent()
	e.Close()
	e = startNetEtcd(t, dir, addr)
	defer e.Close()
	if _, err := cli.Put(ctx, s.clusterIDKey(), "after"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); c.Snapshot().ClusterID != "after"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("cluster id %q in the snapshot, want the one written once etcd was back (%d watches started)", c.Snapshot().ClusterID, sw.started())
		}
	}
}

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

	// Alive, and idle or with writes elsewhere only: nothing to deliver,
	// and the progress notifications answered keep the watch.
	time.Sleep(10 * watchCheckEvery)
	for i := 0; i < 10; i++ {
		if _, err := cli.Put(ctx, "/elsewhere/key", "v"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(watchCheckEvery)
	}
	time.Sleep(10 * watchCheckEvery)
	if n := sw.started(); n != 1 {
		t.Fatalf("%d watches started on a live cache with nothing to deliver, want 1", n)
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
