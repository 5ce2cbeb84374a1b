// Package vfs is the small filesystem interface Shale's local logs do all
// their I/O through: the operating system's in production, fault-injecting
// and crash-simulating wrappers (sub-packages errorfs and crashfs) in tests.
// It is small on purpose: what a partition directory needs and nothing else.
// Files expose their *os.File so that fetches can use sendfile.
package vfs

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// FS is a filesystem: OSFS in production, wrappers in tests.
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

// Datasync makes f's data durable: fdatasync(2) when f is the operating
// system's (the data and what reading it back needs, such as the size of
// an appended file, but not its times, which would cost a journal commit
// of their own), Sync otherwise (wrappers in tests keep their semantics).
func Datasync(f File) error {
	if d, ok := f.(interface{ datasync() error }); ok {
		return d.datasync()
	}
	return f.Sync()
}

// WriteBehinder is a file that can start writing a range of its dirty
// pages back to the disk without waiting for them (see WriteBehind).
type WriteBehinder interface {
	WriteBehind(off, n int64) error
}

// WriteBehind starts writing back the dirty pages of f in [off, off+n)
// and returns without waiting for them (sync_file_range(2) with
// SYNC_FILE_RANGE_WRITE alone, when f is the operating system's; nothing
// for a file that is not a WriteBehinder). It makes nothing durable: it
// only keeps the page cache from holding a backlog that the next fsync
// would have to write all at once. Without the WAIT flags it neither waits
// for pages already under write-back nor looks at, or consumes, a
// write-back error: the next fsync still reports it.
func WriteBehind(f File, off, n int64) error {
	if w, ok := f.(WriteBehinder); ok {
		return w.WriteBehind(off, n)
	}
	return nil
}

func (f osFile) WriteBehind(off, n int64) error {
	return f.syscall("sync_file_range", func(fd int) error {
		return unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// WriteOuter is a file that can write a range of its dirty pages back to
// the disk and wait for them (see WriteOut).
type WriteOuter interface {
	WriteOut(off, n int64) error
}

// WriteOut writes the dirty pages of f in [off, off+n) back to the disk
// and waits for them (sync_file_range(2) with WAIT_BEFORE, WRITE and
// WAIT_AFTER, when f is the operating system's; nothing for a file that is
// not a WriteOuter). It makes nothing durable (no metadata, no cache
// flush). Waiting, it reports a write-back error and so consumes it for
// f's open file description: use it only on a descriptor of its own, whose
// errors no fsync relies on.
func WriteOut(f File, off, n int64) error {
	if w, ok := f.(WriteOuter); ok {
		return w.WriteOut(off, n)
	}
	return nil
}

func (f osFile) WriteOut(off, n int64) error {
	return f.syscall("sync_file_range", func(fd int) error {
		return unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	})
}

func (f osFile) datasync() error {
	return f.syscall("fdatasync", unix.Fdatasync)
}

// syscall runs call on the file's descriptor, again while it is
// interrupted (EINTR), and names op and the file in what it returns.
func (f osFile) syscall(op string, call func(fd int) error) error {
	rc, err := f.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = call(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: serr}
	}
	return nil
}

// VectorWriterAt is a File that writes several buffers, one after the
// other, with one call (the operating system's: pwritev(2)).
type VectorWriterAt interface {
	WriteVAt(bufs [][]byte, off int64) (int, error)
}

// WriteVAt writes bufs one after the other at off: with one call when f is
// a VectorWriterAt, with one WriteAt per buffer otherwise (wrappers in
// tests keep their semantics: each buffer's write may fail on its own). It
// returns the bytes written; after an error the bytes past them may or may
// not be in the file.
func WriteVAt(f File, bufs [][]byte, off int64) (int, error) {
	if v, ok := f.(VectorWriterAt); ok && len(bufs) > 1 {
		return v.WriteVAt(bufs, off)
	}
	total := 0
	for _, b := range bufs {
		n, err := f.WriteAt(b, off)
		total += n
		if err != nil {
			return total, err
		}
		if n != len(b) {
			return total, io.ErrShortWrite
		}
		off += int64(n)
	}
	return total, nil
}

// WriteVAt writes bufs with pwritev(2), again for what a short write
// left.
func (f osFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	total := 0
	err := f.syscall("pwritev", func(fd int) error {
		for len(bufs) > 0 {
			n, err := unix.Pwritev(fd, bufs, off)
			if err != nil {
				return err // EINTR: again, from what is left
			}
			if n == 0 {
				return io.ErrShortWrite
			}
			total += n
			off += int64(n)
			// Drop what was written; a short write resumes mid-buffer.
			for n > 0 && len(bufs) > 0 {
				if n < len(bufs[0]) {
					bufs = append([][]byte{bufs[0][n:]}, bufs[1:]...)
					n = 0
					break
				}
				n -= len(bufs[0])
				bufs = bufs[1:]
			}
		}
		return nil
	})
	return total, err
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
