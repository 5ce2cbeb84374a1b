package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
)

// Live fails while a lock every connection takes stays held, naming it, and
// recovers once it is released; a check that gives up early does not
// report a deadlock.
func TestLiveReportsALockHeldForSeconds(t *testing.T) {
	b := brokertest.Start(t)
	if err := b.B.Live(context.Background()); err != nil {
		t.Fatalf("a started broker is not live: %v", err)
	}
	release := b.B.HoldConnectionsLock()
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := b.B.Live(short)
	cancel()
	if err == nil || strings.Contains(err.Error(), "deadlocked") {
		t.Fatalf("a check cut short by its context: %v, want the context's error", err)
	}
	err = b.B.Live(context.Background())
	if err == nil || !strings.Contains(err.Error(), "connections lock") {
		release()
		t.Fatalf("live with the connections lock held: %v", err)
	}
	release()
	if err := b.B.Live(context.Background()); err != nil {
		t.Fatalf("not live after the lock was released: %v", err)
	}
}
