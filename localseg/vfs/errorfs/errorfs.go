// Package errorfs wraps a vfs.FS and fails its operations by rule, for
// tests of disk errors: ENOSPC, EIO, short and torn writes, failed fsyncs.
// Rules are checked in the order they were added; the first that fires
// wins. Composable with other wrappers (crashfs).
package errorfs

import (
	"os"
	"strings"
	"sync"

	"github.com/shale-log/shale/localseg/vfs"
)

// Op names a filesystem operation a Fault can match.
type Op int

// The operations an FS can fail.
const (
	OpWrite Op = iota
	OpSync
	OpOpen
	OpRename
	OpRemove
	OpTruncate
	OpSyncDir
)

// Fault is one rule of an FS: the matching calls after the first Skip
// fail with Err, Times times (or forever when Times < 0).
type Fault struct {
	Op Op
	// PathContains restricts the rule to paths containing it ("" = all).
	PathContains string
	// Skip lets this many matching calls through first: Skip 2 fails the
	// third write.
	Skip int
	// Times is how many calls fail (0 means 1; negative means forever).
	Times int
	// Err is the error returned (e.g. syscall.ENOSPC, syscall.EIO).
	Err error
	// Short: a failing write first writes half its bytes, as a disk that
	// fills up midway does.
	Short bool
}

// FS wraps a vfs.FS and fails operations by rule, for tests of disk
// errors (ENOSPC, EIO, short and torn writes). Rules are checked in the
// order they were added; the first that fires wins.
type FS struct {
	vfs.FS
	mu     sync.Mutex
	faults []*Fault
	fired  int
}

var _ vfs.FS = (*FS)(nil)

// New wraps fs (vfs.OSFS when nil).
func New(fs vfs.FS) *FS {
	if fs == nil {
		fs = vfs.OSFS{}
	}
	return &FS{FS: fs}
}

// Inject adds a rule.
func (f *FS) Inject(fault Fault) {
	if fault.Times == 0 {
		fault.Times = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &fault)
}

// Clear removes every rule.
func (f *FS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// FailWrites makes the next n writes fail with err, each after writing
// half its bytes (a torn write).
func (f *FS) FailWrites(n int, err error) {
	f.Inject(Fault{Op: OpWrite, Times: n, Err: err, Short: true})
}

// FailSyncs makes the next n syncs fail with err.
func (f *FS) FailSyncs(n int, err error) {
	f.Inject(Fault{Op: OpSync, Times: n, Err: err})
}

// Fired counts the faults injected so far.
func (f *FS) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// check returns the fault that fires for this call, if any.
func (f *FS) check(op Op, path string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.faults {
		if r.Op != op || r.Times == 0 || (r.PathContains != "" && !strings.Contains(path, r.PathContains)) {
			continue
		}
		if r.Skip > 0 {
			r.Skip--
			continue
		}
		if r.Times > 0 {
			r.Times--
		}
		f.fired++
		fault := *r
		return &fault
	}
	return nil
}

func (f *FS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	if r := f.check(OpOpen, name); r != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: r.Err}
	}
	vf, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &file{File: vf, fs: f, name: name}, nil
}

func (f *FS) Rename(from, to string) error {
	if r := f.check(OpRename, to); r != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: r.Err}
	}
	return f.FS.Rename(from, to)
}

func (f *FS) Remove(name string) error {
	if r := f.check(OpRemove, name); r != nil {
		return &os.PathError{Op: "remove", Path: name, Err: r.Err}
	}
	return f.FS.Remove(name)
}

// RemoveAll fails as Remove does: OpRemove rules match it too.
func (f *FS) RemoveAll(dir string) error {
	if r := f.check(OpRemove, dir); r != nil {
		return &os.PathError{Op: "removeall", Path: dir, Err: r.Err}
	}
	return f.FS.RemoveAll(dir)
}

func (f *FS) SyncDir(dir string) error {
	if r := f.check(OpSyncDir, dir); r != nil {
		return &os.PathError{Op: "sync", Path: dir, Err: r.Err}
	}
	return f.FS.SyncDir(dir)
}

type file struct {
	vfs.File
	fs   *FS
	name string
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if r := f.fs.check(OpWrite, f.name); r != nil {
		n := 0
		if r.Short {
			n, _ = f.File.WriteAt(p[:len(p)/2], off)
		}
		return n, &os.PathError{Op: "write", Path: f.name, Err: r.Err}
	}
	return f.File.WriteAt(p, off)
}

func (f *file) Sync() error {
	if r := f.fs.check(OpSync, f.name); r != nil {
		return &os.PathError{Op: "sync", Path: f.name, Err: r.Err}
	}
	return f.File.Sync()
}

// WriteBehind passes the hint on (it makes nothing durable, so no fault
// applies to it).
func (f *file) WriteBehind(off, n int64) error { return vfs.WriteBehind(f.File, off, n) }

func (f *file) Truncate(size int64) error {
	if r := f.fs.check(OpTruncate, f.name); r != nil {
		return &os.PathError{Op: "truncate", Path: f.name, Err: r.Err}
	}
	return f.File.Truncate(size)
}
