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

// TestClientReconnectsSoonAfterALongCut: a client cut from etcd for 30 s
// answers again within a few seconds of the link healing. With gRPC's
// default backoff (growing to two minutes) it took about 6 s after a 20 s
// cut, longer after longer ones.
func TestClientReconnectsSoonAfterALongCut(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a link cut for 30 s")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	link := brokertest.NewProxy(t, addr)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{link.Addr()}, DialTimeout: 5 * time.Second, DialOptions: metadata.DialOptions()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	get := func() error {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := cli.Get(ctx, "k")
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	link.Cut()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		get()
		time.Sleep(100 * time.Millisecond)
	}
	link.Heal()
	healed := time.Now()
	for get() != nil {
		if time.Since(healed) > 3*time.Second {
			t.Fatalf("no answer from etcd %s after the link healed", time.Since(healed).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("answered %s after the link healed", time.Since(healed).Round(time.Millisecond))
}
