// Package crashfs simulates a machine crash (a power cut) under a
// directory tree, for tests of what survives one. It wraps a vfs.FS whose
// files live on a real disk, so that reads and sendfile work as usual, and
// records what has been made durable: a file's bytes as of its last
// fsync, a directory's entries as of its last directory fsync. Crash then
// rewrites the tree to exactly that: bytes written but not fsynced are
// lost, and so are creations, renames and removals whose directory was not
// fsynced after them (a renamed file reappears under its old name, a file
// created and fsynced but never entered durably in its directory is gone).
// After Crash every operation of the FS fails with ErrCrashed, as if the
// process had died with the machine; a new FS over the same root (or the
// operating system's) sees the surviving state.
//
// Files and directories that exist when New is called, or that appear
// behind the FS's back, count as durable.
package crashfs

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/shale-log/shale/localseg/vfs"
)

// ErrCrashed is returned by every operation after Crash.
var ErrCrashed = errors.New("crashfs: the machine crashed")

// FS is a crash-simulating filesystem over the tree at its root.
type FS struct {
	inner vfs.FS
	root  string

	mu      sync.Mutex
	tree    *node // the root directory
	crashed bool
	syncs   int
}

var _ vfs.FS = (*FS)(nil)

// node is a file or a directory.
type node struct {
	dir bool
	// Directories: the entries now and as of the last directory fsync.
	children, durable map[string]*node
	// Files: the bytes as of the last fsync, and the lowest offset
	// changed since (math.MaxInt64 when clean).
	data      []byte
	dirtyFrom int64
}

func newDir() *node {
	return &node{dir: true, children: map[string]*node{}, durable: map[string]*node{}}
}

// New wraps inner (vfs.OSFS when nil) for the tree at root, which must
// exist. What is there now counts as durable.
func New(inner vfs.FS, root string) (*FS, error) {
	if inner == nil {
		inner = vfs.OSFS{}
	}
	root = filepath.Clean(root)
	f := &FS{inner: inner, root: root}
	t, err := f.scan(root)
	if err != nil {
		return nil, err
	}
	f.tree = t
	return f, nil
}

// scan reads the tree at path as it is on disk, all of it durable.
func (f *FS) scan(path string) (*node, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return &node{data: data, dirtyFrom: math.MaxInt64}, nil
	}
	n := newDir()
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		c, err := f.scan(filepath.Join(path, e.Name()))
		if err != nil {
			return nil, err
		}
		n.children[e.Name()] = c
		n.durable[e.Name()] = c
	}
	return n, nil
}

// Syncs counts the file and directory fsyncs so far.
func (f *FS) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Durable returns a copy of the bytes a crash now would surely leave in
// the file at path: those as of its last fsync, when the file and every
// directory on its way are durably entered (false otherwise). Crash may
// keep more (a torn tail), never less.
func (f *FS) Durable(path string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts, ok := f.rel(path)
	if !ok {
		return nil, false
	}
	n := f.tree
	for _, p := range parts {
		if !n.dir {
			return nil, false
		}
		if n = n.durable[p]; n == nil {
			return nil, false
		}
	}
	if n.dir {
		return nil, false
	}
	return append([]byte(nil), n.data...), true
}

// rel splits path into its components under the root; ok is false for
// paths outside it.
func (f *FS) rel(path string) ([]string, bool) {
	r, err := filepath.Rel(f.root, filepath.Clean(path))
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return nil, false
	}
	if r == "." {
		return nil, true
	}
	return strings.Split(r, string(filepath.Separator)), true
}

// lookupLocked finds the node at path, picking up what appeared on disk
// behind the FS's back. Requires mu.
func (f *FS) lookupLocked(path string) (*node, bool) {
	parts, ok := f.rel(path)
	if !ok {
		return nil, false
	}
	n := f.tree
	cur := f.root
	for _, p := range parts {
		if !n.dir {
			return nil, false
		}
		cur = filepath.Join(cur, p)
		c, ok := n.children[p]
		if !ok {
			var err error
			if c, err = f.scan(cur); err != nil {
				return nil, false
			}
			n.children[p] = c
			n.durable[p] = c
		}
		n = c
	}
	return n, true
}

