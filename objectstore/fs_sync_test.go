package objectstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// A directory fsync failing after a put's rename leaves the object
// visible but perhaps lost at a crash: the put fails, and so does every
// call after it, reads included, so that nothing builds on what a crash
// can take back (a manifest commit would read its write back and call it
// committed). Reopening the bucket makes it usable again.
func TestFSRefusesEverythingAfterADirectorySyncFails(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.Put(ctx, "t/0/manifest", strings.NewReader("v1"), 2, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	eio := errors.New("input/output error")
	f.syncDir = func(string) error { return eio }
	if _, err := f.Put(ctx, "t/0/manifest", strings.NewReader("v2"), 2, PutOptions{}); !errors.Is(err, eio) {
		t.Fatalf("put whose directory fsync failed: %v, want %v", err, eio)
	}
	f.syncDir = syncDir // the next fsync would succeed: it must not matter
	if _, err := f.Get(ctx, "t/0/manifest", 0, -1); !errors.Is(err, eio) {
		t.Fatalf("get after the failed fsync: %v, want the failure", err)
	}
	if _, err := f.Head(ctx, "t/0/manifest"); !errors.Is(err, eio) {
		t.Fatalf("head after the failed fsync: %v, want the failure", err)
	}
	if err := f.List(ctx, "t/", func(Attrs) error { return nil }); !errors.Is(err, eio) {
		t.Fatalf("list after the failed fsync: %v, want the failure", err)
	}
	if _, err := f.Put(ctx, "t/0/other", strings.NewReader("x"), 1, PutOptions{}); !errors.Is(err, eio) {
		t.Fatalf("put after the failed fsync: %v, want the failure", err)
	}
	if err := f.Delete(ctx, "t/0/manifest"); !errors.Is(err, eio) {
		t.Fatalf("delete after the failed fsync: %v, want the failure", err)
	}

	again, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadAll(ctx, again, "t/0/manifest", 2)
	if err != nil || !bytes.Equal(got, []byte("v2")) {
		t.Fatalf("reopened: %q %v", got, err)
	}
}

// The same for a delete's and a new directory's fsync.
func TestFSDeleteOrMkdirWhoseSyncFailsBreaksTheBucket(t *testing.T) {
	eio := errors.New("input/output error")
	for name, op := range map[string]func(*FS) error{
		"delete": func(f *FS) error { return f.Delete(context.Background(), "a/b") },
		"mkdir": func(f *FS) error {
			_, err := f.Put(context.Background(), "new/dir/key", strings.NewReader("x"), 1, PutOptions{})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := NewFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Put(context.Background(), "a/b", strings.NewReader("x"), 1, PutOptions{}); err != nil {
				t.Fatal(err)
			}
			f.syncDir = func(string) error { return eio }
			if err := op(f); !errors.Is(err, eio) {
				t.Fatalf("%s: %v, want %v", name, err, eio)
			}
			f.syncDir = syncDir
			if _, err := f.Head(context.Background(), "a/b"); !errors.Is(err, eio) {
				t.Fatalf("head after a failed %s fsync: %v, want the failure", name, err)
			}
		})
	}
}
