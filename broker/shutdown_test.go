package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// Regression: cancelling the broker's context never closed the sockets,
// so Close waited in every connection's reader until its client left: an
// idle franz-go client held shutdown for 27 s, a group consumer for 57 s,
// a raw idle socket forever. Close now stops reading, lets requests in
// flight finish, and closes the sockets by the shutdown timeout.
func TestCloseDoesNotWaitForClients(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.ShutdownTimeout = 2 * time.Second })
	createTopic(t, b.Admin(), "shut", 1, nil)
	// An idle client with open connections.
	idle := b.Client()
	if err := idle.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// A group consumer in a long poll far longer than Close may take.
	group := b.Client(kgo.ConsumerGroup("g"), kgo.ConsumeTopics("shut"), kgo.FetchMaxWait(30*time.Second))
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			if fs := group.PollFetches(ctx); fs.IsClientClosed() {
				return
			}
		}
	}()
	produceSync(t, b.Client(), &kgo.Record{Topic: "shut", Value: []byte("v")})
	// A raw socket that never sends anything, and one mid-request.
	raw := dial(t, b.Addr)
	half := dial(t, b.Addr)
	half.Write([]byte{0, 0, 1, 0, 0, 3})
	time.Sleep(500 * time.Millisecond)

	// Waiting on any of them would take 30 s or forever; the bound is
	// ShutdownTimeout with room for closing the logs and etcd on a loaded
	// machine under -race (4.2-5.8 s seen), not a performance target.
	start := time.Now()
	b.Stop()
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Close took %s with idle clients connected", d)
	}
	for _, c := range []interface{ SetDeadline(time.Time) error }{raw, half} {
		c.SetDeadline(time.Now().Add(time.Second))
	}
	expectClosed(t, raw)
	expectClosed(t, half)
	group.Close()
	<-polled
}

// A second broker on a data dir in use is refused at once, naming the
// process that holds it; the first is unaffected, and the dir is free
// again once it closes.
func TestSecondBrokerOnADataDirInUseIsRefused(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := broker.Config{DataDir: filepath.Join(b.Dir, "log"), AdvertisedHost: "127.0.0.1", AdvertisedPort: 1}
	_, err := broker.Start(ctx, broker.Options{Config: cfg, Etcd: b.Etcd()})
	want := fmt.Sprintf("data dir %s is in use by process %d", cfg.DataDir, os.Getpid())
	if !errors.Is(err, broker.ErrDataDirInUse) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second broker: %v, want %q", err, want)
	}
	healthy(t, b)
	b.Restart() // Close released the lock
	healthy(t, b)
}

// Regression: a leader's ISR write ran in a goroutine Close did not wait
// for, so it could outlive the broker (and touch a closed partition).
func TestCloseWaitsForISRWrites(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "isr", 1, nil)
	release := b.B.HoldISRWrites("isr", 0, 5)
	brokertest.WaitFor(t, 10*time.Second, "the ISR writes failed and wait for the partition", func() (bool, string) {
		buf := make([]byte, 1<<20)
		n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*partition).isrWriteFailed")
		return n == 5, fmt.Sprintf("%d waiting", n)
	})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		b.Stop()
	}()
	select {
	case <-closed:
		release()
		t.Fatal("Close returned while ISR writes were still running")
	case <-time.After(500 * time.Millisecond):
	}
	release()
	<-closed
}