// parentLocked returns the directory node holding path and its base name.
// Requires mu.
func (f *FS) parentLocked(path string) (*node, string, bool) {
	if _, ok := f.rel(path); !ok || filepath.Clean(path) == f.root {
		return nil, "", false
	}
	d, ok := f.lookupLocked(filepath.Dir(path))
	if !ok || !d.dir {
		return nil, "", false
	}
	return d, filepath.Base(path), true
}

func (f *FS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil, &os.PathError{Op: "open", Path: name, Err: ErrCrashed}
	}
	d, base, inside := f.parentLocked(name)
	var n *node
	if inside {
		// Look before opening: a file this call creates is new, one
		// already on disk but unknown was made behind our back.
		var ok bool
		if n, ok = d.children[base]; !ok {
			if _, err := os.Stat(name); err == nil {
				n, _ = f.lookupLocked(name)
			}
		}
	}
	vf, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if !inside {
		return vf, nil
	}
	if n == nil {
		// Created now: its entry is not durable until its directory
		// is synced (an older durable entry of that name stays).
		n = &node{dirtyFrom: 0}
		d.children[base] = n
	}
	if flag&os.O_TRUNC != 0 {
		n.dirtyFrom = 0
	}
	return &file{File: vf, fs: f, n: n, name: name}, nil
}

func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return &os.PathError{Op: "remove", Path: name, Err: ErrCrashed}
	}
	d, base, ok := f.parentLocked(name)
	if err := f.inner.Remove(name); err != nil {
		return err
	}
	if ok {
		delete(d.children, base)
	}
	return nil
}

func (f *FS) RemoveAll(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return &os.PathError{Op: "removeall", Path: dir, Err: ErrCrashed}
	}
	d, base, ok := f.parentLocked(dir)
	if err := f.inner.RemoveAll(dir); err != nil {
		return err
	}
	if ok {
		delete(d.children, base)
	}
	return nil
}

func (f *FS) Rename(from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: ErrCrashed}
	}
	fd, fbase, fok := f.parentLocked(from)
	var n *node
	if fok {
		n, fok = f.lookupLocked(from)
	}
	if err := f.inner.Rename(from, to); err != nil {
		return err
	}
	if fok {
		delete(fd.children, fbase)
	}
	if td, tbase, ok := f.parentLocked(to); ok {
		if n == nil {
			var err error
			if n, err = f.scan(to); err != nil {
				return err
			}
		}
		td.children[tbase] = n
	}
	return nil
}

func (f *FS) MkdirAll(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return &os.PathError{Op: "mkdir", Path: dir, Err: ErrCrashed}
	}
	parts, ok := f.rel(dir)
	if !ok {
		return f.inner.MkdirAll(dir)
	}
	// Look up what exists before creating anything, so that what this
	// call creates is not mistaken for something made behind our back.
	n := f.tree
	cur := f.root
	i := 0
	for ; i < len(parts); i++ {
		cur = filepath.Join(cur, parts[i])
		c, ok := n.children[parts[i]]
		if !ok {
			if _, err := os.Stat(cur); err != nil {
				break
			}
			if c, ok = f.lookupLocked(cur); !ok {
				break
			}
		}
		if !c.dir {
			return &os.PathError{Op: "mkdir", Path: cur, Err: errors.New("not a directory")}
		}
		n = c
	}
	if err := f.inner.MkdirAll(dir); err != nil {
		return err
	}
	for ; i < len(parts); i++ {
		c := newDir()
		n.children[parts[i]] = c
		n = c
	}
	return nil
}

func (f *FS) ReadDir(dir string) ([]os.DirEntry, error) {
	f.mu.Lock()
	crashed := f.crashed
	f.mu.Unlock()
	if crashed {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: ErrCrashed}
	}
	return f.inner.ReadDir(dir)
}

