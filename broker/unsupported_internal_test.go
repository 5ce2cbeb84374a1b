package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLimitedLogWarnsOncePerInterval(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := rateLimitedLog{interval: time.Hour}
	for i := 0; i < 100; i++ {
		r.log(l, "unsupported", "client_id", "c", "api_key", 0, "version", 2)
	}
	if n := strings.Count(buf.String(), "unsupported"); n != 1 {
		t.Fatalf("%d warn lines, want 1:\n%s", n, buf.String())
	}
	for _, want := range []string{"client_id=c", "api_key=0", "version=2"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("line lacks %s: %s", want, buf.String())
		}
	}
}
