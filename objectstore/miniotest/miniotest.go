// Package miniotest runs a real MinIO server for tests: Start gives a test
// its own server (for fault tests: Stop, Kill, Restart, Pause, Resume);
// Shared gives every test of a package one server, started on first use
// and stopped by Main.
//
// The binary is the one `make tools` builds into .tools/bin at the module
// root; $SHALE_MINIO or PATH may name another. Without it a test is
// skipped, or fails when CI=true.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/shale-log/shale/objectstore"
)

// Credentials of every server this package starts.
const (
	AccessKey = "shaleminio"
	SecretKey = "shaleminio-secret"
)

// Binary finds the minio executable.
func Binary() (string, error) {
	if p := os.Getenv("SHALE_MINIO"); p != "" {
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".tools", "bin", "minio")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New("miniotest: no minio binary: run `make tools` (builds it into .tools/bin) or set SHALE_MINIO")
}

// Server is a MinIO process serving one data directory on one loopback
// address.
type Server struct {
	// Endpoint is the server's URL (http://127.0.0.1:PORT).
	Endpoint string
	bin      string
	addr     string
	dir      string
	log      *os.File
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
}

func requireBinary(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return bin
}

// Start starts a server for this test alone, stopped at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(requireBinary(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartIn starts a server keeping its data and log under dir, for a
// program that is not a test (the benchmark); Close stops it.
func StartIn(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	return start(bin, dir)
}

var shared struct {
	once sync.Once
	s    *Server
	dir  string
	err  error
}

// Shared returns the package's server, starting it on first use. A
// package using it calls Main from its TestMain so the server stops.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := requireBinary(t)
	shared.once.Do(func() {
		removeStaleDirs()
		shared.dir = filepath.Join(os.TempDir(), fmt.Sprintf("shale-minio-%d", os.Getpid()))
		shared.err = os.MkdirAll(shared.dir, 0o755)
		if shared.err == nil {
			shared.s, shared.err = start(bin, shared.dir)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.s
}

// removeStaleDirs removes the shared data directories of test processes
// that ended without Main (their servers died with them).
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "shale-minio-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "shale-minio-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			os.RemoveAll(d)
		}
	}
}

// Main runs a package's tests and then stops the shared server.
func Main(m *testing.M) {
	code := m.Run()
	if shared.s != nil {
		shared.s.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func start(bin, dir string) (*Server, error) {
	var lastErr error
	for range 3 { // the free port may be taken before MinIO binds it
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s := &Server{Endpoint: "http://" + addr, bin: bin, addr: addr, dir: dir}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "minio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	console, err := freeAddr()
	if err != nil {
		log.Close()
		return err
	}
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.addr, "--console-address", console, data)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Stdout, cmd.Stderr = log, log
	// The server dies with the test binary, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Linux sends Pdeathsig when the thread that forked the child ends,
	// not the process: a thread the Go runtime later hands to a
	// goroutine that locks it and ends locked (the tier's cold threads
	// do, when idle and when a broker closes) would take the server down
	// with it in the middle of a test. The server is started, and waited
	// for, on a thread locked for as long as it runs.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the server
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		log.Close()
		close(done)
	}()
	if err := <-started; err != nil {
		log.Close()
		return fmt.Errorf("miniotest: start %s: %w", s.bin, err)
	}
	s.cmd, s.done, s.log = cmd, done, log
	deadline := time.Now().Add(time.Minute) // a loaded machine starts it slowly
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("miniotest: minio exited at start; see %s", log.Name())
		default:
		}
		resp, err := http.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("miniotest: minio not ready after a minute; see %s", log.Name())
}

func (s *Server) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(sig)
	}
}

func (s *Server) wait() {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	<-done
}

// Kill kills the server (SIGKILL) and waits for it to exit.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
	s.wait()
}

// Restart starts a stopped or killed server again, on the same address
// and data.
func (s *Server) Restart() error {
	s.Kill()
	var err error
	for range 20 { // the old socket may linger a moment
		if err = s.launch(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing
// answers. Resume thaws it.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	// The stop reaches every thread asynchronously: wait until the
	// process is seen stopped, so no request slips through after Pause.
	s.mu.Lock()
	pid := s.cmd.Process.Pid
	s.mu.Unlock()
	for range 200 {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'T' {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Pid is the server process's id (0 when it is not running), for
// benchmarks that measure the CPU it uses.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Close stops the server for good.
func (s *Server) Close() { s.Kill() }

// Client is an independent client (minio-go) for checking what was
// written.
func (s *Server) Client() *minio.Client {
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""),
	})
	if err != nil {
		panic(err) // only on a malformed endpoint, which Start never makes
	}
	return c
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "test-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("miniotest: make bucket: %v", err)
	}
	return name
}

// NewS3 returns an S3 bucket on a fresh bucket of the server; tune, when
// not nil, adjusts the options first. It is closed at the test's end.
func (s *Server) NewS3(t testing.TB, tune func(*objectstore.S3Options)) *objectstore.S3 {
	t.Helper()
	opts := objectstore.S3Options{
		Bucket:    s.NewBucket(t),
		Endpoint:  s.Endpoint,
		Region:    "us-east-1",
		PathStyle: true,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
	}
	if tune != nil {
		tune(&opts)
	}
	b, err := objectstore.NewS3(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// URL is an objectstore.Open URL of bucket on the server (prefix may be
// empty). Credentials are not in it: set AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY to AccessKey and SecretKey (Env gives them).
func (s *Server) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Endpoint + "&region=us-east-1"
}

// Env is the environment a process (or objectstore.Open) needs to reach
// the server with the standard AWS credential chain.
func Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey, "AWS_REGION=us-east-1"}
}