func (f *FS) SyncDir(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return &os.PathError{Op: "sync", Path: dir, Err: ErrCrashed}
	}
	if err := f.inner.SyncDir(dir); err != nil {
		return err
	}
	f.syncs++
	if n, ok := f.lookupLocked(dir); ok && n.dir {
		clear(n.durable)
		for k, v := range n.children {
			n.durable[k] = v
		}
	}
	return nil
}

// Crash simulates the crash: it rewrites the tree on disk to what was
// durable and fails every later operation. With rng, each file whose
// bytes were not all durable keeps, beyond its durable bytes, a random
// prefix of what was written after them (write-back that happened to
// reach the disk before the power went), so recovery meets torn tails.
func (f *FS) Crash(rng *rand.Rand) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil
	}
	f.crashed = true
	f.discoverLocked(f.root, f.tree)
	// What the disk holds now, for the torn tails.
	current := map[*node][]byte{}
	if rng != nil {
		var walk func(path string, d *node)
		walk = func(path string, d *node) {
			for name, n := range d.children {
				p := filepath.Join(path, name)
				if n.dir {
					walk(p, n)
				} else if n.dirtyFrom != math.MaxInt64 {
					if data, err := os.ReadFile(p); err == nil {
						current[n] = data
					}
				}
			}
		}
		walk(f.root, f.tree)
	}
	entries, err := os.ReadDir(f.root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(f.root, e.Name())); err != nil {
			return err
		}
	}
	return f.materialize(f.root, f.tree, current, rng)
}

// discoverLocked adds what was made on disk behind the FS's back under the
// directory d at path, as durable. Requires mu.
func (f *FS) discoverLocked(path string, d *node) {
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		c, ok := d.children[e.Name()]
		if !ok {
			var err error
			if c, err = f.scan(p); err != nil {
				continue
			}
			d.children[e.Name()] = c
			d.durable[e.Name()] = c
		}
		if c.dir {
			f.discoverLocked(p, c)
		}
	}
}

// materialize writes the durable entries of directory d at path.
func (f *FS) materialize(path string, d *node, current map[*node][]byte, rng *rand.Rand) error {
	for name, n := range d.durable {
		p := filepath.Join(path, name)
		if n.dir {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			if err := f.materialize(p, n, current, rng); err != nil {
				return err
			}
			continue
		}
		data := n.data
		if cur, ok := current[n]; ok {
			// Below dirtyFrom the disk and the durable copy agree.
			from := min(n.dirtyFrom, int64(len(n.data)), int64(len(cur)))
			keep := from + rng.Int64N(int64(len(cur))-from+1)
			data = append(n.data[:from:from], cur[from:keep]...)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

type file struct {
	vfs.File
	fs   *FS
	n    *node
	name string
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: ErrCrashed}
	}
	f.n.dirtyFrom = min(f.n.dirtyFrom, off)
	return f.File.WriteAt(p, off)
}

func (f *file) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return &os.PathError{Op: "truncate", Path: f.name, Err: ErrCrashed}
	}
	f.n.dirtyFrom = min(f.n.dirtyFrom, size)
	return f.File.Truncate(size)
}

// Sync makes the file's bytes durable: the part changed since the last
// Sync is read back from the disk into the durable copy.
func (f *file) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return &os.PathError{Op: "sync", Path: f.name, Err: ErrCrashed}
	}
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.fs.syncs++
	n := f.n
	if n.dirtyFrom == math.MaxInt64 {
		return nil
	}
	size, err := f.File.Size()
	if err != nil {
		return err
	}
	from := min(n.dirtyFrom, int64(len(n.data)), size)
	buf := make([]byte, size-from)
	if m, err := f.File.ReadAt(buf, from); err != nil && !(errors.Is(err, io.EOF) && m == len(buf)) {
		return fmt.Errorf("crashfs: reading back %s: %w", f.name, err)
	}
	n.data = append(n.data[:from:from], buf...)
	n.dirtyFrom = math.MaxInt64
	return nil
}
