package tiering

import (
	"os"
	"syscall"
	"unsafe"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14).
const madvPopulateWrite = 23

// prefault maps the pages of a new buffer before a GET's body is read
// into it, in one madvise(MADV_POPULATE_WRITE) call, instead of one page
// fault for each 4 KiB page as the socket's bytes are copied in. A fault
// is a trap per page, expensive in a virtual machine (3.4-3.8 ms of CPU
// per MB faulted page by page against 0.25 ms populated, on this project's
// 2-core test VM). The contents do not change: the pages of a buffer
// never touched are zero either way, and pages already mapped are left
// as they are. A kernel without it (before 5.14) answers EINVAL and the
// pages fault in as before.
func prefault(b []byte) {
	if len(b) == 0 {
		return
	}
	pg := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	skip := (pg - start%pg) % pg
	if uintptr(len(b)) <= skip {
		return
	}
	n := (uintptr(len(b)) - skip) / pg * pg
	if n == 0 {
		return
	}
	_ = syscall.Madvise(b[skip:skip+n], madvPopulateWrite)
}
