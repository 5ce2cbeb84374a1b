package tiering

import "golang.org/x/sys/unix"

const coldThreadsSupported = true

// niceThread raises the calling thread's niceness by n (Linux nices
// threads one by one; raising needs no privilege). The thread keeps it
// for good: the caller is locked to it.
func niceThread(n int) {
	tid := unix.Gettid()
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return
	}
	// The system call answers 20 less the niceness (1 to 40).
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, min(20-raw+n, 19))
}
