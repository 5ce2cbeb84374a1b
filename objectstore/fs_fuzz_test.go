package objectstore

import (
	"path/filepath"
	"testing"
)

// FuzzFSNames checks the filesystem backend's key <-> file name mapping:
// every valid key maps to one file and back, and a name read from disk
// (anything a person or a crash may leave there) decodes to the key that
// maps to it or to nothing.
func FuzzFSNames(f *testing.F) {
	for _, s := range []string{"a", "a/b", "t%/0%/x", "50%/x", "%25", "x%", "a%/b", "topic-é/0/ü.log", "a//b", "../x", "a/./b", "%", "%%/%", "x%25%/y"} {
		f.Add(s)
	}
	fs := &FS{objects: "/objects"}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := fs.path(s); err == nil {
			if k, ok := fs.keyOf(p); !ok || k != s {
				t.Fatalf("key %q -> %q -> %q, %v", s, p, k, ok)
			}
		}
		p := filepath.Join(fs.objects, s)
		if k, ok := fs.keyOf(p); ok {
			if back, err := fs.path(k); err != nil || back != p {
				t.Fatalf("name %q decodes to %q, which maps to %q (%v)", p, k, back, err)
			}
		}
	})
}
