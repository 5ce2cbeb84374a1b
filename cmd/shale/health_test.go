package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthExitsZeroOnlyWhenTheProbeAnswers200(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			w.Write([]byte("ok\n"))
		case r.URL.Path == "/readyz" && ready.Load():
			w.Write([]byte("ready\n"))
		case r.URL.Path == "/readyz":
			http.Error(w, "not ready: metadata not loaded", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	if err := checkHealth(ctx, addr, "/healthz", time.Second); err != nil {
		t.Fatalf("live: %v", err)
	}
	err := checkHealth(ctx, addr, "/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "metadata not loaded") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("not ready: want one line with the status and reason, got %v", err)
	}
	ready.Store(true)
	if err := checkHealth(ctx, addr, "/readyz", time.Second); err != nil {
		t.Fatalf("ready: %v", err)
	}
	// An unspecified listen host (the container's 0.0.0.0) means this machine.
	_, port, _ := strings.Cut(addr, ":")
	if err := checkHealth(ctx, "0.0.0.0:"+port, "/readyz", time.Second); err != nil {
		t.Fatalf("0.0.0.0: %v", err)
	}
	srv.Close()
	if err := checkHealth(ctx, addr, "/readyz", time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("down: %v", err)
	}
}
