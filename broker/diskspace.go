package broker

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
)

// errStorageFull: a write was refused because its filesystem has less free
// space than the configured reserve. Refusing early keeps the disk from
// filling up: the logs stay online and etcd keeps the room it needs.
var errStorageFull = errors.New("broker: not enough free disk space")

// spaceGuard follows the free space of the filesystem holding one
// directory and refuses writes that would leave less than reserve bytes.
// refresh reads the filesystem (statfs); between refreshes, writes subtract
// their size, so a burst cannot overshoot the reserve by more than what
// other processes write. A nil guard, or a reserve of zero or less, refuses
// nothing.
type spaceGuard struct {
	what    string // "log directory", "metadata directory"
	path    string
	reserve int64
	free    atomic.Int64 // -1 until the first refresh succeeds
}

func newSpaceGuard(what, path string, reserve int64) *spaceGuard {
	if path == "" || reserve <= 0 {
		return nil
	}
	g := &spaceGuard{what: what, path: path, reserve: reserve}
	g.free.Store(-1)
	g.refresh()
	return g
}

// refresh reads the free space available to unprivileged writers.
func (g *spaceGuard) refresh() error {
	if g == nil {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.path, &st); err != nil {
		return fmt.Errorf("broker: free space of %s: %w", g.path, err)
	}
	g.free.Store(int64(st.Bavail) * int64(st.Bsize))
	return nil
}

// check refuses a write of n bytes that would leave less than the reserve.
func (g *spaceGuard) check(n int64) error {
	if g == nil {
		return nil
	}
	if free := g.free.Load(); free >= 0 && free-n < g.reserve {
		return fmt.Errorf("%w: the %s %s has %d bytes free, the reserve is %d", errStorageFull, g.what, g.path, max(free, 0), g.reserve)
	}
	return nil
}

// wrote accounts for n bytes written since the last refresh.
func (g *spaceGuard) wrote(n int64) {
	if g != nil {
		g.free.Add(-n)
	}
}

// problem describes the guard's state for health checks ("" when fine).
func (g *spaceGuard) problem() string {
	if err := g.check(0); err != nil {
		return err.Error()
	}
	return ""
}

// logDirSpace is the size of the filesystem holding dir and the space on
// it left to unprivileged writers (KIP-827's TotalBytes and UsableBytes).
func logDirSpace(dir string) (total, usable int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Blocks) * int64(st.Bsize), int64(st.Bavail) * int64(st.Bsize), nil
}

// errPartitionOffline: the partition's log could not be opened or went
// offline; the broker retries with backoff.
var errPartitionOffline = errors.New("broker: partition log offline")
