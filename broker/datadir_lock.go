package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the lock a process holds on its data directory for as
// long as it runs.
const lockFileName = "shale.lock"

// ErrDataDirInUse: another live process holds the data directory.
var ErrDataDirInUse = errors.New("in use")

// LockDataDir takes an exclusive flock on DIR/shale.lock before anything
// else in the directory is opened, and writes this process's id into it.
// A directory held by another process is refused at once with "data dir
// DIR is in use by process PID". The lock is released by unlock, or by
// the kernel when the process exits, however it exits.
func LockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = "process " + strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("data dir %s is %w by %s", dir, ErrDataDirInUse, holder)
		}
		return nil, fmt.Errorf("data dir %s: locking %s: %w", dir, path, err)
	}
	if err = f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s: writing %s: %w", dir, path, err)
	}
	return func() { f.Close() }, nil
}
