package metadata_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// TestCampaignCutFromEtcdReturnsWhenCancelled: a controller candidate
// waiting behind the elected one and then cut from etcd gives up when its
// context ends. concurrency.Election.Campaign resigns on cancellation with
// the client's own context, which has no deadline, so such a broker could
// not shut down while etcd was unreachable.
func TestCampaignCutFromEtcdReturnsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	leader := metadata.NewStore(e.Client(), "/campaign/")
	lead, err := leader.Campaign(ctx, 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lead.Resign(ctx)

	proxy := brokertest.NewProxy(t, addr)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + proxy.Addr()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	candidate := metadata.NewStore(cli, "/campaign/")
	cctx, ccancel := context.WithCancel(ctx)
	returned := make(chan error, 1)
	go func() {
		_, err := candidate.Campaign(cctx, 2, 2*time.Second)
		returned <- err
	}()
	// The candidate is waiting once its key is there.
	for {
		resp, err := e.Client().Get(ctx, "/campaign/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.Cut()
	ccancel()
	select {
	case err := <-returned:
		if err == nil {
			t.Fatal("a cancelled campaign behind a live controller won")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a candidate cut from etcd did not return 30s after its context ended")
	}
}
