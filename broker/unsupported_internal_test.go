package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
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

// TestResponseHeaderFlexibleMatchesKmsg: the table of flexible response
// headers answers as kmsg's requests do, for every key and version.
func TestResponseHeaderFlexibleMatchesKmsg(t *testing.T) {
	for key := int16(-1); key <= kmsg.MaxKey+1; key++ {
		req := kmsg.RequestForKey(key)
		for v := int16(-1); v <= 30; v++ {
			want := false
			if req != nil && key != int16(kmsg.ApiVersions) {
				req.SetVersion(v)
				want = req.IsFlexible()
			}
			if got := responseHeaderFlexible(key, v); got != want {
				t.Errorf("key %d v%d: flexible %v, kmsg says %v", key, v, got, want)
			}
		}
	}
}
