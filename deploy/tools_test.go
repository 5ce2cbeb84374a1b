package deploy

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// missing skips the test locally and fails it under CI=true, where every
// tool the tests need is installed by `make tools`.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", dir, err)
	}
	return dir
}

// tool finds a binary `make tools` builds into .tools/bin, or env names.
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p := filepath.Join(moduleRoot(t), ".tools", "bin", name)
	if _, err := os.Stat(p); err != nil {
		missing(t, "no %s: run `make tools` (builds it into .tools/bin) or set %s", name, env)
	}
	return p
}

// checkStatic fails unless the binary at path is statically linked (it
// must run on an empty image).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked: rebuild it with CGO_ENABLED=0 (make tools does)", path)
		}
	}
}
