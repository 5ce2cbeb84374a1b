package objectstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestFSConformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		b, err := objectstore.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestFSLayoutIsPlainFiles(t *testing.T) {
	dir := t.TempDir()
	b, err := objectstore.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, k := range []string{"t/0/seg.log", "u", "50%/x"} {
		if _, err := b.Put(ctx, k, strings.NewReader(k), int64(len(k)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]string{
		"objects/t/0/seg.log": "t/0/seg.log",
		"objects/u":           "u",
		"objects/50%/x":       "50%/x",
	} {
		got, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || string(got) != want {
			t.Fatalf("%s: %q %v, want %q", path, got, err, want)
		}
	}
	// A file put there by hand (no etag xattr) is an object too.
	if err := os.WriteFile(filepath.Join(dir, "objects/t/0/manual"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := b.Head(ctx, "t/0/manual")
	// CRC-32C of "hello", then the size.
	if err != nil || !strings.HasPrefix(a.ETag, `"9a71bb4c-5-`) || a.Size != 5 {
		t.Fatalf("head of a hand-made file: %+v %v", a, err)
	}
	if again, err := b.Head(ctx, "t/0/manual"); err != nil || again.ETag != a.ETag {
		t.Fatalf("the etag of an unchanged file moved: %s, then %s (%v)", a.ETag, again.ETag, err)
	}
	if err := b.Delete(ctx, "t/0/seg.log"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "t/0/manual"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects/t")); !os.IsNotExist(err) {
		t.Fatalf("emptied directories stay: %v", err)
	}
	// A key cannot be a directory of other keys, nor the reverse.
	if _, err := b.Put(ctx, "u/v", strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("put under an object: %v", err)
	}
	if _, err := b.Put(ctx, "50%", strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("put over a directory: %v", err)
	}
	if _, err := b.Head(ctx, "50%"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("head of a directory: %v", err)
	}
	if err := b.Delete(ctx, "50%"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "objects/50%/x")); err != nil || string(got) != "50%/x" {
		t.Fatalf("deleting a directory's name touched its keys: %q %v", got, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// Two FS values on one root stand for two processes sharing a bucket
// directory: their conditional puts still have one winner.
func TestFSConditionalPutsAcrossInstances(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	var wins atomic.Int32
	for i := range 8 {
		b, err := objectstore.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			v := strconv.Itoa(i)
			_, err := b.Put(context.Background(), "m", strings.NewReader(v), int64(len(v)), objectstore.PutOptions{IfNoneMatch: true})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, objectstore.ErrPreconditionFailed):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
}
