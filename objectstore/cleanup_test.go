package objectstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// A cleanup context outlives the context it was made for by
// CleanupGrace, and ends by its own timeout while that one lives.
func TestCleanupContextEndsAGraceAfterItsParent(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	c, cancel := objectstore.CleanupContext(parent, time.Hour)
	defer cancel()
	cancelParent()
	start := time.Now()
	select {
	case <-c.Done():
		if took := time.Since(start); took < objectstore.CleanupGrace/2 {
			t.Fatalf("ended %s after its parent, before the grace", took)
		}
	case <-time.After(10 * objectstore.CleanupGrace):
		t.Fatal("still running long after its parent ended")
	}

	c, cancel = objectstore.CleanupContext(context.Background(), 10*time.Millisecond)
	defer cancel()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("its own timeout did not end it")
	}

	// Ended already: the grace still runs.
	c, cancel = objectstore.CleanupContext(parent, time.Hour)
	if c.Err() != nil {
		t.Fatal("a cleanup context of an ended parent began ended")
	}
	cancel()
	if c.Err() == nil {
		t.Fatal("cancel did not end it")
	}
}
