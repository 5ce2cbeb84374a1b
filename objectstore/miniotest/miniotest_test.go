package miniotest

import (
	"net/http"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestServerOutlivesTheThreadThatStartedIt: a server started from a
// goroutine that locked its thread and ended locked (so the thread ended)
// keeps running. Pdeathsig follows the forking thread, not the process.
func TestServerOutlivesTheThreadThatStartedIt(t *testing.T) {
	bin := requireBinary(t)
	dir := t.TempDir()
	type started struct {
		s   *Server
		err error
	}
	ch := make(chan started)
	var st started
	for st.s == nil && st.err == nil {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
			if syscall.Gettid() == os.Getpid() {
				// The main thread outlives a goroutine locked to
				// it: try again on another.
				ch <- started{}
				return
			}
			s, err := start(bin, dir)
			ch <- started{s, err}
		}()
		st = <-ch
	}
	if st.err != nil {
		t.Fatal(st.err)
	}
	defer st.s.Close()
	time.Sleep(time.Second)
	resp, err := http.Get(st.s.Endpoint + "/minio/health/live")
	if err != nil {
		t.Fatalf("the server died with the thread that started it: %v", err)
	}
	resp.Body.Close()
}
