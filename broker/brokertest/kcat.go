package brokertest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// KcatPath finds kcat, the second Kafka client the tests use. A test that
// needs it fails when CI=true and it is missing (make tools installs it),
// and skips otherwise.
func KcatPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed (make tools installs it)")
		}
		t.Skip("kcat is not installed; run make tools")
	}
	return path
}

// Kcat runs kcat with args, stdin as its input, and returns what it wrote
// to stdout. The test fails when kcat fails or runs for over a minute.
func Kcat(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, KcatPath(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, stderr.String())
	}
	return out.String()
}
