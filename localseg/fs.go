package localseg

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// FS is the filesystem a log does all its I/O through: the OS in
// production, a fault-injecting wrapper (FaultyFS) in tests. It is small on
// purpose: what a partition directory needs and nothing else.
type FS interface {
	// OpenFile opens a file as os.OpenFile does.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Remove removes a file; a missing file is an error wrapping
	// fs.ErrNotExist.
	Remove(name string) error
	// RemoveAll removes a directory and everything in it.
	RemoveAll(dir string) error
	// Rename atomically replaces to with from.
	Rename(from, to string) error
	MkdirAll(dir string) error
	ReadDir(dir string) ([]os.DirEntry, error)
	// SyncDir makes the directory's entries (creations, renames,
	// removals) durable.
	SyncDir(dir string) error
}

// File is an open file of an FS. Segment writes use WriteAt (one pwrite
// per append); reads use ReadAt and, for sendfile, the *os.File from OS.
type File interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
	Size() (int64, error)
	// OS returns the underlying *os.File, for sendfile.
	OS() *os.File
}

// OSFS is the operating system's filesystem.
type OSFS struct{}

var _ FS = OSFS{}

type osFile struct{ *os.File }

func (f osFile) OS() *os.File { return f.File }

func (f osFile) Size() (int64, error) {
	st, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (OSFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) Remove(name string) error                  { return os.Remove(name) }
func (OSFS) RemoveAll(dir string) error                { return os.RemoveAll(dir) }
func (OSFS) Rename(from, to string) error              { return os.Rename(from, to) }
func (OSFS) MkdirAll(dir string) error                 { return os.MkdirAll(dir, 0o755) }
func (OSFS) ReadDir(dir string) ([]os.DirEntry, error) { return os.ReadDir(dir) }

func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFileAtomic writes a whole file through a temporary: write, fsync,
// rename, fsync the directory. Readers (and recovery) see the old or the
// new file, never a torn one.
func writeFileAtomic(fs FS, path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := writeFull(f, data, 0); err != nil {
		f.Close()
		fs.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		fs.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		fs.Remove(tmp)
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		fs.Remove(tmp)
		return err
	}
	return fs.SyncDir(filepath.Dir(path))
}

// writeFull writes p at off, turning a short write without an error into
// io.ErrShortWrite.
func writeFull(f File, p []byte, off int64) error {
	n, err := f.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// errFileTooLarge: a file the log wrote itself is larger than it can be.
var errFileTooLarge = errors.New("localseg: file larger than expected")

// readFile reads a whole (small) file, refusing files over max bytes before
// allocating.
func readFile(fs FS, path string, max int64) ([]byte, error) {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, fmt.Errorf("%w: %s has %d bytes, at most %d", errFileTooLarge, path, n, max)
	}
	buf := make([]byte, n)
	if m, err := f.ReadAt(buf, 0); err != nil && !(errors.Is(err, io.EOF) && m == len(buf)) {
		return nil, err
	}
	return buf, nil
}

// Op names a filesystem operation a Fault can match.
type Op int

// The operations FaultyFS can fail.
const (
	OpWrite Op = iota
	OpSync
	OpOpen
	OpRename
	OpRemove
	OpTruncate
	OpSyncDir
)

// Fault is one rule of a FaultyFS: the matching calls after the first Skip
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

// FaultyFS wraps an FS and fails operations by rule, for tests of disk
// errors (ENOSPC, EIO, short and torn writes). Rules are checked in the
// order they were added; the first that fires wins.
type FaultyFS struct {
	FS
	mu     sync.Mutex
	faults []*Fault
	fired  int
}

var _ FS = (*FaultyFS)(nil)

// NewFaultyFS wraps fs (OSFS when nil).
func NewFaultyFS(fs FS) *FaultyFS {
	if fs == nil {
		fs = OSFS{}
	}
	return &FaultyFS{FS: fs}
}

// Inject adds a rule.
func (f *FaultyFS) Inject(fault Fault) {
	if fault.Times == 0 {
		fault.Times = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &fault)
}

// Clear removes every rule.
func (f *FaultyFS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// FailWrites makes the next n writes fail with err, each after writing
// half its bytes (a torn write).
func (f *FaultyFS) FailWrites(n int, err error) {
	f.Inject(Fault{Op: OpWrite, Times: n, Err: err, Short: true})
}

// FailSyncs makes the next n syncs fail with err.
func (f *FaultyFS) FailSyncs(n int, err error) {
	f.Inject(Fault{Op: OpSync, Times: n, Err: err})
}

// Fired counts the faults injected so far.
func (f *FaultyFS) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// check returns the fault that fires for this call, if any.
func (f *FaultyFS) check(op Op, path string) *Fault {
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

func (f *FaultyFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if r := f.check(OpOpen, name); r != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: r.Err}
	}
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultyFile{File: file, fs: f, name: name}, nil
}

func (f *FaultyFS) Rename(from, to string) error {
	if r := f.check(OpRename, to); r != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: r.Err}
	}
	return f.FS.Rename(from, to)
}

func (f *FaultyFS) Remove(name string) error {
	if r := f.check(OpRemove, name); r != nil {
		return &os.PathError{Op: "remove", Path: name, Err: r.Err}
	}
	return f.FS.Remove(name)
}

func (f *FaultyFS) SyncDir(dir string) error {
	if r := f.check(OpSyncDir, dir); r != nil {
		return &os.PathError{Op: "sync", Path: dir, Err: r.Err}
	}
	return f.FS.SyncDir(dir)
}

type faultyFile struct {
	File
	fs   *FaultyFS
	name string
}

func (f *faultyFile) WriteAt(p []byte, off int64) (int, error) {
	if r := f.fs.check(OpWrite, f.name); r != nil {
		n := 0
		if r.Short {
			n, _ = f.File.WriteAt(p[:len(p)/2], off)
		}
		return n, &os.PathError{Op: "write", Path: f.name, Err: r.Err}
	}
	return f.File.WriteAt(p, off)
}

func (f *faultyFile) Sync() error {
	if r := f.fs.check(OpSync, f.name); r != nil {
		return &os.PathError{Op: "sync", Path: f.name, Err: r.Err}
	}
	return f.File.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	if r := f.fs.check(OpTruncate, f.name); r != nil {
		return &os.PathError{Op: "truncate", Path: f.name, Err: r.Err}
	}
	return f.File.Truncate(size)
}
