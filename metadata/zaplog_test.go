package metadata

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// etcd's warnings and errors reach Shale's log, its info does not, and an
// entry before an exit carries the directory's free space.
func TestSlogZapForwardsWarningsAndExits(t *testing.T) {
	var buf bytes.Buffer
	lg := SlogZap(slog.New(slog.NewTextHandler(&buf, nil)), t.TempDir())
	lg.Info("chatter")
	lg.Warn("slow fdatasync")
	lg.Error("failed to write")
	lg.DPanic("failed to write to WAL")
	out := buf.String()
	for _, want := range []string{"slow fdatasync", "failed to write", "etcd is exiting: failed to write to WAL", "free_bytes=", "component=etcd"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "chatter") {
		t.Errorf("info reached the log:\n%s", out)
	}
}
