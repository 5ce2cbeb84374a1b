package crashfs

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, fs *FS, path, data string, sync bool) {
	t.Helper()
	f, err := fs.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(data), 0); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
}

func TestCrashKeepsOnlyWhatWasSynced(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "old"), []byte("before"), 0o644)
	fs, err := New(nil, root)
	if err != nil {
		t.Fatal(err)
	}
	p := func(s string) string { return filepath.Join(root, s) }
	if err := fs.MkdirAll(p("d")); err != nil {
		t.Fatal(err)
	}
	write(t, fs, p("d/synced"), "durable", true)
	write(t, fs, p("d/unsynced"), "lost", false)
	if err := fs.SyncDir(p("d")); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir(root); err != nil {
		t.Fatal(err)
	}
	// After the directory syncs: more bytes, a new file, a rename and a
	// removal, none of them made durable.
	f, _ := fs.OpenFile(p("d/synced"), os.O_RDWR, 0)
	f.WriteAt([]byte(" and more"), 7)
	f.Close()
	write(t, fs, p("d/new"), "synced data, unsynced entry", true)
	write(t, fs, p("d/tmp"), "replacement", true)
	if err := fs.Rename(p("d/tmp"), p("old")); err != nil {
		t.Fatal(err)
	}
	if err := fs.Remove(p("d/unsynced")); err != nil {
		t.Fatal(err)
	}
	if err := fs.Crash(nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"old": "before", "d/synced": "durable", "d/unsynced": ""}
	for name, data := range want {
		got, err := os.ReadFile(p(name))
		if err != nil || string(got) != data {
			t.Fatalf("%s after the crash: %q, %v; want %q", name, got, err, data)
		}
	}
	for _, name := range []string{"d/new", "d/tmp"} {
		if _, err := os.Stat(p(name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s survived the crash: %v", name, err)
		}
	}
	if _, err := fs.OpenFile(p("x"), os.O_CREATE|os.O_RDWR, 0o644); !errors.Is(err, ErrCrashed) {
		t.Fatalf("open after the crash: %v", err)
	}
}

func TestCrashWithTornTails(t *testing.T) {
	root := t.TempDir()
	fs, _ := New(nil, root)
	path := filepath.Join(root, "f")
	write(t, fs, path, "0123", true)
	fs.SyncDir(root)
	f, _ := fs.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte("456789"), 4)
	if err := fs.Crash(rand.New(rand.NewPCG(1, 2))); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if len(got) < 4 || string(got) != "0123456789"[:len(got)] {
		t.Fatalf("torn tail %q", got)
	}
}
