package broker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/metadata"
)

// A broker whose node id is registered from another data directory (its
// previous run, whose log directory was lost with meta.properties) waits
// for that registration to go, and says so: it serves nothing meanwhile,
// for up to the session TTL. A restart from the same directory takes its
// registration over at once, and says nothing.
func TestRegisteringWaitsOutAnotherDirectorysRegistrationAndSaysSo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := startEtcd(ctx, t)
	store := metadata.NewStore(e.Client(), "/register-wait/")
	const ttl = 2 * time.Second
	old, err := store.RegisterBroker(ctx, metadata.Broker{ID: 3, Host: "h", Port: 1, DirectoryID: "old-dir"}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	// The other registration goes while the broker waits (its lease
	// expiring, here revoked to keep the test short).
	time.AfterFunc(300*time.Millisecond, func() { old.Close() })
	// registerWithRetry logs on the test's goroutine: a plain buffer will do.
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	self := metadata.Broker{ID: 3, Host: "h", Port: 2, DirectoryID: "new-dir"}
	reg, err := registerWithRetry(ctx, store, self, ttl, log)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "registered from another data directory") || !strings.Contains(out, "registered once the other registration") {
		t.Fatalf("the wait was not logged:\n%s", out)
	}

	// The same directory again, as after kill -9: taken over at once.
	var again bytes.Buffer
	start := time.Now()
	reg2, err := registerWithRetry(ctx, store, metadata.Broker{ID: 3, Host: "h", Port: 3, DirectoryID: "new-dir"}, ttl, slog.New(slog.NewTextHandler(&again, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	if took := time.Since(start); took > ttl/2 || again.String() != "" {
		t.Fatalf("a restart from the same directory took %v and logged %q", took, again.String())
	}
}
