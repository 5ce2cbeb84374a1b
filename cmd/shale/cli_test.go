package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runCLI runs the shale command line in this process and returns what it
// wrote on standard output, and its error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// mustCLI is runCLI that fails the test on an error.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("shale %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// cliJSON runs a command with -o json and decodes its output into v.
func cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := mustCLI(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("shale %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wantErr checks that err is set and contains every one of want.
func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error spans several lines: %q", err)
	}
}

func TestVersion(t *testing.T) {
	out := mustCLI(t, "version")
	if !strings.HasPrefix(out, "shale ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("shale version printed %q", out)
	}
	if got := mustCLI(t, "--version"); got != out {
		t.Fatalf("shale --version printed %q, shale version %q", got, out)
	}
	var v versionInfo
	cliJSON(t, &v, "version")
	if v.Version == "" || v.GoVersion == "" {
		t.Fatalf("version -o json: %+v", v)
	}
	// The version set at link time wins (TestMain builds shaleBin with it).
	b, err := exec.Command(shaleBin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(b), "shale "+testVersion+" ") {
		t.Fatalf("shale --version: %v %q, want version %s", err, b, testVersion)
	}
}

func TestUnknownCommandsAndArgumentsAreRefused(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"--frobnicate"},
		{"version", "extra"},
		{"version", "--frobnicate"},
	} {
		_, err := runCLI(t, args...)
		wantErr(t, err, "--help")
	}
	// The binary exits non-zero with one line on stderr.
	cmd := exec.Command(shaleBin, "frobnicate")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("shale frobnicate exited 0")
	}
	if got := stderr.String(); got != "shale: unknown command \"frobnicate\" for \"shale\"; see 'shale --help'\n" {
		t.Fatalf("stderr %q", got)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
