package localseg

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shale-log/shale/localseg/vfs"
)

// The filesystem a log does all its I/O through (see package vfs).
type (
	FS   = vfs.FS
	File = vfs.File
	OSFS = vfs.OSFS
)

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
