package broker

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPageCachedTellsARangeInTheCacheFromOneThatIsNot checks the test that
// picks the sendfile without the runtime's system call state: a range
// whose pages were all written is cached; one reaching into a hole of a
// sparse file (never written, so never in the cache) is not. On a kernel
// without cachestat(2) every range is "not known to be cached", so the
// sendfile that may wait for the disk is always used.
func TestPageCachedTellsARangeInTheCacheFromOneThatIsNot(t *testing.T) {
	page := int64(os.Getpagesize())
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 * page); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*page)
	for i := range data {
		data[i] = byte(i)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	var st unix.Cachestat_t
	supported := true
	if err := unix.Cachestat(uint(fd), &unix.CachestatRange{Len: uint64(page)}, &st, 0); errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) {
		supported = false
		t.Logf("cachestat(2): %v: every range must read as not cached", err)
	} else if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		off, n int64
		cached bool
	}{
		{"the written pages", 0, 4 * page, true},
		{"inside one written page", 10, 100, true},
		{"across written pages, unaligned", page / 2, 3 * page, true},
		{"into the hole", 2 * page, 4 * page, false},
		{"in the hole", 10 * page, page, false},
		{"empty", 0, 0, false},
	} {
		want := c.cached && supported
		if got := pageCached(fd, c.off, c.n); got != want {
			t.Errorf("%s [%d, +%d): pageCached %v, want %v", c.name, c.off, c.n, got, want)
		}
	}
}
